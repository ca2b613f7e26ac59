"""Who is on the other end (issue #19), end to end: the real agent names the remote end of every
connection ("peer" in network_event) from this node's kubelet pods and the API server's
Services, EndpointSlices, Nodes (and Pods with --watch-pods).

The pods are test_kubernetes.py's fake pods (a kubelet-shaped cgroup and a network namespace
each, joined by a veth pair), with IPv6 addresses too. The client pod's default routes lead into
the server pod's namespace, which also holds, on its loopback device, every other address the
tests connect to: a service's cluster IPs (the socket's daddr is the virtual IP, as with
kube-proxy; here the VIP simply is local to the server's namespace), a pod of another node, the
addresses of another Node and of this node's Node object, and external addresses. One listener
in the server pod accepts on SERVER_PORT for all of them; CLOSED_PORT has none (the connect is
refused: a Failed event). The API server is kube_api_stub.py (HTTPS, bearer token, list and
watch in the real wire format), the kubelet kubelet_stub.py.

Addresses per fake cluster n (1..254), IPv4 / IPv6:
  server pod db-0      10.213.n.1    fd00:213:n::1   (kubelet; EndpointSlices of service db)
  client pod web-...   10.213.n.2    fd00:213:n::2   (kubelet)
  service shop/db      10.96.n.10    fd00:96:n::10   (port "postgres" = SERVER_PORT)
  service shop/cart    10.96.n.11    fd00:96:n::11   (created by some tests)
  pod payments/ledger  10.214.n.7    fd00:214:n::7   (pods watch; another node)
  node B               10.215.n.3    fd00:215:n::3
  this node (Node)     10.215.n.2    fd00:215:n::2   (kind host)
  external "docs"      198.18.n.9    2001:db8:18:n::9 (also in class "lab", listed second)
  internet             203.0.113.n   3fff:0:n::9
  service shop/front   198.19.n.5    2001:db8:19:n::5 (externalIPs; in class "docs")
                       198.20.n.6    2001:db8:20:n::6 (load-balancer ingress; in "docs")
                       node port NODE_PORT on node B
  pod monitoring/node-exporter-...   node B's addresses (hostNetwork), port EXPORTER_PORT
"""

import ipaddress
import json
import os
import re
import socket
import sys
import textwrap
import time
import urllib.request
import uuid

import pytest

import kube_api_stub
import kubelet_stub
from conftest import free_port, same_connection, wait_for
from kube_api_stub import ENDPOINTSLICES, NODES, PODS, SERVICES, reserve_port
from test_kubernetes import (  # noqa: F401 - k8s_host, kubelet, kubelet_certs, token_file: fixtures
    LOG,
    NAMESPACE,
    NODE_NAME,
    SERVER_PORT,
    FakeCluster,
    agent_flags,
    k8s_host,
    kubelet,
    kubelet_certs,
    log_lines,
    netns_listening,
    synced_pattern,
    token_file,
    wait_exit,
    wait_log,
    write_token,
)
from test_lifecycle import ACCEPT, CLOSE, ESTABLISH, FAILED, Listener, only

CLOSED_PORT = SERVER_PORT + 1  # nothing listens there: connects are refused
NODE_PORT = 30443  # service shop/front's node port
EXPORTER_PORT = 9100  # the hostNetwork pod's port
NODE_B = f"netmon-peer-node-b-{os.getpid()}"
EXTERNAL_NETWORKS = "docs=198.16.0.0/12,2001:db8::/32;lab=198.18.0.0/15,2001:db8:18::/48"
RESOURCES = {"services": SERVICES, "endpointslices": ENDPOINTSLICES, "nodes": NODES,
             "pods": PODS}
PEER_KINDS = ("pod", "service", "node", "host", "external")

NAME_TIMEOUT = 15.0  # seconds for a change at the API server to name connections
DOWN_TIMEOUT = 40.0  # seconds for names once a server down at start is up (backoff: 1 s .. 60 s)
SYNC_TIMEOUT = 15.0  # seconds for the agent's first list of each resource
PROBE_TIMEOUT = 3  # seconds nc -z waits for a connect

# A server script's start: `listeners`, one listening socket per port in argv[1:], IPv4 and IPv6
# (the script imports socket and sys).
BIND_LISTENERS = textwrap.dedent("""\
    listeners = []
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        for port in map(int, sys.argv[1:]):
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((host, port))
            s.listen(128)
            listeners.append(s)
""")

# The server pod's listener: accepts on every port given, IPv4 and IPv6, and closes each
# connection when its client does.
LISTENER = "import select, socket, sys\n" + BIND_LISTENERS + textwrap.dedent("""\
    connections = []
    while True:
        readable, _, _ = select.select(listeners + connections, [], [], 60)
        for s in readable:
            if s in listeners:
                connections.append(s.accept()[0])
                continue
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                connections.remove(s)
                s.close()
""")


def new_uid():
    return str(uuid.uuid4())


# ---------------------------------------------------------------------------------------------
# The fake cluster: two pods of this node, and the addresses of everything else


