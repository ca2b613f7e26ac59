"""The process and parent objects of events, end to end with the real agent and real programs.

Each test makes its connections to a loopback listener of its own and asserts exact values of
the owner's process object against what the kernel and /proc say about that process.

Besides the agent's own needs these tests use (Debian packages): util-linux (unshare,
setpriv), gcc (cc, for the small C client), libcap2-bin (setcap), dash (/bin/sh),
python3-jsonschema, netcat-openbsd and inetutils-telnet. Under CI=true a missing one fails.
"""

import base64
import datetime
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import pytest

from conftest import (
    EVENT_TIMEOUT,
    free_port,
    listening,
    same_connection,
    skip_or_fail,
    wait_for,
)
from test_lifecycle import (
    ACCEPT,
    CLOSE,
    ESTABLISH,
    FAMILIES,
    LOOPBACK,
    Listener,
    only,
    telnet_host,
    wait_exit,
)

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
    try:
        import jsonschema
    except ImportError:
        skip_or_fail("the jsonschema module is not installed (python3-jsonschema)")
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

NOBODY = 65534  # the unprivileged user (and group) that runs the set-id and file-caps binaries
NS_PER_TICK = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
ARGS_MAX_BYTES = 1024  # the agent's bound on the raw argv area (docs/process.md)


def tool(name, package):
    """The path of program `name`; skips (fails under CI) when it is not installed."""
    path = shutil.which(name)
    if not path:
        skip_or_fail(f"{name} is not installed ({package})")
    return path


