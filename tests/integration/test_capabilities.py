"""The agent with exactly the Helm chart's capabilities (BPF, PERFMON, SYS_RESOURCE, SYS_PTRACE,
DAC_READ_SEARCH, NET_ADMIN), on this host and in the kernel-matrix VMs.

The chart's default must start on every supported kernel: the preferred hooks are BPF-native
(tp_btf, fexit, raw_tp) and need no perf event. The classic tracepoints do (perf_event_open), and
Debian's kernels (kernel.perf_event_paranoid = 3, a Debian patch) refuse perf events to any
process without CAP_SYS_ADMIN, CAP_PERFMON or not (docs/kernels.md). Where fexit does not attach
(arm64 before 6.4) and the accept tracepoints are refused, the accept hook takes its last resort,
tp_btf on raw_syscalls/sys_exit, which needs no perf event either."""

import os
import platform
import re
import socket

import pytest

from conftest import AGENT, OBSERVER_ATTACHED as OBSERVER, Agent, free_port

pytestmark = pytest.mark.kernel_matrix

SETPRIV = "/usr/bin/setpriv"
CHART_CAPS = "-all,+bpf,+perfmon,+sys_resource,+sys_ptrace,+dac_read_search,+net_admin"
OBSERVER_WARNING = "the TCP state observer (sock_ops) did not load"
COOKIE_WARNING = "the sock_ops cookie assigner did not load"


def with_chart_caps(*args):
    if not os.access(SETPRIV, os.X_OK):
        pytest.fail("setpriv (util-linux) is missing")
    return Agent(command=[SETPRIV, f"--bounding-set={CHART_CAPS}", "--", AGENT, *args,
                          "--metrics-address", "127.0.0.1:0"])


def perf_event_paranoid():
    with open("/proc/sys/kernel/perf_event_paranoid", encoding="ascii") as f:
        return int(f.read())


def arm64_without_fexit_nor_perf_events():
    """arm64 before 6.4 has no ftrace direct calls, so no fexit program attaches there and the
    accept hook falls back to the syscall tracepoints (perf events); with perf_event_paranoid
    above 2 the chart's capabilities cannot open them (docs/kernels.md, arm64)."""
    if platform.machine() != "aarch64":
        return False
    release = tuple(int(x) for x in re.findall(r"\d+", platform.release())[:2])
    return release < (6, 4) and perf_event_paranoid() > 2


def assert_accept_reported(agent):
    """A connection accepted on loopback in this process is reported as an Accept, owned by this
    process, and its Close with the same cookie."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.settimeout(10)
            server.settimeout(10)
            conn, _ = server.accept()
            conn.close()
    accepts = agent.wait_events(kind="TcpConnectionAccept", sport=port)
    assert len(accepts) == 1, accepts
    assert accepts[0]["process"]["pid"] == os.getpid(), accepts[0]
    cookie = accepts[0]["network_event"]["cookie"]
    assert cookie != 0, accepts[0]
    agent.wait_events(kind="TcpConnectionClose", sport=port, cookie=cookie)


def assert_failed_connect_reported(agent):
    port = free_port()
    with socket.socket() as s:
        s.settimeout(10)
        assert s.connect_ex(("127.0.0.1", port)) != 0
    agent.wait_events(kind="TcpConnectionFailed", dport=port)


@pytest.mark.arm64_matrix
def test_chart_capabilities_start_the_preferred_state_hook():
    """With the chart's capabilities the agent starts and reports, with the BPF-native state hook
    and the TCP state observer (a sock_ops program: CAP_NET_ADMIN) on every kernel, and no
    warning. On arm64 before 6.4 with perf_event_paranoid > 2 (no fexit, the accept tracepoints
    refused) the accept hook takes its last resort, tp_btf on sys_exit, and says why."""
    agent = with_chart_caps()
    try:
        failure = agent.wait_running()
        assert failure is None, failure
        assert agent.variant("state") == "tp_btf", agent.stderr_text()
        warnings = [line for line in agent.stderr_text().splitlines() if " netmon warn: " in line]
        assert warnings == [], agent.stderr_text()
        assert OBSERVER in agent.stderr_text(), agent.stderr_text()
        if arm64_without_fexit_nor_perf_events():
            assert agent.variant("accept") == "tp_btf", agent.stderr_text()
            assert "accept hook: the tracepoint variant is refused here" in agent.stderr_text()
        else:
            assert agent.variant("accept") in ("fexit", "tracepoint"), agent.stderr_text()
        assert_failed_connect_reported(agent)
        assert_accept_reported(agent)
    finally:
        assert agent.stop() == 0


@pytest.mark.arm64_matrix
def test_sys_exit_accept_variant_with_chart_capabilities():
    """The accept hook's last resort (tp_btf on raw_syscalls/sys_exit) forced, with the chart's
    capabilities: it attaches without a perf event on every kernel, whatever
    perf_event_paranoid says, and reports an accepted connection."""
    agent = with_chart_caps("--hook-variant", "accept=tp_btf")
    try:
        failure = agent.wait_running()
        assert failure is None, failure
        assert agent.variant("accept") == "tp_btf", agent.stderr_text()
        warnings = [line for line in agent.stderr_text().splitlines() if " netmon warn: " in line]
        assert warnings == [], agent.stderr_text()
        assert_accept_reported(agent)
    finally:
        assert agent.stop() == 0


def test_classic_tracepoint_with_chart_capabilities():
    """The classic-tracepoint state variant with the chart's capabilities: it runs (with the
    observer, which assigns the cookies) where perf events are allowed with CAP_PERFMON; where
    perf_event_paranoid is above 2 (Debian) the kernel refuses the attach, and the agent exits 1
    with one error line saying so."""
    agent = with_chart_caps("--hook-variant", "state=tracepoint")
    try:
        failure = agent.wait_running()
        if perf_event_paranoid() > 2:
            assert failure is not None and agent.proc.returncode == 1, agent.stderr_text()
            errors = [line for line in agent.stderr_text().splitlines()
                      if " netmon error: " in line]
            assert len(errors) == 1, agent.stderr_text()
            assert "inet_sock_set_state" in errors[0] and "denied" in errors[0], errors[0]
            return
        assert failure is None, failure
        warnings = [line for line in agent.stderr_text().splitlines() if " netmon warn: " in line]
        assert warnings == [] and OBSERVER in agent.stderr_text(), agent.stderr_text()
        assert agent.variant("state") == "tracepoint"
        assert_failed_connect_reported(agent)
    finally:
        if agent.proc.poll() is None:
            assert agent.stop() == 0


def test_without_net_admin_the_observer_is_left_out_with_a_warning():
    """Without CAP_NET_ADMIN no sock_ops program loads: the agent says so in one warning (two
    before 5.12, where the cookie assigner is missing too) and still reports, from the tracepoint
    programs alone."""
    agent = Agent(command=[SETPRIV, f"--bounding-set={CHART_CAPS.replace(',+net_admin', '')}",
                           "--", AGENT, "--metrics-address", "127.0.0.1:0"])
    try:
        failure = agent.wait_running()
        assert failure is None, failure
        assert OBSERVER not in agent.stderr_text()
        warnings = [line for line in agent.stderr_text().splitlines() if " netmon warn: " in line]
        assert any(OBSERVER_WARNING in w for w in warnings), agent.stderr_text()
        assert all(OBSERVER_WARNING in w or COOKIE_WARNING in w for w in warnings), warnings
        assert len(warnings) <= 2, warnings
        assert_failed_connect_reported(agent)
    finally:
        assert agent.stop() == 0
