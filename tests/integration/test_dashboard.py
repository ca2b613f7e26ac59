"""The chart's Grafana dashboard and PrometheusRule against a real Prometheus that scrapes a real
agent (issue #22): test_peers.py's fake cluster (a Deployment's web pod and a StatefulSet's db pod
in their own network namespaces, the kubelet and API server stubs) makes connections of every
kind of edge: web to the db pod over IPv4 and IPv6 with payload, to service shop/db's cluster IP,
to node B, to this node's address, to an external class and to the internet, refused connects to
a closed port (the failing edge), an external client into the web pod (an inbound external
edge), and this test's own loopback connections (a host process). Debian's Prometheus scrapes the
agent every second (test_metrics.PrometheusServer), next to a target where nothing listens (an
agent that is down), and evaluates the rule groups of the PrometheusRule the chart renders.

Then every query of charts/netmon/dashboards/netmon.json, its Grafana variables replaced, goes
through Prometheus' HTTP API: it parses and returns series whose label names are exactly what
the panel shows, with the scenario's edges among them (the service map's nodes and edges frames
consistent with each other). Every alert expression runs too: the ones the scenario triggers (the
down target, web's failing connects, the edge cap with a lowered ratio) return exactly their
series, the others nothing on this healthy agent; every rule evaluates without error inside
Prometheus, and the triggered alerts are pending there. Other programs on this host make
connections too (host processes): assertions are on the scenario's series, never on totals.
"""

import json
import os
import re
import socket
import subprocess
import sys
import textwrap

import pytest

from conftest import free_port, wait_for
from test_chart import CHART, HELM_TOOLS
from test_kubernetes import NAMESPACE, SERVER_PORT, netns_listening, wait_exit
from test_lifecycle import FAILED
from test_metrics import PROMETHEUS_TIMEOUT, PrometheusServer, split_url
from test_peers import (  # noqa: F401 - fixtures
    CLOSED_PORT,
    LISTENER,
    NODE_B,
    api_token,
    cluster,
    connect_until_peer,
    external_peer,
    k8s_host,
    kube_api,
    kubelet,
    kubelet_certs,
    pod_peer,
    probe,
    service_peer,
    start_listener,
    start_peer_agent,
    token_file,
)

try:
    import yaml
except ImportError:  # pragma: no cover - python3-yaml is a test dependency
    yaml = None

DASHBOARD = os.path.join(CHART, "dashboards", "netmon.json")
EDGE_PORTS = f"{SERVER_PORT},{CLOSED_PORT}"  # the port label: "7878", "7879"
INBOUND_PORT = SERVER_PORT + 2  # the web pod's listener, for the external client
JOB = "netmon/netmon"  # the PodMonitor's job of release netmon in namespace netmon
# Grafana's variables as the dashboard's "All" selects them; windows long enough for the test.
VARIABLES = {"job": ".*", "instance": ".*", "namespace": ".*", "__rate_interval": "1m",
             "__range": "10m"}
PAYLOAD = 3000  # bytes each payload connection sends
PAYLOAD_CONNECTIONS = 6  # per family to the db pod
FAILURES = 15  # refused connects after the first one
SCRAPE_TIMEOUT = 30.0  # seconds for Prometheus to have scraped a state of the agent

EDGE_LABELS = {"direction", "namespace", "workload", "workload_kind", "peer_kind",
               "peer_namespace", "peer_workload", "peer_service", "peer_node", "peer_network",
               "port"}
EDGE_KEY = EDGE_LABELS - {"direction"}
AGENT_TARGET = {"job", "instance"}

# Sends PAYLOAD bytes on each connection to argv[1:] (address port count ...), then closes it;
# with "--from ADDRESS" first, binds that source address.
CLIENT = textwrap.dedent("""\
    import socket, sys
    args = sys.argv[1:]
    source = None
    if args[0] == "--from":
        source, args = (args[1], 0), args[2:]
    payload = b"x" * int(args[0])
    args = args[1:]
    for i in range(0, len(args), 3):
        address, port, count = args[i], int(args[i + 1]), int(args[i + 2])
        for _ in range(count):
            s = socket.create_connection((address, port), timeout=5, source_address=source)
            s.sendall(payload)
            s.close()
""")


