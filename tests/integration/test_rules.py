"""Rules from the configuration file, end to end: the reference's own rule tests reproduced with
the real agent, real nc and telnet.
"""

import os
import signal
import socket
import textwrap

import pytest

from conftest import free_port, listening, wait_for
from test_lifecycle import (
    ACCEPT,
    CLOSE,
    ESTABLISH,
    FAILED,
    Listener,
    telnet_host,
    wait_exit,
)

REFERENCE_CONFIG = """\
egress:
  enabled: true
  rules:
  - rule: NetMonIpv4Test
    event: ipv4_dst == "127.0.0.1" AND ipv4_src == "127.0.0.1" AND port_dst == {v4_port}
  - rule: NetMonIpv6Test
    event: ipv6_dst == "::1" AND port_dst == {v6_port}
ingress:
  enabled: true
  rules:
  - rule: NetMonIpv6Test
    scope: binary_name == "nc.openbsd"
    event: ipv6_dst == "::1" AND port_dst == {v6_port}
  - rule: NcAcceptsIpv4
    scope: binary_name == "nc.openbsd"
    event: ipv4_src == "127.0.0.0/8" AND port_dst == {v4_port}
"""


def write_config(tmp_path, text):
    path = tmp_path / "netmon.yaml"
    path.write_text(text)
    return str(path)


def run_nc_telnet(processes, real_tools, family, port):
    """nc -l PORT and telnet to it; returns (nc, telnet) once both have exited."""
    v6 = family == socket.AF_INET6
    nc = processes.start([real_tools["nc"], *(["-6"] if v6 else []), "-l", str(port)])
    wait_for(lambda: listening(port), what=f"nc listening on {port}")
    telnet = processes.start([real_tools["telnet"], *(["-6"] if v6 else []),
                              telnet_host(family), str(port)])
    return nc, telnet


def finish(nc, telnet):
    nc.send_signal(signal.SIGTERM)
    wait_exit(telnet)
    wait_exit(nc)


def test_reference_rules_name_events_and_their_closes(start_agent, real_tools, processes,
                                                      tmp_path):
    """NetMonIpv4Test and NetMonIpv6Test name telnet's Establish and its Close; the ingress rule
    scoped to nc.openbsd names nc's Accept (and its Close)."""
    v4_port = free_port(7878)
    v6_port = free_port(7879)
    config = write_config(tmp_path, REFERENCE_CONFIG.format(v4_port=v4_port, v6_port=v6_port))
    agent = start_agent("--config", config)

    for family, port, egress_rule, ingress_rule in (
        (socket.AF_INET, v4_port, "NetMonIpv4Test", "NcAcceptsIpv4"),
        (socket.AF_INET6, v6_port, "NetMonIpv6Test", "NetMonIpv6Test"),
    ):
        nc, telnet = run_nc_telnet(processes, real_tools, family, port)
        establish = agent.wait_events(kind=ESTABLISH, pid=telnet.pid, dport=port)[0]
        accept = agent.wait_events(kind=ACCEPT, pid=nc.pid, sport=port)[0]
        assert establish["rule"] == egress_rule, establish
        assert accept["rule"] == ingress_rule, accept
        finish(nc, telnet)
        for opened, rule in ((establish, egress_rule), (accept, ingress_rule)):
            cookie = opened["network_event"]["cookie"]
            close = agent.wait_events(kind=CLOSE, cookie=cookie, ports={port})[0]
            assert close["rule"] == rule, close


def test_connection_matching_no_rule_is_not_reported(start_agent, tmp_path):
    """With egress and ingress rules configured, a connection matching none of them yields no
    event at all: no Establish, Accept or Close."""
    v4_port = free_port(7878)
    config = write_config(tmp_path, REFERENCE_CONFIG.format(v4_port=v4_port, v6_port=v4_port))
    agent = start_agent("--config", config)
    listener = Listener(socket.AF_INET, "127.0.0.1", hold=False)
    try:
        assert listener.port != v4_port
        client = socket.create_connection(("127.0.0.1", listener.port))
        client.close()
        listener.join()
        # The barrier's marker connection matches NetMonIpv4Test (its client side only; the
        # ingress rules are nc's): once its Close is in, the unmatched connection's events
        # would have been too.
        agent.sync(closed_ports={listener.port}, marker_port=v4_port, sides=("client",))
        assert agent.events(ports={listener.port}) == []
    finally:
        listener.close()


def test_rule_scoped_to_another_binary_filters_accept(start_agent, real_tools, processes,
                                                      tmp_path):
    """An ingress rule scoped to binary_name == "nc.openbsd" does not name (so does not report)
    an accept made by this Python test process on the same port pattern."""
    port = free_port(7878)
    config = write_config(tmp_path, textwrap.dedent(f"""\
        ingress:
          rules:
          - rule: OnlyNc
            scope: binary_name == "nc.openbsd"
            event: port_dst == {port}
        """))
    agent = start_agent("--config", config)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen()
    try:
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = listener.accept()
        conn.close()
        client.close()
    finally:
        listener.close()
    # The same port served by nc is reported, with the rule.
    nc, telnet = run_nc_telnet(processes, real_tools, socket.AF_INET, port)
    accept = agent.wait_events(kind=ACCEPT, pid=nc.pid, sport=port)[0]
    assert accept["rule"] == "OnlyNc"
    finish(nc, telnet)
    # Egress has no rules: the barrier's marker is reported from its client side.
    agent.sync(closed_ports={port}, sides=("client",))
    accepts = agent.events(kind=ACCEPT, sport=port)
    assert [a["process"]["pid"] for a in accepts] == [nc.pid]
    # Egress has no rules: telnet's Establish is reported, without a rule.
    establish = agent.events(kind=ESTABLISH, pid=telnet.pid, dport=port)
    assert len(establish) == 1 and "rule" not in establish[0]


def test_disabled_direction_and_event_switches(start_agent, tmp_path):
    """`egress: {enabled: false}` drops outbound connections' events; `events: {failed: false}`
    drops Failed events."""
    config = write_config(tmp_path, textwrap.dedent("""\
        egress:
          enabled: false
        events:
          failed: false
        """))
    agent = start_agent("--config", config)
    listener = Listener(socket.AF_INET, "127.0.0.1", hold=False)
    try:
        socket.create_connection(("127.0.0.1", listener.port)).close()
        listener.join()
        closed_port = free_port()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", closed_port))
        agent.wait_events(kind=ACCEPT, pid=os.getpid(), sport=listener.port)
        agent.wait_events(kind=CLOSE, pid=os.getpid(), sport=listener.port)
        # Egress is off: the barrier's marker is reported from its server side only.
        agent.sync(closed_ports={listener.port}, sides=("server",))
        assert agent.events(kind=ESTABLISH, dport=listener.port) == []
        assert agent.events(kind=FAILED, dport=closed_port) == []
    finally:
        listener.close()


def test_bad_rule_exits_2_naming_the_rule(agent_binary, tmp_path):
    """A rule with an unknown attribute is a configuration error: exit 2, the rule named."""
    import subprocess

    config = write_config(tmp_path, textwrap.dedent("""\
        egress:
          rules:
          - rule: Broken
            event: ipv9_dst == "127.0.0.1"
        """))
    proc = subprocess.run([agent_binary, "--config", config], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert "Broken" in proc.stderr and "ipv9_dst" in proc.stderr, proc.stderr
    assert proc.stdout == ""
