"""Fixtures and helpers for netmon's privileged integration tests.

The tests run the real agent (root, real eBPF programs) and real programs (nc, telnet, Python
sockets) on loopback only. They skip with the reason when they cannot run here (not root, no
agent binary, BPF unavailable, nc/telnet missing), except under CI=true (or CI=1), where every
skip, however it was raised, is turned into a failure by pytest_runtest_makereport below.

Every stdout line of every agent a test starts is validated against docs/event.schema.json as it
is read; the agent's teardown check fails the test on any line that does not pass.

Events of every TCP connection on the host reach the agent's stdout, so tests always pick their
own events by ports and pids.
"""

import ctypes
import json
import os
import queue
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.request

import jsonschema
import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
AGENT = os.path.abspath(
    os.environ.get("NETMON_AGENT") or os.path.join(TESTS_DIR, "..", "..", "build", "netmon-agent")
)
IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1")
SCHEMA_PATH = os.path.join(TESTS_DIR, "..", "..", "docs", "event.schema.json")
BPFTOOL = "/usr/sbin/bpftool"
# The agent's log line when the TCP state observer (sock_ops) attached.
OBSERVER_ATTACHED = "attached cgroup/sock_ops (state observer) as sock_ops"

# How netmon's BPF programs are named (handle_inet_sock_set_state_btf/_tp,
# handle_sys_exit_accept4, handle_sys_exit_accept, handle_sched_process_{exec,fork,exit}_*).
# bpftool may show a name truncated to the kernel's 15 characters, e.g. "handle_inet_soc".
NETMON_PROGRAM_PREFIXES = (
    "handle_inet_sock_set_state",
    "handle_sys_exit_accept",
    "handle_sched_process_",
)
KERNEL_NAME_LEN = 15

STARTUP_TIMEOUT = 20.0  # seconds until "netmon is running"
STOP_TIMEOUT = 15.0  # seconds from SIGTERM to exit (the agent drains stdout for up to 5 s)
EVENT_TIMEOUT = 10.0  # seconds to wait for an event (they normally arrive within ~100 ms)
VALIDATE_TIMEOUT = 120.0  # seconds for the schema check of an agent's events to catch up
# Where the agent's kernel side counts events it could not report (netmon_events_lost_total).
KERNEL_LOSS_STAGES = ("ring_buffer", "sockets_map", "recursion", "unobserved", "accept")

# bpf(2) syscall numbers, for the availability probe.
BPF_SYSCALL = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "s390x": 351, "ppc64le": 361}


def event_validator():
    """The docs/event.schema.json validator (JSON Schema 2020-12), compiled once."""
    global _EVENT_VALIDATOR
    if _EVENT_VALIDATOR is None:
        with open(SCHEMA_PATH, encoding="utf-8") as f:
            _EVENT_VALIDATOR = jsonschema.Draft202012Validator(json.load(f))
    return _EVENT_VALIDATOR


_EVENT_VALIDATOR = None


def schema_problems(event):
    """Why `event` fails docs/event.schema.json, one string per problem ([] when it passes)."""
    problems = []
    for error in event_validator().iter_errors(event):
        where = "/".join(map(str, error.absolute_path)) or "(top level)"
        # For oneOf (process or null), the reasons of the object branch, not the instance.
        reasons = sorted({sub.message for sub in error.context or () if sub.validator != "type"})
        problems.append(f"{where}: {'; '.join(reasons) or error.message}")
    return problems


