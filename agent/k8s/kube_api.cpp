#include "k8s/kube_api.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>

#include <httplib.h>

#include "common/files.h"
#include "common/text.h"
#include "k8s/kubelet.h"
#include "k8s/watch_stream.h"

namespace netmon {
namespace {

bool valid_host(std::string_view host) {
  if (host.empty()) return false;
  for (const char c : host) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '-' || c == ':' || c == '%' || c == '_';
    if (!ok) return false;
  }
  return true;
}

bool valid_port(std::string_view port) {
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  return ec == std::errc() && end == port.data() + port.size() && value >= 1 && value <= 65535;
}

// The Status message of an error body, or the start of the body when it is not a Status.
std::string status_detail(int status, std::string_view body) {
  std::string detail = "HTTP " + std::to_string(status);
  if (auto parsed = parse_api_status_text(body)) {
    if (!parsed->reason.empty()) detail += " " + parsed->reason;
    if (!parsed->message.empty()) detail += ": " + parsed->message;
  }
  return detail;
}

}  // namespace

Result<std::string> kube_api_url_of(std::string_view host, std::string_view port) {
  std::string_view host_text = host;
  if (host_text.size() > 2 && host_text.front() == '[' && host_text.back() == ']') {
    host_text = host_text.substr(1, host_text.size() - 2);
  }
  if (!valid_host(host_text)) {
    return fail("host " + netmon::quoted(host) + " is not a host name or address");
  }
  if (!valid_port(port)) return fail("port " + netmon::quoted(port) + " is not a port number");
  const bool ipv6 = host_text.find(':') != std::string_view::npos;
  // Appended piece by piece: GCC 12's -O3 -Wrestrict misfires on "literal" + std::string&&.
  std::string url = "https://";
  if (ipv6) url += '[';
  url += host_text;
  if (ipv6) url += ']';
  url += ':';
  url += port;
  return url;
}

Result<KubeApiUrl> parse_kube_api_url(std::string_view url) {
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return fail(netmon::quoted(url) + " has no scheme");
  const std::string_view scheme = url.substr(0, scheme_end);
  if (scheme != "https" && scheme != "http") {
    return fail("scheme " + netmon::quoted(scheme) + " is not https or http");
  }
  std::string_view rest = url.substr(scheme_end + 3);
  const size_t slash = rest.find('/');
  if (slash != std::string_view::npos) {
    if (rest.substr(slash) != "/") {
      return fail(netmon::quoted(url) + " has a path; give the API server as scheme://host:port");
    }
    rest = rest.substr(0, slash);
  }
  std::string_view host = rest;
  if (!host.empty() && host.front() == '[') {
    const size_t close = host.find(']');
    if (close == std::string_view::npos) return fail(netmon::quoted(url) + " has an unclosed '['");
    const std::string_view after = host.substr(close + 1);
    if (!after.empty() && (after.front() != ':' || !valid_port(after.substr(1)))) {
      return fail(netmon::quoted(url) + " has an invalid port");
    }
    host = host.substr(1, close - 1);
  } else if (const size_t colon = host.rfind(':'); colon != std::string_view::npos) {
    if (!valid_port(host.substr(colon + 1)))
      return fail(netmon::quoted(url) + " has an invalid port");
    host = host.substr(0, colon);
    if (host.find(':') != std::string_view::npos) {
      return fail(netmon::quoted(url) + ": an IPv6 address must be in brackets");
    }
  }
  if (!valid_host(host)) return fail(netmon::quoted(url) + " has no valid host");
  KubeApiUrl out;
  out.scheme_host_port = std::string(url.substr(0, scheme_end + 3)) + std::string(rest);
  out.https = scheme == "https";
  return out;
}

std::string url_encode(std::string_view value) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(value.size());
  for (const char c : value) {
    const auto byte = static_cast<unsigned char>(c);
    const bool unreserved = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                            (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
    if (unreserved) {
      out += c;
    } else {
      out += '%';
      out += kHex[byte >> 4];
      out += kHex[byte & 0xf];
    }
  }
  return out;
}

std::string with_query(std::string_view resource, std::string_view name, std::string_view value) {
  std::string out(resource);
  out += resource.find('?') == std::string_view::npos ? '?' : '&';
  out += name;
  out += '=';
  out += url_encode(value);
  return out;
}

