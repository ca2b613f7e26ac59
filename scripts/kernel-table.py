#!/usr/bin/env python3
"""Prints the kernel support table of docs/kernels.md (Markdown) from the console logs of
scripts/kernel-matrix.sh (build/kernel-matrix/<kernel>.log by default), plus this host's run
when given its agent log with --host-log.

    scripts/kernel-table.py [LOG ...]
"""

import glob
import os
import re
import sys

DIFFERS = {
    ("state", "tracepoint"): "the classic tracepoint",
    ("accept", "tracepoint"): "accepts made through io_uring are not reported",
    ("process", "raw_tp"): "none (same arguments, untyped)",
}


def parse(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    release = re.search(r"^kernel-matrix: release (\S+)", text, re.M)
    variants = dict(re.findall(r"^kernel-matrix: variant (\w+) = (\w+)", text, re.M))
    summary = re.findall(r"^=+ (.*(?:passed|failed).*) in [\d.]+s", text, re.M)
    ran = re.search(r"^vm-run: guest ran (\d+) s", text, re.M)
    boot = re.search(r"^vm-run: guest \S+ up after ([\d.]+) s", text, re.M)
    return {
        "kernel": os.path.basename(path).removesuffix(".log"),
        "release": release.group(1) if release else "?",
        "variants": variants,
        "assigner": re.search(r"^kernel-matrix: sock_ops cookie assigner attached", text, re.M)
        is not None,
        "observer": re.search(r"^kernel-matrix: sock_ops state observer attached", text, re.M)
        is not None,
        "tests": summary[-1] if summary else "did not finish",
        "seconds": ran.group(1) if ran else "?",
        "boot": boot.group(1) if boot else "?",
    }


def version_key(row):
    return [int(x) for x in re.findall(r"\d+", row["kernel"])]


def main(paths):
    paths = paths or sorted(glob.glob(os.path.join("build", "kernel-matrix", "*.log")))
    if not paths:
        sys.exit("kernel-table: no logs (run ctest -L kernel first)")
    rows = sorted((parse(p) for p in paths), key=version_key)
    print("| kernel | release | state | accept | process | kernel-matrix tests | VM run (boot) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        v = r["variants"]
        print(f"| {r['kernel']} | {r['release']} | {v.get('state', '?')} | "
              f"{v.get('accept', '?')} | {v.get('process', '?')} | {r['tests']} | "
              f"{r['seconds']} s ({r['boot']} s) |")
    print()
    print("What differs from the preferred variants:")
    print()
    for r in rows:
        diffs = [DIFFERS[(h, v)] for h, v in sorted(r["variants"].items()) if (h, v) in DIFFERS]
        if not r["observer"]:
            diffs.append("no TCP state observer: connection ends from the tracepoint programs "
                         "alone")
        if r["assigner"]:
            diffs.append("cookies assigned by the `sock_ops` cookie assigner on the cgroup root "
                         "(no cookie helper in tracing programs; cookies as with it)")
        print(f"- {r['kernel']}: " + ("; ".join(diffs) if diffs else "nothing") + ".")


if __name__ == "__main__":
    main(sys.argv[1:])