def skip_or_fail(reason):
    """Skips the test with `reason`; under CI=true a test that cannot run is a failure."""
    if IN_CI:
        pytest.fail(f"CI=true, and this test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def wait_for(predicate, timeout=EVENT_TIMEOUT, interval=0.02, what=None):
    """Polls `predicate()` until it returns something truthy, and returns that value.

    Bounded: raises AssertionError naming `what` (a string, or a function returning one at
    the timeout) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            if callable(what):
                what = what()
            raise AssertionError(
                f"timed out after {timeout:.1f} s waiting for {what or predicate!r}"
            )
        time.sleep(interval)


def bpf_unavailable_reason():
    """Why this machine cannot run BPF tracing programs, or None when it can.

    Probes the kernel directly (kernel BTF present; the bpf() syscall loads a trivial program)
    so that an agent that fails to start on a machine where BPF works is a test failure, not a
    skip: the agent maps the verifier's EACCES to a "not permitted" message."""
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        return "the kernel has no BTF (/sys/kernel/btf/vmlinux is missing)"
    nr = BPF_SYSCALL.get(os.uname().machine)
    if nr is None:
        return None  # cannot probe here: trust the agent's own start-up error
    libc = ctypes.CDLL(None, use_errno=True)
    # BPF_PROG_TYPE_SOCKET_FILTER: "r0 = 0; exit".
    insns = ctypes.create_string_buffer(
        struct.pack("<BBhi", 0xB7, 0, 0, 0) + struct.pack("<BBhi", 0x95, 0, 0, 0)
    )
    license_ = ctypes.create_string_buffer(b"GPL")
    attr = ctypes.create_string_buffer(128)
    struct.pack_into(
        "<IIQQ", attr, 0, 1, 2, ctypes.addressof(insns), ctypes.addressof(license_)
    )
    libc.syscall.restype = ctypes.c_long
    fd = libc.syscall(ctypes.c_long(nr), ctypes.c_int(5), attr, ctypes.c_uint(len(attr)))
    if fd < 0:
        err = ctypes.get_errno()
        return f"the bpf() syscall cannot load a program: {os.strerror(err)}"
    os.close(fd)
    return None


def clean_env():
    """The environment for the agent: no NETMON_* settings from the caller, so flags decide."""
    return {k: v for k, v in os.environ.items() if not k.startswith("NETMON_")}


# ---------------------------------------------------------------------------------------------
# BPF programs as bpftool sees them


def _is_netmon_program_name(name):
    return any(
        name.startswith(prefix) or (len(name) == KERNEL_NAME_LEN and prefix.startswith(name))
        for prefix in NETMON_PROGRAM_PREFIXES
    )


def bpftool_ids(kind, netmon_names_only=False):
    """IDs of the loaded BPF objects of `kind` (prog, link, map) as bpftool lists them."""
    result = subprocess.run(
        [BPFTOOL, "-j", kind, "show"], capture_output=True, text=True, timeout=30, check=True
    )
    objects = json.loads(result.stdout or "[]")
    return {
        o["id"]
        for o in objects
        if not netmon_names_only or _is_netmon_program_name(o.get("name", ""))
    }


def bpf_objects_of(pid):
    """{"prog": ids, "link": ids, "map": ids} of the BPF objects that process `pid` holds open,
    from /proc/PID/fdinfo (exact, whatever the programs are named)."""
    held = {"prog": set(), "link": set(), "map": set()}
    fdinfo = f"/proc/{pid}/fdinfo"
    try:
        entries = os.listdir(fdinfo)
    except OSError:
        return held
    for fd in entries:
        try:
            with open(os.path.join(fdinfo, fd), encoding="ascii", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        link = re.search(r"^link_id:\s*(\d+)", text, re.M)
        if link:  # a link's fdinfo also names its program; that program has its own fd
            held["link"].add(int(link.group(1)))
            continue
        for kind in ("prog", "map"):
            m = re.search(rf"^{kind}_id:\s*(\d+)", text, re.M)
            if m:
                held[kind].add(int(m.group(1)))
    return held


def other_netmon_agents_running(own_pids):
    """True when some netmon-agent not started by these tests runs (e.g. a developer's)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in own_pids:
            continue
        try:
            with open(f"/proc/{entry}/comm", encoding="utf-8", errors="replace") as f:
                if f.read().strip() == "netmon-agent":
                    return True
        except OSError:
            continue
    return False


# ---------------------------------------------------------------------------------------------
# The agent


class Agent:
    """A running netmon-agent whose stdout events and stderr lines are collected by threads.

    Every Agent is registered in `Agent.started`; the autouse fixture `every_event_is_valid`
    checks each one's stdout against the schema after the test, however it was stopped."""

    started = []

    def __init__(self, args=(), command=None, env=None):
        """Starts the agent binary with `args`; or, when `command` is given, runs that command
        line as it is (e.g. `podman run IMAGE ...`, whose stdout and stderr are the agent's).
        `env`: variables added to its environment."""
        if command is not None:
            self.args = list(command)
        else:
            # Tests never take a fixed metrics port: an ephemeral one unless the test chose.
            if not any(str(a).startswith("--metrics-address") for a in args):
                args = (*args, "--metrics-address", "127.0.0.1:0")
            self.args = [AGENT, *args]
        self._lock = threading.Lock()
        self._events = []  # parsed JSON objects, in stdout order
        self.stdout_lines = []  # raw stdout lines (str)
        self.invalid_lines = []  # stdout lines that are not a JSON object
        self.schema_failures = []  # (line, problems) of events that fail docs/event.schema.json
        self._to_validate = queue.SimpleQueue()  # (line, event) read, for the schema check
        self._queued = 0  # events put in _to_validate
        self._validated = 0  # events checked
        self.stderr_lines = []
        self._running = threading.Event()
        self.bpf_objects = {}  # {"prog"/"link"/"map": IDs} this agent held once running
        self.returncode = None
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**clean_env(), **(env or {})},
        )
        Agent.started.append(self)
        self._threads = [
            threading.Thread(target=self._read_stdout, name="agent-stdout", daemon=True),
            threading.Thread(target=self._read_stderr, name="agent-stderr", daemon=True),
        ]
        for t in self._threads:
            t.start()
        threading.Thread(target=self._validate, name="agent-validate", daemon=True).start()

    @property
    def metrics_url(self):
        """http://HOST:PORT of the agent's /metrics, /healthz and /readyz, from its log."""
        m = re.search(r"serving /metrics, /healthz and /readyz on (http://\S+)", self.stderr_text())
        return m.group(1) if m else None

    @property
    def pid(self):
        return self.proc.pid

    # -- readers

    def _read_stdout(self):
        for raw in self.proc.stdout:
            try:
                line = raw.decode("utf-8").rstrip("\n")
            except UnicodeDecodeError:
                with self._lock:
                    self.invalid_lines.append(repr(raw))
                continue
            try:
                obj = json.loads(line)
                ok = isinstance(obj, dict)
            except ValueError:
                ok = False
            with self._lock:
                self.stdout_lines.append(line)
                if ok:
                    self._events.append(obj)
                    self._queued += 1
                else:
                    self.invalid_lines.append(line)
            if ok:
                self._to_validate.put((line, obj))
        self._to_validate.put(None)

    def _validate(self):
        """Checks each event read against the schema, in a thread of its own: validating takes
        up to a millisecond an event, and the reader must keep up with stdout, or the agent's
        output would back up (its stop drains stdout for 5 s at most)."""
        while (item := self._to_validate.get()) is not None:
            line, obj = item
            problems = schema_problems(obj)
            with self._lock:
                if problems:
                    self.schema_failures.append((line, problems))
                self._validated += 1

    def wait_validated(self, timeout=VALIDATE_TIMEOUT):
        """Waits (bounded) until every event read so far has been checked against the schema."""
        with self._lock:
            queued = self._queued

        def done():
            with self._lock:
                return self._validated >= queued

        wait_for(done, timeout=timeout, interval=0.05,
                 what=lambda: f"the schema check of {queued} events ({self._validated} done)")

    def _read_stderr(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            with self._lock:
                self.stderr_lines.append(line)
            if "netmon is running" in line:
                self._running.set()

    # -- queries

    def variant(self, hook):
        """The variant the agent chose for `hook` (state, accept, process), from its log."""
        m = re.search(rf"netmon info: hook variant: {hook} = (\w+) ", self.stderr_text())
        return m.group(1) if m else None

    def metrics_text(self):
        """The agent's /metrics, as text."""
        with urllib.request.urlopen(self.metrics_url + "/metrics", timeout=10) as reply:
            return reply.read().decode("utf-8")

    def published_metrics_text(self, timeout=EVENT_TIMEOUT):
        """The agent's /metrics once its health numbers (loss counters, netmon_events_total, the
        kubelet's state, ...; the pipeline thread publishes them twice a second) were published
        after every event read from its stdout so far: once netmon_events_total (the lines it
        wrote) reaches their number. Bounded. After sync(), it covers every earlier state
        change."""
        with self._lock:
            read = len(self._events)
        texts = []

        def caught_up():
            text = self.metrics_text()
            texts[:] = [text]
            made = sum(float(v) for v in re.findall(
                r'^netmon_events_total\{type="\w+"\} (\S+)$', text, re.MULTILINE))
            return text if made >= read else None

        return wait_for(caught_up, timeout=timeout, interval=0.05,
                        what=lambda: f"netmon_events_total >= {read} (events read):\n"
                        + "\n".join(line for line in texts[0].splitlines()
                                     if line.startswith("netmon_events_total")))

    def lost(self):
        """The agent's netmon_events_lost_total by stage, from a /metrics publication that
        counts every event read so far (published_metrics_text)."""
        return {m.group(1): int(float(m.group(2))) for m in re.finditer(
            r'^netmon_events_lost_total\{stage="(\w+)"\} (\S+)$', self.published_metrics_text(),
            re.MULTILINE)}

    def stderr_text(self):
        with self._lock:
            return "\n".join(self.stderr_lines)

    def events(self, **filters):
        """A snapshot of the stdout events received so far that match every filter.

        Filters: kind= network_event.type; pid= process.pid; sport=, dport=, saddr=, daddr=,
        cookie= network_event fields; ports= a set of ports of which sport or dport must be one."""
        with self._lock:
            events = list(self._events)
        return [e for e in events if _matches(e, **filters)]

    def wait_events(self, count=1, timeout=EVENT_TIMEOUT, **filters):
        """Waits until at least `count` events match `filters`, then returns all that match."""

        def enough():
            events = self.events(**filters)
            return events if len(events) >= count else None

        return wait_for(
            enough,
            timeout=timeout,
            what=lambda: f"{count} event(s) matching {filters}; have "
            f"{len(self.events(**filters))}",
        )

    def sync(self, timeout=EVENT_TIMEOUT, closed_ports=(), marker_port=None,
             sides=("client", "server")):
        """A barrier: returns once every event of the TCP state changes made before the call
        has been written by the agent and read here (raises AssertionError after `timeout`).

        It makes a marker connection on 127.0.0.1 (a fresh port: the kernel picks one), closes
        both ends, and waits until the marker's Close of each of `sides` is on stdout. That is
        enough because the order holds end to end: the BPF programs write every record into one
        ring buffer, whose reader gets records in the order room was reserved for them (it stops
        at a record still being written, never passes it); the agent reads that ring buffer from
        one thread (the main loop in agent/app/agent.cpp, Probe::poll), turns each record into its
        JSON line in that order (Pipeline::on_record/handle append to one batch; a batch the
        output queue cannot take is held, and nothing more is read, until it is queued or
        dropped and counted), and one writer thread writes the FIFO queue of batches to stdout
        (LineWriter). So an event whose state change happened before the marker's comes before
        the marker's Close on stdout, or it was counted lost (netmon_events_lost_total).

        `closed_ports`: ports whose connections the test has closed: first wait (within the same
        timeout) until this network namespace's socket table holds none of their sockets but
        listeners and TIME_WAIT ones, i.e. until the kernel has made every CLOSE transition of
        them (a peer's FIN is processed in softirq, which a loaded machine may defer past the
        close() that sent it). Without it, the barrier covers the changes that are already done.
        `marker_port`: listen on that port (SO_REUSEADDR) instead, for an agent whose rules
        report only some ports; `sides`: the marker's Closes it reports ("client", "server").

        The marker's events stay in the stream (tests pick theirs by port); its port is returned.
        """
        deadline = time.monotonic() + timeout
        if closed_ports:
            closed_ports = set(closed_ports)
            wait_for(lambda: not sockets_closing(closed_ports), timeout=timeout,
                     what=lambda: f"the kernel to close every socket on ports {closed_ports}: "
                     f"{sockets_closing(closed_ports)}")
        with self._lock:
            start = len(self._events)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            if marker_port is not None:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", marker_port or 0))
            listener.listen(1)
            listener.settimeout(timeout)
            port = listener.getsockname()[1]
            client = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            cport = client.getsockname()[1]
            server, _ = listener.accept()
            with server:
                server.settimeout(timeout)
                client.close()
                assert server.recv(1) == b""  # the client's FIN: this end closes second
        wanted = {"client": (cport, port), "server": (port, cport)}

        def marker_closed():
            with self._lock:
                events = self._events[start:]
            seen = {(e["network_event"]["sport"], e["network_event"]["dport"]) for e in events
                    if (e.get("network_event") or {}).get("type") == "TcpConnectionClose"}
            return all(wanted[side] in seen for side in sides)

        wait_for(marker_closed, timeout=max(0.0, deadline - time.monotonic()),
                 what=f"the Close events ({', '.join(sides)}) of the barrier's marker connection "
                 f"127.0.0.1:{cport} -> 127.0.0.1:{port}")
        return port

    # -- lifecycle

    def wait_running(self, timeout=STARTUP_TIMEOUT):
        """Waits for "netmon is running". Returns None when running, else the failure text."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._running.wait(0.05):
                self.bpf_objects = bpf_objects_of(self.proc.pid)
                return None
            if self.proc.poll() is not None:
                for t in self._threads:
                    t.join(5)
                return f"exited with {self.proc.returncode} before running:\n{self.stderr_text()}"
        return f"not running after {timeout} s:\n{self.stderr_text()}"

    def stop(self, sig=signal.SIGTERM):
        """Sends `sig`, waits (bounded) for the exit, and returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.returncode = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"the agent did not exit within {STOP_TIMEOUT} s of {sig!r}")
        finally:
            for t in self._threads:
                t.join(5)
        return self.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


