#!/usr/bin/env python3
"""Writes the chart's Grafana dashboard, charts/netmon/dashboards/netmon.json, from the panel list
below (the service map's node naming is one PromQL expression built here, used by three queries).

  scripts/make-dashboard.py            # writes the file
  scripts/make-dashboard.py --check    # exit 1 when the committed file differs (CI: alert-rules)

The queries read the metrics of agent/metrics/metrics.cpp and the edge metrics (docs/metrics.md).
Variables: $datasource, $job, $instance (the agents), $namespace (this end of an edge), plus
Grafana's own $__rate_interval and $__range. tests/integration/test_dashboard.py runs every query
against a real Prometheus that scraped a real agent.
"""

import json
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
OUT = os.path.join(ROOT, "charts", "netmon", "dashboards", "netmon.json")

AGENTS = 'job=~"$job", instance=~"$instance"'
EDGES = AGENTS + ', namespace=~"$namespace"'
PEER_LABELS = "peer_kind, peer_namespace, peer_workload, peer_service, peer_node, peer_network"
EDGE_LABELS = "namespace, workload, workload_kind, " + PEER_LABELS

# A node of the service map from this end's labels (workload_kind;namespace;workload), in order:
# the first rule whose regular expression matches the whole joined value names the node.
THIS_END_RULES = [
    ("Host;;(.+)", "host:$1"),  # a host process: its binary
    ("Host;;", "host"),  # metrics.edge_host_workload=false
    ("Unknown;.*", "unknown"),  # a container whose pod is unknown
    ("Overflow;.*", "overflow"),  # edges past metrics.max_edges
    ("[^;]*;([^;]*);([^;]*)", "$1/$2"),  # a pod's workload: namespace/workload
]
# A node from the peer's labels (peer_kind;peer_namespace;peer_workload;peer_service;peer_node;
# peer_network). A pod with a workload is that workload's node, whether dialed directly or
# through a service that conntrack translated (so that both ends of a connection meet).
PEER_RULES = [
    ("pod;([^;]*);([^;]+);.*", "$1/$2"),
    ("(?:pod|service);([^;]*);;([^;]+);.*", "$1/$2 (service)"),
    ("pod;([^;]*);;;.*", "$1/(pod)"),
    ("node;.*;([^;]*);[^;]*", "node:$1"),
    ("host;.*", "host"),
    ("external;.*;([^;]*)", "external:$1"),
    ("unknown;.*", "unknown"),
    ("overflow;.*", "overflow"),
]


def named(expr, label, sources, rules):
    """`expr` with `label` naming a node: the `sources` labels joined with ';', then rewritten by
    the first matching rule (label_replace leaves the value alone when its regex does not match;
    no rule's output contains ';', so no later rule matches a rewritten value)."""
    joined = ", ".join(f'"{s}"' for s in sources)
    out = f'label_join({expr}, "{label}", ";", {joined})'
    for regex, replacement in rules:
        out = f'label_replace({out}, "{label}", "{replacement}", "{label}", "{regex}")'
    return out


THIS_END = ["workload_kind", "namespace", "workload"]
PEER = ["peer_kind", "peer_namespace", "peer_workload", "peer_service", "peer_node", "peer_network"]


def edge_rates():
    """Connections per second on each edge of the map, labelled source and target: every
    outbound edge (this end -> peer), and the inbound edges from outside the cluster (external
    peer -> this end; the other inbound edges are some agent's outbound ones already)."""
    def rate(direction, extra=""):
        return (f"sum by ({EDGE_LABELS}) (rate(netmon_edge_connections_total{{{EDGES}, "
                f'direction="{direction}"{extra}}}[$__rate_interval]))')

    outbound = named(named(rate("outbound"), "source", THIS_END, THIS_END_RULES), "target", PEER,
                     PEER_RULES)
    inbound = named(named(rate("inbound", ', peer_kind="external"'), "source", PEER, PEER_RULES),
                    "target", THIS_END, THIS_END_RULES)
    return f"sum by (source, target) ({outbound} or {inbound}) > 0"


def map_edges():
    return f'label_join({edge_rates()}, "id", " -> ", "source", "target")'


def map_nodes():
    e = edge_rates()
    nodes = (f'sum by (id) (label_replace({e}, "id", "$1", "source", "(.*)") or '
             f'label_replace({e}, "id", "$1", "target", "(.*)"))')
    return f'label_replace({nodes}, "title", "$1", "id", "(.*)")'


# Grouping of the per-edge panels: the outbound edges, this end to the peer.
EDGE_KEY = EDGE_LABELS + ", port"
EDGE_LEGEND = ("{{namespace}}/{{workload}} → {{peer_kind}} {{peer_namespace}}/{{peer_workload}}"
               "{{peer_service}}{{peer_node}}{{peer_network}} {{port}}")


