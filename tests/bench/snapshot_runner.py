#!/usr/bin/python3
"""Bench of netmon's start-up snapshot (issue #21): N established connections older than the agent.

Each round: netmon-hold-connections opens N established loopback connections (both ends its own,
so 2N sockets; fresh ones each round, so that no socket has a cookie yet, as for connections no
agent ever saw) and holds them while the agent starts three times, one after the other:
  off      --events-preexisting=false: the same-run baseline;
  on       the snapshot (default), the first agent to see these sockets: it has the kernel make
           their cookies (pidfd_getfd + SO_COOKIE), as after a first install;
  on-again the snapshot again on the same sockets, whose cookies now exist (as after a restart).
The order of off and on alternates between rounds. Then the helper closes them (with a reset).

Per agent run: the snapshot's own duration (the agent's "snapshot: ... in X ms" line); the wall
time from the agent's start to "netmon is running" and to the last chunk of stdout holding a
preexisting event (the runner reads the agent's stdout through a pipe in 1 MiB reads, counting
lines and preexisting events, and writes it to a file that is parsed afterwards); the agent's peak
RSS (VmHWM, and the peak of VmRSS sampled every 10 ms after "netmon is running", which leaves out
the start-up's BTF transient that VmHWM keeps); the preexisting events of the helper's connections
(each end exactly once: a TcpConnectionAccept for the server end, a TcpConnectionEstablish for the
client end, the helper's process, a cookie of its own, no cookie twice in the whole output) and
netmon_events_lost_total (all stages, /metrics just before SIGTERM). The extra peak of "on" is
its peak against the same round's "off".

--quick: 2000 connections, one round, "on" only (ctest snapshot-quick). --mechanism netlink: the
agent takes the snapshot's fallback (sock_diag in each network namespace and a /proc fd scan:
NETMON_FAULT_SNAPSHOT=netlink), as where the kernel lacks the iterator (ctest
snapshot-quick-netlink); the log line must name the mechanism asked for. --check: exit 1 unless,
in every run with the snapshot, each of the helper's 2N ends is reported exactly once, correctly,
nothing is counted lost and the agent exits 0, and the "off" runs report no preexisting event.
No timing is asserted. --sink file: the agent's stdout to a file on /dev/shm (no reader in between);
--sink devnull: to /dev/null (then only the log line's duration, the losses and the memory are
measured; no event is checked).

The full bench takes /tmp/netmon-integration.lock (flock, bounded wait) so that the machine is
quiet; --quick does not (ctest may run under that lock already). Exit 77 when it cannot run here
(not root, no agent, no BTF), except under CI=true: then 1. Stdlib only; all traffic on loopback;
every wait bounded; the helper and the agents are stopped even on failure.
"""

import argparse
import collections
import fcntl
import json
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
IN_CI = os.environ.get("CI", "").strip().lower() == "true"
SKIP = 77
LOCK_PATH = "/tmp/netmon-integration.lock"
BUILD_LOCK = "/tmp/netmon-build.lock"
STARTUP_TIMEOUT = 30.0
SNAPSHOT_TIMEOUT = 120.0  # the snapshot's log line and its events, after "netmon is running"
STOP_TIMEOUT = 15.0
URL_RE = re.compile(r"serving /metrics, /healthz and /readyz on (http://\S+)")
METRIC_LOST_RE = re.compile(r'^netmon_events_lost_total\{stage="([^"]+)"\}\s+(\S+)', re.M)
# "snapshot: N connections older than the agent reported (M already reported: ..., K connecting,
# L listening sockets) in X ms; mechanism: iterator|netlink (...)"
SNAPSHOT_RE = re.compile(r"snapshot: (\d+) connections older than the agent reported \((\d+) "
                         r".*?, (\d+) connecting, (\d+) listening sockets\) in (\d+) ms; "
                         r"mechanism: (\w+)")
NOT_REPORTED = "connections older than the agent are not reported"
PREEXISTING = b'"preexisting":true'
SINKS = {"pipe": "a pipe read by the runner (1 MiB reads, to a file on /dev/shm)",
         "file": "a file on /dev/shm", "devnull": "/dev/null"}
