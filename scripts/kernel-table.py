#!/usr/bin/env python3
"""Prints the kernel support table of docs/kernels.md (Markdown) from the console logs of
scripts/kernel-matrix.sh (build/kernel-matrix/<kernel>.log by default), and the Debian kernel
package each row ran (name, version, sha256 of the .deb, from scripts/vm-run.sh's "kernel
package" line), so that the table says exactly which kernels it came from.

    scripts/kernel-table.py [LOG ...]

A log without that line (from before vm-run.sh recorded it) gives "not recorded"; a guest whose
uname -v names another Debian version than the package is flagged.
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
    package = re.search(r"^vm-run: kernel package (\S+) (\S+) sha256 ([0-9a-f]{64})\b", text, re.M)
    build = re.search(r"^kernel-matrix: build .*\bDebian (\S+)", text, re.M)
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
        "package": package.group(1) if package else None,
        "version": package.group(2) if package else None,
        "sha256": package.group(3) if package else None,
        "guest_version": build.group(1) if build else None,
    }


def version_key(row):
    return [int(x) for x in re.findall(r"\d+", row["kernel"])]


def main(paths):
    paths = paths or sorted(glob.glob(os.path.join("build", "kernel-matrix", "*.log")))
    if not paths:
        sys.exit("kernel-table: no logs (run ctest -L kernel first)")
    rows = sorted((parse(p) for p in paths), key=version_key)
    print("| kernel | release | package version | state | accept | process | kernel-matrix tests "
          "| VM run (boot) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        v = r["variants"]
        version = r["version"] or "not recorded"
        if r["version"] and r["guest_version"] and r["guest_version"] != r["version"]:
            version += f" (the guest says {r['guest_version']})"
        print(f"| {r['kernel']} | {r['release']} | {version} | {v.get('state', '?')} | "
              f"{v.get('accept', '?')} | {v.get('process', '?')} | {r['tests']} | "
              f"{r['seconds']} s ({r['boot']} s) |")
    print()
    print("The kernels: Debian packages, and the sha256 of each .deb:")
    print()
    for r in rows:
        if r["package"]:
            print(f"- {r['kernel']}: `{r['package']}` {r['version']}, sha256 `{r['sha256']}`")
        else:
            print(f"- {r['kernel']}: not recorded (a log from before vm-run.sh recorded it)")
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
