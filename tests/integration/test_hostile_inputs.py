"""What a hostile or broken node does to the agent (issue #17): special files where a token, a
CA or a configuration file should be, a token that would smuggle a header into the kubelet
request, a token over plain HTTP, input echoed into messages without bound, and a kubelet that
answers with noise or announces a body far over the agent's cap.

Tests that only need the agent to refuse its configuration run the binary directly (no BPF:
the checks come before the kernel is touched); the others run it through conftest's
start_agent, which checks a clean stop. The kubelet stand-in is kubelet_stub.py (HTTPS with
test certificates, or plain HTTP).
"""

import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

import kubelet_stub
from conftest import STOP_TIMEOUT, Agent, skip_or_fail, wait_for

REFUSE_TIMEOUT = 10.0  # seconds for the agent to refuse its configuration and exit 2
SYNC_TIMEOUT = 10.0  # seconds for the agent's first kubelet request to end (poll: 1 s)
HTTP_TIMEOUT = 10.0
MAX_LINE = 2000  # bytes: no stderr line of a refusal is longer
TOO_LARGE_LENGTH = 100_000_000  # the Content-Length a hostile kubelet announces
# How much the agent's peak RSS (VmHWM) may grow while it turns away that response. Before the
# fix it read 64 MiB of it into a buffer that doubled to 120 MiB.
TOO_LARGE_RSS_GROWTH_KIB = 16 * 1024


# ---------------------------------------------------------------------------------------------
# Helpers


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    if not shutil.which("openssl"):
        skip_or_fail("the openssl command is not installed")
    return kubelet_stub.make_certificates(str(tmp_path_factory.mktemp("hostile-kubelet-tls")))


@pytest.fixture
def stubs():
    """A factory: stubs(certs_or_None, token) makes a kubelet stand-in (plain HTTP without
    certificates), not started. All are stopped at teardown."""
    made = []

    def make(tls, token, port=0):
        stub = kubelet_stub.KubeletStub(tls["cert"] if tls else None, tls["key"] if tls else None,
                                        token, port=port)
        made.append(stub)
        return stub

    yield make
    for stub in made:
        stub.stop()


def write_token(tmp_path, text, name="token"):
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    path.chmod(0o600)
    return str(path)


def refused(agent_binary, *args, timeout=REFUSE_TIMEOUT):
    """Runs the agent with `args`, which it must refuse: exit status 2 within `timeout`, nothing
    on stdout. Returns its stderr. An agent still running at the timeout gets SIGTERM and must
    then stop within STOP_TIMEOUT (the test fails either way)."""
    agent = Agent(args)
    try:
        agent.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        started = time.monotonic()
        code = None
        try:
            code = agent.stop(signal.SIGTERM)
        finally:
            agent.kill()
        pytest.fail(f"the agent still ran {timeout} s after it started (exit {code} "
                    f"{time.monotonic() - started:.1f} s after SIGTERM):\n"
                    f"{agent.stderr_text()[-2000:]}", pytrace=False)
    for t in agent._threads:
        t.join(5)
    stderr = agent.stderr_text()
    assert agent.proc.returncode == 2, f"exit {agent.proc.returncode}:\n{stderr[-2000:]}"
    assert agent.stdout_lines == []
    return stderr


def kubelet_results(agent):
    """netmon_kubelet_requests_total by result, from the agent's /metrics."""
    return {m.group(1): int(float(m.group(2))) for m in re.finditer(
        r'^netmon_kubelet_requests_total\{result="(\w+)"\} (\S+)$', agent.metrics_text(),
        re.MULTILINE)}


def wait_result(agent, result, count=1, timeout=SYNC_TIMEOUT):
    return wait_for(lambda: (r := kubelet_results(agent)).get(result, 0) >= count and r,
                    timeout=timeout,
                    what=lambda: f"{count} kubelet request(s) with result {result}; have "
                                 f"{kubelet_results(agent)}; stderr:\n{agent.stderr_text()}")


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        return int(re.search(r"^VmHWM:\s+(\d+) kB$", f.read(), re.M).group(1))


def http_get(url):
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as reply:
            return reply.status, reply.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8")


