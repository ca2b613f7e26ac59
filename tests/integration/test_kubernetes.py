"""Kubernetes attribution end to end: the real agent, a kubelet stand-in, and fake pods.

A fake pod here is what the agent can observe of a real one on a node: a cgroup v2 directory
named the way the kubelet and containerd name it (the systemd driver's
kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/cri-containerd-<id>.scope, or
the cgroupfs driver's kubepods/<qos>/pod<uid>/<id>), a network namespace of its own, and an
entry in the PodList that the kubelet stand-in (kubelet_stub.py, HTTPS on 127.0.0.1) serves.
The two pods' namespaces are joined by a veth pair with 10.213.<n>.1/30 (server) and
10.213.<n>.2/30 (client): pod traffic never leaves the namespaces these tests create.

Every fake cgroup lives below <cgroup2 mount>/netmon-k8s-<pytest pid>-<seq>/, every namespace is
named nmk8s-<pytest pid>-<seq>-{srv,cli}; leftovers of earlier runs (whose pid is gone) are
removed at the start. Events of the whole host reach the agent, so tests pick theirs by pid
and by the pods' addresses.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid

import pytest

import kubelet_stub
from conftest import ProcessGroup, free_port, same_connection, skip_or_fail, wait_for
from test_lifecycle import ACCEPT, CLOSE, ESTABLISH, Listener, only

NODE_NAME = f"netmon-test-node-{os.getpid()}"
NAMESPACE = "shop"
SERVER_PORT = 7878
SCHEMA_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "event.schema.json")

CGROUP_PREFIX = "netmon-k8s-"
NETNS_PREFIX = "nmk8s-"
LEFTOVER = re.compile(r"(?:netmon-k8s|nmk8s)-(\d+)-\d+(?:-srv|-cli)?")

SYNC_TIMEOUT = 10.0  # seconds for the agent's first successful poll
RECOVERY_TIMEOUT = 10.0  # seconds for pods to appear after the kubelet recovers (poll: 1 s)
EARLY_REFRESH_TIMEOUT = 5.0  # seconds, with a 60 s poll interval
KUBELET_READ_TIMEOUT = 10.0  # the agent's read timeout for the kubelet (agent/k8s/kubelet.h)
EXIT_TIMEOUT = 10.0
CLEANUP_TIMEOUT = 5.0

NOT_UNTIL_RECOVERY = "; events go out without pod metadata until it recovers"
TLS_VERIFICATION_FAILED = re.escape(
    "SSLServerVerification (set --kubelet-ca-file, or --kubelet-insecure-skip-verify for "
    "self-signed kubelet certificates)")


# ---------------------------------------------------------------------------------------------
# Host prerequisites


def cgroup2_mount():
    """The first cgroup2 mount point in /proc/self/mountinfo, or None."""
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            left, sep, right = line.partition(" - ")
            if not sep or right.split(" ", 1)[0] != "cgroup2":
                continue
            mount = left.split(" ")[4]
            return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), mount)
    return None


def ip_netns_unavailable_reason():
    ip = shutil.which("ip")
    if not ip:
        return "`ip` (iproute2) is not installed"
    probe = subprocess.run([ip, "netns", "list"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"`ip netns` does not work here: {probe.stderr.strip()}"
    return None


def pid_alive(pid):
    return os.path.exists(f"/proc/{pid}")


def cgroup_dirs_leaf_first(top):
    return [d for d, _, _ in os.walk(top, topdown=False)]


def kill_cgroup_members(top):
    """SIGKILLs the processes in the cgroups below `top` (all started by these tests)."""
    for d in cgroup_dirs_leaf_first(top):
        try:
            with open(os.path.join(d, "cgroup.procs"), encoding="ascii") as f:
                pids = [int(p) for p in f.read().split()]
        except OSError:
            continue
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def remove_cgroup_tree(top, timeout=CLEANUP_TIMEOUT):
    """rmdir leaf-first, retrying while the cgroups' last processes are being reaped.
    Returns the directories that could not be removed."""
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for d in cgroup_dirs_leaf_first(top) if os.path.isdir(top) else []:
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError:
                left.append(d)
        if not left or time.monotonic() >= deadline:
            return left
        kill_cgroup_members(top)
        time.sleep(0.05)


def netns_list():
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def netns_delete(name):
    subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)


def clean_leftovers(mount):
    """Removes fake cgroups and namespaces of earlier runs of this file whose pytest is gone."""
    for entry in os.listdir(mount):
        m = LEFTOVER.fullmatch(entry)
        if m and entry.startswith(CGROUP_PREFIX) and not pid_alive(int(m.group(1))):
            kill_cgroup_members(os.path.join(mount, entry))
            remove_cgroup_tree(os.path.join(mount, entry))
    for name in netns_list():
        m = LEFTOVER.fullmatch(name)
        if m and name.startswith(NETNS_PREFIX) and not pid_alive(int(m.group(1))):
            netns_delete(name)


@pytest.fixture(scope="session")
def k8s_host():
    """The cgroup2 mount point; skips (fails under CI) where fake pods cannot be made."""
    if os.geteuid() != 0:
        skip_or_fail("needs root to create cgroups and network namespaces")
    mount = cgroup2_mount()
    if mount is None:
        skip_or_fail("no cgroup v2 hierarchy is mounted (/proc/self/mountinfo)")
    if not os.access(os.path.join(mount, "cgroup.procs"), os.W_OK):
        skip_or_fail(f"the cgroup v2 hierarchy at {mount} is not writable")
    reason = ip_netns_unavailable_reason()
    if reason:
        skip_or_fail(reason)
    clean_leftovers(mount)
    return mount


# ---------------------------------------------------------------------------------------------
# Fake pods


def random_container_id():
    return os.urandom(32).hex()


class FakePod:
    """A pod as the node shows it: its kubelet metadata, cgroup, netns and address."""

    def __init__(self, *, name, labels, owner, workload, container_name, image, qos_class,
                 layout, namespace=NAMESPACE, uid=None, annotations=None):
        self.name = name
        self.namespace = namespace
        self.uid = uid or str(uuid.uuid4())
        self.labels = dict(labels)
        self.annotations = dict(annotations or {})
        self.owner = owner
        self.workload = workload  # the expected (workload, workload_kind)
        self.container_name = container_name
        self.image = image
        self.image_id = f"{image.split(':')[0]}@sha256:{os.urandom(32).hex()}"
        self.container_id = random_container_id()
        self.qos_class = qos_class
        self.layout = layout  # "systemd" or "cgroupfs"
        self.cgroup = None  # the container's cgroup directory
        self.netns = None
        self.address = None

    def cgroup_path(self):
        """The container's cgroup below the kubelet's root, as the runtime names it."""
        qos = self.qos_class.lower()
        if self.layout == "systemd":
            uid = self.uid.replace("-", "_")
            if qos == "guaranteed":
                return ("kubepods.slice", f"kubepods-pod{uid}.slice",
                        f"cri-containerd-{self.container_id}.scope")
            return ("kubepods.slice", f"kubepods-{qos}.slice", f"kubepods-{qos}-pod{uid}.slice",
                    f"cri-containerd-{self.container_id}.scope")
        if qos == "guaranteed":
            return ("kubepods", f"pod{self.uid}", self.container_id)
        return ("kubepods", qos, f"pod{self.uid}", self.container_id)

    def item(self, labels=None, container_id=None):
        """This pod's entry in the kubelet's PodList (`container_id`: the id its status
        reports, when not the one the cgroup has)."""
        return kubelet_stub.pod_item(
            name=self.name, namespace=self.namespace, uid=self.uid, node_name=NODE_NAME,
            labels=self.labels if labels is None else labels, owner=self.owner,
            containers=[{"name": self.container_name, "image": self.image,
                         "image_id": self.image_id,
                         "container_id": container_id or self.container_id}],
            qos_class=self.qos_class, pod_ip=self.address, annotations=self.annotations)

    def expected(self, labels=None):
        """The event's "pod" object for a process in this pod's container."""
        return {
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
            "workload": self.workload[0],
            "workload_kind": self.workload[1],
            "labels": self.labels if labels is None else labels,
            "container": {"id": self.container_id, "name": self.container_name,
                          "image": self.image, "image_id": self.image_id},
        }


class FakeCluster:
    """Two fake pods on this node: a StatefulSet's database pod (systemd cgroup driver,
    Burstable) and a Deployment's web pod (cgroupfs driver, BestEffort), whose network
    namespaces a veth pair joins."""

    _seq = 0

    def __init__(self, mount):
        FakeCluster._seq += 1
        seq = FakeCluster._seq
        self.mount = mount
        self.top = os.path.join(mount, f"{CGROUP_PREFIX}{os.getpid()}-{seq}")
        self.net = (os.getpid() + seq) % 254 + 1
        self.processes = ProcessGroup()
        self.netns_names = []
        self.server = FakePod(
            name="db-0",
            labels={"app": "db", "controller-revision-hash": "db-7c9f8d6b54",
                    "statefulset.kubernetes.io/pod-name": "db-0"},
            owner=("StatefulSet", "db"), workload=("db", "StatefulSet"),
            container_name="postgres", image="docker.io/library/postgres:16.1",
            qos_class="Burstable", layout="systemd")
        self.client = FakePod(
            name="web-5d9c8b7f6-x2k9p",
            labels={"app": "web", "pod-template-hash": "5d9c8b7f6"},
            owner=("ReplicaSet", "web-5d9c8b7f6"), workload=("web", "Deployment"),
            container_name="nginx", image="docker.io/library/nginx:1.25.3",
            qos_class="BestEffort", layout="cgroupfs")
        self.server.netns = f"{NETNS_PREFIX}{os.getpid()}-{seq}-srv"
        self.client.netns = f"{NETNS_PREFIX}{os.getpid()}-{seq}-cli"
        self.server.address = f"10.213.{self.net}.1"
        self.client.address = f"10.213.{self.net}.2"

    def _ip(self, *args):
        result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise AssertionError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")

    def create(self):
        os.mkdir(self.top)
        for pod in (self.server, self.client):
            pod.cgroup = os.path.join(self.top, *pod.cgroup_path())
            os.makedirs(pod.cgroup)
        for pod in (self.server, self.client):
            self._ip("netns", "add", pod.netns)
            self.netns_names.append(pod.netns)
        s, c = self.server, self.client
        # Created inside the server's namespace, the peer inside the client's: the pair never
        # exists in the host's namespace. Both ends are "eth0", as in a pod.
        self._ip("-n", s.netns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
                 "netns", c.netns)
        for pod in (s, c):
            self._ip("-n", pod.netns, "addr", "add", f"{pod.address}/30", "dev", "eth0")
            self._ip("-n", pod.netns, "link", "set", "eth0", "up")
            self._ip("-n", pod.netns, "link", "set", "lo", "up")

    def add_pod(self, pod):
        """Another pod, with a cgroup of its own, in the client's network namespace (sharing
        it changes nothing for attribution, which goes by cgroup)."""
        pod.netns, pod.address = self.client.netns, self.client.address
        pod.cgroup = os.path.join(self.top, *pod.cgroup_path())
        os.makedirs(pod.cgroup)
        return pod

    def start(self, pod, argv, **kwargs):
        """Starts `argv` in `pod`: in its container's cgroup, then (exec) in its namespace."""
        script = 'echo $$ > "$0" && exec ip netns exec "$@"'
        return self.processes.start(
            ["sh", "-c", script, os.path.join(pod.cgroup, "cgroup.procs"), pod.netns, *argv],
            **kwargs)

    def start_outside_pod(self, pod, argv, **kwargs):
        """Starts `argv` in `pod`'s network namespace but in this test's (host) cgroup."""
        return self.processes.start(["ip", "netns", "exec", pod.netns, *argv], **kwargs)

    def cleanup(self):
        self.processes.cleanup()
        kill_cgroup_members(self.top)
        left = remove_cgroup_tree(self.top)
        for name in self.netns_names:
            netns_delete(name)
        remaining = [n for n in self.netns_names if n in netns_list()]
        assert not left and not remaining, (
            f"fake pods not cleaned up: cgroups {left}, namespaces {remaining}")


