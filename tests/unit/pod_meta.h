// Pods for the unit tests of the metrics: a pod of one container, and the attribution of a
// connection to that container.
#pragma once

#include <string>
#include <utility>

#include "k8s/pods.h"

namespace netmon::test {

// A Deployment's pod on node-1 with one containerd container (image example/image:1).
inline PodMeta make_pod(std::string ns, std::string name, std::string uid, std::string workload,
                        std::string container_id, std::string container_name) {
  PodMeta pod;
  pod.namespace_name = std::move(ns);
  pod.name = std::move(name);
  pod.uid = std::move(uid);
  pod.workload = std::move(workload);
  pod.workload_kind = "Deployment";
  pod.node_name = "node-1";
  ContainerMeta c;
  c.id = std::move(container_id);
  c.runtime = "containerd";
  c.name = std::move(container_name);
  c.image = "example/image:1";
  pod.containers.push_back(std::move(c));
  return pod;
}

// A connection of the pod's first container.
inline Attribution attribution_of(const PodMeta& pod) {
  Attribution a;
  a.container_id = pod.containers.at(0).id;
  a.pod = &pod;
  a.container = &pod.containers.at(0);
  return a;
}

}  // namespace netmon::test