def same_connection(opened):
    """Filters that pick the events of the connection of the `opened` event: its cookie, or,
    where the kernel gave it none (the classic-tracepoint state variant without its sock_ops
    cookie assigner, see docs/kernels.md), its addresses and ports."""
    ne = opened["network_event"]
    if ne["cookie"]:
        return {"cookie": ne["cookie"]}
    return {k: ne[k] for k in ("saddr", "sport", "daddr", "dport")}


def _matches(e, kind=None, pid=None, ports=None, **fields):
    ne = e.get("network_event") or {}
    if kind is not None and ne.get("type") != kind:
        return False
    if pid is not None and (e.get("process") or {}).get("pid") != pid:
        return False
    if ports is not None and ne.get("sport") not in ports and ne.get("dport") not in ports:
        return False
    return all(ne.get(k) == v for k, v in fields.items())


def check_stopped_cleanly(agent):
    """SIGTERM: exit 0, a "stopped:" summary, only JSON on stdout, every event valid against
    docs/event.schema.json, no program left behind."""
    code = agent.stop(signal.SIGTERM)
    assert code == 0, f"agent exited with {code} after SIGTERM:\n{agent.stderr_text()}"
    assert any("stopped: " in line for line in agent.stderr_lines), agent.stderr_text()
    assert_valid_output(agent)
    assert_no_programs_left(agent)


