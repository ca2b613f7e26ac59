"""The agent with exactly the Helm chart's capabilities (this host only: in the kernel-matrix
VMs, Debian's kernels refused the classic tracepoint's attach to such an agent; see
docs/kernels.md)."""

import os
import socket

import pytest

from conftest import AGENT, Agent, free_port


def test_classic_tracepoint_without_net_admin_runs_without_the_cookie_assigner(agent_binary):
    """With the Helm chart's capabilities (no CAP_NET_ADMIN, which a sock_ops program needs),
    the classic-tracepoint state variant still loads: the cookie assigner is left out with one
    warning, and events flow."""
    setpriv = "/usr/bin/setpriv"
    if not os.access(setpriv, os.X_OK):
        pytest.fail("setpriv (util-linux) is missing")
    chart_caps = "-all,+bpf,+perfmon,+sys_resource,+sys_ptrace,+dac_read_search"
    agent = Agent(command=[setpriv, f"--bounding-set={chart_caps}", "--", AGENT,
                           "--hook-variant", "state=tracepoint",
                           "--metrics-address", "127.0.0.1:0"])
    try:
        failure = agent.wait_running()
        assert failure is None, failure
        warnings = [line for line in agent.stderr_text().splitlines() if " netmon warn: " in line]
        assert len(warnings) == 1 and "sock_ops cookie assigner did not load" in warnings[0], \
            agent.stderr_text()
        assert agent.variant("state") == "tracepoint"
        port = free_port()
        with socket.socket() as s:
            s.settimeout(10)
            assert s.connect_ex(("127.0.0.1", port)) != 0
        agent.wait_events(kind="TcpConnectionFailed", dport=port)
    finally:
        assert agent.stop() == 0
