"""The Kubernetes API server client (agent/k8s/list_watch.h) against the API server stand-in
(kube_api_stub.py, HTTPS with a bearer token): list then watch, paging, bookmarks, 410 Gone,
interrupted watches, token rotation, a server down or refusing, oversized answers, and stop.

The client runs in netmon-kube-watch (tests/support/kube_watch_main.cpp; NETMON_KUBE_WATCH or
build/netmon-kube-watch), which prints each callback and each change of its stats as a JSON line.
No privileges needed. The list fixtures are the real API server responses in
../shared/fixtures/kube_api (next to the repository; under CI=true their absence fails).
"""

import json
import os
import signal
import subprocess
import threading
import time

import pytest

import kube_api_stub
from conftest import skip_or_fail, wait_for

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.abspath(os.path.join(TESTS_DIR, "..", ".."))
KUBE_WATCH = os.path.abspath(
    os.environ.get("NETMON_KUBE_WATCH") or os.path.join(REPO_ROOT, "build", "netmon-kube-watch"))
FIXTURES = os.path.join(REPO_ROOT, "..", "shared", "fixtures", "kube_api")

SERVICES = "/api/v1/services"
ENDPOINTSLICES = "/apis/discovery.k8s.io/v1/endpointslices"
NODES = "/api/v1/nodes"
FIXTURE_OF = {
    SERVICES: "servicelist_minikube_k8s1.17.json",
    ENDPOINTSLICES: "endpointslicelist_kind_2020.json",
    NODES: "nodelist_minikube_k8s1.17.json",
}

TOKEN = "netmon-test-token-1"
TIMEOUT = 10.0  # seconds for the client to react to something the stub did
BACKOFF_MIN_MS = 100
BACKOFF_MAX_MS = 400
STOP_LIMIT = 1.0  # seconds stop() may take with a watch blocked reading


# ---------------------------------------------------------------------------------------------
# Objects in the wire format of a current API server


def service(name, namespace="shop", cluster_ip="10.96.7.7", uid=None):
    return {
        "metadata": {
            "name": name, "namespace": namespace,
            "uid": uid or f"5d1f7c2e-0000-4000-8000-{abs(hash(name)) % 10**12:012d}",
            "creationTimestamp": "2026-12-06T10:00:00Z",
            "labels": {"app": name},
        },
        "spec": {
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
            "selector": {"app": name},
            "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
            "type": "ClusterIP", "sessionAffinity": "None",
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster",
        },
        "status": {"loadBalancer": {}},
    }


def fixture_document(path):
    file = os.path.join(FIXTURES, FIXTURE_OF[path])
    if not os.path.exists(file):
        skip_or_fail(f"{file} is absent (the shared fixtures live next to the repository)")
    with open(file, encoding="utf-8") as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------------
# The client under test


