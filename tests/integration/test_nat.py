"""NAT-correct connections (issue #20), end to end, against conntrack-tools as the truth.

kube_proxy_net.py builds kube-proxy's data path for real: a node namespace with its Services'
DNAT rules (iptables-nft with kube-proxy's chains and statistic split, or kube-proxy's nftables
table with its verdict maps and numgen split), a client pod, two backend pods and an external
namespace outside the node. The real agent runs INSIDE the node's namespace (nsenter --net: its
conntrack subscription is the node's; its BPF programs see every namespace's sockets), with the
API server stub (kube_api_stub.py, serving in the node's namespace too) giving it the Services,
their EndpointSlices and the backend Pods. Real nc clients connect; a real listener accepts in
each backend pod.

For every translated connection the expected backend and original client are what
`conntrack -L` (conntrack-tools, run in the node's namespace) shows for the connection's tuple:
the reply direction's source for an outbound socket (its tuple is the entry's original
direction), the original direction's source and destination for an inbound one (its tuple is the
entry's reply direction). The agent never reads conntrack-tools' output; the test never computes
a translation itself.

Services (cluster IPs 10.96.0.x / fd00:10:96::x, port 80 "http", targets 8080):
  shop/cart       .10  -> be1, be2 (kube-proxy's random split), node port 30080
  shop/checkout   .20  -> be1 (a backend that dials it reaches itself: hairpin)
  billing/invoices .30 -> be1 too: two services of two namespaces on one backend IP and port
  shop/orders     .40  -> be2:8081, where nothing listens (the connect is refused)
"""

import json
import os
import re
import sys
import urllib.request
import uuid

import pytest

import kube_api_stub
import kube_proxy_net
from conftest import (
    AGENT,
    Agent,
    ProcessGroup,
    bpf_unavailable_reason,
    check_stopped_cleanly,
    require_privileges,
    same_connection,
    skip_or_fail,
    wait_for,
)
from kube_api_stub import ENDPOINTSLICES, PODS, SERVICES
from kube_proxy_net import EXTERNAL_IP, FAMILIES, NODE_IP, POD_IPS, KubeProxyNet, Service
from test_kubernetes import (  # noqa: F401 - kubelet_certs: a fixture
    kubelet_certs,
    log_lines,
    netns_listening,
    wait_exit,
    wait_log,
)
from test_lifecycle import ACCEPT, CLOSE, ESTABLISH, FAILED, only
from test_peers import LISTENER, kube_api_stub_pod, synced_line, watched

NODE_NAME = f"netmon-nat-node-{os.getpid()}"
TARGET_PORT = 8080
CLOSED_PORT = 8081  # nothing listens there: the backend refuses the connection
SERVICE_PORT = 80
NODE_PORT = 30080
CONNECTIONS = 20  # per service, mode and family: all on one backend has probability 2 ** -19
PROBE_TIMEOUT = 3  # seconds nc waits for a connect
SYNC_TIMEOUT = 15.0  # seconds for the agent's first list of each resource
NAT_METRIC = re.compile(r'^netmon_nat_lookups_total\{result="(\w+)"\} (\S+)$', re.MULTILINE)

SERVICES_UNDER_TEST = [
    Service("shop", "cart", "http", SERVICE_PORT,
            {"ipv4": "10.96.0.10", "ipv6": "fd00:10:96::10"},
            [("be1", TARGET_PORT), ("be2", TARGET_PORT)], node_port=NODE_PORT),
    Service("shop", "checkout", "http", SERVICE_PORT,
            {"ipv4": "10.96.0.20", "ipv6": "fd00:10:96::20"}, [("be1", TARGET_PORT)]),
    Service("billing", "invoices", "http", SERVICE_PORT,
            {"ipv4": "10.96.0.30", "ipv6": "fd00:10:96::30"}, [("be1", TARGET_PORT)]),
    Service("shop", "orders", "http", SERVICE_PORT,
            {"ipv4": "10.96.0.40", "ipv6": "fd00:10:96::40"}, [("be2", CLOSED_PORT)]),
]
SERVICE = {s.name: s for s in SERVICES_UNDER_TEST}

