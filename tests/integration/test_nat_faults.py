"""Faults of the NAT translation (issue #20; docs/reliability.md): conntrack that cannot be read,
its event socket overflowing, its table full. The real agent with its real BPF programs; a
network namespace of the test's own with a real nftables DNAT (a virtual IP on loopback
translated to a local server, as kube-proxy's OUTPUT chain does for a node's own connections),
read by the agent through --conntrack-netns; real connections; conntrack's counters as the truth
of what the kernel translated.

The kube-proxy-shaped data path (pods, services, NodePort, hairpin) is test_nat.py's."""

import os
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest

from conftest import require_privileges, skip_or_fail, wait_for

VIP = "10.96.77.1"
VIP_PORT = 80
SERVER_PORT = 18080

# A bounded accept loop: accepts and closes until killed or 120 s passed.
SERVER = r"""
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(4096); s.settimeout(1.0)
print("listening", flush=True)
end = time.time() + 120
while time.time() < end:
    try:
        c, _ = s.accept(); c.close()
    except socket.timeout:
        pass
"""

# N connections to the virtual IP, bounded in time; prints each one's local port.
CLIENT = r"""
import socket, sys, time
n, end = int(sys.argv[3]), time.time() + 60
for _ in range(n):
    if time.time() > end:
        break
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    print(c.getsockname()[1], flush=True); c.close()
"""


# The same, holding every connection open until its stdin closes (at most 60 s): their
# translations stay in the agent's table (it forgets one once both ends closed on this node).
CLIENT_HOLDING = r"""
import resource, socket, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, max(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1])))
n, end, held = int(sys.argv[3]), time.time() + 60, []
for _ in range(n):
    if time.time() > end:
        break
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    held.append(c)
print(" ".join(str(c.getsockname()[1]) for c in held), flush=True)
sys.stdin.read()
"""


def run(*args, check=True, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=check, **kwargs)


@pytest.fixture
def dnat_netns():
    """A network namespace with lo up, the VIP on lo, an nftables OUTPUT DNAT VIP:80 ->
    127.0.0.1:SERVER_PORT and a server there. Yields (name, path); removed afterwards."""
    require_privileges()
    for tool in ("ip", "nft"):
        if not any(os.access(os.path.join(d, tool), os.X_OK) for d in ("/usr/sbin", "/sbin")):
            skip_or_fail(f"{tool} is not installed (scripts/install-deps.sh installs it)")
    name = "nmf-" + uuid.uuid4().hex[:8]
    run("ip", "netns", "add", name)
    server = None
    try:
        run("ip", "-n", name, "link", "set", "lo", "up")
        run("ip", "-n", name, "addr", "add", f"{VIP}/32", "dev", "lo")
        rules = (f"table ip nmf {{\n chain out {{\n  type nat hook output priority -100;\n"
                 f"  ip daddr {VIP} tcp dport {VIP_PORT} dnat to 127.0.0.1:{SERVER_PORT}\n }}\n}}\n")
        run("ip", "netns", "exec", name, "nft", "-f", "-", input=rules)
        server = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c", SERVER,
                                   str(SERVER_PORT)], stdout=subprocess.PIPE, text=True)
        assert server.stdout.readline().strip() == "listening"
        yield name, f"/run/netns/{name}"
    finally:
        if server:
            server.kill()
            server.wait(timeout=10)
        run("ip", "netns", "del", name, check=False)


def connect(netns, count):
    """`count` connections to the VIP from inside the namespace; their local ports."""
    out = run("ip", "netns", "exec", netns, sys.executable, "-c", CLIENT, VIP, str(VIP_PORT),
              str(count)).stdout
    ports = [int(p) for p in out.split()]
    assert len(ports) == count, f"made {len(ports)} of {count} connections"
    return ports


def establishes(agent, ports):
    """The Establish events of the given local ports to the VIP, once all are there."""
    want = set(ports)
    found = wait_for(
        lambda: (lambda got: got if want <= set(got) else None)(
            {e["network_event"]["sport"]: e for e in agent.events(kind="TcpConnectionEstablish",
                                                                  daddr=VIP, dport=VIP_PORT)}),
        timeout=30, what=lambda: f"Establish events of {len(want)} connections to {VIP}")
    return [found[p] for p in ports]


def nat_metrics(agent):
    text = agent.published_metrics_text()
    values = {}
    for line in text.splitlines():
        m = re.match(r'^(netmon_nat_\w+)(?:\{result="(\w+)"\})? (\S+)$', line)
        if m:
            values[m.group(1) + (f"/{m.group(2)}" if m.group(2) else "")] = float(m.group(3))
    return values


def backend_of(event):
    return event["network_event"]["peer"].get("backend")


