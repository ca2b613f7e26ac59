// netmon-kube-watch: runs one ListWatcher (agent/k8s/list_watch.h) against an API server and
// prints what it sees as JSON lines on stdout, for tests/integration/test_kube_api.py:
//   {"callback":"list","resource_version":"12","items":["ns/name", ...]}
//   {"callback":"event","type":"ADDED","object":"ns/name","resource_version":"13"}
//   {"stats":{...}}   whenever the counters change, and once more at exit
// until SIGTERM or SIGINT, then stops the watcher and exits 0 (2 on bad arguments).
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "k8s/list_watch.h"

namespace {

using netmon::KubeApiError;
using netmon::ListWatchStats;
using netmon::WatchEventType;

std::mutex out_mutex;

void emit(const nlohmann::json& line) {
  std::lock_guard lock(out_mutex);
  std::cout << line.dump() << '\n' << std::flush;
}

std::string key_of(const nlohmann::json& object) {
  std::string key;
  if (const auto meta = object.find("metadata"); meta != object.end() && meta->is_object()) {
    if (const auto ns = meta->find("namespace"); ns != meta->end() && ns->is_string()) {
      key = ns->get<std::string>() + "/";
    }
    if (const auto name = meta->find("name"); name != meta->end() && name->is_string()) {
      key += name->get<std::string>();
    }
  }
  return key;
}

// With --pages, the handler takes lists page by page: the keys of the pages are collected and
// printed with the list when it completes ("pages": how many), or dropped when it is abandoned.
class PrintingHandler : public netmon::ListWatchHandler {
 public:
  PrintingHandler(bool pages, uint64_t throw_on_list, uint64_t throw_on_event)
      : pages_(pages), throw_on_list_(throw_on_list), throw_on_event_(throw_on_event) {}

  void on_list(const nlohmann::json& items, const std::string& resource_version) override {
    if (++lists_ == throw_on_list_) throw std::runtime_error("injected failure in on_list");
    nlohmann::json keys = nlohmann::json::array();
    if (pages_) std::swap(keys, page_keys_);
    for (const auto& item : items) keys.push_back(key_of(item));
    emit({{"callback", "list"},
          {"resource_version", resource_version},
          {"items", keys},
          {"pages", page_count_}});
    page_count_ = 0;
  }
  bool list_in_pages() const override { return pages_; }
  void on_list_page(const nlohmann::json& items) override {
    for (const auto& item : items) page_keys_.push_back(key_of(item));
    ++page_count_;
  }
  void on_list_abandoned() override {
    emit({{"callback", "list_abandoned"}, {"pages", page_count_}});
    page_keys_ = nlohmann::json::array();
    page_count_ = 0;
  }
  void on_event(WatchEventType type, const nlohmann::json& object) override {
    if (++events_ == throw_on_event_) throw std::runtime_error("injected failure in on_event");
    std::string rv;
    if (const auto meta = object.find("metadata"); meta != object.end() && meta->is_object()) {
      rv = meta->value("resourceVersion", "");
    }
    emit({{"callback", "event"},
          {"type", std::string(netmon::watch_event_type_name(type))},
          {"object", key_of(object)},
          {"resource_version", rv}});
  }

