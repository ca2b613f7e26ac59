#include "k8s/pods.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

namespace netmon {
namespace {

using namespace std::chrono_literals;
using Labels = std::vector<std::pair<std::string, std::string>>;

// ---- helpers ---------------------------------------------------------------------------------

std::optional<std::string> read_fixture(const std::string& name) {
  std::ifstream in(std::string(NETMON_SHARED_DIR) + "/fixtures/" + name, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Reads and parses a fixture into `pods`, or skips the test when the file is absent.
#define LOAD_FIXTURE_OR_SKIP(pods, file)                                         \
  std::vector<PodMeta> pods;                                                     \
  do {                                                                           \
    auto text_ = read_fixture(file);                                             \
    if (!text_) GTEST_SKIP() << "fixture not available: " << file;               \
    auto parsed_ = parse_pod_list(*text_);                                       \
    ASSERT_TRUE(parsed_.has_value()) << file << ": " << parsed_.error().message; \
    pods = std::move(*parsed_);                                                  \
  } while (0)

const PodMeta* pod_named(const std::vector<PodMeta>& pods, std::string_view name) {
  for (const PodMeta& pod : pods) {
    if (pod.name == name) return &pod;
  }
  return nullptr;
}

const ContainerMeta* container_with_id(const PodMeta& pod, std::string_view id) {
  for (const ContainerMeta& c : pod.containers) {
    if (c.id == id) return &c;
  }
  return nullptr;
}

std::pair<std::string, std::string> workload_of(const PodMeta& pod) {
  return {pod.workload, pod.workload_kind};
}

// Parses `json`, expecting success.
std::vector<PodMeta> parse_ok(std::string_view json) {
  auto parsed = parse_pod_list(json);
  EXPECT_TRUE(parsed.has_value()) << (parsed ? "" : parsed.error().message);
  return parsed ? std::move(*parsed) : std::vector<PodMeta>{};
}

// Parses `json`, expecting failure; returns the message.
std::string parse_error(std::string_view json) {
  auto parsed = parse_pod_list(json);
  EXPECT_FALSE(parsed.has_value()) << "parsed " << parsed->size() << " pods from: " << json;
  return parsed ? std::string() : parsed.error().message;
}

// A PodList with the given items (JSON text of each, comma-joined).
std::string pod_list(const std::vector<std::string>& items) {
  std::string out = R"({"kind":"PodList","apiVersion":"v1","metadata":{},"items":[)";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ',';
    out += items[i];
  }
  return out + "]}";
}

// ---- real kubelet captures -------------------------------------------------------------------

TEST(PodFixtureK8s135, ParsesAllPodsWithIdentity) {
  LOAD_FIXTURE_OR_SKIP(pods, "kubelet_pods_k8s1.35_minikube_containerd.json");
  ASSERT_EQ(pods.size(), 24u);
  size_t containers = 0;
  for (const PodMeta& pod : pods) {
    EXPECT_FALSE(pod.uid.empty()) << pod.name;
    EXPECT_FALSE(pod.name.empty());
    EXPECT_FALSE(pod.namespace_name.empty()) << pod.name;
    EXPECT_EQ(pod.node_name, "datagen-1-35") << pod.name;
    EXPECT_TRUE(std::is_sorted(pod.labels.begin(), pod.labels.end())) << pod.name;
    for (const ContainerMeta& c : pod.containers) {
      EXPECT_EQ(c.runtime, "containerd") << pod.name << "/" << c.name;
      EXPECT_EQ(c.id.size(), 64u) << pod.name << "/" << c.name;
      EXPECT_EQ(c.id.find("://"), std::string::npos);
      EXPECT_FALSE(c.image.empty());
      EXPECT_FALSE(c.image_id.empty());
    }
    containers += pod.containers.size();
  }
  // 24 current containers plus one lastState.terminated id (e2e-container-creating).
  EXPECT_EQ(containers, 25u);
}

TEST(PodFixtureK8s135, WorkloadKindsOfAllPods) {
  LOAD_FIXTURE_OR_SKIP(pods, "kubelet_pods_k8s1.35_minikube_containerd.json");
  std::map<std::string, int> kinds;
  for (const PodMeta& pod : pods) ++kinds[pod.workload_kind];
  std::map<std::string, int> expected{{"Deployment", 7},  {"Job", 4},       {"CronJob", 2},
                                      {"StatefulSet", 2}, {"DaemonSet", 3}, {"Node", 4},
                                      {"Pod", 2}};
  EXPECT_EQ(kinds, expected);
}

TEST(PodFixtureK8s135, DeploymentPodFromReplicaSetAndTemplateHash) {
  LOAD_FIXTURE_OR_SKIP(pods, "kubelet_pods_k8s1.35_minikube_containerd.json");
  const PodMeta* pod = pod_named(pods, "e2e-deployment-79967c5968-8bnn8");
  ASSERT_NE(pod, nullptr);
  EXPECT_EQ(pod->namespace_name, "scraper");
  EXPECT_EQ(pod->uid, "da59f36e-a7a8-46ed-8d9d-36392eb967d4");
  EXPECT_EQ(workload_of(*pod),
            std::make_pair(std::string("e2e-deployment"), std::string("Deployment")));
  EXPECT_EQ(pod->labels, (Labels{{"app", "deployment"}, {"pod-template-hash", "79967c5968"}}));
  ASSERT_EQ(pod->containers.size(), 1u);
  const ContainerMeta& c = pod->containers[0];
  EXPECT_EQ(c.name, "compute-pi-digits");
  EXPECT_EQ(c.id, "a33effaac09ebc0bd003f783736428445148029e0a835cf57e592321b75b8c7a");
  EXPECT_EQ(c.runtime, "containerd");
  EXPECT_EQ(c.image, "docker.io/library/perl:5.34.0");
  EXPECT_EQ(c.image_id,
            "docker.io/library/perl@sha256:"
            "2584f46a92d1042b25320131219e5832c5b3e75086dfaaff33e4fda7a9f47d99");

  const PodMeta* ksm = pod_named(pods, "e2e-kube-state-metrics-75b885dc9-97mtr");
  ASSERT_NE(ksm, nullptr);
  EXPECT_EQ(workload_of(*ksm),
            std::make_pair(std::string("e2e-kube-state-metrics"), std::string("Deployment")));
  EXPECT_EQ(ksm->labels.size(), 8u);
  EXPECT_EQ(ksm->labels.front().first, "app.kubernetes.io/component");
  EXPECT_EQ(ksm->labels.back(),
            std::make_pair(std::string("pod-template-hash"), std::string("75b885dc9")));

  const PodMeta* coredns = pod_named(pods, "coredns-7d764666f9-qdcxt");
  ASSERT_NE(coredns, nullptr);
  EXPECT_EQ(workload_of(*coredns),
            std::make_pair(std::string("coredns"), std::string("Deployment")));
}

TEST(PodFixtureK8s135, DaemonSetStatefulSetJobCronJobAndBarePods) {
  LOAD_FIXTURE_OR_SKIP(pods, "kubelet_pods_k8s1.35_minikube_containerd.json");
  auto expect = [&](std::string_view name, std::string workload, std::string kind) {
    const PodMeta* pod = pod_named(pods, name);
    ASSERT_NE(pod, nullptr) << name;
    EXPECT_EQ(workload_of(*pod), std::make_pair(workload, kind)) << name;
  };
  expect("kindnet-zkpn8", "kindnet", "DaemonSet");  // hostNetwork
  expect("kube-proxy-8k9zt", "kube-proxy", "DaemonSet");
  expect("e2e-daemonset-kb65b", "e2e-daemonset", "DaemonSet");
  expect("e2e-statefulset-0", "e2e-statefulset", "StatefulSet");
  expect("e2e-statefulset-1", "e2e-statefulset", "StatefulSet");
  expect("e2e-cronjob-29707813-dhlr2", "e2e-cronjob", "CronJob");  // Succeeded
  expect("e2e-cronjob-29707814-h2f28", "e2e-cronjob", "CronJob");
  expect("e2e-failjob-64h4g", "e2e-failjob", "Job");  // Failed
  expect("e2e-failjob-p2w8g", "e2e-failjob", "Job");
  expect("storage-provisioner", "storage-provisioner", "Pod");  // no owner
  expect("e2e-container-creating", "e2e-container-creating", "Pod");

  const PodMeta* failed = pod_named(pods, "e2e-failjob-64h4g");
  ASSERT_NE(failed, nullptr);
  ASSERT_EQ(failed->containers.size(), 1u);
  EXPECT_EQ(failed->containers[0].id,
            "7228c83273e06a326bc27d624138a8f1c1979a887f0cabf9ab5d15feccf91986");
  EXPECT_EQ(failed->containers[0].image, "docker.io/library/bash:5");
}

TEST(PodFixtureK8s135, StaticPodsAreNodeWorkloadsWithConfigHashUid) {
  LOAD_FIXTURE_OR_SKIP(pods, "kubelet_pods_k8s1.35_minikube_containerd.json");
  const PodMeta* scheduler = pod_named(pods, "kube-scheduler-datagen-1-35");
  ASSERT_NE(scheduler, nullptr);
  EXPECT_EQ(scheduler->uid, "07bd11a0a13dfe5450a17a39eb8e32d2");
  EXPECT_EQ(workload_of(*scheduler),
            std::make_pair(std::string("datagen-1-35"), std::string("Node")));
  ASSERT_EQ(scheduler->containers.size(), 1u);
  EXPECT_EQ(scheduler->containers[0].name, "kube-scheduler");
  EXPECT_EQ(scheduler->containers[0].image, "registry.k8s.io/kube-scheduler:v1.35.0");
  EXPECT_EQ(scheduler->containers[0].image_id,
            "sha256:ddc8422d4d35a6fc66c34be61e24df795e5cebf197eb546f62740d0bafef874f");

  int static_pods = 0;
  for (const PodMeta& pod : pods) {
    if (pod.workload_kind != "Node") continue;
    ++static_pods;
    EXPECT_EQ(pod.workload, "datagen-1-35");
    EXPECT_EQ(pod.uid.size(), 32u) << pod.name;
    EXPECT_EQ(pod.uid.find('-'), std::string::npos) << pod.name;
  }
  EXPECT_EQ(static_pods, 4);
}

TEST(PodFixtureK8s135, RestartedContainerKeepsItsLastStateId) {
  LOAD_FIXTURE_OR_SKIP(pods, "kubelet_pods_k8s1.35_minikube_containerd.json");
  auto snapshot = PodSnapshot::build(pods, nullptr, PodSnapshot::Clock::now(), 30s);
  auto [pod, container] =
      snapshot->find_container("68acd6c031804d3992302cb76c9feec17b419b2616f770501fca8fc92a3fff10");
  ASSERT_NE(pod, nullptr);
  ASSERT_NE(container, nullptr);
  EXPECT_EQ(pod->name, "e2e-container-creating");
  EXPECT_EQ(container->name, "alpine");
  EXPECT_EQ(container->runtime, "containerd");
  EXPECT_EQ(container->image, "docker.io/library/alpine:3.22.1");
  auto [pod2, current] =
      snapshot->find_container("4295ac6e1b848c84dc1db036a94ea8c97389b10975fc3f6a063839520434b538");
  ASSERT_NE(current, nullptr);
  EXPECT_EQ(pod2, pod);
  EXPECT_NE(current, container);
  EXPECT_EQ(current->name, "alpine");
}

TEST(PodFixtureK8s135, SnapshotIndexesEveryPodAndContainer) {
  LOAD_FIXTURE_OR_SKIP(pods, "kubelet_pods_k8s1.35_minikube_containerd.json");
  auto snapshot = PodSnapshot::build(pods, nullptr, PodSnapshot::Clock::now(), 30s);
  EXPECT_EQ(snapshot->pod_count(), 24u);
  EXPECT_EQ(snapshot->deleted_pod_count(), 0u);
  for (const PodMeta& pod : pods) {
    const PodMeta* found = snapshot->find_pod(pod.uid);
    ASSERT_NE(found, nullptr) << pod.name;
    EXPECT_EQ(found->name, pod.name);
    for (const ContainerMeta& c : pod.containers) {
      auto [owner, container] = snapshot->find_container(c.id);
      ASSERT_NE(owner, nullptr) << c.id;
      EXPECT_EQ(owner->uid, pod.uid);
      EXPECT_EQ(container->name, c.name);
    }
  }
  auto [etcd, etcd_container] =
      snapshot->find_container("104e1ed61ab8781f2e535a12c2d8084c79975d2a7931fe6b04c63f6cb45af71e");
  ASSERT_NE(etcd, nullptr);
  EXPECT_EQ(etcd->name, "etcd-datagen-1-35");
  EXPECT_EQ(etcd->uid, "eaf7d48161d81d9c3359e1c008571fd6");
  EXPECT_EQ(etcd_container->image, "registry.k8s.io/etcd:3.6.6-0");
}

TEST(PodFixtureStaticMirror, KubeletViewUsesConfigHashNotMirrorUid) {
  auto mapping = read_fixture("static_vs_mirror_uid_k8s1.35.json");
  if (!mapping) GTEST_SKIP() << "fixture not available: static_vs_mirror_uid_k8s1.35.json";
  LOAD_FIXTURE_OR_SKIP(pods, "kubelet_pods_k8s1.35_minikube_containerd.json");
  auto snapshot = PodSnapshot::build(pods, nullptr, PodSnapshot::Clock::now(), 30s);
  // {name: (mirror uid, config hash)} as recorded in the file.
  const std::vector<std::tuple<std::string, std::string, std::string>> expected{
      {"etcd-datagen-1-35", "0a29c6e7-a93e-426e-9148-c4186efc55c4",
       "eaf7d48161d81d9c3359e1c008571fd6"},
      {"kube-apiserver-datagen-1-35", "091e4cfe-bbaf-4634-99c2-2627b3b25e5e",
       "8ac8c3a9ee4d182b8d934f20e971ada7"},
      {"kube-controller-manager-datagen-1-35", "73879f89-35cd-447e-a5d2-737cb02431d4",
       "e9afcd8d3c942968802548f9a24d942a"},
      {"kube-scheduler-datagen-1-35", "cfcb0a6c-d6a0-4319-9176-b47fbe8b58eb",
       "07bd11a0a13dfe5450a17a39eb8e32d2"}};
  for (const auto& [name, mirror_uid, config_hash] : expected) {
    ASSERT_NE(mapping->find(mirror_uid), std::string::npos) << "fixture changed: " << name;
    ASSERT_NE(mapping->find(config_hash), std::string::npos) << "fixture changed: " << name;
    const PodMeta* pod = snapshot->find_pod(config_hash);
    ASSERT_NE(pod, nullptr) << name;
    EXPECT_EQ(pod->name, name);
    EXPECT_EQ(pod->workload_kind, "Node");
    EXPECT_EQ(snapshot->find_pod(mirror_uid), nullptr) << name;
  }
}

TEST(PodFixtureK8s116, DockerIdsAndContainerWithoutId) {
  LOAD_FIXTURE_OR_SKIP(pods, "kubelet_pods_k8s1.16_minikube_docker.json");
  ASSERT_EQ(pods.size(), 16u);
  size_t containers = 0, without_id = 0;
  for (const PodMeta& pod : pods) {
    EXPECT_EQ(pod.node_name, "minikube");
    for (const ContainerMeta& c : pod.containers) {
      ++containers;
      if (c.id.empty()) {
        ++without_id;
        EXPECT_EQ(c.runtime, "");
      } else {
        EXPECT_EQ(c.runtime, "docker") << pod.name;
        EXPECT_EQ(c.id.size(), 64u);
      }
    }
  }
  EXPECT_EQ(containers, 17u);  // 16 statuses + storage-provisioner's lastState id
  EXPECT_EQ(without_id, 1u);

  const PodMeta* creating = pod_named(pods, "e2e-container-creating");
  ASSERT_NE(creating, nullptr);
  EXPECT_EQ(creating->uid, "5bac24b4-b0fd-47ca-881c-3578da4768be");
  ASSERT_EQ(creating->containers.size(), 1u);
  EXPECT_EQ(creating->containers[0].name, "alpine");
  EXPECT_EQ(creating->containers[0].id, "");
  EXPECT_EQ(creating->containers[0].image, "alpine:latest");
  EXPECT_EQ(creating->containers[0].image_id, "");

  const PodMeta* depl = pod_named(pods, "e2e-depl-86cf7fbbf8-p4h98");
  ASSERT_NE(depl, nullptr);
  EXPECT_EQ(workload_of(*depl), std::make_pair(std::string("e2e-depl"), std::string("Deployment")));
  const PodMeta* ds = pod_named(pods, "e2e-ds-8zz8h");
  ASSERT_NE(ds, nullptr);
  EXPECT_EQ(workload_of(*ds), std::make_pair(std::string("e2e-ds"), std::string("DaemonSet")));
  const PodMeta* etcd = pod_named(pods, "etcd-minikube");
  ASSERT_NE(etcd, nullptr);
  EXPECT_EQ(workload_of(*etcd), std::make_pair(std::string("minikube"), std::string("Node")));
  EXPECT_EQ(etcd->uid, "82c0f875ee185f5449064b39929f5431");

  auto snapshot = PodSnapshot::build(pods, nullptr, PodSnapshot::Clock::now(), 30s);
  auto [sp, last] =
      snapshot->find_container("b5b9a552f985c141a50fe7acda895f4b3b2fc630d4cdd949237734fc81b9bd1e");
  ASSERT_NE(sp, nullptr);
  EXPECT_EQ(sp->name, "storage-provisioner");
  EXPECT_EQ(last->name, "storage-provisioner");
  EXPECT_EQ(last->runtime, "docker");
  EXPECT_EQ(last->image, "gcr.io/k8s-minikube/storage-provisioner:v5");
  EXPECT_EQ(last->image_id,
            "docker://sha256:6e38f40d628db3002f5617342c8872c935de530d867d0f709a2fbda1a302a562");
  EXPECT_EQ(snapshot->find_container("").first, nullptr);
}

TEST(PodFixtureDatadog, InitContainerRunningMainContainerWaiting) {
  LOAD_FIXTURE_OR_SKIP(pods, "kubelet_pods_datadog_init_container_excerpt.json");
  ASSERT_EQ(pods.size(), 2u);
  auto snapshot = PodSnapshot::build(pods, nullptr, PodSnapshot::Clock::now(), 30s);

  auto [pod, init] =
      snapshot->find_container("922a2f3f14d1724d7eeb6cad2b5138bcbd85948c802fead1af2a1e5d79807e4e");
  ASSERT_NE(pod, nullptr);
  EXPECT_EQ(pod->name, "myapp-pod");
  EXPECT_EQ(pod->namespace_name, "default");
  EXPECT_EQ(pod->node_name, "ci-pierremargueritte");
  EXPECT_EQ(workload_of(*pod), std::make_pair(std::string("myapp-pod"), std::string("Pod")));
  EXPECT_EQ(init->name, "init-myservice");
  EXPECT_EQ(init->runtime, "containerd");
  EXPECT_EQ(init->image, "docker.io/library/busybox:latest");
  EXPECT_EQ(init->image_id,
            "docker.io/library/busybox@sha256:"
            "954e1f01e80ce09d0887ff6ea10b13a812cb01932a0781d6b0cc23f743a874fd");
  ASSERT_EQ(pod->containers.size(), 2u);
  const ContainerMeta* waiting = container_with_id(*pod, "");
  ASSERT_NE(waiting, nullptr);
  EXPECT_EQ(waiting->name, "myapp-container");
  EXPECT_EQ(waiting->image, "busybox");
  EXPECT_EQ(waiting->image_id, "");
}

TEST(PodFixtureDatadog, LastStateTerminatedIdResolves) {
  LOAD_FIXTURE_OR_SKIP(pods, "kubelet_pods_datadog_init_container_excerpt.json");
  auto snapshot = PodSnapshot::build(pods, nullptr, PodSnapshot::Clock::now(), 30s);
  auto [pod, last] =
      snapshot->find_container("b0428bd7c7be12cdf0b9b06e94804a8c922cefe1f949903d759b8b1b5bcdc159");
  ASSERT_NE(pod, nullptr);
  EXPECT_EQ(pod->name, "coredns-747dbcf5df-qmtnl");
  EXPECT_EQ(pod->uid, "23476f2c-61e0-11e9-bc12-02f121c1eeb4");
  EXPECT_EQ(last->name, "coredns");
  EXPECT_EQ(last->image, "docker.io/coredns/coredns:1.1.1");
  EXPECT_EQ(last->image_id,
            "docker.io/coredns/coredns@sha256:"
            "399cc5b2e2f0d599ef22f43aab52492e88b4f0fd69da9b10545e95a4253c86ce");
  auto [same, current] =
      snapshot->find_container("509057eef9c66fcae1627a278216e29a0504d9b2e85ccc79c09b316dba7554e2");
  EXPECT_EQ(same, pod);
  ASSERT_NE(current, nullptr);
  EXPECT_EQ(current->name, "coredns");
  EXPECT_EQ(pod->containers.size(), 2u);
  // Pre-1.11 cluster: the pod-template-hash label (3038679189) is not the ReplicaSet's suffix
  // (747dbcf5df), so by the header's rule the workload stays the ReplicaSet.
  EXPECT_EQ(workload_of(*pod),
            std::make_pair(std::string("coredns-747dbcf5df"), std::string("ReplicaSet")));
}

TEST(PodFixtureEdgeCases, CrioPodWithInitSidecarEphemeralAndOomKilledIds) {
  LOAD_FIXTURE_OR_SKIP(pods, "kubelet_pods_edgecases_SYNTHETIC.json");
  ASSERT_EQ(pods.size(), 4u);
  const PodMeta* web = pod_named(pods, "web-7d9f8b6c5-x2k4p");
  ASSERT_NE(web, nullptr);
  EXPECT_EQ(web->namespace_name, "shop");
  EXPECT_EQ(web->node_name, "worker-1");
  EXPECT_EQ(workload_of(*web), std::make_pair(std::string("web"), std::string("Deployment")));
  // app, app's OOMKilled predecessor, log-shipper, migrate, istio-proxy, debugger-abcde.
  ASSERT_EQ(web->containers.size(), 6u);
  for (const ContainerMeta& c : web->containers) {
    EXPECT_EQ(c.runtime, "cri-o");
    EXPECT_EQ(c.id.size(), 64u);
    EXPECT_EQ(c.image_id, "x");
  }

  auto snapshot = PodSnapshot::build(pods, nullptr, PodSnapshot::Clock::now(), 30s);
  auto resolve = [&](char digit) { return snapshot->find_container(std::string(64, digit)); };
  const std::vector<std::tuple<char, std::string, std::string>> expected{
      {'1', "migrate", "migrate:1"},         // completed init container
      {'2', "istio-proxy", "proxyv2:1.22"},  // native sidecar
      {'3', "app", "web:2"},                 // restarted
      {'4', "app", "web:2"},                 // its OOMKilled lastState
      {'5', "log-shipper", "shipper:1"},     //
      {'6', "debugger-abcde", "busybox"}};   // ephemeral
  for (const auto& [digit, name, image] : expected) {
    auto [pod, container] = resolve(digit);
    ASSERT_NE(pod, nullptr) << digit;
    EXPECT_EQ(pod, snapshot->find_pod("3f2b9c1e-8a7d-4e6f-9b0a-1c2d3e4f5a6b"));
    EXPECT_EQ(container->name, name) << digit;
    EXPECT_EQ(container->image, image) << digit;
  }
}

TEST(PodFixtureEdgeCases, DaemonSetStaticAndPendingJobPods) {
  LOAD_FIXTURE_OR_SKIP(pods, "kubelet_pods_edgecases_SYNTHETIC.json");
  const PodMeta* agent = pod_named(pods, "tcpmon-agent-9xq7z");
  ASSERT_NE(agent, nullptr);
  EXPECT_EQ(workload_of(*agent),
            std::make_pair(std::string("tcpmon-agent"), std::string("DaemonSet")));
  EXPECT_TRUE(agent->labels.empty());
  ASSERT_EQ(agent->containers.size(), 1u);
  EXPECT_EQ(agent->containers[0].runtime, "containerd");
  EXPECT_EQ(agent->containers[0].id, std::string(64, '7'));

  const PodMeta* apiserver = pod_named(pods, "kube-apiserver-worker-1");
  ASSERT_NE(apiserver, nullptr);
  EXPECT_EQ(apiserver->uid, "8ac8c3a9ee4d182b8d934f20e971ada7");
  EXPECT_EQ(workload_of(*apiserver), std::make_pair(std::string("worker-1"), std::string("Node")));

  const PodMeta* job = pod_named(pods, "batch-job-xk2p9");
  ASSERT_NE(job, nullptr);
  EXPECT_EQ(workload_of(*job), std::make_pair(std::string("batch-job"), std::string("Job")));
  ASSERT_EQ(job->containers.size(), 1u);
  EXPECT_EQ(job->containers[0].name, "worker");
  EXPECT_EQ(job->containers[0].id, "");
  EXPECT_EQ(job->containers[0].runtime, "");
  EXPECT_EQ(job->containers[0].image, "worker:3");
}

TEST(PodFixtureTruncated, TruncatedRealCaptureFails) {
  auto text = read_fixture("kubelet_pods_k8s1.35_minikube_containerd.json");
  if (!text) GTEST_SKIP() << "fixture not available";
  for (size_t cut : {size_t{1}, text->size() / 3, text->size() / 2, text->size() - 2}) {
    std::string message = parse_error(std::string_view(*text).substr(0, cut));
    EXPECT_NE(message.find("malformed JSON"), std::string::npos) << cut << ": " << message;
  }
}

// ---- parse_pod_list on hand-written input ----------------------------------------------------

TEST(PodListParse, MalformedJsonFailsWithMessage) {
  for (std::string_view bad :
       {"", " ", "{", "{\"items\": [", "{\"items\": [{]}", "{'items': []}", "{\"items\": []} x",
        "{\"items\": [],}", "nul", "\"\\ud800\"", "{\"items\": [\"\xff\"]}"}) {
    std::string message = parse_error(bad);
    EXPECT_NE(message.find("kubelet pod list: malformed JSON"), std::string::npos)
        << "input: " << bad << " message: " << message;
  }
}

TEST(PodListParse, TopLevelMustBeObjectWithItemsArray) {
  EXPECT_NE(parse_error("[]").find("top level is array"), std::string::npos);
  EXPECT_NE(parse_error("null").find("top level is null"), std::string::npos);
  EXPECT_NE(parse_error("42").find("top level is number"), std::string::npos);
  EXPECT_NE(parse_error("\"PodList\"").find("not an object"), std::string::npos);
  EXPECT_NE(parse_error("{}").find("\"items\""), std::string::npos);
  EXPECT_NE(parse_error(R"({"kind":"PodList"})").find("no \"items\""), std::string::npos);
  EXPECT_NE(parse_error(R"({"items":"pods"})").find("\"items\" is string"), std::string::npos);
  EXPECT_NE(parse_error(R"({"items":{}})").find("\"items\" is object"), std::string::npos);
  EXPECT_NE(parse_error(R"({"items":7})").find("not an array"), std::string::npos);
}

TEST(PodListParse, EmptyItems) {
  EXPECT_TRUE(parse_ok(pod_list({})).empty());
  EXPECT_TRUE(parse_ok(R"({"items":[]})").empty());
}

TEST(PodListParse, MinimalPod) {
  auto pods = parse_ok(pod_list({R"({"metadata":{"uid":"u1"}})"}));
  ASSERT_EQ(pods.size(), 1u);
  EXPECT_EQ(pods[0].uid, "u1");
  EXPECT_EQ(pods[0].name, "");
  EXPECT_EQ(pods[0].namespace_name, "");
  EXPECT_EQ(pods[0].node_name, "");
  EXPECT_TRUE(pods[0].labels.empty());
  EXPECT_TRUE(pods[0].containers.empty());
  EXPECT_EQ(pods[0].workload_kind, "Pod");
}

TEST(PodListParse, PodsWithoutUsableUidOrMetadataAreSkipped) {
  auto pods = parse_ok(pod_list({
      R"(42)",
      R"("pod")",
      R"(null)",
      R"([])",
      R"({})",
      R"({"metadata":7})",
      R"({"metadata":"m"})",
      R"({"metadata":[]})",
      R"({"metadata":{"name":"no-uid"}})",
      R"({"metadata":{"name":"empty-uid","uid":""}})",
      R"({"metadata":{"name":"number-uid","uid":12}})",
      R"({"metadata":{"name":"null-uid","uid":null}})",
      R"({"metadata":{"name":"ok","namespace":"ns","uid":"u-ok"}})",
  }));
  ASSERT_EQ(pods.size(), 1u);
  EXPECT_EQ(pods[0].name, "ok");
  EXPECT_EQ(pods[0].namespace_name, "ns");
}

TEST(PodListParse, WrongTypedFieldsAreIgnored) {
  auto pods = parse_ok(pod_list({R"({
    "metadata": {"uid": "u1", "name": 5, "namespace": ["x"], "labels": ["a", "b"],
                 "annotations": "kubernetes.io/config.source", "ownerReferences": {"kind": "Job"}},
    "spec": {"nodeName": 3, "containers": "c"},
    "status": {"containerStatuses": {"name": "c"}, "initContainerStatuses": "x",
               "ephemeralContainerStatuses": 1}
  })"}));
  ASSERT_EQ(pods.size(), 1u);
  const PodMeta& pod = pods[0];
  EXPECT_EQ(pod.uid, "u1");
  EXPECT_EQ(pod.name, "");
  EXPECT_EQ(pod.namespace_name, "");
  EXPECT_EQ(pod.node_name, "");
  EXPECT_TRUE(pod.labels.empty());
  EXPECT_TRUE(pod.containers.empty());
  EXPECT_EQ(pod.workload_kind, "Pod");  // annotations ignored: not static; owners ignored
}

TEST(PodListParse, WrongTypedSectionsAreIgnored) {
  auto pods =
      parse_ok(pod_list({R"({"metadata":{"uid":"u1","name":"p"},"spec":"s","status":9})",
                         R"({"metadata":{"uid":"u2","name":"q"},"spec":null,"status":[]})"}));
  ASSERT_EQ(pods.size(), 2u);
  EXPECT_EQ(pods[0].name, "p");
  EXPECT_EQ(pods[1].name, "q");
  EXPECT_TRUE(pods[0].containers.empty());
}

TEST(PodListParse, LabelsSortedAndNonStringValuesDropped) {
  auto pods = parse_ok(pod_list({R"({"metadata":{"uid":"u1","labels":{
      "zeta":"z","alpha":"a","num":1,"obj":{},"mid":"m","null":null,"ünï":"çödé","":"empty"}}})"}));
  ASSERT_EQ(pods.size(), 1u);
  EXPECT_EQ(pods[0].labels, (Labels{{"", "empty"},
                                    {"alpha", "a"},
                                    {"mid", "m"},
                                    {"zeta", "z"},
                                    {"\xc3\xbcn\xc3\xaf", "\xc3\xa7\xc3\xb6\x64\xc3\xa9"}}));
}

TEST(PodListParse, OwnerReferenceEntriesOfWrongTypeAreDropped) {
  auto pods = parse_ok(pod_list({R"({"metadata":{"uid":"u1","name":"web-abc-x",
      "labels":{"pod-template-hash":"abc"},
      "ownerReferences":[7, "x", null, {"kind":1,"name":"n","controller":true},
                         {"kind":"ReplicaSet","name":"web-abc","controller":"yes"},
                         {"kind":"ReplicaSet","name":"web-abc","controller":true}]}})"}));
  ASSERT_EQ(pods.size(), 1u);
  EXPECT_EQ(workload_of(pods[0]), std::make_pair(std::string("web"), std::string("Deployment")));
}

TEST(PodListParse, ContainerIdSchemes) {
  auto pods = parse_ok(pod_list({R"({"metadata":{"uid":"u1"},"status":{"containerStatuses":[
      {"name":"a","containerID":"containerd://aaa"},
      {"name":"b","containerID":"cri-o://bbb"},
      {"name":"c","containerID":"docker://ccc"},
      {"name":"d","containerID":"ddd"},
      {"name":"e","containerID":"containerd://"},
      {"name":"f","containerID":42},
      {"name":"g","containerID":""},
      {"name":"h"}]}})"}));
  ASSERT_EQ(pods.size(), 1u);
  const auto& cs = pods[0].containers;
  ASSERT_EQ(cs.size(), 8u);
  const std::vector<std::tuple<std::string, std::string, std::string>> expected{
      {"a", "aaa", "containerd"},
      {"b", "bbb", "cri-o"},
      {"c", "ccc", "docker"},
      {"d", "ddd", ""},
      {"e", "", ""},
      {"f", "", ""},
      {"g", "", ""},
      {"h", "", ""}};
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(cs[i].name, std::get<0>(expected[i]));
    EXPECT_EQ(cs[i].id, std::get<1>(expected[i])) << cs[i].name;
    EXPECT_EQ(cs[i].runtime, std::get<2>(expected[i])) << cs[i].name;
  }
}

TEST(PodListParse, ImageFallsBackToTheSpecContainerOfTheSameKind) {
  auto pods = parse_ok(pod_list({R"({"metadata":{"uid":"u1"},
    "spec":{"containers":[{"name":"main","image":"spec-main:1"},{"name":"x","image":"spec-x"}],
            "initContainers":[{"name":"init","image":"spec-init:1"},{"name":"main","image":"wrong"}],
            "ephemeralContainers":[{"name":"dbg","image":"spec-dbg:1"}]},
    "status":{
      "containerStatuses":[{"name":"main","image":"","imageID":"","containerID":"containerd://1"},
                           {"name":"x","image":"status-x","imageID":"sha","containerID":"containerd://2"},
                           {"name":"unknown","containerID":"containerd://3"},
                           {"name":"bad","image":7,"imageID":[]}],
      "initContainerStatuses":[{"name":"init","containerID":"containerd://4"},
                               "not an object"],
      "ephemeralContainerStatuses":[{"name":"dbg","containerID":"containerd://5"}]}})"}));
  ASSERT_EQ(pods.size(), 1u);
  const PodMeta& pod = pods[0];
  ASSERT_EQ(pod.containers.size(), 6u);
  EXPECT_EQ(container_with_id(pod, "1")->image, "spec-main:1");
  EXPECT_EQ(container_with_id(pod, "2")->image, "status-x");
  EXPECT_EQ(container_with_id(pod, "2")->image_id, "sha");
  EXPECT_EQ(container_with_id(pod, "3")->image, "");
  EXPECT_EQ(container_with_id(pod, "4")->image, "spec-init:1");
  EXPECT_EQ(container_with_id(pod, "5")->image, "spec-dbg:1");
  const ContainerMeta* bad = container_with_id(pod, "");
  ASSERT_NE(bad, nullptr);
  EXPECT_EQ(bad->name, "bad");
  EXPECT_EQ(bad->image, "");
  EXPECT_EQ(bad->image_id, "");
}

TEST(PodListParse, LastStateTerminatedIds) {
  auto pods = parse_ok(pod_list({R"({"metadata":{"uid":"u1"},"status":{"containerStatuses":[
      {"name":"a","image":"img-a","imageID":"id-a","containerID":"containerd://new",
       "lastState":{"terminated":{"containerID":"containerd://old","exitCode":137}}},
      {"name":"b","containerID":"containerd://same",
       "lastState":{"terminated":{"containerID":"containerd://same"}}},
      {"name":"c","containerID":"containerd://c1","lastState":{"terminated":{"exitCode":1}}},
      {"name":"d","containerID":"containerd://d1","lastState":"weird"},
      {"name":"e","containerID":"containerd://e1","lastState":{"terminated":[]}},
      {"name":"f","containerID":"containerd://f1","lastState":{"terminated":{"containerID":5}}},
      {"name":"g","lastState":{"terminated":{"containerID":"cri-o://g0"}}}]}})"}));
  ASSERT_EQ(pods.size(), 1u);
  const PodMeta& pod = pods[0];
  // a, a's predecessor, b once, c, d, e, f, g (waiting, no id), g's predecessor.
  ASSERT_EQ(pod.containers.size(), 9u);
  const ContainerMeta* old = container_with_id(pod, "old");
  ASSERT_NE(old, nullptr);
  EXPECT_EQ(old->name, "a");
  EXPECT_EQ(old->runtime, "containerd");
  EXPECT_EQ(old->image, "img-a");
  EXPECT_EQ(old->image_id, "id-a");
  const ContainerMeta* g0 = container_with_id(pod, "g0");
  ASSERT_NE(g0, nullptr);
  EXPECT_EQ(g0->name, "g");
  EXPECT_EQ(g0->runtime, "cri-o");
}

TEST(PodListParse, StaticPodAnnotations) {
  auto pods = parse_ok(pod_list({
      R"({"metadata":{"uid":"a","name":"api","annotations":{"kubernetes.io/config.source":"api"}},
          "spec":{"nodeName":"n1"}})",
      R"({"metadata":{"uid":"f","name":"file","annotations":{"kubernetes.io/config.source":"file"}},
          "spec":{"nodeName":"n1"}})",
      R"({"metadata":{"uid":"h","name":"http","annotations":{"kubernetes.io/config.source":"http"}},
          "spec":{"nodeName":"n1"}})",
      R"({"metadata":{"uid":"m","name":"mirror","annotations":{"kubernetes.io/config.source":"api",
          "kubernetes.io/config.mirror":"0123456789abcdef0123456789abcdef"}},
          "spec":{"nodeName":"n1"}})",
      R"({"metadata":{"uid":"o","name":"mirror-owned","ownerReferences":[
          {"kind":"Node","name":"n1","controller":true}]},"spec":{"nodeName":"n1"}})",
      R"({"metadata":{"uid":"x","name":"bad-source","annotations":{"kubernetes.io/config.source":1}},
          "spec":{"nodeName":"n1"}})",
  }));
  ASSERT_EQ(pods.size(), 6u);
  EXPECT_EQ(workload_of(pods[0]), std::make_pair(std::string("api"), std::string("Pod")));
  EXPECT_EQ(workload_of(pods[1]), std::make_pair(std::string("n1"), std::string("Node")));
  EXPECT_EQ(workload_of(pods[2]), std::make_pair(std::string("n1"), std::string("Node")));
  EXPECT_EQ(workload_of(pods[3]), std::make_pair(std::string("n1"), std::string("Node")));
  EXPECT_EQ(workload_of(pods[4]), std::make_pair(std::string("n1"), std::string("Node")));
  EXPECT_EQ(workload_of(pods[5]), std::make_pair(std::string("bad-source"), std::string("Pod")));
}