def assert_no_error_lines(agent):
    errors = [l for l in agent.stderr_text().splitlines() if " error: " in l or " warn: " in l
              and "fault injection" not in l]
    assert not errors, errors


def test_every_connection_is_translated(start_agent, dnat_netns):
    """The baseline of the faults below: with nothing wrong, every Establish to the VIP names
    the server behind the DNAT, and the lookups count them translated."""
    name, path = dnat_netns
    agent = start_agent("--conntrack-netns", path)
    ports = connect(name, 20)
    for e in establishes(agent, ports):
        assert backend_of(e) == {"addr": "127.0.0.1", "port": SERVER_PORT, "kind": "host"}, e
    metrics = nat_metrics(agent)
    assert metrics["netmon_nat_conntrack_enabled"] == 1
    assert metrics["netmon_nat_lookups_total/translated"] >= 20
    assert metrics["netmon_nat_messages_lost_total"] == 0
    assert_no_error_lines(agent)


def test_overflowed_socket_is_counted_and_the_table_read_again(start_agent, dnat_netns):
    """The event socket overflows (a 4 KiB buffer, the agent stopped while 80 translated
    connections open): the kernel drops conntrack messages. The agent counts the overflow,
    reads the table again, and every Establish either names its backend or is counted lost;
    connections made after it recovered are translated again."""
    name, path = dnat_netns
    agent = start_agent("--conntrack-netns", path, env={"NETMON_FAULT_CONNTRACK_BUFFER": "4096"})
    os.kill(agent.pid, signal.SIGSTOP)
    try:
        ports = connect(name, 80)
    finally:
        os.kill(agent.pid, signal.SIGCONT)
    events = establishes(agent, ports)
    untranslated = [e for e in events if backend_of(e) is None]
    for e in events:
        if backend_of(e) is not None:
            assert backend_of(e)["port"] == SERVER_PORT, e
    metrics = nat_metrics(agent)
    assert metrics["netmon_nat_messages_lost_total"] >= 1, metrics
    assert len(untranslated) <= metrics["netmon_nat_lookups_total/lost"], (len(untranslated),
                                                                          metrics)
    # Recovered: the re-read happens on the agent's reader thread within its poll interval.
    def recovered():
        later = establishes(agent, connect(name, 3))
        return later if all(backend_of(e) for e in later) else None

    wait_for(recovered, timeout=20, interval=0.5, what="translated connections after the overflow")


def test_full_table_counts_what_it_could_not_hold(start_agent, dnat_netns):
    """nat.max_entries at its minimum (1024) and 1100 translated connections held open: the
    rest is refused and counted, and each Establish that found no backend is counted lost, never
    silently untranslated."""
    name, path = dnat_netns
    agent = start_agent("--conntrack-netns", path, "--conntrack-max-entries", "1024")
    client = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c", CLIENT_HOLDING,
                               VIP, str(VIP_PORT), "1100"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        ports = [int(p) for p in client.stdout.readline().split()]
        assert len(ports) == 1100, f"made {len(ports)} of 1100 connections"
        events = establishes(agent, ports)
    finally:
        client.stdin.close()
        client.wait(timeout=30)
    untranslated = [e for e in events if backend_of(e) is None]
    metrics = nat_metrics(agent)
    assert metrics["netmon_nat_entries"] <= 1024
    assert metrics["netmon_nat_entries_refused_total"] >= 1100 - 1024, metrics
    assert len(untranslated) >= 1100 - 1024
    assert len(untranslated) <= metrics["netmon_nat_lookups_total/lost"], (len(untranslated),
                                                                          metrics)


@pytest.mark.parametrize("flags, line", [
    (("--conntrack-netns", "/nonexistent/ns/net"), r"conntrack: not available \(nat\.netns "
     r"/nonexistent/ns/net: No such file or directory\): events carry no peer\.backend or "
     r"peer\.original"),
    (("--conntrack=false",), r"conntrack: off \(nat\.conntrack is false\): events carry no "
     r"peer\.backend or peer\.original"),
])
def test_without_conntrack_one_info_line_and_no_translation(start_agent, dnat_netns, flags, line):
    """conntrack that cannot be read (here: a namespace path that does not exist), or switched
    off: the agent runs, says so once at info level, and its events carry no translation."""
    name, _ = dnat_netns
    agent = start_agent(*flags)
    ports = connect(name, 5)
    for e in establishes(agent, ports):
        assert backend_of(e) is None, e
    infos = [l for l in agent.stderr_text().splitlines() if "conntrack:" in l]
    assert len(infos) == 1, infos
    assert " info: " in infos[0] and re.search(line, infos[0]), infos
    metrics = nat_metrics(agent)
    assert metrics["netmon_nat_conntrack_enabled"] == 0
    assert metrics["netmon_nat_lookups_total/translated"] == 0
    assert_no_error_lines(agent)
