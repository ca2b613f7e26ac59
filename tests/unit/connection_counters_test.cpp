// ConnectionCounters: the series cache per owner cgroup and direction, and the removal of deleted
// pods' series when the pod snapshot changes.
#include "metrics/connection_counters.h"

#include <gtest/gtest.h>

#include <chrono>
#include <sstream>
#include <string>
#include <vector>

#include "pod_meta.h"

namespace netmon {
namespace {

// A pod of namespace shop, its own workload, with one container "main".
PodMeta make_pod(std::string name, std::string uid, std::string container_id) {
  std::string workload = name;
  return test::make_pod("shop", std::move(name), std::move(uid), std::move(workload),
                        std::move(container_id), "main");
}

using test::attribution_of;

ConnectionEvent established(uint64_t cgroup) {
  ConnectionEvent e;
  e.kind = ConnKind::kEstablish;
  e.direction = Direction::kOutbound;
  e.owner_known = true;
  e.task.cgroup_id = cgroup;
  return e;
}

// The value of netmon_connections_opened_total for the pod named `pod` ("" : the host series);
// -1 when there is no such series.
double opened(const Metrics& metrics, const std::string& pod) {
  std::istringstream text(metrics.render());
  const std::string label = "pod=\"" + pod + "\"";
  for (std::string line; std::getline(text, line);) {
    if (!line.starts_with("netmon_connections_opened_total{")) continue;
    if (line.find(label) == std::string::npos) continue;
    return std::stod(line.substr(line.rfind(' ') + 1));
  }
  return -1;
}

class ConnectionCountersTest : public ::testing::Test {
 protected:
  PodMeta web_ = make_pod("web-1", "uid-web", "c-web");
  PodMeta db_ = make_pod("db-0", "uid-db", "c-db");
  Attribution web_attr_ = attribution_of(web_);
  Attribution db_attr_ = attribution_of(db_);
  Metrics metrics_{{}, "test"};
  ConnectionCounters counters_{metrics_};
};

TEST_F(ConnectionCountersTest, CountsEachEventInItsPodsSeries) {
  counters_.count(established(10), &web_attr_);
  counters_.count(established(10), &web_attr_);
  counters_.count(established(20), &db_attr_);
  counters_.count(established(30), nullptr);
  EXPECT_EQ(opened(metrics_, "web-1"), 2);
  EXPECT_EQ(opened(metrics_, "db-0"), 1);
  EXPECT_EQ(opened(metrics_, ""), 1);
  EXPECT_EQ(metrics_.series_count(), 3u);
}

TEST_F(ConnectionCountersTest, TheSeriesIsCachedPerCgroupForOneSnapshot) {
  counters_.use_snapshot(1, nullptr);
  counters_.count(established(10), &web_attr_);
  // Same cgroup and direction: the cached series, whatever the attribution says now.
  counters_.count(established(10), &db_attr_);
  EXPECT_EQ(opened(metrics_, "web-1"), 2);
  EXPECT_EQ(opened(metrics_, "db-0"), -1);
  // A new snapshot empties the cache.
  counters_.use_snapshot(2, nullptr);
  counters_.count(established(10), &db_attr_);
  EXPECT_EQ(opened(metrics_, "db-0"), 1);
}

TEST_F(ConnectionCountersTest, AnAttributionWithoutItsPodIsNeverServedFromTheCache) {
  Attribution unknown;
  unknown.container_id = "c-web";  // in a pod's cgroup, but the snapshot lacks the pod
  counters_.count(established(10), &web_attr_);
  counters_.count(established(10), &unknown);  // looked up again: the host series
  counters_.count(established(10), &unknown);
  EXPECT_EQ(opened(metrics_, "web-1"), 1);
  EXPECT_EQ(opened(metrics_, ""), 2);
}

TEST_F(ConnectionCountersTest, ANewSnapshotRemovesTheSeriesOfPodsGoneFromIt) {
  counters_.count(established(10), &web_attr_);
  counters_.count(established(20), &db_attr_);
  counters_.count(established(30), nullptr);
  ASSERT_EQ(metrics_.series_count(), 3u);

  const auto snapshot =
      PodSnapshot::build({db_}, nullptr, std::chrono::steady_clock::now(), std::chrono::seconds(0));
  counters_.use_snapshot(1, snapshot.get());
  EXPECT_EQ(metrics_.series_count(), 2u);
  EXPECT_EQ(opened(metrics_, "web-1"), -1);
  EXPECT_EQ(opened(metrics_, "db-0"), 1);
  EXPECT_EQ(opened(metrics_, ""), 1);

  // The same version again: nothing changes, the cache stays.
  counters_.count(established(40), &web_attr_);
  counters_.use_snapshot(1, snapshot.get());
  EXPECT_EQ(opened(metrics_, "web-1"), 1);
}

}  // namespace
}  // namespace netmon