TEST(PodListParse, DeeplyNestedValueDoesNotCrash) {
  std::string deep = std::string(100000, '[') + std::string(100000, ']');
  auto pods = parse_ok(pod_list({R"({"metadata":{"uid":"u1"},"spec":{"x":)" + deep + "}}"}));
  ASSERT_EQ(pods.size(), 1u);
  EXPECT_NE(parse_error(std::string(100000, '[')).find("malformed JSON"), std::string::npos);
}

TEST(PodListParse, HugeValidList) {
  constexpr int kPods = 2000;
  std::vector<std::string> items;
  items.reserve(kPods);
  for (int i = 0; i < kPods; ++i) {
    std::string n = std::to_string(i);
    items.push_back(
        R"({"metadata":{"name":"web-5d8f7c6b4-)" + n + R"(","namespace":"ns)" +
        std::to_string(i % 7) + R"(","uid":"uid-)" + n +
        R"(","labels":{"pod-template-hash":"5d8f7c6b4","app":"web"},)" +
        R"("ownerReferences":[{"kind":"ReplicaSet","name":"web-5d8f7c6b4","controller":true}]},)" +
        R"("spec":{"nodeName":"node-a","containers":[{"name":"app","image":"web:1"}]},)" +
        R"("status":{"containerStatuses":[{"name":"app","containerID":"containerd://c)" + n +
        R"(","imageID":"sha256:)" + n + R"("}]}})");
  }
  std::string json = pod_list(items);
  EXPECT_GT(json.size(), 500000u);
  auto pods = parse_ok(json);
  ASSERT_EQ(pods.size(), static_cast<size_t>(kPods));
  for (const PodMeta& pod : pods) {
    ASSERT_EQ(pod.workload, "web");
    ASSERT_EQ(pod.workload_kind, "Deployment");
    ASSERT_EQ(pod.containers.size(), 1u);
  }
  auto snapshot = PodSnapshot::build(std::move(pods), nullptr, PodSnapshot::Clock::now(), 30s);
  EXPECT_EQ(snapshot->pod_count(), static_cast<size_t>(kPods));
  auto [pod, container] = snapshot->find_container("c1999");
  ASSERT_NE(pod, nullptr);
  EXPECT_EQ(pod->name, "web-5d8f7c6b4-1999");
  EXPECT_EQ(pod->namespace_name, "ns4");
  EXPECT_EQ(container->image, "web:1");
  EXPECT_EQ(container->image_id, "sha256:1999");
  EXPECT_EQ(snapshot->find_pod("uid-0")->name, "web-5d8f7c6b4-0");
}

