"""The agent's HTTP endpoint against hostile clients, with the real agent (issue #17, fault 2).

With cpp-httplib's thread pool, 8 idle TCP connections (or 16 clients sending their headers a
byte at a time) kept /healthz and /metrics from answering for as long as they stayed; the
chart's liveness probe would then restart the agent. Now one poll loop serves every connection
with a request deadline and a connection limit that evicts the oldest unfinished request, so the
probes answer while the idle and slow clients stay."""

import socket
import threading
import time
import urllib.error
import urllib.request

from conftest import wait_for

IDLE_CLIENTS = 500
SLOW_CLIENTS = 50
PROBE_TIMEOUT = 1.0  # seconds: the bound the issue sets for every probe's answer
ROUNDS = 20


def probe(url):
    """(status, body) of GET url, within PROBE_TIMEOUT; raises on a timeout."""
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as e:  # 503 from /readyz is an answer too
        return e.code, e.read().decode()


def connect(host, port):
    s = socket.create_connection((host, port), timeout=5)
    s.setblocking(False)
    return s


def test_idle_and_slowloris_clients_do_not_starve_the_probes(agent):
    url = wait_for(lambda: agent.metrics_url, what="the metrics URL in the agent's log")
    host, port = url.removeprefix("http://").rsplit(":", 1)
    port = int(port)
    clients = []
    stop = threading.Event()
    try:
        clients = [connect(host, port) for _ in range(IDLE_CLIENTS)]
        slow = [connect(host, port) for _ in range(SLOW_CLIENTS)]
        clients += slow

        def trickle():
            # Each slow client sends its request head one byte every 0.2 s (and never ends it).
            request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10000
            sent = 0
            while not stop.wait(0.2) and sent < len(request):
                for s in slow:
                    try:
                        s.send(request[sent:sent + 1])
                    except OSError:
                        pass  # closed by the agent: its deadline or the limit
                sent += 1

        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()
        answers = []
        for round_ in range(ROUNDS):
            for path in ("/healthz", "/readyz", "/metrics"):
                start = time.monotonic()
                status, body = probe(url + path)
                answers.append((path, status, round(time.monotonic() - start, 3)))
                assert status == 200, (path, status, body)
            time.sleep(0.25)  # pacing between probe rounds, not synchronisation
        assert all(seconds < PROBE_TIMEOUT for _, _, seconds in answers), answers
    finally:
        stop.set()
        for s in clients:
            s.close()