def boot_ns():
    """CLOCK_BOOTTIME now, in ns: the clock of exec_id start times."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def stat_start_ns(pid):
    """The task's start from /proc/PID/stat (field 22, clock ticks), in ns since boot."""
    with open(f"/proc/{pid}/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    return ticks * NS_PER_TICK


def exec_id_of(pid, start_ns):
    return base64.b64encode(f"{pid}:{start_ns}".encode()).decode()


def proc_args(pid):
    """`args` as docs/process.md defines it, computed from /proc/PID/cmdline: the raw argv
    area cut at 1024 bytes, argv[0] dropped, NULs made spaces, "..." when cut."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        raw = f.read()
    cut = len(raw) > ARGS_MAX_BYTES
    raw = raw[:ARGS_MAX_BYTES]
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    first = raw.find(b"\0")
    args = "" if first < 0 else raw[first + 1:].replace(b"\0", b" ").decode()
    return args + ("..." if cut else "")


def assert_scanned_start(proc):
    """A process found by the agent's /proc scan: its exec_id is exactly "<pid>:<the start of
    /proc/PID/stat in ns>" (10 ms resolution)."""
    assert proc["exec_id"] == exec_id_of(proc["pid"], stat_start_ns(proc["pid"])), proc


def assert_cloned_start(proc):
    """A forked process that did not exec: its exec_id's start is its fork time in ns, which
    /proc/PID/stat gives in clock ticks (truncated): equal at tick resolution."""
    pid, start = decode_exec_id(proc["exec_id"])
    assert pid == proc["pid"], proc
    assert start // NS_PER_TICK * NS_PER_TICK == stat_start_ns(pid), (proc, stat_start_ns(pid))


def assert_exec_start(proc, before_ns, after_ns):
    """A process that exec'd while the agent ran: its exec_id's start is the exec time, which
    /proc does not show. It lies between `before_ns` (boot clock before the test started the
    process) and `after_ns` (after its event arrived), and not before the fork that
    /proc/PID/stat shows (in ticks)."""
    pid, start = decode_exec_id(proc["exec_id"])
    assert pid == proc["pid"], proc
    assert before_ns <= start <= after_ns, (proc, before_ns, start, after_ns)
    assert stat_start_ns(pid) <= start, (proc, stat_start_ns(pid))
    assert_start_time_is(proc, start)


def assert_start_time_is(proc, start_ns):
    """`start_time` (wall clock, ms) is the exec_id's boot-clock start converted to wall-clock
    time; the agent's boot offset is read at another moment than ours, so within 10 ms."""
    offset = time.time_ns() - boot_ns()
    wall = wall_time_ns(proc["start_time"])
    assert abs(wall - (start_ns + offset)) < 10_000_000, (proc, start_ns + offset)


def wall_time_ns(timestamp):
    parsed = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S.%fZ")
    seconds = parsed.replace(tzinfo=datetime.timezone.utc).timestamp()
    return int(round(seconds * 1000)) * 1_000_000


def read_line(proc, timeout=EVENT_TIMEOUT):
    """The next line `proc` writes on stdout (a pipe), waiting at most `timeout` seconds: reads
    the pipe itself, so never mix with proc.stdout.readline()."""
    fd = proc.stdout.fileno()
    buf = proc.__dict__.setdefault("_lines", bytearray())
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(
                f"{proc.args[:2]} wrote no line within {timeout} s: {bytes(buf)!r}")
        chunk = os.read(fd, 4096)
        if not chunk:
            raise AssertionError(f"{proc.args[:2]} closed stdout after {bytes(buf)!r}")
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line.decode()


def children_of(pid):
    """Pids of the processes whose parent is `pid`, from /proc/*/stat."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return found


def kill_stray(pid, start_ns):
    """Kills `pid` if it is still the process that started at `start_ns` (a test's grandchild,
    which the processes fixture does not know): teardown after a failure."""
    try:
        if stat_start_ns(pid) == start_ns:
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError, IndexError):
        pass


def ns_pids(pid):
    """The NSpid line of /proc/PID/status: the pid in each pid namespace, outermost first."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return [int(x) for x in line.split()[1:]]
    return []


class Sink:
    """A loopback server in this process for one connection: reads everything until the
    client's FIN (bounded), then closes its side, so the client's socket reaches CLOSE at once
    (through TIME_WAIT) with every byte it sent read and no reset."""

    def __init__(self, timeout=30.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.sock.settimeout(timeout)
        self.port = self.sock.getsockname()[1]
        self.timeout = timeout
        self.received = 0
        self.error = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sink", daemon=True)
        self.thread.start()

    def _run(self):
        try:
            conn, _ = self.sock.accept()
            with conn:
                conn.settimeout(self.timeout)
                while True:
                    data = conn.recv(65536)
                    if not data:
                        break
                    self.received += len(data)
        except OSError as e:
            self.error = e
        finally:
            self.done.set()

    def wait(self, timeout=EVENT_TIMEOUT):
        """Waits until the client closed and this side too; returns the bytes received."""
        assert self.done.wait(timeout), f"the client did not close within {timeout} s"
        assert self.error is None, self.error
        return self.received

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a pending accept()
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


CLIENT_C = r"""
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
/* client PORT [wait]: with "wait", reads one byte from stdin first; then connects to
 * 127.0.0.1:PORT and blocks reading the connection until the server closes it. */
int main(int argc, char **argv) {
    struct sockaddr_in a = {0};
    char c;
    int fd;
    if (argc > 2 && read(0, &c, 1) != 1) return 2;
    fd = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[1]));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) return 1;
    return read(fd, &c, 1) < 0;
}
"""


@pytest.fixture(scope="module")
def binaries():
    """A directory every user can enter (0755, unlike pytest's tmp_path) holding the C client
    compiled once (`client`); tests copy it under their own names. Removed afterwards."""
    cc = tool("cc", "gcc")
    path = tempfile.mkdtemp(prefix="netmon-process-test-")
    try:
        os.chmod(path, 0o755)
        with open(os.path.join(path, "client.c"), "w") as f:
            f.write(CLIENT_C)
        subprocess.run([cc, "-O2", "-o", os.path.join(path, "client"),
                        os.path.join(path, "client.c")], check=True, timeout=120)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def as_nobody(*command):
    """`command` run by uid and gid 65534 with no supplementary groups (setpriv execs it in
    place, so the pid is setpriv's)."""
    return [tool("setpriv", "util-linux"), f"--reuid={NOBODY}", f"--regid={NOBODY}",
            "--clear-groups", *command]


@FAMILIES
@pytest.mark.kernel_matrix
@pytest.mark.arm64_matrix
def test_reference_scenario_process_objects(agent, real_tools, processes, family):
    """`nc -l PORT` + `telnet localhost PORT` (IPv4), `nc -6 -l` + `telnet -6` (IPv6): telnet's
    Establish names /usr/bin/inetutils-telnet (the symlink /usr/bin/telnet resolved) with its
    exact arguments, nc's Accept /usr/bin/nc.openbsd; each `parent` is this test process with
    exec_id equal to the child's parent_exec_id. Every exec_id carries the right start: this
    process (found by the agent's /proc scan) exactly its /proc/PID/stat start, telnet and nc
    (exec'd while the agent ran) their exec time, after the fork /proc shows. Their Close
    events carry the same process and parent objects as the open events."""
    v6 = family == socket.AF_INET6
    port = free_port(7879 if v6 else 7878)
    host = telnet_host(family)
    nc_args = [*(["-6"] if v6 else []), "-l", str(port)]
    telnet_args = [*(["-6"] if v6 else []), host, str(port)]

    before = boot_ns()
    nc = processes.start([real_tools["nc"], *nc_args])
    wait_for(lambda: listening(port, v6=v6), what=f"nc listening on {port}")
    telnet = processes.start([real_tools["telnet"], *telnet_args])
    establish = only(agent.wait_events(kind=ESTABLISH, pid=telnet.pid, dport=port,
                                       daddr=LOOPBACK[family]), "Establish of telnet")
    accept = only(agent.wait_events(kind=ACCEPT, pid=nc.pid, sport=port), "Accept of nc")
    after = boot_ns()

    assert os.path.realpath(real_tools["telnet"]) == "/usr/bin/inetutils-telnet"
    assert os.path.realpath(real_tools["nc"]) == "/usr/bin/nc.openbsd"
    me = os.getpid()
    for event, pid, path, filename, args in (
            (establish, telnet.pid, "/usr/bin/inetutils-telnet", "inetutils-telnet",
             " ".join(telnet_args)),
            (accept, nc.pid, "/usr/bin/nc.openbsd", "nc.openbsd", " ".join(nc_args))):
        validate_schema(event)
        proc, parent = event["process"], event["parent"]
        assert (proc["pid"], proc["tid"], proc["ppid"]) == (pid, pid, me), event
        assert proc["binary_path"] == path, event
        assert proc["filename"] == filename, event
        assert proc["args"] == args, event
        assert proc["cloned"] is False, event
        assert proc["secureexec"] == "", event
        assert (proc["uid"], proc["euid"], proc["gid"], proc["egid"]) == (
            os.getuid(), os.geteuid(), os.getgid(), os.getegid()), event
        caps = proc_status_caps(pid)
        assert proc["cap_effective"] == expected_caps(caps["CapEff"]), event
        assert proc["cap_permitted"] == expected_caps(caps["CapPrm"]), event
        assert proc["cap_inheritable"] == expected_caps(caps["CapInh"]), event
        assert proc["auid"] == int(open(f"/proc/{pid}/loginuid").read())
        assert_exec_start(proc, before, after)

        assert parent is not None, event
        assert parent["pid"] == parent["tid"] == me, event
        assert parent["ppid"] == os.getppid(), event
        assert parent["binary_path"] == PYTHON, event
        assert parent["filename"] == os.path.basename(PYTHON), event
        assert parent["args"] == proc_args(me), event
        assert parent["cloned"] is False, event
        assert parent["exec_id"] == proc["parent_exec_id"] != "", event
        assert_scanned_start(parent)
        assert parent["parent_exec_id"] == exec_id_of(os.getppid(), stat_start_ns(os.getppid()))
    # End it: closing telnet's stdin makes it exit, and nc exits when its peer closes.
    telnet.stdin.close()
    wait_exit(telnet)
    wait_exit(nc)
    for opened in (establish, accept):
        close = only(agent.wait_events(kind=CLOSE, ports={port}, **same_connection(opened)),
                     "Close")
        assert close["process"] == opened["process"], (opened, close)
        assert close["parent"] == opened["parent"], (opened, close)


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
        assert proc["exec_id"] != par["exec_id"]
        assert_cloned_start(proc)  # the child still runs: it waits for the listener to close
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
    unshare = tool("unshare", "util-linux")
    listener = Listener(socket.AF_INET, "127.0.0.1", hold=True)
    try:
        client = processes.start([unshare, "--user", "--map-root-user", PYTHON, "-c",
                                  textwrap.dedent(CONNECT), str(listener.port)])
        events = agent.wait_events(kind=ESTABLISH, dport=listener.port)
        proc = only(events, "Establish")["process"]
        assert proc["pid"] == client.pid  # unshare execs the command in place
        assert proc["cap_effective"] == "ANY_CAPS"
        assert proc["cap_permitted"] == "ANY_CAPS"
    finally:
        listener.close()


# (mode, file capabilities for setcap or None, run by nobody?, secureexec, (uid, euid, gid, egid))
EXEC_FLAG_CASES = {
    "setuid": (0o4755, None, True, "SETUID", (NOBODY, 0, NOBODY, NOBODY)),
    "setgid": (0o2755, None, True, "SETGID", (NOBODY, NOBODY, NOBODY, 0)),
    "setuid-setgid": (0o6755, None, True, "SETUID | SETGID", (NOBODY, 0, NOBODY, 0)),
    "file-caps": (0o755, "cap_net_raw+ep", True, "FILE_CAPS", (NOBODY,) * 4),
    "file-caps-permitted-only": (0o755, "cap_net_raw+p", True, "FILE_CAPS", (NOBODY,) * 4),
    "setgid-file-caps": (0o2755, "cap_net_raw+ep", True, "SETGID | FILE_CAPS",
                         (NOBODY, NOBODY, NOBODY, 0)),
    # root gains nothing from file capabilities (its euid is 0): no flag.
    "file-caps-run-by-root": (0o755, "cap_net_raw+ep", False, "", (0, 0, 0, 0)),
}


@pytest.mark.kernel_matrix
@pytest.mark.parametrize("case", list(EXEC_FLAG_CASES))
def test_exec_flags(agent, processes, binaries, case):
    """A root-owned copy of the C client with set-id bits and/or file capabilities (setcap),
    run by uid/gid 65534 (or root): secureexec is exactly the expected flags, joined in the
    order SETUID, SETGID, FILE_CAPS; the ids are the set-id result; the capability sets are
    those /proc/PID/status shows for the running client."""
    mode, file_caps, nobody, flags, ids = EXEC_FLAG_CASES[case]
    binary = os.path.join(binaries, f"client-{case}")
    shutil.copy(os.path.join(binaries, "client"), binary)
    os.chown(binary, 0, 0)
    os.chmod(binary, mode)
    if file_caps:
        subprocess.run([tool("setcap", "libcap2-bin"), file_caps, binary], check=True,
                       timeout=30)
    listener = Listener(socket.AF_INET, "127.0.0.1", hold=True)
    try:
        command = [binary, str(listener.port)]
        client = processes.start(as_nobody(*command) if nobody else command)
        event = agent.wait_events(kind=ESTABLISH, pid=client.pid, dport=listener.port)[0]
        validate_schema(event)
        proc = event["process"]
        assert proc["secureexec"] == flags, event
        assert (proc["uid"], proc["euid"], proc["gid"], proc["egid"]) == ids, event
        assert proc["binary_path"] == binary, event
        assert proc["filename"] == os.path.basename(binary), event
        assert proc["args"] == str(listener.port), event
        caps = proc_status_caps(client.pid)  # the client blocks reading until the close
        assert proc["cap_effective"] == expected_caps(caps["CapEff"]), event
        assert proc["cap_permitted"] == expected_caps(caps["CapPrm"]), event
        assert proc["cap_inheritable"] == expected_caps(caps["CapInh"]), event
        if file_caps and nobody:
            assert proc["cap_permitted"] == "CAP_NET_RAW", event
    finally:
        listener.close()


MEMFD_NAME = "netmon-memfd-client"

# Runs a copy of the C client without a link: from a memfd, or from a file unlinked after
# opening it. argv: FILE KIND ARGS...; execs in place (fexecve), so the pid stays the same.
FILELESS = """
    import os, sys
    path, kind, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    if kind == "memfd":
        with open(path, "rb") as f:
            data = f.read()
        fd = os.memfd_create("%s", 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    else:
        fd = os.open(path, os.O_RDONLY)
        os.unlink(path)
    os.execve(fd, ["client", *args], {})
""" % MEMFD_NAME


@pytest.mark.kernel_matrix
@pytest.mark.parametrize("kind", ["memfd", "deleted-file"])
def test_fileless_exec(agent, processes, binaries, kind):
    """An executable run from a memfd (memfd_create + fexecve) or from a file deleted before
    the exec: secureexec is exactly FILELESS_EXEC; binary_path is the memfd's name as
    /proc/PID/exe shows it without " (deleted)" ("/memfd:NAME"), or the deleted file's path."""
    binary = os.path.join(binaries, f"client-{kind}")
    shutil.copy(os.path.join(binaries, "client"), binary)
    listener = Listener(socket.AF_INET, "127.0.0.1", hold=True)
    try:
        client = run_client(processes, FILELESS, binary, kind, listener.port)
        event = agent.wait_events(kind=ESTABLISH, pid=client.pid, dport=listener.port)[0]
        validate_schema(event)
        proc = event["process"]
        path = f"/memfd:{MEMFD_NAME}" if kind == "memfd" else binary
        assert os.readlink(f"/proc/{client.pid}/exe") == f"{path} (deleted)"
        assert proc["secureexec"] == "FILELESS_EXEC", event
        assert proc["binary_path"] == path, event
        assert proc["filename"] == os.path.basename(path), event
        assert proc["args"] == str(listener.port), event
        assert proc["cloned"] is False, event
        assert event["parent"]["pid"] == os.getpid()
    finally:
        listener.close()


def test_fileless_exec_found_by_the_scan(start_agent, processes, binaries):
    """A memfd process that existed before the agent (found by its /proc scan) gets the same
    binary_path, filename and FILELESS_EXEC as one whose exec the agent saw."""
    binary = os.path.join(binaries, "client-memfd-scan")
    shutil.copy(os.path.join(binaries, "client"), binary)
    listener = Listener(socket.AF_INET, "127.0.0.1", hold=True)
    try:
        client = run_client(processes, FILELESS, binary, "memfd", listener.port, "wait")
        wait_for(lambda: os.readlink(f"/proc/{client.pid}/exe").startswith("/memfd:"),
                 what="the client exec'd from its memfd")
        agent = start_agent()
        client.stdin.write(b"g")
        client.stdin.flush()
        event = agent.wait_events(kind=ESTABLISH, pid=client.pid, dport=listener.port)[0]
        proc = event["process"]
        assert proc["secureexec"] == "FILELESS_EXEC", event
        assert proc["binary_path"] == f"/memfd:{MEMFD_NAME}", event
        assert proc["filename"] == f"memfd:{MEMFD_NAME}", event
        assert proc["args"] == f"{listener.port} wait", event
        assert_scanned_start(proc)
    finally:
        listener.close()


@pytest.mark.parametrize("interpreter_arg", ["", "-u"], ids=["plain", "with-argument"])
def test_executed_script_reports_the_interpreter(agent, processes, binaries, interpreter_arg):
    """A Python script run by its path through its `#!` line: the process is the interpreter
    (binary_path and filename of the resolved python3, as /proc/PID/exe), and `args` holds what
    the kernel passed it: the #! line's argument if any, the script's path, then the script's
    own arguments. The script's name appears nowhere else."""
    script = os.path.join(binaries, f"client-{interpreter_arg or 'plain'}.py")
    with open(script, "w") as f:
        f.write(f"#!{sys.executable} {interpreter_arg}".rstrip() + "\n" + textwrap.dedent(CONNECT))
    os.chmod(script, 0o755)
    listener = Listener(socket.AF_INET, "127.0.0.1", hold=True)
    try:
        client = processes.start([script, str(listener.port)])
        event = agent.wait_events(kind=ESTABLISH, pid=client.pid, dport=listener.port)[0]
        proc = event["process"]
        assert proc["binary_path"] == PYTHON == os.readlink(f"/proc/{client.pid}/exe"), event
        assert proc["filename"] == os.path.basename(PYTHON), event
        expected = f"{script} {listener.port}"
        assert proc["args"] == (f"{interpreter_arg} {expected}" if interpreter_arg else expected)
        assert proc["args"] == proc_args(client.pid)
    finally:
        listener.close()


def test_shell_script_is_the_parent_as_its_interpreter(agent, processes, binaries):
    """A `#!/bin/sh` script that runs the C client: the client's parent is the shell process,
    reported as the resolved /bin/sh (dash on Debian) with the script's path and arguments
    in `args`."""
    sh = os.path.realpath("/bin/sh")
    script = os.path.join(binaries, "run-client.sh")
    with open(script, "w") as f:
        # Not the script's last command, so the shell forks for the client instead of
        # exec'ing it.
        f.write(f'#!/bin/sh\n"{binaries}/client" "$1"\nexit $?\n')
    os.chmod(script, 0o755)
    listener = Listener(socket.AF_INET, "127.0.0.1", hold=True)
    try:
        shell = processes.start([script, str(listener.port)])
        event = only(agent.wait_events(kind=ESTABLISH, dport=listener.port), "Establish")
        proc, parent = event["process"], event["parent"]
        assert proc["binary_path"] == os.path.join(binaries, "client"), event
        assert proc["args"] == str(listener.port), event
        assert proc["ppid"] == shell.pid != proc["pid"], event
        assert parent["pid"] == shell.pid, event
        assert parent["binary_path"] == sh == os.readlink(f"/proc/{shell.pid}/exe"), event
        assert parent["filename"] == os.path.basename(sh), event
        assert parent["args"] == f"{script} {listener.port}", event
        assert parent["cloned"] is False, event
        assert proc["parent_exec_id"] == parent["exec_id"], event
    finally:
        listener.close()


PIDNS_CLIENT = """
    import os, socket, sys
    print(os.getpid(), flush=True)
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.recv(1)
"""


@pytest.mark.kernel_matrix
def test_child_pid_namespace_reports_host_pids(agent, processes):
    """A process in a new pid namespace (`unshare --pid --fork`), pid 1 there, connects: its
    events carry its host pid (the first NSpid of /proc/PID/status on the host), host tid and
    ppid (unshare's pid), and an exec_id made with the host pid; `parent` is unshare."""
    unshare = tool("unshare", "util-linux")
    listener = Listener(socket.AF_INET, "127.0.0.1", hold=True)
    try:
        outer = processes.start([unshare, "--pid", "--fork", "--kill-child", PYTHON, "-c",
                                 textwrap.dedent(PIDNS_CLIENT), str(listener.port)])
        assert read_line(outer) == "1"  # its own pid, in its namespace
        host_pid = only(children_of(outer.pid), "child of unshare")
        assert ns_pids(host_pid) == [host_pid, 1]
        event = only(agent.wait_events(kind=ESTABLISH, dport=listener.port), "Establish")
        proc, parent = event["process"], event["parent"]
        assert (proc["pid"], proc["tid"], proc["ppid"]) == (host_pid, host_pid, outer.pid), event
        assert decode_exec_id(proc["exec_id"])[0] == host_pid, event
        assert proc["binary_path"] == PYTHON, event
        assert proc["args"].endswith(f" {listener.port}"), event
        assert parent["pid"] == outer.pid, event
        assert parent["binary_path"] == os.path.realpath(unshare), event
        assert proc["parent_exec_id"] == parent["exec_id"], event
    finally:
        listener.close()
    close = agent.wait_events(kind=CLOSE, **same_connection(event))[0]
    assert close["process"]["pid"] == host_pid, close


# The parent connects and forks; it exits, and only then does the child (which inherited the
# socket) send PAYLOAD bytes over it and close it.
FORK_INHERIT = """
    import os, socket, sys
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(w)
        os.read(r, 1)  # EOF once the parent has exited
        s.sendall(b"x" * int(sys.argv[2]))
        s.close()
        print("closed", flush=True)
        os._exit(0)
    print(child, flush=True)
    s.close()  # the child's copy keeps the connection open
"""
PAYLOAD = 3000


def test_socket_inherited_across_fork_belongs_to_its_opener(agent, processes):
    """A socket connected by a parent and inherited by its forked child, which uses and closes
    it after the parent has exited: the Establish and the Close both report the parent (the
    process that called connect()), the Close with the parent's full object although it has
    exited, and bytes_sent counts the child's bytes. No event names the child."""
    sink = Sink()
    child = None
    try:
        parent = run_client(processes, FORK_INHERIT, sink.port, PAYLOAD, "fork-inherit")
        child = int(read_line(parent))
        child_start = stat_start_ns(child)
        establish = agent.wait_events(kind=ESTABLISH, pid=parent.pid, dport=sink.port)[0]
        assert wait_exit(parent) == 0
        assert read_line(parent) == "closed"  # the child, after its parent exited
        assert sink.wait() == PAYLOAD
        close = only(agent.wait_events(kind=CLOSE, **same_connection(establish)), "Close")
    finally:
        sink.close()
        if child is not None:
            kill_stray(child, child_start)
    proc = establish["process"]
    assert (proc["pid"], proc["tid"], proc["cloned"]) == (parent.pid, parent.pid, False)
    assert proc["args"].endswith(f" {sink.port} {PAYLOAD} fork-inherit"), establish
    assert close["process"] == proc, close
    assert close["parent"] == establish["parent"] and close["parent"]["pid"] == os.getpid()
    ne = close["network_event"]
    assert (ne["bytes_sent"], ne["closed_by"], ne["reset"]) == (PAYLOAD, "local", False), close
    assert agent.events(pid=child) == [], agent.events(pid=child)


# A listening socket inherited by a forked child, which accepts, reads to EOF and closes.
FORK_ACCEPT = """
    import os, socket, sys
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    child = os.fork()
    if child == 0:
        conn, _ = srv.accept()
        while conn.recv(4096):
            pass
        conn.close()
        os._exit(0)
    print(srv.getsockname()[1], child, flush=True)
    os.waitpid(child, 0)
"""


@pytest.mark.parametrize("flags", [(), ("--hook-variant", "accept=tp_btf")],
                         ids=["auto", "accept=tp_btf"])
def test_inherited_listener_accept_belongs_to_the_acceptor(start_agent, processes, flags):
    """A listening socket made by a parent and inherited by its forked child, which calls
    accept(): the Accept and its Close report the child (cloned, the parent's image, its own
    exec_id with its fork time), whoever created the listener. Also with the accept hook's last
    resort (tp_btf on sys_exit) forced."""
    agent = start_agent(*flags)
    parent = run_client(processes, FORK_ACCEPT, "fork-accept")
    port, child = map(int, read_line(parent).split())
    fork_start = stat_start_ns(child)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(b"y" * PAYLOAD)
            c.shutdown(socket.SHUT_WR)
            assert c.recv(1) == b""  # the child read everything and closed
        accept = only(agent.wait_events(kind=ACCEPT, sport=port), "Accept")
        close = only(agent.wait_events(kind=CLOSE, **same_connection(accept)), "server Close")
        assert wait_exit(parent) == 0
    finally:
        kill_stray(child, fork_start)
    proc, par = accept["process"], accept["parent"]
    assert (proc["pid"], proc["tid"], proc["ppid"], proc["cloned"]) == (
        child, child, parent.pid, True), accept
    assert proc["binary_path"] == PYTHON and proc["args"].endswith(" fork-accept"), accept
    pid, start = decode_exec_id(proc["exec_id"])
    assert (pid, start // NS_PER_TICK * NS_PER_TICK) == (child, fork_start), accept
    assert par["pid"] == parent.pid and proc["parent_exec_id"] == par["exec_id"], accept
    assert close["process"] == proc, close
    ne = close["network_event"]
    assert (ne["bytes_received"], ne["closed_by"]) == (PAYLOAD, "remote"), close


# SCM_RIGHTS: the receiver takes a connected socket over a unix socket (abstract name argv[1]),
# and when the test says so, sends argv[2] bytes over it and closes it.
RECEIVER = """
    import socket, sys
    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    u.bind("\\0" + sys.argv[1])
    u.listen(1)
    print("ready", flush=True)
    conn, _ = u.accept()
    _, fds, _, _ = socket.recv_fds(conn, 16, 1)
    tcp = socket.socket(fileno=fds[0])
    print("received", flush=True)
    sys.stdin.readline()
    tcp.sendall(b"r" * int(sys.argv[2]))
    tcp.close()
    print("closed", flush=True)
"""
# The sender connects to port argv[1], passes the socket to the receiver, closes its own
# descriptor and exits (argv[3] "exits") or stays until its stdin closes ("stays").
SENDER = """
    import socket, sys
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    u.connect("\\0" + sys.argv[2])
    socket.send_fds(u, [b"s"], [s.fileno()])
    s.close()
    u.close()
    print("sent", flush=True)
    if sys.argv[3] == "stays":
        sys.stdin.read()
"""


@pytest.mark.parametrize("sender", ["exits", "stays"])
def test_socket_passed_with_scm_rights_belongs_to_its_opener(agent, processes, sender):
    """A connected socket passed to another process with SCM_RIGHTS, which uses and closes it
    (the sender has exited, or still runs): Establish and Close both report the sender, the
    Close with the sender's exec_id and full object; bytes_sent counts the receiver's bytes;
    no event names the receiver."""
    name = f"netmon-test-{os.getpid()}-{sender}"
    sink = Sink()
    try:
        receiver = run_client(processes, RECEIVER, name, PAYLOAD)
        assert read_line(receiver) == "ready"
        sending = run_client(processes, SENDER, sink.port, name, sender)
        assert read_line(sending) == "sent"
        assert read_line(receiver) == "received"
        establish = agent.wait_events(kind=ESTABLISH, pid=sending.pid, dport=sink.port)[0]
        if sender == "exits":
            assert wait_exit(sending) == 0
        receiver.stdin.write(b"go\n")
        receiver.stdin.flush()
        assert read_line(receiver) == "closed"
        assert sink.wait() == PAYLOAD
        close = only(agent.wait_events(kind=CLOSE, **same_connection(establish)), "Close")
        if sender == "stays":
            assert sending.poll() is None  # it was alive when its connection closed
    finally:
        sink.close()
    proc = establish["process"]
    assert (proc["pid"], proc["tid"]) == (sending.pid, sending.pid), establish
    assert proc["args"].endswith(f" {sink.port} {name} {sender}"), establish
    assert close["process"] == proc, close
    assert close["parent"] == establish["parent"], close
    ne = close["network_event"]
    assert (ne["bytes_sent"], ne["closed_by"], ne["reset"]) == (PAYLOAD, "local", False), close
    assert agent.events(pid=receiver.pid) == [], agent.events(pid=receiver.pid)


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
        agent.sync()  # a second Establish or Close would be on stdout now
        for event in (establish, close):
            validate_schema(event)
            proc = event["process"]
            assert proc["binary_path"] == PYTHON, event
            assert proc["args"].endswith(f" {listener.port} short-lived"), event
            assert proc["exec_id"] == establish["process"]["exec_id"]
            assert event["parent"]["pid"] == os.getpid()
    finally:
        listener.close()
