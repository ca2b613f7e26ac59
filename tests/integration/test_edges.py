"""Edge metrics (issue #22) end to end: the real agent counts workload-to-workload edges, and the
test checks every counter of its own edges exactly, against the connections it made, the bytes it
sent each way and the agent's own Close events.

The pods are test_peers.py's PeerCluster (test_kubernetes.py's fake pods: a kubelet-shaped cgroup
and a network namespace each, dual-stack, the client's default routes into the server's
namespace, which holds a service's cluster IPs, another node's and this node's Node addresses and
external addresses on its loopback), with the kubelet stub and the API server stub
(kube_api_stub.py) of that module. Added here:
  report   a CronJob's pod (Job report-28391234) listed by the kubelet, in a network namespace of
           its own joined to the server's by a veth pair (10.212.n.2, fd00:212:n::2; the
           server's end .1), its default routes into the server's namespace;
  stray    a container cgroup in the client's namespace whose pod the kubelet does not list;
  a host process (a copy of the Python binary named nmedge-<pid>: its edges' workload label is
           that name) in the client's namespace but in this test's (host) cgroup.
The server pod db-0 runs EDGE_SERVER on LABELLED_PORT and UNLISTED_PORT; REFUSED_PORT has no
listener. The agent runs with --metrics-edge-ports LABELLED_PORT,REFUSED_PORT, so UNLISTED_PORT
(5432, in the default list) carries an empty port label.

The cap, idle-removal and edges-off tests need no pods: host processes' loopback connections are
edges too. There, other programs on the host make edges as well, so the cap test derives every
edge series from the agent's own event stream at a consistent cut (test_metrics.scrape_at_cut)
with EdgeOracle, which applies the contract (the first max_edges edges are held, an open event of
a new edge while the table is full goes to its direction's overflow series, a Close goes where
its connection's open went).
"""

import ipaddress
import json
import os
import shutil
import socket
import sys
import textwrap
import time

import pytest

import kube_proxy_net
import test_nat
from conftest import require_privileges, skip_or_fail, wait_for
from kube_api_stub import PODS
from test_kubernetes import (  # noqa: F401 - fixtures: k8s_host, kubelet, kubelet_certs, ...
    NAMESPACE,
    SERVER_PORT,
    FakePod,
    fake_pods,
    k8s_host,
    kubelet,
    kubelet_certs,
    nc_telnet_between_pods,
    netns_listening,
    synced_pattern,
    token_file,
    wait_exit,
    wait_log,
)
from test_lifecycle import ACCEPT, CLOSE, FAILED, run_cli
from test_metrics import (  # noqa: F401 - kubelet_token: a fixture
    Scrape,
    conn_labels,
    kubelet_token,
    pods_agent,
    promtool_check,
    scrape,
    scrape_at_cut,
)
from test_peers import (  # noqa: F401 - api_token, cluster, kube_api: fixtures
    BIND_LISTENERS,
    NODE_B,
    SYNC_TIMEOUT,
    PeerCluster,
    api_token,
    kube_api,
    peer_flags,
    synced_line,
    watched,
)

LABELLED_PORT = SERVER_PORT  # 7878: in --metrics-edge-ports
UNLISTED_PORT = 5432  # in the default list, not in the one these tests give
REFUSED_PORT = 9093  # in the list; nothing listens there
EDGE_PORTS = f"{LABELLED_PORT},{REFUSED_PORT}"
WARM_PORT = 9  # refused probes that wait for the peer names
NAME_TIMEOUT = 20.0  # seconds for the peer index to name every address
METRICS_TIMEOUT = 10.0  # seconds for /metrics to show what the events show
IDLE_SECONDS = 2  # --metrics-edge-idle-seconds of the removal test
REMOVAL_TIMEOUT = 20.0  # seconds for an idle edge to go (idle time plus the agent's sweep)

EDGE_LABELS = ("direction", "namespace", "workload", "workload_kind", "peer_kind",
               "peer_namespace", "peer_workload", "peer_service", "peer_node", "peer_network",
               "port")
COUNTERS = ("netmon_edge_connections_total", "netmon_edge_bytes_sent_total",
            "netmon_edge_bytes_received_total", "netmon_edge_retransmits_total")
FAILURES = "netmon_edge_connection_failures_total"
RTT = "netmon_edge_rtt_seconds"
DURATION = "netmon_edge_connection_duration_seconds"
HISTOGRAMS = {RTT: ["0.0001", "0.0005", "0.001", "0.005", "0.01", "0.025", "0.05", "0.1",
                    "0.25", "1"],
              DURATION: ["0.01", "0.1", "1", "10", "60", "300", "1800", "7200"]}
EDGE_FAMILIES = (*COUNTERS, FAILURES, *(h + s for h in HISTOGRAMS
                                        for s in ("_bucket", "_count", "_sum")))
DEFAULT_EDGE_PORTS = {22, 53, 80, 443, 2379, 3306, 5432, 5672, 6379, 6443, 8080, 8443, 9090,
                      9092, 9200, 10250, 11211, 27017}
LISTED_ERRORS = {"ECONNREFUSED", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "ECONNRESET",
                 "ECONNABORTED", "EACCES", "EPERM", "ENETDOWN", "EHOSTDOWN"}

# The server pod's program: accepts on every port given (IPv4 and IPv6); on each connection reads
# an 8-byte header (request size, reply size), the rest of the request, answers the reply, and
# closes once the client has closed.
EDGE_SERVER = textwrap.dedent("""\
    import socket, struct, sys, threading
    def serve(conn):
        with conn:
            conn.settimeout(30)
            def exactly(n):
                data = b""
                while len(data) < n:
                    chunk = conn.recv(min(65536, n - len(data)))
                    if not chunk:
                        raise EOFError(len(data))
                    data += chunk
                return data
            try:
                request, reply = struct.unpack("!II", exactly(8))
                exactly(request - 8)
                conn.sendall(b"s" * reply)
                conn.recv(1)
            except (OSError, EOFError):
                pass
    def accept(listener):
        while True:
            threading.Thread(target=serve, args=(listener.accept()[0],), daemon=True).start()
""") + BIND_LISTENERS + textwrap.dedent("""\
    for s in listeners[1:]:
        threading.Thread(target=accept, args=(s,), daemon=True).start()
    accept(listeners[0])
""")