 private:
  const bool pages_;
  const uint64_t throw_on_list_;   // the on_list call that throws (1: the first), 0: none
  const uint64_t throw_on_event_;  // the same for on_event
  uint64_t lists_ = 0;
  uint64_t events_ = 0;
  nlohmann::json page_keys_ = nlohmann::json::array();
  int page_count_ = 0;
};

nlohmann::json stats_json(const ListWatchStats& s) {
  nlohmann::json errors = nlohmann::json::object();
  for (size_t i = 0; i < s.errors.size(); ++i) {
    if (s.errors[i] > 0) {
      errors[std::string(netmon::kube_api_error_name(static_cast<KubeApiError>(i)))] = s.errors[i];
    }
  }
  return {{"lists", s.lists},
          {"list_pages", s.list_pages},
          {"watch_starts", s.watch_starts},
          {"watch_ends", s.watch_ends},
          {"added", s.added},
          {"modified", s.modified},
          {"deleted", s.deleted},
          {"bookmarks", s.bookmarks},
          {"relists_gone", s.relists_gone},
          {"short_watches", s.short_watches},
          {"errors", errors},
          {"consecutive_failures", s.consecutive_failures},
          {"synced", s.synced},
          {"resource_version", s.resource_version},
          {"last_error", s.last_error}};
}

int usage(const std::string& why) {
  std::cerr << "netmon-kube-watch: " << why
            << "\nusage: netmon-kube-watch --url URL --resource PATH [--token-file F] [--ca-file F]"
               " [--insecure-skip-verify] [--consistent-list] [--pages] [--page-size N] "
               "[--watch-timeout S]"
               " [--backoff-min-ms N] [--backoff-max-ms N] [--min-watch-ms N]"
               " [--connect-timeout-ms N] [--read-timeout-ms N] [--max-response-bytes N]"
               " [--max-line-bytes N] [--throw-on-list N] [--throw-on-event N]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  netmon::KubeApiOptions api;
  netmon::ListWatchOptions options;
  bool pages = false;
  uint64_t throw_on_list = 0;
  uint64_t throw_on_event = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--insecure-skip-verify") {
      api.insecure_skip_verify = true;
      continue;
    }
    if (arg == "--consistent-list") {
      options.list_from_watch_cache = false;
      continue;
    }
    if (arg == "--pages") {
      pages = true;
      continue;
    }
    if (i + 1 >= argc) return usage("missing value for " + std::string(arg));
    const std::string value = argv[++i];
    char* end = nullptr;
    const unsigned long long number = std::strtoull(value.c_str(), &end, 10);
    const bool numeric = end != value.c_str() && *end == '\0';
    if (arg == "--url") {
      api.url = value;
    } else if (arg == "--resource") {
      options.resource = value;
    } else if (arg == "--token-file") {
      api.token_file = value;
    } else if (arg == "--ca-file") {
      api.ca_file = value;
    } else if (!numeric) {
      return usage("not a number: " + value + " (" + std::string(arg) + ")");
    } else if (arg == "--page-size") {
      options.page_size = static_cast<uint32_t>(number);
    } else if (arg == "--watch-timeout") {
      options.watch_timeout_s = static_cast<uint32_t>(number);
    } else if (arg == "--backoff-min-ms") {
      options.backoff.min = std::chrono::milliseconds(number);
    } else if (arg == "--backoff-max-ms") {
      options.backoff.max = std::chrono::milliseconds(number);
    } else if (arg == "--min-watch-ms") {
      options.min_watch_duration = std::chrono::milliseconds(number);
    } else if (arg == "--connect-timeout-ms") {
      api.connect_timeout = std::chrono::milliseconds(number);
    } else if (arg == "--read-timeout-ms") {
      api.read_timeout = std::chrono::milliseconds(number);
    } else if (arg == "--max-response-bytes") {
      api.max_response_bytes = static_cast<size_t>(number);
    } else if (arg == "--max-line-bytes") {
      api.max_line_bytes = static_cast<size_t>(number);
    } else if (arg == "--throw-on-list") {
      throw_on_list = number;
    } else if (arg == "--throw-on-event") {
      throw_on_event = number;
    } else {
      return usage("unknown option " + std::string(arg));
    }
  }
  if (api.url.empty() || options.resource.empty()) return usage("--url and --resource are needed");

  // Signals are taken synchronously by this thread (blocked before the watcher thread starts,
  // which inherits the mask).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // As in the agent (app/agent.cpp): OpenSSL writes to sockets without MSG_NOSIGNAL, e.g. the
  // close_notify after stop() shut a connection down.
  signal(SIGPIPE, SIG_IGN);

  PrintingHandler handler(pages, throw_on_list, throw_on_event);
  auto watcher = netmon::ListWatcher::create(api, options, handler);
  if (!watcher) {
    std::cerr << "netmon-kube-watch: " << watcher.error().message << '\n';
    return 2;
  }
  (*watcher)->start();
  nlohmann::json last_stats;
  const timespec poll{0, 20 * 1000 * 1000};
  for (;;) {
    const int sig = sigtimedwait(&signals, nullptr, &poll);
    if (sig == SIGTERM || sig == SIGINT) break;
    nlohmann::json now = stats_json((*watcher)->stats());
    if (now != last_stats) {
      emit({{"stats", now}});
      last_stats = std::move(now);
    }
  }
  const auto stop_started = std::chrono::steady_clock::now();
  (*watcher)->stop();
  const auto stop_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::steady_clock::now() - stop_started)
                           .count();
  emit({{"stats", stats_json((*watcher)->stats())}, {"stopped_in_ms", stop_ms}});
  return 0;
}