# The backend pods: one Deployment's two replicas.
BACKENDS = {
    "be1": {"namespace": "shop", "name": "cart-6d8f7c9b5-k2x7p", "uid": str(uuid.uuid4())},
    "be2": {"namespace": "shop", "name": "cart-6d8f7c9b5-w9q4z", "uid": str(uuid.uuid4())},
}
ROLE_OF = {kube_proxy_net.canonical(POD_IPS[role][f]): role for role in POD_IPS for f in FAMILIES}


def expected_backend(addr, port):
    """peer.backend for a connection that conntrack shows reaching addr:port: the address and
    port, and the pod's identity from the peer index (docs/events.md)."""
    role = ROLE_OF.get(addr)
    assert role in BACKENDS, f"conntrack shows a backend {addr}:{port} that is no backend pod"
    pod = BACKENDS[role]
    return {"addr": addr, "port": port, "kind": "pod", "namespace": pod["namespace"],
            "name": pod["name"], "uid": pod["uid"], "workload": "cart",
            "workload_kind": "Deployment"}


def expected_service_peer(service):
    """The peer of a connection to `service`'s cluster IP (issue #19): the service itself."""
    return {"kind": "service", "namespace": service.namespace, "name": service.name,
            "port_name": service.port_name, "type": "ClusterIP"}


def peer_of(event):
    return event["network_event"].get("peer") or {}


def without_nat(peer):
    return {k: v for k, v in peer.items() if k not in ("backend", "original")}


def show(event):
    return json.dumps(event["network_event"])


# ---------------------------------------------------------------------------------------------
# The API server's objects


def api_objects():
    """(path, object) of the Services, their EndpointSlices (one per family) and the backend
    Pods (Deployment cart via ReplicaSet cart-6d8f7c9b5)."""
    objects = []
    for svc in SERVICES_UNDER_TEST:
        uid = str(uuid.uuid4())
        objects.append((SERVICES, kube_api_stub.service_object(
            svc.name, svc.namespace, uid, [svc.vips[f] for f in FAMILIES],
            [(svc.port_name, svc.port, "TCP", svc.node_port)],
            service_type="NodePort" if svc.node_port else "ClusterIP")))
        for family, address_type in (("ipv4", "IPv4"), ("ipv6", "IPv6")):
            endpoints = [{"address": POD_IPS[role][family], "node_name": NODE_NAME,
                          "pod": (BACKENDS[role]["namespace"], BACKENDS[role]["name"],
                                  BACKENDS[role]["uid"])} for role, _ in svc.endpoints]
            objects.append((ENDPOINTSLICES, kube_api_stub.endpoint_slice_object(
                f"{svc.name}-{family[-1]}abcd", svc.namespace, str(uuid.uuid4()), svc.name, uid,
                address_type, endpoints, [(svc.port_name, TARGET_PORT)])))
    for role, pod in BACKENDS.items():
        objects.append((PODS, kube_api_stub_pod(
            name=pod["name"], namespace=pod["namespace"], uid=pod["uid"], node_name=NODE_NAME,
            labels={"app": "cart", "pod-template-hash": "6d8f7c9b5"},
            owner=("ReplicaSet", "cart-6d8f7c9b5"), host_ip=NODE_IP["ipv4"],
            ips=[POD_IPS[role][f] for f in FAMILIES])))
    return objects


# ---------------------------------------------------------------------------------------------
# The agent in the node's namespace


def _fetch(url):
    with urllib.request.urlopen(url, timeout=10) as reply:
        return reply.read().decode("utf-8")


class NodeAgent(Agent):
    """The agent run with `nsenter --net` in the node's namespace; its /metrics (on 127.0.0.1
    there) is read from a thread in that namespace."""

    def __init__(self, net, args):
        self.net = net
        super().__init__(command=net.nsenter(
            "node", [AGENT, *args, "--metrics-address", "127.0.0.1:0"]))

    def metrics_text(self):
        return self.net.call("node", _fetch, self.metrics_url + "/metrics")

    def nat_lookups(self):
        """netmon_nat_lookups_total by result, from a publication that counts every event read
        so far."""
        text = self.published_metrics_text()
        return {m.group(1): int(float(m.group(2))) for m in NAT_METRIC.finditer(text)}