// ---- derive_workload -------------------------------------------------------------------------

struct WorkloadCase {
  const char* what;
  std::vector<OwnerRef> owners;
  Labels labels;
  bool static_pod;
  std::string expected_workload;
  std::string expected_kind;
};

TEST(WorkloadDerive, Table) {
  const Labels hash{{"app", "web"}, {"pod-template-hash", "7d4b9c"}};
  const std::vector<WorkloadCase> cases{
      {"replicaset with template hash suffix -> deployment",
       {{"ReplicaSet", "web-7d4b9c", true}},
       hash,
       false,
       "web",
       "Deployment"},
      {"deployment name with dashes",
       {{"ReplicaSet", "my-web-app-7d4b9c", true}},
       hash,
       false,
       "my-web-app",
       "Deployment"},
      {"replicaset without hash label",
       {{"ReplicaSet", "web-7d4b9c", true}},
       {{"app", "web"}},
       false,
       "web-7d4b9c",
       "ReplicaSet"},
      {"replicaset whose name does not end in the hash",
       {{"ReplicaSet", "web-1234", true}},
       hash,
       false,
       "web-1234",
       "ReplicaSet"},
      {"hash without the dash",
       {{"ReplicaSet", "web7d4b9c", true}},
       hash,
       false,
       "web7d4b9c",
       "ReplicaSet"},
      {"name is only -hash",
       {{"ReplicaSet", "-7d4b9c", true}},
       hash,
       false,
       "-7d4b9c",
       "ReplicaSet"},
      {"name equals hash", {{"ReplicaSet", "7d4b9c", true}}, hash, false, "7d4b9c", "ReplicaSet"},
      {"empty hash label",
       {{"ReplicaSet", "web-", true}},
       {{"pod-template-hash", ""}},
       false,
       "web-",
       "ReplicaSet"},
      {"statefulset", {{"StatefulSet", "db", true}}, {}, false, "db", "StatefulSet"},
      {"daemonset", {{"DaemonSet", "agent", true}}, hash, false, "agent", "DaemonSet"},
      {"cronjob job, 8 digits", {{"Job", "backup-28391520", true}}, {}, false, "backup", "CronJob"},
      {"cronjob job, 9 digits",
       {{"Job", "nightly-report-283915200", true}},
       {},
       false,
       "nightly-report",
       "CronJob"},
      {"job, 7 digits", {{"Job", "backup-2839152", true}}, {}, false, "backup-2839152", "Job"},
      {"job, non-digit suffix",
       {{"Job", "backup-2839152a", true}},
       {},
       false,
       "backup-2839152a",
       "Job"},
      {"job, no dash", {{"Job", "28391520", true}}, {}, false, "28391520", "Job"},
      {"job, empty base", {{"Job", "-28391520", true}}, {}, false, "-28391520", "Job"},
      {"job, trailing dash", {{"Job", "backup-", true}}, {}, false, "backup-", "Job"},
      {"plain job", {{"Job", "migrate", true}}, {}, false, "migrate", "Job"},
      {"node owner", {{"Node", "node-a", true}}, {}, false, "node-a", "Node"},
      {"node owner without controller flag",
       {{"Node", "node-a", false}},
       {},
       false,
       "node-a",
       "Node"},
      {"static pod", {}, {}, true, "node-1", "Node"},
      {"static pod wins over owners",
       {{"ReplicaSet", "web-7d4b9c", true}},
       hash,
       true,
       "node-1",
       "Node"},
      {"no owners", {}, hash, false, "pod-x", "Pod"},
      {"no controller owner", {{"ReplicaSet", "web-7d4b9c", false}}, hash, false, "pod-x", "Pod"},
      {"controller owner without kind", {{"", "thing", true}}, {}, false, "pod-x", "Pod"},
      {"controller owner without name", {{"StatefulSet", "", true}}, {}, false, "pod-x", "Pod"},
      {"other controller kind", {{"Rollout", "canary", true}}, {}, false, "canary", "Rollout"},
      {"replicaset owned by a custom controller stays replicaset",
       {{"ReplicaSet", "argo-rs", true}},
       {{"rollouts-pod-template-hash", "abc"}},
       false,
       "argo-rs",
       "ReplicaSet"},
      {"the controller among several owners",
       {{"ConfigMap", "cm", false}, {"StatefulSet", "db", true}, {"DaemonSet", "ds", false}},
       {},
       false,
       "db",
       "StatefulSet"},
  };
  for (const WorkloadCase& c : cases) {
    auto got = derive_workload(c.owners, c.labels, c.static_pod, "pod-x", "node-1");
    EXPECT_EQ(got.first, c.expected_workload) << c.what;
    EXPECT_EQ(got.second, c.expected_kind) << c.what;
  }
}

