"""Hook variants: the agent probes the kernel for each hook's preferred variant, says which it
chose (log and netmon_hook_variant_info), and every fallback reports the same events.

Each hook has a preferred variant and a fallback (docs/kernels.md): state tp_btf/tracepoint,
accept fexit/tracepoint, process tp_btf/raw_tp. The comparison runs one scenario (a connection
made by a freshly exec'd client process, with payload both ways, accepted in the test process;
and a refused connect) under the agent's own choice and with each hook forced to its fallback,
and compares the events field by field, leaving out only what differs between any two runs
(ports, pids, times, cookies' values).
"""

import os
import re
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest

from conftest import AGENT, clean_env, free_port

pytestmark = pytest.mark.kernel_matrix

HOOKS = {  # hook: (preferred, fallback)
    "state": ("tp_btf", "tracepoint"),
    "accept": ("fexit", "tracepoint"),
    "process": ("tp_btf", "raw_tp"),
}
# Where the fallback is refused for want of privileges (a perf event): the accept hook's tp_btf on
# raw_syscalls/sys_exit.
LAST_RESORT = {"accept": "tp_btf"}
FORCED = [(hook, fallback) for hook, (_, fallback) in HOOKS.items()] + list(LAST_RESORT.items())
VARIANT_LINE = re.compile(r"netmon info: hook variant: (\w+) = (\w+) \((.*)\)$")

CLIENT = r"""
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(b"x" * 1000)
assert s.recv(100) == b"y" * 20
s.close()
"""


def chosen_variants(agent):
    """{hook: (variant, reason)} from the agent's "hook variant:" log lines."""
    found = {}
    for line in agent.stderr_lines:
        m = VARIANT_LINE.search(line)
        if m:
            found[m.group(1)] = (m.group(2), m.group(3))
    return found


