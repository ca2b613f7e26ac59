"""Backpressure: the agent's stdout is a pipe nobody reads during a burst of connections.

When the output queue (--output-queue-bytes at its minimum, 64 KiB, so that it fills fast) has no
room, the kernel reader pauses and leaves the records in the ring buffer, for at most
--output-max-pause-ms and only while the ring buffer is less than half full. So a stdout that
stalls briefly loses nothing; one that stays blocked makes the agent read the kernel again (its
connection metrics keep counting, the ring buffer loses nothing), drop and count what does not
fit, and recover once the reader resumes: later events reach stdout again. On SIGTERM it exits 0
and its "stopped:" summary reports the output-queue loss.

The conftest Agent reads stdout continuously, so these tests start the agent themselves
(BlockedAgent), and validate every line they read against docs/event.schema.json as the conftest
Agent does. Its rules (--config) report only the connections of the test's own ports, so that
every event queued, written or dropped is one the test made: the events missing from stdout
must then equal the output-queue drops exactly, against the set of events the test computes from
its own sockets (ports and SO_COOKIE cookies).
"""

import collections
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request

from conftest import (
    AGENT,
    EVENT_TIMEOUT,
    OBSERVER_ATTACHED,
    STARTUP_TIMEOUT,
    STOP_TIMEOUT,
    assert_no_programs_left,
    bpf_objects_of,
    bpf_unavailable_reason,
    clean_env,
    free_port,
    require_privileges,
    schema_problems,
    skip_or_fail,
    sockets_closing,
    wait_for,
)
from test_lifecycle import socket_cookie

import pytest

ESTABLISH = "TcpConnectionEstablish"
ACCEPT = "TcpConnectionAccept"
CLOSE = "TcpConnectionClose"
# Only the connections of the test's two ports are reported: every line queued is the test's.
RULES = """\
egress:
  rules:
  - rule: BackpressureTest
    event: port_dst in [{ports}]
ingress:
  rules:
  - rule: BackpressureTest
    event: port_dst in [{ports}]
"""
QUEUE_BYTES = 65536  # the minimum --output-queue-bytes
BURST_CONNECTIONS = 2000
BURST_SECONDS = 20.0  # the burst stops at this bound even if it is not complete
RECOVERY_CONNECTIONS = 5
STALL_CONNECTIONS = 300  # ~1200 events: megabytes of JSON, ~250 KB of kernel records
PATIENT_RING_BYTES = 1 << 20
METRICS_RE = re.compile(r"serving /metrics, /healthz and /readyz on (http://\S+)")


