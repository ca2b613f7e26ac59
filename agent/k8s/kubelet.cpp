#include "k8s/kubelet.h"

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include <httplib.h>

#include "common/log.h"
#include "common/text.h"

namespace netmon {

std::string_view kubelet_result_name(KubeletResult result) {
  switch (result) {
    case KubeletResult::kOk:
      return "ok";
    case KubeletResult::kUnreachable:
      return "unreachable";
    case KubeletResult::kTimeout:
      return "timeout";
    case KubeletResult::kTlsError:
      return "tls_error";
    case KubeletResult::kUnauthorized:
      return "unauthorized";
    case KubeletResult::kForbidden:
      return "forbidden";
    case KubeletResult::kHttpError:
      return "http_error";
    case KubeletResult::kBadResponse:
      return "bad_response";
    case KubeletResult::kTooLarge:
      return "too_large";
    case KubeletResult::kCount:
      break;
  }
  return "unknown";
}

Result<KubeletUrl> parse_kubelet_url(std::string_view url) {
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return fail(quoted(url) + " has no scheme");
  const std::string_view scheme = url.substr(0, scheme_end);
  if (scheme != "https" && scheme != "http") {
    return fail("scheme '" + std::string(scheme) + "' is not https or http");
  }
  const size_t path_start = url.find('/', scheme_end + 3);
  KubeletUrl out;
  out.scheme_host_port = std::string(url.substr(0, path_start));
  out.path = path_start == std::string_view::npos ? "/pods" : std::string(url.substr(path_start));
  if (out.scheme_host_port.size() <= scheme_end + 3) {
    return fail(quoted(url) + " has no host");
  }
  return out;
}

Result<std::unique_ptr<KubeletWatcher>> KubeletWatcher::create(KubeletOptions options) {
  auto url = parse_kubelet_url(options.url);
  if (!url) return fail(url.error().message);
  return std::unique_ptr<KubeletWatcher>(new KubeletWatcher(std::move(options), std::move(*url)));
}

KubeletWatcher::KubeletWatcher(KubeletOptions options, KubeletUrl url)
    : options_(std::move(options)), url_(std::move(url)) {}

KubeletWatcher::~KubeletWatcher() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
    // Abort a request in flight rather than wait out its timeout.
    if (active_client_) static_cast<httplib::Client*>(active_client_)->stop();
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void KubeletWatcher::start() {
  thread_ = std::thread([this] { run(); });
}

void KubeletWatcher::request_refresh() noexcept {
  {
    std::lock_guard lock(mutex_);
    if (refresh_requested_) return;
    refresh_requested_ = true;
  }
  wake_.notify_all();
}

std::shared_ptr<const PodSnapshot> KubeletWatcher::snapshot() const {
  std::lock_guard lock(mutex_);
  return snapshot_;
}

KubeletStats KubeletWatcher::stats() const {
  KubeletStats s;
  for (size_t i = 0; i < s.requests.size(); ++i) {
    s.requests[i] = requests_[i].load(std::memory_order_relaxed);
  }
  auto snap = snapshot();
  s.synced = snap != nullptr;
  if (snap) {
    s.pods = snap->pod_count();
    s.deleted_pods_kept = snap->deleted_pod_count();
  }
  return s;
}

bool KubeletWatcher::load_token(bool force) {
  if (options_.token_file.empty()) return true;
  struct stat st {};
  if (::stat(options_.token_file.c_str(), &st) != 0) return false;
  // Projected service-account tokens are replaced (atomically, via a symlink swap) before they
  // expire: a new inode, size or mtime means a new token.
  const std::string stamp = std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) + ":" +
                            std::to_string(st.st_mtim.tv_sec) + "." +
                            std::to_string(st.st_mtim.tv_nsec);
  if (!force && stamp == token_stamp_) return true;
  std::ifstream in(options_.token_file);
  if (!in) return false;
  std::stringstream buf;
  buf << in.rdbuf();
  std::string token = buf.str();
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' ')) {
    token.pop_back();
  }
  token_ = std::move(token);
  token_stamp_ = stamp;
  return true;
}