TEST(WorkloadDerive, StaticPodWithoutNodeName) {
  EXPECT_EQ(derive_workload({}, {}, true, "etcd-x", ""),
            std::make_pair(std::string(), std::string("Node")));
}

// ---- PodSnapshot -----------------------------------------------------------------------------

PodMeta make_pod(const std::string& uid, const std::vector<std::string>& container_ids,
                 const std::string& name = "") {
  PodMeta pod;
  pod.uid = uid;
  pod.name = name.empty() ? "pod-" + uid : name;
  pod.namespace_name = "default";
  pod.workload = pod.name;
  pod.workload_kind = "Pod";
  for (const std::string& id : container_ids) {
    pod.containers.push_back(ContainerMeta{id, "containerd", "c-" + id, "img", "sha"});
  }
  return pod;
}

using Clock = PodSnapshot::Clock;
const Clock::time_point kT0 = Clock::time_point{} + 1000h;
constexpr Clock::duration kGrace = 30s;

TEST(PodSnapshotBuild, IndexesPodsAndContainers) {
  auto snap = PodSnapshot::build({make_pod("a", {"a1", "a2"}), make_pod("b", {"b1"})}, nullptr, kT0,
                                 kGrace);
  EXPECT_EQ(snap->pod_count(), 2u);
  EXPECT_EQ(snap->deleted_pod_count(), 0u);
  ASSERT_NE(snap->find_pod("a"), nullptr);
  EXPECT_EQ(snap->find_pod("a")->name, "pod-a");
  EXPECT_EQ(snap->find_pod("c"), nullptr);
  EXPECT_EQ(snap->find_pod(""), nullptr);
  auto [pod, container] = snap->find_container("a2");
  ASSERT_NE(pod, nullptr);
  EXPECT_EQ(pod->uid, "a");
  EXPECT_EQ(container->name, "c-a2");
  EXPECT_EQ(snap->find_container("zz"),
            (std::pair<const PodMeta*, const ContainerMeta*>{nullptr, nullptr}));
}

