#include "k8s/list_watch.h"

#include <exception>
#include <random>

#include "common/log.h"
#include "common/text.h"

namespace netmon {
namespace {

std::string default_name(std::string_view resource) {
  std::string_view path = resource.substr(0, resource.find('?'));
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  const size_t slash = path.rfind('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

std::string format_ms(std::chrono::milliseconds ms) {
  const auto tenths = (ms.count() + 50) / 100;
  return std::to_string(tenths / 10) + "." + std::to_string(tenths % 10) + " s";
}

}  // namespace

uint64_t ListWatchStats::error_total() const {
  uint64_t total = 0;
  for (const uint64_t n : errors) total += n;
  return total;
}

Result<std::unique_ptr<ListWatcher>> ListWatcher::create(KubeApiOptions api,
                                                         ListWatchOptions options,
                                                         ListWatchHandler& handler) {
  if (options.resource.empty() || options.resource.front() != '/') {
    return fail("the resource path " + netmon::quoted(options.resource) +
                " does not start with '/'");
  }
  for (const char c : options.resource) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f || c == '#') {
      return fail("the resource path " + netmon::quoted(options.resource) +
                  " holds a space, control character or '#' (percent-encode the query)");
    }
  }
  if (options.page_size == 0 || options.max_pages == 0 || options.watch_timeout_s == 0) {
    return fail("page size, page count and watch timeout must be above 0");
  }
  auto client = KubeApiClient::create(std::move(api));
  if (!client) return tl::unexpected(client.error());
  if (options.name.empty()) options.name = default_name(options.resource);
  if (!options.random_unit) {
    auto engine = std::make_shared<std::mt19937_64>(std::random_device{}());
    options.random_unit = [engine] {
      return std::uniform_real_distribution<double>(0.0, 1.0)(*engine);
    };
  }
  return std::unique_ptr<ListWatcher>(
      new ListWatcher(std::move(*client), std::move(options), handler));
}

ListWatcher::ListWatcher(std::unique_ptr<KubeApiClient> client, ListWatchOptions options,
                         ListWatchHandler& handler)
    : client_(std::move(client)), options_(std::move(options)), handler_(handler) {}

ListWatcher::~ListWatcher() { stop(); }

void ListWatcher::start() {
  std::lock_guard lock(mutex_);
  if (thread_.joinable() || stop_) return;
  thread_ = std::thread([this] { run(); });
}

void ListWatcher::stop() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  client_->cancel();  // a request in flight ends now
  wake_.notify_all();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

ListWatchStats ListWatcher::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void ListWatcher::set_resource_version(const std::string& rv) {
  resource_version_ = rv;
  std::lock_guard lock(mutex_);
  stats_.resource_version = rv;
}

void ListWatcher::record_success() {
  {
    std::lock_guard lock(mutex_);
    stats_.last_error.clear();
  }
  if (last_logged_error_ != KubeApiError::kNone) {
    log::info("kube-api " + options_.name + ": the API server answers again");
    last_logged_error_ = KubeApiError::kNone;
  }
}

void ListWatcher::record_failure(const KubeApiOutcome& outcome) {
  const std::string text = std::string(kube_api_error_name(outcome.error)) + ": " + outcome.detail;
  {
    std::lock_guard lock(mutex_);
    if (stop_) return;  // a request aborted by stop() is no API server failure
    stats_.errors[static_cast<size_t>(outcome.error)]++;
    stats_.last_error = text;
  }
  // Log a failure when it starts, when its kind changes, and then at most once a minute.
  const auto now = std::chrono::steady_clock::now();
  if (outcome.error != last_logged_error_ || now - last_logged_ >= std::chrono::minutes(1)) {
    log::warn("kube-api " + options_.name + ": " + text +
              (synced() ? "; the names already known stay in use" : ""));
    last_logged_error_ = outcome.error;
    last_logged_ = now;
  }
}

bool ListWatcher::wait_backoff() {
  if (failures_ == 0) {
    std::lock_guard lock(mutex_);
    return !stop_;
  }
  const auto delay = backoff_delay(options_.backoff, failures_, options_.random_unit());
  log::debug("kube-api " + options_.name + ": retrying in " + format_ms(delay));
  std::unique_lock lock(mutex_);
  stats_.consecutive_failures = failures_;
  wake_.wait_for(lock, delay, [this] { return stop_; });
  return !stop_;
}

std::string ListWatcher::list_resource_version() const {
  // As client-go's reflector: after a 410 the list must be consistent (served from etcd: a
  // cache could be as old as the version that expired); otherwise a list from the API server's
  // watch cache, the kind every kube-proxy makes: "0" (any version) at first, then not older than
  // what this watcher has already seen.
  if (!options_.list_from_watch_cache || relist_consistent_ || watch_cache_too_large_) return "";
  return resource_version_.empty() ? "0" : resource_version_;
}

KubeApiOutcome ListWatcher::list_all() {
  const bool pages = handler_.list_in_pages();
  nlohmann::json items = nlohmann::json::array();
  std::string continue_token;
  std::string list_rv;
  bool restarted = false;
  bool delivered = false;  // pages went to the handler: abandon them on a failure
  auto abandon = [&](KubeApiOutcome outcome) {
    if (delivered) {
      try {
        handler_.on_list_abandoned();
      } catch (...) {
        outcome = KubeApiOutcome{KubeApiError::kHandler, 0, "on_list_abandoned threw"};
      }
    }
    return outcome;
  };
  auto handler_error = [&](const char* what) {
    delivered = false;  // a handler that threw is not asked to abandon
    return abandon(KubeApiOutcome{KubeApiError::kHandler, 0, capped_detail(what)});
  };
  const std::string from = list_resource_version();
  for (uint32_t page = 0;; ++page) {
    if (page >= options_.max_pages) {
      return abandon({KubeApiError::kTooLarge, 0,
                      "the list has more than " + std::to_string(options_.max_pages) +
                          " pages of " + std::to_string(options_.page_size)});
    }
    std::string body;
    KubeApiOutcome outcome = client_->get(
        list_request_path(options_.resource, options_.page_size, from, continue_token), body);
    if (outcome.error == KubeApiError::kGone && !continue_token.empty() && !restarted) {
      // The continue token expired (the list took longer than the server keeps its snapshot):
      // list again from the start, once without waiting.
      log::info("kube-api " + options_.name + ": the list's continue token expired; listing again");
      {
        std::lock_guard lock(mutex_);
        stats_.relists_gone++;
      }
      if (auto r = abandon({}); !r.ok()) return r;
      delivered = false;
      items = nlohmann::json::array();
      continue_token.clear();
      list_rv.clear();
      restarted = true;
      page = static_cast<uint32_t>(-1);
      continue;
    }
    if (outcome.error == KubeApiError::kTooLarge && !from.empty() && !watch_cache_too_large_) {
      // Before 1.31 the watch cache ignores limit and sends the whole collection at once. Past
      // the cap, list from etcd in pages from now on (each page fits), as a client without the
      // watch cache would: costlier for the API server, but it works at any size.
      watch_cache_too_large_ = true;
      log::warn("kube-api " + options_.name + ": the list from the API server's watch cache is " +
                "over " + std::to_string(client_->options().max_response_bytes) +
                " bytes; listing in pages of " + std::to_string(options_.page_size) + " instead");
    }
    if (!outcome.ok()) return abandon(outcome);
    nlohmann::json doc = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
    std::string().swap(body);
    auto bad = [&](std::string why) {
      return abandon({KubeApiError::kParse, outcome.status, std::move(why)});
    };
    if (doc.is_discarded() || !doc.is_object()) return bad("a list page is not a JSON object");
    if (auto status = parse_api_status(doc)) {
      return bad("a list page is a Status: " + status->reason + " " + status->message);
    }
    const auto meta = doc.find("metadata");
    if (meta == doc.end() || !meta->is_object()) return bad("a list page has no metadata");
    const auto rv = meta->find("resourceVersion");
    if (rv == meta->end() || !rv->is_string() || rv->get_ref<const std::string&>().empty()) {
      return bad("a list page has no metadata.resourceVersion");
    }
    auto page_items = doc.find("items");
    if (page_items != doc.end() && page_items->is_null()) {
      *page_items = nlohmann::json::array();  // an empty list may say "items": null
    }
    if (page_items == doc.end() || !page_items->is_array()) {
      return bad("a list page has no items array");
    }
    for (const auto& item : *page_items) {
      if (!item.is_object()) return bad("a list item is not an object");
    }
    // Every page of a list is a view of one snapshot; the first page's version is the list's.
    if (list_rv.empty()) list_rv = rv->get<std::string>();
    if (pages) {
      delivered = true;
      try {
        handler_.on_list_page(*page_items);
      } catch (const std::exception& e) {
        return handler_error(e.what());
      } catch (...) {
        return handler_error("unknown exception");
      }
    } else {
      for (auto& item : *page_items) items.push_back(std::move(item));
    }
    {
      std::lock_guard lock(mutex_);
      stats_.list_pages++;
    }
    const auto next = meta->find("continue");
    continue_token = next != meta->end() && next->is_string() ? next->get<std::string>() : "";
    if (continue_token.empty()) break;
  }
  try {
    handler_.on_list(items, list_rv);
  } catch (const std::exception& e) {
    return KubeApiOutcome{KubeApiError::kHandler, 0, capped_detail(e.what())};
  } catch (...) {
    return KubeApiOutcome{KubeApiError::kHandler, 0, "unknown exception"};
  }
  set_resource_version(list_rv);
  relist_consistent_ = false;
  {
    std::lock_guard lock(mutex_);
    stats_.lists++;
    stats_.synced = true;
  }
  synced_.store(true, std::memory_order_release);
  return {};
}

ListWatcher::WatchEnd ListWatcher::watch_once(KubeApiOutcome& outcome, bool& progressed) {
  progressed = false;
  bool started = false;
  KubeApiOutcome stream_error;  // set by the line handler when it ends the watch
  bool gone = false;
  const std::function<bool(std::string_view)> on_line = [&](std::string_view line) {
    if (!started) {
      started = true;
      {
        std::lock_guard lock(mutex_);
        stats_.watch_starts++;
      }
      record_success();
    }
    auto event = parse_watch_event(line);
    if (!event) {
      stream_error = {KubeApiError::kParse, 200, event.error().message};
      return false;
    }
    if (event->type == WatchEventType::kError) {
      const auto status = parse_api_status(event->object);
      if (status && status->code == 410) {
        gone = true;
        stream_error = {KubeApiError::kGone, 200, status->reason + ": " + status->message};
        return false;
      }
      const int code = status ? status->code : 0;
      KubeApiError error = code != 0 ? kube_api_error_of_status(code) : KubeApiError::kHttpOther;
      if (error == KubeApiError::kNone) error = KubeApiError::kHttpOther;
      stream_error = {error, 200,
                      "ERROR event " + std::to_string(code) +
                          (status ? " " + status->reason + ": " + status->message : "")};
      return false;
    }
    progressed = true;
    set_resource_version(event->resource_version);
    if (event->type == WatchEventType::kBookmark) {
      std::lock_guard lock(mutex_);
      stats_.bookmarks++;
      return true;
    }
    try {
      handler_.on_event(event->type, event->object);
    } catch (const std::exception& e) {
      stream_error = {KubeApiError::kHandler, 200, e.what()};
      return false;
    } catch (...) {
      stream_error = {KubeApiError::kHandler, 200, "unknown exception"};
      return false;
    }
    std::lock_guard lock(mutex_);
    if (event->type == WatchEventType::kAdded) stats_.added++;
    if (event->type == WatchEventType::kModified) stats_.modified++;
    if (event->type == WatchEventType::kDeleted) stats_.deleted++;
    return true;
  };
  const uint32_t timeout_s =
      watch_timeout_seconds(options_.watch_timeout_s, options_.random_unit());
  const std::string path = watch_request_path(options_.resource, resource_version_, timeout_s);
  outcome = client_->stream_lines(path, std::chrono::seconds(timeout_s), on_line);
  if (outcome.ok() && stream_error.error != KubeApiError::kNone) {
    outcome = stream_error;
    outcome.detail = capped_detail(outcome.detail);
  }
  if (outcome.status == 200 && !started) {
    std::lock_guard lock(mutex_);
    stats_.watch_starts++;  // accepted, but nothing came
  }
  if (gone || outcome.error == KubeApiError::kGone) return WatchEnd::kGone;
  if (!outcome.ok()) return WatchEnd::kFailed;
  return WatchEnd::kEnded;
}

void ListWatcher::run() {
  bool need_list = true;
  bool events_since_list = false;
  while (wait_backoff()) {
    if (need_list) {
      KubeApiOutcome outcome = list_all();
      if (!outcome.ok()) {
        if (outcome.error == KubeApiError::kCancelled) return;
        record_failure(outcome);
        ++failures_;
        continue;
      }
      record_success();
      if (stats().lists == 1) {
        // Debug: the owner says it at info level with what it means ("kube api: services
        // synced (n objects)", k8s/peer_watch).
        log::debug("kube-api " + options_.name + ": listed, resourceVersion " + resource_version_);
      }
      need_list = false;
      events_since_list = false;
    }
    const auto started = std::chrono::steady_clock::now();
    KubeApiOutcome outcome;
    bool progressed = false;
    const WatchEnd end = watch_once(outcome, progressed);
    if (outcome.error == KubeApiError::kCancelled) return;
    events_since_list = events_since_list || progressed;
    const bool lasted = std::chrono::steady_clock::now() - started >= options_.min_watch_duration;
    switch (end) {
      case WatchEnd::kGone: {
        // The version is older than the server keeps: list again. At once after a healthy
        // watch; after a backoff when the 410 came right after a list (a server in trouble).
        log::info("kube-api " + options_.name + ": resourceVersion " + resource_version_ +
                  " is too old (" + outcome.detail + "); listing again");
        {
          std::lock_guard lock(mutex_);
          stats_.relists_gone++;
        }
        need_list = true;
        relist_consistent_ = true;
        if (events_since_list) {
          failures_ = 0;
        } else {
          ++failures_;
        }
        break;
      }
      case WatchEnd::kEnded:
        // timeoutSeconds ran out, or the server closed the watch: resume from the last version.
        {
          std::lock_guard lock(mutex_);
          stats_.watch_ends++;
          if (!progressed && !lasted) stats_.short_watches++;
        }
        if (progressed || lasted) {
          if (failures_ > 0) record_success();
          failures_ = 0;
        } else {
          ++failures_;
        }
        break;
      case WatchEnd::kFailed:
        record_failure(outcome);
        if (outcome.error == KubeApiError::kHandler) need_list = true;
        if (outcome.error == KubeApiError::kInterrupted && (progressed || lasted)) {
          failures_ = 0;  // a healthy watch broke off: resume at once
        } else {
          ++failures_;
        }
        break;
    }
    std::lock_guard lock(mutex_);
    stats_.consecutive_failures = failures_;
  }
}

}  // namespace netmon
