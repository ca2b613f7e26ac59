// Unit tests for the Prometheus metrics (per-pod connection series, agent health, the text
// exposition), the label-dropping option, the HTTP endpoint and its listen address.
#include "metrics/metrics.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "metrics/edge_counters.h"
#include "metrics/http_server.h"
#include "pod_meta.h"

namespace netmon {
namespace {

// ---- building events and pods by hand --------------------------------------------------------

constexpr uint64_t kOpenNs = 5'000'000'000;  // an arbitrary boot-clock time of the open

ConnectionEvent opened(ConnKind kind) {
  ConnectionEvent e;
  e.boot_ns = kOpenNs;
  e.kind = kind;
  e.direction = kind == ConnKind::kAccept ? Direction::kInbound : Direction::kOutbound;
  e.owner_known = true;
  return e;
}

ConnectionEvent failed(int error) {
  ConnectionEvent e;
  e.boot_ns = kOpenNs;
  e.kind = ConnKind::kFailed;
  e.direction = Direction::kOutbound;
  e.owner_known = true;
  e.error = error;
  return e;
}

ConnectionEvent closed(Direction direction, uint64_t bytes_sent, uint64_t bytes_received,
                       uint64_t duration_ns) {
  ConnectionEvent e;
  e.kind = ConnKind::kClose;
  e.direction = direction;
  e.owner_known = true;
  e.close.open_boot_ns = kOpenNs;
  e.boot_ns = kOpenNs + duration_ns;
  e.close.bytes_sent = bytes_sent;
  e.close.bytes_received = bytes_received;
  e.close.closed_by = ClosedBy::kLocal;
  return e;
}

using test::attribution_of;
using test::make_pod;

// ---- reading render()'s output back ----------------------------------------------------------

using LabelMap = std::map<std::string, std::string>;

struct Sample {
  std::string name;
  LabelMap labels;
  std::string value;
};

struct Exposition {
  std::vector<Sample> samples;
  std::map<std::string, std::string> help;  // family -> HELP text
  std::map<std::string, std::string> type;  // family -> TYPE
  std::vector<std::string> family_order;    // as # TYPE lines appear
  std::vector<std::string> errors;          // lines this parser could not read
};

Exposition parse_exposition(const std::string& text) {
  Exposition out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line.rfind("# HELP ", 0) == 0) {
      const std::string rest = line.substr(7);
      const size_t space = rest.find(' ');
      out.help[rest.substr(0, space)] =
          space == std::string::npos ? std::string() : rest.substr(space + 1);
      continue;
    }
    if (line.rfind("# TYPE ", 0) == 0) {
      const std::string rest = line.substr(7);
      const size_t space = rest.find(' ');
      if (space == std::string::npos) {
        out.errors.push_back(line);
        continue;
      }
      out.type[rest.substr(0, space)] = rest.substr(space + 1);
      out.family_order.push_back(rest.substr(0, space));
      continue;
    }
    if (line[0] == '#') continue;
    Sample s;
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') s.name += line[i++];
    bool ok = true;
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (ok && i < line.size() && line[i] != '}') {
        std::string key;
        while (i < line.size() && line[i] != '=') key += line[i++];
        if (i + 1 >= line.size() || line[i + 1] != '"') {
          ok = false;
          break;
        }
        i += 2;
        std::string value;
        while (i < line.size() && line[i] != '"') {
          if (line[i] == '\\' && i + 1 < line.size()) {
            ++i;
            value += line[i] == 'n' ? '\n' : line[i];
          } else {
            value += line[i];
          }
          ++i;
        }
        if (i >= line.size()) {
          ok = false;
          break;
        }
        ++i;                                                   // closing quote
        if (!s.labels.emplace(key, value).second) ok = false;  // duplicate label
        if (i < line.size() && line[i] == ',') ++i;
      }
      if (i >= line.size()) ok = false;
      ++i;  // '}'
    }
    if (!ok || i >= line.size() || line[i] != ' ') {
      out.errors.push_back(line);
      continue;
    }
    s.value = line.substr(i + 1);
    out.samples.push_back(std::move(s));
  }
  return out;
}

// The samples named `name` whose labels are exactly `labels`.
std::vector<const Sample*> find_samples(const Exposition& x, const std::string& name,
                                        const LabelMap& labels) {
  std::vector<const Sample*> out;
  for (const Sample& s : x.samples) {
    if (s.name == name && s.labels == labels) out.push_back(&s);
  }
  return out;
}

// The value of the one sample named `name` with exactly `labels`; nullopt when there is none
// (a test failure is recorded when there are several, or the value is not a number).
std::optional<double> value_of(const Exposition& x, const std::string& name,
                               const LabelMap& labels) {
  const auto found = find_samples(x, name, labels);
  if (found.empty()) return std::nullopt;
  EXPECT_EQ(found.size(), 1u) << "duplicate samples of " << name;
  const std::string& text = found[0]->value;
  if (text == "+Inf") return std::numeric_limits<double>::infinity();
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  EXPECT_TRUE(end && *end == '\0' && !text.empty()) << name << ": '" << text << "'";
  return v;
}

LabelMap conn(std::string direction, std::string ns, std::string pod, std::string container,
              std::string workload) {
  return {{"direction", std::move(direction)},
          {"namespace", std::move(ns)},
          {"pod", std::move(pod)},
          {"container", std::move(container)},
          {"workload", std::move(workload)}};
}

LabelMap host(std::string direction) { return conn(std::move(direction), "", "", "", ""); }

LabelMap with(LabelMap labels, const std::string& key, const std::string& value) {
  labels[key] = value;
  return labels;
}

// Expects the sample to exist with exactly `expected`.
#define EXPECT_SAMPLE(x, name, labels, expected)                                \
  do {                                                                          \
    const auto v_ = value_of((x), (name), (labels));                            \
    ASSERT_TRUE(v_.has_value()) << "no sample " << (name) << " with labels";    \
    EXPECT_DOUBLE_EQ(*v_, static_cast<double>(expected)) << (name) << " value"; \
  } while (0)