def agent_flags(stub, token, certs):
    return ["--node-name", NODE_NAME, "--kube-api-url", stub.url, "--kube-api-token-file",
            str(token), "--kube-api-ca-file", certs["ca"], "--watch-pods"]


def wait_synced(agent):
    for resource in watched(True):
        wait_log(agent, synced_line(resource), timeout=SYNC_TIMEOUT)


def start_node_agent(net, stub, token, certs, extra=()):
    """An agent in `net`'s node namespace, running, with every resource synced."""
    agent = NodeAgent(net, [*agent_flags(stub, token, certs), *extra])
    failure = agent.wait_running()
    if failure is not None:
        agent.kill()
        unavailable = bpf_unavailable_reason()
        if agent.proc.returncode == 1 and unavailable:
            skip_or_fail(f"BPF is unavailable ({unavailable}): the agent {failure}")
        pytest.fail(f"the agent did not start in the node namespace: {failure}", pytrace=False)
    wait_synced(agent)
    return agent


def stop_node_agent(agent):
    try:
        check_stopped_cleanly(agent)
    finally:
        agent.kill()


class Node:
    """A topology with listeners in both backend pods, the API server stub serving in the
    node's namespace, and (when started) the agent there."""

    def __init__(self, mode, certs, token):
        self.mode = mode
        self.net = KubeProxyNet(mode, SERVICES_UNDER_TEST)
        self.processes = ProcessGroup()
        self.listeners = {}
        self.stub = kube_api_stub.KubeApiStub(certs["cert"], certs["key"],
                                              token.read_text().strip())
        kube_api_stub.add_collections(self.stub)
        for path, obj in api_objects():
            self.stub.put(path, obj)
        self.agent = None

    def create(self, stub_in_node=True):
        """The topology and the listeners; the API server stub serving in the node's
        namespace (or, stub_in_node=False, in this process's)."""
        self.net.create()
        for role in ("be1", "be2"):
            proc = self.processes.start(self.net.command(
                role, [sys.executable, "-c", LISTENER, str(TARGET_PORT)]))
            self.listeners[role] = proc
            wait_for(lambda: netns_listening(proc.pid, self.net.ns[role], TARGET_PORT),
                     what=f"the listener on {TARGET_PORT} in {role}")
        if stub_in_node:
            self.net.call("node", self.stub.start)
        else:
            self.stub.start()

    def cleanup(self):
        try:
            self.stub.stop()
            self.processes.cleanup()
        finally:
            self.net.cleanup()


@pytest.fixture(scope="module")
def nat_host():
    """Root, the agent, the tools; leftovers of earlier runs removed."""
    require_privileges()
    missing = kube_proxy_net.missing_tools()
    if missing:
        skip_or_fail(f"not installed: {', '.join(missing)} (scripts/install-deps.sh)")
    kube_proxy_net.clean_leftovers()


@pytest.fixture(scope="module")
def api_token(tmp_path_factory):
    path = tmp_path_factory.mktemp("nat-api") / "token"
    path.write_text(f"api-token-{uuid.uuid4().hex}\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module", params=kube_proxy_net.MODES)
def node(request, nat_host, kubelet_certs, api_token):
    """The topology in one mode with its agent, shared by the tests of that mode (each test
    picks its own connections by pid and ports)."""
    n = Node(request.param, kubelet_certs, api_token)
    try:
        n.create()
        n.agent = start_node_agent(n.net, n.stub, api_token, kubelet_certs)
        yield n
    finally:
        try:
            if n.agent is not None:
                stop_node_agent(n.agent)
        finally:
            n.cleanup()


