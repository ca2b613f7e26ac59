// The Kubernetes API server as a client sees it: where it is and how to authenticate
// (KubeApiOptions, in-cluster or from flags), and KubeApiClient, which makes one bounded GET at a
// time, either whole (a list page) or as a stream of lines (a watch). The list-then-watch loop
// on top of it is ListWatcher (k8s/list_watch.h). Only this module sees cpp-httplib.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "common/result.h"
#include "k8s/http_common.h"

namespace netmon {

struct KubeApiOptions {
  std::string url;         // "https://host:port" (an IPv6 host in brackets), no path
  std::string token_file;  // bearer token; "" sends none. Re-read when it changes and after 401
  std::string ca_file;     // CA bundle that signed the API server's certificate
  bool insecure_skip_verify = false;  // accept any certificate
  // Send the token over an http:// URL (in cleartext); without it such a URL with a token is a
  // configuration error (as for the kubelet).
  bool allow_http_token = false;
  std::chrono::milliseconds connect_timeout{5000};  // TCP connect and TLS handshake
  // The longest silence within a response. A watch adds its timeoutSeconds to it: the server
  // may send nothing until it ends the watch then.
  std::chrono::milliseconds read_timeout{30000};
  size_t max_response_bytes = 64u << 20;  // one list page (decompressed)
  size_t max_line_bytes = 4u << 20;       // one watch event (etcd stores objects up to 1.5 MiB)
};

// "https://<host>:<port>" (an IPv6 host bracketed; a bracketed one accepted) for the API server
// at `host` and `port`, as KUBERNETES_SERVICE_HOST/PORT give them (in_cluster_kube_api in
// k8s/in_cluster.h). Fails when the host has characters no host name or address has, or the port
// is not 1..65535.
Result<std::string> kube_api_url_of(std::string_view host, std::string_view port);

// "https://host:port" split for the HTTP client; a trailing "/" is dropped, any other path is
// refused (resource paths are absolute, e.g. /api/v1/services).
struct KubeApiUrl {
  std::string scheme_host_port;
  bool https = true;
};
Result<KubeApiUrl> parse_kube_api_url(std::string_view url);

// Percent-encodes a query parameter value (RFC 3986 unreserved characters stay as they are).
std::string url_encode(std::string_view value);

// `resource` (a path that may already carry a query, e.g. "/api/v1/pods?fieldSelector=...")
// with `name=value` appended (value percent-encoded) after "?" or "&".
std::string with_query(std::string_view resource, std::string_view name, std::string_view value);

// Why a request failed. The names (kube_api_error_name) are metric label values
// (netmon_kube_api_watch_errors_total{resource,reason}).
enum class KubeApiError {
  kNone,
  kUnreachable,   // connect failed (refused, no route, DNS), or the connection broke
  kTimeout,       // connect, TLS handshake or read timeout
  kTls,           // handshake or certificate verification failed, unusable CA file
  kUnauthorized,  // 401, or no usable token file
  kForbidden,     // 403 (RBAC)
  kGone,          // 410: the resourceVersion or continue token is too old (re-list)
  kHttp4xx,       // another 4xx status, or an ERROR watch event with such a code
  kHttp5xx,       // a 5xx status (or ERROR event), e.g. 500, 503 during an upgrade
  kHttpOther,     // any other unexpected status
  kParse,         // a body or watch line that is not what the API returns
  kTooLarge,      // a body over max_response_bytes or a line over max_line_bytes
  kInterrupted,   // a watch stream that broke off mid-way (resumed from the last version)
  kHandler,       // the handler threw (its state may be partial: re-list)
  kCancelled,     // stopped by cancel(); not an API server failure
  kCount
};
std::string_view kube_api_error_name(KubeApiError error);

// The error a status code means (kNone for 200).
KubeApiError kube_api_error_of_status(int status);

// How a request ended. `detail` is fit for a log line: escaped, at most a few hundred bytes, never
// the token.
struct KubeApiOutcome {
  KubeApiError error = KubeApiError::kNone;
  int status = 0;  // the HTTP status, when one came back
  std::string detail;
  bool ok() const { return error == KubeApiError::kNone; }
};

// The most of a non-200 body read for its Status message. The token and CA files have the
// kubelet client's caps (kMaxTokenFileBytes in k8s/http_common.h, kMaxCaFileBytes in
// k8s/kubelet.h).
inline constexpr size_t kMaxKubeApiErrorBodyBytes = 64u << 10;

// One GET at a time against the API server. Thread-compatible, except cancel(), which any thread
// may call. Each request opens its own connection (no keep-alive: a watch holds its connection
// for minutes, and lists are rare).
class KubeApiClient {
 public:
  // Checks the options without the network: validate_settings(); the caps; the CA file (a
  // regular file within the cap); the token file when it exists (a missing one is only a failed
  // request: it may appear later).
  static Result<void> validate(const KubeApiOptions& options);
  // The part of validate() that reads no file: the URL, and a token over http:// only with
  // allow_http_token. For --check-config, which must not depend on the host's files.
  static Result<void> validate_settings(const KubeApiOptions& options);
  static Result<std::unique_ptr<KubeApiClient>> create(KubeApiOptions options);
  ~KubeApiClient();
  KubeApiClient(const KubeApiClient&) = delete;
  KubeApiClient& operator=(const KubeApiClient&) = delete;

  const KubeApiOptions& options() const { return options_; }

  // GET `path_and_query`; on 200 the body (at most max_response_bytes) in `body`. A 401 is tried
  // once more with the token file read again. Another status's body is read (within
  // kMaxKubeApiErrorBodyBytes) for the Status message in the detail; the outcome says which.
  KubeApiOutcome get(const std::string& path_and_query, std::string& body);

  // GET `path_and_query` as a stream of lines: `on_line` gets each line of a 200's body (without
  // the newline; empty lines skipped) as it arrives, the last one even without a newline. It
  // returns false to end the request (the outcome is then kNone unless cancelled). A line over
  // max_line_bytes ends it with kTooLarge. The read timeout is read_timeout + `idle_allowance`.
  // `on_status` (optional) sees the status before the body.
  KubeApiOutcome stream_lines(const std::string& path_and_query,
                              std::chrono::milliseconds idle_allowance,
                              const std::function<bool(std::string_view line)>& on_line);

  // Any thread: aborts the request in flight at once and makes every later one fail with
  // kCancelled. For stop(); not undone.
  void cancel() noexcept;
  bool cancelled() const noexcept;

 private:
  KubeApiClient(KubeApiOptions options, KubeApiUrl url);
  struct Request;
  KubeApiOutcome run(Request& request, bool reread_token);
  KubeApiOutcome run_with_retry(Request& request);

  const KubeApiOptions options_;
  const KubeApiUrl url_;
  TokenFile token_;

  mutable std::mutex mutex_;
  bool cancelled_ = false;         // guarded by mutex_
  void* active_client_ = nullptr;  // httplib::Client in flight, stopped by cancel()
};

}  // namespace netmon