def kubelet_flags(url, token_file=None, ca=None, *extra):
    flags = ["--kubelet-url", url, "--kubelet-poll-interval", "1"]
    if token_file:
        flags += ["--kubelet-token-file", token_file]
    if ca:
        flags += ["--kubelet-ca-file", ca]
    return [*flags, *extra]


# ---------------------------------------------------------------------------------------------
# Special files where a regular file belongs


def special_file(kind, fifo_path):
    """(path, why the agent refuses it) of a file that is not a regular one: a FIFO made at
    `fifo_path`, or /dev/zero."""
    if kind == "fifo":
        os.mkfifo(fifo_path, 0o600)
        return str(fifo_path), "not a regular file (a FIFO)"
    return "/dev/zero", "not a regular file (a character device)"


@pytest.mark.parametrize("kind", ["dev_zero", "fifo"])
def test_token_file_that_is_not_a_regular_file(agent_binary, tmp_path, kind):
    """--kubelet-token-file /dev/zero (which grew the agent to 24 GB) or a FIFO (whose reader
    waited forever, and SIGTERM with it): refused at start, exit 2, naming the file and why."""
    token, why = special_file(kind, tmp_path / "token-fifo")
    port = kubelet_stub.reserve_port()
    stderr = refused(agent_binary, *kubelet_flags(f"https://127.0.0.1:{port}/pods", token))
    assert (f"configuration error: the kubelet token file (--kubelet-token-file) cannot be "
            f"used: {token}: {why}") in stderr, stderr


@pytest.mark.parametrize("kind", ["dev_zero", "fifo"])
def test_config_file_that_is_not_a_regular_file(agent_binary, tmp_path, kind):
    """--config with a FIFO (the start hung without a word) or /dev/zero: exit 2 at once,
    naming the file and why."""
    config, why = special_file(kind, tmp_path / "config-fifo")
    started = time.monotonic()
    stderr = refused(agent_binary, "--config", config, timeout=5.0)
    assert time.monotonic() - started < 5.0
    assert f"cannot read the configuration file {config}: {why}" in stderr, stderr


def test_ca_file_that_is_not_a_regular_file(agent_binary, tmp_path):
    """--kubelet-ca-file with a FIFO (OpenSSL would block opening it): refused at start."""
    ca = str(tmp_path / "ca-fifo")
    os.mkfifo(ca, 0o600)
    port = kubelet_stub.reserve_port()
    stderr = refused(agent_binary, *kubelet_flags(f"https://127.0.0.1:{port}/pods", None, ca))
    assert (f"configuration error: the kubelet CA file (--kubelet-ca-file) cannot be used: "
            f"{ca}: not a regular file (a FIFO)") in stderr, stderr


# ---------------------------------------------------------------------------------------------
# The token


def test_crlf_token_is_refused_at_start(agent_binary, tmp_path, certs, stubs):
    """A token file holding CR/LF and a header (which arrived at the server as a header of its
    own): exit 2 naming the file and the character, without the token, and no request."""
    stub = stubs(certs, "secret-token").start()
    token = write_token(tmp_path, "secret-token\r\nX-Injected: yes\n")
    stderr = refused(agent_binary, *kubelet_flags(stub.url, token, certs["ca"]))
    assert (f"configuration error: the kubelet token file '{token}' cannot be used: the token "
            "holds the control character 0x0d at offset 12") in stderr, stderr
    assert "secret-token" not in stderr and "X-Injected" not in stderr, stderr
    assert stub.request_count() == 0