@pytest.fixture
def fresh_node(nat_host, kubelet_certs, api_token):
    """A factory: fresh_node(mode, *agent flags) makes a topology of its own (mode None: no NAT
    rules) and starts an agent there; both removed at teardown."""
    made = []

    def make(mode, *flags):
        n = Node(mode, kubelet_certs, api_token)
        made.append(n)
        n.create()
        n.agent = start_node_agent(n.net, n.stub, api_token, kubelet_certs, flags)
        return n

    yield make
    errors = []
    for n in made:
        try:
            if n.agent is not None:
                stop_node_agent(n.agent)
        except AssertionError as e:
            errors.append(str(e))
        finally:
            n.cleanup()
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


# ---------------------------------------------------------------------------------------------
# Connections


def connect(node, role, address, port):
    """`nc -z` from `role`'s namespace to address:port; its Establish event."""
    proc = node.processes.start(node.net.command(
        role, ["nc", "-z", "-w", str(PROBE_TIMEOUT), address, str(port)]))
    code = wait_exit(proc)
    assert code == 0, (f"nc -z {address} {port} in {role} exited with {code}: "
                       f"{proc.stderr.read().decode(errors='replace')!r}")
    address = kube_proxy_net.canonical(address)
    return only(node.agent.wait_events(kind=ESTABLISH, pid=proc.pid, daddr=address, dport=port),
                f"Establish of nc -z {address} {port} in {role}")


def connect_refused(node, role, address, port):
    """`nc -z` from `role`'s namespace to address:port, which refuses it; its Failed event."""
    proc = node.processes.start(node.net.command(
        role, ["nc", "-z", "-w", str(PROBE_TIMEOUT), address, str(port)]))
    code = wait_exit(proc)
    assert code != 0, f"nc -z {address} {port} in {role} connected"
    address = kube_proxy_net.canonical(address)
    return only(node.agent.wait_events(kind=FAILED, pid=proc.pid, daddr=address, dport=port),
                f"Failed of nc -z {address} {port} in {role}")


def truth(node, establish):
    """The conntrack entry (conntrack -L in the node's namespace) whose original direction is
    the Establish's tuple."""
    ne = establish["network_event"]
    key = (ne["saddr"], ne["sport"], ne["daddr"], ne["dport"])
    entries = node.net.conntrack_by_orig(kube_proxy_net.family_of(ne["saddr"]))
    assert key in entries, (f"conntrack -L shows no entry for {key}; entries:\n"
                            + "\n".join(e.line for e in entries.values()))
    return entries[key]


def accept_of(node, entry):
    """The backend's Accept of the connection of conntrack `entry`: local = the reply's source,
    remote = the reply's destination."""
    src, sport, dst, dport = entry.reply
    role = ROLE_OF[src]
    return only(node.agent.wait_events(kind=ACCEPT, pid=node.listeners[role].pid, saddr=src,
                                       sport=sport, daddr=dst, dport=dport),
                f"Accept in {role} of {entry.line}")


def close_of(node, opened):
    return only(node.agent.wait_events(kind=CLOSE, **same_connection(opened),
                                       ports={opened["network_event"]["sport"]}),
                f"Close of {show(opened)}")


def expected_original(entry):
    src, sport, dst, dport = entry.orig
    return {"addr": src, "port": sport, "dialed_addr": dst, "dialed_port": dport}


def assert_backend(event, entry, what):
    got = peer_of(event).get("backend")
    want = expected_backend(entry.reply[0], entry.reply[1])
    assert got == want, (f"{what}: peer.backend differs from conntrack's reply source\n"
                         f"  conntrack: {entry.line}\n  expected:  {json.dumps(want)}\n"
                         f"  got:       {json.dumps(got)}\n  event:     {show(event)}")


def assert_original(event, entry, what):
    got = peer_of(event).get("original")
    want = expected_original(entry)
    assert got == want, (f"{what}: peer.original differs from conntrack's original tuple\n"
                         f"  conntrack: {entry.line}\n  expected:  {json.dumps(want)}\n"
                         f"  got:       {json.dumps(got)}\n  event:     {show(event)}")


# ---------------------------------------------------------------------------------------------
# The topology itself (no agent assertions): the fixture's self-check