def assert_valid_output(agent):
    """Every stdout line the agent wrote (read so far) is a JSON object that passes
    docs/event.schema.json."""
    agent.wait_validated()
    assert agent.invalid_lines == [], f"stdout lines that are not JSON: {agent.invalid_lines[:5]}"
    assert agent.schema_failures == [], (
        f"{len(agent.schema_failures)} event(s) fail docs/event.schema.json; the first:\n"
        + "\n".join(f"{line}\n  -> {problems}" for line, problems in agent.schema_failures[:3])
    )


def assert_no_programs_left(agent):
    """None of the BPF programs, links and maps this agent held remains, and no program named
    like netmon's remains at all unless another netmon-agent (not ours) is running. The kernel
    frees them asynchronously: bounded retry. Whether another agent runs is asked again on
    every try, before bpftool lists the programs: other tests on this host start agents at any
    time, and one started after a single check would leave its programs in the listing."""
    assert agent.bpf_objects.get("prog"), "the running agent held no BPF program (fdinfo)"

    def left():
        strict = not other_netmon_agents_running({agent.pid})
        remaining = {kind: bpftool_ids(kind) & ids for kind, ids in agent.bpf_objects.items()}
        if strict:
            remaining["prog named like netmon's"] = bpftool_ids("prog", netmon_names_only=True)
        return {kind: ids for kind, ids in remaining.items() if ids}

    deadline = time.monotonic() + 5.0
    remaining = left()
    while remaining and time.monotonic() < deadline:
        time.sleep(0.1)
        remaining = left()
    assert not remaining, (
        f"BPF objects of netmon remain after the agent exited: {remaining}\n"
        + subprocess.run([BPFTOOL, "prog", "show"], capture_output=True, text=True).stdout
    )