def expand(expr):
    """The query as Grafana sends it with VARIABLES ($1 in label_replace is no variable)."""
    out = re.sub(r"\$(__\w+|[a-z]\w*)", lambda m: VARIABLES[m.group(1)], expr)
    assert "$" not in re.sub(r"\$\d", "", out), out
    return out


def helm_binary():
    proc = subprocess.run([HELM_TOOLS], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, f"scripts/helm-tools.sh failed: {proc.stderr}"
    return proc.stdout.strip().splitlines()[-1]


def rendered_rules(tmp_path, name, *sets):
    """The rule groups of the chart's PrometheusRule (prometheusRule.enabled and `sets`),
    written as a Prometheus rule file; returns (its path, {alert: expr})."""
    assert yaml is not None, "PyYAML is missing (Debian: python3-yaml)"
    args = ["--set", "prometheusRule.enabled=true"]
    for s in sets:
        args += ["--set-json", s]  # --set would make 0.001 a string
    proc = subprocess.run([helm_binary(), "template", "netmon", CHART, "--namespace", "netmon",
                           *args, "--show-only", "templates/prometheusrule.yaml"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    groups = yaml.safe_load(proc.stdout)["spec"]["groups"]
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"groups": groups}))
    return path, {r["alert"]: r["expr"] for g in groups for r in g["rules"]}


def labels_of(result):
    return {k: v for k, v in result["metric"].items()}


def run_client(cluster, pod, *args, source=None):
    argv = [sys.executable, "-c", CLIENT, *(["--from", source] if source else []), str(PAYLOAD),
            *map(str, args)]
    proc = cluster.start(pod, argv)
    code = wait_exit(proc, timeout=60)
    assert code == 0, f"the client exited {code}: {proc.stderr.read().decode()}"


def host_binary():
    return os.path.basename(os.path.realpath(sys.executable))


@pytest.fixture
def scenario(start_agent, cluster, kubelet, token_file, kubelet_certs, kube_api, api_token,
             real_tools, tmp_path):
    """The agent, the connections of every edge, and Prometheus scraping them; returns
    (prometheus, agent, the dead target, alerts {name: expr}, the capped rules' alerts)."""
    s, c = cluster.server, cluster.client
    v4, v6 = cluster.addr["ipv4"], cluster.addr["ipv6"]
    stub = kube_api(cluster)
    agent = start_peer_agent(start_agent, cluster, kubelet, token_file, kubelet_certs, stub,
                             api_token, extra=("--metrics-edge-ports", EDGE_PORTS))
    start_listener(cluster, ports=(SERVER_PORT,))
    # The web pod's own listener, for a client outside the cluster (an external address that the
    # server's namespace holds; the web pod's default route leads there).
    inbound = cluster.start(c, [sys.executable, "-c", LISTENER, str(INBOUND_PORT)])
    wait_for(lambda: netns_listening(inbound.pid, c.netns, INBOUND_PORT),
             what="the web pod's listener")

    rules, alerts = rendered_rules(tmp_path, "netmon-rules.yaml")
    _, capped = rendered_rules(tmp_path, "capped-rules.yaml",
                               "prometheusRule.rules.edgeSeriesAtCap.ratio=0.001")
    host_, port = split_url(agent.metrics_url)
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: an agent that is down
    prom = PrometheusServer(tmp_path, f"{host_}:{port}", more_targets=(dead,), job=JOB,
                            rule_files=(str(rules),))
    try:
        prom.wait_ready()
        # First one connection per edge, once the names are known (the kubelet's pods, the API
        # server's objects); Prometheus scrapes each edge's series before the rest, so that
        # rate() and increase() see every later connection.
        for address, expected in ((v4["server"], pod_peer(s)), (v6["server"], pod_peer(s)),
                                  (v4["vip"], service_peer("db", "postgres")),
                                  (v4["node_b"], {"kind": "node", "name": NODE_B}),
                                  (v4["this_node"], {"kind": "host"}),
                                  (v4["docs"], external_peer("docs")),
                                  (v6["internet"], external_peer("internet"))):
            connect_until_peer(cluster, agent, real_tools, address, expected)
        refused = probe(cluster, agent, real_tools, v4["server"], CLOSED_PORT)
        assert refused["network_event"]["type"] == FAILED
        run_client(cluster, s, c.address, INBOUND_PORT, 1, source=v4["docs"])
        with socket.create_connection((host_, port), timeout=5) as conn:  # a host process
            conn.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            conn.recv(1024)
        wait_scraped(prom, 'netmon_edge_connection_failures_total{workload="web"}', 1)
        wait_scraped(prom, 'netmon_edge_connections_total{workload="web", direction="outbound"}',
                     6)

        # Then the rest: payload to the db pod, refused connects, more of each edge.
        run_client(cluster, c, v4["server"], SERVER_PORT, PAYLOAD_CONNECTIONS,
                   v6["server"], SERVER_PORT, PAYLOAD_CONNECTIONS,
                   v4["vip"], SERVER_PORT, 2, v4["node_b"], SERVER_PORT, 2,
                   v4["this_node"], SERVER_PORT, 2, v4["docs"], SERVER_PORT, 2,
                   v6["internet"], SERVER_PORT, 2)
        for _ in range(FAILURES):
            proc = cluster.start(c, [real_tools["nc"], "-z", "-w", "3", v4["server"],
                                     str(CLOSED_PORT)])
            assert wait_exit(proc) != 0
        run_client(cluster, s, c.address, INBOUND_PORT, 2, source=v4["docs"])
        agent.sync()
        wait_scraped(prom, 'sum(netmon_edge_connection_failures_total{workload="web"})',
                     None, value=1 + FAILURES)
        yield prom, agent, dead, alerts, capped
    finally:
        prom.stop()