# The clients' program: argv[1] is a JSON list of connections {addr, port, req, rep}; each
# is made in turn, sends `req` bytes (the header first),
# reads the `rep` bytes of the reply, and closes first. Prints one JSON line: per connection
# {"sport": local port} or {"error": errno name}.
EDGE_CLIENT = textwrap.dedent("""\
    import errno, json, socket, struct, sys
    results = []
    for c in json.loads(sys.argv[1]):
        family = socket.AF_INET6 if ":" in c["addr"] else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(10)
        try:
            s.connect((c["addr"], c["port"]))
        except OSError as e:
            results.append({"error": errno.errorcode.get(e.errno, str(e))})
            s.close()
            continue
        sport = s.getsockname()[1]
        s.sendall(struct.pack("!II", c["req"], c["rep"]) + b"c" * (c["req"] - 8))
        got = 0
        while got < c["rep"]:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += len(chunk)
        s.close()
        results.append({"sport": sport, "received": got})
    print(json.dumps(results), flush=True)
""")


def edge(direction, namespace="", workload="", workload_kind="", peer_kind="",
         peer_namespace="", peer_workload="", peer_service="", peer_node="", peer_network="",
         port=""):
    """An edge's labels, as the contract lists them."""
    return {"direction": direction, "namespace": namespace, "workload": workload,
            "workload_kind": workload_kind, "peer_kind": peer_kind,
            "peer_namespace": peer_namespace, "peer_workload": peer_workload,
            "peer_service": peer_service, "peer_node": peer_node, "peer_network": peer_network,
            "port": port}


def overflow_edge(direction):
    return edge(direction, workload_kind="Overflow", peer_kind="overflow")


def key_of(labels):
    return tuple(labels[k] for k in EDGE_LABELS)


def edge_series(s):
    """{edge key: labels} of every edge in scrape `s` (any edge family)."""
    found = {}
    for name, labels, _ in s.samples:
        if name in EDGE_FAMILIES:
            found[key_of(labels)] = {k: labels[k] for k in EDGE_LABELS}
    return found


def gauge(s, name):
    return s.value(name, {})


# ---------------------------------------------------------------------------------------------
# What the agent should count: from the connections made, or from its own events


class EdgeCounts:
    """What one edge series should hold."""

    def __init__(self):
        self.connections = 0
        self.failures = {}  # error -> count
        self.sent = 0
        self.received = 0
        self.retransmits = 0
        self.rtts_us = []  # srtt_us of each Close
        self.durations_ms = []  # duration_ms of each Close

    def add_close(self, ne):
        self.sent += ne["bytes_sent"]
        self.received += ne["bytes_received"]
        self.retransmits += ne["retransmits"]
        self.rtts_us.append(ne["srtt_us"])
        self.durations_ms.append(ne["duration_ms"])

    def __repr__(self):
        return (f"EdgeCounts(connections={self.connections}, failures={self.failures}, "
                f"sent={self.sent}, received={self.received}, "
                f"retransmits={self.retransmits}, closes={len(self.rtts_us)})")


def assert_edge(s, labels, counts, what=""):
    """Every edge family of scrape `s` holds exactly `counts` for the edge `labels`: the
    counters, a failure series per error that happened (none for others), and both histograms
    (count, +Inf, each bucket between the Close events' values, the sum)."""
    where = f"{what} edge {json.dumps(labels)}: expected {counts}\n"
    for name, want in (("netmon_edge_connections_total", counts.connections),
                       ("netmon_edge_bytes_sent_total", counts.sent),
                       ("netmon_edge_bytes_received_total", counts.received),
                       ("netmon_edge_retransmits_total", counts.retransmits)):
        got = s.value(name, labels, 0)
        assert got == want, f"{where}{name} = {got}, not {want}"
    failures = {l["error"]: v for l, v in s.find(FAILURES, **labels)}
    assert failures == counts.failures, f"{where}{FAILURES}: {failures}"
    closes = len(counts.rtts_us)
    for name, values, unit in ((RTT, counts.rtts_us, 1e-6), (DURATION, counts.durations_ms,
                                                             1e-3)):
        assert s.value(name + "_count", labels, 0) == closes, f"{where}{name}_count"
        assert s.value(name + "_bucket", {**labels, "le": "+Inf"}, 0) == closes, (
            f"{where}{name} +Inf")
        # The events carry the RTT in the agent's own microseconds, the duration in whole
        # milliseconds (cut): the agent's duration may be up to 1 ms more.
        for bound in HISTOGRAMS[name]:
            if name == RTT:  # exact: the agent compares srtt_us / 1e6 with the bound
                low = high = sum(1 for v in values if v / 1e6 <= float(bound))
            else:  # the agent's duration is in [ms, ms + 1) milliseconds
                low = sum(1 for v in values if (v + 1) / 1e3 <= float(bound))
                high = sum(1 for v in values if v / 1e3 <= float(bound))
            got = s.value(name + "_bucket", {**labels, "le": bound}, 0)
            assert low <= got <= high, f"{where}{name} le={bound}: {got} not in [{low}, {high}]"
        total = s.value(name + "_sum", labels, 0)
        slack = 0 if name == RTT else 1
        low, high = sum(values) * unit, (sum(values) + slack * len(values)) * unit
        assert low - 1e-6 <= total <= high + 1e-6, f"{where}{name}_sum {total} [{low}, {high}]"
        if closes:
            les = sorted(l["le"] for l, _ in s.find(name + "_bucket", **labels))
            assert les == sorted([*HISTOGRAMS[name], "+Inf"]), f"{where}{name} buckets {les}"