class KubeWatch:
    """netmon-kube-watch as a child process; its stdout lines parsed as they come."""

    def __init__(self, url, resource, token_file, ca_file, *extra):
        if not os.access(KUBE_WATCH, os.X_OK):
            skip_or_fail(f"{KUBE_WATCH} is not built (set NETMON_KUBE_WATCH)")
        args = [KUBE_WATCH, "--url", url, "--resource", resource, "--token-file", token_file,
                "--ca-file", ca_file, "--backoff-min-ms", str(BACKOFF_MIN_MS),
                "--backoff-max-ms", str(BACKOFF_MAX_MS), "--min-watch-ms", "300",
                "--connect-timeout-ms", "2000", "--read-timeout-ms", "5000", *extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines = []
        self.stderr = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._read, args=(self.proc.stdout, True),
                                          daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, False),
                                          daemon=True)]
        for t in self._threads:
            t.start()

    def _read(self, stream, is_stdout):
        for line in stream:
            with self._lock:
                if is_stdout:
                    self.lines.append(json.loads(line))
                else:
                    self.stderr.append(line.rstrip("\n"))

    def callbacks(self, kind=None):
        with self._lock:
            return [x for x in self.lines
                    if "callback" in x and (kind is None or x["callback"] == kind)]

    def lists(self):
        return self.callbacks("list")

    def events(self):
        return self.callbacks("event")

    def stats(self):
        with self._lock:
            found = [x["stats"] for x in self.lines if "stats" in x]
        return found[-1] if found else {}

    def errors(self, reason):
        return self.stats().get("errors", {}).get(reason, 0)

    def wait(self, predicate, what, timeout=TIMEOUT):
        return wait_for(predicate, timeout=timeout,
                        what=lambda: f"{what}; stats {self.stats()}; stderr {self.stderr[-5:]}")

    def stop(self):
        """SIGTERM; returns (seconds to exit, the final stats line)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("netmon-kube-watch did not exit within 10 s of SIGTERM")
        took = time.monotonic() - started
        for t in self._threads:
            t.join(5)
        assert self.proc.returncode == 0, self.stderr
        with self._lock:
            final = [x for x in self.lines if "stopped_in_ms" in x]
        assert final, self.lines[-3:]
        return took, final[-1]

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return kube_api_stub.make_certificates(str(tmp_path_factory.mktemp("kube-api-certs")))


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return str(path)


@pytest.fixture
def stub(certs):
    server = kube_api_stub.KubeApiStub(certs["cert"], certs["key"], TOKEN)
    for path in (SERVICES, ENDPOINTSLICES, NODES):
        server.load_list(path, fixture_document(path))
    yield server.start()
    server.stop()


@pytest.fixture
def start_watch(certs, token_file):
    started = []

    def start(url, resource, *extra):
        watch = KubeWatch(url, resource, token_file, certs["ca"], *extra)
        started.append(watch)
        return watch

    yield start
    for watch in started:
        watch.kill()


def watches_from(stub):
    return [r["query"].get("resourceVersion") for r in stub.requests("watch")]


# ---------------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("path", [SERVICES, ENDPOINTSLICES, NODES])
def test_lists_the_real_shapes_then_watches_from_the_list_version(stub, start_watch, path):
    document = fixture_document(path)
    watch = start_watch(stub.url, path)
    listed = watch.wait(watch.lists, "the first list")[0]
    # One version counter for all collections (as etcd's revision): at least the fixture's.
    assert listed["resource_version"] == stub.resource_version
    assert int(listed["resource_version"]) >= int(document["metadata"]["resourceVersion"])
    assert sorted(listed["items"]) == stub.keys(path)
    assert listed["items"]
    watch.wait(lambda: stub.open_watch_count() == 1, "the watch")
    first = stub.requests()
    assert [r["kind"] for r in first] == ["list", "watch"]
    # From the watch cache, as kube-proxy lists: no etcd read per node.
    assert first[0]["query"] == {"limit": "500", "resourceVersion": "0"}
    watch_query = dict(first[1]["query"])
    timeout_seconds = int(watch_query.pop("timeoutSeconds"))
    assert watch_query == {"watch": "1", "resourceVersion": listed["resource_version"],
                           "allowWatchBookmarks": "true"}
    assert 300 <= timeout_seconds < 600  # 5 to 10 minutes, spread as client-go does
    assert {r["token"] for r in first} == {TOKEN}

    # Changes arrive as events, in order, each with its version.
    obj = json.loads(json.dumps(document["items"][0]))
    obj["metadata"]["name"] = "netmon-new"
    rv_added = stub.put(path, obj)
    obj["metadata"]["labels"] = {"changed": "yes"}
    rv_modified = stub.put(path, obj)
    rv_deleted = stub.delete(path, kube_api_stub.object_key(obj))
    events = watch.wait(lambda: len(watch.events()) >= 3 and watch.events(), "three events")
    key = kube_api_stub.object_key(obj)
    assert [(e["type"], e["object"], e["resource_version"]) for e in events] == [
        ("ADDED", key, rv_added), ("MODIFIED", key, rv_modified), ("DELETED", key, rv_deleted)]
    took, final = watch.stop()
    stats = final["stats"]
    assert (stats["lists"], stats["added"], stats["modified"], stats["deleted"]) == (1, 1, 1, 1)
    assert stats["synced"] and stats["resource_version"] == rv_deleted
    assert stats["errors"] == {}
    assert took < 2 * STOP_LIMIT and final["stopped_in_ms"] < STOP_LIMIT * 1000


@pytest.mark.parametrize("pages", [False, True], ids=["whole", "page-wise"])
def test_pages_a_consistent_list_with_limit_and_continue(stub, start_watch, pages):
    for i in range(5):
        stub.put(SERVICES, service(f"svc-{i}", cluster_ip=f"10.96.8.{i}"))
    expected = stub.keys(SERVICES)
    rv = stub.resource_version
    watch = start_watch(stub.url, SERVICES, "--page-size", "2", "--consistent-list",
                        *(["--pages"] if pages else []))
    listed = watch.wait(watch.lists, "the list")[0]
    assert listed["items"] == expected  # all pages, in order, once each
    assert listed["resource_version"] == rv
    assert listed["pages"] == (3 if pages else 0)  # page-wise: handed over one by one
    lists = stub.requests("list")
    assert len(lists) == 3  # 6 services: 2 + 2 + 2
    assert [r["query"]["limit"] for r in lists] == ["2", "2", "2"]
    assert "continue" not in lists[0]["query"] and "resourceVersion" not in lists[0]["query"]
    assert lists[1]["query"]["continue"] and lists[2]["query"]["continue"]
    assert "resourceVersion" not in lists[1]["query"]  # refused with a continue token
    watch.wait(lambda: watches_from(stub) == [rv], "the watch from the list's version")
    assert watch.wait(lambda: watch.stats().get("list_pages") == 3, "three pages")


def test_a_list_from_the_watch_cache_comes_whole(stub, start_watch):
    for i in range(5):
        stub.put(SERVICES, service(f"svc-{i}"))
    watch = start_watch(stub.url, SERVICES, "--page-size", "2")
    listed = watch.wait(watch.lists, "the list")[0]
    assert listed["items"] == stub.keys(SERVICES)
    assert [r["query"] for r in stub.requests("list")] == [{"limit": "2", "resourceVersion": "0"}]


def test_a_watch_cache_list_over_the_cap_falls_back_to_consistent_pages(stub, start_watch):
    # Before 1.31 the watch cache answers a list whole, whatever its limit: a collection bigger
    # than the response cap could never be listed that way. The watcher must then page from etcd.
    padding = "x" * (16 << 10)
    for i in range(24):  # about 400 KiB whole, about 50 KiB per page of 3
        svc = service(f"big-{i:02d}", cluster_ip=f"10.96.9.{i}")
        svc["metadata"]["annotations"] = {"example.com/padding": padding}
        stub.put(SERVICES, svc)
    expected = stub.keys(SERVICES)
    watch = start_watch(stub.url, SERVICES, "--page-size", "3", "--max-response-bytes",
                        str(256 << 10), "--backoff-min-ms", "100", "--backoff-max-ms", "200",
                        "--throw-on-event", "1")
    listed = watch.wait(watch.lists, "the list in pages")[0]
    assert listed["items"] == expected
    assert watch.stats()["errors"].get("too_large") == 1
    queries = [r["query"] for r in stub.requests("list")]
    assert queries[0] == {"limit": "3", "resourceVersion": "0"}  # the watch cache's: too big
    assert all("resourceVersion" not in q and q["limit"] == "3" for q in queries[1:])
    assert len(queries) == 1 + -(-len(expected) // 3)
    # It stays paged: the re-list after a handler failure (which would otherwise ask the watch
    # cache again) is paged too.
    watch.wait(lambda: stub.open_watch_count() == 1, "the watch")
    stub.put(SERVICES, service("after"))  # the handler throws on it: re-list
    watch.wait(lambda: len(watch.lists()) == 2, "the re-list after the handler failed")
    assert watch.stats()["errors"].get("too_large") == 1
    assert watch.stats()["errors"].get("handler") == 1
    assert all("resourceVersion" not in r["query"] for r in stub.requests("list")[1:])


@pytest.mark.parametrize("pages", [False, True], ids=["whole", "page-wise"])
def test_an_expired_continue_token_restarts_the_list(stub, start_watch, pages):
    for i in range(4):
        stub.put(SERVICES, service(f"svc-{i}"))
    stub.expire_continue_next()
    watch = start_watch(stub.url, SERVICES, "--page-size", "2", "--consistent-list",
                        *(["--pages"] if pages else []))
    listed = watch.wait(watch.lists, "the list")[0]
    assert listed["items"] == stub.keys(SERVICES)
    statuses = [(r["status"], "continue" in r["query"]) for r in stub.requests("list")]
    assert statuses == [(200, False), (410, True), (200, False), (200, True), (200, True)]
    watch.wait(lambda: watch.stats().get("relists_gone") == 1, "the re-list counted")
    assert len(watch.lists()) == 1
    # Page-wise, the handler is told to drop the first attempt's page.
    abandoned = watch.callbacks("list_abandoned")
    assert abandoned == ([{"callback": "list_abandoned", "pages": 1}] if pages else [])


def test_a_bookmark_moves_the_version_the_next_watch_resumes_from(stub, start_watch):
    watch = start_watch(stub.url, SERVICES)
    watch.wait(watch.lists, "the list")
    watch.wait(lambda: stub.open_watch_count() == 1, "the watch")
    stub.bump(25)  # other resources changed meanwhile
    bookmark_rv = stub.bookmark(SERVICES)
    watch.wait(lambda: watch.stats().get("bookmarks") == 1, "the bookmark")
    assert watch.stats()["resource_version"] == bookmark_rv
    assert watch.events() == []  # a bookmark is no change
    stub.close_watches()  # the server ends the watch (as at timeoutSeconds)
    watch.wait(lambda: len(watches_from(stub)) == 2, "the next watch")
    assert watches_from(stub)[1] == bookmark_rv
    assert len(stub.requests("list")) == 1  # resumed, not re-listed
    watch.wait(lambda: watch.stats().get("watch_ends") == 1, "the ended watch counted")


@pytest.mark.parametrize("as_http_status", [False, True], ids=["error-event", "http-410"])
def test_410_gone_relists_at_once(stub, start_watch, as_http_status):
    stub.gone_as_http_status(as_http_status)
    watch = start_watch(stub.url, SERVICES, "--backoff-min-ms", "3000", "--backoff-max-ms", "6000")
    watch.wait(watch.lists, "the list")
    watch.wait(lambda: stub.open_watch_count() == 1, "the watch")
    seen_rv = stub.put(SERVICES, service("before"))
    watch.wait(watch.events, "the event")
    # Other resources change and the history is compacted past the client's version: the
    # watch it resumes after this one ends is too old.
    stub.bump(10)
    stub.compact()
    stub.close_watches()
    relisted = watch.wait(lambda: len(watch.lists()) == 2 and watch.lists()[1], "the re-list")
    assert "shop/before" in relisted["items"]
    assert relisted["resource_version"] == stub.resource_version
    assert watches_from(stub)[1] == seen_rv  # the watch that got 410
    kinds = [(r["kind"], r.get("gone", False)) for r in stub.requests()]
    assert ("watch", True) in kinds
    gone_at = kinds.index(("watch", True))
    assert kinds[gone_at + 1] == ("list", False)
    requests = stub.requests()
    # The re-list after 410 is consistent (no resourceVersion: not from a cache that may be as
    # old as the version that expired).
    assert requests[0]["query"]["resourceVersion"] == "0"
    assert "resourceVersion" not in requests[gone_at + 1]["query"]
    # At once: no backoff (3 s here) between the 410 and the re-list.
    assert requests[gone_at + 1]["time"] - requests[gone_at]["time"] < 1.5
    watch.wait(lambda: watches_from(stub)[-1] == relisted["resource_version"],
               "the watch from the re-list's version")
    stats = watch.wait(lambda: watch.stats().get("relists_gone") == 1 and watch.stats(),
                       "the re-list counted")
    assert stats["errors"] == {}  # 410 is the protocol, not a failure


def test_a_watch_that_breaks_off_resumes_from_the_last_event(stub, start_watch):
    watch = start_watch(stub.url, SERVICES)
    watch.wait(watch.lists, "the list")
    watch.wait(lambda: stub.open_watch_count() == 1, "the watch")
    last_rv = None
    for i in range(3):
        last_rv = stub.put(SERVICES, service(f"svc-{i}"))
    watch.wait(lambda: len(watch.events()) == 3, "three events")
    stub.close_watches(abrupt=True)  # no last chunk: the connection just ends
    watch.wait(lambda: len(watches_from(stub)) == 2, "the resumed watch")
    assert watches_from(stub)[1] == last_rv
    watch.wait(lambda: watch.errors("interrupted") == 1, "the interruption counted")
    later = stub.put(SERVICES, service("after"))
    watch.wait(lambda: len(watch.events()) == 4, "the event after the resume")
    assert watch.events()[-1]["resource_version"] == later
    assert len(watch.lists()) == 1  # no re-list
    requests = stub.requests("watch")
    assert requests[1]["time"] - requests[0]["time"] < 5  # resumed at once (healthy watch)


def test_a_rotated_token_goes_out_with_the_next_request(stub, start_watch, token_file):
    watch = start_watch(stub.url, SERVICES)
    watch.wait(watch.lists, "the list")
    watch.wait(lambda: stub.open_watch_count() == 1, "the watch")
    # As the kubelet rotates a projected token: a new file swapped in by rename.
    rotated = token_file + ".new"
    with open(rotated, "w", encoding="ascii") as f:
        f.write("netmon-test-token-2\n")
    os.replace(rotated, token_file)
    stub.require_token("netmon-test-token-2")
    stub.close_watches()
    watch.wait(lambda: len(stub.requests("watch")) == 2, "the next watch")
    assert stub.tokens_seen() == [TOKEN, TOKEN, "netmon-test-token-2"]
    assert stub.requests("watch")[1]["status"] == 200
    assert watch.errors("unauthorized") == 0


def test_a_server_down_at_start_is_retried_with_backoff_until_it_answers(certs, start_watch):
    port = kube_api_stub.reserve_port()
    server = kube_api_stub.KubeApiStub(certs["cert"], certs["key"], TOKEN, port=port)
    server.load_list(SERVICES, fixture_document(SERVICES))
    watch = start_watch(f"https://127.0.0.1:{port}", SERVICES)
    started = time.monotonic()
    watch.wait(lambda: watch.errors("unreachable") >= 3, "three failed attempts")
    elapsed = time.monotonic() - started
    failures = watch.errors("unreachable")
    # Never a busy loop: at least BACKOFF_MIN_MS between attempts.
    assert failures <= elapsed / (BACKOFF_MIN_MS / 1000) + 1, (failures, elapsed)
    assert watch.stats()["synced"] is False
    assert watch.stats()["last_error"].startswith("unreachable: ")
    server.start()
    try:
        watch.wait(watch.lists, "the list once the server is up")
        watch.wait(lambda: watch.stats().get("last_error") == "", "the error cleared")
    finally:
        server.stop()


@pytest.mark.parametrize("fault", ["forbidden", "unauthorized", "http_5xx"])
def test_refusals_are_counted_and_retried_with_backoff(stub, start_watch, fault):
    if fault == "forbidden":
        stub.forbid()
    elif fault == "unauthorized":
        stub.require_token("some-other-token")
    else:
        stub.fail_next(1000, 503)
    watch = start_watch(stub.url, SERVICES)
    watch.wait(lambda: watch.errors(fault) >= 3, f"three {fault} failures")
    assert watch.lists() == []
    assert watch.stats()["last_error"].startswith(fault + ": HTTP ")
    if fault == "forbidden":  # the Status message names what RBAC refused
        assert 'cannot list resource "services"' in watch.stats()["last_error"]
    times = [r["time"] for r in stub.requests()]
    if fault == "unauthorized":
        times = times[1::2]  # each attempt re-reads the token and tries once more at once
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(g >= BACKOFF_MIN_MS / 1000 * 0.9 for g in gaps), gaps
    if fault == "forbidden":
        stub.forbid(False)
    elif fault == "unauthorized":
        stub.require_token(TOKEN)
    else:
        stub.fail_next(0)
    watch.wait(watch.lists, "the list after the recovery")
    watch.wait(lambda: watch.stats().get("last_error") == "", "the error cleared")


def test_an_oversized_list_and_an_overlong_watch_line_are_errors_not_crashes(stub, start_watch):
    stub.oversized_list_next(2 << 20)
    watch = start_watch(stub.url, SERVICES, "--max-response-bytes", str(256 << 10),
                        "--max-line-bytes", str(64 << 10))
    watch.wait(lambda: watch.errors("too_large") == 1, "the oversized list counted")
    watch.wait(watch.lists, "the list on the next attempt")
    watch.wait(lambda: stub.open_watch_count() == 1, "the watch")
    stub.long_line_next(1 << 20)
    stub.close_watches()
    watch.wait(lambda: watch.errors("too_large") == 2, "the over-long line counted")
    assert "longer than 65536 bytes" in watch.stats()["last_error"]
    watch.wait(lambda: stub.open_watch_count() == 1, "the watch again")
    stub.put(SERVICES, service("after"))
    watch.wait(lambda: [e["object"] for e in watch.events()] == ["shop/after"], "the next event")
    assert watch.proc.poll() is None


def test_watches_that_end_at_once_are_backed_off(stub, start_watch):
    stub.close_watches_at_once()
    watch = start_watch(stub.url, SERVICES)
    watch.wait(lambda: len(stub.requests("watch")) >= 4, "four watches")
    times = [r["time"] for r in stub.requests("watch")]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(g >= BACKOFF_MIN_MS / 1000 * 0.9 for g in gaps), gaps
    assert watch.stats()["short_watches"] >= 3


def test_stop_is_prompt_in_a_watch_and_in_a_backoff(stub, start_watch, certs):
    watch = start_watch(stub.url, SERVICES)
    watch.wait(watch.lists, "the list")
    watch.wait(lambda: stub.open_watch_count() == 1, "the watch")
    time.sleep(0.2)  # blocked reading the stream
    took, final = watch.stop()
    assert took < STOP_LIMIT + 0.5 and final["stopped_in_ms"] < STOP_LIMIT * 1000, (took, final)

    port = kube_api_stub.reserve_port()
    waiting = start_watch(f"https://127.0.0.1:{port}", SERVICES, "--backoff-min-ms", "30000",
                          "--backoff-max-ms", "60000")
    waiting.wait(lambda: waiting.errors("unreachable") == 1, "a failure, then a 30 s backoff")
    took, final = waiting.stop()
    assert took < STOP_LIMIT + 0.5 and final["stopped_in_ms"] < STOP_LIMIT * 1000, (took, final)


def test_a_resource_with_a_field_selector_keeps_it_in_list_and_watch(stub, start_watch):
    stub.add_collection("/api/v1/pods", "Pod", "v1")
    resource = "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1"
    watch = start_watch(stub.url, resource)
    listed = watch.wait(watch.lists, "the list")[0]
    assert listed["items"] == []
    watch.wait(lambda: stub.open_watch_count() == 1, "the watch")
    queries = [r["query"] for r in stub.requests()]
    assert [q["fieldSelector"] for q in queries] == ["spec.nodeName=node-1"] * 2
    assert queries[1]["watch"] == "1" and queries[0]["limit"] == "500"


def test_a_certificate_of_another_ca_is_a_tls_error(stub, certs, token_file):
    watch = KubeWatch(stub.url, SERVICES, token_file, certs["other_ca"])
    try:
        watch.wait(lambda: watch.errors("tls") >= 2, "two TLS failures")
        assert watch.lists() == [] and stub.requests() == []
        assert watch.stats()["last_error"].startswith("tls: ")
    finally:
        watch.kill()


def test_a_handler_that_throws_is_counted_and_the_collection_listed_again(stub, start_watch):
    watch = start_watch(stub.url, SERVICES, "--throw-on-list", "1", "--throw-on-event", "1")
    # The first list's handler threw: counted, listed again after a backoff.
    watch.wait(watch.lists, "the list on the second attempt")
    assert watch.errors("handler") == 1
    assert "injected failure in on_list" in "\n".join(watch.stderr)
    watch.wait(lambda: stub.open_watch_count() == 1, "the watch")
    # The first event's handler threw: its state may be partial, so the collection is listed
    # again (from the watch cache, not older than the last version seen).
    failed_rv = stub.put(SERVICES, service("first"))
    relisted = watch.wait(lambda: len(watch.lists()) == 2 and watch.lists()[1], "the re-list")
    assert "shop/first" in relisted["items"]
    assert stub.requests("list")[-1]["query"]["resourceVersion"] == failed_rv
    assert watch.errors("handler") == 2
    later = stub.put(SERVICES, service("second"))
    watch.wait(lambda: [e["resource_version"] for e in watch.events()] == [later],
               "the next event delivered")
