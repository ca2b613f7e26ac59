"""A stand-in for the Kubernetes API server's list and watch, for test_kube_api.py and the
peer-naming tests of issue #19 (test_peers.py; builders of their objects at the end).

It runs in threads of the pytest process, on 127.0.0.1 only, over HTTPS (the certificates of
kubelet_stub.make_certificates) with a bearer-token check, and serves resource collections the
way a real API server does:

- LIST `GET <path>?limit=N[&continue=T]`: a `<Kind>List` with `metadata.resourceVersion` (the
  version of the snapshot the list shows; every page of one list shows the same snapshot) and
  `metadata.continue` + `remainingItemCount` while pages remain. Items carry no kind/apiVersion,
  as in a real list. With a resourceVersion (a list the watch cache answers, e.g. "0"): the
  whole list in one response, limit ignored (as servers before 1.31 do).
- WATCH `GET <path>?watch=1&resourceVersion=RV&allowWatchBookmarks=true&timeoutSeconds=S`: HTTP
  200 with a chunked body of newline-delimited `{"type": ..., "object": ...}` events: every change
  after RV, then changes as they happen, BOOKMARKs when the test asks, until timeoutSeconds (or
  the test closes the watches). Objects in events carry kind/apiVersion.
- A watch from a version older than the last compaction gets, as from a real server with the
  watch cache, HTTP 200 and one ERROR event whose object is a Status
  `{kind: Status, apiVersion: v1, status: Failure, reason: Expired, code: 410}`
  (`gone_as_http_status(True)`: an HTTP 410 with that Status as the body instead, as from servers
  without the watch cache).
- 401 (no or wrong token) and 403 (forbid()) with a Status body, as the real server.

Resource versions are one counter for all collections, like etcd's revision. The test changes
objects (put, delete), advances the counter (bump), sends bookmarks, compacts, closes watches
(cleanly, or abruptly without the last chunk) and injects faults (fail_next, forbid, an oversized
list, an over-long watch line, expired continue tokens, watches closed at once). Every request is
logged with its query and token.
"""

import base64
import copy
import json
import threading
import time
import urllib.parse

from https_stub import (StubHandler, StubServer, bearer_token, reserve_port,  # noqa: F401
                        start_server, stop_server)
from kubelet_stub import make_certificates  # noqa: F401

WATCH_LIMIT = 120.0  # seconds a watch is held at most, whatever timeoutSeconds asks


def status_object(code, reason, message, details=None):
    """A metav1.Status as the API server sends it for a failure."""
    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
              "message": message, "reason": reason, "code": code}
    if details is not None:
        status["details"] = details
    return status


def object_key(obj):
    meta = obj.get("metadata", {})
    namespace = meta.get("namespace")
    return f"{namespace}/{meta['name']}" if namespace else meta["name"]


class Collection:
    """One resource collection, e.g. /api/v1/services: kind Service, list kind ServiceList."""

    def __init__(self, path, kind, api_version):
        self.path = path
        self.kind = kind
        self.api_version = api_version
        self.items = {}  # key -> object (without kind/apiVersion)


