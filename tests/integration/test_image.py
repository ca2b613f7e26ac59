"""The agent's container image, built from the Dockerfile and run the way the DaemonSet runs it.

ctest runs this file as its own entry, `image` (labels image, privileged); the `integration`
entry leaves it out. It needs root, podman, runc and debootstrap (scripts/install-deps.sh), and
fails instead of skipping under CI=true.

No registry is reachable, so the `debian:bookworm` base is made here, once: debootstrap
(minbase) from this machine's Debian mirror, a tarball cached in the tools cache
(${NETMON_TOOLS_DIR:-${XDG_CACHE_HOME:-~/.cache}/netmon-tools}, as scripts/helm-tools.sh), and
`podman import` as docker.io/library/debian:bookworm, which stays in podman's store. podman runs
with a private containers.conf (CONTAINERS_CONF): runc, the cgroupfs manager, and nofile/nproc
limits this machine allows.

The agent container gets exactly what manifests/netmon.yaml (the chart rendered with its
defaults; test_chart.py keeps it in sync) gives the pod: hostPID, the read-only hostPath mounts,
the ConfigMap at /etc/netmon, capabilities, seccomp profile, user, read-only root, environment,
args and limits. A second container (the same base, --network none) runs a perl server and bash
clients on its own loopback; the agent must report their Establish, Accept and Close events with
`process.container_id` equal to the id podman gives that container.
"""

import os
import resource
import secrets
import shutil
import socket
import subprocess
import tempfile
import time

import pytest
import yaml

from conftest import (
    Agent,
    assert_no_programs_left,
    bpf_objects_of,
    bpf_unavailable_reason,
    skip_or_fail,
    wait_for,
)

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MANIFEST = os.path.join(REPO_ROOT, "manifests", "netmon.yaml")
IMAGE_CONFIG = os.path.join(REPO_ROOT, "image", "config.yaml")

BASE_IMAGE = "docker.io/library/debian:bookworm"
SUITE = "bookworm"
TOOLS_DIR = os.environ.get("NETMON_TOOLS_DIR") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "netmon-tools"
)
BASE_TARBALL = os.path.join(TOOLS_DIR, f"debian-{SUITE}-minbase.tar")

DEBOOTSTRAP_TIMEOUT = 900  # seconds; about 80 s with a nearby mirror
BUILD_TIMEOUT = 1200  # seconds for `podman build`: apt in both stages, the agent's compile
PODMAN_TIMEOUT = 120  # seconds for any other podman command
AGENT_START_TIMEOUT = 60.0  # seconds until the containerized agent says "netmon is running"
WORKLOAD_TIMEOUT = 60  # seconds for the workload container to finish
CONNECTIONS = 3  # client connections the workload makes


# ---------------------------------------------------------------------------------------------
# podman


def podman(*args, timeout=PODMAN_TIMEOUT, check=True):
    """Runs podman (with the test's CONTAINERS_CONF, set by the podman_env fixture)."""
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)} exited with {result.returncode}:\n{result.stderr[-4000:]}"
        )
    return result


def containers_conf_text():
    """runc, the cgroupfs manager, and nofile/nproc limits no higher than this process's: the
    defaults (1048576 open files) are above what this machine's hard limit allows."""
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 1048576)
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 32768)
    return (
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
    )


@pytest.fixture(scope="module")
def podman_env(tmp_path_factory):
    """Root, podman, runc and debootstrap present, and podman working with the private
    containers.conf (exported as CONTAINERS_CONF for the module's podman commands)."""
    if os.geteuid() != 0:
        skip_or_fail("needs root to run podman and load BPF programs")
    for tool in ("podman", "runc", "debootstrap", "curl", "nsenter"):
        if shutil.which(tool) is None:
            skip_or_fail(f"{tool} not found (scripts/install-deps.sh installs it)")
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    conf.write_text(containers_conf_text())
    saved = os.environ.get("CONTAINERS_CONF")
    os.environ["CONTAINERS_CONF"] = str(conf)
    try:
        info = podman("info", "--format", "{{.Host.OCIRuntime.Name}} {{.Host.CgroupManager}}",
                      check=False)
        if info.returncode != 0:
            skip_or_fail(f"podman does not work here: {info.stderr.strip()[-2000:]}")
        assert info.stdout.split() == ["runc", "cgroupfs"], info.stdout
        yield str(conf)
    finally:
        if saved is None:
            os.environ.pop("CONTAINERS_CONF", None)
        else:
            os.environ["CONTAINERS_CONF"] = saved