def assert_labels_bounded(s, own_addresses=(), client_ports=()):
    """Edge series carry exactly the contract's labels (plus `error` and `le`), never an address
    nor a client port."""
    for name, labels, _ in s.samples:
        if not name.startswith("netmon_edge_") or name in (
                "netmon_edge_series", "netmon_edge_series_limit",
                "netmon_edge_series_removed_total", "netmon_edge_series_overflow_total"):
            continue
        extra = {"error"} if name == FAILURES else {"le"} if name.endswith("_bucket") else set()
        assert set(labels) == set(EDGE_LABELS) | extra, (name, labels)
        for k, v in labels.items():
            if k in ("le", "error"):
                continue
            try:
                ipaddress.ip_address(v)
                is_address = True
            except ValueError:
                is_address = False
            assert not is_address, f"an address as a label value: {name} {labels}"
            assert v not in own_addresses, (name, labels)
            assert k == "port" or v not in {str(p) for p in client_ports}, (name, labels)
    for port in client_ports:
        assert f'port="{port}"' not in s.text, f"client port {port} as a port label"


def edge_key_of_event(event, ports):
    """The edge labels the contract gives an event, from its own fields."""
    ne = event["network_event"]
    kind = ne["type"]
    direction = ne["direction"] if kind == CLOSE else "inbound" if kind == ACCEPT else "outbound"
    pod = event.get("pod")
    process = event.get("process")
    if pod:
        namespace, workload, workload_kind = (pod["namespace"], pod["workload"],
                                              pod["workload_kind"])
    elif process and process.get("container_id"):
        namespace, workload, workload_kind = "", "", "Unknown"
    else:
        assert process, f"an event without a process: the edge's name is the kernel's comm, " \
                        f"which the event does not carry: {json.dumps(event)}"
        namespace, workload, workload_kind = "", process["filename"], "Host"
    peer = ne.get("peer")
    fields = {"peer_kind": "unknown"}
    if peer:
        named = peer.get("backend") or peer
        fields = {"peer_kind": named["kind"]}
        if named["kind"] == "pod":
            fields.update(peer_namespace=named.get("namespace", ""),
                          peer_workload=named.get("workload", ""))
        elif named["kind"] == "service":
            fields.update(peer_namespace=named["namespace"], peer_service=named["name"])
        elif named["kind"] == "node":
            fields.update(peer_node=named["name"])
        elif named["kind"] == "external":
            fields.update(peer_network=named["network"])
        if peer.get("backend") and peer["kind"] == "service":
            fields.update(peer_service=peer["name"])
    server_port = ne["sport"] if direction == "inbound" else ne["dport"]
    return edge(direction, namespace, workload, workload_kind,
                port=str(server_port) if server_port in ports else "", **fields)


class EdgeOracle:
    """The edge series a stream of events makes under the contract, with a table of `limit`
    edges: an open event (Establish, Accept, Failed) of an edge not held while the table is full
    counts in its direction's overflow series; a Close counts where its connection's open event
    counted (by cookie), or, without one (opened before the agent), as an open would.
    netmon_edge_series_overflow_total{direction} counts every event counted in an overflow
    series, Closes included."""

    def __init__(self, events, limit, ports):
        self.limit = limit
        self.held = {}  # key -> labels, in the order they came
        self.labels = {}  # key -> labels of every series (held edges and overflow series)
        self.counts = {}  # key -> EdgeCounts
        self.overflowed = {"outbound": 0, "inbound": 0}
        where = {}  # cookie -> labels of the series its open event counted in
        for event in events:
            ne = event["network_event"]
            labels = edge_key_of_event(event, ports)
            if ne["type"] == CLOSE:
                labels = where.pop(ne["cookie"], None) or self._place(labels)
                self._series(labels).add_close(ne)
                continue
            labels = self._place(labels)
            counts = self._series(labels)
            if ne["type"] == FAILED:
                error = ne["error"] if ne["error"] in LISTED_ERRORS else "other"
                counts.failures[error] = counts.failures.get(error, 0) + 1
            else:
                counts.connections += 1
                where[ne["cookie"]] = labels

    def _place(self, labels):
        """The series an event of edge `labels` counts in: its own (taking a free place in the
        table when new), or its direction's overflow series when the table is full."""
        key = key_of(labels)
        if key in self.held:
            return labels
        if len(self.held) < self.limit:
            self.held[key] = labels
            return labels
        return overflow_edge(labels["direction"])

    def _series(self, labels):
        key = key_of(labels)
        if labels["workload_kind"] == "Overflow":
            self.overflowed[labels["direction"]] += 1
        self.labels[key] = labels
        return self.counts.setdefault(key, EdgeCounts())

    def assert_matches(self, s, what):
        series = edge_series(s)
        assert set(series) == set(self.counts), (
            f"{what}: series {sorted(series)} != expected {sorted(self.counts)}")
        for key, counts in self.counts.items():
            assert_edge(s, self.labels[key], counts, what)
        for direction, n in self.overflowed.items():
            got = s.value("netmon_edge_series_overflow_total", {"direction": direction}, 0)
            assert got == n, f"{what}: overflow_total {direction} {got} != {n}"


# ---------------------------------------------------------------------------------------------
# The pods