MODES = {"off": ["--events-preexisting=false"], "on": [], "on-again": []}


def cannot_run(reason):
    if IN_CI:
        print(f"snapshot_runner: CI=true, and this cannot run: {reason}", file=sys.stderr)
        sys.exit(1)
    print(f"snapshot_runner: SKIP: {reason}", file=sys.stderr)
    sys.exit(SKIP)


def status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def ss_tcp_line():
    """The TCP line of `ss -s` (socket counts by state; reads no socket, makes no cookie)."""
    try:
        out = subprocess.run(["ss", "-s"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "n/a"
    return next((ln.strip() for ln in out.splitlines() if ln.startswith("TCP:")), "n/a")


def loadavg():
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def take_lock(path, timeout):
    """flock on `path`, waiting at most `timeout` seconds; the open file (kept by the caller)
    holds it until the process exits."""
    f = open(path, "a")  # noqa: SIM115 (held for the whole run)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{path} still held after {timeout:.0f} s") from None
            time.sleep(0.5)


class Helper:
    """netmon-hold-connections holding N connections; stopped (its workers close them) when the
    context ends, also on failure."""

    def __init__(self, n):
        self.n = n
        self.proc = None
        self.ready = None

    def __enter__(self):
        self.proc = subprocess.Popen(
            [ARGS.helper, "--connections", str(self.n), "--hold-seconds", str(ARGS.hold_seconds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60 + self.n / 1000
            line = b""
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError(f"the helper did not get ready (exit {self.proc.poll()})")
                r, _, _ = select.select([self.proc.stdout], [], [], min(left, 0.5))
                if r:
                    chunk = os.read(self.proc.stdout.fileno(), 65536)
                    if not chunk:
                        raise RuntimeError("the helper ended before it was ready")
                    line += chunk
            self.ready = json.loads(line.decode())
            if self.ready.get("ready") != self.n:
                raise RuntimeError(f"the helper opened {self.ready.get('ready')} of {self.n}")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        if self.proc is None or self.proc.poll() is not None:
            return False
        try:
            self.proc.stdin.write(b"close\n")
            self.proc.stdin.flush()
        except OSError:
            pass
        try:
            out, _ = self.proc.communicate(timeout=60)
            self.closed = out.decode(errors="replace").strip()
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        return False


class StdoutReader(threading.Thread):
    """Reads the agent's stdout pipe in large chunks into a file, counting lines and preexisting
    events, and when the last chunk with a preexisting event was read."""

    def __init__(self, pipe, path):
        super().__init__(daemon=True)
        self.pipe, self.path = pipe, path
        self.lines = self.preexisting = 0
        self.last_preexisting = self.last_read = None
        self.tail = b""

    def run(self):
        with open(self.path, "wb") as out:
            while True:
                chunk = os.read(self.pipe.fileno(), 1 << 20)
                if not chunk:
                    return
                out.write(chunk)
                self.last_read = time.monotonic()
                self.lines += chunk.count(b"\n")
                # A marker split between two chunks: counted with the joined tail.
                joined = self.tail + chunk
                found = joined.count(PREEXISTING) - self.tail.count(PREEXISTING)
                if found:
                    self.preexisting += found
                    self.last_preexisting = time.monotonic()
                self.tail = chunk[-(len(PREEXISTING) - 1):]


class RssSampler(threading.Thread):
    """VmRSS of `pid` every 10 ms; `peak` is the highest sample taken after `armed` is set."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.armed = threading.Event()
        self.done = threading.Event()
        self.peak = 0

    def run(self):
        while not self.done.wait(0.01):
            rss = status_kib(self.pid, "VmRSS")
            if rss is None:
                return
            if self.armed.is_set():
                self.peak = max(self.peak, rss)


def read_text(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


METRIC_EVENTS_RE = re.compile(r'^netmon_events_total\{type="([^"]+)"\}\s+(\S+)', re.M)
METRIC_WAITS_RE = re.compile(r'^netmon_output_wait_seconds_total\s+(\S+)', re.M)


def agent_metrics(err_path):
    """{"lost": {stage: n}, "opened": Establish + Accept events written, "wait_s": the kernel
    reader's waits for room in the output queue} from the agent's /metrics, or None."""
    m = URL_RE.search(read_text(err_path))
    if not m:
        return None
    try:
        with urllib.request.urlopen(m.group(1) + "/metrics", timeout=10) as r:
            text = r.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    events = {t: int(float(v)) for t, v in METRIC_EVENTS_RE.findall(text)}
    waits = METRIC_WAITS_RE.search(text)
    return {"lost": {stage: int(float(v)) for stage, v in METRIC_LOST_RE.findall(text)},
            "opened": events.get("TcpConnectionEstablish", 0) + events.get("TcpConnectionAccept", 0),
            "wait_s": float(waits.group(1)) if waits else None}


def wait_settled(err_path, reported, reader, deadline):
    """Waits (bounded) until the agent has written or counted lost as many open events as the
    snapshot reported and its stdout is read (no preexisting event for 0.5 s), or nothing moved
    for 3 s. Returns the seconds from the call to the last progress."""
    start = last_move = time.monotonic()
    last = None
    while time.monotonic() < deadline:
        m = agent_metrics(err_path)
        now = time.monotonic()
        state = (m["opened"], sum(m["lost"].values())) if m else None
        read = reader.preexisting if reader else 0
        if (state, read) != last:
            last, last_move = (state, read), now
        # The host's own connections go on being written: quiet = no preexisting event for 0.5 s.
        quiet = reader is None or (reader.last_preexisting is not None
                                   and now - reader.last_preexisting > 0.5)
        if m and m["opened"] + sum(m["lost"].values()) >= reported and quiet:
            break
        if now - last_move > 3:
            break
        time.sleep(0.1)
    return last_move - start


def run_agent(mode, tmp, rnd, helper):
    out_path = os.path.join(tmp, f"{mode}-{rnd}.out")
    err_path = os.path.join(tmp, f"{mode}-{rnd}.err")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETMON_")}
    if ARGS.mechanism == "netlink":
        env["NETMON_FAULT_SNAPSHOT"] = "netlink"
    cmd = [ARGS.agent, "--metrics-address", "127.0.0.1:0", *ARGS.agent_arg, *MODES[mode]]
    row = {"mode": mode, "round": rnd}
    stdout = {"pipe": subprocess.PIPE, "devnull": subprocess.DEVNULL}.get(ARGS.sink)
    with open(err_path, "wb") as err, open(out_path, "wb") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env=env, stderr=err,
                                stdout=out if stdout is None else stdout)
    reader = StdoutReader(proc.stdout, out_path) if ARGS.sink == "pipe" else None
    sampler = RssSampler(proc.pid)
    try:
        if reader:
            reader.start()
        sampler.start()
        deadline = t0 + STARTUP_TIMEOUT
        while "netmon is running" not in read_text(err_path):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{mode}: the agent did not start:\n{read_text(err_path)}")
            time.sleep(0.01)
        row["running_s"] = time.monotonic() - t0
        sampler.armed.set()
        if mode == "off":
            time.sleep(ARGS.off_wait)
        else:
            deadline = time.monotonic() + SNAPSHOT_TIMEOUT
            m = None
            while m is None:
                text = read_text(err_path)
                m = SNAPSHOT_RE.search(text)
                if NOT_REPORTED in text:
                    raise RuntimeError(f"{mode}: no snapshot:\n{text}")
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{mode}: no snapshot line:\n{text}")
                time.sleep(0.01)
            row["reported"], row["already"], row["connecting"], row["listening"] = (
                int(m.group(i)) for i in range(1, 5))
            row["snapshot_ms"] = int(m.group(5))
            if m.group(6) != ARGS.mechanism:
                raise RuntimeError(f"{mode}: the snapshot ran with {m.group(6)}, not "
                                   f"{ARGS.mechanism}:\n{m.group(0)}")
            wait_settled(err_path, row["reported"], reader, deadline)
        if reader and reader.last_preexisting is not None:
            row["last_event_s"] = reader.last_preexisting - t0
        row["hwm_mib"] = (status_kib(proc.pid, "VmHWM") or 0) / 1024
        row["rss_peak_mib"] = sampler.peak / 1024
        m = agent_metrics(err_path)
        row["lost"] = m["lost"] if m else None
        row["output_wait_s"] = m["wait_s"] if m else None
    finally:
        sampler.done.set()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            row["exit"] = proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            row["exit"] = "killed"
        if reader:
            reader.join(10)
        sampler.join(1)
    if reader:
        row["lines"] = reader.lines
    if ARGS.sink != "devnull":
        row.update(check_events(out_path, helper.ready))
    if not ARGS.keep:  # 100 000 connections' events take hundreds of MiB of a tmpfs
        os.unlink(out_path)
    return row


def check_events(path, ready):
    """The preexisting events in the output at `path`, checked against the helper's connections:
    {"pre_events": all preexisting events, "ends_ok": helper ends reported exactly once and
    correctly, "ends_bad": helper ends with anything else, "dup_cookies": cookies reported by more
    than one preexisting event, "zero_cookies", "examples"}."""
    ports = set(ready["ports"])
    pids = set(ready["workers"])
    by_cookie = collections.Counter()
    ends = collections.defaultdict(list)  # (side, cookie) -> [(type, pid, addresses)]
    pre = zero = 0
    with open(path, "rb") as f:
        for line in f:
            if PREEXISTING not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            ne = event.get("network_event") or {}
            if ne.get("preexisting") is not True:
                continue
            pre += 1
            cookie = ne.get("cookie")
            by_cookie[cookie] += 1
            if not cookie:
                zero += 1
            if ne.get("saddr") == "127.0.0.1" and ne.get("sport") in ports:
                side = "server"
            elif ne.get("daddr") == "127.0.0.1" and ne.get("dport") in ports:
                side = "client"
            else:
                continue
            ends[(side, cookie)].append(
                (ne.get("type"), (event.get("process") or {}).get("pid"),
                 ne.get("saddr"), ne.get("daddr")))
    want = {"server": "TcpConnectionAccept", "client": "TcpConnectionEstablish"}
    ok, bad = 0, []
    for (side, cookie), events in ends.items():
        kind, pid, saddr, daddr = events[0]
        right_source = ((daddr if side == "server" else saddr) or "").startswith("127.0.0.")
        if (len(events) == 1 and cookie and kind == want[side] and pid in pids and right_source):
            ok += 1
        else:
            bad.append((side, cookie, events))
    dups = {c: n for c, n in by_cookie.items() if n > 1}
    return {"pre_events": pre, "ends_ok": ok, "ends_bad": len(bad),
            "dup_cookies": len(dups), "zero_cookies": zero,
            "examples": bad[:3] + list(dups.items())[:3]}


def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--helper",
                   default=os.path.join(ROOT, "build", "tests", "bench", "netmon-hold-connections"))
    p.add_argument("--agent", default=os.path.join(ROOT, "build", "netmon-agent"))
    p.add_argument("--agent-arg", action="append", default=[],
                   help="extra agent flag (repeatable)")
    p.add_argument("--connections", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--modes", default="off,on,on-again",
                   help="comma-separated, of off, on, on-again (default all three)")
    p.add_argument("--sink", choices=("pipe", "file", "devnull"), default="pipe",
                   help="the agent's stdout: a pipe the runner reads (default), a file on "
                   "/dev/shm, or /dev/null")
    p.add_argument("--off-wait", type=float, default=3.0,
                   help="seconds the 'off' agent runs after 'netmon is running' (default 3)")
    p.add_argument("--hold-seconds", type=int, default=900,
                   help="the helper's bound on holding the connections")
    p.add_argument("--lock-timeout", type=float, default=1800)
    p.add_argument("--no-lock", action="store_true",
                   help=f"do not take {LOCK_PATH} (the caller holds it)")
    p.add_argument("--build-lock", action="store_true",
                   help="also hold /tmp/netmon-build.lock while measuring (no compiler running)")
    p.add_argument("--quick", action="store_true", help="2000 connections, 1 round, 'on' only")
    p.add_argument("--check", action="store_true")
    p.add_argument("--mechanism", choices=("iterator", "netlink"), default="iterator",
                   help="netlink: the agent takes the snapshot's fallback (sock_diag and a /proc "
                   "scan, NETMON_FAULT_SNAPSHOT=netlink), as on kernels without the iterator")
    p.add_argument("--keep", metavar="DIR", help="keep the agents' outputs in DIR")
    ARGS = p.parse_args()
    modes = [m for m in ARGS.modes.split(",") if m]
    if ARGS.quick:
        ARGS.connections, ARGS.rounds, modes, ARGS.no_lock = 2000, 1, ["on"], True
    if not (1 <= ARGS.rounds <= 10 and 1 <= ARGS.connections <= 500_000
            and modes and set(modes) <= set(MODES)):
        p.error("rounds 1..10, connections 1..500000, modes of off, on, on-again")
    if os.geteuid() != 0:
        cannot_run("needs root (the agent loads BPF programs)")
    for what, path in (("agent", ARGS.agent), ("helper", ARGS.helper)):
        if not os.access(path, os.X_OK):
            cannot_run(f"no {what} binary at {path}")
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        cannot_run("the kernel has no BTF (/sys/kernel/btf/vmlinux is missing)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    lock = None if ARGS.no_lock else take_lock(LOCK_PATH, ARGS.lock_timeout)
    build_lock = take_lock(BUILD_LOCK, ARGS.lock_timeout) if ARGS.build_lock else None
    before = ss_tcp_line()
    load = loadavg()
    rows, helpers = [], []
    if ARGS.keep:
        os.makedirs(ARGS.keep, exist_ok=True)
    tmp_ctx = tempfile.TemporaryDirectory(prefix="netmon-snapshot-", dir="/dev/shm")
    with tmp_ctx as tmp:
        tmp = ARGS.keep or tmp
        for rnd in range(1, ARGS.rounds + 1):
            order = list(modes)
            if rnd % 2 == 0 and "off" in order and "on" in order:  # alternate off and on
                i, j = order.index("off"), order.index("on")
                order[i], order[j] = order[j], order[i]
            with Helper(ARGS.connections) as helper:
                held = ss_tcp_line()
                helpers.append({"round": rnd, "open_s": helper.ready["open_s"],
                                "workers": len(helper.ready["workers"]),
                                "nofile": helper.ready["nofile"], "ss": held})
                for mode in order:
                    row = run_agent(mode, tmp, rnd, helper)
                    rows.append(row)
                    print(f"snapshot_runner: round {rnd} {mode}: snapshot "
                          f"{row.get('snapshot_ms', '-')} ms, peak RSS {row['rss_peak_mib']:.1f} "
                          f"MiB, ends ok {row.get('ends_ok', '-')}", file=sys.stderr)
    for held in (build_lock, lock):
        if held:
            held.close()

    n = ARGS.connections
    print(f"{ARGS.rounds} round(s) x {n} established loopback connections (2 x {n} sockets "
          f"held by netmon-hold-connections), agent stdout: "
          f"{SINKS[ARGS.sink]}\n")
    print(f"- before: load average {load}; ss -s: {before}"
          + ("; compilers kept off (build lock held)" if ARGS.build_lock else ""))
    for h in helpers:
        print(f"- round {h['round']}: helper opened them in {h['open_s']:.1f} s with "
              f"{h['workers']} worker process(es) (RLIMIT_NOFILE {h['nofile']}); ss -s: {h['ss']}")
    print()
    print("| round | mode | snapshot (log) ms | start -> running s | start -> last preexisting "
          "event s | reported (log) | helper ends once and right | wrong | cookie twice | "
          "cookie 0 | lost | output waits s | VmHWM MiB | peak RSS after running MiB | extra vs off MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    off = {r["round"]: r for r in rows if r["mode"] == "off"}
    for r in rows:
        base = off.get(r["round"])
        extra = (r["rss_peak_mib"] - base["rss_peak_mib"]
                 if base and r["mode"] != "off" else None)
        lost = sum(r["lost"].values()) if r.get("lost") is not None else None
        print(f"| {r['round']} | {r['mode']} | {r.get('snapshot_ms', '-')} "
              f"| {r['running_s']:.2f} | {fmt(r.get('last_event_s'), '.2f')} "
              f"| {r.get('reported', '-')} | {r.get('ends_ok', '-')} | {r.get('ends_bad', '-')} "
              f"| {r.get('dup_cookies', '-')} | {r.get('zero_cookies', '-')} | {fmt(lost, 'd')} "
              f"| {fmt(r.get('output_wait_s'), '.2f')} | {r['hwm_mib']:.1f} | {r['rss_peak_mib']:.1f} | {fmt(extra, '+.1f')} |")
    print()
    for mode in ("on", "on-again"):
        ms = [r["snapshot_ms"] for r in rows if r["mode"] == mode and "snapshot_ms" in r]
        extras = [r["rss_peak_mib"] - off[r["round"]]["rss_peak_mib"] for r in rows
                  if r["mode"] == mode and r["round"] in off]
        hwm = [r["hwm_mib"] - off[r["round"]]["hwm_mib"] for r in rows
               if r["mode"] == mode and r["round"] in off]
        if ms:
            print(f"- {mode}: snapshot {min(ms)}-{max(ms)} ms (median "
                  f"{statistics.median(ms):.0f}; goal < 2000)"
                  + (f"; extra peak RSS {min(extras):+.1f} to {max(extras):+.1f} MiB, VmHWM "
                     f"{min(hwm):+.1f} to {max(hwm):+.1f} MiB against the same round's off "
                     f"(goal < 30)" if extras else ""))
    for r in rows:
        if r.get("examples"):
            print(f"- round {r['round']} {r['mode']}: examples {r['examples']}")
        if r.get("lost") and any(r["lost"].values()):
            print(f"- round {r['round']} {r['mode']} lost: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(r["lost"].items()) if v))

    if ARGS.check:
        bad = []
        for r in rows:
            where = f"round {r['round']} {r['mode']}"
            if r.get("exit") != 0:
                bad.append(f"{where}: the agent exited with {r.get('exit')}")
            if r.get("lost") is None:
                bad.append(f"{where}: no netmon_events_lost_total in /metrics")
            elif sum(r["lost"].values()):
                bad.append(f"{where}: lost {r['lost']}")
            if ARGS.sink == "devnull":
                continue
            if r["mode"] == "off":
                if r["pre_events"]:
                    bad.append(f"{where}: {r['pre_events']} preexisting events with the "
                               "snapshot off")
                continue
            if (r["ends_ok"] != 2 * n or r["ends_bad"] or r["dup_cookies"]
                    or r["zero_cookies"]):
                bad.append(f"{where}: of the helper's {2 * n} ends {r['ends_ok']} reported once "
                           f"and right, {r['ends_bad']} not; cookies reported twice "
                           f"{r['dup_cookies']}, cookie 0 {r['zero_cookies']}")
            if r["pre_events"] != r.get("reported"):
                bad.append(f"{where}: {r['pre_events']} preexisting events written, the log "
                           f"says {r.get('reported')} reported")
        if bad:
            print("snapshot_runner: CHECK FAILED:\n  " + "\n  ".join(bad), file=sys.stderr)
            return 1
        print("snapshot_runner: check passed: each of the helper's connection ends reported "
              "exactly once, nothing lost", file=sys.stderr)
    return 0


ARGS = None

if __name__ == "__main__":
    sys.exit(main())