@pytest.mark.parametrize("family", FAMILIES)
def test_topology_translates_like_kube_proxy(node, family):
    """The node's rules are kube-proxy's (its chain names and maps) and the kernel translates
    with them: a connection to a cluster IP is DNATed to an endpoint without SNAT, a NodePort
    connection from outside is DNATed and masqueraded, a hairpin is DNATed to the caller itself
    and masqueraded; conntrack -L shows each."""
    ruleset = node.net.ruleset()
    cart = SERVICE["cart"]
    if node.mode == "iptables":
        for chain in ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-MARK-MASQ", "KUBE-POSTROUTING",
                      kube_proxy_net.chain_svc(cart.key), kube_proxy_net.chain_ext(cart.key)):
            assert f"\n:{chain} - " in ruleset, f"no chain {chain}:\n{ruleset}"
        assert "-m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-" in ruleset, (
            ruleset)
    else:
        for text in ("map service-ips", "map service-nodeports", "numgen random mod 2 vmap",
                     "masquerade fully-random"):
            assert text in ruleset, f"no {text!r}:\n{ruleset}"

    vip = cart.vips[family]
    entry = truth(node, connect(node, "cli", vip, SERVICE_PORT))
    assert entry.dnat and not entry.snat, entry.line
    assert (entry.reply[0], entry.reply[1]) in cart.endpoint_addrs(family), entry.line

    entry = truth(node, connect(node, "ext", NODE_IP[family], NODE_PORT))
    assert entry.dnat and entry.snat, entry.line
    assert (entry.reply[0], entry.reply[1]) in cart.endpoint_addrs(family), entry.line

    checkout = SERVICE["checkout"]
    entry = truth(node, connect(node, "be1", checkout.vips[family], SERVICE_PORT))
    assert entry.dnat and entry.snat, entry.line
    assert entry.reply[0] == entry.orig[0], f"not a hairpin: {entry.line}"


# ---------------------------------------------------------------------------------------------
# The agent's translations


@pytest.mark.parametrize("family", FAMILIES)
def test_each_service_connection_names_the_backend_conntrack_shows(node, family):
    """CONNECTIONS connections from the client pod to shop/cart's cluster IP: each Establish
    names in peer.backend the endpoint conntrack -L shows as the reply source of its tuple, with
    that pod's identity, and keeps the service as its peer and the cluster IP as daddr; its
    Close carries the same backend; the backend's Accept carries the client and the cluster IP
    it dialed as peer.original. Over CONNECTIONS, kube-proxy's random split reaches both
    backends (all on one: probability 2 ** -19)."""
    cart = SERVICE["cart"]
    vip = cart.vips[family]
    opened = [connect(node, "cli", vip, SERVICE_PORT) for _ in range(CONNECTIONS)]
    node.agent.sync()
    reached = set()
    for establish in opened:
        entry = truth(node, establish)
        what = f"{node.mode}/{family} connection {entry.orig}"
        assert establish["network_event"]["daddr"] == vip, show(establish)
        assert without_nat(peer_of(establish)) == expected_service_peer(cart), show(establish)
        assert_backend(establish, entry, what)
        assert_backend(close_of(node, establish), entry, f"{what} (its Close)")
        accept = accept_of(node, entry)
        assert_original(accept, entry, f"{what} (the backend's Accept)")
        assert "backend" not in peer_of(accept), show(accept)
        reached.add(entry.reply[0])
    assert reached == {a for a, _ in cart.endpoint_addrs(family)}, (
        f"{CONNECTIONS} connections reached only {reached}")


@pytest.mark.parametrize("family", FAMILIES)
def test_node_port_from_outside_names_backend_and_original_client(node, family):
    """A connection from outside the node (the ext namespace) to the node's IP and shop/cart's
    node port: its Establish names the backend conntrack shows; the backend pod's Accept (its
    remote is the node's masquerading address) carries peer.original = the external client's
    address and port and the node IP and node port it dialed, as conntrack's original tuple
    shows."""
    establish = connect(node, "ext", NODE_IP[family], NODE_PORT)
    entry = truth(node, establish)
    what = f"{node.mode}/{family} NodePort connection {entry.orig}"
    assert entry.orig[0] == kube_proxy_net.canonical(EXTERNAL_IP[family]), entry.line
    assert entry.snat, f"not masqueraded: {entry.line}"
    assert_backend(establish, entry, what)
    accept = accept_of(node, entry)
    assert accept["network_event"]["daddr"] != entry.orig[0], show(accept)  # masqueraded
    assert_original(accept, entry, f"{what} (the backend's Accept)")
    assert_backend(close_of(node, establish), entry, f"{what} (its Close)")
    assert_original(close_of(node, accept), entry, f"{what} (the backend's Close)")