def failure_ratio():
    failed = (f"sum by ({EDGE_KEY}) (rate(netmon_edge_connection_failures_total{{{EDGES}, "
              'direction="outbound"}[$__rate_interval]))')
    opened = (f"sum by ({EDGE_KEY}) (rate(netmon_edge_connections_total{{{EDGES}, "
              'direction="outbound"}[$__rate_interval]))')
    # An edge whose every attempt failed has no connections series: "or failed * 0" gives it 0.
    return f"{failed} / (({opened} or {failed} * 0) + {failed})"


def quantile(family):
    return (f"histogram_quantile(0.95, sum by (le, {EDGE_KEY}) (rate({family}_bucket{{{EDGES}, "
            'direction="outbound"}[$__rate_interval])))')


def top_bytes():
    def increase(family):
        return f"increase({family}{{{EDGES}}}[$__range])"

    return (f"topk(20, sum by (direction, {EDGE_KEY}) ("
            f"{increase('netmon_edge_bytes_sent_total')} + "
            f"{increase('netmon_edge_bytes_received_total')})) > 0")


# ---- panels ----

_next_id = [0]


def panel(kind, title, targets, x, y, w, h, description, **extra):
    _next_id[0] += 1
    refs = "ABCDEFGH"
    out = {
        "id": _next_id[0],
        "type": kind,
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [
            {"refId": refs[i], "datasource": {"type": "prometheus", "uid": "${datasource}"}, **t}
            for i, t in enumerate(targets)
        ],
    }
    out.update(extra)
    return out


def series(expr, legend):
    return {"expr": expr, "legendFormat": legend, "range": True, "instant": False}


def table(expr):
    return {"expr": expr, "format": "table", "range": False, "instant": True}