def test_crlf_token_after_rotation_is_never_sent(start_agent, tmp_path, certs, stubs):
    """A good token at start, replaced by one with CR/LF and a header: the agent stops sending
    a token (requests fail as unauthorized, the log says why) and the kubelet never sees a
    second header line; a good token again and it recovers."""
    stub = stubs(certs, "good-token").start()
    token = write_token(tmp_path, "good-token\n")
    agent = start_agent(*kubelet_flags(stub.url, token, certs["ca"]))
    wait_result(agent, "ok")
    bad = tmp_path / "token.new"
    bad.write_text("good-token\r\nX-Injected: yes\n")
    os.replace(bad, token)
    wait_for(lambda: "holds the control character 0x0d" in agent.stderr_text(),
             timeout=SYNC_TIMEOUT, what=lambda: f"the refused token in the log:\n"
                                                f"{agent.stderr_text()}")
    requests_then = stub.request_count()
    wait_result(agent, "unauthorized", count=2)
    good = tmp_path / "token.new"
    good.write_text("good-token\n")
    os.replace(good, token)
    ok_before = kubelet_results(agent).get("ok", 0)
    wait_result(agent, "ok", count=ok_before + 1)
    names = stub.header_names_seen()
    assert all("X-Injected" not in n for n in names), names
    # Every request carried one Authorization line or, with the bad token, none.
    assert all(n.count("Authorization") <= 1 for n in names), names
    assert "X-Injected" not in agent.stderr_text()
    assert requests_then >= 1


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_token_replaced_by_a_special_file(start_agent, tmp_path, certs, stubs, kind):
    """The token file replaced, while the agent runs, by a FIFO (the watcher then waited for a
    writer forever, and SIGTERM with it: 522 s) or a symlink to /dev/zero (read without end):
    each request fails as unauthorized saying why, no token is sent, and SIGTERM stops the
    agent at once (start_agent checks the clean stop)."""
    stub = stubs(certs, "good-token").start()
    token = write_token(tmp_path, "good-token\n")
    agent = start_agent(*kubelet_flags(stub.url, token, certs["ca"]))
    wait_result(agent, "ok")
    new = str(tmp_path / "token.new")
    if kind == "fifo":
        os.mkfifo(new, 0o600)
        why = "not a regular file (a FIFO)"
    else:
        os.symlink("/dev/zero", new)
        why = "not a regular file (a character device)"
    os.replace(new, token)
    wait_for(lambda: f"cannot use the token file: {token}: {why}" in agent.stderr_text(),
             timeout=SYNC_TIMEOUT, what=lambda: f"the refused token file in the log:\n"
                                                f"{agent.stderr_text()}")
    wait_result(agent, "unauthorized", count=2)
    started = time.monotonic()
    assert agent.stop(signal.SIGTERM) == 0, agent.stderr_text()
    assert time.monotonic() - started < STOP_TIMEOUT


def test_token_over_plain_http_needs_the_flag(agent_binary, tmp_path, stubs):
    """A token with an http:// kubelet URL (the token went out in cleartext, without a word):
    exit 2 naming --kubelet-allow-http-token."""
    stub = stubs(None, "plain-token").start()
    token = write_token(tmp_path, "plain-token\n")
    stderr = refused(agent_binary, *kubelet_flags(stub.url, token))
    assert (f"configuration error: the kubelet URL '{stub.url}' is plain HTTP and would carry "
            f"the bearer token of '{token}' in cleartext; use https, or allow it with "
            "--kubelet-allow-http-token") in stderr, stderr
    assert stub.request_count() == 0


def test_token_over_plain_http_with_the_flag_warns_once(start_agent, tmp_path, stubs):
    """With --kubelet-allow-http-token the token goes out over http:// and the pods sync; one
    warning says so, however many requests follow."""
    stub = stubs(None, "plain-token").start()
    token = write_token(tmp_path, "plain-token\n")
    agent = start_agent(*kubelet_flags(stub.url, token, None, "--kubelet-allow-http-token"))
    wait_result(agent, "ok", count=3, timeout=SYNC_TIMEOUT + 5)
    assert stub.tokens_seen()[0] == "plain-token"
    warnings = [line for line in agent.stderr_lines if "in cleartext" in line]
    assert len(warnings) == 1, agent.stderr_text()
    assert " netmon warn: " in warnings[0] and "--kubelet-allow-http-token" in warnings[0]


# ---------------------------------------------------------------------------------------------
# Echoes of input


def test_ten_megabyte_rule_makes_a_short_message(agent_binary, tmp_path):
    """A 10 MB rule expression (which made a 10 MB log line): exit 2, every stderr line short,
    the rule named."""
    config = tmp_path / "rules.yaml"
    config.write_text("egress:\n  rules:\n  - rule: huge\n    event: " + "a" * (10 << 20) + "\n")
    stderr = refused(agent_binary, "--config", str(config))
    assert max(len(line) for line in stderr.splitlines()) < MAX_LINE, \
        [len(line) for line in stderr.splitlines()]
    assert "egress rule 'huge' (line 3) event, column 1: unknown attribute or macro 'aaaa" \
        in stderr, stderr[:MAX_LINE]
    assert "...' (10485760 bytes)" in stderr, stderr[:MAX_LINE]


