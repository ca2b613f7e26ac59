// libFuzzer target for the kubelet's /pods response parser (agent/k8s/pods.cpp): the input is
// the body of a GET /pods as a hostile or broken kubelet could send it. Besides "no crash, no
// sanitizer report, no hang", it checks what the watcher relies on: a PodList that parses makes
// a snapshot in which every pod is found by its uid and every container by its id, also when
// the same list replaces the previous snapshot (the deleted-pod grace period).
//
// The same parse also hands this node's pods to the peer index (KubePod, k8s/kube_objects.h), as
// the agent's kubelet poller does: each must have a uid (the index keys pods by it).
//
// Not built by CMake (scripts/fuzz.sh builds it). From the repository root, as one command line:
//
//   clang++-14 -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined
//     -fno-sanitize-recover=all -Iagent tests/fuzz/pods_fuzz.cpp agent/k8s/pods.cpp
//     agent/k8s/kube_objects.cpp agent/k8s/cidr.cpp agent/common/text.cpp
//     -o build/fuzz/pods_fuzz
//   build/fuzz/pods_fuzz -max_total_time=60 -max_len=16384 -timeout=10 CORPUS_DIR
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "k8s/kube_objects.h"
#include "k8s/pods.h"

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "pods_fuzz: %s\n", what);
    std::abort();
  }
}

void check_snapshot(const netmon::PodSnapshot& snapshot, const std::vector<netmon::PodMeta>& pods) {
  std::set<std::string> seen;
  for (const netmon::PodMeta& pod : pods) {
    check(!pod.uid.empty(), "a pod without a uid was kept");
    const netmon::PodMeta* found = snapshot.find_pod(pod.uid);
    check(found != nullptr && found->uid == pod.uid, "a pod is not found by its uid");
    // Of pods listed twice under one uid, the first wins, with its containers.
    if (!seen.insert(pod.uid).second) continue;
    for (const netmon::ContainerMeta& container : pod.containers) {
      if (container.id.empty()) continue;
      const auto [owner, meta] = snapshot.find_container(container.id);
      check(owner != nullptr && meta != nullptr && meta->id == container.id,
            "a container is not found by its id");
    }
  }
  check(snapshot.pod_count() >= snapshot.deleted_pod_count(), "more deleted pods than pods");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<netmon::KubePod> peers;
  auto pods = netmon::parse_pod_list(text, &peers);
  if (!pods) {
    check(!pods.error().message.empty(), "a failure without a message");
    return 0;
  }
  for (const netmon::KubePod& pod : peers) {
    check(!pod.uid.empty(), "a peer pod without a uid was kept");  // the index keys on it
  }
  const auto now = netmon::PodSnapshot::Clock::now();
  const auto grace = std::chrono::seconds(60);
  auto first = netmon::PodSnapshot::build(*pods, nullptr, now, grace);
  check(first != nullptr, "no snapshot");
  check_snapshot(*first, *pods);
  // The same list again, then an empty one: every pod is kept for the grace period.
  auto second =
      netmon::PodSnapshot::build(*pods, first.get(), now + std::chrono::seconds(1), grace);
  check_snapshot(*second, *pods);
  auto emptied = netmon::PodSnapshot::build({}, second.get(), now + std::chrono::seconds(2), grace);
  for (const netmon::PodMeta& pod : *pods) {
    check(emptied->find_pod(pod.uid) != nullptr, "a deleted pod was dropped within its grace");
  }
  auto expired =
      netmon::PodSnapshot::build({}, emptied.get(), now + std::chrono::seconds(120), grace);
  check(expired->pod_count() == 0, "a deleted pod outlived its grace period");
  return 0;
}