# ---------------------------------------------------------------------------------------------
# The debian:bookworm base, made locally


def _sources_entries(path):
    """(uris, suites, components) of each `deb` entry of one apt sources file, one-line (.list)
    or deb822 (.sources)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return []
    entries = []
    if path.endswith(".sources"):
        for stanza in text.split("\n\n"):
            fields = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.split()
            if "deb" in fields.get("types", []) and fields.get("enabled", ["yes"]) != ["no"]:
                entries.append((fields.get("uris", []), fields.get("suites", []),
                                fields.get("components", [])))
    else:
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            if not words or words[0] != "deb":
                continue
            words = [w for w in words[1:] if not w.startswith("[")]  # no [arch=...] options
            if len(words) >= 3:
                entries.append(([words[0]], [words[1]], words[2:]))
    return entries


def debian_sources():
    """This machine's Debian entries for the suite: [(uri, [suites])], the plain suite's mirror
    first. NETMON_DEBIAN_MIRROR overrides the mirror."""
    paths = ["/etc/apt/sources.list"]
    parts = "/etc/apt/sources.list.d"
    if os.path.isdir(parts):
        paths += [os.path.join(parts, p) for p in sorted(os.listdir(parts))]
    found = {}
    for path in paths:
        for uris, suites, components in _sources_entries(path):
            ours = [s for s in suites if s == SUITE or s.startswith(SUITE + "-")]
            if not ours or "main" not in components:
                continue
            for uri in uris:
                found.setdefault(uri.rstrip("/"), [])
                found[uri.rstrip("/")] += [s for s in ours if s not in found[uri.rstrip("/")]]
    override = os.environ.get("NETMON_DEBIAN_MIRROR")
    if override:
        found = {override.rstrip("/"): [SUITE], **{u: s for u, s in found.items()
                                                    if SUITE not in s}}
    entries = sorted(found.items(), key=lambda e: SUITE not in e[1])
    if not entries or SUITE not in entries[0][1]:
        skip_or_fail(f"no Debian mirror for {SUITE} main in /etc/apt/sources.list* "
                     "(set NETMON_DEBIAN_MIRROR)")
    return entries


def make_base_tarball(path):
    """debootstrap --variant=minbase into a directory next to `path`, apt sources as this
    machine's Debian entries, no package lists or .debs; tar it to `path` (atomically)."""
    entries = debian_sources()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    root = tempfile.mkdtemp(prefix="debootstrap-", dir=os.path.dirname(path))
    try:
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", SUITE, root, entries[0][0]],
            capture_output=True, text=True, timeout=DEBOOTSTRAP_TIMEOUT, check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"debootstrap failed ({result.returncode}):\n"
                                 f"{(result.stdout + result.stderr)[-4000:]}")
        with open(os.path.join(root, "etc/apt/sources.list.d/debian.sources"), "w",
                  encoding="utf-8") as f:
            f.write("\n".join(
                f"Types: deb\nURIs: {uri}\nSuites: {' '.join(suites)}\nComponents: main\n"
                "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
                for uri, suites in entries))
        os.remove(os.path.join(root, "etc/apt/sources.list"))
        for d in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for name in os.listdir(os.path.join(root, d)):
                target = os.path.join(root, d, name)
                if os.path.isfile(target):
                    os.remove(target)
        partial = path + ".partial"
        subprocess.run(["tar", "--numeric-owner", "-C", root, "-cf", partial, "."],
                       check=True, timeout=300)
        os.replace(partial, path)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def base_image(podman_env):
    """docker.io/library/debian:bookworm in podman's store; made once, then reused."""
    if podman("image", "exists", BASE_IMAGE, check=False).returncode != 0:
        if not os.path.exists(BASE_TARBALL):
            make_base_tarball(BASE_TARBALL)
        podman("import", "--change", 'CMD ["bash"]', BASE_TARBALL, BASE_IMAGE,
               timeout=300)
    return BASE_IMAGE


# ---------------------------------------------------------------------------------------------
# The agent's image