TEST(PodSnapshotBuild, ContainersWithoutIdAreNotIndexed) {
  auto snap = PodSnapshot::build({make_pod("a", {"", "a1"})}, nullptr, kT0, kGrace);
  EXPECT_EQ(snap->find_container("").first, nullptr);
  EXPECT_NE(snap->find_container("a1").second, nullptr);
}

TEST(PodSnapshotBuild, DuplicateUidKeepsTheFirst) {
  auto snap = PodSnapshot::build({make_pod("a", {"a1"}, "first"), make_pod("a", {"a2"}, "second")},
                                 nullptr, kT0, kGrace);
  EXPECT_EQ(snap->pod_count(), 1u);
  EXPECT_EQ(snap->find_pod("a")->name, "first");
  EXPECT_EQ(snap->find_container("a2").first, nullptr);
}

TEST(PodSnapshotGrace, RemovedPodKeptUntilGraceThenDropped) {
  auto s0 = PodSnapshot::build({make_pod("a", {"a1"}), make_pod("b", {"b1", "b2"})}, nullptr, kT0,
                               kGrace);
  // b disappears at t0+10s.
  auto s1 = PodSnapshot::build({make_pod("a", {"a1"})}, s0.get(), kT0 + 10s, kGrace);
  EXPECT_EQ(s1->pod_count(), 2u);
  EXPECT_EQ(s1->deleted_pod_count(), 1u);
  ASSERT_NE(s1->find_pod("b"), nullptr);
  auto [pod, container] = s1->find_container("b2");  // the kept pod's containers still resolve
  ASSERT_NE(pod, nullptr);
  EXPECT_EQ(pod->uid, "b");
  EXPECT_EQ(container->name, "c-b2");

  s0.reset();  // snapshots own their data
  // Still missing 29s after first missed: kept (missing_since carried over, not reset).
  auto s2 = PodSnapshot::build({make_pod("a", {"a1"})}, s1.get(), kT0 + 39s, kGrace);
  EXPECT_NE(s2->find_pod("b"), nullptr);
  EXPECT_NE(s2->find_container("b1").first, nullptr);
  EXPECT_EQ(s2->deleted_pod_count(), 1u);
  // Exactly grace after first missed: gone.
  auto s3 = PodSnapshot::build({make_pod("a", {"a1"})}, s2.get(), kT0 + 40s, kGrace);
  EXPECT_EQ(s3->find_pod("b"), nullptr);
  EXPECT_EQ(s3->find_container("b1").first, nullptr);
  EXPECT_EQ(s3->pod_count(), 1u);
  EXPECT_EQ(s3->deleted_pod_count(), 0u);
  // And it does not come back from older snapshots' data.
  auto s4 = PodSnapshot::build({make_pod("a", {"a1"})}, s3.get(), kT0 + 41s, kGrace);
  EXPECT_EQ(s4->find_pod("b"), nullptr);
}

