// ListWatcher: keeps a client's view of one API resource collection (services, endpointslices,
// nodes, pods of a node) current, the way client-go's reflector does: LIST in pages (limit +
// continue), then WATCH from the list's resourceVersion with bookmarks; a watch that ends is
// resumed from the last resourceVersion seen (events and bookmarks); 410 Gone re-lists; other
// failures retry after an exponential backoff with jitter. One thread per watcher; the handler
// sees the objects as the API server sends them (nlohmann::json, inside agent/k8s only).
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
#include <thread>

#include "common/result.h"
#include "k8s/kube_api.h"
#include "k8s/watch_stream.h"

namespace netmon {

// What a ListWatcher reports to. Called on the watcher's thread only, one call at a time; a call
// should not block for long (the watch stream waits meanwhile). An exception it throws is
// caught: counted as kHandler, and the collection is listed again after a backoff.
class ListWatchHandler {
 public:
  virtual ~ListWatchHandler() = default;
  // A complete list (all pages): `items` is a JSON array of the objects, in the list's wire
  // format (list items carry no kind/apiVersion). It replaces all earlier state: objects not in
  // it are gone. Called after the first list, and after each re-list (410 Gone, handler error).
  virtual void on_list(const nlohmann::json& items, const std::string& resource_version) = 0;
  // An ADDED, MODIFIED or DELETED event after the list (DELETED carries the object's last state).
  // Bookmarks and errors are handled by the watcher.
  virtual void on_event(WatchEventType type, const nlohmann::json& object) = 0;

  // Page by page, for large collections (endpointslices of a big cluster: the whole list as one
  // JSON document would cost several times its text). When list_in_pages() is true, each page's
  // items go to on_list_page() as the page arrives (build the new state aside), and on_list()
  // then gets an empty array: the list is complete, swap the new state in. When a list fails
  // part-way (or restarts after an expired continue token), on_list_abandoned() says to drop
  // what the pages built; the old state stays.
  virtual bool list_in_pages() const { return false; }
  virtual void on_list_page(const nlohmann::json& /*items*/) {}
  virtual void on_list_abandoned() {}
};

struct ListWatchOptions {
  // The collection's path, e.g. "/api/v1/services", "/apis/discovery.k8s.io/v1/endpointslices",
  // "/api/v1/nodes", "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1" (query percent-encoded).
  std::string resource;
  // The name in logs and metric labels ("services"); default: the path's last segment.
  std::string name;
  // List from the API server's watch cache (resourceVersion "0", then not older than the last
  // version seen), as kube-proxy's informers do: no etcd read per node, but such a list ignores
  // limit on servers before 1.31 (one response: mind max_response_bytes; one over it makes the
  // watcher list in consistent pages from then on). A re-list after 410 is always consistent (no
  // resourceVersion, paged). False: every list consistent and paged.
  bool list_from_watch_cache = true;
  uint32_t page_size = 500;    // limit of each list page
  uint32_t max_pages = 10000;  // a list of more pages fails (kTooLarge)
  // timeoutSeconds: the server ends each watch after it. Each watch asks for a random value in
  // [watch_timeout_s, 2 * watch_timeout_s) as client-go does (5 to 10 minutes), so that the
  // agents of a cluster started together do not come back to the API server together.
  uint32_t watch_timeout_s = 300;
  BackoffPolicy backoff;  // between failed attempts
  // A watch that ends (normally or broken off) before this long with no event or bookmark counts
  // as a failure (backoff), so that a server that closes watches at once is not hammered.
  std::chrono::milliseconds min_watch_duration{1000};
  // Draws the jitter, in [0, 1); default: a per-watcher random engine.
  std::function<double()> random_unit;
};

struct ListWatchStats {
  uint64_t lists = 0;         // complete lists handed to on_list
  uint64_t list_pages = 0;    // list pages received
  uint64_t watch_starts = 0;  // watches the server accepted (200)
  uint64_t watch_ends = 0;    // watches that ended without an error (timeoutSeconds, closed)
  uint64_t added = 0;
  uint64_t modified = 0;
  uint64_t deleted = 0;
  uint64_t bookmarks = 0;
  uint64_t relists_gone = 0;   // re-lists because of 410 Gone (watch or expired continue)
  uint64_t short_watches = 0;  // watches ended early with nothing in them (backed off)
  std::array<uint64_t, static_cast<size_t>(KubeApiError::kCount)> errors{};  // by reason
  uint32_t consecutive_failures = 0;
  bool synced = false;           // a list has completed (stays true while re-listing)
  std::string resource_version;  // the last one seen
  std::string last_error;        // "forbidden: 403 ...", "" once a request succeeded
  uint64_t error_total() const;
};

// The process must ignore SIGPIPE (the agent does, app/agent.cpp): OpenSSL writes to the socket
// without MSG_NOSIGNAL, e.g. a close_notify after stop() shut the connection down.
class ListWatcher {
 public:
  // Validates the API options (KubeApiClient::validate) and the resource path.
  static Result<std::unique_ptr<ListWatcher>> create(KubeApiOptions api, ListWatchOptions options,
                                                     ListWatchHandler& handler);
  ~ListWatcher();  // stop()
  ListWatcher(const ListWatcher&) = delete;
  ListWatcher& operator=(const ListWatcher&) = delete;

  void start();
  // Any thread, idempotent: aborts the request in flight (a blocked watch read included) and the
  // backoff wait, and joins the thread. Returns within about a second, plus at most the connect
  // timeout when a connection is being opened to an address that does not answer.
  void stop();

  const std::string& name() const { return options_.name; }
  ListWatchStats stats() const;  // any thread
  bool synced() const noexcept { return synced_.load(std::memory_order_acquire); }

 private:
  ListWatcher(std::unique_ptr<KubeApiClient> client, ListWatchOptions options,
              ListWatchHandler& handler);
  void run();
  std::string list_resource_version() const;
  KubeApiOutcome list_all();
  enum class WatchEnd { kEnded, kGone, kFailed };
  WatchEnd watch_once(KubeApiOutcome& outcome, bool& progressed);
  void record_failure(const KubeApiOutcome& outcome);
  void record_success();
  void set_resource_version(const std::string& rv);
  bool wait_backoff();  // false when stopped

  std::unique_ptr<KubeApiClient> client_;
  const ListWatchOptions options_;
  ListWatchHandler& handler_;

  std::string resource_version_;    // watcher thread only; copied into stats under mutex_
  uint32_t failures_ = 0;           // consecutive; watcher thread only
  bool relist_consistent_ = false;  // the next list follows a 410; watcher thread only
  // A list from the watch cache came over max_response_bytes: list in pages from etcd from now
  // on (watcher thread only).
  bool watch_cache_too_large_ = false;
  KubeApiError last_logged_error_ = KubeApiError::kNone;
  std::chrono::steady_clock::time_point last_logged_{};

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  ListWatchStats stats_;  // guarded by mutex_
  std::atomic<bool> synced_{false};
  std::thread thread_;
};

}  // namespace netmon
