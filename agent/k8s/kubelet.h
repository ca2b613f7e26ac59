// KubeletWatcher: polls the kubelet's GET /pods on a background thread and publishes immutable
// PodSnapshots. The pipeline thread never waits on the network: it reads the latest snapshot,
// and may ask for an early refresh, which the watcher rate-limits.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/result.h"
#include "k8s/http_common.h"
#include "k8s/kube_objects.h"
#include "k8s/pods.h"

namespace netmon {

struct KubeletOptions {
  std::string url;         // e.g. https://10.0.0.5:10250/pods
  std::string token_file;  // bearer token; "" sends none. Re-read when it changes and after 401
  std::string ca_file;     // CA bundle that signed the kubelet's serving certificate
  bool insecure_skip_verify = false;  // accept any certificate (kubeadm's self-signed ones)
  // Send the token over an http:// URL (in cleartext); without it such a URL with a token is a
  // configuration error.
  bool allow_http_token = false;
  std::chrono::milliseconds connect_timeout{3000};
  std::chrono::milliseconds read_timeout{10000};
  std::chrono::milliseconds poll_interval{10000};
  std::chrono::milliseconds min_refresh_interval{1000};  // early refreshes at most this often
  std::chrono::milliseconds pod_grace{60000};            // deleted pods stay resolvable this long
  size_t max_response_bytes = 64u << 20;
  // Optional: gets this node's pods as the peer index sees them (KubePod) after each successful
  // poll, on the watcher's thread, from the same parse of the response (PeerWatcher's
  // set_local_pods). Should not block for long.
  std::function<void(std::vector<KubePod>)> on_pods;
};

// Caps on the files the watcher reads: a bigger one is refused (docs/kubernetes.md). The token
// file's, kMaxTokenFileBytes, is in k8s/http_common.h.
inline constexpr size_t kMaxCaFileBytes = 1u << 20;

// How a request to the kubelet ended. Names (for logs and metric labels) by kubelet_result_name.
enum class KubeletResult {
  kOk,
  kUnreachable,   // connection refused, no route, DNS
  kTimeout,       // connect or read timeout
  kTlsError,      // handshake or certificate verification failed
  kUnauthorized,  // 401 (token missing, expired or wrong), after one retry with a re-read token
  kForbidden,     // 403 (RBAC: needs get on nodes/proxy)
  kHttpError,     // any other non-200 status
  kBadResponse,   // not a PodList
  kTooLarge,      // body over max_response_bytes
  kCount
};
std::string_view kubelet_result_name(KubeletResult result);

struct KubeletStats {
  std::array<uint64_t, static_cast<size_t>(KubeletResult::kCount)> requests{};
  bool synced = false;  // a snapshot has been published
  uint64_t pods = 0;
  uint64_t deleted_pods_kept = 0;
};

// Parses "https://host:port/path" into scheme+host+port and path. Fails on other schemes.
struct KubeletUrl {
  std::string scheme_host_port;  // "https://10.0.0.5:10250"
  std::string path;              // "/pods"
};
Result<KubeletUrl> parse_kubelet_url(std::string_view url);

class KubeletWatcher {
 public:
  // Checks the options without touching the network: the URL; a token with an http:// URL only
  // with allow_http_token; the CA file (a regular file within kMaxCaFileBytes); the token file,
  // when it exists (a regular file within kMaxTokenFileBytes holding a valid token: a missing
  // one is only a failed request, as it may appear later). The message is fit for "configuration
  // error: ...".
  static Result<void> validate(const KubeletOptions& options);
  // The part of validate() that reads no file: the URL, and a token over http:// only with
  // allow_http_token. For --check-config, which must not depend on the host's files.
  static Result<void> validate_settings(const KubeletOptions& options);
  // validate(), then a watcher; warns once when the token goes out over http://.
  static Result<std::unique_ptr<KubeletWatcher>> create(KubeletOptions options);
  ~KubeletWatcher();  // stops and joins the thread
  KubeletWatcher(const KubeletWatcher&) = delete;
  KubeletWatcher& operator=(const KubeletWatcher&) = delete;

  void start();

  // Any thread, cheap: asks for a poll sooner than the interval (rate-limited).
  void request_refresh() noexcept;

  // Bumped each time a new snapshot is published; the pipeline re-reads snapshot() only when
  // it changes, so the per-event cost is one atomic load.
  uint64_t version() const noexcept { return version_.load(std::memory_order_acquire); }
  std::shared_ptr<const PodSnapshot> snapshot() const;

  bool synced() const noexcept { return version() > 0; }
  KubeletStats stats() const;
  // Any thread: why the last request failed ("unauthorized: 401 Unauthorized", at most a few
  // hundred bytes), or "" when it succeeded or none has ended yet.
  std::string last_error() const;

 private:
  KubeletWatcher(KubeletOptions options, KubeletUrl url);
  void run();
  KubeletResult poll_once(std::string& detail);
  KubeletResult fetch(std::string& body, std::string& detail, bool reread_token);

  const KubeletOptions options_;
  const KubeletUrl url_;
  TokenFile token_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  bool refresh_requested_ = false;
  std::shared_ptr<const PodSnapshot> snapshot_;
  std::atomic<uint64_t> version_{0};
  std::array<std::atomic<uint64_t>, static_cast<size_t>(KubeletResult::kCount)> requests_{};
  KubeletResult last_result_ = KubeletResult::kOk;
  std::string last_error_;  // guarded by mutex_
  std::chrono::steady_clock::time_point last_logged_{};
  void* active_client_ = nullptr;  // httplib::Client in flight, stopped by the destructor
  std::thread thread_;
};

}  // namespace netmon
