"""Backpressure: the agent's stdout is a pipe nobody reads during a burst of connections.

When the output queue (--output-queue-bytes at its minimum, 64 KiB, so that it fills fast) has no
room, the kernel reader pauses and leaves the records in the ring buffer, for at most
--output-max-pause-ms and only while the ring buffer is less than half full. So a stdout that
stalls briefly loses nothing; one that stays blocked makes the agent read the kernel again (its
connection metrics keep counting, the ring buffer loses nothing), drop and count what does not
fit, and recover once the reader resumes: later events reach stdout again. On SIGTERM it exits 0
and its "stopped:" summary reports the output-queue loss.

The conftest Agent reads stdout continuously, so this test starts the agent itself.
"""

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
    KERNEL_LOSS_STAGES,
    EVENT_TIMEOUT,
    STARTUP_TIMEOUT,
    STOP_TIMEOUT,
    assert_no_programs_left,
    bpf_objects_of,
    bpf_unavailable_reason,
    clean_env,
    free_port,
    require_privileges,
    skip_or_fail,
    wait_for,
)

import pytest

QUEUE_BYTES = 65536  # the minimum --output-queue-bytes
BURST_CONNECTIONS = 2000
BURST_SECONDS = 20.0  # the burst stops at this bound even if it is not complete
RECOVERY_CONNECTIONS = 5
STALL_CONNECTIONS = 300  # ~1200 events: megabytes of JSON, ~250 KB of kernel records
PATIENT_RING_BYTES = 1 << 20
METRICS_RE = re.compile(r"serving /metrics, /healthz and /readyz on (http://\S+)")


class BlockedAgent:
    """netmon-agent whose stdout is a pipe the test reads only once drain() is called."""

    def __init__(self, *extra_args):
        self.read_fd, write_fd = os.pipe()
        self._lock = threading.Lock()
        self.stderr_lines = []
        self.stdout_lines = []  # decoded lines, once draining
        self.stdout_bytes = 0
        self.last_read = None  # monotonic time of the last read from stdout
        self._running = threading.Event()
        self._drainer = None
        self.bpf_objects = {}
        try:
            self.proc = subprocess.Popen(
                [AGENT, "--metrics-address", "127.0.0.1:0", "--output-queue-bytes",
                 str(QUEUE_BYTES), *extra_args],
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
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            with self._lock:
                self.stdout_bytes += len(chunk)
                self.last_read = time.monotonic()
                self.stdout_lines.extend(line.decode("utf-8", errors="replace") for line in lines)

    def events_with_port(self, port):
        with self._lock:
            lines = list(self.stdout_lines)
        found = []
        for line in lines:
            if str(port) not in line:
                continue
            ne = json.loads(line).get("network_event") or {}
            if port in (ne.get("sport"), ne.get("dport")):
                found.append(ne)
        return found

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
    many as fit before `deadline`); returns how many were made."""
    made = 0
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
        listener.settimeout(5)
        while made < count and time.monotonic() < deadline:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
                server, _ = listener.accept()
                server.close()
            made += 1
    return made


def start_blocked_agent(*extra_args):
    require_privileges()
    agent = BlockedAgent(*extra_args)
    failure = agent.wait_running()
    if failure is not None:
        agent.close()
        unavailable = bpf_unavailable_reason()
        if agent.proc.returncode == 1 and unavailable:
            skip_or_fail(f"BPF is unavailable ({unavailable}): the agent {failure}")
        pytest.fail(f"the agent did not start although BPF works here: {failure}", pytrace=False)
    return agent


@pytest.fixture
def blocked_agent():
    """An agent with the default pause bound (1 s)."""
    agent = start_blocked_agent()
    try:
        yield agent
    finally:
        agent.close()


@pytest.fixture
def patient_agent():
    """An agent that may pause up to 60 s: only the ring buffer's fill level ends a pause."""
    agent = start_blocked_agent("--output-max-pause-ms", "60000", "--ring-buffer-bytes",
                                str(PATIENT_RING_BYTES))
    try:
        yield agent
    finally:
        agent.close()