TEST(PodSnapshotGrace, ReappearingPodIsFreshAgain) {
  auto s0 =
      PodSnapshot::build({make_pod("a", {"a1"}), make_pod("b", {"b1"})}, nullptr, kT0, kGrace);
  auto s1 = PodSnapshot::build({make_pod("a", {"a1"})}, s0.get(), kT0 + 1s, kGrace);
  EXPECT_EQ(s1->deleted_pod_count(), 1u);
  auto s2 = PodSnapshot::build({make_pod("a", {"a1"}), make_pod("b", {"b1", "b9"}, "b-updated")},
                               s1.get(), kT0 + 20s, kGrace);
  EXPECT_EQ(s2->deleted_pod_count(), 0u);
  EXPECT_EQ(s2->find_pod("b")->name, "b-updated");  // the current version, not the kept one
  EXPECT_NE(s2->find_container("b9").first, nullptr);
  // Missed again at t0+25s: the grace counts from then, not from t0+1s.
  auto s3 = PodSnapshot::build({make_pod("a", {"a1"})}, s2.get(), kT0 + 25s, kGrace);
  auto s4 = PodSnapshot::build({make_pod("a", {"a1"})}, s3.get(), kT0 + 50s, kGrace);
  ASSERT_NE(s4->find_pod("b"), nullptr);
  EXPECT_EQ(s4->find_pod("b")->name, "b-updated");
  EXPECT_EQ(s4->deleted_pod_count(), 1u);
  auto s5 = PodSnapshot::build({make_pod("a", {"a1"})}, s4.get(), kT0 + 55s, kGrace);
  EXPECT_EQ(s5->find_pod("b"), nullptr);
}