def hook_infos(agent):
    """{(hook, variant)} from netmon_hook_info: every program attached, by attach point."""
    with urllib.request.urlopen(agent.metrics_url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return set(re.findall(r'^netmon_hook_info\{hook="([^"]+)",variant="(\w+)"\} 1$', text, re.M))


def metric_variants(agent):
    """{hook: variant} from netmon_hook_variant_info on /metrics."""
    with urllib.request.urlopen(agent.metrics_url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return {
        m.group(1): m.group(2)
        for m in re.finditer(
            r'^netmon_hook_variant_info\{hook="(\w+)",variant="(\w+)"\} 1$', text, re.M
        )
    }


def run_scenario(agent):
    """A client process (exec'd now) connects to a server thread here, sends 1000 bytes, gets 20
    back and closes; then a connect to a closed port is refused. Returns the events of both
    ports, normalised."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", free_port()))
    server.listen(8)
    server.settimeout(20)
    port = server.getsockname()[1]
    accepted = {}

    def serve():
        accepted["tid"] = threading.get_native_id()
        conn, _ = server.accept()
        with conn:
            got = 0
            conn.settimeout(10)
            while got < 1000:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                got += len(chunk)
            conn.sendall(b"y" * 20)
            conn.recv(10)  # the client's FIN first: it closes, this side follows

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    client = subprocess.run([sys.executable, "-c", CLIENT, str(port)], capture_output=True,
                            text=True, timeout=60)
    assert client.returncode == 0, client.stderr
    t.join(30)
    # Picked while the server still listens, so that it cannot be the server's port.
    closed_port = free_port()
    server.close()

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        assert s.connect_ex(("127.0.0.1", closed_port)) != 0

    agent.wait_events(count=4, ports={port})
    agent.wait_events(count=1, kind="TcpConnectionFailed", ports={closed_port})
    agent.sync(closed_ports={port})
    events = agent.events(ports={port, closed_port})
    return [normalise(e, port, closed_port, accepted["tid"]) for e in events]


def normalise(event, port, closed_port, server_tid):
    """An event without what differs between runs; who the process is stays, by role."""
    ne = dict(event["network_event"])
    for k in ("duration_ms", "srtt_us"):
        assert isinstance(ne.pop(k, 0), int)
    cookie = ne.pop("cookie")
    assert isinstance(cookie, int) and cookie >= 0
    role = {port: "server", closed_port: "closed"}
    ne["sport"] = role.get(ne["sport"], "client")
    ne["dport"] = role.get(ne["dport"], "client")
    proc = event.get("process") or {}
    if proc.get("pid") == os.getpid():
        who = "test-server" if proc.get("tid") == server_tid else "test-main"
    else:
        args = (proc.get("args") or "").replace(str(port), "PORT")
        who = (proc.get("binary_path"), args, proc.get("cloned"),
               (event.get("parent") or {}).get("pid") == os.getpid())
    return {"type": event["type"], "network_event": ne, "process": who, "cookie": cookie}


def cookies_consistent(events):
    """Each connection's Close carries its open event's cookie."""
    by_end = {}
    for e in events:
        ne = e["network_event"]
        by_end.setdefault((ne["sport"], ne["dport"]), []).append(e["cookie"])
    return all(len(set(c)) == 1 for c in by_end.values())


def comparable(events):
    return sorted(
        (repr({k: v for k, v in e.items() if k != "cookie"}) for e in events),
    )


@pytest.mark.arm64_matrix
def test_chosen_variants_are_logged_and_exported(start_agent):
    """At start the agent logs one "hook variant:" line per hook, naming the preferred variant
    or why not, and /metrics says the same in netmon_hook_variant_info."""
    agent = start_agent()
    chosen = chosen_variants(agent)
    assert set(chosen) == set(HOOKS), agent.stderr_text()
    for hook, (variant, reason) in chosen.items():
        preferred, fallback = HOOKS[hook]
        assert variant in (preferred, fallback, LAST_RESORT.get(hook)), (hook, variant)
        if variant == LAST_RESORT.get(hook):
            assert f"{hook} hook: the {fallback} variant is refused here" in agent.stderr_text()
        if variant == preferred:
            assert reason == "preferred", (hook, reason)
        else:
            assert reason and reason != "preferred", (hook, reason)
            assert f"{hook} hook: the {preferred} variant is unavailable here" in \
                agent.stderr_text()
    assert metric_variants(agent) == {h: v for h, (v, _) in chosen.items()}


@pytest.mark.parametrize("hook,fallback", FORCED, ids=[f"{h}={v}" for h, v in FORCED])
def test_fallback_variant_reports_the_same_events(start_agent, hook, fallback):
    """The scenario's events with `hook` forced to its fallback (or last resort) equal those of
    the agent's own choice: types, addresses by role, direction, bytes, who closed, errors, and
    the process (the exec'd client's path and arguments, the test's threads). Where the preferred
    variant does not load on this kernel, forcing it fails with one clear line instead."""
    preferred = HOOKS[hook][0]
    agent = start_agent()
    auto_variant = chosen_variants(agent)[hook][0]
    reference = run_scenario(agent)
    assert cookies_consistent(reference)
    # Every variant reports cookies: where tracing programs cannot assign them (the classic
    # tracepoint state variant), a sock_ops program on the cgroup root does.
    assert all(e["cookie"] != 0 for e in reference), reference

    forced = start_agent("--hook-variant", f"{hook}={fallback}")
    assert chosen_variants(forced)[hook] == (fallback, "forced with --hook-variant")
    assert metric_variants(forced)[hook] == fallback
    events = run_scenario(forced)
    assert cookies_consistent(events)
    assert all(e["cookie"] != 0 for e in events), events
    if chosen_variants(forced)["state"][0] == "tracepoint":
        warnings = [l for l in forced.stderr_text().splitlines() if " netmon warn: " in l]
        assert not any("sock_ops" in w or "cookie" in w for w in warnings), warnings
        sock_ops = {("cgroup/sock_ops (state observer)", "sock_ops"),
                    ("cgroup/sock_ops (cookie assigner)", "sock_ops")}
        assert sock_ops & hook_infos(forced), hook_infos(forced)
    assert comparable(events) == comparable(reference)
    kinds = sorted(e["type"] + ":" + e["network_event"]["type"] for e in reference)
    assert kinds == sorted(
        ["NetworkEvent:TcpConnectionEstablish", "NetworkEvent:TcpConnectionAccept",
         "NetworkEvent:TcpConnectionClose", "NetworkEvent:TcpConnectionClose",
         "NetworkEvent:TcpConnectionFailed"]), reference

    if auto_variant != preferred:
        # This kernel refuses the preferred variant: forcing it is an error naming it.
        result = subprocess.run(
            [AGENT, "--hook-variant", f"{hook}={preferred}", "--metrics-address", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, env=clean_env())
        assert result.returncode == 1, result.stderr
        errors = [line for line in result.stderr.splitlines() if " netmon error: " in line]
        assert len(errors) == 1, result.stderr
        assert f"--hook-variant {hook}={preferred}" in errors[0], errors[0]


def test_bad_per_hook_variant_exits_2(agent_binary):
    """A variant that is not one of the hook's exits 2, naming the flag, hook and choices."""
    result = subprocess.run([agent_binary, "--hook-variant", "accept=raw_tp"],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert "--hook-variant" in result.stderr, result.stderr
    assert "not a variant of the accept hook (auto, fexit, tracepoint, tp_btf)" in result.stderr