def git(*args):
    result = subprocess.run(["git", "-C", REPO_ROOT, *args], capture_output=True, text=True,
                            timeout=30, check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def image_ids():
    out = podman("images", "--all", "--no-trunc", "--format", "{{.ID}}").stdout
    return set(out.split())


@pytest.fixture(scope="module")
def agent_image(base_image, tmp_path_factory):
    """Builds the Dockerfile (no registry: --pull=never; the build stage's apt needs the
    network: --network host). Yields (tag, build args); removes the image and whatever
    untagged images the build left."""
    tag = f"localhost/netmon-agent:test-{secrets.token_hex(4)}"
    build_args = {
        "VERSION": git("describe", "--tags", "--always", "--dirty") or "0.1.0-test",
        "REVISION": git("rev-parse", "HEAD") or "unknown",
        "SOURCE": git("remote", "get-url", "origin") or f"file://{REPO_ROOT}",
    }
    before = image_ids()
    log = tmp_path_factory.mktemp("build") / "podman-build.log"
    command = ["podman", "build", "--pull=never", "--network", "host", "--layers=false",
               "--force-rm", "-f", os.path.join(REPO_ROOT, "Dockerfile"), "-t", tag]
    for key, value in build_args.items():
        command += ["--build-arg", f"{key}={value}"]
    start = time.monotonic()
    try:
        with open(log, "w", encoding="utf-8") as out:
            result = subprocess.run(command + [REPO_ROOT], stdout=out, stderr=subprocess.STDOUT,
                                    timeout=BUILD_TIMEOUT, check=False)
        text = log.read_text(errors="replace")
        assert result.returncode == 0, f"podman build failed ({result.returncode}):\n{text[-6000:]}"
        print(f"image built in {time.monotonic() - start:.0f} s")
        yield tag, build_args
    finally:
        podman("rmi", "--force", tag, check=False)
        for leftover in image_ids() - before:
            podman("rmi", "--force", leftover, check=False)


# ---------------------------------------------------------------------------------------------
# The DaemonSet, from the rendered chart


def manifest_objects():
    with open(MANIFEST, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], d)
    return by_kind["DaemonSet"], by_kind["ConfigMap"]


def cgroup2_mounts():
    """Mount points of cgroup v2 hierarchies on this machine."""
    points = set()
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[:1] == ["cgroup2"]:
                points.add(left.split()[4])
    return points


def host_cgroup_root(chart_value):
    """The chart's cgroupRoot for this machine, as docs/deployment.md says to set it: the
    default on cgroup v2-only hosts, "<default>/unified" on hybrid ones."""
    v2 = cgroup2_mounts()
    if "/sys/fs/cgroup" in v2:
        return chart_value
    if "/sys/fs/cgroup/unified" in v2:
        return chart_value.rstrip("/") + "/unified"
    skip_or_fail("no cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified")
    return None


def quantity_mib(value):
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    for suffix, factor in units.items():
        if str(value).endswith(suffix):
            return int(float(str(value)[: -len(suffix)]) * factor)
    return int(int(value) / (1024 * 1024))