class EdgeCluster(PeerCluster):
    """PeerCluster with a CronJob's pod (a namespace of its own) and a stray container in the
    client's namespace (see the module docstring)."""

    def __init__(self, mount):
        super().__init__(mount)
        self.report = FakePod(
            name="report-28391234-5xq7z", labels={"job-name": "report-28391234"},
            owner=("Job", "report-28391234"), workload=("report", "CronJob"),
            container_name="report", image="registry.example/report:1.0",
            qos_class="BestEffort", layout="cgroupfs")
        self.stray = FakePod(
            name="stray", labels={}, owner=None, workload=("stray", "Pod"),
            container_name="stray", image="registry.example/stray:1.0",
            qos_class="BestEffort", layout="systemd")

    def create(self):
        super().create()  # every address in self.addr but the pods' goes on the server's lo
        n = self.net
        for family, address in (("ipv4", f"10.212.{n}.2"), ("ipv6", f"fd00:212:{n:x}::2")):
            self.addr[family]["report"] = ipaddress.ip_address(address).compressed
        self.add_pod(self.stray)
        r, s = self.report, self.server
        # The report pod: a namespace of its own, joined to the server's by a veth pair (eth1
        # there), its default routes into the server's namespace like the client's.
        r.cgroup = os.path.join(self.top, *r.cgroup_path())
        os.makedirs(r.cgroup)
        r.netns = s.netns[:-len("-srv")]  # nmk8s-<pid>-<seq>: clean_leftovers knows it
        r.address = self.addr["ipv4"]["report"]
        self._ip("netns", "add", r.netns)
        self.netns_names.append(r.netns)
        self._ip("-n", s.netns, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0",
                 "netns", r.netns)
        n = self.net
        for ns, dev, v4, v6 in ((s.netns, "eth1", f"10.212.{n}.1", f"fd00:212:{n:x}::1"),
                                (r.netns, "eth0", f"10.212.{n}.2", f"fd00:212:{n:x}::2")):
            self._ip("-n", ns, "addr", "add", f"{v4}/30", "dev", dev)
            self._ip("-n", ns, "-6", "addr", "add", f"{v6}/64", "dev", dev, "nodad")
            self._ip("-n", ns, "link", "set", dev, "up")
        self._ip("-n", r.netns, "link", "set", "lo", "up")
        self._ip("-n", r.netns, "route", "add", "default", "via", f"10.212.{n}.1")
        self._ip("-n", r.netns, "-6", "route", "add", "default", "via", f"fd00:212:{n:x}::1")

    def report_item(self):
        item = self.report.item()
        item["status"]["podIPs"] = [{"ip": a} for a in self.both("report")]
        return item


@pytest.fixture
def edge_cluster(k8s_host):
    c = EdgeCluster(k8s_host)
    try:
        c.create()
        yield c
    finally:
        c.cleanup()


@pytest.fixture
def host_binary(tmp_path):
    """A copy of the Python interpreter with a name of its own: a host process running it is
    the host workload of that name."""
    path = tmp_path / f"nmedge-{os.getpid()}"
    shutil.copy2(os.path.realpath(sys.executable), path)
    return str(path)


def start_edge_agent(start_agent, cluster, kubelet, token_file, kubelet_certs, stub, api_token,
                     extra=()):
    pods = kubelet([cluster.item(cluster.server), cluster.item(cluster.client),
                    cluster.report_item()])
    cluster.kubelet_stub = pods
    agent = start_agent(*peer_flags(cluster, pods, token_file, kubelet_certs, stub.url,
                                    api_token), "--metrics-edge-ports", EDGE_PORTS, *extra)
    wait_log(agent, synced_pattern(pods.url))
    for resource in watched():
        wait_log(agent, synced_line(resource), timeout=SYNC_TIMEOUT)
    return agent


def run_clients(start, connections, binary=sys.executable):
    """EDGE_CLIENT with `connections` through `start(argv)` (a pod's or the host's); waits for
    it and returns (its pid, its results)."""
    proc = start([binary, "-c", EDGE_CLIENT, json.dumps(connections)])
    code = wait_exit(proc, timeout=60)
    out, err = proc.communicate(timeout=5)
    assert code == 0, f"the client exited with {code}: {err.decode(errors='replace')}"
    results = json.loads(out)
    assert len(results) == len(connections), results
    return proc.pid, results


def warm_up(cluster, agent, binary, expected):
    """Refused connects on WARM_PORT from a host process (`binary`) in the client's namespace
    (and, for the report pod's addresses, in the server's) until every Failed event names its
    peer as `expected` says ({address: (kind, name-ish field)}): the peer index is complete
    before the counted connections. Their edges are the warm-up binary's own."""
    seen = {}

    def named():
        for netns, addresses in ((cluster.client.netns, [a for a in expected if a not in
                                                         cluster.both("report")]),
                                 (cluster.server.netns, cluster.both("report"))):
            conns = [{"addr": a, "port": WARM_PORT, "req": 8, "rep": 0} for a in addresses]
            pid, results = run_clients(
                lambda argv, ns=netns: cluster.processes.start(["ip", "netns", "exec", ns,
                                                                *argv]), conns, binary)
            assert all(r.get("error") == "ECONNREFUSED" for r in results), results
            for a in addresses:
                failed = agent.wait_events(kind=FAILED, pid=pid, daddr=a, dport=WARM_PORT)
                seen[a] = failed[0]["network_event"].get("peer")
        wrong = {a: seen.get(a) for a, want in expected.items()
                 if not seen.get(a) or (seen[a]["kind"], seen[a].get("workload",
                                                                     seen[a].get("name")))
                 != want}
        if wrong:
            time.sleep(0.3)
        return not wrong

    wait_for(named, timeout=NAME_TIMEOUT, interval=0,
             what=lambda: f"the peer names of {expected}; seen {json.dumps(seen)}")


def wait_closes(agent, made, timeout=20.0):
    """Both Close events of every connection in `made` ((client address, sport, server address,
    port)); returns {connection: (client Close, server Close)}."""
    def all_closed():
        closes = {}
        for conn in made:
            caddr, sport, saddr, port = conn
            client = agent.events(kind=CLOSE, saddr=caddr, sport=sport, daddr=saddr, dport=port)
            server = agent.events(kind=CLOSE, saddr=saddr, sport=port, daddr=caddr, dport=sport)
            if len(client) != 1 or len(server) != 1:
                return None
            closes[conn] = (client[0], server[0])
        return closes

    return wait_for(all_closed, timeout=timeout, interval=0.1,
                    what=lambda: f"the Close events of {len(made)} connections")


