"""Event lines as the container runtime writes them to the node's log files (docs/fluent-bit.md).

containerd writes each line of a container's stdout as a CRI log record,
"<RFC3339Nano time> stdout F <line>"; a line longer than its limit
(max_container_log_line_size, 16384 bytes; CRI-O/conmon: 8192) is written as "P" (partial)
records and a final "F" record, which Fluent Bit's `multiline.parser cri` joins again before
the kubernetes filter merges the JSON. These tests take the agent's real output for a
connection whose process and parent carry long argv (cut at the agent's bound) and executable
paths of about 3.5 KB, and check that each line stays below the 16 KiB split, holds nothing
that would end a log record early, and comes back unchanged from CRI records (whole, and split
at a small limit the way a runtime splits). The reader is checked against the shared CRI sample
(../shared/fixtures/fluentbit, skipped when absent).
"""

import json
import os
import re
import shutil
import socket
import threading
from datetime import datetime, timezone

import pytest

from conftest import wait_for

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CRI_SAMPLE = os.path.join(REPO_ROOT, "..", "shared", "fixtures", "fluentbit",
                          "cri_log_sample.log")

CONTAINERD_LINE_LIMIT = 16384  # bytes: containerd's default max_container_log_line_size
ARGS_MAX = 1024  # NM_ARGS_MAX in bpf/netmon_events.h: raw argv bytes, argv[0] included
CRI_RECORD = re.compile(rb"^(\S+) (stdout|stderr) ([PF]) (.*)$", re.S)


def cri_records(line, stream="stdout", limit=CONTAINERD_LINE_LIMIT):
    """`line` (str, no newline) as a runtime writes it: P records of `limit` bytes, then the
    rest as the F record."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"
    payload = line.encode("utf-8")
    chunks = [payload[i:i + limit] for i in range(0, len(payload), limit)] or [b""]
    records = []
    for i, chunk in enumerate(chunks):
        tag = "F" if i == len(chunks) - 1 else "P"
        records.append(f"{now} {stream} {tag} ".encode("ascii") + chunk)
    return records


def read_cri(records):
    """(stream, line) for each F record, with its P records before it joined in front: bytes
    are joined, then decoded (a runtime splits at a byte count, inside a UTF-8 sequence too)."""
    lines = []
    pending = {}
    for record in records:
        m = CRI_RECORD.match(record if isinstance(record, bytes) else record.encode("utf-8"))
        assert m, f"not a CRI log record: {record!r}"
        _, stream, tag, payload = m.groups()
        stream = stream.decode("ascii")
        pending[stream] = pending.get(stream, b"") + payload
        if tag == b"F":
            lines.append((stream, pending.pop(stream).decode("utf-8")))
    assert not pending, f"partial records without their F record: {pending}"
    return lines


def test_reader_joins_the_shared_cri_sample():
    """The reader on the runtime format sample: a whole JSON line, one JSON object split into a
    P and an F record, and a stderr line."""
    if not os.path.exists(CRI_SAMPLE):
        pytest.skip(f"{CRI_SAMPLE} is absent (the shared fixtures live next to the repository)")
    with open(CRI_SAMPLE, encoding="utf-8") as f:
        records = f.read().splitlines()
    lines = read_cri(records)
    assert len(lines) == len(records) - 1  # one P record joined to its F
    assert sum(1 for r in records if CRI_RECORD.match(r.encode()).group(3) == b"P") == 1
    stdout = [json.loads(text) for stream, text in lines if stream == "stdout"]
    assert all(isinstance(o, dict) for o in stdout)
    assert any(len(o.get("conns", [])) == 2 for o in stdout), stdout
    assert [stream for stream, _ in lines].count("stderr") == 1


def deep_copy_of(binary, root, letter, depth):
    """A copy of `binary` at root/<250 letters>/... (depth levels)/name: an executable path of
    about depth * 251 bytes that the kernel resolves to itself (not a symlink)."""
    directory = os.path.join(root, *([letter * 250] * depth))
    os.makedirs(directory)
    target = os.path.join(directory, os.path.basename(binary))
    shutil.copy2(binary, target)
    return target


def test_longest_event_lines_fit_a_cri_record(start_agent, processes, tmp_path):
    agent = start_agent()
    bash = os.path.realpath(shutil.which("bash"))
    parent_bin = deep_copy_of(bash, str(tmp_path), "p", 14)
    child_bin = deep_copy_of(bash, str(tmp_path), "c", 14)
    assert 3500 < len(child_bin) < 4096

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(20)
    port = server.getsockname()[1]

    def serve():
        try:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(20)
                conn.recv(100)
                conn.sendall(b"pong\n")
        except OSError:
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        long_args = [f"argument-{i:03d}-with-some-text" for i in range(100)]  # ~2.9 KB
        client = (f'"{child_bin}" -c \'exec 3<>/dev/tcp/127.0.0.1/$1; echo ping >&3; '
                  f'read -r reply <&3; exec 3>&-\' child {port} "$@"; true')
        proc = processes.start([parent_bin, "-c", client, "parent", *long_args])
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        thread.join(20)
    finally:
        server.close()

    events = agent.wait_events(count=1, kind="TcpConnectionEstablish", dport=port)
    agent.wait_events(count=1, kind="TcpConnectionClose", dport=port)
    (establish,) = events
    assert establish["process"]["binary_path"] == child_bin
    assert establish["parent"]["binary_path"] == parent_bin
    for who in ("process", "parent"):
        args = establish[who]["args"]
        assert args.endswith("..."), args
        assert len(args) <= ARGS_MAX + len("..."), len(args)

    def our_lines():
        found = []
        for line in list(agent.stdout_lines):
            obj = json.loads(line)
            ne = obj["network_event"]
            if port in (ne.get("sport"), ne.get("dport")) and obj["process"] and \
                    obj["process"].get("binary_path") == child_bin:
                found.append(line)
        return found if len(found) >= 2 else None

    lines = wait_for(our_lines, what="the Establish and Close lines of the client")
    longest = max(len(line.encode("utf-8")) for line in lines)
    print(f"longest event line: {longest} bytes (paths {len(child_bin)} and {len(parent_bin)} "
          f"bytes, argv cut at {ARGS_MAX})")
    assert longest < CONTAINERD_LINE_LIMIT

    for line in lines:
        assert "\n" not in line and "\r" not in line
        whole = cri_records(line)
        assert len(whole) == 1 and whole[0].split(b" ", 3)[2] == b"F"
        assert read_cri(whole) == [("stdout", line)]
        assert json.loads(read_cri(whole)[0][1]) == json.loads(line)
        split = cri_records(line, limit=1000)  # as CRI-O would split a 16 KiB one, scaled
        assert len(split) == -(-len(line.encode("utf-8")) // 1000) > 1
        assert [r.split(b" ", 3)[2] for r in split] == [b"P"] * (len(split) - 1) + [b"F"]
        assert json.loads(read_cri(split)[0][1]) == json.loads(line)