def daemonset_run_args(daemonset, configmap, config_dir, node_name, node_ip):
    """`podman run` options and the container's args for the DaemonSet's pod template, and the
    container spec. Fails on anything in the template it does not know how to reproduce."""
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    options = ["--network", "host" if pod.get("hostNetwork") else "none"]
    if pod.get("hostPID"):
        options += ["--pid", "host"]

    sc = container["securityContext"]
    options += ["--user", f"{sc['runAsUser']}:{sc['runAsGroup']}"]
    if sc.get("readOnlyRootFilesystem"):
        options += ["--read-only", "--read-only-tmpfs=false"]  # no tmpfs on /tmp, /run
    if sc.get("privileged"):
        options.append("--privileged")
    if sc.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    for cap in sc.get("capabilities", {}).get("drop", []):
        options += ["--cap-drop", cap]
    for cap in sc.get("capabilities", {}).get("add", []):
        options += ["--cap-add", f"CAP_{cap}"]
    seccomp = sc.get("seccompProfile", {}).get("type", "RuntimeDefault")
    assert seccomp in ("Unconfined", "RuntimeDefault"), f"seccomp profile {seccomp}"
    if seccomp == "Unconfined":
        options += ["--security-opt", "seccomp=unconfined"]

    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "hostPath" in volume:
            source = volume["hostPath"]["path"]
            if volume["hostPath"].get("type") == "Directory" and not os.path.isdir(source):
                skip_or_fail(f"the host has no {source} (the DaemonSet's hostPath)")
        elif "configMap" in volume:
            assert volume["configMap"]["name"] == configmap["metadata"]["name"]
            for key, text in configmap["data"].items():
                with open(os.path.join(config_dir, key), "w", encoding="utf-8") as f:
                    f.write(text)
            source = config_dir
        else:
            raise AssertionError(f"volume kind not reproduced here: {volume}")
        mode = "ro" if mount.get("readOnly") else "rw"
        options += ["--volume", f"{source}:{mount['mountPath']}:{mode}"]

    field_values = {"spec.nodeName": node_name, "status.hostIP": node_ip}
    for env in container.get("env", []):
        if "value" in env:
            value = env["value"]
        else:
            value = field_values[env["valueFrom"]["fieldRef"]["fieldPath"]]
        options += ["--env", f"{env['name']}={value}"]

    limits = container.get("resources", {}).get("limits", {})
    if "memory" in limits:
        options += ["--memory", f"{quantity_mib(limits['memory'])}m"]
    if "cpu" in limits:
        cpu = str(limits["cpu"])
        options += ["--cpus", str(int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu))]
    return options, container


def container_port(container, name):
    for port in container.get("ports", []):
        if port["name"] == name or port["containerPort"] == name:
            return port["containerPort"]
    raise AssertionError(f"no container port {name!r}")


# ---------------------------------------------------------------------------------------------
# Tests


def test_image_contents(agent_image):
    """Labels from the build args; every shared library the agent needs is in the image; the
    default command's configuration is image/config.yaml and loads; the chart reads the
    configuration where the image keeps it and probes the port the image exposes."""
    tag, build_args = agent_image
    labels = yaml.safe_load(podman("image", "inspect", "--format", "{{json .Labels}}",
                                   tag).stdout)
    assert labels["org.opencontainers.image.version"] == build_args["VERSION"]
    assert labels["org.opencontainers.image.revision"] == build_args["REVISION"]
    assert labels["org.opencontainers.image.source"] == build_args["SOURCE"]

    config = yaml.safe_load(podman("image", "inspect", "--format", "{{json .Config}}",
                                   tag).stdout)
    assert config["Entrypoint"] == ["/usr/bin/netmon-agent"], config
    default_args = config["Cmd"]

    ldd = podman("run", "--rm", "--network", "none", "--entrypoint", "ldd", tag,
                 "/usr/bin/netmon-agent")
    assert "not found" not in ldd.stdout, ldd.stdout
    assert "libbpf.so" in ldd.stdout, ldd.stdout

    printed = podman("run", "--rm", "--network", "none", tag, *default_args, "--print-config")
    effective = yaml.safe_load(printed.stdout)
    with open(IMAGE_CONFIG, encoding="utf-8") as f:
        shipped = yaml.safe_load(f)

    def same(expected, actual, where):
        for key, value in expected.items():
            if isinstance(value, dict):
                same(value, actual[key], f"{where}{key}.")
            else:
                assert actual[key] == value, f"{where}{key}: {actual[key]!r} != {value!r}"

    same(shipped, effective, "")

    daemonset, _ = manifest_objects()
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    config_args = [a for a in container["args"] if a.startswith("--config=")]
    assert config_args and config_args == [a for a in default_args if a.startswith("--config=")]
    config_file = config_args[0].split("=", 1)[1]
    mounts = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == "config"]
    assert mounts == [os.path.dirname(config_file)], mounts
    exposed = config.get("ExposedPorts") or {}
    assert f"{container_port(container, 'metrics')}/tcp" in exposed, exposed