@pytest.mark.parametrize("family", FAMILIES)
def test_hairpin_backend_calling_its_own_service(node, family):
    """be1 dials shop/checkout, whose only endpoint is be1 itself: kube-proxy's hairpin rule
    masquerades it. The Establish's backend is be1 itself; be1's Accept (from the node's
    masquerading address) carries peer.original = be1's own address and port before the
    masquerade, and the cluster IP it dialed."""
    checkout = SERVICE["checkout"]
    establish = connect(node, "be1", checkout.vips[family], SERVICE_PORT)
    entry = truth(node, establish)
    what = f"{node.mode}/{family} hairpin {entry.orig}"
    assert entry.reply[0] == entry.orig[0] and entry.snat, f"not a hairpin: {entry.line}"
    assert_backend(establish, entry, what)
    assert peer_of(establish)["backend"]["name"] == BACKENDS["be1"]["name"], show(establish)
    accept = accept_of(node, entry)
    assert_original(accept, entry, f"{what} (be1's Accept)")
    assert peer_of(accept)["original"]["addr"] == establish["network_event"]["saddr"]


@pytest.mark.parametrize("family", FAMILIES)
def test_two_services_of_two_namespaces_on_one_backend_are_not_confused(node, family):
    """shop/checkout and billing/invoices both send to be1:8080 (the same backend IP and port):
    each connection's peer is the service it dialed, its backend be1, and the backend's Accept
    names the cluster IP that connection dialed (Coroot's mistake: one service for both)."""
    for _ in range(3):
        for name in ("checkout", "invoices"):
            svc = SERVICE[name]
            establish = connect(node, "cli", svc.vips[family], SERVICE_PORT)
            entry = truth(node, establish)
            what = f"{node.mode}/{family} connection to {svc.key} {entry.orig}"
            assert without_nat(peer_of(establish)) == expected_service_peer(svc), (
                f"{what}: {show(establish)}")
            assert_backend(establish, entry, what)
            accept = accept_of(node, entry)
            assert_original(accept, entry, f"{what} (be1's Accept)")
            assert peer_of(accept)["original"]["dialed_addr"] == svc.vips[family], show(accept)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_refused_service_connection_names_its_backend(node, family):
    """The client pod dials shop/orders, whose endpoint refuses (nothing listens on be2:8081):
    the Failed event (ECONNREFUSED) names the backend that refused, as conntrack -E showed it
    when the SYN was translated (the kernel destroys the entry with the reset)."""
    orders = SERVICE["orders"]
    with kube_proxy_net.ConntrackEvents(node.net) as conntrack_events:
        failed = connect_refused(node, "cli", orders.vips[family], SERVICE_PORT)
        ne = failed["network_event"]
        key = (ne["saddr"], ne["sport"], ne["daddr"], ne["dport"])
        # The entry is destroyed with the reset: conntrack -E's NEW event is the truth.
        entry = conntrack_events.wait(lambda e: e.orig == key)
    assert ne["error"] == "ECONNREFUSED", show(failed)
    assert entry is not None, f"conntrack -E showed no NEW event for {key}"
    assert (entry.reply[0], entry.reply[1]) == orders.endpoint_addrs(family)[0], entry.line
    assert_backend(failed, entry, f"{node.mode}/{family} refused connection {entry.orig}")