# ---------------------------------------------------------------------------------------------
# The scenario with pods


def test_edges_of_pods_services_nodes_hosts_and_externals(
        start_agent, edge_cluster, kubelet, token_file, kubelet_certs, kube_api, api_token,
        host_binary, tmp_path):
    """Over IPv4 and IPv6 (one edge for both): web (Deployment) calls db (StatefulSet) on a
    listed and an unlisted port, service db's cluster IP, another node, this node, an external
    class and the internet, and is refused on a listed port; report (CronJob) and a host
    process call db; a container of an unknown pod calls db. Every edge series of these
    workloads, outbound and inbound, holds exactly the connections, bytes each way, failures
    by error and histogram counts made; the labels are the contract's, never an address or a
    client port; promtool accepts the scrape."""
    cluster = edge_cluster
    s, c, r = cluster.server, cluster.client, cluster.report
    stub = kube_api(cluster)
    stub.put(PODS, {"kind": "Pod", "apiVersion": "v1", **cluster.report_item()})
    agent = start_edge_agent(start_agent, cluster, kubelet, token_file, kubelet_certs, stub,
                             api_token)
    server = cluster.start(s, [sys.executable, "-c", EDGE_SERVER, str(LABELLED_PORT),
                               str(UNLISTED_PORT)])
    for port in (LABELLED_PORT, UNLISTED_PORT):
        wait_for(lambda: netns_listening(server.pid, s.netns, port),
                 what=f"the edge server on {port}")

    warm_binary = str(tmp_path / f"nmwarm-{os.getpid()}")
    shutil.copy2(host_binary, warm_binary)
    expected_names = {}
    for f in PeerCluster.FAMILIES:
        a = cluster.addr[f]
        expected_names.update({a["server"]: ("pod", "db"), a["vip"]: ("service", "db"),
                               a["node_b"]: ("node", NODE_B), a["this_node"]: ("host", None),
                               a["docs"]: ("external", None), a["internet"]: ("external", None),
                               a["report"]: ("pod", "report")})
    warm_up(cluster, agent, warm_binary, expected_names)

    # The connections: (who, family, target role, port, count).
    plan = [
        ("web", "ipv4", "server", LABELLED_PORT, 3), ("web", "ipv6", "server", LABELLED_PORT, 2),
        ("web", "ipv4", "server", UNLISTED_PORT, 1), ("web", "ipv6", "server", UNLISTED_PORT, 1),
        ("web", "ipv4", "vip", LABELLED_PORT, 1), ("web", "ipv6", "vip", LABELLED_PORT, 1),
        ("web", "ipv4", "docs", LABELLED_PORT, 1), ("web", "ipv6", "docs", LABELLED_PORT, 1),
        ("web", "ipv4", "internet", LABELLED_PORT, 1),
        ("web", "ipv4", "node_b", LABELLED_PORT, 1),
        ("web", "ipv6", "this_node", LABELLED_PORT, 1),
        ("web", "ipv4", "server", REFUSED_PORT, 1), ("web", "ipv6", "server", REFUSED_PORT, 1),
        ("report", "ipv4", "server", LABELLED_PORT, 1),
        ("report", "ipv6", "server", LABELLED_PORT, 1),
        ("stray", "ipv4", "server", LABELLED_PORT, 1),
        ("host", "ipv6", "server", LABELLED_PORT, 1),
    ]
    db = {"peer_kind": "pod", "peer_namespace": NAMESPACE, "peer_workload": "db"}
    web = dict(namespace=NAMESPACE, workload="web", workload_kind="Deployment")
    out_peer = {"server": db,
                "vip": {"peer_kind": "service", "peer_namespace": NAMESPACE,
                        "peer_service": "db"},
                "docs": {"peer_kind": "external", "peer_network": "docs"},
                "internet": {"peer_kind": "external", "peer_network": "internet"},
                "node_b": {"peer_kind": "node", "peer_node": NODE_B},
                "this_node": {"peer_kind": "host"}}
    this_end = {"web": web,
                "report": dict(namespace=NAMESPACE, workload="report", workload_kind="CronJob"),
                "stray": dict(workload_kind="Unknown"),
                "host": dict(workload=os.path.basename(host_binary), workload_kind="Host")}
    # The server's peer: by the client's source address (the stray container and the host
    # process use the web pod's).
    in_peer = {"web": {"peer_kind": "pod", "peer_namespace": NAMESPACE, "peer_workload": "web"},
               "report": {"peer_kind": "pod", "peer_namespace": NAMESPACE,
                          "peer_workload": "report"}}
    in_peer["stray"] = in_peer["host"] = in_peer["web"]
    db_end = dict(namespace=NAMESPACE, workload="db", workload_kind="StatefulSet")

    expected = {}  # edge key -> (labels, EdgeCounts)

    def counts_of(labels):
        return expected.setdefault(key_of(labels), (labels, EdgeCounts()))[1]

    starters = {"web": lambda argv: cluster.start(c, argv),
                "report": lambda argv: cluster.start(r, argv),
                "stray": lambda argv: cluster.start(cluster.stray, argv),
                "host": lambda argv: cluster.start_outside_pod(c, argv)}
    made = []  # (client addr, sport, server addr, port) of the connections that were made
    edge_of = {}  # that -> (outbound labels, inbound labels)
    client_ports = set()
    index = 0
    for who in ("web", "report", "stray", "host"):
        conns, meta = [], []
        for who_, family, role, port, count in plan:
            if who_ != who:
                continue
            for _ in range(count):
                req, rep = 100 + 37 * index, 1000 + 53 * index
                index += 1
                conns.append({"addr": cluster.addr[family][role], "port": port, "req": req,
                              "rep": rep})
                meta.append((family, role, port, req, rep))
        pid, results = run_clients(starters[who], conns,
                                   host_binary if who == "host" else sys.executable)
        for (family, role, port, req, rep), result in zip(meta, results):
            port_label = str(port) if port in (LABELLED_PORT, REFUSED_PORT) else ""
            out_labels = edge("outbound", **this_end[who], **out_peer[role], port=port_label)
            if port == REFUSED_PORT:
                assert result == {"error": "ECONNREFUSED"}, result
                counts = counts_of(out_labels)
                counts.failures["ECONNREFUSED"] = counts.failures.get("ECONNREFUSED", 0) + 1
                continue
            assert result.get("received") == rep, (who, family, role, port, result)
            client_ports.add(result["sport"])
            caddr = cluster.addr[family]["report" if who == "report" else "client"]
            conn = (caddr, result["sport"], cluster.addr[family][role], port)
            made.append(conn)
            in_labels = edge("inbound", **db_end, **in_peer[who], port=port_label)
            edge_of[conn] = (out_labels, in_labels, req, rep)

    closes = wait_closes(agent, made)
    for conn, (out_labels, in_labels, req, rep) in edge_of.items():
        client_close, server_close = closes[conn]
        for labels, close, sent, received in ((out_labels, client_close, req, rep),
                                              (in_labels, server_close, rep, req)):
            ne = close["network_event"]
            assert ne["bytes_received"] == received, json.dumps(close)
            if ne["retransmits"] == 0:
                assert ne["bytes_sent"] == sent, json.dumps(close)
            counts = counts_of(labels)
            counts.connections += 1
            counts.add_close(ne)
    agent.sync()
    text = agent.published_metrics_text()
    m = Scrape(text)
    for labels, counts in expected.values():
        assert_edge(m, labels, counts, "pods")
    # No other edge of these workloads (the warm-up's are the warm-up binary's).
    mine = {k for k, (labels, _) in expected.items()}
    ours = {k for k, labels in edge_series(m).items()
            if labels["namespace"] == NAMESPACE or labels["workload_kind"] == "Unknown"
            or labels["workload"] == os.path.basename(host_binary)}
    assert ours == mine, f"unexpected edges: {ours - mine}; missing: {mine - ours}"
    own_addresses = {a for f in PeerCluster.FAMILIES for a in cluster.addr[f].values()}
    assert_labels_bounded(m, own_addresses, client_ports)
    assert gauge(m, "netmon_edge_series_limit") == 1000

    def held_equals_series():  # the gauge against the series of the same scrape
        m_ = scrape(agent)
        held = [k for k, labels in edge_series(m_).items()
                if labels["workload_kind"] != "Overflow"]
        return gauge(m_, "netmon_edge_series") == len(held) >= len(mine)

    wait_for(held_equals_series, timeout=METRICS_TIMEOUT, what="netmon_edge_series == series")
    assert m.value("netmon_edge_series_overflow_total", {"direction": "outbound"}, 0) == 0
    assert m.value("netmon_edge_series_overflow_total", {"direction": "inbound"}, 0) == 0
    assert gauge(m, "netmon_ready") == 1
    promtool_check(text)
    print(f"{len(mine)} edges, {len(made)} connections, {index - len(made)} refused")
    server.kill()


