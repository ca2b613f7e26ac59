#include "k8s/kubelet.h"

#include <sys/stat.h>

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstring>

#include <httplib.h>

#include "common/files.h"
#include "common/log.h"
#include "common/text.h"

namespace netmon {
namespace {}  // namespace

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

Result<void> KubeletWatcher::validate_settings(const KubeletOptions& options) {
  auto url = parse_kubelet_url(options.url);
  if (!url) return fail("invalid kubelet URL: " + url.error().message);
  return check_token_over_http("kubelet", options.url, url->scheme_host_port.starts_with("http://"),
                               options.token_file, options.allow_http_token,
                               "--kubelet-allow-http-token");
}

Result<void> KubeletWatcher::validate(const KubeletOptions& options) {
  if (auto settings = validate_settings(options); !settings) return settings;
  if (!options.ca_file.empty()) {
    if (auto r = check_regular_file(options.ca_file, kMaxCaFileBytes); !r) {
      return fail("the kubelet CA file (--kubelet-ca-file) cannot be used: " + r.error().message);
    }
  }
  if (!options.token_file.empty()) {
    struct stat st {};
    // A token file that is not there yet is only a failed request (it may appear later); one
    // that is there must be usable.
    if (::stat(options.token_file.c_str(), &st) == 0 || errno != ENOENT) {
      auto text = read_regular_file(options.token_file, kMaxTokenFileBytes);
      if (!text) {
        return fail("the kubelet token file (--kubelet-token-file) cannot be used: " +
                    text.error().message);
      }
      if (auto token = parse_bearer_token(*text); !token) {
        return fail("the kubelet token file " + netmon::quoted(options.token_file) +
                    " cannot be used: " + token.error().message);
      }
    }
  }
  return {};
}

Result<std::unique_ptr<KubeletWatcher>> KubeletWatcher::create(KubeletOptions options) {
  if (auto r = validate(options); !r) return tl::unexpected(r.error());
  auto url = parse_kubelet_url(options.url);
  if (url->scheme_host_port.starts_with("http://") && !options.token_file.empty()) {
    log::warn("kubelet " + options.url +
              ": the bearer token goes out in cleartext over plain HTTP "
              "(--kubelet-allow-http-token)");
  }
  return std::unique_ptr<KubeletWatcher>(new KubeletWatcher(std::move(options), std::move(*url)));
}

KubeletWatcher::KubeletWatcher(KubeletOptions options, KubeletUrl url)
    : options_(std::move(options)), url_(std::move(url)), token_(options_.token_file) {}

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

std::string KubeletWatcher::last_error() const {
  std::lock_guard lock(mutex_);
  return last_error_;
}

KubeletResult KubeletWatcher::fetch(std::string& body, std::string& detail, bool reread_token) {
  if (auto r = token_.load(reread_token); !r) {
    detail = "cannot use the token file: " + r.error().message;
    return KubeletResult::kUnauthorized;
  }
  // OpenSSL opens the CA file by name for each connection: a file that became a FIFO or a
  // device since the start would block this thread (and the stop) there.
  if (!options_.ca_file.empty()) {
    if (auto r = check_regular_file(options_.ca_file, kMaxCaFileBytes); !r) {
      detail = "cannot use the CA file: " + r.error().message;
      return KubeletResult::kTlsError;
    }
  }
  httplib::Client client(url_.scheme_host_port);
  client.set_connection_timeout(options_.connect_timeout);
  client.set_read_timeout(options_.read_timeout);
  client.set_write_timeout(options_.read_timeout);
  client.set_follow_location(false);
  client.enable_server_certificate_verification(!options_.insecure_skip_verify);
  if (!options_.ca_file.empty()) client.set_ca_cert_path(options_.ca_file);
  if (!token_.token().empty()) client.set_bearer_token_auth(token_.token());

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

  // The body is held once, in a buffer reserved up front (for the announced length, or the cap
  // when none is announced: address space, of which only what arrives becomes resident), so it
  // never grows by copying; a Content-Length over the cap ends the request at the headers.
  std::string().swap(body);
  bool too_large = false;
  uint64_t announced = 0;
  size_t received = 0;
  int status = 0;
  const size_t cap = options_.max_response_bytes;
  const auto started = std::chrono::steady_clock::now();
  auto result = client.Get(
      url_.path, httplib::Headers{{"Accept", "application/json"}},
      [&](const httplib::Response& response) {
        status = response.status;
        if (response.has_header("Content-Length")) {
          const std::string length = response.get_header_value("Content-Length");
          const auto [end, ec] =
              std::from_chars(length.data(), length.data() + length.size(), announced);
          if (ec == std::errc::result_out_of_range || (ec == std::errc() && announced > cap)) {
            if (ec != std::errc()) announced = UINT64_MAX;
            too_large = true;
            return false;
          }
          if (ec != std::errc() || end != length.data() + length.size()) announced = 0;
        }
        if (status == 200) body.reserve(announced > 0 ? static_cast<size_t>(announced) : cap);
        return true;
      },
      [&](const char* data, size_t length) {
        received += length;
        if (received > cap) {
          too_large = true;
          return false;
        }
        // Only a 200's body is parsed; another status's is read and dropped.
        if (status == 200) body.append(data, length);
        return true;
      });
  if (too_large) {
    std::string().swap(body);
    detail = "response larger than " + std::to_string(cap) + " bytes";
    if (announced > cap) {
      detail += announced == UINT64_MAX ? " (Content-Length out of range)"
                                        : " (Content-Length " + std::to_string(announced) + ")";
    }
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
        if (status != 0) return KubeletResult::kTimeout;
        // Connected (and, over https, the handshake done), but no status line and headers
        // came back: the peer answered with something that is not HTTP, or hung up.
        detail = "no HTTP response (the reply is not HTTP, or the connection closed)";
        return KubeletResult::kBadResponse;
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
    std::vector<KubePod> peers;
    auto pods = parse_pod_list(body, options_.on_pods ? &peers : nullptr);
    std::string().swap(body);
    if (!pods) {
      detail = pods.error().message;
      r = KubeletResult::kBadResponse;
    } else {
      if (options_.on_pods) options_.on_pods(std::move(peers));
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
    detail = capped_detail(detail);
    {
      std::lock_guard lock(mutex_);
      if (stop_) return;  // a request aborted by the destructor is not a kubelet failure
      last_error_ =
          r == KubeletResult::kOk ? "" : std::string(kubelet_result_name(r)) + ": " + detail;
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