class BlockedAgent:
    """netmon-agent whose stdout is a pipe the test reads only once drain() is called. Its rules
    report only the connections of `self.ports` (two free ports picked for the test)."""

    def __init__(self, config_dir, *extra_args):
        self.read_fd, write_fd = os.pipe()
        self._lock = threading.Lock()
        self.ports = (free_port(), free_port())
        while self.ports[1] == self.ports[0]:
            self.ports = (self.ports[0], free_port())
        config = os.path.join(config_dir, "netmon.yaml")
        with open(config, "w", encoding="utf-8") as f:
            f.write(RULES.format(ports=", ".join(map(str, self.ports))))
        self.stderr_lines = []
        self.stdout_lines = []  # decoded lines, once draining
        self.events = []  # the lines parsed, in stdout order
        self.invalid_lines = []  # lines that are not a JSON object (or not UTF-8)
        self.schema_failures = []  # (line, problems) of events that fail the schema
        self.stdout_bytes = 0
        self.last_read = None  # monotonic time of the last read from stdout
        self._running = threading.Event()
        self._drainer = None
        self.eof = threading.Event()  # the drainer read stdout to its end
        self.bpf_objects = {}
        try:
            self.proc = subprocess.Popen(
                [AGENT, "--metrics-address", "127.0.0.1:0", "--output-queue-bytes",
                 str(QUEUE_BYTES), "--config", config, *extra_args],
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=subprocess.PIPE,
                env=clean_env(),
            )
        finally:
            os.close(write_fd)  # the agent holds the only write end: EOF when it exits
        self._stderr_thread = threading.Thread(
            target=self._read_stderr, name="agent-stderr", daemon=True
        )
        self._stderr_thread.start()

    @property
    def pid(self):
        return self.proc.pid

    def _read_stderr(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            with self._lock:
                self.stderr_lines.append(line)
            if "netmon is running" in line:
                self._running.set()

    def stderr_text(self):
        with self._lock:
            return "\n".join(self.stderr_lines)

    def wait_running(self):
        """None when running, else the failure text."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self._running.wait(0.05):
                self.bpf_objects = bpf_objects_of(self.proc.pid)
                return None
            if self.proc.poll() is not None:
                self._stderr_thread.join(5)
                return f"exited with {self.proc.returncode} before running:\n{self.stderr_text()}"
        return f"not running after {STARTUP_TIMEOUT} s:\n{self.stderr_text()}"

    @property
    def metrics_url(self):
        m = METRICS_RE.search(self.stderr_text())
        return m.group(1) if m else None

    # -- stdout

    def drain(self):
        """Starts reading stdout (until EOF) in a thread."""
        self._drainer = threading.Thread(target=self._drain, name="agent-stdout", daemon=True)
        self._drainer.start()

    def _drain(self):
        pending = b""
        while True:
            try:
                chunk = os.read(self.read_fd, 1 << 16)
            except OSError:
                return
            if not chunk:
                self.eof.set()
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            parsed = [self._parse(raw) for raw in lines]
            with self._lock:
                self.stdout_bytes += len(chunk)
                self.last_read = time.monotonic()
                for line, event, problem in parsed:
                    self.stdout_lines.append(line)
                    if event is None:
                        self.invalid_lines.append(line)
                    else:
                        self.events.append(event)
                    if problem:
                        self.schema_failures.append((line, problem))

    @staticmethod
    def _parse(raw):
        """(line, event or None, schema problems) of one stdout line."""
        try:
            line = raw.decode("utf-8")
            event = json.loads(line)
        except ValueError:  # UnicodeDecodeError is one
            return repr(raw), None, []
        if not isinstance(event, dict):
            return line, None, []
        return line, event, schema_problems(event)

    def assert_valid_output(self):
        """Every line read is a JSON object that passes docs/event.schema.json."""
        with self._lock:
            invalid, failures = list(self.invalid_lines), list(self.schema_failures)
        assert invalid == [], f"stdout lines that are not JSON objects: {invalid[:5]}"
        assert failures == [], (
            f"{len(failures)} event(s) fail docs/event.schema.json; the first:\n"
            + "\n".join(f"{line}\n  -> {problems}" for line, problems in failures[:3]))

    def events_with_port(self, port):
        """The network_event objects of the events read so far with `port` at either end."""
        with self._lock:
            events = list(self.events)
        found = []
        for event in events:
            ne = event.get("network_event") or {}
            if port in (ne.get("sport"), ne.get("dport")):
                found.append(ne)
        return found

    def stop_summary(self):
        """({name: count}, {stage: count}) of the "stopped:" line: the events the pipeline
        made (establish, accept, close, failed) and `written`; the losses by stage."""
        stopped = [line for line in self.stderr_lines if "stopped: " in line]
        assert stopped, self.stderr_text()
        head, _, rest = stopped[-1].split("stopped: ", 1)[1].partition("; lost: ")
        counts = {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", head)}
        lost = {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", rest.split(";")[0])}
        return counts, lost

    def idle_for(self, seconds):
        with self._lock:
            last = self.last_read
        return last is not None and time.monotonic() - last >= seconds

    # -- lifecycle

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"the agent did not exit within {STOP_TIMEOUT} s of SIGTERM:\n{self.stderr_text()}"
            )
        finally:
            self._stderr_thread.join(5)
            if self._drainer:
                self._drainer.join(5)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def close(self):
        self.kill()
        if self.read_fd >= 0:
            if self._drainer is not None:
                self._drainer.join(5)
            os.close(self.read_fd)
            self.read_fd = -1


def scrape(url):
    with urllib.request.urlopen(url + "/metrics", timeout=10) as reply:
        return reply.read().decode("utf-8")


def metric_sum(text, name, **labels):
    """The sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        m = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})?\s+(\S+)(?:\s+\d+)?", line)
        if not m:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def connect_burst(port, count, deadline):
    """Opens and closes `count` loopback connections to a listener on 127.0.0.1:`port` (or as
    many as fit before `deadline`), the client closing first. Returns each connection's (client
    port, client socket's cookie, accepted socket's cookie)."""
    made = []
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
        listener.settimeout(5)
        while len(made) < count and time.monotonic() < deadline:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
                server, _ = listener.accept()
                with server:
                    made.append((client.getsockname()[1], socket_cookie(client),
                                 socket_cookie(server)))
    return made