@pytest.fixture
def fake_pods(k8s_host):
    cluster = FakeCluster(k8s_host)
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.cleanup()


def in_netns(pid, netns):
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{netns}").st_ino
    except OSError:
        return False


def netns_listening(pid, netns, port):
    """True when process `pid`, in `netns`, has that namespace listening on TCP `port`."""
    if not in_netns(pid, netns):
        return False
    for path in (f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6"):
        try:
            with open(path, encoding="ascii") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def wait_exit(proc, timeout=EXIT_TIMEOUT):
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{proc.args} did not exit within {timeout} s") from None


def start_server(cluster, tools, port=SERVER_PORT, in_pod=True):
    """`nc -lk PORT` in the server pod (or only in its namespace), listening."""
    argv = [tools["nc"], "-lk", str(port)]
    nc = (cluster.start(cluster.server, argv) if in_pod
          else cluster.start_outside_pod(cluster.server, argv))
    wait_for(lambda: netns_listening(nc.pid, cluster.server.netns, port),
             what=f"nc listening on {port} in {cluster.server.netns}")
    return nc


def connect_from_client(cluster, agent, tools, port=SERVER_PORT, pod=None):
    """One connection from the client pod (or `pod`) with `nc -z` to the server pod; returns
    its Establish."""
    probe = cluster.start(pod or cluster.client,
                          [tools["nc"], "-z", "-w", "3", cluster.server.address, str(port)])
    code = wait_exit(probe)
    assert code == 0, f"nc -z exited with {code}: {probe.stderr.read().decode()!r}"
    return only(agent.wait_events(kind=ESTABLISH, pid=probe.pid, daddr=cluster.server.address,
                                  dport=port), "Establish of the probe")


def connect_until_pod(cluster, agent, tools, timeout, port=SERVER_PORT, pod=None):
    """Connects from the client pod every 0.2 s until an Establish carries `pod` (by default
    the client's expected pod object). Returns (that Establish, seconds it took)."""
    expected = cluster.client.expected() if pod is None else pod
    start = time.monotonic()
    seen = []

    def attempt():
        establish = connect_from_client(cluster, agent, tools, port)
        seen.append(establish)
        if establish.get("pod") == expected:
            return establish
        time.sleep(0.2)
        return None

    establish = wait_for(attempt, timeout=timeout, interval=0, what=lambda: (
        f"a connection from the client pod carrying {json.dumps(expected)}; last Establish: "
        f"{json.dumps(seen[-1]) if seen else None}"))
    return establish, time.monotonic() - start


# ---------------------------------------------------------------------------------------------
# Kubelet stand-in and agent flags


@pytest.fixture(scope="session")
def kubelet_certs(tmp_path_factory):
    if not shutil.which("openssl"):
        skip_or_fail("the openssl command is not installed")
    return kubelet_stub.make_certificates(str(tmp_path_factory.mktemp("kubelet-tls")))


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "token"
    path.write_text(f"token-{uuid.uuid4().hex}\n")
    path.chmod(0o600)
    return path


def read_token(path):
    return path.read_text().strip()


def write_token(path, token):
    """Replaces the token file atomically, as the kubelet rotates projected tokens."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(token + "\n")
    tmp.chmod(0o600)
    os.replace(tmp, path)


@pytest.fixture
def kubelet(kubelet_certs, token_file):
    """A factory: kubelet(items, port=0, start=True) makes a stub that requires the token in
    `token_file` and serves `items`. All are stopped at teardown."""
    stubs = []

    def make(items=(), port=0, start=True):
        stub = kubelet_stub.KubeletStub(kubelet_certs["cert"], kubelet_certs["key"],
                                        read_token(token_file), port=port)
        stub.set_pods(list(items))
        stubs.append(stub)
        if start:
            stub.start()
        return stub

    yield make
    for stub in stubs:
        stub.stop()


def agent_flags(cluster, url=None, token_file=None, ca_file=None, insecure=False, poll=1,
                grace=60):
    flags = ["--cgroup-root", cluster.mount, "--node-name", NODE_NAME]
    if url:
        flags += ["--kubelet-url", url, "--kubelet-poll-interval", str(poll),
                  "--pod-grace-period", str(grace)]
        if token_file:
            flags += ["--kubelet-token-file", str(token_file)]
        if ca_file:
            flags += ["--kubelet-ca-file", ca_file]
        if insecure:
            flags += ["--kubelet-insecure-skip-verify"]
    return flags


LOG = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z netmon (?:debug|info|warn|error): "


def log_lines(agent, pattern):
    """stderr lines whose message (after the timestamp and level) fully matches `pattern`."""
    regex = re.compile(LOG + pattern)
    return [line for line in agent.stderr_text().splitlines() if regex.fullmatch(line)]


def wait_log(agent, pattern, timeout=SYNC_TIMEOUT):
    return wait_for(lambda: log_lines(agent, pattern), timeout=timeout,
                    what=lambda: f"a log line matching {pattern!r}; stderr:\n"
                                 f"{agent.stderr_text()}")


def synced_pattern(url):
    return rf"kubelet {re.escape(url)}: (?:first pods sync done|pods synced)"


def failure_pattern(url, reason, detail=".+"):
    return rf"kubelet {re.escape(url)}: {reason}: {detail}{re.escape(NOT_UNTIL_RECOVERY)}"


def start_synced_agent(start_agent, cluster, stub, token_file, **kwargs):
    kwargs.setdefault("ca_file", None)
    agent = start_agent(*agent_flags(cluster, stub.url, token_file, **kwargs))
    wait_log(agent, synced_pattern(stub.url))
    return agent


def assert_no_pod(event, container_id=None):
    """No pod; process.container_id is `container_id` (absent when None)."""
    assert "pod" not in event, json.dumps(event)
    assert event["process"] is not None, json.dumps(event)
    if container_id is None:
        assert "container_id" not in event["process"], json.dumps(event)
    else:
        assert event["process"]["container_id"] == container_id, json.dumps(event)
    assert event["node_name"] == NODE_NAME, json.dumps(event)


def assert_pod(event, pod, labels=None):
    """The event is attributed to `pod`'s container, with exactly its metadata."""
    assert event.get("pod") == pod.expected(labels), json.dumps(event)
    assert event["process"]["container_id"] == pod.container_id, json.dumps(event)
    assert event["node_name"] == NODE_NAME, json.dumps(event)


# ---------------------------------------------------------------------------------------------
# The reference scenario


def nc_telnet_between_pods(cluster, agent, tools):
    """`nc -l 7878` in the server pod, `telnet <server> 7878` in the client pod, then nc is
    stopped. Returns (establish, accept, telnet's close, nc's close, telnet, nc)."""
    s, c = cluster.server, cluster.client
    nc = cluster.start(s, [tools["nc"], "-l", str(SERVER_PORT)])
    wait_for(lambda: netns_listening(nc.pid, s.netns, SERVER_PORT), what="nc listening")
    telnet = cluster.start(c, [tools["telnet"], s.address, str(SERVER_PORT)])
    agent.wait_events(kind=ESTABLISH, pid=telnet.pid, daddr=s.address, dport=SERVER_PORT)
    agent.wait_events(kind=ACCEPT, pid=nc.pid, saddr=s.address, sport=SERVER_PORT)
    agent.sync()
    establish = only(agent.events(kind=ESTABLISH, pid=telnet.pid, daddr=s.address,
                                  dport=SERVER_PORT), "Establish of telnet")
    tport = establish["network_event"]["sport"]
    accept = only(agent.events(kind=ACCEPT, saddr=s.address, sport=SERVER_PORT,
                               daddr=c.address, dport=tport), "Accept of nc")

    nc.send_signal(signal.SIGTERM)
    wait_exit(nc)
    wait_exit(telnet)
    closes = []
    for opened in (establish, accept):
        agent.wait_events(kind=CLOSE, ports={SERVER_PORT}, **same_connection(opened))
    agent.sync()
    for opened, what in ((establish, "Close of telnet"), (accept, "Close of nc")):
        closes.append(only(agent.events(kind=CLOSE, ports={SERVER_PORT},
                                        **same_connection(opened)), what))
    return establish, accept, closes[0], closes[1], telnet, nc


@pytest.mark.kernel_matrix
def test_pods_of_nc_and_telnet(start_agent, fake_pods, kubelet, token_file, kubelet_certs,
                               real_tools):
    """telnet in the web pod (cgroupfs driver, BestEffort, Deployment via its ReplicaSet)
    connects to nc in the db pod (systemd driver, Burstable, StatefulSet): telnet's Establish
    carries the web pod, nc's Accept the db pod, each Close the pod of its open event, and
    every one the container id and --node-name."""
    s, c = fake_pods.server, fake_pods.client
    stub = kubelet([s.item(), c.item()])
    agent = start_synced_agent(start_agent, fake_pods, stub, token_file,
                               ca_file=kubelet_certs["ca"])

    establish, accept, telnet_close, nc_close, telnet, nc = nc_telnet_between_pods(
        fake_pods, agent, real_tools)
    tport = establish["network_event"]["sport"]

    ne = establish["network_event"]
    assert (ne["saddr"], ne["sport"], ne["daddr"], ne["dport"]) == (
        c.address, tport, s.address, SERVER_PORT)
    assert establish["process"]["pid"] == telnet.pid
    assert establish["pod"] == {
        "namespace": "shop",
        "name": "web-5d9c8b7f6-x2k9p",
        "uid": c.uid,
        "workload": "web",
        "workload_kind": "Deployment",
        "labels": {"app": "web", "pod-template-hash": "5d9c8b7f6"},
        "container": {"id": c.container_id, "name": "nginx",
                      "image": "docker.io/library/nginx:1.25.3", "image_id": c.image_id},
    }, json.dumps(establish)
    assert establish["process"]["container_id"] == c.container_id
    assert establish["node_name"] == NODE_NAME

    ne = accept["network_event"]
    assert (ne["saddr"], ne["sport"], ne["daddr"], ne["dport"]) == (
        s.address, SERVER_PORT, c.address, tport)
    assert accept["process"]["pid"] == nc.pid
    assert accept["pod"] == {
        "namespace": "shop",
        "name": "db-0",
        "uid": s.uid,
        "workload": "db",
        "workload_kind": "StatefulSet",
        "labels": {"app": "db", "controller-revision-hash": "db-7c9f8d6b54",
                   "statefulset.kubernetes.io/pod-name": "db-0"},
        "container": {"id": s.container_id, "name": "postgres",
                      "image": "docker.io/library/postgres:16.1", "image_id": s.image_id},
    }, json.dumps(accept)
    assert accept["process"]["container_id"] == s.container_id
    assert accept["node_name"] == NODE_NAME

    for close, opened in ((telnet_close, establish), (nc_close, accept)):
        assert close["network_event"]["sport"] == opened["network_event"]["sport"]
        assert close["process"]["pid"] == opened["process"]["pid"]
        assert close["pod"] == opened["pod"], json.dumps(close)
        assert close["process"]["container_id"] == opened["process"]["container_id"]
        assert close["node_name"] == NODE_NAME


def test_pod_events_match_the_schema(start_agent, fake_pods, kubelet, token_file, kubelet_certs,
                                     real_tools):
    """Events carrying pod, node_name and process.container_id are valid against
    docs/event.schema.json (JSON Schema 2020-12)."""
    jsonschema = pytest.importorskip("jsonschema")
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        validator = jsonschema.Draft202012Validator(json.load(f))
    s, c = fake_pods.server, fake_pods.client
    stub = kubelet([s.item(), c.item()])
    agent = start_synced_agent(start_agent, fake_pods, stub, token_file,
                               ca_file=kubelet_certs["ca"])
    events = nc_telnet_between_pods(fake_pods, agent, real_tools)[:4]
    assert all("pod" in e for e in events), "\n".join(map(json.dumps, events))

    problems = []
    for event in events:
        for error in validator.iter_errors(event):
            where = "/".join(map(str, error.absolute_path)) or "(top level)"
            # For oneOf (process or null), the reasons of the object branch, not the instance.
            reasons = sorted({sub.message for sub in error.context if sub.validator != "type"})
            message = "; ".join(reasons) if reasons else error.message
            problems.append(f"{event['network_event']['type']} at {where}: {message}")
    assert problems == [], "docs/event.schema.json rejects the events:\n" + "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# Who gets no pod


def test_host_process_has_no_pod(start_agent, fake_pods, kubelet, token_file, kubelet_certs,
                                 real_tools):
    """A loopback connection of this (host) test process carries neither pod nor
    process.container_id, while pod connections resolve with the same agent."""
    s, c = fake_pods.server, fake_pods.client
    stub = kubelet([s.item(), c.item()])
    agent = start_synced_agent(start_agent, fake_pods, stub, token_file,
                               ca_file=kubelet_certs["ca"])
    start_server(fake_pods, real_tools)
    assert_pod(connect_from_client(fake_pods, agent, real_tools), c)

    server = Listener(socket.AF_INET, "127.0.0.1", expected=1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as client:
        cport = client.getsockname()[1]
    server.close()
    agent.wait_events(count=4, ports={server.port})
    agent.sync(closed_ports={server.port})
    events = agent.events(ports={server.port})
    assert sorted(e["network_event"]["type"] for e in events) == sorted(
        [ESTABLISH, ACCEPT, CLOSE, CLOSE]), "\n".join(map(json.dumps, events))
    for event in events:
        assert event["process"]["pid"] == os.getpid(), json.dumps(event)
        assert_no_pod(event)
    establish = only([e for e in events if e["network_event"]["type"] == ESTABLISH],
                     "Establish")
    assert establish["network_event"]["sport"] == cport


def test_without_kubelet_container_ids_but_no_pod(start_agent, fake_pods, real_tools):
    """With no kubelet flag (and not in a cluster), events from the pods' cgroups carry
    process.container_id, taken from the cgroup path, but no pod."""
    agent = start_agent(*agent_flags(fake_pods))
    assert log_lines(agent, "no kubelet configured: events carry container ids but no pod "
                            "metadata"), agent.stderr_text()
    s, c = fake_pods.server, fake_pods.client
    nc = start_server(fake_pods, real_tools)
    establish = connect_from_client(fake_pods, agent, real_tools)
    tport = establish["network_event"]["sport"]
    accept = agent.wait_events(kind=ACCEPT, pid=nc.pid, sport=SERVER_PORT, dport=tport)[0]
    pod_addresses = {s.address, c.address}

    def closes_of_connection():
        return [e for e in agent.events(kind=CLOSE, ports={tport})
                if e["network_event"]["saddr"] in pod_addresses]

    wait_for(lambda: len(closes_of_connection()) >= 2, what="both Closes")
    agent.sync()
    closes = closes_of_connection()
    assert len(closes) == 2, "\n".join(map(json.dumps, closes))
    assert_no_pod(establish, c.container_id)
    assert_no_pod(accept, s.container_id)
    by_pid = {establish["process"]["pid"]: c.container_id, nc.pid: s.container_id}
    for close in closes:
        assert_no_pod(close, by_pid[close["process"]["pid"]])


def test_short_lived_container_keeps_its_id(start_agent, fake_pods):
    """A container that execs, connects and exits at once, its cgroup removed right after (as
    runtimes do), still has its id on the connection's event: the agent resolves a cgroup when
    its first process execs, not only when a connection's record is read."""
    agent = start_agent(*agent_flags(fake_pods))
    container_id = random_container_id()
    cgroup = os.path.join(os.path.dirname(fake_pods.client.cgroup), container_id)
    os.mkdir(cgroup)
    port = free_port()  # nothing listens: the connect is refused
    try:
        def join_cgroup():
            with open(os.path.join(cgroup, "cgroup.procs"), "w", encoding="ascii") as f:
                f.write(str(os.getpid()))

        script = f"exec 3<>/dev/tcp/127.0.0.1/{port}"
        proc = subprocess.run(["bash", "-c", script], preexec_fn=join_cgroup,
                              capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode != 0, "the connect was not refused"
    finally:
        assert remove_cgroup_tree(cgroup) == []
    failed = agent.wait_events(kind="TcpConnectionFailed", dport=port)
    assert len(failed) == 1, failed
    assert failed[0]["process"]["binary_path"] == "/usr/bin/bash", json.dumps(failed[0])
    assert_no_pod(failed[0], container_id)


# ---------------------------------------------------------------------------------------------
# Kubelet failures and recovery


def test_kubelet_down_at_start_then_up(start_agent, fake_pods, kubelet, token_file, real_tools):
    """The kubelet's port refuses connections when the agent starts: pod connections go out
    without pod (the failure is logged as unreachable). Once the kubelet listens there, a
    new connection carries the pod within a few poll intervals."""
    s, c = fake_pods.server, fake_pods.client
    stub = kubelet([s.item(), c.item()], port=kubelet_stub.reserve_port(), start=False)
    agent = start_agent(*agent_flags(fake_pods, stub.url, token_file, insecure=True))
    wait_log(agent, failure_pattern(stub.url, "unreachable", "Connection"))
    start_server(fake_pods, real_tools)
    assert_no_pod(connect_from_client(fake_pods, agent, real_tools), c.container_id)
    assert stub.request_count() == 0

    stub.start()
    establish, _ = connect_until_pod(fake_pods, agent, real_tools, RECOVERY_TIMEOUT)
    assert_pod(establish, c)
    assert stub.ok_count() >= 1
    assert log_lines(agent, rf"kubelet {re.escape(stub.url)}: pods synced"), agent.stderr_text()


def test_token_rotation(start_agent, fake_pods, kubelet, token_file, kubelet_certs, real_tools):
    """The kubelet starts to require a new token and the token file is replaced with it: the
    agent sends the new token and new connections get the (updated) pod again."""
    s, c = fake_pods.server, fake_pods.client
    old_token = read_token(token_file)
    stub = kubelet([s.item(), c.item()])
    agent = start_synced_agent(start_agent, fake_pods, stub, token_file,
                               ca_file=kubelet_certs["ca"])
    start_server(fake_pods, real_tools)
    assert_pod(connect_from_client(fake_pods, agent, real_tools), c)
    assert set(stub.tokens_seen()) == {old_token}

    new_token = f"rotated-{uuid.uuid4().hex}"
    new_labels = {**c.labels, "rotation": "2"}
    stub.require_token(new_token)
    stub.set_pods([s.item(), c.item(labels=new_labels)])
    write_token(token_file, new_token)

    establish, _ = connect_until_pod(fake_pods, agent, real_tools, RECOVERY_TIMEOUT,
                                     pod=c.expected(new_labels))
    assert_pod(establish, c, new_labels)
    requests = stub.requests()
    assert new_token in stub.tokens_seen()
    assert any(r["token"] == new_token and r["status"] == 200 for r in requests), requests
    assert not any(r["token"] not in (old_token, new_token) for r in requests), requests


def test_unauthorized_then_success(start_agent, fake_pods, kubelet, token_file, kubelet_certs,
                                   real_tools):
    """The kubelet answers 401 to the first 3 requests: the agent logs "unauthorized" (after
    retrying once with the re-read token), and pods appear once the kubelet accepts it."""
    s, c = fake_pods.server, fake_pods.client
    stub = kubelet([s.item(), c.item()])
    stub.fail_next(3, 401)
    agent = start_agent(*agent_flags(fake_pods, stub.url, token_file,
                                     ca_file=kubelet_certs["ca"]))
    wait_log(agent, failure_pattern(stub.url, "unauthorized", "401 Unauthorized"))
    wait_log(agent, synced_pattern(stub.url))
    statuses = [r["status"] for r in stub.requests()]
    assert statuses[:4] == [401, 401, 401, 200], statuses
    assert set(stub.tokens_seen()) == {read_token(token_file)}

    start_server(fake_pods, real_tools)
    establish, _ = connect_until_pod(fake_pods, agent, real_tools, RECOVERY_TIMEOUT)
    assert_pod(establish, c)


TLS_CASES = {
    # name: (CA file key or None, --kubelet-insecure-skip-verify, pods expected)
    "system-trust-store": (None, False, False),
    "wrong-ca": ("other_ca", False, False),
    "insecure-skip-verify": (None, True, True),
    "right-ca": ("ca", False, True),
}


@pytest.mark.parametrize("case", list(TLS_CASES))
def test_kubelet_tls_verification(start_agent, fake_pods, kubelet, token_file, kubelet_certs,
                                  real_tools, case):
    """The kubelet's certificate is signed by a test CA: it is trusted with that CA as
    --kubelet-ca-file, or with --kubelet-insecure-skip-verify; with the system trust store or
    an unrelated CA the handshake fails (tls_error) and events carry no pod."""
    ca_key, insecure, works = TLS_CASES[case]
    s, c = fake_pods.server, fake_pods.client
    stub = kubelet([s.item(), c.item()])
    agent = start_agent(*agent_flags(fake_pods, stub.url, token_file, insecure=insecure,
                                     ca_file=kubelet_certs[ca_key] if ca_key else None))
    start_server(fake_pods, real_tools)
    if works:
        wait_log(agent, synced_pattern(stub.url))
        assert_pod(connect_from_client(fake_pods, agent, real_tools), c)
        assert stub.ok_count() >= 1
        assert not log_lines(agent, failure_pattern(stub.url, "tls_error")), agent.stderr_text()
    else:
        wait_log(agent, failure_pattern(stub.url, "tls_error", TLS_VERIFICATION_FAILED))
        assert_no_pod(connect_from_client(fake_pods, agent, real_tools), c.container_id)
        # The agent reached the stub but never sent a request: the handshake failed on its
        # side ("tls_failed" here), or it rejected the certificate after the handshake and
        # hung up ("no_request").
        assert stub.request_count() == 0, stub.requests()
        outcomes = stub.connection_outcomes()
        assert outcomes and set(outcomes) <= {"tls_failed", "no_request"}, outcomes


def test_early_refresh_for_unknown_pod(start_agent, fake_pods, kubelet, token_file,
                                       kubelet_certs, real_tools):
    """Poll interval 60 s; the client pod is missing from the first PodList. A connection from
    its cgroup makes the agent poll early: within 5 s a connection carries the pod."""
    s, c = fake_pods.server, fake_pods.client
    stub = kubelet([s.item()])
    agent = start_synced_agent(start_agent, fake_pods, stub, token_file,
                               ca_file=kubelet_certs["ca"], poll=60)
    assert stub.request_count() == 1
    start_server(fake_pods, real_tools)
    stub.set_pods([s.item(), c.item()])

    first = connect_from_client(fake_pods, agent, real_tools)
    assert_no_pod(first, c.container_id)  # the agent's snapshot lacks the pod
    establish, elapsed = connect_until_pod(fake_pods, agent, real_tools, EARLY_REFRESH_TIMEOUT)
    assert_pod(establish, c)
    assert stub.request_count() >= 2
    assert elapsed < EARLY_REFRESH_TIMEOUT


def test_garbage_keeps_last_good_snapshot(start_agent, fake_pods, kubelet, token_file,
                                          kubelet_certs, real_tools):
    """After the kubelet starts answering with malformed JSON, the agent logs bad_response and
    keeps its last good pods: connections still resolve, including the first one ever seen
    from the server pod's cgroup."""
    s, c = fake_pods.server, fake_pods.client
    stub = kubelet([s.item(), c.item()])
    agent = start_synced_agent(start_agent, fake_pods, stub, token_file,
                               ca_file=kubelet_certs["ca"])
    # Before: the server is a host process in the server's namespace (not in its cgroup).
    host_nc = start_server(fake_pods, real_tools, in_pod=False)
    before = connect_from_client(fake_pods, agent, real_tools)
    assert_pod(before, c)
    host_nc.kill()
    wait_exit(host_nc)

    stub.serve_garbage()
    good = stub.ok_count()
    wait_log(agent, failure_pattern(stub.url, "bad_response",
                                    r"kubelet pod list: malformed JSON: \[json\.exception\."
                                    r"parse_error\.101\] .+"))
    assert any(r["garbage"] for r in stub.requests())

    port = SERVER_PORT + 1
    nc = start_server(fake_pods, real_tools, port=port)
    after = connect_from_client(fake_pods, agent, real_tools, port=port)
    tport = after["network_event"]["sport"]
    accept = agent.wait_events(kind=ACCEPT, pid=nc.pid, sport=port, dport=tport)[0]
    assert_pod(after, c)
    assert_pod(accept, s)
    assert stub.ok_count() == good  # no good PodList since: the pods are the kept ones


def test_kubelet_that_stops_answering(start_agent, fake_pods, kubelet, token_file,
                                      kubelet_certs, real_tools):
    """The kubelet accepts requests but stops answering them: events are not held up (they
    keep the last good pods), and once the 10 s read timeout passes the failure is logged as
    a timeout."""
    s, c = fake_pods.server, fake_pods.client
    stub = kubelet([s.item(), c.item()])
    agent = start_synced_agent(start_agent, fake_pods, stub, token_file,
                               ca_file=kubelet_certs["ca"])
    start_server(fake_pods, real_tools)
    assert_pod(connect_from_client(fake_pods, agent, real_tools), c)

    stub.hang()
    wait_for(lambda: any(r["hung"] for r in stub.requests()), what="a hung kubelet request")
    started = time.monotonic()
    establish = connect_from_client(fake_pods, agent, real_tools)
    assert time.monotonic() - started < 3.0, "events waited for the kubelet"
    assert_pod(establish, c)
    # Read timeout 10 s; the line comes when the hung request gives up.
    wait_log(agent, failure_pattern(stub.url, r"\w+", ".+"), timeout=KUBELET_READ_TIMEOUT + 5)
    assert log_lines(agent, failure_pattern(stub.url, "timeout", ".+")), (
        "a kubelet that does not answer within the read timeout is not logged as timeout:\n"
        + "\n".join(log_lines(agent, failure_pattern(stub.url, r"\w+", ".+"))))


def test_stop_while_a_kubelet_request_hangs(start_agent, fake_pods, kubelet, token_file,
                                            kubelet_certs):
    """SIGTERM while the kubelet holds a request unanswered: the agent aborts the request and
    exits 0 at once, and the "stopped:" summary stays the last line (the aborted request is
    not reported as a kubelet failure)."""
    s, c = fake_pods.server, fake_pods.client
    stub = kubelet([s.item(), c.item()])
    stub.hang()
    agent = start_agent(*agent_flags(fake_pods, stub.url, token_file,
                                     ca_file=kubelet_certs["ca"]))
    wait_for(lambda: stub.request_count() >= 1, what="the agent's first kubelet request")
    started = time.monotonic()
    code = agent.stop(signal.SIGTERM)
    elapsed = time.monotonic() - started
    assert code == 0, agent.stderr_text()
    assert elapsed < 3.0, f"the agent took {elapsed:.1f} s to stop"
    last = agent.stderr_lines[-1]
    assert re.fullmatch(LOG + "stopped: .+", last), "\n".join(agent.stderr_lines[-3:])


# ---------------------------------------------------------------------------------------------
# Workloads, QoS layouts, and pods the kubelet reports differently


def test_workload_kinds_and_guaranteed_layouts(start_agent, fake_pods, kubelet, token_file,
                                               kubelet_certs, real_tools):
    """More pods, each making one connection: a static pod (systemd driver, Guaranteed, so no
    QoS level, and the kubelet's 32-hex config hash as uid) -> (node name, "Node"); a CronJob's
    pod (cgroupfs driver, Guaranteed) -> ("backup", "CronJob"); a DaemonSet's pod (systemd,
    BestEffort); a pod without controller (cgroupfs, Burstable) -> (its name, "Pod")."""
    static_uid = os.urandom(16).hex()
    extra = [
        FakePod(name=f"kube-proxy-{NODE_NAME}", namespace="kube-system", uid=static_uid,
                labels={"component": "kube-proxy", "tier": "node"}, owner=None,
                annotations={"kubernetes.io/config.source": "file",
                             "kubernetes.io/config.hash": static_uid},
                workload=(NODE_NAME, "Node"), container_name="kube-proxy",
                image="registry.k8s.io/kube-proxy:v1.29.0", qos_class="Guaranteed",
                layout="systemd"),
        FakePod(name="backup-28391520-7xk2q", labels={"job-name": "backup-28391520"},
                owner=("Job", "backup-28391520"), workload=("backup", "CronJob"),
                container_name="backup", image="docker.io/library/busybox:1.36",
                qos_class="Guaranteed", layout="cgroupfs"),
        FakePod(name="node-exporter-4hz8m", namespace="monitoring",
                labels={"app.kubernetes.io/name": "node-exporter"},
                owner=("DaemonSet", "node-exporter"), workload=("node-exporter", "DaemonSet"),
                container_name="node-exporter", image="quay.io/prometheus/node-exporter:v1.7.0",
                qos_class="BestEffort", layout="systemd"),
        FakePod(name="debug-shell", labels={}, owner=None, workload=("debug-shell", "Pod"),
                container_name="shell", image="docker.io/library/alpine:3.19",
                qos_class="Burstable", layout="cgroupfs"),
    ]
    for pod in extra:
        fake_pods.add_pod(pod)
    s, c = fake_pods.server, fake_pods.client
    stub = kubelet([s.item(), c.item(), *(p.item() for p in extra)])
    agent = start_synced_agent(start_agent, fake_pods, stub, token_file,
                               ca_file=kubelet_certs["ca"])
    start_server(fake_pods, real_tools)
    for pod in extra:
        establish = connect_from_client(fake_pods, agent, real_tools, pod=pod)
        assert_pod(establish, pod)
    assert [p.expected()["workload_kind"] for p in extra] == [
        "Node", "CronJob", "DaemonSet", "Pod"]


def test_container_unknown_to_kubelet_resolves_by_pod_uid(start_agent, fake_pods, kubelet,
                                                         token_file, kubelet_certs,
                                                         real_tools):
    """The kubelet still reports the client pod's previous container id (the new container's
    status is not there yet): the connection resolves to the pod by its uid, and the pod's
    container names only the id from the cgroup. The event is valid against the schema."""
    jsonschema = pytest.importorskip("jsonschema")
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        validator = jsonschema.Draft202012Validator(json.load(f))
    s, c = fake_pods.server, fake_pods.client
    stub = kubelet([s.item(), c.item(container_id=random_container_id())])
    agent = start_synced_agent(start_agent, fake_pods, stub, token_file,
                               ca_file=kubelet_certs["ca"])
    start_server(fake_pods, real_tools)
    establish = connect_from_client(fake_pods, agent, real_tools)
    expected = {**c.expected(), "container": {"id": c.container_id}}
    assert establish.get("pod") == expected, json.dumps(establish)
    assert establish["process"]["container_id"] == c.container_id
    errors = [e.message for e in validator.iter_errors(establish)]
    assert errors == [], errors


def test_deleted_pod_stays_for_the_grace_period(start_agent, fake_pods, kubelet, token_file,
                                                kubelet_certs, real_tools):
    """The client pod disappears from the kubelet's list while telnet's connection is open:
    within --pod-grace-period its Close, and new connections from its cgroup, still carry the
    pod; after the grace period new connections carry none."""
    grace = 5
    s, c = fake_pods.server, fake_pods.client
    stub = kubelet([s.item(), c.item()])
    agent = start_synced_agent(start_agent, fake_pods, stub, token_file,
                               ca_file=kubelet_certs["ca"], grace=grace)
    nc = start_server(fake_pods, real_tools)
    telnet = fake_pods.start(c, [real_tools["telnet"], s.address, str(SERVER_PORT)])
    establish = agent.wait_events(kind=ESTABLISH, pid=telnet.pid, daddr=s.address,
                                  dport=SERVER_PORT)[0]
    assert_pod(establish, c)

    stub.set_pods([s.item()])
    removed = time.monotonic()
    served = stub.ok_count()
    wait_for(lambda: stub.ok_count() >= served + 2, what="two polls without the client pod")
    assert time.monotonic() - removed < grace, "the polls took longer than the grace period"
    telnet.kill()
    wait_exit(telnet)
    close = only(agent.wait_events(kind=CLOSE, ports={SERVER_PORT}, **same_connection(establish)),
                 "Close")
    assert close["process"]["pid"] == telnet.pid
    assert_pod(close, c)

    def no_pod_any_more():
        e = connect_from_client(fake_pods, agent, real_tools)
        return e if "pod" not in e else time.sleep(0.3)

    after = wait_for(no_pod_any_more, timeout=grace + RECOVERY_TIMEOUT, interval=0,
                     what="a connection from the deleted pod without pod")
    assert time.monotonic() - removed >= grace, json.dumps(after)
    assert_no_pod(after, c.container_id)
    nc.kill()