std::string_view kube_api_error_name(KubeApiError error) {
  switch (error) {
    case KubeApiError::kNone:
      return "none";
    case KubeApiError::kUnreachable:
      return "unreachable";
    case KubeApiError::kTimeout:
      return "timeout";
    case KubeApiError::kTls:
      return "tls";
    case KubeApiError::kUnauthorized:
      return "unauthorized";
    case KubeApiError::kForbidden:
      return "forbidden";
    case KubeApiError::kGone:
      return "gone";
    case KubeApiError::kHttp4xx:
      return "http_4xx";
    case KubeApiError::kHttp5xx:
      return "http_5xx";
    case KubeApiError::kHttpOther:
      return "http_other";
    case KubeApiError::kParse:
      return "parse";
    case KubeApiError::kTooLarge:
      return "too_large";
    case KubeApiError::kInterrupted:
      return "interrupted";
    case KubeApiError::kHandler:
      return "handler";
    case KubeApiError::kCancelled:
      return "cancelled";
    case KubeApiError::kCount:
      break;
  }
  return "unknown";
}

KubeApiError kube_api_error_of_status(int status) {
  if (status == 200) return KubeApiError::kNone;
  if (status == 401) return KubeApiError::kUnauthorized;
  if (status == 403) return KubeApiError::kForbidden;
  if (status == 410) return KubeApiError::kGone;
  if (status >= 400 && status < 500) return KubeApiError::kHttp4xx;
  if (status >= 500 && status < 600) return KubeApiError::kHttp5xx;
  return KubeApiError::kHttpOther;
}

// ---------------------------------------------------------------------------------------------
// KubeApiClient

struct KubeApiClient::Request {
  std::string path;
  bool stream = false;
  std::chrono::milliseconds idle_allowance{0};
  std::string* body = nullptr;                                     // !stream
  const std::function<bool(std::string_view)>* on_line = nullptr;  // stream
};

Result<void> KubeApiClient::validate_settings(const KubeApiOptions& options) {
  auto url = parse_kube_api_url(options.url);
  if (!url) return fail("invalid API server URL: " + url.error().message);
  return check_token_over_http("API server", options.url, !url->https, options.token_file,
                               options.allow_http_token, "--kube-api-allow-http-token");
}

Result<void> KubeApiClient::validate(const KubeApiOptions& options) {
  if (auto settings = validate_settings(options); !settings) return settings;
  if (options.max_response_bytes == 0 || options.max_line_bytes == 0) {
    return fail("the API server response and line caps must be above 0");
  }
  if (!options.ca_file.empty()) {
    if (auto r = check_regular_file(options.ca_file, kMaxCaFileBytes); !r) {
      return fail("the API server CA file cannot be used: " + r.error().message);
    }
  }
  if (!options.token_file.empty()) {
    struct stat st {};
    // A token file that is not there yet is only a failed request (it may appear later); one
    // that is there must be usable.
    if (::stat(options.token_file.c_str(), &st) == 0 || errno != ENOENT) {
      auto text = read_regular_file(options.token_file, kMaxTokenFileBytes);
      if (!text) return fail("the API server token file cannot be used: " + text.error().message);
      if (auto token = parse_bearer_token(*text); !token) {
        return fail("the API server token file " + netmon::quoted(options.token_file) +
                    " cannot be used: " + token.error().message);
      }
    }
  }
  return {};
}

Result<std::unique_ptr<KubeApiClient>> KubeApiClient::create(KubeApiOptions options) {
  if (auto r = validate(options); !r) return tl::unexpected(r.error());
  auto url = parse_kube_api_url(options.url);
  return std::unique_ptr<KubeApiClient>(new KubeApiClient(std::move(options), std::move(*url)));
}

KubeApiClient::KubeApiClient(KubeApiOptions options, KubeApiUrl url)
    : options_(std::move(options)), url_(std::move(url)), token_(options_.token_file) {}

KubeApiClient::~KubeApiClient() { cancel(); }

void KubeApiClient::cancel() noexcept {
  std::lock_guard lock(mutex_);
  cancelled_ = true;
  // Shuts the socket down: a read blocked in the request returns at once.
  if (active_client_) static_cast<httplib::Client*>(active_client_)->stop();
}

bool KubeApiClient::cancelled() const noexcept {
  std::lock_guard lock(mutex_);
  return cancelled_;
}

