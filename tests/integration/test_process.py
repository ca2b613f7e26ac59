"""The process and parent objects of events, end to end with the real agent and real programs.

Each test makes its connections to a loopback listener of its own and asserts exact values of
the owner's process object against what the kernel and /proc say about that process.
"""

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import free_port, listening, wait_for
from test_lifecycle import ACCEPT, CLOSE, ESTABLISH, Listener, only, settle, telnet_host

PYTHON = os.path.realpath(sys.executable)
SCHEMA_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "event.schema.json")

CAP_NAMES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
]


def expected_caps(mask):
    """The reference's text for a capability set, computed independently of the agent."""
    last = int(open("/proc/sys/kernel/cap_last_cap").read())
    full = (1 << (last + 1)) - 1
    if mask == 0:
        return ""
    if mask & full == full:
        return "ANY_CAPS"
    return " | ".join(CAP_NAMES[b] if b < len(CAP_NAMES) else f"CAP_{b}"
                      for b in range(64) if mask >> b & 1)


def proc_status_caps(pid):
    caps = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("CapEff", "CapPrm", "CapInh"):
                caps[key] = int(value.strip(), 16)
    return caps


def decode_exec_id(exec_id):
    """(pid, start ns) from an exec_id."""
    pid, start = base64.b64decode(exec_id).decode().split(":")
    return int(pid), int(start)


def validate_schema(event):
    jsonschema = pytest.importorskip("jsonschema")
    with open(SCHEMA_PATH) as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator(schema).validate(event)


def run_client(processes, code, *args, **kwargs):
    """Starts `python3 -c code args...` and returns the Popen."""
    return processes.start([PYTHON, "-c", textwrap.dedent(code), *map(str, args)], **kwargs)


CONNECT = """
    import socket, sys
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.recv(1)
"""


@pytest.mark.kernel_matrix
def test_reference_scenario_process_objects(agent, real_tools, processes):
    """telnet's Establish names /usr/bin/inetutils-telnet with its arguments; nc's Accept names
    nc.openbsd; each `parent` is this test process, and parent_exec_id is the parent's exec_id."""
    port = free_port(7878)
    nc = processes.start([real_tools["nc"], "-l", str(port)])
    wait_for(lambda: listening(port), what=f"nc listening on {port}")
    host = telnet_host(socket.AF_INET)
    telnet = processes.start([real_tools["telnet"], host, str(port)])
    establish = agent.wait_events(kind=ESTABLISH, pid=telnet.pid, dport=port)[0]
    accept = agent.wait_events(kind=ACCEPT, pid=nc.pid, sport=port)[0]

    telnet_path = os.path.realpath(real_tools["telnet"])
    nc_path = os.path.realpath(real_tools["nc"])
    for event, path, args in ((establish, telnet_path, f"{host} {port}"),
                              (accept, nc_path, f"-l {port}")):
        validate_schema(event)
        proc, parent = event["process"], event["parent"]
        assert proc["binary_path"] == path, event
        assert proc["filename"] == os.path.basename(path), event
        assert proc["args"] == args, event
        assert proc["cloned"] is False, event
        assert proc["secureexec"] == "", event
        assert decode_exec_id(proc["exec_id"])[0] == proc["pid"]
        assert parent is not None, event
        assert parent["pid"] == os.getpid() == proc["ppid"]
        assert parent["binary_path"] == PYTHON
        assert proc["parent_exec_id"] == parent["exec_id"], event
        caps = proc_status_caps(proc["pid"])
        assert proc["cap_effective"] == expected_caps(caps["CapEff"]), event
        assert proc["cap_permitted"] == expected_caps(caps["CapPrm"]), event
        assert proc["cap_inheritable"] == expected_caps(caps["CapInh"]), event
        assert proc["auid"] == int(open(f"/proc/{proc['pid']}/loginuid").read())
    nc.terminate()