def test_blocked_stdout_drops_counts_and_recovers(blocked_agent):
    agent = blocked_agent
    url = wait_for(lambda: agent.metrics_url, timeout=EVENT_TIMEOUT, what="the metrics URL")
    before = scrape(url)
    opened_before = metric_sum(before, "netmon_connections_opened_total")

    # The burst, while nobody reads stdout: the pipe (64 KiB) and the queue (64 KiB) fill.
    port = free_port()
    deadline = time.monotonic() + BURST_SECONDS
    made = connect_burst(port, BURST_CONNECTIONS, deadline)
    assert made >= 500, f"only {made} connections in {BURST_SECONDS} s"

    # Still blocked: the agent drops and counts, and keeps reading the kernel.
    def blocked_state():
        text = scrape(url)
        lost_queue = metric_sum(text, "netmon_events_lost_total", stage="output_queue")
        opened = metric_sum(text, "netmon_connections_opened_total") - opened_before
        # Both ends of every connection of the burst: at least 2 opened per connection.
        return (lost_queue, opened, text) if lost_queue > 0 and opened >= 2 * made else None

    lost_queue, opened, text = wait_for(
        blocked_state,
        timeout=EVENT_TIMEOUT,
        interval=0.2,
        what=lambda: f"output_queue losses and {2 * made} opened connections:\n"
        + "\n".join(line for line in scrape(url).splitlines() if "lost" in line or "opened" in line),
    )
    assert agent.stdout_bytes == 0  # nobody has read yet
    assert metric_sum(text, "netmon_events_lost_total", stage="ring_buffer") == 0, text
    assert agent.proc.poll() is None, agent.stderr_text()

    # Recovery: read stdout; once the backlog is through, new connections' events arrive.
    agent.drain()
    wait_for(lambda: agent.idle_for(1.0), timeout=EVENT_TIMEOUT, what="stdout backlog drained")
    recovery_port = free_port(47911)
    # One connection per poll round: a batch larger than the whole queue (64 KiB, ~20 lines of
    # a root process) is dropped even when the queue is empty.
    for _ in range(RECOVERY_CONNECTIONS):
        assert connect_burst(recovery_port, 1, time.monotonic() + 10) == 1
        time.sleep(0.3)
    # Per connection: Establish, Accept and a Close for each end.
    expected = 4 * RECOVERY_CONNECTIONS
    events = wait_for(
        lambda: (e := agent.events_with_port(recovery_port)) and len(e) >= expected and e,
        timeout=EVENT_TIMEOUT,
        what=lambda: f"{expected} events on port {recovery_port}; have "
        f"{len(agent.events_with_port(recovery_port))}",
    )
    kinds = sorted(e.get("type") for e in events)
    assert len(events) == expected, kinds
    after = scrape(url)
    assert metric_sum(after, "netmon_events_lost_total", stage="ring_buffer") == 0, after

    # SIGTERM: exit 0, the summary reports the output-queue loss, no BPF object left.
    code = agent.stop()
    assert code == 0, f"agent exited with {code}:\n{agent.stderr_text()}"
    stopped = [line for line in agent.stderr_lines if "stopped: " in line]
    assert stopped, agent.stderr_text()
    m = re.search(r"output_queue (\d+)", stopped[-1])
    assert m and int(m.group(1)) >= lost_queue > 0, stopped[-1]
    for line in agent.stdout_lines:
        assert isinstance(json.loads(line), dict), line
    assert_no_programs_left(agent)