# ---------------------------------------------------------------------------------------------
# Through a service's cluster IP that kube-proxy's rules translate (test_nat.py's node)


def test_translated_service_edges_name_the_backend_workload(kubelet_certs, tmp_path):
    """In kube_proxy_net's node (nftables mode), nc in the client's namespace dials the cluster
    IPs of shop/cart (two backends of Deployment cart), shop/checkout and billing/invoices (both
    on backend 1), over IPv4 and IPv6, and shop/orders, whose backend refuses. The outbound
    edges name the backend's workload (cart, namespace shop: the backend pod's, also for
    billing's service) and the dialed service, port 80 (default list): exact connections,
    failures and histogram counts. The backends' inbound edges are exactly what their Accept
    and Close events add up to (port 8080, in the default list)."""
    require_privileges()
    missing = kube_proxy_net.missing_tools()
    if missing:
        skip_or_fail(f"not installed: {', '.join(missing)} (scripts/install-deps.sh)")
    kube_proxy_net.clean_leftovers()
    token = tmp_path / "api-token"
    token.write_text("edge-api-token\n")
    token.chmod(0o600)
    node = test_nat.Node("nftables", kubelet_certs, token)
    try:
        node.create()
        node.agent = test_nat.start_node_agent(node.net, node.stub, token, kubelet_certs)
        svc = test_nat.SERVICE
        dialed = [("cart", 3), ("checkout", 1), ("invoices", 1)]
        expected = {}  # key -> (labels, EdgeCounts)
        opened = []
        for family in kube_proxy_net.FAMILIES:
            for name, count in dialed:
                for _ in range(count):
                    opened.append((svc[name], test_nat.connect(
                        node, "cli", svc[name].vips[family], test_nat.SERVICE_PORT)))
        failed = [test_nat.connect_refused(node, "cli", svc["orders"].vips[f],
                                           test_nat.SERVICE_PORT)
                  for f in kube_proxy_net.FAMILIES]
        nc = opened[0][1]["process"]["filename"]
        assert nc == "nc.openbsd", opened[0][1]

        def out_edge(service):
            return edge("outbound", workload=nc, workload_kind="Host", peer_kind="pod",
                        peer_namespace="shop", peer_workload="cart", peer_service=service.name,
                        port=str(test_nat.SERVICE_PORT))

        def counts_of(labels):
            return expected.setdefault(key_of(labels), (labels, EdgeCounts()))[1]

        for service, establish in opened:
            labels = out_edge(service)
            assert edge_key_of_event(establish, DEFAULT_EDGE_PORTS) == labels, (
                test_nat.show(establish))
            counts_of(labels).connections += 1
            close = test_nat.close_of(node, establish)
            counts_of(labels).add_close(close["network_event"])
            accept = test_nat.accept_of(node, test_nat.truth(node, establish))
            in_labels = edge_key_of_event(accept, DEFAULT_EDGE_PORTS)
            assert in_labels["port"] == str(test_nat.TARGET_PORT), in_labels
            counts_of(in_labels).connections += 1
            counts_of(in_labels).add_close(test_nat.close_of(node, accept)["network_event"])
        for event in failed:
            labels = out_edge(svc["orders"])
            assert edge_key_of_event(event, DEFAULT_EDGE_PORTS) == labels, test_nat.show(event)
            counts_of(labels).failures["ECONNREFUSED"] = (
                counts_of(labels).failures.get("ECONNREFUSED", 0) + 1)
        node.agent.sync()
        text = node.agent.published_metrics_text()
        m = Scrape(text)
        for labels, counts in expected.values():
            assert_edge(m, labels, counts, "nat")
        # No other edge of nc's (its connections are all here).
        ncs = {k for k, labels in edge_series(m).items() if labels["workload"] == nc}
        assert ncs == {k for k, (labels, _) in expected.items() if labels["workload"] == nc}
        promtool_check(text)
    finally:
        try:
            if node.agent is not None:
                test_nat.stop_node_agent(node.agent)
        finally:
            node.cleanup()