KubeletResult KubeletWatcher::fetch(std::string& body, std::string& detail, bool reread_token) {
  if (!load_token(reread_token)) {
    detail = "cannot read the token file " + options_.token_file;
    return KubeletResult::kUnauthorized;
  }
  httplib::Client client(url_.scheme_host_port);
  client.set_connection_timeout(options_.connect_timeout);
  client.set_read_timeout(options_.read_timeout);
  client.set_write_timeout(options_.read_timeout);
  client.set_follow_location(false);
  client.enable_server_certificate_verification(!options_.insecure_skip_verify);
  if (!options_.ca_file.empty()) client.set_ca_cert_path(options_.ca_file);
  if (!token_.empty()) client.set_bearer_token_auth(token_);

  {
    std::lock_guard lock(mutex_);
    if (stop_) return KubeletResult::kUnreachable;
    active_client_ = &client;
  }
  struct Clear {
    KubeletWatcher* w;
    ~Clear() {
      std::lock_guard lock(w->mutex_);
      w->active_client_ = nullptr;
    }
  } clear{this};

  body.clear();
  bool too_large = false;
  int status = 0;
  const auto started = std::chrono::steady_clock::now();
  auto result = client.Get(
      url_.path, httplib::Headers{{"Accept", "application/json"}},
      [&](const httplib::Response& response) {
        status = response.status;
        return true;
      },
      [&](const char* data, size_t length) {
        if (body.size() + length > options_.max_response_bytes) {
          too_large = true;
          return false;
        }
        body.append(data, length);
        return true;
      });
  if (too_large) {
    detail = "response larger than " + std::to_string(options_.max_response_bytes) + " bytes";
    return KubeletResult::kTooLarge;
  }
  if (!result) {
    const httplib::Error err = result.error();
    const auto elapsed = std::chrono::steady_clock::now() - started;
    detail = httplib::to_string(err);
    // httplib reports a read that timed out, and a TLS handshake that never finished, like
    // other read and handshake failures: the time taken tells them apart.
    const auto slack = std::chrono::milliseconds(100);
    if (err == httplib::Error::Read && elapsed + slack >= options_.read_timeout) {
      detail = "no response within " + std::to_string(options_.read_timeout.count()) + " ms";
      return KubeletResult::kTimeout;
    }
    if (err == httplib::Error::SSLConnection && elapsed + slack >= options_.connect_timeout) {
      detail = "TLS handshake not done within " + std::to_string(options_.connect_timeout.count()) +
               " ms";
      return KubeletResult::kTimeout;
    }
    switch (err) {
      case httplib::Error::SSLConnection:
      case httplib::Error::SSLLoadingCerts:
      case httplib::Error::SSLServerVerification:
        if (err == httplib::Error::SSLServerVerification) {
          detail +=
              " (set --kubelet-ca-file, or --kubelet-insecure-skip-verify for "
              "self-signed kubelet certificates)";
        }
        return KubeletResult::kTlsError;
      case httplib::Error::ConnectionTimeout:
        return KubeletResult::kTimeout;
      case httplib::Error::Read:
        return status != 0 ? KubeletResult::kTimeout : KubeletResult::kUnreachable;
      case httplib::Error::Canceled:
        detail = "stopped";
        return KubeletResult::kUnreachable;
      default:
        return KubeletResult::kUnreachable;
    }
  }
  status = result->status;
  if (status == 401) {
    detail = "401 Unauthorized";
    return KubeletResult::kUnauthorized;
  }
  if (status == 403) {
    detail = "403 Forbidden (the service account needs get on nodes/proxy)";
    return KubeletResult::kForbidden;
  }
  if (status != 200) {
    detail = "HTTP " + std::to_string(status);
    return KubeletResult::kHttpError;
  }
  return KubeletResult::kOk;
}

KubeletResult KubeletWatcher::poll_once(std::string& detail) {
  std::string body;
  KubeletResult r = fetch(body, detail, false);
  if (r == KubeletResult::kUnauthorized) {
    // The token may have been rotated since it was read: read it again and retry once.
    requests_[static_cast<size_t>(r)].fetch_add(1, std::memory_order_relaxed);
    r = fetch(body, detail, true);
  }
  if (r == KubeletResult::kOk) {
    auto pods = parse_pod_list(body);
    if (!pods) {
      detail = pods.error().message;
      r = KubeletResult::kBadResponse;
    } else {
      std::shared_ptr<const PodSnapshot> previous = snapshot();
      auto next = PodSnapshot::build(std::move(*pods), previous.get(),
                                     std::chrono::steady_clock::now(), options_.pod_grace);
      {
        std::lock_guard lock(mutex_);
        snapshot_ = std::move(next);
      }
      version_.fetch_add(1, std::memory_order_acq_rel);
    }
  }
  requests_[static_cast<size_t>(r)].fetch_add(1, std::memory_order_relaxed);
  return r;
}

void KubeletWatcher::run() {
  auto next_poll = std::chrono::steady_clock::now();
  auto last_poll = next_poll - options_.min_refresh_interval;
  for (;;) {
    std::string detail;
    const KubeletResult r = poll_once(detail);
    {
      std::lock_guard lock(mutex_);
      if (stop_) return;  // a request aborted by the destructor is not a kubelet failure
    }
    last_poll = std::chrono::steady_clock::now();
    next_poll = last_poll + options_.poll_interval;

    // Log a failure when it starts, when its kind changes, and then at most once a minute;
    // log the recovery once.
    const auto now = std::chrono::steady_clock::now();
    if (r != KubeletResult::kOk &&
        (r != last_result_ || now - last_logged_ >= std::chrono::minutes(1))) {
      log::warn("kubelet " + options_.url + ": " + std::string(kubelet_result_name(r)) + ": " +
                detail + "; events go out without pod metadata until it recovers");
      last_logged_ = now;
    } else if (r == KubeletResult::kOk && last_result_ != KubeletResult::kOk) {
      log::info("kubelet " + options_.url + ": pods synced");
    } else if (r == KubeletResult::kOk && version() == 1) {
      log::info("kubelet " + options_.url + ": first pods sync done");
    }
    last_result_ = r;

    std::unique_lock lock(mutex_);
    refresh_requested_ = false;
    const auto earliest_refresh = last_poll + options_.min_refresh_interval;
    for (;;) {
      if (stop_) return;
      const auto now2 = std::chrono::steady_clock::now();
      if (now2 >= next_poll) break;
      if (refresh_requested_ && now2 >= earliest_refresh) break;
      wake_.wait_until(lock, refresh_requested_ ? earliest_refresh : next_poll);
    }
  }
}

}  // namespace netmon
