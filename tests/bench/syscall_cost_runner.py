#!/usr/bin/python3
"""The cost per syscall of the accept hook's last resort (issue #24): tp_btf on
raw_syscalls/sys_exit runs a BPF program at every syscall exit of the machine.

Each round runs netmon-syscall-cost (getppid() in a tight loop, ns per call) in three states, in
an order that rotates between rounds: no agent ("none"), the agent with the accept tracepoints
("tracepoint", which run only at accept syscalls' exits) and the agent with the sys_exit variant
("tp_btf"); each state's figure is the median of --runs runs. Prints each round and, per state,
the median over rounds, and what tp_btf adds per syscall against none and against tracepoint.
The agent's output goes to /dev/null; it is stopped with SIGTERM before the next state (bounded
waits). Root. No timing is asserted: the figures are for docs/performance.md.
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

STATES = ("none", "tracepoint", "tp_btf")


def start_agent(agent, variant, log):
    proc = subprocess.Popen(
        [agent, "--hook-variant", f"accept={variant}", "--metrics-address", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
        env={k: v for k, v in os.environ.items() if not k.startswith("NETMON_")})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        log.flush()
        with open(log.name, encoding="utf-8", errors="replace") as f:
            text = f.read()
        if "netmon is running" in text:
            if f"hook variant: accept = {variant} " not in text:
                stop(proc)
                sys.exit(f"the agent did not take accept={variant}:\n{text}")
            return proc
        if proc.poll() is not None:
            sys.exit(f"the agent exited {proc.returncode}:\n{text}")
        time.sleep(0.05)
    stop(proc)
    sys.exit("the agent did not start within 60 s")


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def measure(cost, calls, runs):
    out = []
    for _ in range(runs):
        r = subprocess.run([cost, str(calls)], capture_output=True, text=True, timeout=120,
                           check=True)
        out.append(float(r.stdout))
    return statistics.median(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cost", required=True, help="netmon-syscall-cost")
    ap.add_argument("--agent", required=True, help="netmon-agent")
    ap.add_argument("--rounds", type=int, default=5, choices=range(1, 51))
    ap.add_argument("--runs", type=int, default=5, choices=range(1, 51))
    ap.add_argument("--calls", type=int, default=5_000_000)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 77
    results = {s: [] for s in STATES}
    for rnd in range(args.rounds):
        order = STATES[rnd % 3:] + STATES[:rnd % 3]
        row = {}
        for state in order:
            # A log of its own per agent: the start check reads only this agent's lines.
            with tempfile.NamedTemporaryFile("w+", prefix="netmon-syscall-cost-") as log:
                proc = None if state == "none" else start_agent(args.agent, state, log)
                try:
                    time.sleep(1)  # the agent's start-up work (snapshot, process scan) done
                    row[state] = measure(args.cost, args.calls, args.runs)
                finally:
                    if proc:
                        stop(proc)
            results[state].append(row[state])
        print(f"round {rnd + 1} ({', '.join(order)}): " +
              ", ".join(f"{s} {row[s]:.1f} ns" for s in STATES), flush=True)
    med = {s: statistics.median(v) for s, v in results.items()}
    print("median ns per getppid(): " + ", ".join(f"{s} {med[s]:.1f}" for s in STATES))
    print(f"tp_btf adds {med['tp_btf'] - med['none']:.1f} ns per syscall against no agent, "
          f"{med['tp_btf'] - med['tracepoint']:.1f} ns against the accept tracepoints")
    return 0


if __name__ == "__main__":
    sys.exit(main())