KubeApiOutcome KubeApiClient::get(const std::string& path_and_query, std::string& body) {
  Request request;
  request.path = path_and_query;
  request.body = &body;
  return run_with_retry(request);
}

KubeApiOutcome KubeApiClient::stream_lines(
    const std::string& path_and_query, std::chrono::milliseconds idle_allowance,
    const std::function<bool(std::string_view line)>& on_line) {
  Request request;
  request.path = path_and_query;
  request.stream = true;
  request.idle_allowance = idle_allowance;
  request.on_line = &on_line;
  return run_with_retry(request);
}

KubeApiOutcome KubeApiClient::run_with_retry(Request& request) {
  KubeApiOutcome outcome = run(request, false);
  // The token may have been rotated since it was read: read it again and retry once. (A 401
  // comes before any body, so a stream has delivered nothing yet.)
  if (outcome.error == KubeApiError::kUnauthorized && !options_.token_file.empty()) {
    outcome = run(request, true);
  }
  outcome.detail = capped_detail(outcome.detail);
  return outcome;
}

KubeApiOutcome KubeApiClient::run(Request& request, bool reread_token) {
  KubeApiOutcome outcome;
  if (cancelled()) {
    outcome.error = KubeApiError::kCancelled;
    outcome.detail = "stopped";
    return outcome;
  }
  if (auto r = token_.load(reread_token); !r) {
    outcome.error = KubeApiError::kUnauthorized;
    outcome.detail = "cannot use the token file: " + r.error().message;
    return outcome;
  }
  // OpenSSL opens the CA file by name for each connection: a file that became a FIFO or a
  // device since the start would block this thread (and the stop) there.
  if (!options_.ca_file.empty()) {
    if (auto r = check_regular_file(options_.ca_file, kMaxCaFileBytes); !r) {
      outcome.error = KubeApiError::kTls;
      outcome.detail = "cannot use the CA file: " + r.error().message;
      return outcome;
    }
  }
  const std::chrono::milliseconds read_timeout = options_.read_timeout + request.idle_allowance;
  httplib::Client client(url_.scheme_host_port);
  client.set_connection_timeout(options_.connect_timeout);
  client.set_read_timeout(read_timeout);
  client.set_write_timeout(options_.read_timeout);
  client.set_follow_location(false);
  client.set_keep_alive(false);
  client.enable_server_certificate_verification(!options_.insecure_skip_verify);
  if (!options_.ca_file.empty()) client.set_ca_cert_path(options_.ca_file);
  if (!token_.token().empty()) client.set_bearer_token_auth(token_.token());

  {
    std::lock_guard lock(mutex_);
    if (cancelled_) {
      outcome.error = KubeApiError::kCancelled;
      outcome.detail = "stopped";
      return outcome;
    }
    active_client_ = &client;
  }
  struct Clear {
    KubeApiClient* c;
    ~Clear() {
      std::lock_guard lock(c->mutex_);
      c->active_client_ = nullptr;
    }
  } clear{this};

  int status = 0;
  bool too_large = false;
  bool receiver_stopped = false;  // on_line said stop
  uint64_t announced = 0;
  size_t received = 0;
  std::string error_body;  // a non-200 body, capped
  LineSplitter lines(options_.max_line_bytes);
  const size_t cap = options_.max_response_bytes;
  if (request.body != nullptr) std::string().swap(*request.body);
  const auto started = std::chrono::steady_clock::now();

  auto result = client.Get(
      request.path, httplib::Headers{{"Accept", "application/json"}},
      [&](const httplib::Response& response) {
        status = response.status;
        if (status == 200 && !request.stream && response.has_header("Content-Length")) {
          const std::string length = response.get_header_value("Content-Length");
          const auto [end, ec] =
              std::from_chars(length.data(), length.data() + length.size(), announced);
          if (ec == std::errc::result_out_of_range || (ec == std::errc() && announced > cap)) {
            too_large = true;
            return false;
          }
          if (ec != std::errc() || end != length.data() + length.size()) announced = 0;
          // Reserved once, so that the body never grows by copying.
          if (announced > 0) request.body->reserve(static_cast<size_t>(announced));
        }
        return true;
      },
      [&](const char* data, size_t length) {
        if (status != 200) {
          const size_t room = kMaxKubeApiErrorBodyBytes - error_body.size();
          error_body.append(data, std::min(room, length));
          return error_body.size() < kMaxKubeApiErrorBodyBytes;
        }
        if (request.stream) {
          const auto fed = lines.feed(std::string_view(data, length), *request.on_line);
          if (fed == LineSplitter::Feed::kTooLong) too_large = true;
          if (fed == LineSplitter::Feed::kStopped) receiver_stopped = true;
          return fed == LineSplitter::Feed::kMore;
        }
        received += length;
        if (received > cap) {
          too_large = true;
          return false;
        }
        request.body->append(data, length);
        return true;
      });
  outcome.status = status;
  if (cancelled()) {
    outcome.error = KubeApiError::kCancelled;
    outcome.detail = "stopped";
    return outcome;
  }
  if (too_large) {
    if (request.body != nullptr) std::string().swap(*request.body);
    outcome.error = KubeApiError::kTooLarge;
    if (request.stream) {
      outcome.detail =
          "a watch line longer than " + std::to_string(options_.max_line_bytes) + " bytes";
    } else {
      outcome.detail = "response larger than " + std::to_string(cap) + " bytes";
      if (announced > cap) outcome.detail += " (Content-Length " + std::to_string(announced) + ")";
    }
    return outcome;
  }
  if (receiver_stopped) return outcome;  // the caller ended it
  if (!result) {
    const httplib::Error err = result.error();
    const auto elapsed = std::chrono::steady_clock::now() - started;
    outcome.detail = httplib::to_string(err);
    const auto slack = std::chrono::milliseconds(100);
    if (status == 200 && request.stream) {
      // The stream broke off (the server or a proxy closed it without the last chunk, or it was
      // silent past the read timeout): the caller resumes from the last version.
      if (err == httplib::Error::Read && elapsed + slack >= read_timeout) {
        outcome.error = KubeApiError::kTimeout;
        outcome.detail = "nothing on the watch for " + std::to_string(read_timeout.count()) + " ms";
      } else {
        outcome.error = KubeApiError::kInterrupted;
        outcome.detail = "the watch stream broke off (" + outcome.detail + ")";
      }
      return outcome;
    }
    if (err == httplib::Error::Read && elapsed + slack >= read_timeout) {
      outcome.error = KubeApiError::kTimeout;
      outcome.detail = "no response within " + std::to_string(read_timeout.count()) + " ms";
      return outcome;
    }
    if (err == httplib::Error::SSLConnection && elapsed + slack >= options_.connect_timeout) {
      outcome.error = KubeApiError::kTimeout;
      outcome.detail = "TLS handshake not done within " +
                       std::to_string(options_.connect_timeout.count()) + " ms";
      return outcome;
    }
    switch (err) {
      case httplib::Error::SSLConnection:
      case httplib::Error::SSLLoadingCerts:
      case httplib::Error::SSLServerVerification:
        outcome.error = KubeApiError::kTls;
        break;
      case httplib::Error::ConnectionTimeout:
        outcome.error = KubeApiError::kTimeout;
        break;
      case httplib::Error::Read:
        outcome.error = status != 0 ? KubeApiError::kInterrupted : KubeApiError::kParse;
        if (status == 0) outcome.detail = "no HTTP response (not HTTP, or the connection closed)";
        break;
      case httplib::Error::Canceled:
        // Only an error body over its cap ends a request this way here: its status says more.
        if (status != 0 && status != 200) {
          outcome.error = kube_api_error_of_status(status);
          outcome.detail = status_detail(status, error_body);
        } else {
          outcome.error = KubeApiError::kUnreachable;
        }
        break;
      default:
        outcome.error = KubeApiError::kUnreachable;
        break;
    }
    return outcome;
  }
  status = result->status;
  outcome.status = status;
  if (status != 200) {
    outcome.error = kube_api_error_of_status(status);
    outcome.detail = status_detail(status, error_body);
    return outcome;
  }
  if (request.stream) {
    const auto fed = lines.finish(*request.on_line);
    if (fed == LineSplitter::Feed::kTooLong) {
      outcome.error = KubeApiError::kTooLarge;
      outcome.detail =
          "a watch line longer than " + std::to_string(options_.max_line_bytes) + " bytes";
    }
  }
  return outcome;
}

}  // namespace netmon