TEST(PodSnapshotGrace, DeletedPodCount) {
  auto s0 = PodSnapshot::build(
      {make_pod("a", {}), make_pod("b", {}), make_pod("c", {}), make_pod("d", {})}, nullptr, kT0,
      kGrace);
  auto s1 = PodSnapshot::build({make_pod("a", {}), make_pod("b", {})}, s0.get(), kT0 + 1s, kGrace);
  EXPECT_EQ(s1->pod_count(), 4u);
  EXPECT_EQ(s1->deleted_pod_count(), 2u);
  auto s2 = PodSnapshot::build({make_pod("a", {}), make_pod("e", {})}, s1.get(), kT0 + 20s, kGrace);
  EXPECT_EQ(s2->pod_count(), 5u);  // a, e present; b, c, d kept
  EXPECT_EQ(s2->deleted_pod_count(), 3u);
  auto s3 = PodSnapshot::build({make_pod("a", {}), make_pod("e", {})}, s2.get(), kT0 + 31s, kGrace);
  EXPECT_EQ(s3->pod_count(), 3u);  // c, d expired (missed at t0+1s); b missed at t0+20s
  EXPECT_EQ(s3->deleted_pod_count(), 1u);
  EXPECT_NE(s3->find_pod("b"), nullptr);
  auto s4 = PodSnapshot::build({}, s3.get(), kT0 + 31s, kGrace);
  EXPECT_EQ(s4->pod_count(), 3u);
  EXPECT_EQ(s4->deleted_pod_count(), 3u);
}