def wait_scraped(prom, promql, count, value=None):
    """Waits until Prometheus answers `promql` with `count` series (or, with `value`, one series
    of at least that value)."""
    def done():
        result = prom.query(promql)
        if value is not None:
            return bool(result) and float(result[0]["value"][1]) >= value
        return len(result) >= count

    wait_for(done, timeout=SCRAPE_TIMEOUT, interval=0.5,
             what=lambda: f"Prometheus to answer {promql}: {prom.query(promql)}")


def metric_names(expr):
    """The metric names an expression reads."""
    return set(re.findall(r"\bnetmon_[a-z_]+\b", expr)) | set(re.findall(r"\bup(?=\{)", expr))


def panel_queries():
    with open(DASHBOARD, encoding="utf-8") as f:
        dashboard = json.load(f)
    return [(p, t) for p in dashboard["panels"] for t in p.get("targets", [])]


# Labels that always have a value (the others may be empty, which in Prometheus is no label).
NEVER_EMPTY = {"__name__", "id", "title", "source", "target", "direction", "workload_kind", "peer_kind",
               "job", "instance", "stage", "result", "resource", "reason", "hook", "variant"}
# The label names each query's series carry (the target's job and instance where not summed).
EXPECTED_LABELS = {
    ("Service map (connections per second)", "A"): {"id", "title"},
    ("Service map (connections per second)", "B"): {"id", "source", "target"},
    ("Top edges by bytes (the time range, both directions)", "A"): EDGE_LABELS,
    ("Connect failure ratio per edge (outbound)", "A"): EDGE_KEY,
    ("p95 connection duration per edge (outbound)", "A"): EDGE_KEY,
    ("p95 smoothed RTT per edge (outbound)", "A"): EDGE_KEY,
    ("Edge series per agent and the cap", "A"): AGENT_TARGET | {"__name__"},
    ("Edge series per agent and the cap", "B"): AGENT_TARGET | {"__name__"},
    ("Edge series per agent and the cap", "C"): {"instance", "direction"},
    ("Agents ready", "A"): set(),
    ("Agents ready", "B"): set(),
    ("Events lost by stage", "A"): {"stage"},
    ("Output queue waits", "A"): {"instance"},
    ("Output queue waits", "B"): {"instance"},
    ("Kubelet", "A"): {"instance"},
    ("Kubelet", "B"): {"instance", "result"},
    ("API server watches", "A"): {"instance", "resource"},
    ("API server watches", "B"): {"instance", "resource", "reason"},
    ("Hook variants", "A"): {"hook", "variant"},
    ("Connections per second by agent", "A"): {"instance", "direction"},
}


