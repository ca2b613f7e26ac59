"""What a hostile or broken node does to the agent (issue #17): signals, a stdout that breaks, the
count of events written, configuration checks, bytes that are not UTF-8.

- SIGHUP stops the agent like SIGTERM (drain, "stopped:" summary, exit 0); SIGUSR1 logs a
  "status:" line and the agent keeps running; SIGUSR2 (and SIGALRM, SIGPWR, ...) are ignored,
  logged. Before, each of them killed the agent: no summary, queued events lost uncounted.
- A stdout whose reader is gone (EPIPE) stops the agent with exit status 3 (docs/deployment.md)
  and its summary, instead of running on, ready, dropping every event.
- netmon_events_total{type} counts lines written to stdout, equal to the lines read and to the
  stop summary's "written" figures, also when the output queue drops events.
- --check-config validates as a start does without loading BPF (exit 0 or 2); --print-config
  refuses what a start refuses; --proc-root that is not a proc filesystem and a hook given twice
  in --hook-variant are configuration errors (exit 2).
- Bytes of a path or argument that are not UTF-8 reach stdout as the text \\xHH (Python's
  backslashreplace), never as characters they are not; the line passes docs/event.schema.json.
"""

import collections
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import (
    AGENT,
    EVENT_TIMEOUT,
    STARTUP_TIMEOUT,
    STOP_TIMEOUT,
    Agent,
    assert_no_programs_left,
    clean_env,
    require_privileges,
    wait_for,
)
from test_backpressure import connect_burst, metric_sum, scrape, start_blocked_agent

ESTABLISH = "TcpConnectionEstablish"
ACCEPT = "TcpConnectionAccept"
CLOSE = "TcpConnectionClose"
FAILED = "TcpConnectionFailed"
TYPES = {"establish": ESTABLISH, "accept": ACCEPT, "close": CLOSE, "failed": FAILED}
EXIT_OUTPUT_FAILED = 3  # docs/deployment.md: stdout failed
CHECK_TIMEOUT = 10.0  # seconds for --check-config / --print-config / a refused start


def summary_line(agent, prefix="stopped: "):
    lines = [line for line in agent.stderr_lines if prefix in line]
    assert lines, f"no '{prefix}' line in:\n{agent.stderr_text()}"
    return lines[-1].split(prefix, 1)[1]


def written_by_type(summary):
    """{event type: lines written} from the summary's "written by type:" section."""
    m = re.search(r"written by type: ([^;]*)", summary)
    assert m, summary
    return {TYPES[k]: int(v) for k, v in re.findall(r"(\w+) (\d+)", m.group(1))}


def summary_number(summary, label):
    m = re.search(rf"\b{label} (\d+)", summary)
    assert m, f"no '{label}' in {summary}"
    return int(m.group(1))


def loopback_connection():
    """One loopback connection, opened and closed (client first). Returns (client port, port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(5)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            cport = client.getsockname()[1]
            server, _ = listener.accept()
            with server:
                client.close()
                server.settimeout(5)
                assert server.recv(1) == b""
    return cport, port


# ---- signals ----


def test_sighup_stops_cleanly_and_drains(start_agent):
    """SIGHUP right after a connection: exit 0, "received SIGHUP: stopping", the summary, the
    connection's events written (the backlog is drained, not lost), no BPF object left."""
    agent = start_agent()
    cport, port = loopback_connection()
    code = agent.stop(signal.SIGHUP)
    assert code == 0, f"exit {code} after SIGHUP:\n{agent.stderr_text()}"
    assert "received SIGHUP: stopping" in agent.stderr_text()
    summary = summary_line(agent)
    seen = {(e["network_event"]["type"], e["network_event"]["sport"])
            for e in agent.events(ports={port})}
    assert {(ESTABLISH, cport), (CLOSE, cport), (ACCEPT, port), (CLOSE, port)} <= seen, (
        seen, summary)
    assert summary_number(summary, "written") == len(agent.stdout_lines), summary
    assert_no_programs_left(agent)