@pytest.mark.parametrize("family", FAMILIES)
def test_a_connection_without_nat_has_no_backend(node, family):
    """The client pod dials be2's own address (no Service): conntrack tracks it without a DNAT;
    no backend on the Establish, no original on the Accept. Unless the kernel changed the
    client's port: when the client's ephemeral port was last used for a connection to the
    service that landed on be2 and whose entry is still there, the new entry's reply tuple
    would be that one's, and conntrack gives the connection another source port (a SNAT of the
    port alone, seen in CI): the Accept then says, rightly, where it came from."""
    be2 = kube_proxy_net.canonical(POD_IPS["be2"][family])
    establish = connect(node, "cli", be2, TARGET_PORT)
    entry = truth(node, establish)
    assert not entry.dnat, entry.line
    assert peer_of(establish).get("kind") == "pod", show(establish)
    assert "backend" not in peer_of(establish), show(establish)
    assert "original" not in peer_of(establish), show(establish)
    accept = accept_of(node, entry)
    assert "backend" not in peer_of(accept), show(accept)
    if not entry.snat:
        assert "original" not in peer_of(accept), show(accept)
        return
    src, sport, dst, dport = entry.orig
    assert entry.orig[0] == entry.reply[2] and entry.orig[1] != entry.reply[3], entry.line
    assert peer_of(accept)["original"] == {"addr": src, "port": sport, "dialed_addr": dst,
                                           "dialed_port": dport}, show(accept)


def test_translated_lookups_count_the_translated_events(node):
    """netmon_nat_lookups_total{result="translated"} equals the number of events of this agent
    that carry a backend or an original (this mode's scenarios so far, and three connections
    to a service per family made here), none is counted lost, and netmon_nat_entries holds the
    node's translated entries."""
    for family in FAMILIES:
        for _ in range(3):
            accept_of(node, truth(node, connect(node, "cli", SERVICE["cart"].vips[family],
                                                SERVICE_PORT)))
    node.agent.sync()
    text = node.agent.published_metrics_text()
    counts = {m.group(1): int(float(m.group(2))) for m in NAT_METRIC.finditer(text)}
    translated = [e for e in node.agent.events()
                  if "backend" in peer_of(e) or "original" in peer_of(e)]
    assert len(translated) >= 4 * len(FAMILIES) * 3, len(translated)  # Establish, Accept, Closes
    assert counts.get("translated") == len(translated), (
        f"netmon_nat_lookups_total {counts}, events with a backend or an original: "
        f"{len(translated)}")
    assert counts.get("lost", 0) == 0, counts
    assert counts.get("not_translated", 0) > 0, counts  # the sync markers, at least
    entries = re.search(r"^netmon_nat_entries (\S+)$", text, re.MULTILINE)
    assert entries, "no netmon_nat_entries in /metrics"
    translated_in_conntrack = [e for e in node.net.conntrack_entries() if e.dnat or e.snat]
    assert 0 < float(entries.group(1)), (entries.group(0), len(translated_in_conntrack))


def test_conntrack_of_the_node_read_from_another_namespace(start_agent, nat_host,
                                                           kubelet_certs, api_token):
    """An agent outside the node's namespace (as without host networking) with
    --conntrack-netns naming the node's: it says in one info line which namespace it reads, and
    its Establish and Accept events carry the backend and original conntrack -L shows there."""
    n = Node("nftables", kubelet_certs, api_token)
    try:
        n.create(stub_in_node=False)
        path = f"/run/netns/{n.net.ns['node']}"
        n.agent = start_agent(*agent_flags(n.stub, api_token, kubelet_certs),
                              "--conntrack-netns", path)
        wait_synced(n.agent)
        lines = log_lines(n.agent, r"conntrack: .*")
        assert len(lines) == 1 and f"the network namespace {path}" in lines[0], lines
        for family in FAMILIES:
            establish = connect(n, "cli", SERVICE["cart"].vips[family], SERVICE_PORT)
            entry = truth(n, establish)
            what = f"--conntrack-netns {family} connection {entry.orig}"
            assert_backend(establish, entry, what)
            assert_original(accept_of(n, entry), entry, f"{what} (the backend's Accept)")
    finally:
        n.cleanup()


RULES = """\
egress:
  rules:
  - rule: CartOnItsSecondReplica
    event: peer_service == "cart" AND peer_pod == "{be2}"
  - rule: Cart
    event: peer_kind == "service" AND peer_service == "cart" AND peer_workload == "cart" AND peer_label["app"] == "cart"
"""