const std::vector<std::string> kBucketBounds = {
    "0.001", "0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "10", "60", "300", "3600", "+Inf"};

// Checks every histogram sample of one series: the cumulative bucket counts (one per bound in
// kBucketBounds, in order), _count and _sum.
void expect_histogram(const Exposition& x, const LabelMap& labels,
                      const std::vector<uint64_t>& cumulative, uint64_t count, double sum) {
  ASSERT_EQ(cumulative.size(), kBucketBounds.size());
  const std::string name = "netmon_connection_duration_seconds";
  for (size_t i = 0; i < kBucketBounds.size(); ++i) {
    const auto v = value_of(x, name + "_bucket", with(labels, "le", kBucketBounds[i]));
    ASSERT_TRUE(v.has_value()) << "no bucket le=" << kBucketBounds[i];
    EXPECT_DOUBLE_EQ(*v, static_cast<double>(cumulative[i])) << "le=" << kBucketBounds[i];
  }
  size_t buckets = 0;
  for (const Sample& s : x.samples) {
    if (s.name != name + "_bucket") continue;
    LabelMap without_le = s.labels;
    without_le.erase("le");
    if (without_le == labels) ++buckets;
  }
  EXPECT_EQ(buckets, kBucketBounds.size()) << "buckets of the series";
  EXPECT_SAMPLE(x, name + "_count", labels, count);
  const auto s = value_of(x, name + "_sum", labels);
  ASSERT_TRUE(s.has_value());
  EXPECT_NEAR(*s, sum, 1e-9);
}

// ---- connection counters ---------------------------------------------------------------------

class MetricsCounters : public ::testing::Test {
 protected:
  PodMeta web_ = make_pod("shop", "web-7d4b9c-abcde", "uid-web", "web", "c-web", "nginx");
  PodMeta db_ = make_pod("shop", "db-0", "uid-db", "db", "c-db", "postgres");
  Attribution web_attr_ = attribution_of(web_);
  Attribution db_attr_ = attribution_of(db_);
  LabelMap web_out_ = conn("outbound", "shop", "web-7d4b9c-abcde", "nginx", "web");
  LabelMap web_in_ = conn("inbound", "shop", "web-7d4b9c-abcde", "nginx", "web");
  LabelMap db_out_ = conn("outbound", "shop", "db-0", "postgres", "db");
  LabelMap db_in_ = conn("inbound", "shop", "db-0", "postgres", "db");
};

TEST_F(MetricsCounters, CountsEachPodAndDirectionSeparately) {
  Metrics m({}, "test");
  auto web_out = m.series(Direction::kOutbound, &web_attr_);
  auto web_in = m.series(Direction::kInbound, &web_attr_);
  auto db_out = m.series(Direction::kOutbound, &db_attr_);
  auto db_in = m.series(Direction::kInbound, &db_attr_);
  EXPECT_EQ(m.series_count(), 4u);

  // web, outbound: 3 connects, 4 failures, 2 closes (0.5 ms and 2 ms).
  for (int i = 0; i < 3; ++i) Metrics::record(*web_out, opened(ConnKind::kEstablish));
  Metrics::record(*web_out, failed(ECONNREFUSED));
  Metrics::record(*web_out, failed(ECONNREFUSED));
  Metrics::record(*web_out, failed(ETIMEDOUT));
  Metrics::record(*web_out, failed(EADDRNOTAVAIL));  // not one of the listed errors: "other"
  Metrics::record(*web_out, closed(Direction::kOutbound, 100, 1000, 500'000));
  Metrics::record(*web_out, closed(Direction::kOutbound, 23, 4, 2'000'000));
  // web, inbound: 2 accepts, 1 close of exactly one second.
  Metrics::record(*web_in, opened(ConnKind::kAccept));
  Metrics::record(*web_in, opened(ConnKind::kAccept));
  Metrics::record(*web_in, closed(Direction::kInbound, 7, 11, 1'000'000'000));
  // db, outbound: 1 connect, closed after 4000 s (beyond the largest finite bucket).
  Metrics::record(*db_out, opened(ConnKind::kEstablish));
  Metrics::record(*db_out, closed(Direction::kOutbound, 1'000'000, 2'000'000, 4000'000'000'000));
  // db, inbound: 1 accept, still open.
  Metrics::record(*db_in, opened(ConnKind::kAccept));

  const Exposition x = parse_exposition(m.render());
  ASSERT_TRUE(x.errors.empty()) << x.errors.front();

  EXPECT_SAMPLE(x, "netmon_connections_opened_total", web_out_, 3);
  EXPECT_SAMPLE(x, "netmon_connections_opened_total", web_in_, 2);
  EXPECT_SAMPLE(x, "netmon_connections_opened_total", db_out_, 1);
  EXPECT_SAMPLE(x, "netmon_connections_opened_total", db_in_, 1);

  EXPECT_SAMPLE(x, "netmon_connections_closed_total", web_out_, 2);
  EXPECT_SAMPLE(x, "netmon_connections_closed_total", web_in_, 1);
  EXPECT_SAMPLE(x, "netmon_connections_closed_total", db_out_, 1);
  EXPECT_SAMPLE(x, "netmon_connections_closed_total", db_in_, 0);

  EXPECT_SAMPLE(x, "netmon_connections_active", web_out_, 1);
  EXPECT_SAMPLE(x, "netmon_connections_active", web_in_, 1);
  EXPECT_SAMPLE(x, "netmon_connections_active", db_out_, 0);
  EXPECT_SAMPLE(x, "netmon_connections_active", db_in_, 1);

  EXPECT_SAMPLE(x, "netmon_connection_bytes_sent_total", web_out_, 123);
  EXPECT_SAMPLE(x, "netmon_connection_bytes_received_total", web_out_, 1004);
  EXPECT_SAMPLE(x, "netmon_connection_bytes_sent_total", web_in_, 7);
  EXPECT_SAMPLE(x, "netmon_connection_bytes_received_total", web_in_, 11);
  EXPECT_SAMPLE(x, "netmon_connection_bytes_sent_total", db_out_, 1'000'000);
  EXPECT_SAMPLE(x, "netmon_connection_bytes_received_total", db_out_, 2'000'000);
  EXPECT_SAMPLE(x, "netmon_connection_bytes_sent_total", db_in_, 0);
  EXPECT_SAMPLE(x, "netmon_connection_bytes_received_total", db_in_, 0);

  // Failures: a series per error that happened, none for the others.
  const std::string f = "netmon_connections_failed_total";
  EXPECT_SAMPLE(x, f, with(web_out_, "error", "ECONNREFUSED"), 2);
  EXPECT_SAMPLE(x, f, with(web_out_, "error", "ETIMEDOUT"), 1);
  EXPECT_SAMPLE(x, f, with(web_out_, "error", "other"), 1);
  size_t failure_samples = 0;
  for (const Sample& s : x.samples) failure_samples += s.name == f;
  EXPECT_EQ(failure_samples, 3u);

  //                              .001 .005 .01 .05 .1 .5 1  5  10 60 300 3600 +Inf
  expect_histogram(x, web_out_, {1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2}, 2, 0.0025);
  expect_histogram(x, web_in_, {0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1}, 1, 1.0);
  expect_histogram(x, db_out_, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 1, 4000.0);
  expect_histogram(x, db_in_, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0, 0.0);
}

TEST_F(MetricsCounters, BucketBoundsAreInclusive) {
  Metrics m({}, "test");
  auto s = m.series(Direction::kOutbound, &web_attr_);
  // Exactly on a bound counts in that bucket (le = "less or equal"); a microsecond more does not.
  Metrics::record(*s, closed(Direction::kOutbound, 0, 0, 1'000'000));    // 0.001 s
  Metrics::record(*s, closed(Direction::kOutbound, 0, 0, 1'001'000));    // 0.001001 s
  Metrics::record(*s, closed(Direction::kOutbound, 0, 0, 100'000'000));  // 0.1 s
  Metrics::record(*s, closed(Direction::kOutbound, 0, 0, 0));            // 0 s
  // A close stamped before its open (clock oddity) counts as 0 s, not as a huge duration.
  ConnectionEvent backwards = closed(Direction::kOutbound, 0, 0, 0);
  backwards.boot_ns = kOpenNs - 1'000'000;
  Metrics::record(*s, backwards);

  const Exposition x = parse_exposition(m.render());
  //                              .001 .005 .01 .05 .1 .5 1  5  10 60 300 3600 +Inf
  expect_histogram(x, web_out_, {3, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5}, 5, 0.102001);
}

TEST_F(MetricsCounters, ConnectAbortedLocallyIsEconnaborted) {
  Metrics m({}, "test");
  auto s = m.series(Direction::kOutbound, nullptr);
  Metrics::record(*s, failed(0));  // given up locally: reported as ECONNABORTED
  Metrics::record(*s, failed(EHOSTUNREACH));
  const Exposition x = parse_exposition(m.render());
  EXPECT_SAMPLE(x, "netmon_connections_failed_total",
                with(host("outbound"), "error", "ECONNABORTED"), 1);
  EXPECT_SAMPLE(x, "netmon_connections_failed_total",
                with(host("outbound"), "error", "EHOSTUNREACH"), 1);
  // A failed connect was never open: nothing opened, closed or active.
  EXPECT_SAMPLE(x, "netmon_connections_opened_total", host("outbound"), 0);
  EXPECT_SAMPLE(x, "netmon_connections_active", host("outbound"), 0);
}

TEST_F(MetricsCounters, RecordFromManyThreadsLosesNothing) {
  Metrics m({}, "test");
  auto s = m.series(Direction::kOutbound, &web_attr_);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 20000;
  std::atomic<bool> stop{false};
  std::thread scraper([&] {
    while (!stop.load()) (void)m.render();
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        Metrics::record(*s, opened(ConnKind::kEstablish));
        Metrics::record(*s, closed(Direction::kOutbound, 3, 5, 1'000));
      }
    });
  }
  for (auto& t : threads) t.join();
  stop.store(true);
  scraper.join();
  const Exposition x = parse_exposition(m.render());
  EXPECT_SAMPLE(x, "netmon_connections_opened_total", web_out_, kThreads * kPerThread);
  EXPECT_SAMPLE(x, "netmon_connections_closed_total", web_out_, kThreads * kPerThread);
  EXPECT_SAMPLE(x, "netmon_connection_bytes_sent_total", web_out_, 3 * kThreads * kPerThread);
  EXPECT_SAMPLE(x, "netmon_connection_bytes_received_total", web_out_, 5 * kThreads * kPerThread);
}

// ---- series identity -------------------------------------------------------------------------

TEST_F(MetricsCounters, SameLabelsGiveTheSameSeries) {
  Metrics m({}, "test");
  auto a = m.series(Direction::kOutbound, &web_attr_);
  EXPECT_EQ(m.series(Direction::kOutbound, &web_attr_), a);
  // Another Attribution object with equal pod data (e.g. after a snapshot refresh).
  PodMeta copy = web_;
  Attribution copy_attr = attribution_of(copy);
  EXPECT_EQ(m.series(Direction::kOutbound, &copy_attr), a);
  EXPECT_NE(m.series(Direction::kInbound, &web_attr_), a);
  EXPECT_NE(m.series(Direction::kOutbound, &db_attr_), a);
  EXPECT_EQ(m.series_count(), 3u);

  // Counting through either pointer lands in one series.
  Metrics::record(*a, opened(ConnKind::kEstablish));
  Metrics::record(*m.series(Direction::kOutbound, &copy_attr), opened(ConnKind::kEstablish));
  const Exposition x = parse_exposition(m.render());
  EXPECT_SAMPLE(x, "netmon_connections_opened_total", web_out_, 2);
  EXPECT_EQ(find_samples(x, "netmon_connections_opened_total", web_out_).size(), 1u);
}

TEST_F(MetricsCounters, HostProcessesHaveEmptyPodLabels) {
  Metrics m({}, "test");
  auto none = m.series(Direction::kOutbound, nullptr);
  // In a container, but the pod is unknown: also the host series (empty pod labels).
  Attribution unknown_pod;
  unknown_pod.container_id = "c-unknown";
  EXPECT_EQ(m.series(Direction::kOutbound, &unknown_pod), none);
  auto in = m.series(Direction::kInbound, nullptr);
  EXPECT_NE(in, none);
  // A known pod whose container the kubelet does not list: pod labels, container empty.
  Attribution no_container = web_attr_;
  no_container.container = nullptr;
  auto pod_only = m.series(Direction::kOutbound, &no_container);
  EXPECT_NE(pod_only, none);

  Metrics::record(*none, opened(ConnKind::kEstablish));
  Metrics::record(*in, opened(ConnKind::kAccept));
  Metrics::record(*in, opened(ConnKind::kAccept));
  Metrics::record(*pod_only, opened(ConnKind::kEstablish));
  const Exposition x = parse_exposition(m.render());
  EXPECT_SAMPLE(x, "netmon_connections_opened_total", host("outbound"), 1);
  EXPECT_SAMPLE(x, "netmon_connections_opened_total", host("inbound"), 2);
  EXPECT_SAMPLE(x, "netmon_connections_opened_total",
                conn("outbound", "shop", "web-7d4b9c-abcde", "", "web"), 1);
  EXPECT_EQ(m.series_count(), 3u);
}

// ---- removing the series of deleted pods -----------------------------------------------------

TEST_F(MetricsCounters, RemovePodsDropsExactlyTheRejectedPods) {
  Metrics m({}, "test");
  auto web_out = m.series(Direction::kOutbound, &web_attr_);
  auto web_in = m.series(Direction::kInbound, &web_attr_);
  auto db_out = m.series(Direction::kOutbound, &db_attr_);
  auto host_out = m.series(Direction::kOutbound, nullptr);
  for (auto* s : {&web_out, &web_in, &db_out, &host_out}) {
    Metrics::record(**s, opened(ConnKind::kEstablish));
  }
  ASSERT_EQ(m.series_count(), 4u);

  std::multiset<std::string> asked;
  m.remove_pods([&](const std::string& uid) {
    asked.insert(uid);
    return uid != "uid-web";
  });
  // Asked about pod series only (never about the host series' empty uid).
  EXPECT_EQ(asked, (std::multiset<std::string>{"uid-web", "uid-web", "uid-db"}));
  EXPECT_EQ(m.series_count(), 2u);

  const Exposition x = parse_exposition(m.render());
  EXPECT_TRUE(find_samples(x, "netmon_connections_opened_total", web_out_).empty());
  EXPECT_TRUE(find_samples(x, "netmon_connections_opened_total", web_in_).empty());
  EXPECT_SAMPLE(x, "netmon_connections_opened_total", db_out_, 1);
  EXPECT_SAMPLE(x, "netmon_connections_opened_total", host("outbound"), 1);
  for (const Sample& s : x.samples) {
    EXPECT_NE(s.labels.count("pod") ? s.labels.at("pod") : "", "web-7d4b9c-abcde") << s.name;
  }

  // A removed pod's series comes back (from zero) only if asked for again.
  auto again = m.series(Direction::kOutbound, &web_attr_);
  EXPECT_NE(again, web_out);
  const Exposition y = parse_exposition(m.render());
  EXPECT_SAMPLE(y, "netmon_connections_opened_total", web_out_, 0);

  // Everything known: nothing removed.
  m.remove_pods([](const std::string&) { return true; });
  EXPECT_EQ(m.series_count(), 3u);
}

TEST_F(MetricsCounters, RemovePodsKeepsMergedSeriesWhenThePodLabelIsDropped) {
  Metrics m({"pod"}, "test");
  auto web = m.series(Direction::kOutbound, &web_attr_);
  auto db = m.series(Direction::kOutbound, &db_attr_);
  Metrics::record(*web, opened(ConnKind::kEstablish));
  Metrics::record(*db, opened(ConnKind::kEstablish));
  ASSERT_EQ(m.series_count(), 2u);  // still apart by container and workload

  bool asked = false;
  m.remove_pods([&](const std::string&) {
    asked = true;
    return false;  // every pod deleted
  });
  EXPECT_FALSE(asked) << "a merged series belongs to no single pod";
  EXPECT_EQ(m.series_count(), 2u);
  const Exposition x = parse_exposition(m.render());
  EXPECT_SAMPLE(x, "netmon_connections_opened_total", conn("outbound", "shop", "", "nginx", "web"),
                1);
  EXPECT_SAMPLE(x, "netmon_connections_opened_total",
                conn("outbound", "shop", "", "postgres", "db"), 1);
}

// Series are keyed by their label values. A pod recreated under the same name (a StatefulSet's
// "db-0", on the same node) continues the old pod's series; when the old pod's grace period
// ends, remove_pods() must keep the series the new (known) pod still counts in.
TEST_F(MetricsCounters, RemovePodsKeepsASeriesAPodOfTheSameNameStillUses) {
  Metrics m({}, "test");
  PodMeta old_db = make_pod("shop", "db-0", "uid-old", "db", "c-old", "postgres");
  PodMeta new_db = make_pod("shop", "db-0", "uid-new", "db", "c-new", "postgres");
  Attribution old_attr = attribution_of(old_db);
  Attribution new_attr = attribution_of(new_db);
  auto old_series = m.series(Direction::kOutbound, &old_attr);
  Metrics::record(*old_series, opened(ConnKind::kEstablish));
  auto new_series = m.series(Direction::kOutbound, &new_attr);
  Metrics::record(*new_series, opened(ConnKind::kEstablish));

  EXPECT_EQ(new_series, old_series);

  m.remove_pods([](const std::string& uid) { return uid == "uid-new"; });
  EXPECT_EQ(m.series_count(), 1u) << "the live pod db-0's series was removed with the old pod";
  const Exposition x = parse_exposition(m.render());
  EXPECT_SAMPLE(x, "netmon_connections_opened_total", db_out_, 2);

  // Once the new pod is gone too, the series goes.
  m.remove_pods([](const std::string&) { return false; });
  EXPECT_EQ(m.series_count(), 0u);
}

// ---- dropped labels --------------------------------------------------------------------------

TEST_F(MetricsCounters, DroppedLabelsAreEmptyAndMergeTheirSeries) {
  PodMeta web2 = make_pod("shop", "web-7d4b9c-fghij", "uid-web2", "web", "c-web2", "nginx");
  PodMeta web3 = make_pod("shop", "web-7d4b9c-klmno", "uid-web3", "web", "c-web3", "sidecar");
  Attribution web2_attr = attribution_of(web2);
  Attribution web3_attr = attribution_of(web3);
  Metrics m({"pod", "container"}, "test");
  auto a = m.series(Direction::kOutbound, &web_attr_);
  auto b = m.series(Direction::kOutbound, &web2_attr);
  auto c = m.series(Direction::kOutbound, &web3_attr);  // other container name: merged too
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, c);
  auto other_workload = m.series(Direction::kOutbound, &db_attr_);
  EXPECT_NE(other_workload, a);
  EXPECT_EQ(m.series_count(), 2u);

  Metrics::record(*a, opened(ConnKind::kEstablish));
  Metrics::record(*b, opened(ConnKind::kEstablish));
  Metrics::record(*c, opened(ConnKind::kEstablish));
  Metrics::record(*a, closed(Direction::kOutbound, 10, 1, 1'000'000));
  Metrics::record(*b, closed(Direction::kOutbound, 20, 2, 3'000'000));
  Metrics::record(*other_workload, opened(ConnKind::kEstablish));

  const Exposition x = parse_exposition(m.render());
  const LabelMap merged = conn("outbound", "shop", "", "", "web");
  EXPECT_SAMPLE(x, "netmon_connections_opened_total", merged, 3);
  EXPECT_SAMPLE(x, "netmon_connections_closed_total", merged, 2);
  EXPECT_SAMPLE(x, "netmon_connections_active", merged, 1);
  EXPECT_SAMPLE(x, "netmon_connection_bytes_sent_total", merged, 30);
  EXPECT_SAMPLE(x, "netmon_connection_bytes_received_total", merged, 3);
  expect_histogram(x, merged, {1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2}, 2, 0.004);
  EXPECT_SAMPLE(x, "netmon_connections_opened_total", conn("outbound", "shop", "", "", "db"), 1);
  // Every connection series still carries all five labels, the dropped ones empty.
  for (const Sample& s : x.samples) {
    if (s.name.rfind("netmon_connection", 0) != 0 ||
        s.name.find("owner_unknown") != std::string::npos) {
      continue;
    }
    ASSERT_EQ(s.labels.count("pod"), 1u) << s.name;
    EXPECT_EQ(s.labels.at("pod"), "") << s.name;
    EXPECT_EQ(s.labels.at("container"), "") << s.name;
    EXPECT_EQ(s.labels.count("direction"), 1u) << s.name;
    EXPECT_EQ(s.labels.count("namespace"), 1u) << s.name;
    EXPECT_EQ(s.labels.count("workload"), 1u) << s.name;
  }
}

TEST_F(MetricsCounters, EveryLabelCanBeDropped) {
  Metrics m({"direction", "namespace", "pod", "container", "workload"}, "test");
  auto a = m.series(Direction::kOutbound, &web_attr_);
  auto b = m.series(Direction::kInbound, &db_attr_);
  auto c = m.series(Direction::kInbound, nullptr);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, c);
  Metrics::record(*a, opened(ConnKind::kEstablish));
  Metrics::record(*b, opened(ConnKind::kAccept));
  const Exposition x = parse_exposition(m.render());
  EXPECT_SAMPLE(x, "netmon_connections_opened_total", conn("", "", "", "", ""), 2);
}

TEST(DroppedLabels, ParsesACommaSeparatedList) {
  auto two = parse_dropped_labels("pod,container");
  ASSERT_TRUE(two) << two.error().message;
  EXPECT_EQ(*two, (std::vector<std::string>{"pod", "container"}));

  auto spaced = parse_dropped_labels(" pod , workload ,,");
  ASSERT_TRUE(spaced) << spaced.error().message;
  EXPECT_EQ(*spaced, (std::vector<std::string>{"pod", "workload"}));

  auto all = parse_dropped_labels("direction,namespace,pod,container,workload");
  ASSERT_TRUE(all) << all.error().message;
  EXPECT_EQ(all->size(), 5u);

  auto none = parse_dropped_labels("");
  ASSERT_TRUE(none) << none.error().message;
  EXPECT_TRUE(none->empty());
}

TEST(DroppedLabels, ErrorsNameTheUnknownLabel) {
  auto bad = parse_dropped_labels("pod,bogus");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("'bogus'"), std::string::npos) << bad.error().message;

  auto upper = parse_dropped_labels("Pod");
  ASSERT_FALSE(upper);
  EXPECT_NE(upper.error().message.find("'Pod'"), std::string::npos) << upper.error().message;

  // Not a connection label: the error, not silence, for labels of other families.
  auto error_label = parse_dropped_labels("error");
  ASSERT_FALSE(error_label);
  EXPECT_NE(error_label.error().message.find("'error'"), std::string::npos);
}

// ---- agent health ----------------------------------------------------------------------------

HealthSnapshot numbered_health(bool kubelet) {
  HealthSnapshot h;
  h.events_by_type = {101, 102, 103, 104};
  h.lost[loss_index(LossStage::kRingBuffer)] = 1;
  h.lost[loss_index(LossStage::kSocketsMap)] = 2;
  h.lost[loss_index(LossStage::kRecursion)] = 3;
  h.lost[loss_index(LossStage::kUnobserved)] = 31;
  h.lost[loss_index(LossStage::kAccept)] = 32;
  h.lost[loss_index(LossStage::kDecode)] = 4;
  h.lost[loss_index(LossStage::kOutputQueue)] = 5;
  h.lost[loss_index(LossStage::kOutputError)] = 6;
  h.events_without_process = 7;
  h.events_without_pod = 8;
  h.owner_unknown = 9;
  h.state_runs_made_up = 91;
  h.output_waits = 92;
  h.output_wait_seconds = 1.5;
  h.process_table_live = 10;
  h.process_table_exited = 11;
  h.process_table_misses = 12;
  h.process_table_evictions = 13;
  h.kubelet_enabled = kubelet;
  for (size_t r = 0; r < h.kubelet.requests.size(); ++r) h.kubelet.requests[r] = 200 + r;
  h.kubelet.synced = true;
  h.kubelet.pods = 42;
  h.kubelet.deleted_pods_kept = 3;
  return h;
}

TEST(MetricsHealth, FamiliesCarryThePublishedNumbers) {
  Metrics m({}, "1.2.3");
  m.publish_health(numbered_health(false));
  m.set_hooks({{"sock/inet_sock_set_state", "tp_btf"}, {"syscalls/sys_exit_accept4", "raw_tp"}});
  m.set_hook_variants({{"state", "tp_btf"}, {"accept", "tracepoint"}, {"process", "raw_tp"}});
  const Exposition x = parse_exposition(m.render());
  ASSERT_TRUE(x.errors.empty()) << x.errors.front();

  EXPECT_SAMPLE(x, "netmon_events_total", (LabelMap{{"type", "TcpConnectionEstablish"}}), 101);
  EXPECT_SAMPLE(x, "netmon_events_total", (LabelMap{{"type", "TcpConnectionAccept"}}), 102);
  EXPECT_SAMPLE(x, "netmon_events_total", (LabelMap{{"type", "TcpConnectionClose"}}), 103);
  EXPECT_SAMPLE(x, "netmon_events_total", (LabelMap{{"type", "TcpConnectionFailed"}}), 104);

  const std::pair<const char*, int> stages[] = {
      {"ring_buffer", 1}, {"sockets_map", 2}, {"recursion", 3},    {"unobserved", 31},
      {"accept", 32},     {"decode", 4},      {"output_queue", 5}, {"output_error", 6}};
  for (const auto& [stage, n] : stages) {
    EXPECT_SAMPLE(x, "netmon_events_lost_total", (LabelMap{{"stage", stage}}), n);
  }
  size_t lost_samples = 0;
  for (const Sample& s : x.samples) lost_samples += s.name == "netmon_events_lost_total";
  EXPECT_EQ(lost_samples, 8u);

  EXPECT_SAMPLE(x, "netmon_events_without_process_total", LabelMap{}, 7);
  EXPECT_SAMPLE(x, "netmon_events_without_pod_total", LabelMap{}, 8);
  EXPECT_SAMPLE(x, "netmon_connections_owner_unknown_total", LabelMap{}, 9);
  EXPECT_SAMPLE(x, "netmon_bpf_state_runs_made_up_total", LabelMap{}, 91);
  EXPECT_SAMPLE(x, "netmon_output_waits_total", LabelMap{}, 92);
  EXPECT_SAMPLE(x, "netmon_output_wait_seconds_total", LabelMap{}, 1.5);
  EXPECT_SAMPLE(x, "netmon_process_table_entries", (LabelMap{{"state", "live"}}), 10);
  EXPECT_SAMPLE(x, "netmon_process_table_entries", (LabelMap{{"state", "exited"}}), 11);
  EXPECT_SAMPLE(x, "netmon_process_table_misses_total", LabelMap{}, 12);
  EXPECT_SAMPLE(x, "netmon_process_table_evictions_total", LabelMap{}, 13);
  EXPECT_SAMPLE(x, "netmon_hook_info",
                (LabelMap{{"hook", "sock/inet_sock_set_state"}, {"variant", "tp_btf"}}), 1);
  EXPECT_SAMPLE(x, "netmon_hook_info",
                (LabelMap{{"hook", "syscalls/sys_exit_accept4"}, {"variant", "raw_tp"}}), 1);
  EXPECT_SAMPLE(x, "netmon_hook_variant_info", (LabelMap{{"hook", "state"}, {"variant", "tp_btf"}}),
                1);
  EXPECT_SAMPLE(x, "netmon_hook_variant_info",
                (LabelMap{{"hook", "accept"}, {"variant", "tracepoint"}}), 1);
  EXPECT_SAMPLE(x, "netmon_hook_variant_info",
                (LabelMap{{"hook", "process"}, {"variant", "raw_tp"}}), 1);
  EXPECT_SAMPLE(x, "netmon_build_info", (LabelMap{{"version", "1.2.3"}}), 1);

  // Without a kubelet, no kubelet family at all.
  for (const Sample& s : x.samples) {
    EXPECT_EQ(s.name.find("kubelet"), std::string::npos) << s.name;
  }
  EXPECT_EQ(x.type.count("netmon_kubelet_requests_total"), 0u);
  EXPECT_EQ(x.type.count("netmon_kubelet_pods"), 0u);
  EXPECT_EQ(x.type.count("netmon_kubelet_synced"), 0u);

  // A later snapshot replaces the numbers.
  HealthSnapshot later = numbered_health(false);
  later.lost[loss_index(LossStage::kDecode)] = 40;
  m.publish_health(later);
  const Exposition y = parse_exposition(m.render());
  EXPECT_SAMPLE(y, "netmon_events_lost_total", (LabelMap{{"stage", "decode"}}), 40);
}

TEST(MetricsHealth, KubeletFamiliesWhenEnabled) {
  Metrics m({}, "1.2.3");
  m.publish_health(numbered_health(true));
  const Exposition x = parse_exposition(m.render());
  const char* results[] = {"ok",        "unreachable", "timeout",      "tls_error", "unauthorized",
                           "forbidden", "http_error",  "bad_response", "too_large"};
  ASSERT_EQ(std::size(results), static_cast<size_t>(KubeletResult::kCount));
  for (size_t r = 0; r < std::size(results); ++r) {
    EXPECT_SAMPLE(x, "netmon_kubelet_requests_total", (LabelMap{{"result", results[r]}}), 200 + r);
  }
  EXPECT_EQ(x.type.at("netmon_kubelet_requests_total"), "counter");
  EXPECT_SAMPLE(x, "netmon_kubelet_pods", LabelMap{}, 42);
  EXPECT_EQ(x.type.at("netmon_kubelet_pods"), "gauge");
  EXPECT_SAMPLE(x, "netmon_kubelet_synced", LabelMap{}, 1);
  EXPECT_EQ(x.type.at("netmon_kubelet_synced"), "gauge");

  HealthSnapshot unsynced = numbered_health(true);
  unsynced.kubelet.synced = false;
  m.publish_health(unsynced);
  const Exposition y = parse_exposition(m.render());
  EXPECT_SAMPLE(y, "netmon_kubelet_synced", LabelMap{}, 0);
}

TEST(MetricsHealth, ZeroBeforeTheFirstSnapshot) {
  Metrics m({}, "0.0.1");
  const Exposition x = parse_exposition(m.render());
  ASSERT_TRUE(x.errors.empty()) << x.errors.front();
  EXPECT_SAMPLE(x, "netmon_events_total", (LabelMap{{"type", "TcpConnectionEstablish"}}), 0);
  EXPECT_SAMPLE(x, "netmon_events_lost_total", (LabelMap{{"stage", "ring_buffer"}}), 0);
  EXPECT_SAMPLE(x, "netmon_build_info", (LabelMap{{"version", "0.0.1"}}), 1);
  EXPECT_EQ(x.type.count("netmon_kubelet_synced"), 0u);
}

// ---- the text exposition ---------------------------------------------------------------------

TEST(MetricsRender, TheTextOutputForAFixedRegistry) {
  Metrics m({}, "9.9.9");
  PodMeta pod = make_pod("shop", "web-1", "u-1", "web", "c1", "nginx");
  Attribution attr = attribution_of(pod);
  auto out = m.series(Direction::kOutbound, &attr);
  Metrics::record(*out, opened(ConnKind::kEstablish));
  Metrics::record(*out, opened(ConnKind::kEstablish));
  Metrics::record(*out, closed(Direction::kOutbound, 10, 20, 2'000'000));
  Metrics::record(*out, failed(ECONNREFUSED));
  auto in = m.series(Direction::kInbound, nullptr);
  Metrics::record(*in, opened(ConnKind::kAccept));
  // One edge: the pod to a workload, opened, closed after 2 ms with a 250 us RTT, failed once.
  EdgeCounters edges(m.edges(), 10);
  Peer cart;
  cart.kind = PeerKind::kPod;
  cart.namespace_name = "shop";
  cart.workload = "cart";
  const EdgeEnds ends{&attr, "", &cart, nullptr};
  edges.count(opened(ConnKind::kEstablish), ends, kOpenNs);
  ConnectionEvent edge_close = closed(Direction::kOutbound, 10, 20, 2'000'000);
  edge_close.close.srtt_us = 250;
  edges.count(edge_close, ends, kOpenNs);
  edges.count(failed(ECONNREFUSED), ends, kOpenNs);

  HealthSnapshot h;
  h.ready = true;
  h.events_by_type = {2, 1, 1, 1};
  h.lost[loss_index(LossStage::kRingBuffer)] = 1;
  h.lost[loss_index(LossStage::kSocketsMap)] = 2;
  h.lost[loss_index(LossStage::kRecursion)] = 3;
  h.lost[loss_index(LossStage::kUnobserved)] = 31;
  h.lost[loss_index(LossStage::kAccept)] = 32;
  h.lost[loss_index(LossStage::kDecode)] = 4;
  h.lost[loss_index(LossStage::kOutputQueue)] = 5;
  h.lost[loss_index(LossStage::kOutputError)] = 6;
  h.events_without_process = 7;
  h.events_without_pod = 8;
  h.owner_unknown = 9;
  h.state_runs_made_up = 91;
  h.output_waits = 92;
  h.output_wait_seconds = 1.5;
  h.process_table_live = 10;
  h.process_table_exited = 11;
  h.process_table_misses = 12;
  h.process_table_evictions = 13;
  m.publish_health(h);
  m.set_hooks(
      {{"sock/inet_sock_set_state", "tp_btf"}, {"syscalls/sys_exit_accept4", "tracepoint"}});
  m.set_map_memory({{"events", 4206592}, {"sockets", 4195328}});

  const std::string expected =
      R"(# HELP netmon_connections_opened_total TCP connections established (outbound) or accepted (inbound).
# TYPE netmon_connections_opened_total counter
netmon_connections_opened_total{direction="inbound",namespace="",pod="",container="",workload=""} 1
netmon_connections_opened_total{direction="outbound",namespace="shop",pod="web-1",container="nginx",workload="web"} 2
# HELP netmon_connections_failed_total Outbound TCP connects that ended without a connection, by error.
# TYPE netmon_connections_failed_total counter
netmon_connections_failed_total{direction="outbound",namespace="shop",pod="web-1",container="nginx",workload="web",error="ECONNREFUSED"} 1
# HELP netmon_connections_closed_total TCP connections reported open that have closed.
# TYPE netmon_connections_closed_total counter
netmon_connections_closed_total{direction="inbound",namespace="",pod="",container="",workload=""} 0
netmon_connections_closed_total{direction="outbound",namespace="shop",pod="web-1",container="nginx",workload="web"} 1
# HELP netmon_connections_active TCP connections reported open and not closed yet.
# TYPE netmon_connections_active gauge
netmon_connections_active{direction="inbound",namespace="",pod="",container="",workload=""} 1
netmon_connections_active{direction="outbound",namespace="shop",pod="web-1",container="nginx",workload="web"} 1
# HELP netmon_connection_bytes_sent_total Payload bytes sent by closed connections.
# TYPE netmon_connection_bytes_sent_total counter
netmon_connection_bytes_sent_total{direction="inbound",namespace="",pod="",container="",workload=""} 0
netmon_connection_bytes_sent_total{direction="outbound",namespace="shop",pod="web-1",container="nginx",workload="web"} 10
# HELP netmon_connection_bytes_received_total Payload bytes received by closed connections.
# TYPE netmon_connection_bytes_received_total counter
netmon_connection_bytes_received_total{direction="inbound",namespace="",pod="",container="",workload=""} 0
netmon_connection_bytes_received_total{direction="outbound",namespace="shop",pod="web-1",container="nginx",workload="web"} 20
# HELP netmon_connection_duration_seconds Time from open to close of closed connections.
# TYPE netmon_connection_duration_seconds histogram
netmon_connection_duration_seconds_count{direction="inbound",namespace="",pod="",container="",workload=""} 0
netmon_connection_duration_seconds_sum{direction="inbound",namespace="",pod="",container="",workload=""} 0
netmon_connection_duration_seconds_bucket{direction="inbound",namespace="",pod="",container="",workload="",le="0.001"} 0
netmon_connection_duration_seconds_bucket{direction="inbound",namespace="",pod="",container="",workload="",le="0.005"} 0
netmon_connection_duration_seconds_bucket{direction="inbound",namespace="",pod="",container="",workload="",le="0.01"} 0
netmon_connection_duration_seconds_bucket{direction="inbound",namespace="",pod="",container="",workload="",le="0.05"} 0
netmon_connection_duration_seconds_bucket{direction="inbound",namespace="",pod="",container="",workload="",le="0.1"} 0
netmon_connection_duration_seconds_bucket{direction="inbound",namespace="",pod="",container="",workload="",le="0.5"} 0
netmon_connection_duration_seconds_bucket{direction="inbound",namespace="",pod="",container="",workload="",le="1"} 0
netmon_connection_duration_seconds_bucket{direction="inbound",namespace="",pod="",container="",workload="",le="5"} 0
netmon_connection_duration_seconds_bucket{direction="inbound",namespace="",pod="",container="",workload="",le="10"} 0
netmon_connection_duration_seconds_bucket{direction="inbound",namespace="",pod="",container="",workload="",le="60"} 0
netmon_connection_duration_seconds_bucket{direction="inbound",namespace="",pod="",container="",workload="",le="300"} 0
netmon_connection_duration_seconds_bucket{direction="inbound",namespace="",pod="",container="",workload="",le="3600"} 0
netmon_connection_duration_seconds_bucket{direction="inbound",namespace="",pod="",container="",workload="",le="+Inf"} 0
netmon_connection_duration_seconds_count{direction="outbound",namespace="shop",pod="web-1",container="nginx",workload="web"} 1
netmon_connection_duration_seconds_sum{direction="outbound",namespace="shop",pod="web-1",container="nginx",workload="web"} 0.002
netmon_connection_duration_seconds_bucket{direction="outbound",namespace="shop",pod="web-1",container="nginx",workload="web",le="0.001"} 0
netmon_connection_duration_seconds_bucket{direction="outbound",namespace="shop",pod="web-1",container="nginx",workload="web",le="0.005"} 1
netmon_connection_duration_seconds_bucket{direction="outbound",namespace="shop",pod="web-1",container="nginx",workload="web",le="0.01"} 1
netmon_connection_duration_seconds_bucket{direction="outbound",namespace="shop",pod="web-1",container="nginx",workload="web",le="0.05"} 1
netmon_connection_duration_seconds_bucket{direction="outbound",namespace="shop",pod="web-1",container="nginx",workload="web",le="0.1"} 1
netmon_connection_duration_seconds_bucket{direction="outbound",namespace="shop",pod="web-1",container="nginx",workload="web",le="0.5"} 1
netmon_connection_duration_seconds_bucket{direction="outbound",namespace="shop",pod="web-1",container="nginx",workload="web",le="1"} 1
netmon_connection_duration_seconds_bucket{direction="outbound",namespace="shop",pod="web-1",container="nginx",workload="web",le="5"} 1
netmon_connection_duration_seconds_bucket{direction="outbound",namespace="shop",pod="web-1",container="nginx",workload="web",le="10"} 1
netmon_connection_duration_seconds_bucket{direction="outbound",namespace="shop",pod="web-1",container="nginx",workload="web",le="60"} 1
netmon_connection_duration_seconds_bucket{direction="outbound",namespace="shop",pod="web-1",container="nginx",workload="web",le="300"} 1
netmon_connection_duration_seconds_bucket{direction="outbound",namespace="shop",pod="web-1",container="nginx",workload="web",le="3600"} 1
netmon_connection_duration_seconds_bucket{direction="outbound",namespace="shop",pod="web-1",container="nginx",workload="web",le="+Inf"} 1
# HELP netmon_events_total Events written, by event type.
# TYPE netmon_events_total counter
netmon_events_total{type="TcpConnectionEstablish"} 2
netmon_events_total{type="TcpConnectionAccept"} 1
netmon_events_total{type="TcpConnectionClose"} 1
netmon_events_total{type="TcpConnectionFailed"} 1
# HELP netmon_events_lost_total Events lost, by the stage that lost them.
# TYPE netmon_events_lost_total counter
netmon_events_lost_total{stage="ring_buffer"} 1
netmon_events_lost_total{stage="sockets_map"} 2
netmon_events_lost_total{stage="recursion"} 3
netmon_events_lost_total{stage="unobserved"} 31
netmon_events_lost_total{stage="accept"} 32
netmon_events_lost_total{stage="decode"} 4
netmon_events_lost_total{stage="output_queue"} 5
netmon_events_lost_total{stage="output_error"} 6
# HELP netmon_events_without_process_total Events whose owner was not in the process table.
# TYPE netmon_events_without_process_total counter
netmon_events_without_process_total 7
# HELP netmon_events_without_pod_total Events from a pod cgroup whose pod metadata was unknown.
# TYPE netmon_events_without_pod_total counter
netmon_events_without_pod_total 8
# HELP netmon_connections_owner_unknown_total Connections reported without a process: opened before attach, or connect() unseen.
# TYPE netmon_connections_owner_unknown_total counter
netmon_connections_owner_unknown_total 9
# HELP netmon_bpf_state_runs_made_up_total Runs of the state tracepoint programs the kernel skipped, whose changes the TCP state observer (sock_ops) handled: no event lost.
# TYPE netmon_bpf_state_runs_made_up_total counter
netmon_bpf_state_runs_made_up_total 91
# HELP netmon_output_waits_total Times the output queue had no room for a batch of events, so that the kernel reader paused (bounded) to let stdout catch up.
# TYPE netmon_output_waits_total counter
netmon_output_waits_total 92
# HELP netmon_output_wait_seconds_total Time the kernel reader waited for room in the output queue.
# TYPE netmon_output_wait_seconds_total counter
netmon_output_wait_seconds_total 1.5
# HELP netmon_process_table_entries Processes in the process table.
# TYPE netmon_process_table_entries gauge
netmon_process_table_entries{state="live"} 10
netmon_process_table_entries{state="exited"} 11
# HELP netmon_process_table_misses_total Owner lookups that found no process.
# TYPE netmon_process_table_misses_total counter
netmon_process_table_misses_total 12
# HELP netmon_process_table_evictions_total Exited processes dropped to keep the table within its capacity.
# TYPE netmon_process_table_evictions_total counter
netmon_process_table_evictions_total 13
# HELP netmon_nat_lookups_total Connection events looked up in the node's conntrack translations, by result: translated, not_translated, lost (messages were lost).
# TYPE netmon_nat_lookups_total counter
netmon_nat_lookups_total{result="translated"} 0
netmon_nat_lookups_total{result="not_translated"} 0
netmon_nat_lookups_total{result="lost"} 0
# HELP netmon_nat_conntrack_enabled 1 when the agent reads the node's conntrack translations.
# TYPE netmon_nat_conntrack_enabled gauge
netmon_nat_conntrack_enabled 0
# HELP netmon_edge_series_limit The most edges the agent exports (metrics.max_edges); past it new edges are counted in the overflow series.
# TYPE netmon_edge_series_limit gauge
netmon_edge_series_limit 1000
# HELP netmon_edge_connections_total TCP connections established or accepted, by edge.
# TYPE netmon_edge_connections_total counter
netmon_edge_connections_total{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port=""} 1
# HELP netmon_edge_connection_failures_total Outbound TCP connects that failed, by edge and error.
# TYPE netmon_edge_connection_failures_total counter
netmon_edge_connection_failures_total{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port="",error="ECONNREFUSED"} 1
# HELP netmon_edge_bytes_sent_total Payload bytes sent by the edge's closed connections.
# TYPE netmon_edge_bytes_sent_total counter
netmon_edge_bytes_sent_total{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port=""} 10
# HELP netmon_edge_bytes_received_total Payload bytes received by the edge's closed connections.
# TYPE netmon_edge_bytes_received_total counter
netmon_edge_bytes_received_total{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port=""} 20
# HELP netmon_edge_retransmits_total Segments retransmitted by the edge's closed connections.
# TYPE netmon_edge_retransmits_total counter
netmon_edge_retransmits_total{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port=""} 0
# HELP netmon_edge_rtt_seconds Smoothed round-trip time of the edge's connections when they closed.
# TYPE netmon_edge_rtt_seconds histogram
netmon_edge_rtt_seconds_count{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port=""} 1
netmon_edge_rtt_seconds_sum{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port=""} 0.00025
netmon_edge_rtt_seconds_bucket{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port="",le="0.0001"} 0
netmon_edge_rtt_seconds_bucket{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port="",le="0.0005"} 1
netmon_edge_rtt_seconds_bucket{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port="",le="0.001"} 1
netmon_edge_rtt_seconds_bucket{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port="",le="0.005"} 1
netmon_edge_rtt_seconds_bucket{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port="",le="0.01"} 1
netmon_edge_rtt_seconds_bucket{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port="",le="0.025"} 1
netmon_edge_rtt_seconds_bucket{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port="",le="0.05"} 1
netmon_edge_rtt_seconds_bucket{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port="",le="0.1"} 1
netmon_edge_rtt_seconds_bucket{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port="",le="0.25"} 1
netmon_edge_rtt_seconds_bucket{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port="",le="1"} 1
netmon_edge_rtt_seconds_bucket{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port="",le="+Inf"} 1
# HELP netmon_edge_connection_duration_seconds Time from open to close of the edge's closed connections.
# TYPE netmon_edge_connection_duration_seconds histogram
netmon_edge_connection_duration_seconds_count{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port=""} 1
netmon_edge_connection_duration_seconds_sum{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port=""} 0.002
netmon_edge_connection_duration_seconds_bucket{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port="",le="0.01"} 1
netmon_edge_connection_duration_seconds_bucket{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port="",le="0.1"} 1
netmon_edge_connection_duration_seconds_bucket{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port="",le="1"} 1
netmon_edge_connection_duration_seconds_bucket{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port="",le="10"} 1
netmon_edge_connection_duration_seconds_bucket{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port="",le="60"} 1
netmon_edge_connection_duration_seconds_bucket{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port="",le="300"} 1
netmon_edge_connection_duration_seconds_bucket{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port="",le="1800"} 1
netmon_edge_connection_duration_seconds_bucket{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port="",le="7200"} 1
netmon_edge_connection_duration_seconds_bucket{direction="outbound",namespace="shop",workload="web",workload_kind="Deployment",peer_kind="pod",peer_namespace="shop",peer_workload="cart",peer_service="",peer_node="",peer_network="",port="",le="+Inf"} 1
# HELP netmon_edge_series Edges exported now (the overflow series not counted).
# TYPE netmon_edge_series gauge
netmon_edge_series 1
# HELP netmon_edge_series_overflow_total Connection events counted in the overflow series of their direction: those of edges that were new while metrics.max_edges edges were held, their Closes included.
# TYPE netmon_edge_series_overflow_total counter
netmon_edge_series_overflow_total{direction="outbound"} 0
netmon_edge_series_overflow_total{direction="inbound"} 0
# HELP netmon_edge_series_removed_total Edges removed after metrics.edge_idle_seconds without an event and without an open connection.
# TYPE netmon_edge_series_removed_total counter
netmon_edge_series_removed_total 0
# HELP netmon_ready 1 when the agent is ready (what /readyz answers): probes attached, first kubelet sync done, stdout writable.
# TYPE netmon_ready gauge
netmon_ready 1
# HELP netmon_hook_info The variant each kernel hook attached with.
# TYPE netmon_hook_info gauge
netmon_hook_info{hook="sock/inet_sock_set_state",variant="tp_btf"} 1
netmon_hook_info{hook="syscalls/sys_exit_accept4",variant="tracepoint"} 1
# HELP netmon_hook_variant_info The variant chosen at start for each hook: state, accept, process.
# TYPE netmon_hook_variant_info gauge
# HELP netmon_bpf_map_memory_bytes Kernel memory charged for each BPF map (memlock: a preallocated map at its full capacity, a hash map without preallocation as it is now).
# TYPE netmon_bpf_map_memory_bytes gauge
netmon_bpf_map_memory_bytes{map="events"} 4206592
netmon_bpf_map_memory_bytes{map="sockets"} 4195328
# HELP netmon_build_info The running agent's version.
# TYPE netmon_build_info gauge
netmon_build_info{version="9.9.9"} 1
)";
  EXPECT_EQ(m.render(), expected);
}

TEST(MetricsRender, LabelValuesAreEscaped) {
  Metrics m({}, "test");
  PodMeta pod = make_pod("ns", "a\"b\\c", "uid", "w\nx", "c", "ctr");
  Attribution attr = attribution_of(pod);
  Metrics::record(*m.series(Direction::kOutbound, &attr), opened(ConnKind::kEstablish));
  const std::string text = m.render();
  EXPECT_NE(text.find(R"(pod="a\"b\\c")"), std::string::npos) << text;
  EXPECT_NE(text.find(R"(workload="w\nx")"), std::string::npos) << text;
  const Exposition x = parse_exposition(text);
  EXPECT_TRUE(x.errors.empty());
  EXPECT_SAMPLE(x, "netmon_connections_opened_total",
                conn("outbound", "ns", "a\"b\\c", "ctr", "w\nx"), 1);
}

TEST(MetricsRender, NamesTypesAndHelpFollowTheConventions) {
  // A registry with every family present: pod series with failures, kubelet on, hooks.
  Metrics m({}, "1.0.0");
  PodMeta pod = make_pod("shop", "web-1", "u-1", "web", "c1", "nginx");
  Attribution attr = attribution_of(pod);
  auto s = m.series(Direction::kOutbound, &attr);
  Metrics::record(*s, opened(ConnKind::kEstablish));
  Metrics::record(*s, failed(ETIMEDOUT));
  Metrics::record(*s, closed(Direction::kOutbound, 1, 2, 3'000'000));
  HealthSnapshot h = numbered_health(true);
  h.nat_enabled = true;
  h.nat.lookups = {1, 2, 3};
  h.nat.entries = 4;
  m.publish_health(h);
  m.set_hooks({{"sock/inet_sock_set_state", "tp_btf"}});
  const std::string text = m.render();
  const Exposition x = parse_exposition(text);
  ASSERT_TRUE(x.errors.empty()) << x.errors.front();

  const std::set<std::string> expected_families = {"netmon_connections_opened_total",
                                                   "netmon_connections_failed_total",
                                                   "netmon_connections_closed_total",
                                                   "netmon_connections_active",
                                                   "netmon_connection_bytes_sent_total",
                                                   "netmon_connection_bytes_received_total",
                                                   "netmon_connection_duration_seconds",
                                                   "netmon_events_total",
                                                   "netmon_events_lost_total",
                                                   "netmon_events_without_process_total",
                                                   "netmon_events_without_pod_total",
                                                   "netmon_connections_owner_unknown_total",
                                                   "netmon_bpf_state_runs_made_up_total",
                                                   "netmon_output_waits_total",
                                                   "netmon_output_wait_seconds_total",
                                                   "netmon_process_table_entries",
                                                   "netmon_process_table_misses_total",
                                                   "netmon_process_table_evictions_total",
                                                   "netmon_kubelet_requests_total",
                                                   "netmon_kubelet_pods",
                                                   "netmon_kubelet_synced",
                                                   "netmon_nat_lookups_total",
                                                   "netmon_nat_conntrack_enabled",
                                                   "netmon_nat_entries",
                                                   "netmon_nat_messages_lost_total",
                                                   "netmon_nat_entries_refused_total",
                                                   "netmon_hook_info",
                                                   "netmon_hook_variant_info",
                                                   "netmon_bpf_map_memory_bytes",
                                                   "netmon_build_info",
                                                   "netmon_edge_series_limit",
                                                   "netmon_edge_connections_total",
                                                   "netmon_edge_connection_failures_total",
                                                   "netmon_edge_bytes_sent_total",
                                                   "netmon_edge_bytes_received_total",
                                                   "netmon_edge_retransmits_total",
                                                   "netmon_edge_rtt_seconds",
                                                   "netmon_edge_connection_duration_seconds",
                                                   "netmon_edge_series",
                                                   "netmon_edge_series_overflow_total",
                                                   "netmon_edge_series_removed_total",
                                                   "netmon_ready"};
  EXPECT_EQ(std::set<std::string>(x.family_order.begin(), x.family_order.end()), expected_families);
  EXPECT_EQ(x.family_order.size(), expected_families.size()) << "a family declared twice";

  for (const auto& [name, type] : x.type) {
    EXPECT_EQ(name.rfind("netmon_", 0), 0u) << name;
    const bool ends_total = name.size() > 6 && name.compare(name.size() - 6, 6, "_total") == 0;
    if (type == "counter") {
      EXPECT_TRUE(ends_total) << "counter without _total: " << name;
    } else {
      EXPECT_FALSE(ends_total) << type << " named like a counter: " << name;
      EXPECT_TRUE(type == "gauge" || type == "histogram") << name << ": " << type;
    }
    for (char c : name) {
      EXPECT_TRUE((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')
          << "not snake_case: " << name;
    }
    ASSERT_EQ(x.help.count(name), 1u) << "no HELP for " << name;
    const std::string& help = x.help.at(name);
    EXPECT_FALSE(help.empty()) << name;
    for (unsigned char c : help) {
      EXPECT_TRUE(c >= 0x20 && c < 0x7f && c != '\\') << name << ": HELP has byte " << int(c);
    }
  }
  EXPECT_EQ(x.help.size(), x.type.size());
  // HELP precedes TYPE and no text line carries a raw newline/backslash mid-HELP.
  std::istringstream in(text);
  std::string line;
  std::string last_help;
  while (std::getline(in, line)) {
    if (line.rfind("# HELP ", 0) == 0) {
      last_help = line.substr(7, line.find(' ', 7) - 7);
    } else if (line.rfind("# TYPE ", 0) == 0) {
      EXPECT_EQ(line.substr(7, line.find(' ', 7) - 7), last_help) << line;
    } else {
      ASSERT_FALSE(line.empty());
      EXPECT_NE(line[0], '#') << "unexpected comment: " << line;
    }
  }
  // Every sample belongs to the family declared before it.
  for (const Sample& smp : x.samples) {
    std::string family = smp.name;
    if (x.type.count(family) == 0) {
      for (const char* suffix : {"_bucket", "_count", "_sum"}) {
        const std::string suf = suffix;
        if (family.size() > suf.size() &&
            family.compare(family.size() - suf.size(), suf.size(), suf) == 0) {
          family.resize(family.size() - suf.size());
          break;
        }
      }
      ASSERT_EQ(x.type.count(family), 1u) << "sample of no declared family: " << smp.name;
      EXPECT_EQ(x.type.at(family), "histogram") << smp.name;
    }
  }
  EXPECT_EQ(text.back(), '\n');
}

// ---- listen addresses ------------------------------------------------------------------------

TEST(ListenAddress, HostAndPort) {
  auto a = parse_listen_address("127.0.0.1:9477");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 9477);

  auto any = parse_listen_address("0.0.0.0:0");
  ASSERT_TRUE(any) << any.error().message;
  EXPECT_EQ(any->host, "0.0.0.0");
  EXPECT_EQ(any->port, 0);

  auto named = parse_listen_address("localhost:65535");
  ASSERT_TRUE(named) << named.error().message;
  EXPECT_EQ(named->host, "localhost");
  EXPECT_EQ(named->port, 65535);
}

TEST(ListenAddress, BracketedIpv6) {
  auto a = parse_listen_address("[::1]:9477");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->host, "::1");
  EXPECT_EQ(a->port, 9477);

  auto any = parse_listen_address("[::]:0");
  ASSERT_TRUE(any) << any.error().message;
  EXPECT_EQ(any->host, "::");
  EXPECT_EQ(any->port, 0);
}

TEST(ListenAddress, PortOnlyMeansAllAddresses) {
  auto a = parse_listen_address(":9477");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->host, "0.0.0.0");
  EXPECT_EQ(a->port, 9477);
}

TEST(ListenAddress, RejectsBadPorts) {
  for (const char* text : {"127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:http",
                           "127.0.0.1:80x", "127.0.0.1: 80", "127.0.0.1:+80", "[::1]:99999"}) {
    auto a = parse_listen_address(text);
    EXPECT_FALSE(a) << text;
    if (!a) {
      EXPECT_NE(a.error().message.find("port"), std::string::npos) << a.error().message;
    }
  }
}

TEST(ListenAddress, RejectsAMissingColon) {
  for (const char* text : {"nope", "9477", "", "[::1]", "[::1]9477", "[::1"}) {
    auto a = parse_listen_address(text);
    EXPECT_FALSE(a) << "'" << text << "'";
    if (!a) {
      EXPECT_NE(a.error().message.find(std::string("'") + text + "'"), std::string::npos)
          << a.error().message;
    }
  }
}

// ---- the HTTP endpoint -----------------------------------------------------------------------

struct HttpReply {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

// A minimal HTTP/1.1 client over a raw socket: one GET with "Connection: close", read to EOF.
std::optional<HttpReply> http_get(int family, const std::string& ip, int port,
                                  const std::string& path) {
  const int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  timeval tv{};
  tv.tv_sec = 5;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  int rc = -1;
  if (family == AF_INET) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    ::inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
    rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  } else {
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(static_cast<uint16_t>(port));
    ::inet_pton(AF_INET6, ip.c_str(), &a.sin6_addr);
    rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  }
  if (rc != 0) {
    ::close(fd);
    return std::nullopt;
  }
  const std::string request =
      "GET " + path + " HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
  size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) {
      ::close(fd);
      return std::nullopt;
    }
    sent += static_cast<size_t>(n);
  }
  std::string raw;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    raw.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  const size_t head_end = raw.find("\r\n\r\n");
  if (head_end == std::string::npos) return std::nullopt;
  HttpReply reply;
  std::istringstream head(raw.substr(0, head_end));
  std::string line;
  std::getline(head, line);
  if (line.rfind("HTTP/1.", 0) != 0 || line.size() < 12) return std::nullopt;
  reply.status = std::atoi(line.c_str() + 9);
  while (std::getline(head, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.erase(0, 1);
    reply.headers[name] = value;
  }
  reply.body = raw.substr(head_end + 4);
  return reply;
}

std::optional<HttpReply> get4(int port, const std::string& path) {
  return http_get(AF_INET, "127.0.0.1", port, path);
}

TEST(HttpServer, ServesMetricsHealthzAndReadyz) {
  std::atomic<int> renders{0};
  std::atomic<bool> ready{false};
  auto server = HttpServer::start(
      ListenAddress{.host = "127.0.0.1", .port = 0},
      [&renders] {
        ++renders;
        return std::string("# HELP netmon_x X.\n# TYPE netmon_x gauge\nnetmon_x 1\n");
      },
      [&ready]() -> std::string { return ready.load() ? "" : "kernel probes not attached yet"; });
  ASSERT_TRUE(server) << server.error().message;
  const int port = (*server)->port();
  ASSERT_GT(port, 0);

  auto metrics = get4(port, "/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_EQ(metrics->body, "# HELP netmon_x X.\n# TYPE netmon_x gauge\nnetmon_x 1\n");
  EXPECT_EQ(metrics->headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(renders.load(), 1);

  auto healthz = get4(port, "/healthz");
  ASSERT_TRUE(healthz);
  EXPECT_EQ(healthz->status, 200);
  EXPECT_EQ(healthz->body, "ok\n");

  auto not_ready = get4(port, "/readyz");
  ASSERT_TRUE(not_ready);
  EXPECT_EQ(not_ready->status, 503);
  EXPECT_EQ(not_ready->body, "not ready: kernel probes not attached yet\n");

  // Alive while not ready.
  auto healthz_again = get4(port, "/healthz");
  ASSERT_TRUE(healthz_again);
  EXPECT_EQ(healthz_again->status, 200);

  ready.store(true);
  auto is_ready = get4(port, "/readyz");
  ASSERT_TRUE(is_ready);
  EXPECT_EQ(is_ready->status, 200);
  EXPECT_EQ(is_ready->body, "ready\n");

  auto missing = get4(port, "/nope");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(renders.load(), 1) << "only /metrics renders";
}

TEST(HttpServer, ServesTheRealRegistry) {
  Metrics m({}, "7.7.7");
  Metrics::record(*m.series(Direction::kOutbound, nullptr), opened(ConnKind::kEstablish));
  auto server = HttpServer::start(
      ListenAddress{.host = "127.0.0.1", .port = 0}, [&m] { return m.render(); },
      [] { return std::string(); });
  ASSERT_TRUE(server) << server.error().message;
  auto reply = get4((*server)->port(), "/metrics");
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->status, 200);
  EXPECT_EQ(reply->body, m.render());
}

TEST(HttpServer, ListensOnIpv6Loopback) {
  const int probe = ::socket(AF_INET6, SOCK_STREAM, 0);
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  const bool have_v6 = probe >= 0 && ::bind(probe, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  if (probe >= 0) ::close(probe);
  if (!have_v6) GTEST_SKIP() << "no IPv6 loopback here";

  auto address = parse_listen_address("[::1]:0");
  ASSERT_TRUE(address);
  auto server = HttpServer::start(
      *address, [] { return std::string("m\n"); }, [] { return std::string(); });
  ASSERT_TRUE(server) << server.error().message;
  auto reply = http_get(AF_INET6, "::1", (*server)->port(), "/healthz");
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->status, 200);
}

// A listening socket on 127.0.0.1 with an ephemeral port (no SO_REUSEPORT), or -1.
int listen_ephemeral(int* port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || ::listen(fd, 4) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    return -1;
  }
  *port = ntohs(a.sin_port);
  return fd;
}

TEST(HttpServer, FailsWhenThePortIsInUse) {
  int port = 0;
  const int fd = listen_ephemeral(&port);
  ASSERT_GE(fd, 0);
  auto server = HttpServer::start(
      ListenAddress{.host = "127.0.0.1", .port = port}, [] { return std::string(); },
      [] { return std::string(); });
  ::close(fd);
  ASSERT_FALSE(server);
  EXPECT_NE(server.error().message.find("cannot listen on 127.0.0.1:" + std::to_string(port)),
            std::string::npos)
      << server.error().message;
  EXPECT_NE(server.error().message.find("in use"), std::string::npos) << server.error().message;
}

// cpp-httplib sets SO_REUSEPORT on its listening socket by default; HttpServer must not, or a
// second server (a second netmon-agent of the same user) on a port one already serves would
// bind too, and the kernel would spread the scrapes over both processes.
TEST(HttpServer, FailsWhenAnotherServerHasThePort) {
  auto first = HttpServer::start(
      ListenAddress{.host = "127.0.0.1", .port = 0}, [] { return std::string("first\n"); },
      [] { return std::string(); });
  ASSERT_TRUE(first) << first.error().message;
  // Served once: its thread is accepting.
  auto reply = get4((*first)->port(), "/metrics");
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->body, "first\n");
  auto second = HttpServer::start(
      ListenAddress{.host = "127.0.0.1", .port = (*first)->port()},
      [] { return std::string("second\n"); }, [] { return std::string(); });
  EXPECT_FALSE(second) << "a second server bound port " << (*first)->port();
  // Let the second server's thread start accepting before it is stopped (see below).
  if (second) std::this_thread::sleep_for(std::chrono::milliseconds(200));
}

// Runs `body` in a child process and fails when it does not exit 0 within `timeout`: for code
// that may hang.
void expect_exits_within(const std::function<void()>& body, std::chrono::seconds timeout,
                         const std::string& what) {
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    body();
    ::_exit(0);
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  for (;;) {
    const pid_t done = ::waitpid(child, &status, WNOHANG);
    if (done == child) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(child, SIGKILL);
      ::waitpid(child, &status, 0);
      FAIL() << what << ": still running after " << timeout.count() << " s";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << what << ": status " << status;
}

// ~HttpServer() calls httplib::Server::stop(), which does nothing until the server thread has
// entered its listen loop; a server destroyed right after start() (the agent does so when the
// probes fail to load) must still stop, not leave its thread in accept() and hang in join().
TEST(HttpServer, DestroyedRightAfterStartDoesNotHang) {
  expect_exits_within(
      [] {
        for (int i = 0; i < 200; ++i) {
          auto server = HttpServer::start(
              ListenAddress{.host = "127.0.0.1", .port = 0}, [] { return std::string(); },
              [] { return std::string(); });
          if (!server) ::_exit(2);
        }
      },
      std::chrono::seconds(20), "200 servers started and destroyed at once");
}

TEST(HttpServer, FailsOnAnAddressNotOfThisHost) {
  // 192.0.2.1 (TEST-NET-1) is on no interface here.
  auto server = HttpServer::start(
      ListenAddress{.host = "192.0.2.1", .port = 0}, [] { return std::string(); },
      [] { return std::string(); });
  ASSERT_FALSE(server);
  EXPECT_NE(server.error().message.find("192.0.2.1"), std::string::npos) << server.error().message;
}

TEST(HttpServer, StopsListeningWhenDestroyed) {
  int port = 0;
  {
    auto server = HttpServer::start(
        ListenAddress{.host = "127.0.0.1", .port = 0}, [] { return std::string("m\n"); },
        [] { return std::string(); });
    ASSERT_TRUE(server) << server.error().message;
    port = (*server)->port();
    auto reply = get4(port, "/healthz");
    ASSERT_TRUE(reply);
    EXPECT_EQ(reply->status, 200);
  }
  EXPECT_FALSE(get4(port, "/healthz")) << "still answering on port " << port;
}

}  // namespace
}  // namespace netmon