class PeerCluster(FakeCluster):
    """test_kubernetes.FakeCluster with IPv6 on the pods' veth, the client's default routes
    into the server's namespace, and the other addresses (module docstring) local there."""

    FAMILIES = ("ipv4", "ipv6")

    def __init__(self, mount):
        super().__init__(mount)
        n = self.net
        self.addr = {
            "ipv4": {"server": f"10.213.{n}.1", "client": f"10.213.{n}.2",
                     "vip": f"10.96.{n}.10", "vip2": f"10.96.{n}.11",
                     "remote_pod": f"10.214.{n}.7", "node_b": f"10.215.{n}.3",
                     "this_node": f"10.215.{n}.2", "docs": f"198.18.{n}.9",
                     "internet": f"203.0.113.{n}", "external_ip": f"198.19.{n}.5",
                     "ingress_ip": f"198.20.{n}.6"},
            "ipv6": {"server": f"fd00:213:{n:x}::1", "client": f"fd00:213:{n:x}::2",
                     "vip": f"fd00:96:{n:x}::10", "vip2": f"fd00:96:{n:x}::11",
                     "remote_pod": f"fd00:214:{n:x}::7", "node_b": f"fd00:215:{n:x}::3",
                     "this_node": f"fd00:215:{n:x}::2", "docs": f"2001:db8:18:{n:x}::9",
                     "internet": f"3fff:0:{n:x}::9", "external_ip": f"2001:db8:19:{n:x}::5",
                     "ingress_ip": f"2001:db8:20:{n:x}::6"},
        }
        for family in self.FAMILIES:  # as the agent writes them (inet_ntop)
            self.addr[family] = {k: ipaddress.ip_address(v).compressed
                                 for k, v in self.addr[family].items()}
        self.remote_pod = {"namespace": "payments", "name": "ledger-7d4b9c8f6-q2w3e",
                           "uid": new_uid(), "workload": "ledger",
                           "workload_kind": "Deployment"}

    def both(self, role):
        return [self.addr[f][role] for f in self.FAMILIES]

    def create(self):
        super().create()
        s, c = self.server, self.client
        for pod, role in ((s, "server"), (c, "client")):
            self._ip("-n", pod.netns, "-6", "addr", "add", f"{self.addr['ipv6'][role]}/64",
                     "dev", "eth0", "nodad")
        self._ip("-n", c.netns, "route", "add", "default", "via", self.addr["ipv4"]["server"])
        self._ip("-n", c.netns, "-6", "route", "add", "default", "via",
                 self.addr["ipv6"]["server"])
        for family, prefix in (("ipv4", 32), ("ipv6", 128)):
            for role, address in self.addr[family].items():
                if role not in ("server", "client"):
                    self._ip("-n", s.netns, "addr", "add", f"{address}/{prefix}", "dev", "lo")

    def item(self, pod, **kwargs):
        """`pod`'s kubelet/API Pod object, dual-stack."""
        item = pod.item(**kwargs)
        role = "server" if pod is self.server else "client"
        item["status"]["podIPs"] = [{"ip": a} for a in self.both(role)]
        return item

    def remote_pod_item(self, uid=None, name=None):
        """The pod of another node (node B) at the remote_pod addresses."""
        r = self.remote_pod
        item = kube_api_stub_pod(
            name=name or r["name"], namespace=r["namespace"], uid=uid or r["uid"],
            node_name=NODE_B, labels={"app": "ledger", "pod-template-hash": "7d4b9c8f6"},
            owner=("ReplicaSet", "ledger-7d4b9c8f6"),
            host_ip=self.addr["ipv4"]["node_b"], ips=self.both("remote_pod"))
        return item

    def exporter_pod(self):
        """A DaemonSet's hostNetwork pod on node B (its IPs are the node's), declaring
        EXPORTER_PORT. Returns (the Pod object, its expected peer)."""
        uid = new_uid()
        item = kube_api_stub_pod(
            name="node-exporter-4hz8m", namespace="monitoring", uid=uid, node_name=NODE_B,
            labels={"app.kubernetes.io/name": "node-exporter"},
            owner=("DaemonSet", "node-exporter"), host_ip=self.addr["ipv4"]["node_b"],
            ips=self.both("node_b"), host_port=EXPORTER_PORT)
        return item, {"kind": "pod", "namespace": "monitoring", "name": "node-exporter-4hz8m",
                      "uid": uid, "workload": "node-exporter", "workload_kind": "DaemonSet"}


def kube_api_stub_pod(*, name, namespace, uid, node_name, labels, owner, host_ip, ips,
                      host_port=None):
    """A Pod object as the API server (and the kubelet) return it; with `host_port`, a
    hostNetwork pod whose container declares that port."""
    item = kubelet_stub.pod_item(
        name=name, namespace=namespace, uid=uid, node_name=node_name, labels=labels,
        owner=owner, containers=[{"name": "app", "image": "registry.example/app:2.4.1",
                                  "image_id": "registry.example/app@sha256:" + "ab" * 32,
                                  "container_id": os.urandom(32).hex()}],
        qos_class="BestEffort", pod_ip=ips[0], host_ip=host_ip)
    item["status"]["podIPs"] = [{"ip": a} for a in ips]
    if host_port is not None:
        item["spec"]["hostNetwork"] = True
        item["spec"]["dnsPolicy"] = "ClusterFirstWithHostNet"
        item["spec"]["containers"][0]["ports"] = [
            {"name": "metrics", "containerPort": host_port, "hostPort": host_port,
             "protocol": "TCP"}]
    return {"kind": "Pod", "apiVersion": "v1", **item}


@pytest.fixture
def cluster(k8s_host):
    c = PeerCluster(k8s_host)
    try:
        c.create()
        yield c
    finally:
        c.cleanup()


# ---------------------------------------------------------------------------------------------
# The API server's objects


def db_service(cluster):
    return kube_api_stub.service_object(
        "db", NAMESPACE, new_uid(), cluster.both("vip"), [("postgres", SERVER_PORT, "TCP", None)],
        selector={"app": "db"})


def cart_service(cluster):
    """shop/cart at the vip2 addresses, its port "http" = SERVER_PORT."""
    return kube_api_stub.service_object(
        "cart", NAMESPACE, new_uid(), cluster.both("vip2"), [("http", SERVER_PORT, "TCP", None)])


def front_service(cluster):
    """shop/front: a LoadBalancer service with external IPs, ingress IPs and a node port."""
    return kube_api_stub.service_object(
        "front", NAMESPACE, new_uid(), [], [("https", SERVER_PORT, "TCP", NODE_PORT)],
        service_type="LoadBalancer", external_ips=cluster.both("external_ip"),
        ingress_ips=cluster.both("ingress_ip"))


def db_slices(cluster, service):
    s = cluster.server
    slices = []
    for family, address_type in (("ipv4", "IPv4"), ("ipv6", "IPv6")):
        name = f"db-{family[-1]}x7k2"
        slices.append(kube_api_stub.endpoint_slice_object(
            name, NAMESPACE, new_uid(), "db", service["metadata"]["uid"], address_type,
            [{"address": cluster.addr[family]["server"], "node_name": NODE_NAME,
              "pod": (s.namespace, s.name, s.uid)}],
            [("postgres", SERVER_PORT)]))
    return slices


def nodes(cluster):
    return [
        kube_api_stub.node_object(NODE_NAME, new_uid(), cluster.both("this_node"),
                                  ["10.244.1.0/24", "fd00:244:1::/64"]),
        kube_api_stub.node_object(NODE_B, new_uid(), cluster.both("node_b"),
                                  ["10.244.2.0/24", "fd00:244:2::/64"]),
    ]


def populate(stub, cluster):
    """Service shop/db with its two EndpointSlices, the two Nodes, and the Pods: this node's two
    (as the kubelet lists them) and payments/ledger on node B."""
    service = db_service(cluster)
    stub.put(SERVICES, service)
    for slice_ in db_slices(cluster, service):
        stub.put(ENDPOINTSLICES, slice_)
    for node in nodes(cluster):
        stub.put(NODES, node)
    for item in (cluster.item(cluster.server), cluster.item(cluster.client),
                 cluster.remote_pod_item()):
        stub.put(PODS, item)