def expected_events(port, made):
    """The events connect_burst's connections must give, as (type, cookie, sport, dport): an
    Establish and the client's Close, an Accept and the server's Close."""
    expected = set()
    for cport, client_cookie, server_cookie in made:
        expected |= {(ESTABLISH, client_cookie, cport, port), (CLOSE, client_cookie, cport, port),
                     (ACCEPT, server_cookie, port, cport), (CLOSE, server_cookie, port, cport)}
    assert len(expected) == 4 * len(made), "a cookie seen twice"
    return expected


def compare(agent, expected_by_port):
    """(missing, extra): Counters of the expected events not read from stdout, and of those read
    on the expected ports that are not expected or read more than once."""
    want = collections.Counter()
    have = collections.Counter()
    for port, expected in expected_by_port.items():
        want.update(expected)
        have.update((ne["type"], ne["cookie"], ne["sport"], ne["dport"])
                    for ne in agent.events_with_port(port))
    return want - have, have - want


def describe(missing, extra):
    return (f"{sum(missing.values())} expected event(s) missing, e.g. {sorted(missing)[:3]}; "
            f"{sum(extra.values())} unexpected or repeated, e.g. {sorted(extra)[:3]}")


def stop_and_account(agent, expected_by_port):
    """SIGTERM, then stdout read to its end: nothing unexpected or repeated on stdout, every
    line valid, and the events missing exactly the ones the agent counted as dropped at the
    output queue, every other loss stage at 0; its own books balance (events made = written +
    dropped, and written = the lines read). Returns the number missing."""
    code = agent.stop()
    assert code == 0, f"agent exited with {code}:\n{agent.stderr_text()}"
    assert agent.eof.is_set(), "stdout not read to its end"
    agent.assert_valid_output()
    missing, extra = compare(agent, expected_by_port)
    counts, lost = agent.stop_summary()
    assert not extra, describe(missing, extra)
    assert lost["output_queue"] == sum(missing.values()), (
        f"output_queue {lost['output_queue']}, but {describe(missing, extra)}")
    assert all(n == 0 for stage, n in lost.items() if stage != "output_queue"), lost
    made = sum(counts[k] for k in ("establish", "accept", "close", "failed"))
    assert made == counts["written"] + lost["output_queue"], (counts, lost)
    assert counts["written"] == len(agent.stdout_lines), (counts, len(agent.stdout_lines))
    assert_no_programs_left(agent)
    return sum(missing.values())


def start_blocked_agent(config_dir, *extra_args):
    require_privileges()
    agent = BlockedAgent(config_dir, *extra_args)
    failure = agent.wait_running()
    if failure is not None:
        agent.close()
        unavailable = bpf_unavailable_reason()
        if agent.proc.returncode == 1 and unavailable:
            skip_or_fail(f"BPF is unavailable ({unavailable}): the agent {failure}")
        pytest.fail(f"the agent did not start although BPF works here: {failure}", pytrace=False)
    if OBSERVER_ATTACHED not in agent.stderr_text():
        agent.close()
        skip_or_fail("the TCP state observer did not attach here:\n" + agent.stderr_text())
    return agent


@pytest.fixture
def blocked_agent(tmp_path):
    """An agent with the default pause bound (1 s)."""
    agent = start_blocked_agent(str(tmp_path))
    try:
        yield agent
    finally:
        agent.close()
    agent.assert_valid_output()


@pytest.fixture
def patient_agent(tmp_path):
    """An agent that may pause up to 60 s: only the ring buffer's fill level ends a pause."""
    agent = start_blocked_agent(str(tmp_path), "--output-max-pause-ms", "60000",
                                "--ring-buffer-bytes", str(PATIENT_RING_BYTES))
    try:
        yield agent
    finally:
        agent.close()
    agent.assert_valid_output()