TEST(PodSnapshotGrace, PresentPodWinsAContainerIdOverADeletedOne) {
  auto s0 = PodSnapshot::build({make_pod("old", {"shared", "o1"})}, nullptr, kT0, kGrace);
  auto s1 = PodSnapshot::build({make_pod("new", {"shared"})}, s0.get(), kT0 + 1s, kGrace);
  EXPECT_EQ(s1->find_container("shared").first->uid, "new");
  EXPECT_EQ(s1->find_container("o1").first->uid, "old");
}

TEST(PodSnapshotGrace, ZeroGraceDropsImmediately) {
  auto s0 = PodSnapshot::build({make_pod("a", {"a1"})}, nullptr, kT0, kGrace);
  auto s1 = PodSnapshot::build({}, s0.get(), kT0 + 1s, Clock::duration::zero());
  EXPECT_EQ(s1->pod_count(), 0u);
  EXPECT_EQ(s1->find_container("a1").first, nullptr);
}

TEST(PodSnapshotGrace, MissedAtTheClockEpochStillCountsAsDeleted) {
  auto s0 = PodSnapshot::build({make_pod("a", {"a1"})}, nullptr, Clock::time_point{}, kGrace);
  auto s1 = PodSnapshot::build({}, s0.get(), Clock::time_point{}, kGrace);
  EXPECT_EQ(s1->pod_count(), 1u);
  EXPECT_EQ(s1->deleted_pod_count(), 1u);
  auto s2 = PodSnapshot::build({}, s1.get(), Clock::time_point{} + kGrace + 1ns, kGrace);
  EXPECT_EQ(s2->pod_count(), 0u);
}

TEST(PodSnapshotGrace, ManyGenerationsReleaseOldSnapshots) {
  std::shared_ptr<const PodSnapshot> snap =
      PodSnapshot::build({make_pod("keep", {"k1"})}, nullptr, kT0, kGrace);
  for (int i = 0; i < 200; ++i) {
    std::string uid = "gen-" + std::to_string(i);
    snap = PodSnapshot::build({make_pod("keep", {"k1"}), make_pod(uid, {uid + "-c"})}, snap.get(),
                              kT0 + std::chrono::seconds(i), kGrace);
  }
  // gen-199 is present; gen-169 .. gen-198 were first missed within the last 30s.
  EXPECT_EQ(snap->deleted_pod_count(), 30u);
  EXPECT_EQ(snap->pod_count(), 32u);
  EXPECT_NE(snap->find_container("gen-170-c").first, nullptr);
  EXPECT_EQ(snap->find_container("gen-168-c").first, nullptr);
}

}  // namespace
}  // namespace netmon

namespace netmon {
namespace {

TEST(PodListNullItems, GoEncodedEmptyListIsNoPods) {
  // A kubelet with no pods may encode its empty list as null.
  auto pods = parse_pod_list(R"({"kind":"PodList","apiVersion":"v1","items":null})");
  ASSERT_TRUE(pods) << pods.error().message;
  EXPECT_TRUE(pods->empty());
}

}  // namespace
}  // namespace netmon