def test_stalled_stdout_loses_nothing_the_ring_buffer_can_hold(patient_agent):
    """stdout stalls during a burst whose JSON is 30 times the queue and the pipe together, but
    whose records fill less than half the ring buffer: the reader waits, and once stdout is read
    again every event arrives, none dropped."""
    agent = patient_agent
    url = wait_for(lambda: agent.metrics_url, timeout=EVENT_TIMEOUT, what="the metrics URL")
    port = free_port()
    made = connect_burst(port, STALL_CONNECTIONS, time.monotonic() + BURST_SECONDS)
    assert made == STALL_CONNECTIONS, f"only {made} connections in {BURST_SECONDS} s"
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
    expected = 4 * made
    events = wait_for(
        lambda: (e := agent.events_with_port(port)) and len(e) >= expected and e,
        timeout=EVENT_TIMEOUT,
        what=lambda: f"{expected} events on port {port}; have {len(agent.events_with_port(port))}",
    )
    assert len(events) == expected
    assert len({(e["type"], e["cookie"]) for e in events}) == expected  # each exactly once
    text = scrape(url)
    assert metric_sum(text, "netmon_events_lost_total") == 0, text
    assert metric_sum(text, "netmon_output_wait_seconds_total") > 0, text

    code = agent.stop()
    assert code == 0, f"agent exited with {code}:\n{agent.stderr_text()}"
    stopped = [line for line in agent.stderr_lines if "stopped: " in line]
    assert stopped and "output_queue 0," in stopped[-1], agent.stderr_text()
    m = re.search(r"output waits (\d+) \((\d+) ms\), sheds (\d+)", stopped[-1])
    assert m and int(m.group(1)) >= 1 and int(m.group(3)) == 0, stopped[-1]
    assert_no_programs_left(agent)


def test_blocked_stdout_stops_the_wait_when_the_ring_buffer_is_half_full(patient_agent):
    """stdout stays blocked and the burst's records exceed half the ring buffer (1 MiB): the
    reader stops waiting long before its 60 s bound, reads the kernel again and drops what does
    not fit, counted; the ring buffer itself loses nothing."""
    agent = patient_agent
    url = wait_for(lambda: agent.metrics_url, timeout=EVENT_TIMEOUT, what="the metrics URL")
    port = free_port()
    started = time.monotonic()
    made = connect_burst(port, BURST_CONNECTIONS, started + BURST_SECONDS)
    assert made >= 1000, f"only {made} connections in {BURST_SECONDS} s"  # > 800 KB of records

    def shedding():
        text = scrape(url)
        return text if metric_sum(text, "netmon_events_lost_total", stage="output_queue") else None

    text = wait_for(shedding, timeout=EVENT_TIMEOUT, interval=0.2, what="output_queue losses")
    assert time.monotonic() - started < 50, "the wait ended by its time bound, not the ring's fill"
    assert metric_sum(text, "netmon_events_lost_total", stage="ring_buffer") == 0, text
    assert metric_sum(text, "netmon_output_waits_total") >= 1, text
    assert agent.stdout_bytes == 0
    code = agent.stop()
    assert code == 0, f"agent exited with {code}:\n{agent.stderr_text()}"
    assert_no_programs_left(agent)


STOP_BACKLOG_CONNECTIONS = 1000


def test_stop_writes_the_kernel_backlog(start_agent):
    """SIGTERM with a backlog in the ring buffer much larger than the output queue (64 KiB):
    the agent writes all of it before it exits (waiting for stdout, 5 s at most) instead of
    dropping what does not fit the queue. The backlog is made while the agent is stopped
    (SIGSTOP), so that it reads the burst only after the SIGTERM."""
    agent = start_agent("--output-queue-bytes", str(QUEUE_BYTES))
    port = free_port()
    os.kill(agent.pid, signal.SIGSTOP)
    try:
        made = connect_burst(port, STOP_BACKLOG_CONNECTIONS, time.monotonic() + BURST_SECONDS)
        time.sleep(0.5)  # the last connections' CLOSE transitions
    finally:
        os.kill(agent.pid, signal.SIGTERM)
        os.kill(agent.pid, signal.SIGCONT)
    assert made >= 500, f"only {made} connections in {BURST_SECONDS} s"
    code = agent.stop()
    assert code == 0, f"agent exited with {code}:\n{agent.stderr_text()}"
    stopped = [line for line in agent.stderr_lines if "stopped: " in line]
    assert stopped, agent.stderr_text()
    lost = {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", stopped[-1].split("lost: ")[1])}
    assert lost["output_queue"] == 0, stopped[-1]
    kernel_lost = sum(lost[s] for s in KERNEL_LOSS_STAGES)
    written = len(agent.events(ports={port}))
    assert written <= 4 * made, stopped[-1]
    assert 4 * made - written <= kernel_lost, f"{written} of {4 * made} events: {stopped[-1]}"