# ---------------------------------------------------------------------------------------------
# The cap, idle removal, edges off: host processes on loopback


class LoopbackServer:
    """Listens on 127.0.0.1:`port` in this process; each accepted connection reads to EOF and
    closes. hold(): a connection kept open until release()."""

    def __init__(self, port=0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.held = []

    def connect(self, payload=b"", hold=False):
        """One connection: sends `payload` and closes (both ends), or keeps both ends open."""
        client = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        served, _ = self.sock.accept()
        served.settimeout(10)
        client.sendall(payload)
        if hold:
            self.held.append((client, served))
            return client.getsockname()[1]
        sport = client.getsockname()[1]
        client.close()
        got = 0
        while True:
            chunk = served.recv(65536)
            if not chunk:
                break
            got += len(chunk)
        served.close()
        assert got == len(payload)
        return sport

    def release(self):
        for client, served in self.held:
            client.close()
            served.close()
        self.held = []

    def close(self):
        self.release()
        self.sock.close()


def refused_port():
    """A loopback port nothing listens on (bound and closed at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refuse(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_cap_sends_new_edges_to_the_overflow_series(start_agent):
    """NETMON_METRICS_MAX_EDGES=2: the agent holds exactly 2 edges (the gauge and the series), the
    first two its event stream shows; every later edge's open events count in the overflow
    series of their direction and in netmon_edge_series_overflow_total, and its Closes and
    bytes with them: every edge series equals what the agent's own events add up to, at a
    consistent cut. The connections of this test on two listed ports and a refused one never
    get series of their own."""
    listed = LoopbackServer()
    other = LoopbackServer()
    closed = refused_port()
    ports = {listed.port, closed}
    try:
        # The settings as NETMON_ variables.
        agent = start_agent(env={"NETMON_METRICS_MAX_EDGES": "2",
                                 "NETMON_METRICS_EDGE_PORTS": f"{listed.port},{closed}"})
        agent.sync()
        for i in range(3):
            listed.connect(b"x" * (10 + i))
        other.connect(b"y" * 7)
        refuse(closed)
        refuse(closed)
        agent.sync(closed_ports={listed.port, other.port})

        def match(s, events, what):
            EdgeOracle(events, 2, ports).assert_matches(s, what)

        s, events, n = scrape_at_cut(agent, match=match)
        oracle = EdgeOracle(events[:n], 2, ports)
        held = edge_series(s)
        assert len([k for k, labels in held.items()
                    if labels["workload_kind"] != "Overflow"]) == 2, held
        for direction in ("outbound", "inbound"):
            assert key_of(overflow_edge(direction)) in held, held
        # This test's listed-port edges came after the table was full.
        for labels in held.values():
            assert labels["port"] not in (str(listed.port), str(closed)), labels
        assert oracle.overflowed["outbound"] >= 3 + 2, oracle.overflowed
        assert oracle.overflowed["inbound"] >= 3, oracle.overflowed
        overflow_out = oracle.counts[key_of(overflow_edge("outbound"))]
        assert overflow_out.failures.get("ECONNREFUSED", 0) >= 2, overflow_out

        def gauges():
            m = scrape(agent)
            return m if gauge(m, "netmon_edge_series") == 2 else None

        held_names = [(labels["direction"], labels["workload"], labels["port"])
                      for labels in oracle.held.values()]
        print(f"held {held_names}; overflowed {oracle.overflowed}")
        m = wait_for(gauges, timeout=METRICS_TIMEOUT, what="netmon_edge_series == 2")
        assert gauge(m, "netmon_edge_series_limit") == 2
        promtool_check(s.text)
    finally:
        listed.close()
        other.close()


def test_idle_edges_are_removed_and_open_ones_stay(start_agent, tmp_path):
    """metrics.edge_idle_seconds 2 (the config file, with metrics.edge_ports a YAML list): an
    edge (both directions) whose connection closed goes
    from every family after its idle time, netmon_edge_series_removed_total counting it, while
    an edge with a connection still open stays however long it is idle; once that connection
    closes it goes too. A new connection on a removed edge starts a fresh series (1, not 2)."""
    gone_port = LoopbackServer()
    open_port = LoopbackServer()
    try:
        config = tmp_path / "netmon.yaml"
        config.write_text(f"metrics:\n  edge_idle_seconds: {IDLE_SECONDS}\n"
                          f"  edge_ports: [{gone_port.port}, {open_port.port}]\n")
        agent = start_agent("--config", str(config))
        me = os.path.basename(os.path.realpath(sys.executable))

        def edges_of(port):
            return [edge("outbound", workload=me, workload_kind="Host", peer_kind="host",
                         port=str(port)),
                    edge("inbound", workload=me, workload_kind="Host", peer_kind="host",
                         port=str(port))]

        def present(m, port):
            return [key_of(e) in edge_series(m) for e in edges_of(port)]

        gone_port.connect(b"a" * 11)
        closed_at = time.monotonic()  # both ends closed: the edge's last event is before
        open_port.connect(b"b" * 13, hold=True)
        agent.sync(closed_ports={gone_port.port})
        m = Scrape(agent.published_metrics_text())
        for labels in edges_of(gone_port.port) + edges_of(open_port.port):
            assert m.value("netmon_edge_connections_total", labels) == 1, labels
        removed_before = gauge(m, "netmon_edge_series_removed_total")
        before = m

        def gone():
            m_ = scrape(agent)
            p = present(m_, gone_port.port)
            assert all(present(m_, open_port.port)), "the edge with an open connection went"
            return m_ if not any(p) else None

        m = wait_for(gone, timeout=REMOVAL_TIMEOUT, interval=0.2,
                     what="the idle edge's removal")
        assert time.monotonic() - closed_at >= IDLE_SECONDS - 0.1, "removed before its time"
        # At least every edge that went between the two scrapes (this test's two, and idle
        # ones of the test's own barriers); more when one came and went in between.
        vanished = set(edge_series(before)) - set(edge_series(m))
        assert {key_of(e) for e in edges_of(gone_port.port)} <= vanished
        assert gauge(m, "netmon_edge_series_removed_total") >= removed_before + len(vanished)
        # The open connection's edge stays well past the idle time.
        time.sleep(IDLE_SECONDS + 2)
        m = scrape(agent)
        assert all(present(m, open_port.port)), edge_series(m)
        removed_mid = gauge(m, "netmon_edge_series_removed_total")
        before = m

        open_port.release()
        agent.sync(closed_ports={open_port.port})
        m = wait_for(lambda: (lambda m_: m_ if not any(present(m_, open_port.port)) else None)(
            scrape(agent)), timeout=REMOVAL_TIMEOUT, interval=0.2,
            what="the closed connection's edge removal")
        vanished = set(edge_series(before)) - set(edge_series(m))
        assert {key_of(e) for e in edges_of(open_port.port)} <= vanished
        assert gauge(m, "netmon_edge_series_removed_total") >= removed_mid + len(vanished)

        gone_port.connect(b"c" * 5)
        agent.sync(closed_ports={gone_port.port})
        m = Scrape(agent.published_metrics_text())
        out, inbound = edges_of(gone_port.port)
        assert m.value("netmon_edge_connections_total", out) == 1
        assert m.value("netmon_edge_bytes_sent_total", out) == 5
        assert m.value("netmon_edge_bytes_received_total", inbound) == 5
    finally:
        gone_port.close()
        open_port.close()


def test_host_workload_off_leaves_the_workload_empty(start_agent):
    """--metrics-edge-host-workload=false: a host process's edges have workload "" (kind Host),
    counted exactly; none is named after the process."""
    server = LoopbackServer()
    try:
        agent = start_agent("--metrics-edge-host-workload=false", "--metrics-edge-ports",
                            str(server.port))
        for i in range(2):
            server.connect(b"z" * (3 + i))
        agent.sync(closed_ports={server.port})
        m = Scrape(agent.published_metrics_text())
        for direction, sent, received in (("outbound", 7, 0), ("inbound", 0, 7)):
            labels = edge(direction, workload_kind="Host", peer_kind="host",
                          port=str(server.port))
            assert m.value("netmon_edge_connections_total", labels) == 2, labels
            assert m.value("netmon_edge_bytes_sent_total", labels) == sent, labels
            assert m.value("netmon_edge_bytes_received_total", labels) == received, labels
        for labels in edge_series(m).values():
            if labels["workload_kind"] == "Host":
                assert labels["workload"] == "", labels
    finally:
        server.close()


def test_edges_off_keeps_the_pod_series(start_agent, fake_pods, kubelet_certs, kubelet_token,
                                        real_tools):
    """--metrics-edges=false: no edge family in /metrics but netmon_edge_series_limit, while the
    per-pod connection series count the pods' connection as before."""
    agent, stub = pods_agent(start_agent, fake_pods, kubelet_certs, kubelet_token,
                             "--metrics-edges=false")
    try:
        _, _, telnet_close, nc_close, _, _ = nc_telnet_between_pods(fake_pods, agent,
                                                                    real_tools)
        c, s = fake_pods.client, fake_pods.server
        text = agent.published_metrics_text()
        m = Scrape(text)
        edge_names = {name for name, _, _ in m.samples if name.startswith("netmon_edge_")}
        assert edge_names == {"netmon_edge_series_limit"}, edge_names
        for labels, close in ((conn_labels("outbound", c.namespace, c.name, c.container_name,
                                           c.workload[0]), telnet_close),
                              (conn_labels("inbound", s.namespace, s.name, s.container_name,
                                           s.workload[0]), nc_close)):
            assert m.value("netmon_connections_opened_total", labels) == 1, labels
            assert m.value("netmon_connection_bytes_sent_total", labels) == close[
                "network_event"]["bytes_sent"]
        promtool_check(text)
    finally:
        stub.stop()


@pytest.mark.parametrize("flag,value", [
    ("--metrics-max-edges", "0"), ("--metrics-max-edges", "100001"),
    ("--metrics-edge-idle-seconds", "0"), ("--metrics-edge-idle-seconds", "86401"),
    ("--metrics-edge-ports", "70000"), ("--metrics-edge-ports", "80,http"),
    ("--metrics-edges", "maybe"), ("--metrics-edge-host-workload", "maybe")])
def test_bad_edge_settings_exit_2_naming_the_flag(agent_binary, flag, value):
    result = run_cli(agent_binary, f"{flag}={value}")
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert flag in result.stderr, result.stderr