def row(title, y):
    _next_id[0] += 1
    return {"id": _next_id[0], "type": "row", "title": title, "collapsed": False,
            "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []}


def unit(u, **defaults):
    return {"fieldConfig": {"defaults": {"unit": u, **defaults}, "overrides": []}}


HIDE_TIME = {"id": "organize", "options": {"excludeByName": {"Time": True}}}


def panels():
    out = [row("Service map", 0)]
    out.append(panel(
        "nodegraph", "Service map (connections per second)",
        [table(map_nodes()), table(map_edges())], 0, 1, 24, 14,
        "Workloads and their peers: an arrow per edge that opened connections in the interval "
        "(outbound edges, and inbound ones from outside the cluster), its value the connections "
        "per second; a node's value is the connections per second it takes part in. Nodes: "
        "namespace/workload, host:<binary> (host processes), node:<name>, external:<network>, "
        "namespace/<service> (service), unknown, overflow (edges past metrics.max_edges).",
        transformations=[
            HIDE_TIME,
            {"id": "renameByRegex", "options": {"regex": "^Value.*$", "renamePattern": "mainstat"}},
        ],
        options={"nodes": {"mainStatUnit": "short"}, "edges": {"mainStatUnit": "short"}}))
    out.append(panel(
        "table", "Top edges by bytes (the time range, both directions)",
        [table(top_bytes())], 0, 15, 24, 9,
        "Payload bytes sent plus received on each edge in the dashboard's time range, the 20 "
        "largest. Bytes are counted when a connection closes.",
        transformations=[HIDE_TIME], **unit("bytes")))
    out.append(panel(
        "timeseries", "Connect failure ratio per edge (outbound)",
        [series(failure_ratio(), EDGE_LEGEND)], 0, 24, 12, 9,
        "Failed connects / (connections + failed connects) on each outbound edge that failed.",
        **unit("percentunit", min=0, max=1)))
    out.append(panel(
        "timeseries", "p95 connection duration per edge (outbound)",
        [series(quantile("netmon_edge_connection_duration_seconds"), EDGE_LEGEND)],
        12, 24, 12, 9,
        "95th percentile of open-to-close time of the connections that closed on each edge "
        "(histogram buckets 10 ms to 2 h).", **unit("s")))
    out.append(panel(
        "timeseries", "p95 smoothed RTT per edge (outbound)",
        [series(quantile("netmon_edge_rtt_seconds"), EDGE_LEGEND)], 0, 33, 12, 8,
        "95th percentile of the kernel's smoothed round-trip time at close (buckets 100 us to "
        "1 s).", **unit("s")))
    out.append(panel(
        "timeseries", "Edge series per agent and the cap",
        [series(f"netmon_edge_series{{{AGENTS}}}", "{{instance}} edges"),
         series(f"netmon_edge_series_limit{{{AGENTS}}}", "{{instance}} limit"),
         series(f"sum by (instance, direction) (rate(netmon_edge_series_overflow_total"
                f"{{{AGENTS}}}[$__rate_interval]))", "{{instance}} overflow {{direction}}/s")],
        12, 33, 12, 8,
        "Edges each agent holds against metrics.max_edges; past it new edges' events count in "
        "one overflow series per direction (netmon_edge_series_overflow_total).",
        **unit("short", min=0)))

    out.append(row("Agent health", 41))
    out.append(panel(
        "stat", "Agents ready",
        [series(f"sum(netmon_ready{{{AGENTS}}})", "ready"),
         series(f'count(up{{{AGENTS}}} == 1) or vector(0)', "scraped")], 0, 42, 6, 5,
        "Agents whose /readyz answers ready (netmon_ready), and agents Prometheus scrapes.",
        **unit("short")))
    out.append(panel(
        "timeseries", "Events lost by stage",
        [series(f"sum by (stage) (rate(netmon_events_lost_total{{{AGENTS}}}"
                "[$__rate_interval]))", "{{stage}}")], 6, 42, 9, 8,
        "Events lost per second by the stage that lost them (docs/metrics.md): kernel ring "
        "buffer, sockets map, recursion, unobserved, accept, decode, output queue, output error.",
        **unit("short", min=0)))
    out.append(panel(
        "timeseries", "Output queue waits",
        [series(f"sum by (instance) (rate(netmon_output_waits_total{{{AGENTS}}}"
                "[$__rate_interval]))", "{{instance}} waits/s"),
         series(f"sum by (instance) (rate(netmon_output_wait_seconds_total{{{AGENTS}}}"
                "[$__rate_interval]))", "{{instance}} share of time waiting")],
        15, 42, 9, 8,
        "Pauses of the kernel reader for room in the output queue (stdout too slow), per "
        "second, and the share of time spent in them.", **unit("short", min=0)))
    out.append(panel(
        "table", "Kubelet",
        [table(f"max by (instance) (netmon_kubelet_synced{{{AGENTS}}})"),
         table(f"sum by (instance, result) (increase(netmon_kubelet_requests_total{{{AGENTS}}}"
               "[$__range]))")], 0, 50, 12, 8,
        "Pod metadata: synced once (1), and the requests to the kubelet by result in the time "
        "range.", transformations=[HIDE_TIME]))
    out.append(panel(
        "table", "API server watches",
        [table(f"max by (instance, resource) (netmon_kube_api_synced{{{AGENTS}}})"),
         table(f"sum by (instance, resource, reason) (increase("
               f"netmon_kube_api_watch_errors_total{{{AGENTS}}}[$__range]))")], 12, 50, 12, 8,
        "Each watched resource's first list done (1), and failed list and watch requests by "
        "reason in the time range (gone: a 410 re-list, normal).",
        transformations=[HIDE_TIME]))
    out.append(panel(
        "table", "Hook variants",
        [table(f"count by (hook, variant) (netmon_hook_variant_info{{{AGENTS}}})")],
        0, 58, 12, 7,
        "Agents per variant chosen at start for each hook (docs/kernels.md).",
        transformations=[HIDE_TIME]))
    out.append(panel(
        "timeseries", "Connections per second by agent",
        [series(f"sum by (instance, direction) (rate(netmon_connections_opened_total"
                f"{{{AGENTS}}}[$__rate_interval]))", "{{instance}} {{direction}}")],
        12, 58, 12, 7, "Connections opened per second, as the per-pod series count them.",
        **unit("short", min=0)))
    return out


def variable(name, label, query, multi=True):
    return {
        "name": name, "label": label, "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": f"{name}-variable"},
        "definition": query, "refresh": 2, "sort": 1, "multi": multi, "includeAll": True,
        "allValue": ".*", "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


def dashboard():
    return {
        "uid": "netmon-service-map",
        "title": "netmon: service map and agents",
        "description": "Workload-to-workload connections from netmon's edge metrics, and the "
                       "agents' health (charts/netmon, docs/metrics.md).",
        "tags": ["netmon", "network", "kubernetes"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "graphTooltip": 1,
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0},
            variable("job", "Job", "label_values(netmon_build_info, job)"),
            variable("instance", "Agent", 'label_values(netmon_build_info{job=~"$job"}, instance)'),
            variable("namespace", "Namespace",
                     'label_values(netmon_edge_connections_total{job=~"$job"}, namespace)'),
        ]},
        "annotations": {"list": []},
        "panels": panels(),
    }


def render():
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main():
    text = render()
    if sys.argv[1:] == ["--check"]:
        with open(OUT, encoding="utf-8") as f:
            if f.read() != text:
                print(f"{OUT} differs from scripts/make-dashboard.py's output: run it",
                      file=sys.stderr)
                return 1
        print(f"{os.path.relpath(OUT, ROOT)} is up to date")
        return 0
    if sys.argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {os.path.relpath(OUT, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
