// The pure parts of list-then-watch, apart from the network: splitting a watch stream into lines,
// parsing a watch event and a Status, the list and watch request paths, and the backoff delay.
// Inside agent/k8s only (it shows nlohmann::json).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace netmon {

// The "type" of a watch event.
enum class WatchEventType { kAdded, kModified, kDeleted, kBookmark, kError };
std::string_view watch_event_type_name(WatchEventType type);  // "ADDED", ...

// One line of a watch stream: {"type": "...", "object": {...}}.
struct WatchEvent {
  WatchEventType type = WatchEventType::kAdded;
  nlohmann::json object;         // the object (a Status for ERROR)
  std::string resource_version;  // object.metadata.resourceVersion ("" when absent)
};

// Parses one watch line. Fails (with a message that quotes at most the start of the line) on
// what is not JSON, not an object with a known "type" and an object "object"; a non-ERROR event
// must carry metadata.resourceVersion as a string, so that the watch can resume after it.
Result<WatchEvent> parse_watch_event(std::string_view line);

// A metav1.Status ({"kind": "Status", "status": "Failure", "reason": ..., "code": ...}): the
// object of an ERROR event and the body of a failed request.
struct ApiStatus {
  int code = 0;
  std::string reason;   // "Expired", "Gone", "Forbidden", ...
  std::string message;  // the server's words
};
// The Status in `object`, or nullopt when it is not one (no kind "Status").
std::optional<ApiStatus> parse_api_status(const nlohmann::json& object);
std::optional<ApiStatus> parse_api_status_text(std::string_view body);

// Splits a byte stream into lines, holding at most `max_line_bytes` of an unfinished line.
class LineSplitter {
 public:
  explicit LineSplitter(size_t max_line_bytes) : max_line_bytes_(max_line_bytes) {}
  enum class Feed { kMore, kStopped, kTooLong };
  // Calls `on_line` for each complete line in `data` (without "\n" or "\r\n"; empty lines
  // skipped) until it returns false (kStopped). kTooLong when a line grows past the cap.
  Feed feed(std::string_view data, const std::function<bool(std::string_view)>& on_line);
  // The rest (a last line without a newline), or kMore when there is none.
  Feed finish(const std::function<bool(std::string_view)>& on_line);
  size_t pending_bytes() const { return partial_.size(); }

 private:
  size_t max_line_bytes_;
  std::string partial_;
};

// GET paths of a resource collection (`resource` may carry a query already).
// A page of a list: limit; the first page with resourceVersion (when not empty: "0" lets the
// watch cache answer), the next ones with continue instead (the server refuses both).
std::string list_request_path(std::string_view resource, uint32_t limit,
                              std::string_view resource_version, std::string_view continue_token);
// A watch from `resource_version`, with bookmarks, ended by the server after `timeout_seconds`.
std::string watch_request_path(std::string_view resource, std::string_view resource_version,
                               uint32_t timeout_seconds);

// The timeoutSeconds of one watch: `base` + `unit` (the random draw, in [0, 1)) times `base`,
// below 2 * base.
uint32_t watch_timeout_seconds(uint32_t base, double unit);

// Backoff after consecutive failures: the ceiling doubles from `min` with each failure up to
// `max`; the delay is uniform between `min` and the ceiling ("full jitter" above a floor, so
// clients spread out and none retries in a busy loop).
struct BackoffPolicy {
  std::chrono::milliseconds min{1000};
  std::chrono::milliseconds max{60000};
};
// The delay before the retry after `failures` (>= 1) consecutive failures; `unit` in [0, 1) is
// the random draw.
std::chrono::milliseconds backoff_delay(const BackoffPolicy& policy, uint32_t failures,
                                        double unit);

}  // namespace netmon