# ---------------------------------------------------------------------------------------------
# Fixtures


def require_privileges():
    """Skips (fails under CI) when the agent cannot be run here."""
    if os.geteuid() != 0:
        skip_or_fail("needs root to load BPF programs")
    if not os.access(AGENT, os.X_OK):
        skip_or_fail(f"agent binary not found at {AGENT} (set NETMON_AGENT)")
    if not os.access(BPFTOOL, os.X_OK):
        skip_or_fail(f"{BPFTOOL} not found (apt-get install bpftool)")


@pytest.fixture(autouse=True)
def every_event_is_valid():
    """After every test (and after its own fixtures stopped its agents): every stdout line of
    every agent the test started is a JSON object valid against docs/event.schema.json."""
    Agent.started.clear()
    yield
    agents, Agent.started[:] = list(Agent.started), []
    for agent in agents:
        if agent.proc.poll() is not None:
            for t in agent._threads:
                t.join(5)  # the rest of its stdout, up to EOF
        assert_valid_output(agent)


@pytest.fixture
def start_agent():
    """A factory: start_agent(*flags, env=None) starts an agent and waits until it runs. Every agent it
    started is stopped with SIGTERM at teardown and checked (exit 0, JSON only, no programs)."""
    require_privileges()
    agents = []

    def start(*args, env=None):
        agent = Agent(args, env=env)
        agents.append(agent)
        failure = agent.wait_running()
        if failure is None:
            return agent
        agent.kill()
        agents.remove(agent)
        unavailable = bpf_unavailable_reason()
        if agent.proc.returncode == 1 and unavailable:
            skip_or_fail(f"BPF is unavailable ({unavailable}): the agent {failure}")
        pytest.fail(f"the agent did not start although BPF works here: {failure}",
                    pytrace=False)

    yield start

    errors = []
    for agent in agents:
        try:
            check_stopped_cleanly(agent)
        except AssertionError as e:
            errors.append(str(e))
        finally:
            agent.kill()
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


