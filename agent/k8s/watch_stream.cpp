#include "k8s/watch_stream.h"

#include <algorithm>
#include <cmath>

#include "common/text.h"
#include "k8s/kube_api.h"

namespace netmon {
namespace {

constexpr size_t kQuotedLineBytes = 80;

std::optional<WatchEventType> event_type_of(std::string_view name) {
  if (name == "ADDED") return WatchEventType::kAdded;
  if (name == "MODIFIED") return WatchEventType::kModified;
  if (name == "DELETED") return WatchEventType::kDeleted;
  if (name == "BOOKMARK") return WatchEventType::kBookmark;
  if (name == "ERROR") return WatchEventType::kError;
  return std::nullopt;
}

std::string string_field(const nlohmann::json& object, const char* key) {
  const auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

std::string_view watch_event_type_name(WatchEventType type) {
  switch (type) {
    case WatchEventType::kAdded:
      return "ADDED";
    case WatchEventType::kModified:
      return "MODIFIED";
    case WatchEventType::kDeleted:
      return "DELETED";
    case WatchEventType::kBookmark:
      return "BOOKMARK";
    case WatchEventType::kError:
      return "ERROR";
  }
  return "UNKNOWN";
}

Result<WatchEvent> parse_watch_event(std::string_view line) {
  nlohmann::json doc = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    return fail("a watch line is not JSON: " + netmon::quoted(line, kQuotedLineBytes));
  }
  if (!doc.is_object()) return fail("a watch line is not a JSON object");
  const auto type_it = doc.find("type");
  if (type_it == doc.end() || !type_it->is_string()) return fail("a watch event has no type");
  const auto type = event_type_of(type_it->get_ref<const std::string&>());
  if (!type) {
    return fail("a watch event has the unknown type " +
                netmon::quoted(type_it->get_ref<const std::string&>(), kQuotedLineBytes));
  }
  const auto object_it = doc.find("object");
  if (object_it == doc.end() || !object_it->is_object()) {
    return fail("a watch event of type " + std::string(watch_event_type_name(*type)) +
                " has no object");
  }
  WatchEvent event;
  event.type = *type;
  event.object = std::move(*object_it);
  if (const auto meta = event.object.find("metadata");
      meta != event.object.end() && meta->is_object()) {
    event.resource_version = string_field(*meta, "resourceVersion");
  }
  if (event.type != WatchEventType::kError && event.resource_version.empty()) {
    return fail("a watch event of type " + std::string(watch_event_type_name(*type)) +
                " has no metadata.resourceVersion");
  }
  return event;
}

std::optional<ApiStatus> parse_api_status(const nlohmann::json& object) {
  if (!object.is_object() || string_field(object, "kind") != "Status") return std::nullopt;
  ApiStatus status;
  if (const auto code = object.find("code"); code != object.end() && code->is_number_integer()) {
    status.code = code->get<int>();
  }
  status.reason = string_field(object, "reason");
  status.message = string_field(object, "message");
  return status;
}

std::optional<ApiStatus> parse_api_status_text(std::string_view body) {
  const nlohmann::json doc = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return std::nullopt;
  return parse_api_status(doc);
}

LineSplitter::Feed LineSplitter::feed(std::string_view data,
                                      const std::function<bool(std::string_view)>& on_line) {
  while (!data.empty()) {
    const size_t newline = data.find('\n');
    const size_t take = newline == std::string_view::npos ? data.size() : newline;
    if (partial_.size() + take > max_line_bytes_) {
      std::string().swap(partial_);
      return Feed::kTooLong;
    }
    if (newline == std::string_view::npos) {
      partial_.append(data);
      return Feed::kMore;
    }
    std::string_view line = data.substr(0, newline);
    data.remove_prefix(newline + 1);
    if (!partial_.empty()) {
      partial_.append(line);
      line = partial_;
    }
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const bool go_on = line.empty() || on_line(line);
    partial_.clear();
    if (!go_on) return Feed::kStopped;
  }
  return Feed::kMore;
}

LineSplitter::Feed LineSplitter::finish(const std::function<bool(std::string_view)>& on_line) {
  if (partial_.empty()) return Feed::kMore;
  std::string line;
  line.swap(partial_);
  std::string_view view = line;
  if (!view.empty() && view.back() == '\r') view.remove_suffix(1);
  if (view.empty()) return Feed::kMore;
  return on_line(view) ? Feed::kMore : Feed::kStopped;
}

std::string list_request_path(std::string_view resource, uint32_t limit,
                              std::string_view resource_version, std::string_view continue_token) {
  std::string path = with_query(resource, "limit", std::to_string(limit));
  if (!continue_token.empty()) return with_query(path, "continue", continue_token);
  if (!resource_version.empty()) path = with_query(path, "resourceVersion", resource_version);
  return path;
}

std::string watch_request_path(std::string_view resource, std::string_view resource_version,
                               uint32_t timeout_seconds) {
  std::string path = with_query(resource, "watch", "1");
  path = with_query(path, "resourceVersion", resource_version);
  path = with_query(path, "allowWatchBookmarks", "true");
  return with_query(path, "timeoutSeconds", std::to_string(timeout_seconds));
}

uint32_t watch_timeout_seconds(uint32_t base, double unit) {
  if (!(unit >= 0.0)) unit = 0.0;  // NaN too
  const auto extra = static_cast<uint64_t>(std::floor(std::min(unit, 1.0) * base));
  const uint64_t total = base + std::min<uint64_t>(extra, base > 0 ? base - 1 : 0);
  return static_cast<uint32_t>(std::min<uint64_t>(total, UINT32_MAX));
}

std::chrono::milliseconds backoff_delay(const BackoffPolicy& policy, uint32_t failures,
                                        double unit) {
  const auto min = std::max<int64_t>(policy.min.count(), 1);
  const auto max = std::max<int64_t>(policy.max.count(), min);
  int64_t ceiling = min;
  for (uint32_t i = 1; i < failures && ceiling < max; ++i) ceiling = std::min(ceiling * 2, max);
  if (!(unit >= 0.0)) unit = 0.0;  // NaN too
  unit = std::min(unit, 1.0);
  const auto jitter = static_cast<int64_t>(std::floor(unit * static_cast<double>(ceiling - min)));
  return std::chrono::milliseconds(std::min(min + jitter, max));
}

}  // namespace netmon