def web_edge(peer_kind, port="", **peer):
    labels = {"namespace": NAMESPACE, "workload": "web", "workload_kind": "Deployment",
              "peer_kind": peer_kind, "peer_namespace": "", "peer_workload": "",
              "peer_service": "", "peer_node": "", "peer_network": "", "port": port}
    labels.update(peer)
    return {k: v for k, v in labels.items() if v}  # as Prometheus stores them


def test_every_panel_query_returns_the_scenario(scenario):
    """Each query parses and returns series with exactly the panel's labels; the scenario's
    edges are in them (service map nodes and edges, top bytes, failure ratio, p95s), and the
    health panels show this agent (ready, no loss, kubelet and API server synced)."""
    prom, agent, dead, _, _ = scenario
    queries = panel_queries()
    assert {(p["title"], t["refId"]) for p, t in queries} == set(EXPECTED_LABELS)
    results = {}
    for p, t in queries:
        expr = expand(t["expr"])
        for name in metric_names(expr):
            assert prom.query(f"count({name})"), f"{p['title']}: no series of {name}"
        result = prom.query(expr)
        assert result, f"{p['title']} {t['refId']}: no series for {expr}"
        want = EXPECTED_LABELS[(p["title"], t["refId"])]
        never_empty = want & NEVER_EMPTY
        for r in result:  # Prometheus leaves out the labels whose value is empty
            assert never_empty <= set(r["metric"]) <= want, (p["title"], t["refId"], r["metric"])
        results[(p["title"], t["refId"])] = result

    # The service map: nodes and edges of the scenario, every edge between two nodes.
    nodes = {r["metric"]["id"]: float(r["value"][1])
             for r in results[("Service map (connections per second)", "A")]}
    edges = {(r["metric"]["source"], r["metric"]["target"]): r
             for r in results[("Service map (connections per second)", "B")]}
    host = f"host:{host_binary()}"
    want_edges = {("shop/web", "shop/db"), ("shop/web", "shop/db (service)"),
                  ("shop/web", f"node:{NODE_B}"), ("shop/web", "host"),
                  ("shop/web", "external:docs"), ("shop/web", "external:internet"),
                  ("external:docs", "shop/web"), ("shop/db", "shop/web"), (host, "host")}
    assert want_edges <= set(edges), sorted(edges)
    for (source, target), r in edges.items():
        assert r["metric"]["id"] == f"{source} -> {target}"
        assert source in nodes and target in nodes, (source, target, sorted(nodes))
        assert float(r["value"][1]) > 0
    for node_id in {n for e in want_edges for n in e}:
        assert nodes[node_id] > 0, node_id
    for r in results[("Service map (connections per second)", "A")]:
        assert r["metric"]["title"] == r["metric"]["id"]

    # Top edges by bytes: the payload to the db pod, sent by web and received by db.
    top = {tuple(sorted(r["metric"].items())): float(r["value"][1])
           for r in results[("Top edges by bytes (the time range, both directions)", "A")]}
    to_db = {**web_edge("pod", str(SERVER_PORT), peer_namespace=NAMESPACE, peer_workload="db"),
             "direction": "outbound"}
    assert top.get(tuple(sorted(to_db.items())), 0) >= 2 * PAYLOAD_CONNECTIONS * PAYLOAD, top

    # The failing edge: web to the db pod's closed port, every attempt refused.
    ratios = {tuple(sorted(r["metric"].items())): float(r["value"][1])
              for r in results[("Connect failure ratio per edge (outbound)", "A")]}
    failing = web_edge("pod", str(CLOSED_PORT), peer_namespace=NAMESPACE, peer_workload="db")
    assert ratios.get(tuple(sorted(failing.items()))) == 1.0, ratios

    # p95 duration: the payload edge, a finite duration within the buckets.
    durations = {tuple(sorted(r["metric"].items())): float(r["value"][1])
                 for r in results[("p95 connection duration per edge (outbound)", "A")]}
    key = tuple(sorted(web_edge("pod", str(SERVER_PORT), peer_namespace=NAMESPACE,
                                peer_workload="db").items()))
    assert 0 < durations[key] <= 10, durations

    # Health: this agent ready, no loss, kubelet and API server synced, the variants chosen.
    [ready] = results[("Agents ready", "A")]
    assert float(ready["value"][1]) == 1
    lost = {r["metric"]["stage"]: float(r["value"][1])
            for r in results[("Events lost by stage", "A")]}
    assert set(lost) >= {"ring_buffer", "sockets_map", "output_queue"} and not any(
        lost.values()), lost
    [synced] = results[("Kubelet", "A")]
    assert float(synced["value"][1]) == 1
    api = {r["metric"]["resource"]: float(r["value"][1]) for r in results[("API server watches",
                                                                            "A")]}
    assert api == {"services": 1, "endpointslices": 1, "nodes": 1, "pods": 1}, api
    hooks = {r["metric"]["hook"] for r in results[("Hook variants", "A")]}
    assert hooks == {"state", "accept", "process"}, hooks
    series, limit = (results[("Edge series per agent and the cap", ref)] for ref in "AB")
    assert 9 <= float(series[0]["value"][1]) <= float(limit[0]["value"][1]) == 1000