WORKLOAD_SCRIPT = r"""
set -eu
port=$1 n=$2
# The server: accepts n connections on 127.0.0.1:$port, answers one line on each.
perl -MIO::Socket::INET -e '
  my ($port, $n) = @ARGV;
  my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $port, Listen => 8,
                                ReuseAddr => 1) or die "listen: $!";
  open(my $ready, ">", "/tmp/ready") or die; close($ready);
  for (1 .. $n) {
    my $c = $s->accept() or die "accept: $!";
    my $line = <$c>;
    print $c "pong $line";
    close($c);
  }' "$port" "$n" &
server=$!
for _ in $(seq 200); do [ -e /tmp/ready ] && break; sleep 0.05; done
[ -e /tmp/ready ]
# The clients: bash's /dev/tcp, one connection at a time.
for i in $(seq "$n"); do
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  echo "ping $i" >&3
  read -r reply <&3
  echo "$reply"
  exec 3>&-
done
wait "$server"
"""


def run_workload(image, port):
    """The second container: its own network namespace (loopback only), a perl server, bash
    clients. Returns (full container id from podman inspect, output)."""
    name = f"netmon-test-workload-{secrets.token_hex(4)}"
    try:
        started = podman("run", "--detach", "--network", "none", "--name", name, image,
                         "bash", "-c", WORKLOAD_SCRIPT, "workload", str(port), str(CONNECTIONS))
        waited = podman("wait", name, timeout=WORKLOAD_TIMEOUT)
        logs = podman("logs", name)
        output = logs.stdout + logs.stderr
        assert waited.stdout.strip() == "0", f"workload exited {waited.stdout.strip()}:\n{output}"
        replies = [line for line in output.splitlines() if line.startswith("pong ")]
        assert replies == [f"pong ping {i}" for i in range(1, CONNECTIONS + 1)], output
        full_id = podman("inspect", "--format", "{{.Id}}", name).stdout.strip()
        assert started.stdout.strip() == full_id
        return full_id, output
    finally:
        podman("rm", "--force", name, check=False)


def http_status_in_netns(pid, port, path):
    """The HTTP status of GET http://127.0.0.1:PORT/PATH in process PID's network namespace,
    where the kubelet would probe the pod."""
    result = subprocess.run(
        ["nsenter", f"--target={pid}", "--net", "curl", "-s", "-o", "/dev/null", "-m", "5",
         "-w", "%{http_code}", f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, timeout=15, check=False,
    )
    return result.stdout.strip()


def test_runs_like_the_daemonset(agent_image, base_image, tmp_path):
    tag, _ = agent_image
    daemonset, configmap = manifest_objects()
    config_dir = tmp_path / "configmap"
    config_dir.mkdir()
    node_name = socket.gethostname()
    options, container = daemonset_run_args(daemonset, configmap, str(config_dir), node_name,
                                            "127.0.0.1")
    args = list(container["args"])
    for i, arg in enumerate(args):
        if arg.startswith("--cgroup-root="):
            args[i] = "--cgroup-root=" + host_cgroup_root(arg.split("=", 1)[1])
    name = f"netmon-test-agent-{secrets.token_hex(4)}"
    grace = daemonset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]

    agent = Agent(command=["podman", "run", "--name", name, *options, tag, *args])
    try:
        failure = agent.wait_running(AGENT_START_TIMEOUT)
        if failure is not None:
            unavailable = bpf_unavailable_reason()
            if agent.proc.returncode == 1 and unavailable:
                skip_or_fail(f"BPF is unavailable ({unavailable}): the agent {failure}")
            pytest.fail(f"the containerized agent did not start: {failure}", pytrace=False)
        agent_pid = int(podman("inspect", "--format", "{{.State.Pid}}", name).stdout)
        agent.bpf_objects = bpf_objects_of(agent_pid)

        port = 20000 + secrets.randbelow(20000)
        workload_id, output = run_workload(base_image, port)
        assert len(workload_id) == 64

        def ours(kind):
            return [e for e in agent.events(kind=kind, ports={port})
                    if (e.get("process") or {}).get("container_id") == workload_id]

        def complete():
            found = {kind: ours(kind) for kind in ("TcpConnectionEstablish",
                                                   "TcpConnectionAccept", "TcpConnectionClose")}
            counts = [len(v) for v in found.values()]
            return found if counts == [CONNECTIONS, CONNECTIONS, 2 * CONNECTIONS] else None

        found = wait_for(complete, what=lambda: (
            f"{CONNECTIONS} Establish, {CONNECTIONS} Accept, {2 * CONNECTIONS} Close events of "
            f"container {workload_id} on port {port}; have: "
            f"{[(e['network_event']['type'], (e.get('process') or {}).get('container_id')) for e in agent.events(ports={port})]}"
            f"\nworkload output:\n{output}\nagent stderr:\n{agent.stderr_text()}"))
        for event in found["TcpConnectionEstablish"]:
            ne = event["network_event"]
            assert (ne["daddr"], ne["dport"]) == ("127.0.0.1", port), event
            assert event["process"]["filename"] == "bash", event
        for event in found["TcpConnectionAccept"]:
            ne = event["network_event"]
            assert (ne["saddr"], ne["sport"]) == ("127.0.0.1", port), event
            assert event["process"]["filename"].startswith("perl"), event
        directions = sorted(e["network_event"]["direction"] for e in found["TcpConnectionClose"])
        assert directions == ["inbound"] * CONNECTIONS + ["outbound"] * CONNECTIONS
        for events in found.values():
            for event in events:
                assert event.get("node_name") == node_name, event
                assert "pod" not in event, event  # no kubelet here: no pod metadata
        # Nothing else of that container's: the workload made exactly these connections.
        everything = [e for e in agent.events()
                      if (e.get("process") or {}).get("container_id") == workload_id]
        assert len(everything) == 4 * CONNECTIONS, everything

        # The kubelet's probes, from inside the pod's network namespace.
        port_metrics = container_port(container, container["livenessProbe"]["httpGet"]["port"])
        for probe in ("livenessProbe", "readinessProbe"):
            path = container[probe]["httpGet"]["path"]
            wait_for(lambda p=path: http_status_in_netns(agent_pid, port_metrics, p) == "200",
                     timeout=30, interval=0.5, what=f"{probe} {path} answering 200")

        # The kubelet stops a pod with SIGTERM and the grace period.
        podman("stop", "--time", str(grace), name, timeout=grace + 30)
        agent.proc.wait(30)
        code = agent.stop()
        assert code == 0, f"the agent exited with {code}:\n{agent.stderr_text()}"
        assert any("stopped: " in line for line in agent.stderr_lines), agent.stderr_text()
        assert agent.invalid_lines == [], agent.invalid_lines[:5]
        assert_no_programs_left(agent)
    finally:
        agent.kill()
        podman("rm", "--force", "--time", "0", name, check=False)


