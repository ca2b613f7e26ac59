#!/usr/bin/python3
"""A/B benchmark of netmon (and libbpf-tools tcplife) under a loopback connection storm.

Scenarios (issue #23): by default two, run in every round one after the other:
  burst: 50 000 connections or 10 s, the storm with a container's capabilities, stdout to a file
    on /dev/shm (a tmpfs, so the disk's write-back is not measured);
  sustained: 200 000 connections or 20 s, root's capabilities (~3.7 KiB events), stdout to a
    file on the disk (/var/tmp) and, in a second run, to a pipe read by netmon-log-shipper, which
    writes each line to a file there in the CRI log format, as a container runtime's shim does.
--connections, --seconds, --root-caps, --outputs (or --quick, --dnat) instead make one "custom"
scenario of those flags (defaults 50000, 10 s, a container's capabilities, a file).

Each round of a scenario runs netmon-storm with: nothing attached (baseline), netmon (the agent)
to each output, and tcplife when installed (stdout to a file). Prints one Markdown table per
scenario, a row per run: throughput, the ratio to the same round's baseline (paired: same
scenario, same round), the observer's CPU seconds per 100k connections (/proc/PID/stat
utime+stime before the storm and after its events were written), peak RSS (VmHWM), events
expected / written / counted lost by stage, duplicates, the agent's reader pauses (output waits,
their ms) and sheds (stop summary), and the BPF run time per connection (kernel.bpf_stats_enabled
set to 1 for the run and restored; run_time_ns of the observer's programs from /proc/PID/fdinfo).
Below it: per run the agent's write syscalls and bytes per write (/proc/PID/io), its context
switches per event, the log shipper's CPU, the agent's peak RssAnon (sampled every 50 ms: its own
memory, apart from the mapped files and the ring buffer's pages in VmHWM), the BPF time per
program; the header says how much memory the kernel reported free to a hypervisor during the
run; for tcplife its lines per connection end, the runs the kernel skipped (recursion_misses) and the peak of TCP sockets in
use during the storm (tcplife's maps hold 10240 sockets); the sustained scenario's netmon runs
against issue #23's goals.

--cpu-cgroups SHARES: the storm, the observer and the log shipper each in a CPU cgroup of its own
(CpuCgroups), instead of every process in the runner's. --shim-cgroup: a node's two top-level
groups instead, the pods' (the storm and the observer, sharing it per thread) and the system
services' (the log shipper, as containerd's shims run in containerd's service cgroup).

--quick: 2000 connections, one round, no tcplife, no BPF statistics (for CI). --check: exit 1 unless netmon wrote
every storm event at most once (no duplicate (type, cookie)), never more than 4 x connections,
and every missing event is covered by what the agent counted lost (netmon_events_lost_total,
all stages, from /metrics just before SIGTERM, and the stop summary): no silent loss. A kernel
program run skipped for recursion loses at most one event, so that bound is sound.
--check --strict: exact, connection by connection: every connection the storm made and served
has a complete client end (one Establish and one Close with its cookie) and a complete server
end (one Accept and one Close), the two ends' addresses and ports match, nothing else is written
on the storm's ports, nothing is written twice, and every loss counter is 0.
--dnat: the storm's clients dial a virtual IP (10.96.0.10:80) that a kube-proxy-like nftables
ruleset (nftables mode's shape: a verdict map of service IPs, a service chain that picks one of the
listeners with numgen, one endpoint chain per listener with its DNAT) translates to the storm's
listeners on 127.0.0.1. Each run (baseline and netmon alike) gets a network namespace of its own
that the runner creates and deletes (with its ruleset) even on failure; the storm runs in it and
the agent too (nsenter --net, so that its conntrack subscription is that namespace's, as the node's
is for a pod). Every storm event should then carry its translation (the client's Establish and
Close peer.backend, the server's Accept and Close peer.original); per round the runner reports
how many do, and the agent's netmon_nat_lookups_total{result} and netmon_nat_messages_lost_total.
With --check: every storm event without its translation must be counted lost by the agent; with
--strict: every storm event translated and nothing lost. No warm-up (each namespace starts with
no TIME_WAIT socket), no tcplife. IPv4 only. --without-conntrack adds, each round, the agent
with --conntrack=false (mode netmon-noct): what the translation costs apart from the rest.
Exit 77 when it cannot run here (not root, no agent, no BTF), except under CI=true: then 1.

Stdlib only. All traffic is on loopback (in --dnat, a namespace's); every wait is bounded.
"""

import argparse
import collections
import contextlib
import fcntl
import itertools
import json
import os
import re
import signal
import socket
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
CLK_TCK = os.sysconf("SC_CLK_TCK")
AGENT_MAPS = {"events", "sockets", "counters", "scratch", "exec_scratch", "path_scratch"}
STARTUP_TIMEOUT = 20.0
SETTLE_TIMEOUT = 30.0  # seconds for the observer's output to stop growing after the storm
SETTLE_QUIET = 1.0  # ... "stopped growing" = unchanged for this long
STOP_TIMEOUT = 15.0
LOST_RE = re.compile(r"lost: (.*?)(?:;|$)")
URL_RE = re.compile(r"serving /metrics, /healthz and /readyz on (http://\S+)")
METRIC_LOST_RE = re.compile(r'^netmon_events_lost_total\{stage="([^"]+)"\}\s+(\S+)', re.M)
METRIC_NAT_RE = re.compile(r'^netmon_nat_lookups_total\{result="([^"]+)"\}\s+(\S+)', re.M)
METRIC_NAT_LOST_RE = re.compile(r'^netmon_nat_messages_lost_total\s+(\S+)', re.M)
# /proc/net as the storm's network namespace shows it: /proc/PID/net of a process in it (--dnat).
PROC_NET = "/proc/net"
VIP, VIP_PORT = "10.96.0.10", 80
DNAT_PORT_BASE = 21000  # the listeners' ports in a --dnat namespace (a fresh one: all free)
NETNS_COUNTER = itertools.count(1)
# The agent's modes and their extra flags: netmon-noct (--without-conntrack) is the agent with its
# conntrack reading off, to tell the cost of the translation from the rest.
AGENT_MODES = {"netmon": [], "netmon-noct": ["--conntrack=false"]}