class _Handler(StubHandler):
    server_version = "netmon-kube-api-stub"

    def send_json(self, status, document):
        self.send_body(status, json.dumps(document).encode())

    def start_chunked(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def chunk(self, data):
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def end_chunked(self):
        self.wfile.write(b"0\r\n\r\n")

    def do_GET(self):  # noqa: N802 - http.server's naming
        try:
            self.server.stub._handle(self)
        except OSError:
            pass  # the client went away


class _Server(StubServer):
    handler_class = _Handler


class KubeApiStub:
    """The API server's list and watch on https://127.0.0.1:<port> (http:// without a
    certificate). Not listening until start(); `port` may be reserved beforehand. Thread-safe."""

    def __init__(self, certfile, keyfile, token, port=0):
        self.certfile = certfile
        self.keyfile = keyfile
        self.port = port
        self._lock = threading.Condition()
        self._token = token
        self._collections = {}
        self._rv = 100
        self._history = []  # (rv, path, type, object with kind/apiVersion)
        self._compacted = 0  # a watch from a version below this one is too old
        self._watches = []  # open watches: {"path", "close": None|"clean"|"abrupt", "bookmarks"}
        self._snapshots = {}  # continue token id -> (rv, [objects])
        self._fail_next = []
        self._forbidden = False
        self._gone_as_status = False
        self._oversized_list = None
        self._long_line = None
        self._expire_continue = 0
        self._close_watches_at_once = False
        self.log = []  # per request: path, resource, query, token, status, kind, time
        self._server = None
        self._thread = None

    # -- objects

    def add_collection(self, path, kind, api_version):
        with self._lock:
            self._collections[path] = Collection(path, kind, api_version)

    def load_list(self, path, document):
        """A real list response (e.g. a fixture): its kind names the collection, its items
        are the objects, its resourceVersion the counter's value (if higher)."""
        kind = document["kind"]
        assert kind.endswith("List"), kind
        with self._lock:
            collection = Collection(path, kind[:-len("List")], document["apiVersion"])
            for item in document.get("items") or []:
                collection.items[object_key(item)] = copy.deepcopy(item)
            self._collections[path] = collection
            self._rv = max(self._rv, int(document["metadata"]["resourceVersion"]))

    def keys(self, path):
        with self._lock:
            return sorted(self._collections[path].items)

    @property
    def resource_version(self):
        with self._lock:
            return str(self._rv)

    def put(self, path, obj):
        """Creates (ADDED) or replaces (MODIFIED) an object; returns its new resourceVersion."""
        with self._lock:
            collection = self._collections[path]
            key = object_key(obj)
            kind = "MODIFIED" if key in collection.items else "ADDED"
            self._rv += 1
            stored = copy.deepcopy(obj)
            stored.setdefault("metadata", {})["resourceVersion"] = str(self._rv)
            stored.pop("kind", None)
            stored.pop("apiVersion", None)
            collection.items[key] = stored
            self._history.append((self._rv, path, kind, self._typed(collection, stored)))
            self._lock.notify_all()
            return str(self._rv)

    def delete(self, path, key):
        with self._lock:
            collection = self._collections[path]
            gone = collection.items.pop(key)
            self._rv += 1
            last = copy.deepcopy(gone)
            last["metadata"]["resourceVersion"] = str(self._rv)
            self._history.append((self._rv, path, "DELETED", self._typed(collection, last)))
            self._lock.notify_all()
            return str(self._rv)

    def put_unseen(self, path, obj):
        """Creates or replaces an object that no watch is told about: the history is compacted
        past the change at once, as when a watch fell behind a compaction. A watch resumed
        from an earlier version gets 410 Gone; only a new list shows the object. Returns its
        resourceVersion."""
        with self._lock:
            collection = self._collections[path]
            self._rv += 1
            stored = copy.deepcopy(obj)
            stored.setdefault("metadata", {})["resourceVersion"] = str(self._rv)
            stored.pop("kind", None)
            stored.pop("apiVersion", None)
            collection.items[object_key(obj)] = stored
            self._compacted = self._rv
            self._history = [h for h in self._history if h[0] >= self._compacted]
            return str(self._rv)

    def bump(self, count=1):
        """Advances the version counter, as changes to other resources do."""
        with self._lock:
            self._rv += count
            return str(self._rv)

    def bookmark(self, path=None):
        """Sends each open watch (of `path`) a BOOKMARK at the current version; returns it."""
        with self._lock:
            for watch in self._watches:
                if path is None or watch["path"] == path:
                    watch["bookmarks"].append(self._rv)
            self._lock.notify_all()
            return str(self._rv)

    def compact(self):
        """Forgets the history: a watch from a version below the current one is too old."""
        with self._lock:
            self._compacted = self._rv
            self._history = [h for h in self._history if h[0] >= self._compacted]

    def close_watches(self, abrupt=False):
        """Ends the open watches: with the last chunk, or (abrupt) by closing the connection
        mid-stream, as a broken proxy or a restarting server does."""
        with self._lock:
            for watch in self._watches:
                watch["close"] = "abrupt" if abrupt else "clean"
            self._lock.notify_all()

    def open_watch_count(self):
        with self._lock:
            return sum(1 for w in self._watches if w["close"] is None)

    # -- faults

    def require_token(self, token):
        with self._lock:
            self._token = token

    def fail_next(self, count, status=500):
        with self._lock:
            self._fail_next = [status] * count

    def forbid(self, on=True):
        with self._lock:
            self._forbidden = on

    def gone_as_http_status(self, on=True):
        with self._lock:
            self._gone_as_status = on

    def oversized_list_next(self, size):
        """The next list answers 200 with a `size`-byte body (valid JSON: padding)."""
        with self._lock:
            self._oversized_list = size

    def long_line_next(self, size):
        """The next watch sends, first, an ADDED event line of about `size` bytes."""
        with self._lock:
            self._long_line = size

    def expire_continue_next(self, count=1):
        """The next `count` list requests with a continue token get 410 Expired."""
        with self._lock:
            self._expire_continue = count

    def close_watches_at_once(self, on=True):
        """Watches are accepted (200) and ended at once with nothing in them."""
        with self._lock:
            self._close_watches_at_once = on

    # -- observations

    def requests(self, kind=None):
        with self._lock:
            return [dict(r) for r in self.log if kind is None or r["kind"] == kind]

    def tokens_seen(self):
        with self._lock:
            return [r["token"] for r in self.log]

    # -- lifecycle

    @property
    def url(self):
        assert self.port, "the stub has no port yet"
        return f"{'https' if self.certfile else 'http'}://127.0.0.1:{self.port}"

    def start(self):
        start_server(self, _Server, "kube-api-stub")
        return self

    def stop(self):
        if self._server is None:
            return
        self.close_watches(abrupt=True)
        stop_server(self)

    # -- serving

    @staticmethod
    def _typed(collection, obj):
        typed = {"kind": collection.kind, "apiVersion": collection.api_version}
        typed.update(copy.deepcopy(obj))
        return typed

    def _handle(self, handler):
        path, _, query_text = handler.path.partition("?")
        query = dict(urllib.parse.parse_qsl(query_text, keep_blank_values=True))
        token = bearer_token(handler)
        watch = query.get("watch") in ("1", "true")
        with self._lock:
            collection = self._collections.get(path)
            forced = self._fail_next.pop(0) if self._fail_next else None
            if token != self._token:
                status = 401
            elif self._forbidden:
                status = 403
            elif forced is not None:
                status = forced
            elif collection is None:
                status = 404
            else:
                status = 200
            entry = {"path": handler.path, "resource": path, "query": query, "token": token,
                     "status": status, "kind": "watch" if watch else "list",
                     "time": time.monotonic()}
            self.log.append(entry)
        if status == 401:
            handler.send_json(401, status_object(401, "Unauthorized", "Unauthorized"))
        elif status == 403:
            verb = "watch" if watch else "list"
            name = path.rstrip("/").rsplit("/", 1)[-1]
            handler.send_json(403, status_object(
                403, "Forbidden",
                f'{name} is forbidden: User "system:serviceaccount:netmon:netmon" cannot '
                f'{verb} resource "{name}" in API group "" at the cluster scope',
                {"kind": name}))
        elif status == 404:
            handler.send_json(404, status_object(404, "NotFound",
                                                 "the server could not find the requested "
                                                 "resource"))
        elif status != 200:
            handler.send_json(status, status_object(status, "InternalError",
                                                    "Internal error occurred: injected"))
        elif watch:
            self._watch(handler, collection, query, entry)
        else:
            self._list(handler, collection, query, entry)

    def _list(self, handler, collection, query, entry):
        with self._lock:
            oversized, self._oversized_list = self._oversized_list, None
            token = query.get("continue")
            expire = bool(token) and self._expire_continue > 0
            if expire:
                self._expire_continue -= 1
            if not token and query.get("resourceVersion"):
                # From the watch cache (resourceVersion "0" or "not older than"): the whole
                # list at once, limit ignored, as servers before 1.31 answer.
                rv = self._rv
                objects = [copy.deepcopy(collection.items[k]) for k in sorted(collection.items)]
                query = dict(query, limit="0")
                start, snapshot_id = 0, None
            elif token and not expire:
                decoded = json.loads(base64.b64decode(token))
                rv, objects = self._snapshots[decoded["snapshot"]]
                start, snapshot_id = decoded["start"], decoded["snapshot"]
            else:
                rv = self._rv
                objects = [copy.deepcopy(collection.items[k]) for k in sorted(collection.items)]
                start, snapshot_id = 0, len(self._snapshots)
                self._snapshots[snapshot_id] = (rv, objects)
        if expire:
            entry["status"] = 410
            handler.send_json(410, status_object(
                410, "Expired",
                "The provided continue parameter is too old to display a consistent list result. "
                "You can start a new list without the continue parameter."))
            return
        if oversized is not None:
            prefix = json.dumps({"kind": collection.kind + "List",
                                 "apiVersion": collection.api_version,
                                 "metadata": {"resourceVersion": str(rv)}, "items": []})
            body = prefix[:-1] + ', "padding": "' + "x" * max(0, oversized - len(prefix) - 15) \
                + '"}'
            handler.send_json(200, json.loads(body))
            return
        limit = int(query.get("limit") or 0) or len(objects)
        page = objects[start:start + limit]
        metadata = {"resourceVersion": str(rv)}
        if start + limit < len(objects):
            metadata["continue"] = base64.b64encode(json.dumps(
                {"v": "meta.k8s.io/v1", "rv": rv, "start": start + limit,
                 "snapshot": snapshot_id}).encode()).decode()
            metadata["remainingItemCount"] = len(objects) - start - limit
        handler.send_json(200, {"kind": collection.kind + "List",
                                "apiVersion": collection.api_version,
                                "metadata": metadata, "items": page})

    def _write_event(self, handler, event_type, obj):
        line = json.dumps({"type": event_type, "object": obj}).encode() + b"\n"
        # Split in two chunks, so that the client joins lines across reads.
        half = len(line) // 2
        handler.chunk(line[:half])
        handler.chunk(line[half:])

    def _watch(self, handler, collection, query, entry):
        since = int(query.get("resourceVersion") or 0)
        timeout = min(float(query.get("timeoutSeconds") or WATCH_LIMIT), WATCH_LIMIT)
        with self._lock:
            too_old = since < self._compacted
            compacted = self._compacted
            gone_as_status = self._gone_as_status
            at_once = self._close_watches_at_once
            long_line, self._long_line = self._long_line, None
        if too_old:
            status = status_object(410, "Expired",
                                   f"too old resource version: {since} ({compacted})")
            entry["gone"] = True
            if gone_as_status:
                entry["status"] = 410
                handler.send_json(410, status)
                return
            handler.start_chunked()
            self._write_event(handler, "ERROR", status)
            handler.end_chunked()
            return
        handler.start_chunked()
        if at_once:
            handler.end_chunked()
            return
        if long_line is not None:
            with self._lock:
                self._rv += 1
                big = {"kind": collection.kind, "apiVersion": collection.api_version,
                       "metadata": {"name": "huge", "namespace": "default",
                                    "resourceVersion": str(self._rv),
                                    "annotations": {"pad": "x" * long_line}}}
            self._write_event(handler, "ADDED", big)
        watch = {"path": collection.path, "close": None, "bookmarks": []}
        deadline = time.monotonic() + timeout
        sent = since
        with self._lock:
            self._watches.append(watch)
        try:
            while True:
                with self._lock:
                    while True:
                        pending = [h for h in self._history
                                   if h[1] == collection.path and h[0] > sent]
                        bookmarks, watch["bookmarks"] = watch["bookmarks"], []
                        remaining = deadline - time.monotonic()
                        if pending or bookmarks or watch["close"] or remaining <= 0:
                            break
                        self._lock.wait(min(remaining, 0.5))
                    close = watch["close"]
                for rv, _, event_type, obj in pending:
                    self._write_event(handler, event_type, obj)
                    sent = rv
                for rv in bookmarks:
                    self._write_event(handler, "BOOKMARK", {
                        "kind": collection.kind, "apiVersion": collection.api_version,
                        "metadata": {"resourceVersion": str(rv),
                                     "creationTimestamp": None}})
                if close == "abrupt":
                    return  # no last chunk: the connection just closes
                if close == "clean" or deadline - time.monotonic() <= 0:
                    handler.end_chunked()
                    return
        finally:
            with self._lock:
                self._watches.remove(watch)


# ---------------------------------------------------------------------------------------------
# Objects in the wire format of a current API server (a GET of one object; put() drops kind and
# apiVersion, as list items carry none, and watch events add them back)

SERVICES = "/api/v1/services"
ENDPOINTSLICES = "/apis/discovery.k8s.io/v1/endpointslices"
NODES = "/api/v1/nodes"
PODS = "/api/v1/pods"
COLLECTIONS = {
    SERVICES: ("Service", "v1"),
    ENDPOINTSLICES: ("EndpointSlice", "discovery.k8s.io/v1"),
    NODES: ("Node", "v1"),
    PODS: ("Pod", "v1"),
}
CREATED = "2026-12-06T10:00:00Z"


def add_collections(stub, paths=tuple(COLLECTIONS)):
    """Empty collections of `paths` (of COLLECTIONS) in `stub`."""
    for path in paths:
        kind, api_version = COLLECTIONS[path]
        stub.add_collection(path, kind, api_version)


def ip_family(address):
    return "IPv6" if ":" in address else "IPv4"


def service_object(name, namespace, uid, cluster_ips, ports, service_type="ClusterIP",
                   external_ips=(), ingress_ips=(), selector=None):
    """A Service. cluster_ips: one per family (dual-stack: IPv4 first), [] for "None"
    (headless); ports: (name, port, protocol, node_port or None)."""
    spec = {
        "ports": [dict({"name": port_name, "protocol": protocol, "port": port,
                        "targetPort": port},
                       **({"nodePort": node_port} if node_port else {}))
                  for port_name, port, protocol, node_port in ports],
        "selector": dict(selector or {"app": name}),
        "clusterIP": cluster_ips[0] if cluster_ips else "None",
        "clusterIPs": list(cluster_ips) or ["None"],
        "type": service_type,
        "sessionAffinity": "None",
        "ipFamilies": [ip_family(a) for a in cluster_ips] or ["IPv4"],
        "ipFamilyPolicy": "PreferDualStack" if len(cluster_ips) > 1 else "SingleStack",
        "internalTrafficPolicy": "Cluster",
    }
    if external_ips:
        spec["externalIPs"] = list(external_ips)
    if service_type in ("NodePort", "LoadBalancer"):
        spec["externalTrafficPolicy"] = "Cluster"
    status = {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"} for ip in ingress_ips]}
              if ingress_ips else {}}
    return {
        "kind": "Service", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace, "uid": uid,
                     "resourceVersion": "1", "creationTimestamp": CREATED,
                     "labels": {"app": name}},
        "spec": spec,
        "status": status,
    }