# ---------------------------------------------------------------------------------------------
# The image index: linux/amd64 and linux/arm64 (issue #24)

ARM64_AGENT = os.environ.get("NETMON_ARM64_AGENT") or os.path.join(
    REPO_ROOT, "build", "arm64", "netmon-agent")
INDEX_TIMEOUT = 600  # seconds for scripts/build-image.sh with both images given or cross-built
QEMU_TIMEOUT = 60  # seconds for one run of the arm64 agent under qemu-user


def oci_blob_index(layout):
    """The index.json of an OCI image layout."""
    with open(os.path.join(layout, "index.json"), encoding="utf-8") as f:
        return yaml.safe_load(f)  # JSON is YAML


def oci_blob(layout, digest):
    """A JSON blob of an OCI image layout, by digest."""
    algorithm, value = digest.split(":", 1)
    with open(os.path.join(layout, "blobs", algorithm, value), encoding="utf-8") as f:
        return yaml.safe_load(f)  # JSON is YAML


def qemu_arm64(root, *command):
    """Runs an arm64 program of `root` under qemu-user with `root` as its file system prefix
    (libraries and absolute paths are looked up there first)."""
    return subprocess.run(["qemu-aarch64-static", "-L", root, *command], capture_output=True,
                          text=True, timeout=QEMU_TIMEOUT, check=False)