@pytest.fixture
def agent(start_agent):
    """A running agent with default flags (a fresh one per test)."""
    return start_agent()


@pytest.fixture
def agent_binary():
    """The agent binary path, for tests that only run it as a command-line tool."""
    if not os.access(AGENT, os.X_OK):
        skip_or_fail(f"agent binary not found at {AGENT} (set NETMON_AGENT)")
    return AGENT


@pytest.fixture
def real_tools():
    """nc (netcat-openbsd), telnet (inetutils) and ss; skips (fails under CI) when missing."""
    tools = {}
    for name in ("nc", "telnet", "ss"):
        path = shutil.which(name)
        if not path:
            skip_or_fail(f"{name} is not installed (netcat-openbsd, inetutils-telnet, iproute2)")
        tools[name] = path
    probe = subprocess.run([tools["nc"], "-h"], capture_output=True, text=True, timeout=10)
    if "OpenBSD netcat" not in probe.stdout + probe.stderr:
        skip_or_fail("nc is not netcat-openbsd")
    return tools


# ---------------------------------------------------------------------------------------------
# Sockets and processes


def port_is_free(port):
    """True when `port` can be bound on both 127.0.0.1 and ::1."""
    for family, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((addr, port))
            except OSError:
                return False
    return port not in listening_ports()


def free_port(preferred=None):
    """`preferred` if it is free, else a free port the kernel picks."""
    if preferred is not None and port_is_free(preferred):
        return preferred
    for _ in range(50):
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
            port = s.getsockname()[1]
        if port_is_free(port):
            return port
    raise AssertionError("found no free port")


TCP_STATES = {"01": "ESTABLISHED", "0A": "LISTEN"}