def test_rules_read_the_backend_pod(fresh_node, tmp_path):
    """Egress rules on peer_pod, peer_workload and peer_label read the backend pod of a
    translated connection, while peer_kind and peer_service stay the dialed service's: each
    connection to shop/cart's cluster IP (IPv4 and IPv6) is named CartOnItsSecondReplica
    exactly when conntrack -L shows it reached be2, else Cart; its Close gets the same rule."""
    config = tmp_path / "netmon.yaml"
    config.write_text(RULES.format(be2=BACKENDS["be2"]["name"]))
    n = fresh_node("iptables", "--config", str(config))
    rules = set()
    for family in FAMILIES:
        for _ in range(CONNECTIONS // 2):
            establish = connect(n, "cli", SERVICE["cart"].vips[family], SERVICE_PORT)
            entry = truth(n, establish)
            want = ("CartOnItsSecondReplica" if ROLE_OF[entry.reply[0]] == "be2" else "Cart")
            assert establish.get("rule") == want, f"{entry.line}\n{show(establish)}"
            assert close_of(n, establish).get("rule") == want, entry.line
            rules.add(want)
    assert rules == {"Cart", "CartOnItsSecondReplica"}, rules


# ---------------------------------------------------------------------------------------------
# Without NAT, without conntrack


def error_lines(agent):
    """The agent's warning and error lines."""
    return [line for line in agent.stderr_text().splitlines()
            if re.match(r"\S+ netmon (?:warn|error): ", line)]


@pytest.mark.parametrize("rules", ["never", "flushed"])
def test_no_nat_no_backend_no_error(fresh_node, rules):
    """A node without NAT: no rules ever (no conntrack in its namespace at all), or
    kube-proxy's iptables rules flushed (conntrack tracks, translates nothing). Connections
    between pods (IPv4 and IPv6) have no backend and no original, the agent logs no warning or
    error, and each lookup counts as not_translated."""
    n = fresh_node(None if rules == "never" else "iptables")
    if rules == "flushed":
        n.net.flush_rules()
    events = []
    for family in FAMILIES:
        be1 = kube_proxy_net.canonical(POD_IPS["be1"][family])
        for _ in range(3):
            establish = connect(n, "cli", be1, TARGET_PORT)
            ne = establish["network_event"]
            key = (ne["saddr"], ne["sport"], ne["daddr"], ne["dport"])
            entry = n.net.conntrack_by_orig(family).get(key)
            assert entry is None or not (entry.dnat or entry.snat), entry.line
            accept = only(n.agent.wait_events(kind=ACCEPT, pid=n.listeners["be1"].pid,
                                              saddr=be1, sport=TARGET_PORT, daddr=ne["saddr"],
                                              dport=ne["sport"]), "Accept in be1")
            events += [establish, accept, close_of(n, establish), close_of(n, accept)]
    n.agent.sync()
    for event in events:
        assert "backend" not in peer_of(event) and "original" not in peer_of(event), show(event)
    counts = n.agent.nat_lookups()
    assert counts.get("translated", 0) == 0, counts
    assert counts.get("not_translated", 0) >= len(events), (counts, len(events))
    assert error_lines(n.agent) == [], "\n".join(error_lines(n.agent))


def test_conntrack_off_one_info_line_no_backend(fresh_node):
    """--conntrack=false on a node that translates: one info line "conntrack: ...", no backend
    on a connection to a service, no warning or error."""
    n = fresh_node("nftables", "--conntrack=false")
    establish = connect(n, "cli", SERVICE["cart"].vips["ipv4"], SERVICE_PORT)
    entry = truth(n, establish)
    assert entry.dnat, entry.line  # the node did translate it
    assert "backend" not in peer_of(establish), show(establish)
    assert len(log_lines(n.agent, r"conntrack: .*")) == 1, n.agent.stderr_text()
    assert log_lines(n.agent, r"conntrack: .*")[0].split(" netmon ")[1].startswith("info:")
    assert error_lines(n.agent) == [], "\n".join(error_lines(n.agent))