def test_multiarch_index(agent_image, tmp_path):
    """scripts/build-image.sh makes an OCI image index of the amd64 image (the Dockerfile's,
    built above) and the arm64 one (the cross-built agent in an arm64 Debian base): one entry per
    platform, each manifest's config of that architecture, the same labels, entrypoint, command
    and exposed port. The arm64 image's own agent runs under qemu-user from the image's file
    system: --version, --help, its loader finds every library in the image, and --print-config
    loads the image's default configuration."""
    if shutil.which("qemu-aarch64-static") is None:
        skip_or_fail("qemu-aarch64-static not found (scripts/install-deps.sh arm64 installs it)")
    if not os.access(ARM64_AGENT, os.X_OK):
        skip_or_fail(f"no arm64 agent at {ARM64_AGENT} (scripts/build-arm64.sh; ctest arm64-build)")
    tag, build_args = agent_image
    name = f"localhost/netmon-agent:index-{secrets.token_hex(4)}"
    archive = tmp_path / "index.tar"
    env = dict(os.environ, **build_args)
    start = time.monotonic()
    try:
        result = subprocess.run(
            [os.path.join(REPO_ROOT, "scripts", "build-image.sh"), name, "--amd64-image", tag,
             "--arm64-agent", ARM64_AGENT, "--oci-archive", str(archive)],
            capture_output=True, text=True, timeout=INDEX_TIMEOUT, check=False, env=env)
        assert result.returncode == 0, f"build-image.sh exited {result.returncode}:\n" \
            f"{(result.stdout + result.stderr)[-6000:]}"
        print(f"arm64 image and index made in {time.monotonic() - start:.0f} s")

        layout = tmp_path / "oci"
        layout.mkdir()
        subprocess.run(["tar", "-xf", str(archive), "-C", str(layout)], check=True, timeout=120)
        (top,) = oci_blob_index(layout)["manifests"]
        assert top["mediaType"] == "application/vnd.oci.image.index.v1+json", top
        index = oci_blob(layout, top["digest"])
        assert index["mediaType"] == "application/vnd.oci.image.index.v1+json", index
        platforms = {}
        for entry in index["manifests"]:
            platform = f"{entry['platform']['os']}/{entry['platform']['architecture']}"
            manifest = oci_blob(layout, entry["digest"])
            platforms[platform] = oci_blob(layout, manifest["config"]["digest"])
        assert sorted(platforms) == ["linux/amd64", "linux/arm64"], index
        for platform, config in platforms.items():
            assert f"{config['os']}/{config['architecture']}" == platform, config
        amd64, arm64 = platforms["linux/amd64"]["config"], platforms["linux/arm64"]["config"]
        for key in ("Entrypoint", "Cmd", "ExposedPorts"):
            assert arm64.get(key) == amd64.get(key), (key, arm64.get(key), amd64.get(key))
        for key in ("version", "revision", "source", "title"):
            label = f"org.opencontainers.image.{key}"
            assert arm64["Labels"][label] == amd64["Labels"][label], label
        assert arm64["Labels"]["org.opencontainers.image.version"] == build_args["VERSION"]

        # The arm64 image's file system, and its agent under qemu-user.
        root = podman("image", "mount", f"{name}-arm64").stdout.strip()
        try:
            agent = root + amd64["Entrypoint"][0]
            kind = subprocess.run(["file", "-bL", agent], capture_output=True, text=True,
                                  timeout=30, check=True).stdout
            assert "ARM aarch64" in kind, kind
            version = qemu_arm64(root, agent, "--version")
            assert version.returncode == 0 and version.stdout.startswith("netmon-agent "), version
            usage = qemu_arm64(root, agent, "--help")
            assert usage.returncode == 0 and usage.stdout.startswith("Usage: netmon-agent"), usage
            libs = qemu_arm64(root, root + "/lib/ld-linux-aarch64.so.1", "--list", agent)
            assert libs.returncode == 0 and "not found" not in libs.stdout, libs
            for lib in ("libbpf.so.1", "libelf.so.1", "libyaml-cpp.so", "libssl.so.3",
                        "libstdc++.so.6", "libc.so.6"):
                assert f"{lib}" in libs.stdout, (lib, libs.stdout)
            printed = qemu_arm64(root, agent, *amd64["Cmd"], "--print-config")
            assert printed.returncode == 0, printed
            with open(IMAGE_CONFIG, encoding="utf-8") as f:
                shipped = yaml.safe_load(f)
            effective = yaml.safe_load(printed.stdout)

            def same(expected, actual, where):
                for key, value in expected.items():
                    if isinstance(value, dict):
                        same(value, actual[key], f"{where}{key}.")
                    else:
                        assert actual[key] == value, f"{where}{key}: {actual[key]!r} != {value!r}"

            same(shipped, effective, "")
        finally:
            podman("image", "unmount", f"{name}-arm64", check=False)
    finally:
        podman("manifest", "rm", name, check=False)
        podman("rmi", "--force", f"{name}-arm64", check=False)