def test_sigusr1_logs_status_and_keeps_running(start_agent):
    """SIGUSR1: a "status:" line with the summary's figures; the agent keeps reporting."""
    agent = start_agent()
    agent.sync()
    agent.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: any("status: records " in line for line in agent.stderr_lines),
             timeout=EVENT_TIMEOUT, what="the status line after SIGUSR1")
    status = summary_line(agent, "status: ")
    assert "; lost: " in status and "written by type: " in status, status
    assert agent.proc.poll() is None, agent.stderr_text()
    agent.sync()  # still reading the kernel and writing events
    assert not any("stopped: " in line for line in agent.stderr_lines)


@pytest.mark.parametrize("sig", [signal.SIGUSR2, signal.SIGALRM, signal.SIGPWR],
                         ids=lambda s: s.name)
def test_stray_signals_are_ignored(start_agent, sig):
    """SIGUSR2, SIGALRM, SIGPWR (whose default would end the agent without a summary): logged
    and ignored; the agent keeps reporting, and stops cleanly on SIGTERM afterwards."""
    agent = start_agent()
    agent.proc.send_signal(sig)
    wait_for(lambda: f"ignoring {sig.name}" in agent.stderr_text(), timeout=EVENT_TIMEOUT,
             what=f"the log line for {sig.name}")
    agent.sync()
    assert agent.proc.poll() is None, agent.stderr_text()


# ---- stdout breaks ----


def test_closed_stdout_stops_with_status_3(tmp_path):
    """The reader of stdout goes away (EPIPE): one error line, the summary, exit status 3 within
    a bound, every BPF object released."""
    agent = start_blocked_agent(str(tmp_path))
    try:
        os.close(agent.read_fd)
        agent.read_fd = -1
        deadline = time.monotonic() + 5
        connect_burst(agent.ports[0], 20, deadline)
        try:
            code = agent.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the agent runs on {STOP_TIMEOUT} s after stdout broke:\n{agent.stderr_text()}")
        agent._stderr_thread.join(5)
        assert code == EXIT_OUTPUT_FAILED, f"exit {code}:\n{agent.stderr_text()}"
        text = agent.stderr_text()
        errors = [line for line in agent.stderr_lines
                  if "writing events to stdout failed (Broken pipe)" in line]
        assert len(errors) == 1, text
        summary = summary_line(agent)
        assert summary_number(summary, "written") == 0, summary
        assert_no_programs_left(agent)
    finally:
        agent.close()


# ---- netmon_events_total ----


def test_events_total_counts_the_lines_written(tmp_path):
    """stdout blocked during a burst, output queue dropping at once (--output-max-pause-ms 0):
    netmon_events_total{type} equals the lines read from stdout, by type, once the agent is
    quiet, while netmon_events_lost_total{stage="output_queue"} counts the rest; the stop
    summary's "written" and "written by type" are the same figures; events made = written +
    dropped."""
    agent = start_blocked_agent(str(tmp_path), "--output-max-pause-ms", "0")
    try:
        url = agent.metrics_url
        made = connect_burst(agent.ports[0], 400, time.monotonic() + 20)
        assert len(made) >= 200, f"only {len(made)} connections"
        wait_for(lambda: metric_sum(scrape(url), "netmon_events_lost_total",
                                    stage="output_queue") > 0,
                 timeout=EVENT_TIMEOUT, interval=0.2, what="output_queue losses")
        agent.drain()
        # A few connections once stdout is read again: the agent writes those in full.
        made += connect_burst(agent.ports[1], 5, time.monotonic() + 10)

        def lines_by_type():
            with agent._lock:
                events = list(agent.events)
            return collections.Counter(e["network_event"]["type"] for e in events)

        def quiet_and_equal():
            text = scrape(url)
            metric = {t: int(metric_sum(text, "netmon_events_total", type=t))
                      for t in TYPES.values()}
            have = lines_by_type()
            dropped = metric_sum(text, "netmon_events_lost_total", stage="output_queue")
            done = sum(metric.values()) + dropped == 4 * len(made)
            equal = all(metric[t] == have[t] for t in TYPES.values())
            return (text, metric) if done and equal else None

        text, metric = wait_for(
            quiet_and_equal, timeout=EVENT_TIMEOUT, interval=0.2,
            what=lambda: f"netmon_events_total {quiet_and_equal() or 'differs'} to equal the "
            f"lines read by type {dict(lines_by_type())}")
        dropped = int(metric_sum(text, "netmon_events_lost_total", stage="output_queue"))
        assert dropped > 0
        assert sum(metric.values()) + dropped == 4 * len(made), (metric, dropped, len(made))

        code = agent.stop()
        assert code == 0, agent.stderr_text()
        assert agent.eof.is_set(), "stdout not read to its end"
        agent.assert_valid_output()
        summary = summary_line(agent)
        have = lines_by_type()
        assert summary_number(summary, "written") == len(agent.stdout_lines), summary
        assert written_by_type(summary) == {t: have[t] for t in TYPES.values()}, (summary, have)
        assert written_by_type(summary) == metric, (summary, metric)  # nothing after the scrape
        made_events = sum(summary_number(summary, k) for k in TYPES)
        assert made_events == len(agent.stdout_lines) + summary_number(summary, "output_queue")
        assert summary_number(summary, "output_queue") == dropped, summary
        assert_no_programs_left(agent)
    finally:
        agent.close()