def test_config_etc_shadow_echoes_nothing(agent_binary):
    """--config /etc/shadow (whose first line the error message quoted): exit 2 and no piece
    of the file's first line in the message."""
    if not os.path.exists("/etc/shadow"):
        skip_or_fail("/etc/shadow does not exist here")
    with open("/etc/shadow", encoding="utf-8", errors="replace") as f:
        first = f.readline().rstrip("\n")
    stderr = refused(agent_binary, "--config", "/etc/shadow")
    # YAML reads a line ending in ':' as a key, another as a scalar: either way, nothing quoted.
    assert re.search(r"/etc/shadow:1:1: (?:the configuration must be a mapping of keys, got a "
                     r"scalar|\(a key of \d+ bytes that is not a name\): unknown key)", stderr), \
        stderr
    windows = {first[i:i + 8] for i in range(max(1, len(first) - 7))}
    echoed = [w for w in windows if len(w) == 8 and w in stderr]
    assert echoed == [], f"pieces of /etc/shadow's first line in stderr: {echoed}"


# ---------------------------------------------------------------------------------------------
# A kubelet that answers badly


def test_kubelet_noise_is_a_bad_response(start_agent, stubs):
    """A kubelet answering with random bytes (counted as unreachable): bad_response."""
    stub = stubs(None, None).start()
    stub.serve_raw(os.urandom(4096).replace(b"\n", b"\x00"))
    agent = start_agent(*kubelet_flags(stub.url))
    results = wait_result(agent, "bad_response")
    assert results.get("unreachable", 0) == 0, results
    assert "no HTTP response" in agent.stderr_text()


def test_content_length_over_the_cap_stops_at_the_headers(start_agent, tmp_path, certs,
                                                          stubs):
    """A kubelet announcing a 100 MB body (read up to the 64 MiB cap, with a peak of 120 MB):
    too_large at the headers; the agent's peak RSS hardly moves and it read little of the
    body."""
    stub = stubs(certs, "token", port=kubelet_stub.reserve_port())
    token = write_token(tmp_path, "token\n")
    agent = start_agent(*kubelet_flags(stub.url, token, certs["ca"]))
    wait_result(agent, "unreachable")  # the kubelet is not up yet
    before = vm_hwm_kib(agent.pid)
    stub.serve_oversized(TOO_LARGE_LENGTH)
    stub.start()
    wait_result(agent, "too_large", count=2)
    after = vm_hwm_kib(agent.pid)
    print(f"VmHWM before {before} KiB, after two too_large responses {after} KiB; body bytes "
          f"the stub wrote per response: {stub.oversized_bytes_sent}")
    assert after - before < TOO_LARGE_RSS_GROWTH_KIB, (before, after)
    assert re.search(r"too_large: response larger than 67108864 bytes \(Content-Length "
                     rf"{TOO_LARGE_LENGTH}\)", agent.stderr_text()), agent.stderr_text()
    # Socket buffers take a few MiB at most; reading to the cap would be 64 MiB.
    assert all(sent < (16 << 20) for sent in stub.oversized_bytes_sent), \
        stub.oversized_bytes_sent


def test_readyz_names_the_kubelet_error(start_agent, tmp_path, certs, stubs):
    """While the kubelet refuses the token, /readyz (503) says why, not only that the first
    sync is not done."""
    stub = stubs(certs, "the-right-token").start()
    token = write_token(tmp_path, "a-wrong-token\n")
    agent = start_agent(*kubelet_flags(stub.url, token, certs["ca"]))
    wait_result(agent, "unauthorized")
    status, body = wait_for(
        lambda: (r := http_get(agent.metrics_url + "/readyz"))[1] !=
        "not ready: first kubelet sync not done yet\n" and r,
        timeout=SYNC_TIMEOUT, what="/readyz with the kubelet's error")
    assert (status, body) == (
        503, "not ready: first kubelet sync not done yet; kubelet: unauthorized: 401 "
             "Unauthorized\n")