def test_blocked_stdout_drops_counts_and_recovers(blocked_agent):
    """stdout blocked during a burst: the agent drops and counts what does not fit, keeps
    reading the kernel (its connection metrics count every connection, the ring buffer loses
    nothing), and once stdout is read again reports new connections in full. At the end the
    events missing are exactly those it counted as dropped."""
    agent = blocked_agent
    url = wait_for(lambda: agent.metrics_url, timeout=EVENT_TIMEOUT, what="the metrics URL")
    before = scrape(url)
    opened_before = metric_sum(before, "netmon_connections_opened_total")

    # The burst, while nobody reads stdout: the pipe (64 KiB) and the queue (64 KiB) fill.
    port, recovery_port = agent.ports
    deadline = time.monotonic() + BURST_SECONDS
    made = connect_burst(port, BURST_CONNECTIONS, deadline)
    assert len(made) >= 500, f"only {len(made)} connections in {BURST_SECONDS} s"

    # Still blocked: the agent drops and counts, and keeps reading the kernel.
    def blocked_state():
        text = scrape(url)
        lost_queue = metric_sum(text, "netmon_events_lost_total", stage="output_queue")
        opened = metric_sum(text, "netmon_connections_opened_total") - opened_before
        # Both ends of every connection of the burst: at least 2 opened per connection.
        return (lost_queue, opened, text) if lost_queue > 0 and opened >= 2 * len(made) else None

    lost_queue, opened, text = wait_for(
        blocked_state,
        timeout=EVENT_TIMEOUT,
        interval=0.2,
        what=lambda: f"output_queue losses and {2 * len(made)} opened connections:\n"
        + "\n".join(line for line in scrape(url).splitlines() if "lost" in line or "opened" in line),
    )
    assert agent.stdout_bytes == 0  # nobody has read yet
    assert metric_sum(text, "netmon_events_lost_total", stage="ring_buffer") == 0, text
    assert agent.proc.poll() is None, agent.stderr_text()

    # Recovery: read stdout; once the backlog is through, new connections' events arrive.
    agent.drain()
    wait_for(lambda: agent.idle_for(1.0), timeout=EVENT_TIMEOUT, what="stdout backlog drained")
    # One connection at a time, each once its four events are read (Establish, Accept and a
    # Close for each end): a batch larger than the whole queue (64 KiB, ~20 lines of a root
    # process) would be dropped even when the queue is empty.
    recovered = []
    for n in range(1, RECOVERY_CONNECTIONS + 1):
        recovered += connect_burst(recovery_port, 1, time.monotonic() + 10)
        assert len(recovered) == n
        wait_for(lambda: not compare(agent, {recovery_port: expected_events(recovery_port,
                                                                            recovered)})[0],
                 timeout=EVENT_TIMEOUT,
                 what=lambda: f"the events of recovery connection {n}: "
                 + describe(*compare(agent, {recovery_port: expected_events(recovery_port,
                                                                            recovered)})))
    after = scrape(url)
    assert metric_sum(after, "netmon_events_lost_total", stage="ring_buffer") == 0, after
    lost_before_stop = metric_sum(after, "netmon_events_lost_total", stage="output_queue")

    # SIGTERM: exit 0; the burst's missing events are exactly the output-queue drops (none
    # since the recovery), the recovery's events are all there, no BPF object left.
    expected = {port: expected_events(port, made),
                recovery_port: expected_events(recovery_port, recovered)}
    missing = stop_and_account(agent, expected)
    assert missing == lost_before_stop >= lost_queue > 0, (missing, lost_before_stop, lost_queue)
    assert not compare(agent, {recovery_port: expected[recovery_port]})[0]


def test_stalled_stdout_loses_nothing_the_ring_buffer_can_hold(patient_agent):
    """stdout stalls during a burst whose JSON is 30 times the queue and the pipe together, but
    whose records fill less than half the ring buffer: the reader waits, and once stdout is read
    again every event arrives, exactly the set the test computes, none dropped."""
    agent = patient_agent
    url = wait_for(lambda: agent.metrics_url, timeout=EVENT_TIMEOUT, what="the metrics URL")
    port = agent.ports[0]
    made = connect_burst(port, STALL_CONNECTIONS, time.monotonic() + BURST_SECONDS)
    assert len(made) == STALL_CONNECTIONS, f"only {len(made)} connections in {BURST_SECONDS} s"
    # The reader is waiting: it says so in its metrics, and has dropped nothing.
    text = wait_for(
        lambda: (t := scrape(url)) and metric_sum(t, "netmon_output_waits_total") >= 1 and t,
        timeout=EVENT_TIMEOUT,
        interval=0.2,
        what="netmon_output_waits_total >= 1",
    )
    assert metric_sum(text, "netmon_events_lost_total") == 0, text
    assert agent.stdout_bytes == 0

    agent.drain()
    expected = {port: expected_events(port, made)}
    wait_for(lambda: not compare(agent, expected)[0], timeout=EVENT_TIMEOUT,
             what=lambda: describe(*compare(agent, expected)))
    text = scrape(url)
    assert metric_sum(text, "netmon_events_lost_total") == 0, text
    assert metric_sum(text, "netmon_output_wait_seconds_total") > 0, text

    assert stop_and_account(agent, expected) == 0
    stopped = [line for line in agent.stderr_lines if "stopped: " in line]
    m = re.search(r"output waits (\d+) \((\d+) ms\), sheds (\d+)", stopped[-1])
    assert m and int(m.group(1)) >= 1 and int(m.group(3)) == 0, stopped[-1]