def metrics_text(err_path, netns=None):
    """The agent's /metrics (the address it logged), fetched from inside `netns` when given (the
    agent listens on that namespace's loopback), or None."""
    with open(err_path, encoding="utf-8", errors="replace") as f:
        m = URL_RE.search(f.read())
    if not m:
        return None
    url = m.group(1) + "/metrics"
    if netns is None:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.read().decode("utf-8", errors="replace")
        except OSError:
            return None
    fetch = ("import sys, urllib.request\n"
             "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read()"
             ".decode('utf-8', 'replace'))\n")
    try:
        r = subprocess.run([*netns.enter(), sys.executable, "-c", fetch, url],
                           capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout if r.returncode == 0 else None


def lost_from_metrics(text):
    """{stage: count} of netmon_events_lost_total in a /metrics text, or None. Unlike the stop
    summary, it includes `recursion` (kernel program runs skipped)."""
    if text is None:
        return None
    return {stage: int(float(v)) for stage, v in METRIC_LOST_RE.findall(text)}


def nat_from_metrics(text):
    """{result: count} of netmon_nat_lookups_total plus "messages_lost"
    (netmon_nat_messages_lost_total), or None when the agent has no such metric."""
    if text is None:
        return None
    nat = {result: int(float(v)) for result, v in METRIC_NAT_RE.findall(text)}
    if not nat:
        return None
    m = METRIC_NAT_LOST_RE.search(text)
    nat["messages_lost"] = int(float(m.group(1))) if m else None
    return nat


def nft_ruleset(endpoints):
    """A kube-proxy nftables-mode-like ruleset (table netmon-storm-dnat): nat OUTPUT jumps to
    `services`, whose verdict map sends VIP:VIP_PORT/tcp to the service chain, which picks an
    endpoint chain with numgen random; each endpoint chain DNATs to 127.0.0.1:<listener port>."""
    picks = ", ".join(f"{i} : goto endpoint-{i}" for i in range(len(endpoints)))
    chains = "".join(f"  chain endpoint-{i} {{\n    meta l4proto tcp dnat to 127.0.0.1:{port}\n"
                     f"  }}\n" for i, port in enumerate(endpoints))
    return ("table ip netmon-storm-dnat {\n"
            "  map service-ips {\n"
            "    type ipv4_addr . inet_proto . inet_service : verdict\n"
            f"    elements = {{ {VIP} . tcp . {VIP_PORT} : goto service-storm }}\n"
            "  }\n"
            "  chain nat-output {\n"
            "    type nat hook output priority -100; policy accept;\n"
            "    jump services\n"
            "  }\n"
            "  chain services {\n"
            "    ip daddr . meta l4proto . th dport vmap @service-ips\n"
            "  }\n"
            "  chain service-storm {\n"
            f"    numgen random mod {len(endpoints)} vmap {{ {picks} }}\n"
            "  }\n"
            f"{chains}"
            "}\n")


class DnatNamespace:
    """A network namespace for one --dnat run: lo up, 10.96.0.0/16 routed to lo, the DNAT ruleset
    to the listener ports DNAT_PORT_BASE.. and a `sleep` that holds it, whose /proc/PID/net is the
    namespace's view for the runner. Leaving the context kills the sleep and deletes the
    namespace (its ruleset goes with it), also when entering failed half-way."""

    def __init__(self, listeners):
        self.name = f"netmon-storm-dnat-{os.getpid()}-{next(NETNS_COUNTER)}"
        self.endpoints = list(range(DNAT_PORT_BASE, DNAT_PORT_BASE + listeners))
        self.anchor = None
        self.created = False

    def enter(self):
        return ["nsenter", f"--net=/run/netns/{self.name}"]

    def __enter__(self):
        try:
            subprocess.run(["ip", "netns", "add", self.name], check=True, timeout=10,
                           capture_output=True)
            self.created = True
            for cmd in (["link", "set", "lo", "up"], ["route", "add", "10.96.0.0/16", "dev", "lo"]):
                subprocess.run(["ip", "-n", self.name, *cmd], check=True, timeout=10,
                               capture_output=True)
            subprocess.run([*self.enter(), "nft", "-f", "-"], input=nft_ruleset(self.endpoints),
                           text=True, check=True, timeout=10, capture_output=True)
            # The sleep outlives the run (bounded: the run's own bound and its drains), and is
            # in the namespace once its /proc/PID/ns/net is the namespace's (nsenter execs it
            # after setns).
            self.anchor = subprocess.Popen(
                [*self.enter(), "sleep", str(int(SCENARIO.seconds) + 900)], stdin=subprocess.DEVNULL)
            want = os.stat(f"/run/netns/{self.name}").st_ino
            deadline = time.monotonic() + 5
            while os.stat(f"/proc/{self.anchor.pid}/ns/net").st_ino != want:
                if time.monotonic() > deadline or self.anchor.poll() is not None:
                    raise RuntimeError("the namespace's anchor process did not enter it")
                time.sleep(0.01)
        except (OSError, subprocess.SubprocessError, RuntimeError) as e:
            self.__exit__(None, None, None)
            detail = getattr(e, "stderr", "") or ""
            raise RuntimeError(f"cannot build the DNAT namespace: {e} {detail}".strip()) from e
        return self

    def proc_net(self):
        return f"/proc/{self.anchor.pid}/net"

    def __exit__(self, *exc):
        if self.anchor is not None and self.anchor.poll() is None:
            self.anchor.kill()
            self.anchor.wait(5)
        if self.created:
            subprocess.run(["ip", "netns", "del", self.name], timeout=10, capture_output=True)
            self.created = False
        return False


def cannot_run(reason):
    if IN_CI:
        print(f"storm_runner: CI=true, and this cannot run: {reason}", file=sys.stderr)
        sys.exit(1)
    print(f"storm_runner: SKIP: {reason}", file=sys.stderr)
    sys.exit(SKIP)


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    except (OSError, IndexError, ValueError):
        return None


def vm_hwm_mib(pid):
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_parts_mib(pid):
    """(RssAnon, RssFile + RssShmem) of `pid` in MiB, or None. The second part is mapped files
    and kernel pages: shared libraries, and the BPF ring buffer, whose data pages libbpf maps
    twice (so that a record can wrap), each counted in RSS although the kernel holds them once."""
    parts = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in ("RssAnon", "RssFile", "RssShmem"):
                    parts[key] = int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    if "RssAnon" not in parts:
        return None
    return parts["RssAnon"], parts.get("RssFile", 0) + parts.get("RssShmem", 0)


class RssSampler:
    """The peak of RssAnon (the agent's own memory) and the RSS of mapped files and kernel pages
    at that moment, sampled every 50 ms while the context runs (VmHWM has the peak of their
    sum only)."""

    def __init__(self, pid):
        self.pid, self.peak = pid, None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while True:
            parts = rss_parts_mib(self.pid)
            if parts and (self.peak is None or parts[0] > self.peak[0]):
                self.peak = parts
            if self.done.wait(0.05):
                return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        return False


PAGE_REPORTING = "/sys/module/page_reporting/parameters"


def page_reporting():
    """(order, KiB reported so far) of the kernel's free page reporting to a hypervisor, or None
    where the kernel has none or does not say. The reported KiB is a counter some kernels add."""
    try:
        with open(os.path.join(PAGE_REPORTING, "page_reporting_order"), encoding="ascii") as f:
            order = int(f.read())
    except (OSError, ValueError):
        return None
    try:
        with open(os.path.join(PAGE_REPORTING, "reported_kib"), encoding="ascii") as f:
            return order, int(f.read())
    except (OSError, ValueError):
        return order, None


def page_reporting_text(before):
    """The run's header on free page reporting: a VM whose balloon reports free pages has the
    host unmap them, and each is faulted in again at its next first touch, which makes writing a
    file several times costlier (docs/performance.md, session 16)."""
    now = page_reporting()
    if before is None or now is None:
        return "the kernel has no free page reporting"
    if before[1] is None or now[1] is None:  # the stock kernel counts nothing
        return f"free page reporting built in (order {now[0]}; whether a balloon uses it, unknown)"
    return (f"free page reporting: {(now[1] - before[1]) / 1048576:.1f} GiB reported to the "
            f"hypervisor during the run (order {now[0]})")


def reset_hwm(pid):
    """Resets the peak RSS (VmHWM) of `pid` to its current RSS (clear_refs 5, Linux 4.0): the peak
    measured afterwards is the storm's, not the start-up's (loading BPF parses the kernel's BTF,
    a transient of several MiB that the agent hands back before it runs)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def fdinfo_texts(pid):
    """The text of each of process `pid`'s /proc/PID/fdinfo entries that can be read (a list; None
    when the process is gone)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        return None
    texts = []
    for fd in fds:
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii", errors="replace") as f:
                texts.append(f.read())
        except OSError:
            continue
    return texts


def map_ids_of(pid):
    ids = set()
    for text in fdinfo_texts(pid) or []:
        m = re.search(r"^map_id:\s*(\d+)", text, re.M)
        if m:
            ids.add(int(m.group(1)))
    return ids