def endpoint_slice_object(name, namespace, uid, service, service_uid, address_type, endpoints,
                          ports):
    """An EndpointSlice of `service` as the EndpointSlice controller writes it. endpoints:
    dicts with address, node_name, pod (namespace, name, uid) and optional ready/serving/
    terminating; ports: (name, port)."""
    return {
        "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
        "metadata": {
            "name": name, "generateName": f"{service}-", "namespace": namespace, "uid": uid,
            "resourceVersion": "1", "generation": 1, "creationTimestamp": CREATED,
            "labels": {"endpointslice.kubernetes.io/managed-by":
                       "endpointslice-controller.k8s.io",
                       "kubernetes.io/service-name": service},
            "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": CREATED},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service,
                                 "uid": service_uid, "controller": True,
                                 "blockOwnerDeletion": True}],
        },
        "addressType": address_type,
        "endpoints": [{
            "addresses": [e["address"]],
            "conditions": {"ready": e.get("ready", True), "serving": e.get("serving", True),
                           "terminating": e.get("terminating", False)},
            "nodeName": e["node_name"],
            "targetRef": {"kind": "Pod", "namespace": e["pod"][0], "name": e["pod"][1],
                          "uid": e["pod"][2]},
        } for e in endpoints],
        "ports": [{"name": port_name, "protocol": "TCP", "port": port}
                  for port_name, port in ports],
    }


def node_object(name, uid, internal_ips, pod_cidrs=()):
    """A Ready Node with InternalIP addresses (one per family) and its hostname."""
    return {
        "kind": "Node", "apiVersion": "v1",
        "metadata": {"name": name, "uid": uid, "resourceVersion": "1",
                     "creationTimestamp": CREATED,
                     "labels": {"kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name,
                                "kubernetes.io/os": "linux"}},
        "spec": {"podCIDR": pod_cidrs[0], "podCIDRs": list(pod_cidrs)} if pod_cidrs else {},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "kubelet is posting ready status",
                            "lastHeartbeatTime": CREATED, "lastTransitionTime": CREATED}],
            "addresses": [{"type": "InternalIP", "address": ip} for ip in internal_ips]
            + [{"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"kubeletVersion": "v1.31.2", "kubeProxyVersion": "v1.31.2",
                         "containerRuntimeVersion": "containerd://1.7.22",
                         "operatingSystem": "linux", "architecture": "amd64"},
        },
    }