def test_every_alert_expression(scenario):
    """Each alert expression of the rendered PrometheusRule parses and reads metrics the agent
    exports; on this healthy agent only NetmonAgentDown (the dead target) and
    NetmonWorkloadConnectFailures (web: 16 refused of about 40 attempts) return series, with
    exactly their labels; with edgeSeriesAtCap.ratio lowered, the cap alert returns this agent.
    Inside Prometheus every rule evaluates without error, and those two alerts are pending."""
    prom, agent, dead, alerts, capped = scenario
    host_, port = split_url(agent.metrics_url)
    expected = {
        "NetmonAgentDown": [{"__name__": "up", "job": JOB, "instance": dead}],
        "NetmonWorkloadConnectFailures": [
            {"namespace": NAMESPACE, "workload": "web", "workload_kind": "Deployment"}],
    }
    assert set(alerts) == {"NetmonEventsLost", "NetmonAgentDown", "NetmonAgentAbsent",
                           "NetmonAgentNotReady", "NetmonKubeletUnreachable",
                           "NetmonKubeApiUnreachable", "NetmonEdgeSeriesAtCap",
                           "NetmonWorkloadConnectFailures"}
    for name, expr in alerts.items():
        for metric in metric_names(expr):
            assert prom.query(f"count({metric})"), f"{name}: no series of {metric}"
        got = [labels_of(r) for r in prom.query(expr) if not from_other_programs(r["metric"])]
        assert got == expected.get(name, []), (name, expr, got)

    [at_cap] = prom.query(capped["NetmonEdgeSeriesAtCap"])
    assert labels_of(at_cap) == {"__name__": "netmon_edge_series", "job": JOB,
                                 "instance": f"{host_}:{port}"}

    def evaluated():
        rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
        done = len(rules) == len(alerts) and all(
            not r.get("lastEvaluation", "0001").startswith("0001") for r in rules)
        return rules if done else None

    rules = wait_for(evaluated, timeout=PROMETHEUS_TIMEOUT, interval=0.5,
                     what=lambda: f"every rule evaluated: {prom.api('rules')}")
    for r in rules:
        assert r["health"] == "ok", r
    want = {("NetmonAgentDown", "pending"), ("NetmonWorkloadConnectFailures", "pending")}

    def pending():
        got = {(a["labels"]["alertname"], a["state"]) for a in prom.api("alerts")["alerts"]
               if not from_other_programs(a["labels"])}
        return got == want

    wait_for(pending, timeout=PROMETHEUS_TIMEOUT, interval=0.5,
             what=lambda: f"alerts {want}: {prom.api('alerts')}")


def from_other_programs(labels):
    """A host process's workload: this host's other programs connect too (refused connects of
    other tests, say), which this test does not control."""
    return labels.get("workload_kind") == "Host"