def test_blocked_stdout_stops_the_wait_when_the_ring_buffer_is_half_full(patient_agent):
    """stdout stays blocked and the burst's records exceed half the ring buffer (1 MiB): the
    reader stops waiting long before its 60 s bound, reads the kernel again and drops what does
    not fit, counted; the ring buffer itself loses nothing. Read at last, stdout lacks exactly
    the events counted as dropped."""
    agent = patient_agent
    url = wait_for(lambda: agent.metrics_url, timeout=EVENT_TIMEOUT, what="the metrics URL")
    port = agent.ports[0]
    started = time.monotonic()
    made = connect_burst(port, BURST_CONNECTIONS, started + BURST_SECONDS)
    assert len(made) >= 1000, f"only {len(made)} connections in {BURST_SECONDS} s"  # > 800 KB

    def shedding():
        text = scrape(url)
        return text if metric_sum(text, "netmon_events_lost_total", stage="output_queue") else None

    text = wait_for(shedding, timeout=EVENT_TIMEOUT, interval=0.2, what="output_queue losses")
    assert time.monotonic() - started < 50, "the wait ended by its time bound, not the ring's fill"
    assert metric_sum(text, "netmon_events_lost_total", stage="ring_buffer") == 0, text
    assert metric_sum(text, "netmon_output_waits_total") >= 1, text
    assert agent.stdout_bytes == 0
    # Read stdout, so that the agent can write what it kept, and stop it once every event of
    # the burst is written or dropped (netmon_events_total: lines written; the rules pass only
    # the test's events).
    agent.drain()

    def handled():
        text = scrape(url)
        return (metric_sum(text, "netmon_events_total")
                + metric_sum(text, "netmon_events_lost_total", stage="output_queue"))

    wait_for(lambda: handled() >= 4 * len(made), timeout=EVENT_TIMEOUT, interval=0.2,
             what=lambda: f"every event of the burst written or dropped: {handled()} of "
             f"{4 * len(made)}")
    assert stop_and_account(agent, {port: expected_events(port, made)}) > 0


STOP_BACKLOG_CONNECTIONS = 1000


def test_stop_writes_the_kernel_backlog(start_agent, tmp_path):
    """SIGTERM with a backlog in the ring buffer much larger than the output queue (64 KiB):
    the agent writes all of it before it exits (waiting for stdout, 5 s at most) instead of
    dropping what does not fit the queue: exactly the events the test computes, each once, and
    nothing counted lost. The backlog is made while the agent is stopped (SIGSTOP), so that it
    reads the burst only after the SIGTERM. Its rules report only the burst's port: the host's
    other connections meanwhile (other tests' storms: thousands) would make the backlog's
    writing depend on them."""
    port = free_port()
    config = tmp_path / "netmon.yaml"
    config.write_text(RULES.format(ports=port))
    agent = start_agent("--output-queue-bytes", str(QUEUE_BYTES), "--config", str(config))
    if OBSERVER_ATTACHED not in agent.stderr_text():
        skip_or_fail("the TCP state observer did not attach here:\n" + agent.stderr_text())
    os.kill(agent.pid, signal.SIGSTOP)
    try:
        made = connect_burst(port, STOP_BACKLOG_CONNECTIONS, time.monotonic() + BURST_SECONDS)
        # Every CLOSE transition of the burst made (the kernel's socket table): the agent is
        # stopped, so its events wait in the ring buffer.
        wait_for(lambda: not sockets_closing({port}), timeout=EVENT_TIMEOUT,
                 what=lambda: f"the burst's sockets closed: {sockets_closing({port})}")
    finally:
        os.kill(agent.pid, signal.SIGTERM)
        os.kill(agent.pid, signal.SIGCONT)
    assert len(made) >= 500, f"only {len(made)} connections in {BURST_SECONDS} s"
    code = agent.stop()
    assert code == 0, f"agent exited with {code}:\n{agent.stderr_text()}"
    stopped = [line for line in agent.stderr_lines if "stopped: " in line]
    assert stopped, agent.stderr_text()
    lost = {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", stopped[-1].split("lost: ")[1]
                                             .split(";")[0])}
    assert lost and not any(lost.values()), stopped[-1]
    expected = collections.Counter(expected_events(port, made))
    written = collections.Counter(
        (e["network_event"]["type"], e["network_event"]["cookie"], e["network_event"]["sport"],
         e["network_event"]["dport"]) for e in agent.events(ports={port}))
    assert written == expected, describe(expected - written, written - expected)