@pytest.fixture
def api_token(tmp_path):
    path = tmp_path / "api-token"
    path.write_text(f"api-token-{uuid.uuid4().hex}\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def kube_api(kubelet_certs, api_token):
    """A factory: kube_api(start=True, port=0) makes an API server stub with the four
    collections, populated, requiring the token in `api_token`. All stopped at teardown."""
    stubs = []

    def make(cluster, start=True, port=0):
        stub = kube_api_stub.KubeApiStub(kubelet_certs["cert"], kubelet_certs["key"],
                                         api_token.read_text().strip(), port=port)
        kube_api_stub.add_collections(stub)
        populate(stub, cluster)
        stubs.append(stub)
        if start:
            stub.start()
        return stub

    yield make
    for stub in stubs:
        stub.stop()


# ---------------------------------------------------------------------------------------------
# The agent


def peer_flags(cluster, pods, kubelet_token, certs, api_url, api_token, watch_pods=True,
               labels=False):
    flags = agent_flags(cluster, pods.url, kubelet_token, ca_file=certs["ca"])
    flags += ["--kube-api-url", api_url, "--kube-api-token-file", str(api_token),
              "--kube-api-ca-file", certs["ca"], "--external-networks", EXTERNAL_NETWORKS]
    if watch_pods:
        flags.append("--watch-pods")
    if labels:
        flags.append("--peer-labels")
    return flags


def synced_line(resource):
    return rf"kube api: {resource} synced \(\d+ objects\)"


def start_peer_agent(start_agent, cluster, kubelet, token_file, kubelet_certs, stub, api_token,
                     watch_pods=True, labels=False, extra=(), wait_api=True):
    """An agent with the kubelet stub (serving this node's two pods) and the API server stub;
    once it is running and (wait_api) every resource it watches has synced. The kubelet stub
    is cluster.kubelet_stub."""
    pods = kubelet([cluster.item(cluster.server), cluster.item(cluster.client)])
    cluster.kubelet_stub = pods
    agent = start_agent(*peer_flags(cluster, pods, token_file, kubelet_certs, stub.url,
                                    api_token, watch_pods, labels), *extra)
    wait_log(agent, synced_pattern(pods.url))
    if wait_api:
        for resource in watched(watch_pods):
            wait_log(agent, synced_line(resource), timeout=SYNC_TIMEOUT)
    return agent


def watched(watch_pods=True):
    return ["services", "endpointslices", "nodes"] + (["pods"] if watch_pods else [])


def start_listener(cluster, ports=(SERVER_PORT,)):
    """LISTENER in the server pod (its cgroup and namespace), listening on `ports`."""
    proc = cluster.start(cluster.server, [sys.executable, "-c", LISTENER, *map(str, ports)])
    for port in ports:
        wait_for(lambda: netns_listening(proc.pid, cluster.server.netns, port),
                 what=f"the listener on {port} in {cluster.server.netns}")
    return proc


def probe(cluster, agent, tools, address, port=SERVER_PORT):
    """`nc -z` from the client pod to address:port; its Establish, or its Failed event when the
    connect did not succeed."""
    proc = cluster.start(cluster.client, [tools["nc"], "-z", "-w", str(PROBE_TIMEOUT), address,
                                          str(port)])
    code = wait_exit(proc)
    kind = ESTABLISH if code == 0 else FAILED
    return only(agent.wait_events(kind=kind, pid=proc.pid, daddr=address, dport=port),
                f"{kind} of nc -z {address} {port}")


def peer_of(event):
    return event["network_event"].get("peer")


def connect_until_peer(cluster, agent, tools, address, expected, port=SERVER_PORT,
                       timeout=NAME_TIMEOUT, kind=None):
    """Connects from the client pod every 0.2 s until the open event (of `kind` when given)
    carries `expected` as its peer. Returns that event."""
    seen = []

    def attempt():
        event = probe(cluster, agent, tools, address, port)
        seen.append(event)
        if peer_of(event) == expected and (kind is None or
                                           event["network_event"]["type"] == kind):
            return event
        time.sleep(0.2)
        return None

    return wait_for(attempt, timeout=timeout, interval=0, what=lambda: (
        f"a connection to {address}:{port} with peer {json.dumps(expected)}; the last: "
        f"{json.dumps(seen[-1]['network_event']) if seen else None}"))


def assert_close_peer(agent, opened, expected):
    """The Close of the connection `opened` opened carries the same peer."""
    ne = opened["network_event"]
    close = only(agent.wait_events(kind=CLOSE, ports={ne["dport"]}, **same_connection(opened)),
                 "Close")
    assert peer_of(close) == expected, json.dumps(close)
    return close


def pod_peer(pod, labels=False):
    peer = {"kind": "pod", "namespace": pod.namespace, "name": pod.name, "uid": pod.uid,
            "workload": pod.workload[0], "workload_kind": pod.workload[1]}
    if labels:
        peer["labels"] = pod.labels
    return peer


def remote_pod_peer(cluster, uid=None, name=None):
    return {"kind": "pod", **cluster.remote_pod, **({"uid": uid} if uid else {}),
            **({"name": name} if name else {})}


def service_peer(name, port_name, namespace=NAMESPACE, service_type="ClusterIP"):
    return {"kind": "service", "namespace": namespace, "name": name, "port_name": port_name,
            "type": service_type}


NODE_B_PEER = {"kind": "node", "name": NODE_B}
HOST_PEER = {"kind": "host"}


def external_peer(network):
    return {"kind": "external", "network": network}


# ---------------------------------------------------------------------------------------------
# Metrics


def samples(text, name):
    """{frozenset of (label, value): value} of metric `name` in the exposition `text`."""
    found = {}
    for m in re.finditer(rf"^{name}(?:\{{([^}}]*)\}})? (\S+)$", text, re.MULTILINE):
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        found[labels] = float(m.group(2))
    return found


def sample(text, name, default=None, **labels):
    return samples(text, name).get(frozenset(labels.items()), default)


def peer_kind_counts(agent):
    counts = dict.fromkeys(PEER_KINDS, 0)
    for event in agent.events():
        peer = peer_of(event)
        if peer is not None:
            counts[peer["kind"]] += 1
    return counts


def assert_lookup_counts(agent):
    """netmon_peer_lookups_total{result} counts the events that carry a peer of that kind:
    between the events read before the scrape and those read after a barrier that follows it
    (other programs on the host make connections too: host and external), exactly for the
    kinds only these tests' pods connect to. Returns the metrics text."""
    agent.sync()
    before = peer_kind_counts(agent)
    text = agent.published_metrics_text()
    agent.sync()
    after = peer_kind_counts(agent)
    counted = {k: sample(text, "netmon_peer_lookups_total", 0.0, result=k) for k in PEER_KINDS}
    for kind in PEER_KINDS:
        assert before[kind] <= counted[kind] <= after[kind], (kind, before, counted, after)
    for kind in ("pod", "service", "node"):
        assert counted[kind] == before[kind] == after[kind], (kind, before, counted, after)
    return text


def watch_errors(text, resource, reason):
    return sample(text, "netmon_kube_api_watch_errors_total", 0.0, resource=resource,
                  reason=reason)


def requested_resources(stub):
    return {r["resource"] for r in stub.requests()}


# ---------------------------------------------------------------------------------------------
# Each kind of peer


@pytest.mark.parametrize("family", PeerCluster.FAMILIES)
def test_every_kind_of_peer(start_agent, cluster, kubelet, token_file, kubelet_certs,
                            kube_api, api_token, real_tools, family):
    """From the client pod: the server pod (this node's, named from the kubelet with its
    workload), a pod of another node (the pods watch), service shop/db's cluster IP, node B's
    address, this node's Node address (host), an address of the first of two overlapping
    external classes, and an unclassified one (refused: the Failed event carries the peer).
    Every open event and its Close carry exactly the peer; the server's Accept names the client
    pod; the test process's loopback connection is host on both ends. The agent watches exactly
    services, endpointslices, nodes and pods; the lookup counters count the peers written."""
    s, c = cluster.server, cluster.client
    a = cluster.addr[family]
    stub = kube_api(cluster)
    agent = start_peer_agent(start_agent, cluster, kubelet, token_file, kubelet_certs, stub,
                             api_token)
    listener = start_listener(cluster)

    to_server = connect_until_peer(cluster, agent, real_tools, a["server"], pod_peer(s))
    assert_close_peer(agent, to_server, pod_peer(s))
    accept = only(agent.wait_events(kind=ACCEPT, pid=listener.pid, daddr=a["client"],
                                    dport=to_server["network_event"]["sport"]), "Accept")
    assert peer_of(accept) == pod_peer(c), json.dumps(accept)
    assert_close_peer(agent, accept, pod_peer(c))

    for role, expected in (("remote_pod", remote_pod_peer(cluster)),
                           ("vip", service_peer("db", "postgres")),
                           ("node_b", NODE_B_PEER),
                           ("this_node", HOST_PEER),
                           ("docs", external_peer("docs"))):
        opened = connect_until_peer(cluster, agent, real_tools, a[role], expected,
                                    kind=ESTABLISH)
        assert opened["network_event"]["daddr"] == a[role]
        assert_close_peer(agent, opened, expected)

    # Refused connects: Failed events, named all the same.
    for role, expected in (("internet", external_peer("internet")),
                           ("vip", service_peer("db", ""))):
        failed = probe(cluster, agent, real_tools, a[role], CLOSED_PORT)
        assert failed["network_event"]["type"] == FAILED, json.dumps(failed)
        assert failed["network_event"]["error"] == "ECONNREFUSED", json.dumps(failed)
        assert peer_of(failed) == expected, json.dumps(failed)

    loopback = "127.0.0.1" if family == "ipv4" else "::1"
    host = Listener(socket.AF_INET if family == "ipv4" else socket.AF_INET6, loopback)
    try:
        with socket.create_connection((loopback, host.port), timeout=5) as conn:
            cport = conn.getsockname()[1]
        host.join()
    finally:
        host.close()
    for kind, filters in ((ESTABLISH, {"sport": cport, "dport": host.port}),
                          (ACCEPT, {"sport": host.port, "dport": cport})):
        opened = only(agent.wait_events(kind=kind, pid=os.getpid(), **filters), kind)
        assert peer_of(opened) == HOST_PEER, json.dumps(opened)

    text = assert_lookup_counts(agent)
    for resource in watched():
        assert sample(text, "netmon_kube_api_synced", resource=resource) == 1.0, resource
        for reason in ("unreachable", "interrupted", "unauthorized", "gone", "parse"):
            assert watch_errors(text, resource, reason) == 0.0, (resource, reason)
    assert sample(text, "netmon_peer_index_objects", kind="services") == 1.0
    assert sample(text, "netmon_peer_index_objects", kind="nodes") == 2.0
    assert requested_resources(stub) == set(RESOURCES.values())
    assert set(stub.tokens_seen()) == {api_token.read_text().strip()}
    listener.kill()


@pytest.mark.parametrize("family", PeerCluster.FAMILIES)
def test_ports_tell_services_and_host_network_pods_from_addresses(
        start_agent, cluster, kubelet, token_file, kubelet_certs, kube_api, api_token,
        real_tools, family):
    """A LoadBalancer service's external IP and ingress IP on its port are the service (types
    ExternalIP and LoadBalancer), though they are in the external class "docs"; on another port
    the external IP is still the service, without port_name. Node B's address is the service
    (NodePort) on its node port, the hostNetwork pod on the port it declares, and the node on any
    other port."""
    a = cluster.addr[family]
    stub = kube_api(cluster)
    front = front_service(cluster)
    front["spec"]["clusterIP"], front["spec"]["clusterIPs"] = "None", ["None"]
    stub.put(SERVICES, front)
    exporter, exporter_peer = cluster.exporter_pod()
    stub.put(PODS, exporter)
    agent = start_peer_agent(start_agent, cluster, kubelet, token_file, kubelet_certs, stub,
                             api_token)
    start_listener(cluster, ports=(SERVER_PORT, NODE_PORT, EXPORTER_PORT))
    for role, port, expected in (
            ("external_ip", SERVER_PORT, service_peer("front", "https", service_type="ExternalIP")),
            ("ingress_ip", SERVER_PORT,
             service_peer("front", "https", service_type="LoadBalancer")),
            ("node_b", NODE_PORT, service_peer("front", "https", service_type="NodePort")),
            ("node_b", EXPORTER_PORT, exporter_peer),
            ("node_b", SERVER_PORT, NODE_B_PEER)):
        opened = connect_until_peer(cluster, agent, real_tools, a[role], expected, port=port,
                                    kind=ESTABLISH)
        assert_close_peer(agent, opened, expected)
    failed = probe(cluster, agent, real_tools, a["external_ip"], CLOSED_PORT)
    assert failed["network_event"]["type"] == FAILED, json.dumps(failed)
    assert peer_of(failed) == service_peer("front", "", service_type="ExternalIP")


def test_without_pods_watch_a_headless_service_names_its_pods(
        start_agent, cluster, kubelet, token_file, kubelet_certs, kube_api, api_token,
        real_tools):
    """Without --watch-pods the agent never asks for pods; the pod of another node behind a
    headless service is named through the service's EndpointSlices alone: namespace, name and
    uid, an empty workload (only its Pod object knows it). This node's pods keep their workload
    (the kubelet)."""
    stub = kube_api(cluster)
    r = cluster.remote_pod
    headless = kube_api_stub.service_object("ledger", r["namespace"], new_uid(), [],
                                            [("grpc", SERVER_PORT, "TCP", None)])
    stub.put(SERVICES, headless)
    for family, address_type in (("ipv4", "IPv4"), ("ipv6", "IPv6")):
        stub.put(ENDPOINTSLICES, kube_api_stub.endpoint_slice_object(
            f"ledger-{family[-1]}q4rt", r["namespace"], new_uid(), "ledger",
            headless["metadata"]["uid"], address_type,
            [{"address": cluster.addr[family]["remote_pod"], "node_name": NODE_B,
              "pod": (r["namespace"], r["name"], r["uid"])}],
            [("grpc", SERVER_PORT)]))
    agent = start_peer_agent(start_agent, cluster, kubelet, token_file, kubelet_certs, stub,
                             api_token, watch_pods=False)
    start_listener(cluster)
    slice_only = dict(remote_pod_peer(cluster), workload="", workload_kind="")
    for family in PeerCluster.FAMILIES:
        a = cluster.addr[family]
        opened = connect_until_peer(cluster, agent, real_tools, a["remote_pod"], slice_only)
        assert_close_peer(agent, opened, slice_only)
        connect_until_peer(cluster, agent, real_tools, a["server"], pod_peer(cluster.server))
    assert requested_resources(stub) == {SERVICES, ENDPOINTSLICES, NODES}
    text = agent.published_metrics_text()
    assert samples(text, "netmon_kube_api_synced") == {
        frozenset({("resource", r)}): 1.0 for r in watched(watch_pods=False)}


def test_watch_switches_limit_what_the_api_server_is_asked(
        start_agent, cluster, kubelet, token_file, kubelet_certs, kube_api, api_token,
        real_tools):
    """--watch-nodes=false (a cluster of thousands of nodes): the agent never asks for nodes, a
    node's address is external while services are still named; all three watches off: no request
    at all although an API server is given, and the node still names its own pods."""
    stub = kube_api(cluster)
    agent = start_peer_agent(start_agent, cluster, kubelet, token_file, kubelet_certs, stub,
                             api_token, watch_pods=False, extra=("--watch-nodes=false",),
                             wait_api=False)
    for resource in ("services", "endpointslices"):
        wait_log(agent, synced_line(resource), timeout=SYNC_TIMEOUT)
    start_listener(cluster)
    a = cluster.addr["ipv4"]
    connect_until_peer(cluster, agent, real_tools, a["vip"], service_peer("db", "postgres"))
    assert peer_of(probe(cluster, agent, real_tools, a["node_b"])) == external_peer("internet")
    assert requested_resources(stub) == {SERVICES, ENDPOINTSLICES}
    assert samples(agent.published_metrics_text(), "netmon_kube_api_synced") == {
        frozenset({("resource", r)}): 1.0 for r in ("services", "endpointslices")}
    agent.stop()

    quiet = kube_api(cluster)
    agent = start_peer_agent(start_agent, cluster, kubelet, token_file, kubelet_certs, quiet,
                             api_token, watch_pods=False,
                             extra=("--watch-nodes=false", "--watch-services=false"),
                             wait_api=False)
    wait_log(agent, r"no API server watch \(kubernetes.watch_services, watch_nodes and "
                    r"watch_pods are false\): .*")
    connect_until_peer(cluster, agent, real_tools, a["server"], pod_peer(cluster.server))
    assert quiet.requests() == []
    assert "netmon_kube_api_synced" not in agent.published_metrics_text()


RULES = """\
egress:
  rules:
  - rule: ToDbPod
    event: peer_kind == "pod" AND peer_namespace == "shop" AND peer_pod == "db-0" AND peer_workload == "db" AND peer_label["app"] == "db"
  - rule: ShopToAnotherNamespace
    scope: namespace == "shop"
    event: peer_kind == "pod" AND NOT peer_namespace == "shop"
  - rule: ToDbService
    event: peer_kind == "service" AND peer_service == "db" AND peer_namespace == "shop"
  - rule: ToNode
    event: peer_kind == "node"
  - rule: ToThisHost
    event: peer_kind == "host" AND port_dst == {server_port}
  - rule: ToDocs
    event: peer_network == "docs"
  - rule: ToInternet
    event: peer_kind == "external" AND peer_network == "internet"
  - rule: Marker
    event: peer_kind == "host" AND port_dst == {marker_port}
"""


@pytest.mark.parametrize("family", PeerCluster.FAMILIES)
def test_rules_on_peer_attributes(start_agent, cluster, kubelet, token_file, kubelet_certs,
                                  kube_api, api_token, real_tools, tmp_path, family):
    """Egress rules on peer_kind, peer_namespace, peer_pod, peer_workload, peer_label["app"]
    (with --peer-labels: the pod peer carries its labels), peer_service and peer_network: each
    connection gets its rule, a Failed one too; one to this host on another port matches no
    rule and is not written."""
    s = cluster.server
    a = cluster.addr[family]
    marker = free_port()
    config = tmp_path / "netmon.yaml"
    config.write_text(RULES.format(server_port=SERVER_PORT, marker_port=marker))
    stub = kube_api(cluster)
    agent = start_peer_agent(start_agent, cluster, kubelet, token_file, kubelet_certs, stub,
                             api_token, labels=True, extra=("--config", str(config)))
    listener = start_listener(cluster)

    expected_server = pod_peer(s, labels=True)
    # Until the names are known, a connection to the server pod is "internet" (ToInternet),
    # or not written at all (nothing matches a connection without peer): probe until one is
    # named ToDbPod.
    seen = []

    def named_to_db_pod():
        proc = cluster.start(cluster.client, [real_tools["nc"], "-z", "-w", str(PROBE_TIMEOUT),
                                              a["server"], str(SERVER_PORT)])
        assert wait_exit(proc) == 0
        try:
            event = agent.wait_events(kind=ESTABLISH, pid=proc.pid, timeout=1.0)[0]
        except AssertionError:
            return None
        seen.append(event)
        return event if event.get("rule") == "ToDbPod" else time.sleep(0.2)

    to_server = wait_for(named_to_db_pod, timeout=NAME_TIMEOUT, interval=0, what=lambda: (
        f"a connection to the server pod named ToDbPod; the last: "
        f"{json.dumps(seen[-1]) if seen else None}"))
    assert peer_of(to_server) == expected_server, json.dumps(to_server)

    for role, port, rule, peer in (
            ("remote_pod", SERVER_PORT, "ShopToAnotherNamespace",
             dict(remote_pod_peer(cluster), labels={"app": "ledger",
                                                    "pod-template-hash": "7d4b9c8f6"})),
            ("vip", SERVER_PORT, "ToDbService", service_peer("db", "postgres")),
            ("node_b", SERVER_PORT, "ToNode", NODE_B_PEER),
            ("this_node", SERVER_PORT, "ToThisHost", HOST_PEER),
            ("docs", SERVER_PORT, "ToDocs", external_peer("docs")),
            ("internet", CLOSED_PORT, "ToInternet", external_peer("internet"))):
        event = probe(cluster, agent, real_tools, a[role], port)
        assert event.get("rule") == rule, json.dumps(event)
        assert peer_of(event) == peer, json.dumps(event)
        if event["network_event"]["type"] == ESTABLISH:
            close = assert_close_peer(agent, event, peer)
            assert close.get("rule") == rule, json.dumps(close)

    unmatched = cluster.start(cluster.client, [real_tools["nc"], "-z", "-w", "3",
                                               a["this_node"], str(CLOSED_PORT)])
    assert wait_exit(unmatched) == 1
    agent.sync(marker_port=marker, sides=("client",))
    assert agent.events(pid=unmatched.pid) == []
    listener.kill()


# ---------------------------------------------------------------------------------------------
# The watches: interrupted, expired, a rotated token, a server down at start


def assert_cart_named(cluster, agent, tools):
    """Connections to service shop/cart's cluster IPs (both families) are named after it."""
    for address in cluster.both("vip2"):
        connect_until_peer(cluster, agent, tools, address, service_peer("cart", "http"))


def assert_cart_unknown(cluster, agent, tools):
    for address in cluster.both("vip2"):
        assert peer_of(probe(cluster, agent, tools, address)) == external_peer("internet")


def test_interrupted_watches_resume_and_name_a_new_service(start_agent, cluster, kubelet,
                                                           token_file, kubelet_certs, kube_api,
                                                           api_token, real_tools):
    """The API server sends each watch a bookmark (other resources changed meanwhile), then
    breaks every watch off mid-stream (no last chunk): each is resumed from the bookmark's
    version without a re-list, counted once as reason "interrupted", and a service created
    afterwards names connections to its cluster IPs."""
    stub = kube_api(cluster)
    agent = start_peer_agent(start_agent, cluster, kubelet, token_file, kubelet_certs, stub,
                             api_token)
    start_listener(cluster)
    assert_cart_unknown(cluster, agent, real_tools)
    wait_for(lambda: stub.open_watch_count() == len(watched()), what="the four watches")
    time.sleep(1.5)  # a watch broken off sooner, with nothing in it, also counts as short
    lists = len(stub.requests("list"))
    watches = stub.requests("watch")
    assert {w["query"].get("allowWatchBookmarks") for w in watches} == {"true"}, watches
    stub.bump(25)
    bookmark = stub.bookmark()  # written before the cut, so the agent reads it first
    stub.close_watches(abrupt=True)
    wait_for(lambda: len(stub.requests("watch")) >= 2 * len(watches)
             and stub.open_watch_count() == len(watched()),
             timeout=NAME_TIMEOUT, what="the resumed watches")
    resumed = stub.requests("watch")[len(watches):]
    assert sorted((w["resource"], w["query"]["resourceVersion"]) for w in resumed) == sorted(
        (path, bookmark) for path in RESOURCES.values()), resumed
    assert len(stub.requests("list")) == lists  # resumed, not re-listed

    stub.put(SERVICES, cart_service(cluster))
    assert_cart_named(cluster, agent, real_tools)
    text = agent.published_metrics_text()
    for resource in watched():
        assert watch_errors(text, resource, "interrupted") == 1.0, resource
        assert sample(text, "netmon_kube_api_synced", resource=resource) == 1.0, resource


def test_stop_with_open_watches_is_prompt(start_agent, cluster, kubelet, token_file,
                                          kubelet_certs, kube_api, api_token):
    """SIGTERM while the four watches are open (each blocked reading its stream): the agent
    exits 0 within 3 s, its "stopped:" summary the last line."""
    stub = kube_api(cluster)
    agent = start_peer_agent(start_agent, cluster, kubelet, token_file, kubelet_certs, stub,
                             api_token)
    wait_for(lambda: stub.open_watch_count() == len(watched()), what="the four watches")
    started = time.monotonic()
    code = agent.stop()
    elapsed = time.monotonic() - started
    assert code == 0, agent.stderr_text()
    assert elapsed < 3.0, f"the agent took {elapsed:.1f} s to stop"
    assert re.fullmatch(LOG + "stopped: .+", agent.stderr_lines[-1]), agent.stderr_lines[-3:]


def test_410_gone_relists_and_names_a_service_only_the_list_shows(start_agent, cluster, kubelet,
                                                                  token_file, kubelet_certs,
                                                                  kube_api, api_token,
                                                                  real_tools):
    """A service is created while the watches fall behind a compaction (no watch sees it);
    the watches end, their resumption gets 410 Gone, the agent re-lists at once, and the
    service names connections. 410 is the protocol, not an error: no error counted."""
    stub = kube_api(cluster)
    agent = start_peer_agent(start_agent, cluster, kubelet, token_file, kubelet_certs, stub,
                             api_token)
    start_listener(cluster)
    assert_cart_unknown(cluster, agent, real_tools)
    wait_for(lambda: stub.open_watch_count() == len(watched()), what="the four watches")
    time.sleep(1.5)
    stub.put_unseen(SERVICES, cart_service(cluster))
    stub.close_watches()
    assert_cart_named(cluster, agent, real_tools)

    def relisted(path):
        """The requests for `path` once a list followed its watch that got 410."""
        mine = [r for r in stub.requests() if r["resource"] == path]
        gone = [i for i, r in enumerate(mine) if r.get("gone")]
        return mine if gone and len(mine) > gone[0] + 1 else None

    for path in RESOURCES.values():
        mine = wait_for(lambda: relisted(path), timeout=NAME_TIMEOUT,
                        what=lambda: f"a re-list of {path} after 410: {stub.requests()}")
        at = next(i for i, r in enumerate(mine) if r.get("gone"))
        assert mine[at + 1]["kind"] == "list", (path, mine)
        # At once: no backoff between the 410 and the re-list.
        assert mine[at + 1]["time"] - mine[at]["time"] < 1.5, (path, mine)
    text = agent.published_metrics_text()
    for resource in watched():
        assert watch_errors(text, resource, "gone") == 0.0, resource
        assert sample(text, "netmon_kube_api_synced", resource=resource) == 1.0, resource


def test_rotated_token_is_used_by_the_next_watch(start_agent, cluster, kubelet, token_file,
                                                 kubelet_certs, kube_api, api_token, real_tools):
    """The token file is replaced (as the kubelet rotates a projected token) and the server
    accepts only the new token: every request after it carries the new one, none is refused,
    and a service created afterwards is named."""
    stub = kube_api(cluster)
    agent = start_peer_agent(start_agent, cluster, kubelet, token_file, kubelet_certs, stub,
                             api_token)
    start_listener(cluster)
    wait_for(lambda: stub.open_watch_count() == len(watched()), what="the four watches")
    time.sleep(1.5)  # a watch ended sooner, with nothing in it, backs off
    old = api_token.read_text().strip()
    new = f"rotated-{uuid.uuid4().hex}"
    before = len(stub.requests())
    write_token(api_token, new)
    stub.require_token(new)
    stub.close_watches()
    wait_for(lambda: stub.open_watch_count() == len(watched())
             and len(stub.requests()) >= before + len(watched()),
             timeout=NAME_TIMEOUT, what="the watches with the new token")
    stub.put(SERVICES, cart_service(cluster))
    assert_cart_named(cluster, agent, real_tools)
    after = stub.requests()[before:]
    assert [r["token"] for r in after] == [new] * len(after), after
    assert {r["status"] for r in after} == {200}, after
    assert set(stub.tokens_seen()[:before]) == {old}
    text = agent.published_metrics_text()
    for resource in watched():
        assert watch_errors(text, resource, "unauthorized") == 0.0, resource


@pytest.mark.parametrize("fault", ["unreachable", "forbidden"])
def test_api_server_down_or_forbidden_at_start(start_agent, cluster, kubelet, token_file,
                                               kubelet_certs, kube_api, api_token, real_tools,
                                               fault):
    """No API server answers at start (or it answers 403: RBAC not granted yet): the agent runs
    and is ready, events flow named with what is known without it (this node's pods from the
    kubelet, host, external classes; a service IP is "internet"), each resource counts `fault`
    errors and is not synced. Once the server answers, every resource syncs and the service and
    this node's Node address are named."""
    a = cluster.addr["ipv4"]
    if fault == "unreachable":
        stub = kube_api(cluster, start=False, port=reserve_port())
    else:
        stub = kube_api(cluster)
        stub.forbid()
    agent = start_peer_agent(start_agent, cluster, kubelet, token_file, kubelet_certs, stub,
                             api_token, wait_api=False)
    start_listener(cluster)
    with urllib.request.urlopen(agent.metrics_url + "/readyz", timeout=5) as reply:
        assert reply.status == 200
    connect_until_peer(cluster, agent, real_tools, a["server"], pod_peer(cluster.server))
    assert peer_of(probe(cluster, agent, real_tools, a["vip"])) == external_peer("internet")
    assert peer_of(probe(cluster, agent, real_tools, a["docs"])) == external_peer("docs")
    # This node's Node object is not known yet.
    assert peer_of(probe(cluster, agent, real_tools, a["this_node"])) == \
        external_peer("internet")

    def all_failed_twice():
        text = agent.metrics_text()
        return all(watch_errors(text, r, fault) >= 2 for r in watched()) and text

    text = wait_for(all_failed_twice, timeout=SYNC_TIMEOUT, what=f"{fault} errors counted")
    for resource in watched():
        assert sample(text, "netmon_kube_api_synced", resource=resource) == 0.0, resource
        # One warning when the failure starts, not one per attempt.
        assert len(log_lines(agent, rf"kube-api {resource}: {fault}: .+")) == 1, \
            agent.stderr_text()
    if fault == "unreachable":
        stub.start()
    else:
        stub.forbid(False)
    for resource in watched():
        wait_log(agent, synced_line(resource), timeout=DOWN_TIMEOUT)
    connect_until_peer(cluster, agent, real_tools, a["vip"], service_peer("db", "postgres"))
    connect_until_peer(cluster, agent, real_tools, a["this_node"], HOST_PEER)
    # Published with (after) the events just read: the syncs came before the names.
    text = agent.published_metrics_text()
    for resource in watched():
        assert sample(text, "netmon_kube_api_synced", resource=resource) == 1.0, resource
        assert len(log_lines(agent, rf"kube-api {resource}: the API server answers again")) \
            == 1, agent.stderr_text()
    with urllib.request.urlopen(agent.metrics_url + "/readyz", timeout=5) as reply:
        assert reply.status == 200


def test_api_server_down_later_keeps_the_names_known(start_agent, cluster, kubelet, token_file,
                                                     kubelet_certs, kube_api, api_token,
                                                     real_tools):
    """The API server goes away after the first sync (its watches cut, then nothing listens):
    connections keep the names already known (service, node, the pod of another node), each
    resource warns once that the known names stay in use; when it is back a new service is
    named."""
    a = cluster.addr["ipv4"]
    stub = kube_api(cluster)
    agent = start_peer_agent(start_agent, cluster, kubelet, token_file, kubelet_certs, stub,
                             api_token)
    start_listener(cluster)
    named = {"vip": service_peer("db", "postgres"), "node_b": NODE_B_PEER,
             "remote_pod": remote_pod_peer(cluster), "this_node": HOST_PEER}
    for role, expected in named.items():
        connect_until_peer(cluster, agent, real_tools, a[role], expected)
    stub.stop()

    def all_unreachable():
        text = agent.metrics_text()
        return all(watch_errors(text, r, "unreachable") >= 1 for r in watched()) and text

    wait_for(all_unreachable, timeout=SYNC_TIMEOUT, what="unreachable errors counted")
    for role, expected in named.items():
        event = probe(cluster, agent, real_tools, a[role])
        assert peer_of(event) == expected, json.dumps(event)
    for resource in watched():
        assert log_lines(agent, rf"kube-api {resource}: \w+: .+; the names already known stay "
                                rf"in use"), agent.stderr_text()
    stub.put(SERVICES, cart_service(cluster))
    stub.start()  # on the same port
    assert_cart_named(cluster, agent, real_tools)
    text = agent.published_metrics_text()
    for resource in watched():
        assert sample(text, "netmon_kube_api_synced", resource=resource) == 1.0, resource


def test_without_api_server(start_agent, cluster, kubelet, token_file, kubelet_certs,
                            real_tools):
    """No --kube-api-url and not in a cluster (no API server): peers are still named from what the node knows: this node's pods (the kubelet), host, external classes."""
    pods = kubelet([cluster.item(cluster.server), cluster.item(cluster.client)])
    cluster.kubelet_stub = pods
    agent = start_agent(*agent_flags(cluster, pods.url, token_file, ca_file=kubelet_certs["ca"]),
                        "--external-networks", EXTERNAL_NETWORKS)
    wait_log(agent, synced_pattern(pods.url))
    start_listener(cluster)
    for family in PeerCluster.FAMILIES:
        a = cluster.addr[family]
        connect_until_peer(cluster, agent, real_tools, a["server"], pod_peer(cluster.server))
        for role, expected in (("vip", external_peer("internet")),
                               ("docs", external_peer("docs")),
                               ("this_node", external_peer("internet"))):
            assert peer_of(probe(cluster, agent, real_tools, a[role])) == expected, role


# ---------------------------------------------------------------------------------------------
# A pod IP reused by a new pod


def test_pod_ip_reused_by_a_new_pod(start_agent, cluster, kubelet, token_file, kubelet_certs,
                                    kube_api, api_token, real_tools):
    """Pod payments/ledger (another node, the pods watch) is deleted and a new pod gets its
    IPs: connections opened afterwards name the new pod (both families), while a connection
    opened before, still open, closes named after the old one."""
    stub = kube_api(cluster)
    agent = start_peer_agent(start_agent, cluster, kubelet, token_file, kubelet_certs, stub,
                             api_token)
    start_listener(cluster)
    v4 = cluster.addr["ipv4"]["remote_pod"]
    old = remote_pod_peer(cluster)
    connect_until_peer(cluster, agent, real_tools, v4, old)
    telnet = cluster.start(cluster.client, [real_tools["telnet"], v4, str(SERVER_PORT)])
    held = agent.wait_events(kind=ESTABLISH, pid=telnet.pid, daddr=v4, dport=SERVER_PORT)[0]
    assert peer_of(held) == old, json.dumps(held)

    r = cluster.remote_pod
    stub.delete(PODS, f"{r['namespace']}/{r['name']}")
    new_uid_, new_name = new_uid(), "ledger-7d4b9c8f6-z9y8x"
    stub.put(PODS, cluster.remote_pod_item(uid=new_uid_, name=new_name))
    new = remote_pod_peer(cluster, uid=new_uid_, name=new_name)
    for address in cluster.both("remote_pod"):
        after = connect_until_peer(cluster, agent, real_tools, address, new)
        assert_close_peer(agent, after, new)

    telnet.kill()
    wait_exit(telnet)
    assert_close_peer(agent, held, old)


def test_local_pod_recreated_with_the_same_ip(start_agent, cluster, kubelet, token_file,
                                              kubelet_certs, kube_api, api_token, real_tools):
    """StatefulSet pod db-0 of this node is recreated (same name, new uid) with the same IPs:
    the kubelet lists the new pod, the pods watch deletes the old one and adds the new one,
    the EndpointSlices point at the new one. Connections opened afterwards name the new pod
    (both families); a connection opened before, still open, closes named after the old one."""
    s = cluster.server
    v4 = cluster.addr["ipv4"]["server"]
    stub = kube_api(cluster)
    agent = start_peer_agent(start_agent, cluster, kubelet, token_file, kubelet_certs, stub,
                             api_token)
    start_listener(cluster)
    old = pod_peer(s)
    connect_until_peer(cluster, agent, real_tools, v4, old)
    telnet = cluster.start(cluster.client, [real_tools["telnet"], v4, str(SERVER_PORT)])
    held = agent.wait_events(kind=ESTABLISH, pid=telnet.pid, daddr=v4, dport=SERVER_PORT)[0]
    assert peer_of(held) == old, json.dumps(held)

    recreated = cluster.item(s)
    recreated["metadata"]["uid"] = new_uid()
    new = dict(old, uid=recreated["metadata"]["uid"])
    cluster.kubelet_stub.set_pods([recreated, cluster.item(cluster.client)])
    stub.delete(PODS, f"{s.namespace}/{s.name}")
    stub.put(PODS, recreated)
    for key in stub.keys(ENDPOINTSLICES):  # the same slices (uids), modified
        slice_ = stub_object(stub, ENDPOINTSLICES, key)
        assert slice_["endpoints"][0]["targetRef"]["uid"] == old["uid"]
        slice_["endpoints"][0]["targetRef"]["uid"] = new["uid"]
        stub.put(ENDPOINTSLICES, slice_)
    for address in cluster.both("server"):
        after = connect_until_peer(cluster, agent, real_tools, address, new)
        assert_close_peer(agent, after, new)

    telnet.kill()
    wait_exit(telnet)
    assert_close_peer(agent, held, old)


def stub_object(stub, path, key):
    """The object `key` of the stub's collection `path`, as stored."""
    with stub._lock:
        return json.loads(json.dumps(stub._collections[path].items[key]))


@pytest.mark.parametrize("source", ["file", "env"])
def test_settings_from_the_config_file_and_the_environment(start_agent, cluster, kubelet,
                                                           token_file, kubelet_certs, kube_api,
                                                           api_token, real_tools, tmp_path,
                                                           source):
    """The API server, watch_pods, peer_labels and external_networks given as the file's
    kubernetes keys (external_networks an ordered mapping) or as NETMON_ variables: the pod of
    another node is named with its labels (the pods watch), the service, and an address of two
    overlapping classes by the first one."""
    stub = kube_api(cluster)
    pods = kubelet([cluster.item(cluster.server), cluster.item(cluster.client)])
    flags = agent_flags(cluster, pods.url, token_file, ca_file=kubelet_certs["ca"])
    env = None
    if source == "file":
        config = tmp_path / "netmon.yaml"
        config.write_text(textwrap.dedent(f"""\
            kubernetes:
              api_url: "{stub.url}"
              api_token_file: "{api_token}"
              api_ca_file: "{kubelet_certs['ca']}"
              watch_pods: true
              peer_labels: true
              external_networks:
                docs: [198.16.0.0/12, "2001:db8::/32"]
                lab: [198.18.0.0/15, "2001:db8:18::/48"]
            """))
        flags += ["--config", str(config)]
    else:
        env = {"NETMON_KUBE_API_URL": stub.url, "NETMON_KUBE_API_TOKEN_FILE": str(api_token),
               "NETMON_KUBE_API_CA_FILE": kubelet_certs["ca"], "NETMON_WATCH_PODS": "true",
               "NETMON_PEER_LABELS": "true", "NETMON_EXTERNAL_NETWORKS": EXTERNAL_NETWORKS}
    agent = start_agent(*flags, env=env)
    for resource in watched():
        wait_log(agent, synced_line(resource), timeout=SYNC_TIMEOUT)
    start_listener(cluster)
    remote = dict(remote_pod_peer(cluster),
                  labels={"app": "ledger", "pod-template-hash": "7d4b9c8f6"})
    for family in PeerCluster.FAMILIES:
        a = cluster.addr[family]
        for role, expected in (("remote_pod", remote), ("vip", service_peer("db", "postgres")),
                               ("docs", external_peer("docs"))):
            connect_until_peer(cluster, agent, real_tools, a[role], expected)
    assert requested_resources(stub) == set(RESOURCES.values())