def map_memory(pid, bpftool):
    """{name: bytes_memlock} of the BPF maps process `pid` holds open."""
    ids = map_ids_of(pid)
    if not ids or not bpftool:
        return {}
    try:
        out = subprocess.run([bpftool, "-j", "map", "show"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
        maps = json.loads(out or "[]")
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}
    result = {}
    for m in maps:
        if m.get("id") in ids:
            name = m.get("name", f"id{m.get('id')}")
            result[name] = result.get(name, 0) + int(m.get("bytes_memlock", 0))
    return result


def time_wait_count():
    """TCP sockets in TIME_WAIT on this host, or in the --dnat namespace (sockstat "tw")."""
    try:
        with open(f"{PROC_NET}/sockstat", encoding="ascii") as f:
            m = re.search(r"^TCP:.*\btw (\d+)", f.read(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def tcp_inuse():
    """TCP sockets in use on this host (/proc/net/sockstat "inuse": every socket but TIME_WAIT
    ones, listeners included)."""
    try:
        with open(f"{PROC_NET}/sockstat", encoding="ascii") as f:
            m = re.search(r"^TCP: inuse (\d+)", f.read(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def max_tw_buckets():
    try:
        with open("/proc/sys/net/ipv4/tcp_max_tw_buckets", encoding="ascii") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def warm_up():
    """Fills the TIME_WAIT table to its cap (net.ipv4.tcp_max_tw_buckets) with storm runs, at
    most 6, so that every measured run meets the same TIME_WAIT population: connect() slows
    down as TIME_WAIT grows, so a run on an empty table would not compare with one on a full
    table."""
    cap = max_tw_buckets()
    for _ in range(6):
        tw = time_wait_count()
        if cap is None or tw is None or tw >= 0.9 * cap:
            break
        s = run_storm()
        print(f"storm_runner: warm-up: {s['connections']} connections, {s['conn_per_s']:.0f}/s, "
              f"TIME_WAIT {time_wait_count()} of {cap}", file=sys.stderr)


def prog_stats(pid):
    """{prog_id: (run_time_ns, run_cnt)} of the BPF programs process `pid` holds open
    (/proc/PID/fdinfo; the kernel counts them while kernel.bpf_stats_enabled is 1)."""
    stats = {}
    for text in fdinfo_texts(pid) or []:
        m = re.search(r"^prog_id:\s*(\d+)", text, re.M)
        t = re.search(r"^run_time_ns:\s*(\d+)", text, re.M)
        c = re.search(r"^run_cnt:\s*(\d+)", text, re.M)
        if m and t and c:
            stats[int(m.group(1))] = (int(t.group(1)), int(c.group(1)))
    return stats


def prog_names(ids, bpftool):
    """{prog_id: name} of loaded programs, from bpftool (names are not in fdinfo): to be read
    while their process holds them."""
    if not ids or not bpftool:
        return {}
    try:
        out = subprocess.run([bpftool, "-j", "prog", "show"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
        return {p["id"]: p.get("name", f"id{p['id']}") for p in json.loads(out or "[]")
                if p.get("id") in ids}
    except (OSError, subprocess.SubprocessError, ValueError, TypeError, KeyError):
        return {}


def bpf_stats_delta(before, after):
    """{prog_id: (ns, runs)} spent between two prog_stats() readings."""
    return {i: (t - before.get(i, (0, 0))[0], c - before.get(i, (0, 0))[1])
            for i, (t, c) in after.items()}


def io_of(pid):
    """/proc/PID/io as {"syscw": write-like syscalls, "wchar": bytes written, ...}, all threads."""
    try:
        with open(f"/proc/{pid}/io", encoding="ascii") as f:
            return {k: int(v) for k, v in (line.split(":") for line in f if ":" in line)}
    except (OSError, ValueError):
        return None


def thread_cpu(pid):
    """{tid: (user s, system s)} of `pid`'s threads (/proc/PID/task/TID/stat)."""
    out = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[int(t)] = (int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK)
        except (OSError, IndexError, ValueError):
            continue
    return out


def context_switches(pid):
    """Voluntary + involuntary context switches of all of `pid`'s threads."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total


def fs_type(path):
    """The file system type of the mount holding `path` (/proc/self/mounts, longest prefix)."""
    path = os.path.realpath(path)
    best, kind = "", "?"
    try:
        with open("/proc/self/mounts", encoding="ascii", errors="replace") as f:
            for line in f:
                cols = line.split()
                if len(cols) < 3:
                    continue
                mnt = cols[1]
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                    best, kind = mnt, cols[2]
    except OSError:
        pass
    return kind


def lines_of(path, cri=False):
    """The lines of an output file; with `cri` (the log shipper's CRI format, "<time> stdout F|P
    <text>"), the texts, a line split in partial (P) records joined again."""
    with open(path, encoding="utf-8", errors="replace") as f:
        if not cri:
            yield from f
            return
        partial = []
        for record in f:
            parts = record.rstrip("\n").split(" ", 3)
            if len(parts) < 4 or parts[2] not in ("F", "P"):
                continue
            partial.append(parts[3])
            if parts[2] == "F":
                yield "".join(partial)
                partial = []


def free_port_base(count):
    """A base port below the ephemeral range with `count` consecutive free loopback ports."""
    for base in range(21000, 30000, 97):
        socks = []
        try:
            for p in range(base, base + count):
                s = socket.socket(socket.AF_INET6 if ARGS.ipv6 else socket.AF_INET)
                socks.append(s)
                s.bind(("::1" if ARGS.ipv6 else "127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free block of listener ports")


def run_storm(netns=None):
    base = DNAT_PORT_BASE if netns else free_port_base(ARGS.listeners)
    sc = SCENARIO
    cmd = [*(netns.enter() if netns else []), ARGS.storm, "--workers", str(ARGS.workers),
           "--connections", str(sc.connections), "--seconds", str(sc.seconds),
           "--listeners", str(ARGS.listeners), "--port-base", str(base),
           "--caps", "inherit" if sc.root_caps else "container"]
    if ARGS.rate:
        cmd += ["--rate", f"{ARGS.rate:g}"]
    if ARGS.ipv6:
        cmd.append("--ipv6")
    if ARGS.exchange:
        cmd.append("--exchange")
    if netns:
        cmd += ["--connect", f"{VIP}:{VIP_PORT}"]
    peak = [0]
    done = threading.Event()

    def sample():  # every 20 ms, a few microseconds each
        while not done.wait(0.02):
            peak[0] = max(peak[0], tcp_inuse() or 0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=sc.seconds + 60,
                           preexec_fn=CGROUPS.joiner("storm") if CGROUPS else None)
    finally:
        done.set()
        sampler.join()
    if r.returncode != 0:
        raise RuntimeError(f"netmon-storm failed ({r.returncode}): {r.stderr.strip()}")
    storm = json.loads(r.stdout.strip().splitlines()[-1])
    storm["peak_inuse"] = peak[0]
    # Paced: connection n starts n / rate s in, so the storm cannot beat its rate (one period of
    # slack for the clock at the start and the end).
    if ARGS.rate and storm["conn_per_s"] > ARGS.rate * 1.02 + 1:
        raise RuntimeError(f"netmon-storm ran at {storm['conn_per_s']:.0f} connections a second, "
                           f"faster than --rate {ARGS.rate:g}")
    return storm


def sockets_not_closed(lo, hi):
    """TCP sockets with a port in [lo, hi] at either end that have not made their CLOSE
    transition yet (/proc/net/tcp, tcp6): all but listeners and TIME_WAIT ones."""
    found = 0
    for path in (f"{PROC_NET}/tcp", f"{PROC_NET}/tcp6"):
        try:
            with open(path, encoding="ascii") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            ports = (int(cols[1].rsplit(":", 1)[1], 16), int(cols[2].rsplit(":", 1)[1], 16))
            if any(lo <= p <= hi for p in ports) and cols[3] not in ("0A", "06"):
                found += 1
    return found


def wait_closed(lo, hi):
    """Waits (bounded) until the kernel has made the CLOSE transition of every storm socket,
    so that every event of the storm is in the observer's ring buffer before it is stopped."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while sockets_not_closed(lo, hi) and time.monotonic() < deadline:
        time.sleep(0.05)


def wait_quiet(path, proc):
    """Waits (bounded) until the file at `path` stops growing."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline and proc.poll() is None:
        size = os.path.getsize(path)
        if size != last:
            last, since = size, time.monotonic()
        elif time.monotonic() - since >= SETTLE_QUIET:
            return
        time.sleep(0.1)


def wait_for_text(path, text, proc, timeout=STARTUP_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path, encoding="utf-8", errors="replace") as f:
            if text in f.read():
                return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def wait_attached(proc, timeout=STARTUP_TIMEOUT):
    """Waits until `proc` holds a BPF link (/proc/PID/fdinfo link_id), then 0.5 s more."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any(re.search(r"^link_id:", text, re.M) for text in fdinfo_texts(proc.pid) or []):
            time.sleep(0.5)
            return proc.poll() is None
        time.sleep(0.05)
    return False


def stop(proc, sig=signal.SIGTERM):
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise RuntimeError("observer did not exit within the stop timeout")


OPEN_OF = {"client": "TcpConnectionEstablish", "server": "TcpConnectionAccept"}


def translation_of(ne, side):
    """For --dnat: ("ok", addresses) when a storm event carries its translation, the client's
    end peer.backend (the connection's addresses then use the backend's, so that they match the
    server's end: a wrong backend leaves both ends unmatched) and the server's end
    peer.original naming the client and the VIP it dialed; ("wrong", ...) when the server's
    original says anything else; ("none", ...) without one."""
    peer = ne.get("peer") or {}
    saddr, sport = ne.get("saddr"), ne.get("sport") or 0
    daddr, dport = ne.get("daddr"), ne.get("dport") or 0
    if side == "client":
        backend = peer.get("backend")
        if not backend:
            return "none", (saddr, sport, daddr, dport)
        return "ok", (saddr, sport, backend.get("addr"), backend.get("port"))
    original = peer.get("original")
    if not original:
        return "none", (saddr, sport, daddr, dport)
    right = (original.get("addr") == daddr and original.get("port") == dport
             and original.get("dialed_addr") == VIP and original.get("dialed_port") == VIP_PORT)
    return ("ok" if right else "wrong"), (saddr, sport, daddr, dport)


def count_netmon(path, lo, hi, dnat=False, cri=False):
    """The storm's events in netmon's output (events with sport or dport in [lo, hi], the
    storm's listener ports; with `dnat`, the client's ends are those that dialed VIP:VIP_PORT)
    checked connection by connection. Returns a dict:
    written: events; dups: second events with the same (type, cookie);
    client, server: connection ends complete and consistent: one open event (Establish for the
      client's end, which has the listener port as dport; Accept for the server's, sport) and
      one Close, with that end's cookie (not 0) and addresses;
    incomplete: ends with anything else (an event missing, repeated or of the wrong kind);
    unmatched: complete ends whose other end is not complete (by the connection's addresses
      and ports; the same 4-tuple may serve several connections over a storm);
    examples: a few incomplete or unmatched ends;
    with `dnat` also translated: {"client"|"server": {"ok"|"wrong"|"none": events}}
      (translation_of)."""
    seen = collections.Counter()
    translated = {"client": collections.Counter(), "server": collections.Counter()}
    ends = collections.defaultdict(list)  # (side, cookie) -> [(type, addresses)]
    written = 0
    for line in lines_of(path, cri):
        try:
            ne = json.loads(line).get("network_event") or {}
        except ValueError:
            continue
        sport, dport = ne.get("sport") or 0, ne.get("dport") or 0
        if lo <= sport <= hi:
            side = "server"
        elif (dnat and ne.get("daddr") == VIP and dport == VIP_PORT) or (
                not dnat and lo <= dport <= hi):
            side = "client"
        else:
            continue
        written += 1
        seen[(ne.get("type"), ne.get("cookie"))] += 1
        addresses = (ne.get("saddr"), sport, ne.get("daddr"), dport)
        if dnat:
            verdict, addresses = translation_of(ne, side)
            translated[side][verdict] += 1
        ends[(side, ne.get("cookie"))].append((ne.get("type"), addresses))
    dups = {k: n for k, n in seen.items() if n > 1}
    if dups:
        print(f"storm_runner: duplicate (type, cookie) examples: {list(dups.items())[:5]}",
              file=sys.stderr)
    complete = {"client": collections.Counter(), "server": collections.Counter()}
    bad = []
    for (side, cookie), events in ends.items():
        kinds = sorted(kind for kind, _ in events)
        addresses = {a for _, a in events}
        if (not cookie or kinds != sorted([OPEN_OF[side], "TcpConnectionClose"])
                or len(addresses) != 1):
            bad.append((side, cookie, events))
            continue
        saddr, sport, daddr, dport = addresses.pop()
        # The connection as (client address, client port, server address, server port).
        conn = (saddr, sport, daddr, dport) if side == "client" else (daddr, dport, saddr, sport)
        complete[side][conn] += 1
    unmatched = ((complete["client"] - complete["server"])
                 + (complete["server"] - complete["client"]))
    examples = bad[:3] + list(unmatched.items())[:3]
    if examples:
        print(f"storm_runner: incomplete or unmatched connection examples: {examples}",
              file=sys.stderr)
    return {"written": written, "dups": sum(n - 1 for n in dups.values()),
            "client": sum(complete["client"].values()),
            "server": sum(complete["server"].values()),
            "incomplete": len(bad), "unmatched": sum(unmatched.values()),
            "translated": {k: dict(v) for k, v in translated.items()} if dnat else None}


def count_tcplife(path, lo, hi):
    """tcplife's lines (one per closed socket; columns PID COMM LADDR LPORT RADDR RPORT TX_KB RX_KB
    MS) for the storm: {"written", "client", "server"}. A server end has a listener port in [lo, hi]
    as LPORT, a client end as RPORT. The columns are taken from the right: COMM (the task's name,
    printed with %-16s) may contain spaces."""
    counts = {"written": 0, "client": 0, "server": 0}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            cols = line.split()
            if len(cols) < 9 or not (cols[-6].isdigit() and cols[-4].isdigit()):
                continue  # the header, or a partial line
            lport, rport = int(cols[-6]), int(cols[-4])
            if lo <= lport <= hi:
                counts["server"] += 1
            elif lo <= rport <= hi:
                counts["client"] += 1
            else:
                continue
            counts["written"] += 1
    return counts


def prog_recursion_misses(pid, bpftool):
    """Sum of `recursion_misses` of the BPF programs process `pid` holds: runs the kernel skipped
    because a program of the same kind was already running on that CPU (a tracepoint hit in a
    softirq while the program ran in process context). tcplife does not see them; its sockets are
    missing silently. None without bpftool."""
    if not bpftool:
        return None
    total = 0
    seen = set()
    texts = fdinfo_texts(pid)
    if texts is None:
        return None
    for text in texts:
        m = re.search(r"^prog_id:\s*(\d+)", text, re.M)
        if not m or m.group(1) in seen:
            continue
        seen.add(m.group(1))
        try:
            out = subprocess.run([bpftool, "-j", "prog", "show", "id", m.group(1)],
                                 capture_output=True, text=True, timeout=10, check=True).stdout
            total += int(json.loads(out or "{}").get("recursion_misses", 0))
        except (OSError, subprocess.SubprocessError, ValueError):
            return None
    return total


def observe(mode, output, tmp, rnd):
    """Runs one storm with `mode` attached, its stdout to `output`; returns a result row (dict).
    With --dnat in a namespace of its own (DnatNamespace), deleted when the run ends, also on
    failure."""
    global PROC_NET
    if not ARGS.dnat:
        return observe_in(mode, output, tmp, rnd, None)
    with DnatNamespace(ARGS.listeners) as netns:
        PROC_NET = netns.proc_net()
        try:
            return observe_in(mode, output, tmp, rnd, netns)
        finally:
            PROC_NET = "/proc/net"


def is_pipe(output):
    return output.split(":", 1)[0] == "pipe"


def pipe_bytes(output):
    """N of an output "pipe:N" (the pipe's capacity set with F_SETPIPE_SZ), else None."""
    return int(output.split(":", 1)[1]) if is_pipe(output) and ":" in output else None


def observe_in(mode, output, tmp, rnd, netns):
    """One storm with `mode` attached, its stdout to `output`: "file" (a file in `tmp`) or "pipe"
    (a pipe read by netmon-log-shipper, which writes the lines to a file in `tmp` in the CRI
    log format, as a container runtime's shim does; "pipe:N": a pipe of N bytes instead of the
    kernel's 64 KiB). Returns a result row (dict)."""
    name = f"{SCENARIO.name}-{mode}-{output}-{rnd}"
    out_path = os.path.join(tmp, f"{name}.out")
    err_path = os.path.join(tmp, f"{name}.err")
    ship_err_path = os.path.join(tmp, f"{name}.shipper.err")
    if mode == "baseline":
        tw = time_wait_count()
        return {"mode": mode, "output": "-", "storm": run_storm(netns), "tw": tw}
    if mode in AGENT_MODES:
        cmd = [*(netns.enter() if netns else []), ARGS.agent, "--metrics-address",
               "127.0.0.1:0", *ARGS.agent_arg, *AGENT_MODES[mode]]
        ready = "netmon is running"
    else:
        cmd = [ARGS.tcplife]
        ready = None
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETMON_")}
    joiner = CGROUPS.joiner("observer") if CGROUPS else None
    shipper = None
    with open(err_path, "wb") as err:
        if is_pipe(output):
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=err, env=env, preexec_fn=joiner)
            try:
                if pipe_bytes(output):  # before the agent's first event: it is still starting
                    fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, pipe_bytes(output))
                with open(ship_err_path, "wb") as ship_err:
                    shipper = subprocess.Popen(
                        [ARGS.shipper, out_path], stdin=proc.stdout, stdout=subprocess.DEVNULL,
                        stderr=ship_err, preexec_fn=CGROUPS.joiner("shim") if CGROUPS else None)
            except OSError:
                proc.kill()
                proc.wait(5)
                raise
            finally:
                proc.stdout.close()  # the shipper alone holds the read end
        else:
            with open(out_path, "wb") as out:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                        env=env, preexec_fn=joiner)
    try:
        if ready:
            ok = wait_for_text(err_path, ready, proc)
        else:  # tcplife's stdout is block-buffered in a file: wait for its BPF link instead
            ok = wait_attached(proc)
        if not ok:
            with open(err_path, encoding="utf-8", errors="replace") as f:
                raise RuntimeError(f"{mode} did not start:\n{f.read()}")
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while (shipper and not os.path.exists(out_path) and shipper.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.01)  # the shipper opens its file first thing
        if shipper and not os.path.exists(out_path):
            raise RuntimeError(f"netmon-log-shipper did not start ({shipper.poll()})")
        maps = map_memory(proc.pid, ARGS.bpftool) if mode in AGENT_MODES else {}
        startup_rss = vm_hwm_mib(proc.pid)
        if not reset_hwm(proc.pid):
            startup_rss = None  # the peak below then includes the start-up
        cpu0 = cpu_seconds(proc.pid)
        ship_cpu0 = cpu_seconds(shipper.pid) if shipper else None
        io0, ctx0, bpf0 = io_of(proc.pid), context_switches(proc.pid), prog_stats(proc.pid)
        threads0 = thread_cpu(proc.pid)
        tw = time_wait_count()
        with RssSampler(proc.pid) as rss_sampler:
            storm = run_storm(netns)
            wait_closed(*storm["ports"])
            wait_quiet(out_path, proc)
        cpu1 = cpu_seconds(proc.pid)
        ship_cpu1 = cpu_seconds(shipper.pid) if shipper else None
        io1, ctx1, bpf1 = io_of(proc.pid), context_switches(proc.pid), prog_stats(proc.pid)
        threads1 = thread_cpu(proc.pid)
        rss = vm_hwm_mib(proc.pid)
        text = metrics_text(err_path, netns) if mode in AGENT_MODES else None
        metrics_lost = lost_from_metrics(text)
        nat = nat_from_metrics(text)
        skipped = prog_recursion_misses(proc.pid, ARGS.bpftool) if mode == "tcplife" else None
        names = prog_names(set(bpf1), ARGS.bpftool) if BPF_STATS_ON else {}
    finally:
        # tcplife's stdout is block-buffered (4 KiB) in a file: SIGINT ends its poll loop and
        # main() returns, which flushes it (the rest of its perf buffer, read every 100 ms, is
        # not drained then: wait_closed and wait_quiet above came first).
        try:
            code = stop(proc, signal.SIGTERM if mode in AGENT_MODES else signal.SIGINT)
        finally:
            if shipper:  # the agent gone, the pipe ends: the shipper writes the rest and exits
                try:
                    shipper.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    shipper.kill()
                    shipper.wait(5)
    with open(err_path, encoding="utf-8", errors="replace") as f:
        stderr = f.read()
    lo, hi = storm["ports"]
    row = {"mode": mode, "output": output, "storm": storm, "rss": rss,
           "startup_rss": startup_rss, "maps": maps, "exit": code, "tw": tw,
           "rss_parts": rss_sampler.peak}
    if shipper and shipper.returncode != 0:
        row["exit"] = f"{code} (shipper {shipper.returncode})"
    if cpu0 is not None and cpu1 is not None:
        row["cpu"] = cpu1 - cpu0
    if ship_cpu0 is not None and ship_cpu1 is not None:
        row["shipper_cpu"] = ship_cpu1 - ship_cpu0
    if io0 and io1:
        row["writes"] = io1.get("syscw", 0) - io0.get("syscw", 0)
        row["wbytes"] = io1.get("wchar", 0) - io0.get("wchar", 0)
    if ctx0 is not None and ctx1 is not None:
        row["ctx"] = ctx1 - ctx0
    row["threads"] = sorted(((u - threads0.get(t, (0, 0))[0], s - threads0.get(t, (0, 0))[1])
                             for t, (u, s) in threads1.items()), key=lambda us: -sum(us))
    row["bpf"] = bpf_stats_delta(bpf0, bpf1) if BPF_STATS_ON else {}
    row["prog_names"] = names
    if mode in AGENT_MODES:
        row["expected"] = 4 * storm["connections"]
        row["connections"] = count_netmon(out_path, lo, hi, dnat=netns is not None,
                                          cri=is_pipe(output))
        row["nat"] = nat
        row["conntrack_lines"] = [ln.strip() for ln in stderr.splitlines() if "conntrack" in ln][:3]
        row["written"], row["dups"] = row["connections"]["written"], row["connections"]["dups"]
        m = None
        for line in stderr.splitlines():
            if "stopped:" in line:
                m = LOST_RE.search(line)
                row["summary"] = line.split("stopped:", 1)[1].split("; without")[0].strip()
                waits = re.search(r"output waits (\d+) \((\d+) ms\), sheds (\d+)", line)
                if waits:
                    row["summary"] += "; " + waits.group(0)
                    row["pauses"], row["pause_ms"], row["sheds"] = map(int, waits.groups())
        if metrics_lost is not None:  # /metrics: every stage, recursion included
            row["lost"] = sum(metrics_lost.values())
            row["lost_stages"] = dict(metrics_lost)
            row["lost_detail"] = "/metrics: " + ", ".join(
                f"{k} {v}" for k, v in sorted(metrics_lost.items()))
        if m:  # the stop summary: counted after the final drain
            by_stage = {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", m.group(1))}
            summary = sum(by_stage.values())
            if summary >= row.get("lost", 0):
                row["lost_stages"] = by_stage
            row["lost"] = max(row.get("lost", 0), summary)
            row["lost_detail"] = (row.get("lost_detail", "") + "; summary: " +
                                  m.group(1).strip()).lstrip("; ")
    else:
        row["expected"] = 2 * storm["connections"]
        row["sides"] = count_tcplife(out_path, lo, hi)
        row["written"] = row["sides"]["written"]
        row["skipped"] = skipped
        row["dups"] = None
        lost = re.findall(r"[Ll]ost (\d+)", stderr)
        row["lost"] = sum(int(n) for n in lost) if lost else None
    if not ARGS.keep:  # a round's output can take GiBs
        os.unlink(out_path)
    return row


def dnat_problems(row):
    """--dnat --check: every storm event carries its translation or is counted lost by the agent
    (netmon_nat_lookups_total{result="lost"}); no server end names a wrong original; with
    --strict every storm event translated and no lookup lost. The storm's events are among all
    the agent's lookups (it sees every socket of the host), so the counters bound them from
    above: translated >= the storm's translated events."""
    bad = []
    rnd = row["round"]
    tr = row["connections"]["translated"]
    nat = row.get("nat")
    if nat is None:
        return [f"round {rnd}: --dnat: the agent has no netmon_nat_lookups_total"]
    ok = tr["client"].get("ok", 0) + tr["server"].get("ok", 0)
    wrong = tr["server"].get("wrong", 0)
    missing = tr["client"].get("none", 0) + tr["server"].get("none", 0)
    lost = nat.get("lost", 0)
    if wrong:
        bad.append(f"round {rnd}: --dnat: {wrong} server ends with a wrong peer.original")
    if nat.get("translated", 0) < ok:
        bad.append(f"round {rnd}: --dnat: {ok} storm events translated but the agent counted "
                   f"only {nat.get('translated', 0)} translated lookups")
    if missing > lost:
        bad.append(f"round {rnd}: --dnat: {missing} storm events without their translation, "
                   f"only {lost} lookups counted lost")
    if ARGS.strict and (missing or lost or nat.get("messages_lost")):
        bad.append(f"round {rnd}: --dnat --strict: {missing} storm events without their "
                   f"translation, lookups lost {lost}, conntrack messages lost "
                   f"{nat.get('messages_lost')}")
    return bad


def default_output_dir():
    """/dev/shm when it is a tmpfs, else the system's temporary directory."""
    try:
        with open("/proc/self/mounts", encoding="ascii", errors="replace") as f:
            if any(line.split()[1:3] == ["/dev/shm", "tmpfs"] for line in f):
                return "/dev/shm"
    except OSError:
        pass
    return None


def disk_output_dir():
    """/var/tmp when it is not a tmpfs (a node's container logs are on its disk), else None."""
    return "/var/tmp" if fs_type("/var/tmp") not in ("tmpfs", "ramfs", "?") else None


def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


# A scenario: the storm's size and credentials, the observers' outputs and where their files go.
Scenario = collections.namedtuple("Scenario", "name connections seconds root_caps outputs dir")
SCENARIO = None  # the one running (run_storm reads it)


class CpuCgroups:
    """--cpu-cgroups: the storm, the observer (agent or tcplife) and the log shipper each in a CPU
    cgroup of its own, as on a node, where a workload's pod, the agent's pod and the container
    runtime's shim are separate cgroups that the scheduler weighs by their CPU requests; without
    it every process of the bench is in the runner's cgroup, and the scheduler shares the CPUs
    per thread (the storm's 9 against the agent's 2 and the shipper's 1). The cgroup v1 `cpu`
    controller's cpu.shares (or v2's cpu.weight, converted as the kubelet does): storm and shim
    1024 (a pod requesting one CPU, a system service), the observer `shares` (the chart's 100m
    request is 102). Children join theirs before they exec (preexec_fn, os calls only); leaving
    the context moves whatever is left back to the root cgroup and removes the three."""

    def __init__(self, observer_shares, shim_only=False):
        v1 = "/sys/fs/cgroup/cpu"
        if os.path.exists(os.path.join(v1, "cpu.shares")):
            self.root, self.v2 = v1, False
        else:
            self.root, self.v2 = "/sys/fs/cgroup", True
            try:
                with open(os.path.join(self.root, "cgroup.subtree_control"), encoding="ascii") as f:
                    if "cpu" not in f.read().split():
                        raise OSError("the cpu controller is not enabled for child cgroups")
            except OSError as e:
                raise RuntimeError(f"--cpu-cgroups: no usable cpu controller: {e}") from e
        # shim_only: a node's two top-level groups, the pods' and the system services'. The
        # kubelet gives kubepods cpu.shares from the node's allocatable CPUs (2 048 for 2), systemd
        # gives system.slice the default 1 024; the storm and the observer share the pods' group
        # per thread, as every process of the bench does without cgroups.
        self.shares = ({"kubepods": 1024 * (os.cpu_count() or 1), "shim": 1024} if shim_only
                       else {"storm": 1024, "observer": observer_shares, "shim": 1024})
        self.paths = {}

    def describe(self):
        v2 = " (as cgroup v2 cpu.weight)" if self.v2 else ""
        if "storm" not in self.shares:
            return ("a node's CPU cgroups: the storm and the observer in a pods' cgroup (cpu.shares "
                    "{kubepods}, the kubelet's for the node's CPUs), the log shipper in a system "
                    "services' one (cpu.shares {shim}), as containerd and its shims are{v2}".format(
                        **self.shares, v2=v2))
        return ("CPU cgroups of their own, cpu.shares storm {storm}, observer {observer}, log "
                "shipper {shim}".format(**self.shares) + v2)

    def __enter__(self):
        try:
            for name, shares in self.shares.items():
                path = os.path.join(self.root, f"netmon-storm-{os.getpid()}-{name}")
                os.mkdir(path)
                self.paths[name] = path
                if self.v2:
                    with open(os.path.join(path, "cpu.weight"), "w", encoding="ascii") as f:
                        f.write(str(1 + ((shares - 2) * 9999) // 262142))
                else:
                    with open(os.path.join(path, "cpu.shares"), "w", encoding="ascii") as f:
                        f.write(str(shares))
        except OSError as e:
            self.__exit__(None, None, None)
            raise RuntimeError(f"--cpu-cgroups: cannot make the cgroups: {e}") from e
        return self

    def joiner(self, name):
        """The preexec_fn that puts a child in cgroup `name`; None when it stays in the runner's."""
        if name in ("storm", "observer") and "kubepods" in self.paths:
            name = "kubepods"
        if name not in self.paths:
            return None
        procs = os.path.join(self.paths[name], "cgroup.procs")

        def join():  # in the child before exec: os calls only
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, str(os.getpid()).encode())
            finally:
                os.close(fd)
        return join

    def __exit__(self, *exc):
        for path in self.paths.values():
            try:
                with open(os.path.join(path, "cgroup.procs"), encoding="ascii") as f:
                    left = f.read().split()
                for pid in left:  # nothing should be left: every child was waited for
                    with open(os.path.join(self.root, "cgroup.procs"), "w", encoding="ascii") as f:
                        f.write(pid)
                os.rmdir(path)
            except OSError as e:
                print(f"storm_runner: cannot remove {path}: {e}", file=sys.stderr)
        self.paths = {}
        return False


def scenarios_from(args, parser):
    """The scenarios of this run. By default both of the issue #23 bench's: "burst" (50 000
    connections or 10 s, container credentials, stdout to a file on a tmpfs: today's bench) and
    "sustained" (200 000 connections or 20 s, root's credentials, stdout to a file on the disk
    and to a pipe read by the log shipper writing to the disk). Any of --connections, --seconds,
    --root-caps or --outputs, or --quick or --dnat, makes one "custom" scenario of those flags
    (defaults 50000, 10 s, container credentials, a file) instead."""
    custom = (args.quick or args.dnat or args.connections is not None or args.seconds is not None
              or args.root_caps is not None or args.outputs is not None)
    if custom:
        outputs = (args.outputs or "file").split(",")
        if (not all(o in ("file", "pipe") or re.fullmatch(r"pipe:\d+", o) for o in outputs)
                or len(set(outputs)) != len(outputs)):
            parser.error("--outputs: a comma-separated list of file, pipe, pipe:BYTES")
        return [Scenario("custom", 2000 if args.quick else (args.connections or 50000),
                         args.seconds or 10.0, bool(args.root_caps), outputs,
                         args.output_dir or default_output_dir())]
    picked = {"all": ["burst", "sustained"]}.get(args.scenario, [args.scenario])
    known = {
        "burst": Scenario("burst", 50000, 10.0, False, ["file"],
                          args.output_dir or default_output_dir()),
        "sustained": Scenario("sustained", 200000, 20.0, True, ["file", "pipe"],
                              args.output_dir or disk_output_dir()),
    }
    return [known[n] for n in picked]


def set_bpf_stats(value):
    """Writes kernel.bpf_stats_enabled; returns the value before, or None when it cannot."""
    path = "/proc/sys/kernel/bpf_stats_enabled"
    try:
        with open(path, encoding="ascii") as f:
            before = f.read().strip()
        with open(path, "w", encoding="ascii") as f:
            f.write(value)
        return before
    except OSError:
        return None


def label(r):
    return r["mode"] + ("" if r.get("output") in ("file", "-", None) else "/" + r["output"])


def per_100k(v, n):
    return v / n * 100_000 if v is not None and n else None


def bpf_us_per_conn(r):
    if not r.get("bpf") or not r["storm"]["connections"]:
        return None
    return sum(ns for ns, _ in r["bpf"].values()) / r["storm"]["connections"] / 1000


def lost_cell(r):
    if r["mode"] == "baseline":
        return "-"
    stages = r.get("lost_stages")
    if stages is None:
        return fmt(r.get("lost"), "d")
    nonzero = [f"{k} {v}" for k, v in sorted(stages.items()) if v]
    return "0" if not nonzero else ", ".join(nonzero)


def print_scenario(sc, rows, modes, names):
    def kind(o):
        if o == "file":
            return f"a file ({fs_type(sc.dir) if sc.dir else fs_type(tempfile.gettempdir())})"
        size = f"of {pipe_bytes(o)} bytes " if pipe_bytes(o) else ""
        return f"a pipe {size}read by netmon-log-shipper (CRI log lines to a file there)"
    print(f"### {sc.name}: {ARGS.rounds} round(s) x {sc.connections} connections "
          f"(or {sc.seconds:g} s), {ARGS.workers} workers, "
          f"{f'paced at {ARGS.rate:g} a second, ' if ARGS.rate else ''}"
          f"{'IPv6 ::1' if ARGS.ipv6 else 'IPv4 127.0.0.x'}, "
          f"{'1-byte exchange' if ARGS.exchange else 'no exchange'}, "
          f"{ARGS.listeners} listener ports, "
          f"{f'clients dial {VIP}:{VIP_PORT} DNAT (nftables) to them, ' if ARGS.dnat else ''}"
          f"{'root capabilities' if sc.root_caps else 'container capabilities'}; stdout to "
          + " / ".join(kind(o) for o in sc.outputs) + "\n")
    print("| round | mode | TIME_WAIT at start | connections | conn/s | ratio vs baseline "
          "| CPU s / 100k conn | peak RSS MiB (storm) | events expected | written "
          "| lost (counted, by stage) | duplicates | reader pauses (ms) | sheds "
          "| BPF us / conn |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s = r["storm"]
        agent = r["mode"] in AGENT_MODES
        pauses = (f"{r['pauses']} ({r['pause_ms']})" if agent and r.get("pauses") is not None
                  else ("n/a" if agent else "-"))
        print(f"| {r['round']} | {label(r)} | {fmt(r.get('tw'), 'd')} | {s['connections']} "
              f"| {s['conn_per_s']:.0f} | {fmt(r['ratio'], '.3f')} "
              f"| {fmt(per_100k(r.get('cpu'), s['connections']), '.3f')} "
              f"| {fmt(r.get('rss'), '.1f')} | {r.get('expected', '-')} | {r.get('written', '-')} "
              f"| {lost_cell(r)} "
              f"| {fmt(r.get('dups'), 'd') if r['mode'] != 'baseline' else '-'} "
              f"| {pauses} | {fmt(r.get('sheds'), 'd') if agent else '-'} "
              f"| {fmt(bpf_us_per_conn(r), '.2f') if r['mode'] != 'baseline' else '-'} |")
    print()
    for mode in modes:
        if mode == ("baseline", "-"):
            continue
        sel = [r for r in rows if (r["mode"], r.get("output")) == mode]
        ratios = [r["ratio"] for r in sel if r["ratio"]]
        cpus = [per_100k(r.get("cpu"), r["storm"]["connections"]) for r in sel
                if r.get("cpu") is not None]
        if ratios:
            print(f"- {label(sel[0])}: median ratio vs baseline {statistics.median(ratios):.3f} "
                  f"(min {min(ratios):.3f}, max {max(ratios):.3f}); CPU s / 100k "
                  + (f"{min(cpus):.2f}-{max(cpus):.2f}" if cpus else "n/a"))
        startup = [r["startup_rss"] for r in sel if r.get("startup_rss")]
        if startup:
            print(f"- {label(sel[0])}: peak RSS before the storm (start-up) {min(startup):.1f}-"
                  f"{max(startup):.1f} MiB; the table's peak is reset when the storm starts")
    for r in rows:
        n = r["storm"]["connections"] or 1
        if r["mode"] in AGENT_MODES:
            events = r.get("written") or 0
            parts = []
            if r.get("writes") is not None:
                parts.append(f"agent write syscalls (syscw) {r['writes']} "
                             f"({r['wbytes'] / r['writes'] / 1024:.1f} KiB each)"
                             if r["writes"] else "agent write syscalls 0")
            if r.get("ctx") is not None and events:
                parts.append(f"context switches {r['ctx'] / events:.3f} per event written")
            busy = [(u, s) for u, s in r.get("threads") or [] if u + s >= 0.01]
            if busy and events:
                parts.append("threads (user + system us per event written): " + ", ".join(
                    f"{u / events * 1e6:.2f} + {s / events * 1e6:.2f}" for u, s in busy))
            if r.get("shipper_cpu") is not None:
                parts.append(f"log shipper CPU {per_100k(r['shipper_cpu'], n):.3f} s / 100k")
            if r.get("rss_parts") and r["mode"] in AGENT_MODES:
                anon, mapped = r["rss_parts"]
                parts.append(f"peak RssAnon {anon:.1f} MiB (files and kernel pages mapped then "
                             f"{mapped:.1f} MiB)")
            if r.get("bpf"):
                progs = sorted(r["bpf"].items(), key=lambda kv: -kv[1][0])
                parts.append("BPF per connection: " + ", ".join(
                    f"{names.get(i, i)} {ns / n / 1000:.2f} us ({runs / n:.1f} runs, "
                    f"{ns / runs if runs else 0:.0f} ns each)"
                    for i, (ns, runs) in progs if runs))
            if parts:
                print(f"- round {r['round']} {label(r)}: " + "; ".join(parts))
        if r["mode"] == "tcplife":
            print(f"- round {r['round']} tcplife: lines for {r['sides']['client'] / n:.2%} of "
                  f"the client ends, {r['sides']['server'] / n:.2%} of the server ends; "
                  f"'lost' messages {fmt(r.get('lost'), 'd')}, kernel runs skipped "
                  f"(recursion_misses, not reported by tcplife) {fmt(r.get('skipped'), 'd')}; "
                  f"peak TCP sockets in use during the storm {r['storm']['peak_inuse']}"
                  + (" (more than the 10240 sockets tcplife's birth map holds: a socket that "
                     "opens while it is full is never reported, silently; its ratio and CPU "
                     "are those of a tool doing part of the work)"
                     if r["storm"]["peak_inuse"] > 10240 else ""))
    maps = next((r["maps"] for r in rows if r["mode"] == "netmon" and r.get("maps")), {})
    if maps:
        total = sum(maps.values())
        detail = ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in sorted(maps.items()))
        print(f"- netmon BPF map memory (bytes_memlock): {total / 1048576:.2f} MiB ({detail})")
    for r in rows:
        if r["mode"] not in AGENT_MODES or not ARGS.dnat:
            continue
        tr = r["connections"]["translated"]
        storm_events = r["written"]
        ok = tr["client"].get("ok", 0) + tr["server"].get("ok", 0)
        nat = r.get("nat")
        nat_text = ("no netmon_nat_lookups_total in /metrics" if nat is None else
                    "agent lookups: " + ", ".join(f"{k} {fmt(v, 'd')}" for k, v in sorted(
                        nat.items())))
        print(f"- round {r['round']} {r['mode']} NAT: storm events with their translation {ok} of "
              f"{storm_events} (client ends' backend {tr['client'].get('ok', 0)}, missing "
              f"{tr['client'].get('none', 0)}; server ends' original "
              f"{tr['server'].get('ok', 0)}, missing {tr['server'].get('none', 0)}, wrong "
              f"{tr['server'].get('wrong', 0)}); {nat_text}")
        if r.get("conntrack_lines") and ARGS.verbose:
            print(f"- round {r['round']} {r['mode']} conntrack lines: {r['conntrack_lines']}")
    for r in rows:
        if r.get("lost_detail") and ARGS.verbose:
            print(f"- round {r['round']} {label(r)} lost: {r['lost_detail']}")
        if r.get("summary") and ARGS.verbose:
            print(f"- round {r['round']} {label(r)} stop summary (all host events): "
                  f"{r['summary']}")
    if sc.name == "sustained" or ARGS.goals:
        print_goals(rows)
    print()


# Issue #23's goals, per round of the agent (default settings).
GOALS = "nothing lost, ratio >= 0.85, CPU <= 0.8 s / 100k, BPF <= 5 us / conn, peak RSS <= 30 MiB"


def print_goals(rows):
    for r in rows:
        if r["mode"] != "netmon":
            continue
        n = r["storm"]["connections"]
        missed = []
        if r.get("lost") or r.get("written") != r.get("expected"):
            missed.append(f"{r.get('expected', 0) - (r.get('written') or 0)} events missing")
        if r["ratio"] is None or r["ratio"] < 0.85:
            missed.append(f"ratio {fmt(r['ratio'], '.3f')}")
        cpu = per_100k(r.get("cpu"), n)
        if cpu is None or cpu > 0.8:
            missed.append(f"CPU {fmt(cpu, '.2f')}")
        bpf = bpf_us_per_conn(r)
        if bpf is None or bpf > 5:
            missed.append(f"BPF {fmt(bpf, '.2f')} us")
        if r.get("rss") is None or r["rss"] > 30:
            missed.append(f"RSS {fmt(r.get('rss'), '.1f')} MiB")
        print(f"- round {r['round']} {label(r)} against issue #23's goals ({GOALS}): "
              + ("met" if not missed else "not met: " + ", ".join(missed)))


def check(rows):
    """--check: the failures (strings) of the agent's rows."""
    bad = []
    for r in rows:
        if r["mode"] not in AGENT_MODES:
            continue
        where = f"{r['scenario']} round {r['round']} {label(r)}"
        if r["storm"].get("failed"):
            bad.append(f"{where}: {r['storm']['failed']} connections failed")
        missing = r["expected"] - r["written"]
        lost = r.get("lost")
        if lost is None:
            bad.append(f"{where}: no loss count (no /metrics, no stop summary)")
            lost = 0
        if r.get("dups"):
            bad.append(f"{where}: {r['dups']} events written twice")
        if r["written"] > r["expected"]:
            bad.append(f"{where}: written {r['written']} > expected {r['expected']}")
        conns = r["connections"]
        n = r["storm"]["connections"]
        # Without its translation a --dnat client end cannot be matched to its server end.
        unmatched = 0 if (ARGS.dnat and r["mode"] == "netmon-noct") else conns["unmatched"]
        if ARGS.strict and (missing or lost or r["storm"].get("served") != n
                            or conns["client"] != n or conns["server"] != n
                            or conns["incomplete"] or unmatched):
            bad.append(f"{where}: --strict: {n} connections "
                       f"({r['storm'].get('served')} served): written {r['written']} of "
                       f"{r['expected']} events, complete client ends {conns['client']}, server "
                       f"ends {conns['server']}, incomplete {conns['incomplete']}, unmatched "
                       f"{conns['unmatched']}; lost {lost} ({r.get('lost_detail')})")
        elif missing > lost:
            bad.append(f"{where}: {missing} events missing but only {lost} counted lost "
                       f"({r.get('lost_detail')})")
        if r.get("exit") != 0:
            bad.append(f"{where}: agent exited with {r.get('exit')}")
        if ARGS.dnat and r["mode"] == "netmon":
            bad += dnat_problems(r)
    return bad


def main():
    global ARGS, SCENARIO, BPF_STATS_ON, CGROUPS
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--storm", default=os.path.join(ROOT, "build", "tests", "bench", "netmon-storm"))
    p.add_argument("--agent", default=os.path.join(ROOT, "build", "netmon-agent"))
    p.add_argument("--shipper", default=None, help="netmon-log-shipper binary (default: next to "
                   "--storm)")
    p.add_argument("--tcplife", default=None, help="tcplife binary (default: found on PATH or "
                   "/usr/sbin; 'none' to skip)")
    p.add_argument("--agent-arg", action="append", default=[],
                   help="extra agent flag (repeatable), e.g. --agent-arg=--hook-variant=tracepoint")
    p.add_argument("--bpftool", default="/usr/sbin/bpftool")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--scenario", choices=["all", "burst", "sustained"], default="all",
                   help="the default scenarios to run (all: burst, then sustained, each round)")
    p.add_argument("--connections", type=int, default=None,
                   help="a custom scenario of N connections (default 50000)")
    p.add_argument("--seconds", type=float, default=None,
                   help="a custom scenario capped at S seconds (default 10)")
    p.add_argument("--rate", type=float, default=0, metavar="CONN_PER_S",
                   help="pace every storm (baseline included) at this many connections a second "
                   "(netmon-storm --rate), for the losses and the cost at a given load; "
                   "0 (default): as fast as the machine goes")
    p.add_argument("--outputs", default=None, metavar="file,pipe",
                   help="a custom scenario with these outputs of the observers' stdout: file, "
                   "pipe (read by netmon-log-shipper), pipe:BYTES (a pipe of that capacity), "
                   "comma-separated (default file)")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--listeners", type=int, default=8)
    p.add_argument("--ipv6", action="store_true")
    p.add_argument("--exchange", action="store_true", help="1-byte exchange per connection")
    p.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="measure without first filling the TIME_WAIT table")
    p.add_argument("--quick", action="store_true",
                   help="a custom scenario of 2000 connections, 1 round, no tcplife, no warm-up")
    p.add_argument("--root-caps", action="store_const", const=True, default=None,
                   help="a custom scenario whose storm runs with the runner's own credentials "
                        "instead of a container's default capability set")
    p.add_argument("--output-dir", metavar="DIR", default=None,
                   help="where the observers write their outputs (default: burst and custom "
                        "scenarios /dev/shm when it is a tmpfs, so the disk's write-back speed "
                        "is not what is measured; sustained /var/tmp, on the disk)")
    p.add_argument("--keep", metavar="DIR", help="write the observers' outputs to DIR and keep "
                   "them (default: a temporary directory, removed)")
    p.add_argument("--no-bpf-stats", dest="bpf_stats", action="store_false",
                   help="leave kernel.bpf_stats_enabled alone (no BPF time per connection)")
    p.add_argument("--cpu-cgroups", metavar="SHARES", type=int, default=None,
                   help="run the storm, the observer and the log shipper each in a CPU cgroup of "
                   "its own (cpu.shares 1024, SHARES, 1024; the chart's 100m request is 102), as "
                   "on a node, instead of all in the runner's")
    p.add_argument("--shim-cgroup", action="store_true",
                   help="a node's top-level CPU cgroups: the log shipper (a stand-in for "
                   "containerd's shim, which writes a container's stdout to its log file and "
                   "runs in containerd's service cgroup) in a system services' cgroup "
                   "(cpu.shares 1024, systemd's default), the storm and the observer together "
                   "in a pods' cgroup (cpu.shares 1024 per CPU, as the kubelet sets kubepods')")
    p.add_argument("--goals", action="store_true",
                   help="judge every scenario's netmon rounds against issue #23's goals "
                   "(the sustained one always is)")
    p.add_argument("--verbose", action="store_true", help="also print the agent's stop summaries")
    p.add_argument("--check", action="store_true",
                   help="exit 1 unless netmon wrote every storm event at most once and each "
                   "missing one is covered by the agent's lost counters")
    p.add_argument("--strict", action="store_true",
                   help="with --check: also require nothing missing and nothing lost")
    p.add_argument("--dnat", action="store_true",
                   help=f"the clients dial {VIP}:{VIP_PORT}, DNAT'd (nftables, kube-proxy-like) "
                   "to the listeners, in a network namespace per run where the agent runs too")
    p.add_argument("--without-conntrack", action="store_true",
                   help="also run the agent with --conntrack=false each round (mode netmon-noct)")
    ARGS = p.parse_args()
    if ARGS.dnat:
        if ARGS.ipv6:
            p.error("--dnat is IPv4 only")
        ARGS.tcplife, ARGS.warmup = "none", False
    if ARGS.quick:
        ARGS.rounds, ARGS.tcplife, ARGS.warmup, ARGS.bpf_stats = 1, "none", False, False
    scenarios = scenarios_from(ARGS, p)
    if not (1 <= ARGS.rounds <= 20 and all(1 <= sc.connections <= 10_000_000
                                           and 0 < sc.seconds <= 600 for sc in scenarios)):
        p.error("rounds 1..20, connections 1..1e7, seconds (0, 600]")
    if not 0 <= ARGS.rate <= 1e7:
        p.error("--rate: 0..1e7 connections a second")
    if ARGS.tcplife is None:
        for c in ("/usr/sbin/tcplife", "/usr/bin/tcplife"):
            if os.access(c, os.X_OK):
                ARGS.tcplife = c
                break
    if ARGS.tcplife == "none":
        ARGS.tcplife = None
    if not os.access(ARGS.bpftool, os.X_OK):
        ARGS.bpftool = None
    if ARGS.shipper is None:
        ARGS.shipper = os.path.join(os.path.dirname(ARGS.storm), "netmon-log-shipper")

    if os.geteuid() != 0:
        cannot_run("needs root (the agent loads BPF programs)")
    if not os.access(ARGS.agent, os.X_OK):
        cannot_run(f"no agent binary at {ARGS.agent}")
    if not os.access(ARGS.storm, os.X_OK):
        cannot_run(f"no netmon-storm binary at {ARGS.storm}")
    if (any(is_pipe(o) for sc in scenarios for o in sc.outputs)
            and not os.access(ARGS.shipper, os.X_OK)):
        cannot_run(f"no netmon-log-shipper binary at {ARGS.shipper} (for the pipe output)")
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        cannot_run("the kernel has no BTF (/sys/kernel/btf/vmlinux is missing)")
    if ARGS.dnat:
        for tool in ("ip", "nft", "nsenter"):
            if not any(os.access(os.path.join(d, tool), os.X_OK)
                       for d in os.environ.get("PATH", "/usr/sbin:/usr/bin").split(":")):
                cannot_run(f"--dnat needs {tool}")
    # A SIGTERM ends the run through the finally clauses: agents stopped, namespaces deleted,
    # kernel.bpf_stats_enabled restored.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    if ARGS.cpu_cgroups is not None and not 2 <= ARGS.cpu_cgroups <= 262144:
        p.error("--cpu-cgroups: shares 2..262144")
    if ARGS.cpu_cgroups is not None and ARGS.shim_cgroup:
        p.error("--shim-cgroup: --cpu-cgroups puts the log shipper in a cgroup of its own already")
    if ARGS.cpu_cgroups is not None or ARGS.shim_cgroup:
        try:
            CGROUPS = CpuCgroups(ARGS.cpu_cgroups, shim_only=ARGS.shim_cgroup).__enter__()
        except RuntimeError as e:
            print(f"storm_runner: {e}", file=sys.stderr)
            return 1
    stats_before = set_bpf_stats("1") if ARGS.bpf_stats else None
    BPF_STATS_ON = stats_before is not None
    rows = []
    reported_before = page_reporting()
    try:
        if ARGS.keep:
            os.makedirs(ARGS.keep, exist_ok=True)
        with contextlib.ExitStack() as stack:
            dirs = {}
            for sc in scenarios:
                dirs[sc.name] = (ARGS.keep if ARGS.keep else stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="netmon-storm-", dir=sc.dir)))
            if ARGS.warmup:
                SCENARIO = scenarios[0]
                warm_up()
            for rnd in range(1, ARGS.rounds + 1):
                for sc in scenarios:
                    SCENARIO = sc
                    base = None
                    for mode, output in modes_of(sc):
                        row = observe(mode, output, dirs[sc.name], rnd)
                        row["round"], row["scenario"] = rnd, sc.name
                        if mode == "baseline":
                            base = row["storm"]["conn_per_s"]
                        row["ratio"] = row["storm"]["conn_per_s"] / base if base else None
                        rows.append(row)
                        print(f"storm_runner: {sc.name} round {rnd} {label(row)}: "
                              f"{row['storm']['connections']} connections, "
                              f"{row['storm']['conn_per_s']:.0f}/s", file=sys.stderr)
    finally:
        if BPF_STATS_ON:
            set_bpf_stats(stats_before)
        if CGROUPS:
            CGROUPS.__exit__(None, None, None)

    names = {i: n for r in rows for i, n in (r.get("prog_names") or {}).items()}
    commit = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                            capture_output=True, text=True, timeout=10).stdout.strip()
    print(f"netmon {commit or '?'}, agent {ARGS.agent}; kernel {os.uname().release}; "
          f"{os.cpu_count()} CPUs; rounds interleaved (each scenario's modes in turn, every "
          f"round); "
          + (CGROUPS.describe() if CGROUPS else "every process in the runner's CPU cgroup")
          + "; BPF run time "
          + ("counted (kernel.bpf_stats_enabled=1 during the run)" if BPF_STATS_ON
             else "not counted") + "; " + page_reporting_text(reported_before) + "\n")
    for sc in scenarios:
        print_scenario(sc, [r for r in rows if r["scenario"] == sc.name], modes_of(sc), names)

    if ARGS.check:
        bad = check(rows)
        if bad:
            print("storm_runner: CHECK FAILED:\n  " + "\n  ".join(bad), file=sys.stderr)
            return 1
        print("storm_runner: check passed: " + (
            "every storm connection complete on both ends, every event written exactly once, "
            "nothing lost" if ARGS.strict else
            "every storm event written exactly once, or missing and counted lost"),
            file=sys.stderr)
    return 0


def modes_of(sc):
    """The (mode, output) runs of a scenario's round, in order: the baseline, the agent to each
    output (and without conntrack to the first), tcplife to a file (only a file: it is a
    terminal tool)."""
    runs = [("baseline", "-")] + [("netmon", o) for o in sc.outputs]
    if ARGS.without_conntrack:
        runs.append(("netmon-noct", sc.outputs[0]))
    if ARGS.tcplife:
        runs.append(("tcplife", "file"))
    return runs


ARGS = None
BPF_STATS_ON = False
CGROUPS = None

if __name__ == "__main__":
    sys.exit(main())