def _proc_net_tcp():
    """Rows of /proc/net/tcp and tcp6: dicts with local/remote port, state and inode."""
    rows = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path, encoding="ascii") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            rows.append(
                {
                    "lport": int(cols[1].rsplit(":", 1)[1], 16),
                    "rport": int(cols[2].rsplit(":", 1)[1], 16),
                    "state": cols[3],
                    "inode": int(cols[9]),
                    "v6": path.endswith("6"),
                }
            )
    return rows


def listening_ports():
    return {r["lport"] for r in _proc_net_tcp() if r["state"] == "0A"}


def sockets_closing(ports):
    """(local port, remote port, state) of this network namespace's TCP sockets with one of
    `ports` at either end that have not made their CLOSE transition yet: all but listeners
    (0A) and TIME_WAIT (06), whose full socket is gone. A socket leaves the table in that
    transition, after the BPF programs ran for it."""
    return [(r["lport"], r["rport"], r["state"]) for r in _proc_net_tcp()
            if (r["lport"] in ports or r["rport"] in ports) and r["state"] not in ("0A", "06")]


def listening(port, v6=None):
    """True when a TCP socket listens on `port` (of the family, when v6 is given)."""
    return any(
        r["state"] == "0A" and r["lport"] == port and (v6 is None or r["v6"] == v6)
        for r in _proc_net_tcp()
    )


def established_sockets_of(pid):
    """(local port, remote port) of the established TCP sockets that process `pid` holds."""
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        for fd in os.listdir(fd_dir):
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            m = re.fullmatch(r"socket:\[(\d+)\]", target)
            if m:
                inodes.add(int(m.group(1)))
    except OSError:
        return []
    return [
        (r["lport"], r["rport"])
        for r in _proc_net_tcp()
        if r["inode"] in inodes and r["state"] == "01"
    ]


def ss_cookies(port, netns=None):
    """{(local port, peer port): cookie} of established connections with `port` on one end,
    from `ss -tnei` (it prints the socket cookie as sk:<hex>); in the network namespace named
    `netns` (ip netns) when given. ss makes the cookie of a socket that has none yet."""
    out = subprocess.run(
        [*(["ip", "netns", "exec", netns] if netns else []),
         "ss", "-tnei", "state", "established", f"( sport = :{port} or dport = :{port} )"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    cookies = {}
    for line in out.splitlines():
        m = re.search(r"\S+:(\d+)\s+\S+:(\d+)\s.*\bsk:([0-9a-fA-F]+)\b", line)
        if m:
            cookies[(int(m.group(1)), int(m.group(2)))] = int(m.group(3), 16)
    return cookies


class ProcessGroup:
    """Child processes started by a test, all killed (by pid) at teardown."""

    def __init__(self):
        self.procs = []

    def start(self, args, **kwargs):
        kwargs.setdefault("stdin", subprocess.PIPE)
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen(args, **kwargs)
        self.procs.append(proc)
        return proc

    def cleanup(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.communicate(timeout=5)
            except (subprocess.TimeoutExpired, ValueError):
                pass


@pytest.fixture
def processes():
    """Starts child processes for a test and kills whatever is left of them afterwards."""
    group = ProcessGroup()
    yield group
    group.cleanup()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI=true every skipped test is a failure, whatever raised the skip (pytest.skip,
    importorskip, a skip marker, a fixture): CI has every tool, privilege and fixture, so a skip
    there means a test did not run."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"CI=true, and this test was skipped: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same for a whole module skipped at import (pytest.importorskip at module level)."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"CI=true, and this module was skipped: {reason}"


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "kernel_matrix: also runs in the virtual machines of the kernel matrix (scripts/vm-run.sh, "
        "ctest -L kernel): the reference scenario, failed connects, process and pod attribution, "
        "close statistics, hook variants",
    )
    config.addinivalue_line(
        "markers",
        "arm64_matrix: the reduced scenario of the arm64 kernel matrix (scripts/kernel-matrix.sh "
        "--arch arm64, ctest -L arm64; qemu-system-aarch64 under TCG): the reference scenario over "
        "IPv4 and IPv6, a refused connect, the process object, close statistics, the hook "
        "variants chosen, a clean stop, the chart's capabilities",
    )