# ---- configuration checks ----

CYCLE = """\
egress:
  rules:
  - rule: r
    event: a
macros:
  a: b
  b: a
"""
RULE_PORT = """\
ingress:
  rules:
  - rule: r
    event: port_dst == 70000
"""
DEEP = 'egress:\n  rules:\n  - rule: r\n    event: "' + "(" * 100 + "port_dst == 1" + ")" * 100 + '"\n'
GOOD = """\
log_level: warn
egress:
  rules:
  - rule: web
    event: port_dst in web_ports AND NOT ipv4_dst in private
lists:
  web_ports: [80, 443]
  private: ["10.0.0.0/8"]
"""
BAD_CONFIGS = {
    "macro-cycle": (CYCLE, "macro cycle: a -> b -> a"),
    "rule-port-out-of-range": (RULE_PORT, "port 70000 is out of range"),
    "too-deep": (DEEP, "nested too deeply"),
    "unknown-key": ("log_levle: info\n", "log_levle"),
}


@pytest.fixture
def readable_dir():
    """A directory every user can read (pytest's tmp_path is root-only)."""
    path = tempfile.mkdtemp(prefix="netmon-check-config-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def config_file(directory, text):
    path = os.path.join(directory, "netmon.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, 0o644)
    return path


def run_agent(args, as_nobody=False):
    if not os.access(AGENT, os.X_OK):
        pytest.fail(f"agent binary not found at {AGENT}")
    prefix = []
    if as_nobody:
        # Without privileges, a start fails at loading BPF: exit 0 proves nothing was loaded.
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is missing"
        prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
                  "--inh-caps=-all", "--bounding-set=-all"]
    return subprocess.run([*prefix, AGENT, *args], capture_output=True, text=True,
                          timeout=CHECK_TIMEOUT, env=clean_env(), check=False)


def test_check_config_accepts_a_good_config_without_privileges(readable_dir):
    """--check-config: 0 for a valid file, as nobody without any capability (a start would fail
    to load BPF), with the chart's flags (--proc-root=/host/proc need not exist)."""
    path = config_file(readable_dir, GOOD)
    proc = run_agent(["--config", path, "--check-config", "--proc-root=/host/proc",
                      "--metrics-address=0.0.0.0:9477"], as_nobody=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "configuration is valid\n"
    assert "netmon is running" not in proc.stderr and "attached" not in proc.stderr


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
@pytest.mark.parametrize("command", ["--check-config", "--print-config"])
def test_check_and_print_config_refuse_what_a_start_refuses(readable_dir, name, command):
    """--check-config and --print-config exit 2 naming the problem, without privileges, for what
    a start refuses (before, --print-config printed a macro cycle and exited 0)."""
    text, reason = BAD_CONFIGS[name]
    path = config_file(readable_dir, text)
    proc = run_agent(["--config", path, command], as_nobody=True)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "configuration error" in proc.stderr and reason in proc.stderr, proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("flag", ["--metrics-address=127.0.0.1:70000",
                                  "--hook-variant=state=tp_btf,state=tracepoint"])
def test_check_config_refuses_bad_flags(flag):
    """An out-of-range port and a hook given twice: exit 2 for --check-config, --print-config
    and a start alike (before, the second state= silently won)."""
    for command in ("--check-config", "--print-config"):
        proc = run_agent([flag, command])
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        assert "configuration error" in proc.stderr, proc.stderr


def refused_start(*args):
    """Starts the agent (as the conftest Agent) and returns (exit status, stderr) once it exits,
    failing if it is still running after CHECK_TIMEOUT."""
    require_privileges()
    agent = Agent(args)
    try:
        code = agent.proc.wait(CHECK_TIMEOUT)
    except subprocess.TimeoutExpired:
        agent.kill()
        raise AssertionError(f"the agent started with {args}:\n{agent.stderr_text()}")
    for t in agent._threads:
        t.join(5)
    return code, agent.stderr_text()


@pytest.mark.parametrize("root", ["/nonexistent", "/tmp", "/etc/hostname"])
def test_proc_root_that_is_no_proc_filesystem_is_refused(root):
    """--proc-root naming nothing, a directory that is not procfs, a file: exit 2 before the
    kernel is touched (before, the agent ran with an empty process table)."""
    code, stderr = refused_start("--proc-root", root)
    assert code == 2, stderr
    assert f"configuration error: --proc-root {root}" in stderr, stderr
    assert "attached" not in stderr


def test_hook_given_twice_refuses_a_start():
    code, stderr = refused_start("--hook-variant", "state=tp_btf,state=tracepoint")
    assert code == 2, stderr
    assert "the state hook is given twice" in stderr, stderr


# ---- bytes that are not UTF-8 ----

CONNECT = "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1]))).close()"


def test_invalid_utf8_in_path_and_args_is_escaped(start_agent, tmp_path):
    """A copy of python3 under a name with bytes that are not UTF-8, run with such an argument:
    binary_path, filename and args carry each invalid byte as the text \\xHH (what Python's
    bytes.decode("utf-8", "backslashreplace") gives), valid UTF-8 as it is, and the line passes
    docs/event.schema.json (checked by the conftest Agent)."""
    agent = start_agent()
    name = b"py-\xe4\xff-\xc3\xa4"  # two invalid bytes, then a real "ä"
    exe = os.path.join(os.fsencode(str(tmp_path)), name)
    shutil.copy2(os.path.realpath(sys.executable), exe)
    os.chmod(exe, 0o755)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        arg = b"x\xff\xfey\xe2\x82"  # invalid bytes, and a sequence cut short
        argv = [exe, b"-c", CONNECT.encode(), str(port).encode(), arg]
        proc = subprocess.run(argv, capture_output=True, timeout=30, check=False)
        assert proc.returncode == 0, proc.stderr
        listener.settimeout(5)
        conn, _ = listener.accept()
        conn.close()
    (event,) = agent.wait_events(kind=ESTABLISH, dport=port)
    process = event["process"]
    want_path = exe.decode("utf-8", "backslashreplace")
    assert process["binary_path"] == want_path, process
    assert process["filename"] == name.decode("utf-8", "backslashreplace"), process
    assert process["filename"] == "py-\\xe4\\xff-\u00e4"
    want_args = b" ".join(argv[1:]).decode("utf-8", "backslashreplace")
    assert process["args"] == want_args, process
    assert "\\xff\\xfey\\xe2\\x82" in process["args"]
    assert "\u00ff" not in process["args"] and "\u00e4" not in process["binary_path"][:-1]