@pytest.mark.kernel_matrix
def test_process_started_before_agent(start_agent, processes):
    """A process that existed before the agent started and connects afterwards resolves fully
    from the /proc scan: path, arguments, its /proc start time in the exec_id."""
    listener = Listener(socket.AF_INET, "127.0.0.1", hold=True)
    try:
        client = run_client(processes, """
            import socket, sys
            sys.stdin.readline()  # wait for the agent
            s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
            s.recv(1)
        """, listener.port, "--marker")
        time.sleep(0.2)  # the client has exec'd before the agent looks
        agent = start_agent()
        client.stdin.write(b"go\n")
        client.stdin.flush()
        event = agent.wait_events(kind=ESTABLISH, pid=client.pid, dport=listener.port)[0]
        proc = event["process"]
        validate_schema(event)
        assert proc["binary_path"] == PYTHON
        assert proc["args"].endswith(f" {listener.port} --marker"), proc["args"]
        assert proc["args"].startswith("-c "), proc["args"]
        pid, start_ns = decode_exec_id(proc["exec_id"])
        ticks = int(open(f"/proc/{client.pid}/stat").read().rsplit(")", 1)[1].split()[19])
        assert (pid, start_ns) == (client.pid, ticks * (1_000_000_000 // os.sysconf("SC_CLK_TCK")))
        assert event["parent"]["pid"] == os.getpid()
    finally:
        listener.close()


def test_forked_child_without_exec_is_cloned(agent, processes):
    """A child forked without exec connects: `cloned` true, the parent's image (path and
    args), its own pid and exec_id, and parent_exec_id equal to the parent's exec_id."""
    listener = Listener(socket.AF_INET, "127.0.0.1", hold=True)
    try:
        parent = run_client(processes, """
            import os, socket, sys
            pid = os.fork()
            if pid == 0:
                s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
                print(os.getpid(), flush=True)
                s.recv(1)
                os._exit(0)
            os.waitpid(pid, 0)
        """, listener.port, "forker")
        child_pid = int(parent.stdout.readline())
        event = agent.wait_events(kind=ESTABLISH, pid=child_pid, dport=listener.port)[0]
        validate_schema(event)
        proc, par = event["process"], event["parent"]
        assert proc["cloned"] is True, event
        assert proc["binary_path"] == PYTHON
        assert proc["args"].endswith(f" {listener.port} forker")
        assert proc["ppid"] == parent.pid and par["pid"] == parent.pid
        assert par["cloned"] is False and par["args"] == proc["args"]
        assert proc["parent_exec_id"] == par["exec_id"]
        assert decode_exec_id(proc["exec_id"])[0] == child_pid
        assert proc["exec_id"] != par["exec_id"]
    finally:
        listener.close()


@pytest.mark.kernel_matrix
def test_thread_connect_reports_thread_id(agent, processes):
    """A thread that connects: `tid` is that thread, `pid` its process."""
    listener = Listener(socket.AF_INET, "127.0.0.1", hold=True)
    try:
        client = run_client(processes, """
            import socket, sys, threading
            out = []
            def work():
                s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
                out.append((threading.get_native_id(), s))
            t = threading.Thread(target=work)
            t.start(); t.join()
            print(out[0][0], flush=True)
            sys.stdin.readline()
        """, listener.port)
        tid = int(client.stdout.readline())
        event = agent.wait_events(kind=ESTABLISH, pid=client.pid, dport=listener.port)[0]
        assert tid != client.pid
        assert event["process"]["tid"] == tid
        assert event["process"]["pid"] == client.pid
    finally:
        listener.close()


CAPSET = """
    import ctypes, os, socket, sys
    libc = ctypes.CDLL(None, use_errno=True)
    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]
    keep = (1 << 13) | (1 << 21)  # CAP_NET_RAW, CAP_SYS_ADMIN
    data = (Data * 2)(Data(keep, keep, 0), Data(0, 0, 0))
    if libc.capset(ctypes.byref(Header(0x20080522, 0)), data) != 0:
        sys.exit("capset: " + os.strerror(ctypes.get_errno()))
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.recv(1)
"""


def test_dropped_capabilities_show_the_explicit_list(agent, processes):
    """A process that drops capabilities after exec (capset) and then connects shows the
    dropped set as names, at the time of the event."""
    listener = Listener(socket.AF_INET, "127.0.0.1", hold=True)
    try:
        client = run_client(processes, CAPSET, listener.port)
        event = agent.wait_events(kind=ESTABLISH, pid=client.pid, dport=listener.port)[0]
        proc = event["process"]
        assert proc["cap_effective"] == "CAP_NET_RAW | CAP_SYS_ADMIN", event
        assert proc["cap_permitted"] == "CAP_NET_RAW | CAP_SYS_ADMIN", event
        assert proc["cap_inheritable"] == ""
    finally:
        listener.close()


def test_full_capability_set_is_any_caps(agent, processes):
    """A process holding every capability the kernel knows shows ANY_CAPS. (Root in this
    sandbox may lack some, so the test takes a full set from a new user namespace.)"""
    if not shutil.which("unshare"):
        pytest.skip("unshare is not installed")
    listener = Listener(socket.AF_INET, "127.0.0.1", hold=True)
    try:
        client = processes.start(["unshare", "--user", "--map-root-user", PYTHON, "-c",
                                  textwrap.dedent(CONNECT), str(listener.port)])
        events = agent.wait_events(kind=ESTABLISH, dport=listener.port)
        proc = only(events, "Establish")["process"]
        assert proc["pid"] == client.pid  # unshare execs the command in place
        assert proc["cap_effective"] == "ANY_CAPS"
        assert proc["cap_permitted"] == "ANY_CAPS"
    finally:
        listener.close()


SETUID_CLIENT = r"""
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv) {
    struct sockaddr_in a = {0};
    char c;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[1]));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) return 1;
    return read(fd, &c, 1) < 0;
}
"""


def test_setuid_root_helper_shows_setuid(agent, processes, tmp_path):
    """A set-user-id-root program run by an unprivileged user shows SETUID in secureexec, with
    uid the user's and euid 0."""
    cc = shutil.which("cc")
    setpriv = shutil.which("setpriv")
    if not cc or not setpriv:
        pytest.skip("needs cc and setpriv")
    src = tmp_path / "client.c"
    src.write_text(SETUID_CLIENT)
    binary = tmp_path / "suid-client"
    subprocess.run([cc, "-O2", "-o", str(binary), str(src)], check=True)
    os.chown(binary, 0, 0)
    os.chmod(binary, 0o4755)
    os.chmod(tmp_path, 0o755)
    listener = Listener(socket.AF_INET, "127.0.0.1", hold=True)
    try:
        client = processes.start([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
                                  str(binary), str(listener.port)])
        event = agent.wait_events(kind=ESTABLISH, pid=client.pid, dport=listener.port)[0]
        proc = event["process"]
        assert proc["secureexec"] == "SETUID", event
        assert (proc["uid"], proc["euid"]) == (65534, 0), event
        assert proc["binary_path"] == str(binary)
        assert proc["args"] == str(listener.port)
    finally:
        listener.close()


def test_short_lived_process_keeps_its_full_object(agent, processes):
    """A process that exits right after connecting still has its complete object on its
    Establish and on its Close, which the kernel delivers after the process is gone."""
    listener = Listener(socket.AF_INET, "127.0.0.1", hold=True)
    try:
        client = run_client(processes, """
            import os, socket, sys
            socket.create_connection(("127.0.0.1", int(sys.argv[1])))
            os._exit(0)
        """, listener.port, "short-lived")
        assert client.wait(10) == 0
        establish = agent.wait_events(kind=ESTABLISH, pid=client.pid, dport=listener.port)[0]
        close = agent.wait_events(kind=CLOSE, pid=client.pid, dport=listener.port)[0]
        settle()
        for event in (establish, close):
            validate_schema(event)
            proc = event["process"]
            assert proc["binary_path"] == PYTHON, event
            assert proc["args"].endswith(f" {listener.port} short-lived"), event
            assert proc["exec_id"] == establish["process"]["exec_id"]
            assert event["parent"]["pid"] == os.getpid()
    finally:
        listener.close()
