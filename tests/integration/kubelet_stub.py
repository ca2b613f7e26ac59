"""A stand-in for the kubelet's read-only pod listing (GET /pods over HTTPS), for the Kubernetes
integration tests.

It runs in a thread of the pytest process and listens on 127.0.0.1 only. The test sets the
PodList it serves, the bearer token it requires, and faults (401 for the next N requests, bad
JSON, bytes that are not HTTP, a Content-Length far over the agent's cap); the stub counts
requests, records the tokens and the request header lines it saw (as they arrived, so that a
header smuggled in through the token shows as a line of its own) and the TLS handshakes that
failed. Without a certificate it serves plain HTTP.
The TLS handshake runs in the connection's own thread, so a client that never completes it
cannot block other connections. Every connection is recorded with how it ended: "tls_failed"
(the handshake failed here), "no_request" (closed without a request, e.g. a client that
verifies the certificate only after the handshake and then hangs up) or "request".

Certificates come from the openssl command-line tool (make_certificates): a test CA, a serving
certificate it signed for IP 127.0.0.1, and a second, unrelated CA.
"""

import datetime
import json
import os
import subprocess
import threading
import time

from https_stub import (StubHandler, StubServer, bearer_token, reserve_port,  # noqa: F401
                        start_server, stop_server)

OPENSSL_TIMEOUT = 60.0  # seconds per openssl command
HANG_LIMIT = 60.0  # seconds a hung request is held at most


# ---------------------------------------------------------------------------------------------
# Certificates


def _openssl(*args, cwd):
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=OPENSSL_TIMEOUT)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed ({result.returncode}):\n"
                           f"{result.stderr}")


def _self_signed_ca(directory, name, common_name):
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN={common_name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    return os.path.join(directory, f"{name}.pem")


def make_certificates(directory):
    """Creates, in `directory`, a CA ("ca.pem"), a serving certificate it signed for
    127.0.0.1 with subjectAltName IP:127.0.0.1 ("server.pem", key "server.key"), and an
    unrelated CA ("other-ca.pem"). Returns a dict of their paths: ca, cert, key, other_ca."""
    ca = _self_signed_ca(directory, "ca", "netmon test kubelet CA")
    with open(os.path.join(directory, "server.ext"), "w", encoding="ascii") as f:
        f.write("subjectAltName=IP:127.0.0.1\n"
                "basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-sha256", "-keyout", "server.key",
             "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=directory)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-sha256", "-days", "2", "-extfile", "server.ext",
             "-out", "server.pem", cwd=directory)
    other = _self_signed_ca(directory, "other-ca", "netmon unrelated CA")
    return {
        "ca": ca,
        "cert": os.path.join(directory, "server.pem"),
        "key": os.path.join(directory, "server.key"),
        "other_ca": other,
    }


# ---------------------------------------------------------------------------------------------
# PodList documents in the kubelet's shape


def rfc3339(ts=None):
    moment = datetime.datetime.fromtimestamp(time.time() if ts is None else ts,
                                             tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_item(*, name, namespace, uid, node_name, labels, owner, containers, qos_class,
             pod_ip, host_ip="10.0.0.10", annotations=None):
    """One item of a PodList as the kubelet's /pods returns it.

    owner: (kind, name) of the controller, or None. containers: dicts with name, image,
    image_id, container_id (the bare id; listed as "containerd://<id>")."""
    started = rfc3339(time.time() - 3600)
    metadata = {
        "name": name,
        "namespace": namespace,
        "uid": uid,
        "resourceVersion": "48151623",
        "creationTimestamp": started,
        "labels": dict(labels),
        "annotations": {
            "kubernetes.io/config.seen": started,
            "kubernetes.io/config.source": "api",
            **(annotations or {}),
        },
    }
    if owner is not None:
        kind, owner_name = owner
        api_version = "batch/v1" if kind in ("Job", "CronJob") else "apps/v1"
        metadata["ownerReferences"] = [{
            "apiVersion": api_version,
            "kind": kind,
            "name": owner_name,
            "uid": "0c5f1e9a-3b47-4d2e-9f61-2a8b7c6d5e4f",
            "controller": True,
            "blockOwnerDeletion": True,
        }]
    return {
        "metadata": metadata,
        "spec": {
            "nodeName": node_name,
            "restartPolicy": "Always",
            "serviceAccountName": "default",
            "containers": [{
                "name": c["name"],
                "image": c["image"],
                "imagePullPolicy": "IfNotPresent",
                "resources": {},
            } for c in containers],
        },
        "status": {
            "phase": "Running",
            "qosClass": qos_class,
            "hostIP": host_ip,
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "startTime": started,
            "conditions": [{"type": "Ready", "status": "True",
                            "lastTransitionTime": started}],
            "containerStatuses": [{
                "name": c["name"],
                "state": {"running": {"startedAt": started}},
                "lastState": {},
                "ready": True,
                "restartCount": 0,
                "image": c["image"],
                "imageID": c["image_id"],
                "containerID": "containerd://" + c["container_id"],
                "started": True,
            } for c in containers],
        },
    }


def pod_list(items):
    return {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": list(items)}


# ---------------------------------------------------------------------------------------------
# The server


class _Handler(StubHandler):
    server_version = "netmon-kubelet-stub"

    def _send_raw(self, data):
        """Bytes as they are, instead of an HTTP response."""
        self.wfile.write(data)
        self.close_connection = True

    def _send_oversized(self, length, chunk=1 << 16):
        """200 announcing `length` bytes of body, then spaces until the client hangs up (or
        `length` bytes went out). Returns the body bytes written."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(length))
        self.send_header("Connection", "close")
        self.end_headers()
        sent = 0
        block = b" " * chunk
        try:
            while sent < length:
                n = min(chunk, length - sent)
                self.wfile.write(block[:n])
                sent += n
        except OSError:
            pass  # the client stopped reading and closed
        self.close_connection = True
        return sent

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.server.stub._handle(self)


class _Server(StubServer):
    handler_class = _Handler

    def tls_failed(self, error):
        self.stub._record_tls_failure(error)

    def connection_started(self):
        return self.stub.request_count()

    def connection_ended(self, requests_before):
        self.stub._record_connection(requests_before)


class KubeletStub:
    """The kubelet's GET /pods on https://127.0.0.1:<port>/pods (http:// when certfile is None).

    Not listening until start(); `port` may be reserved beforehand (0: the kernel picks one at
    start). Thread-safe: the test thread configures it while connection threads serve."""

    def __init__(self, certfile, keyfile, token, port=0):
        self.certfile = certfile
        self.keyfile = keyfile
        self.port = port
        self._lock = threading.Lock()
        self._token = token
        self._pods = pod_list([])
        self._fail_next = []  # statuses for the next requests, in order
        self._garbage = False
        self._raw = None  # bytes sent instead of a response
        self._oversized = None  # Content-Length announced by an oversized 200
        self.oversized_bytes_sent = []  # body bytes written per oversized response
        self._hang = False
        self._release = threading.Event()
        self.log = []  # per HTTP request: {"path", "token", "status", "garbage", "time"}
        self.connections = []  # per TCP connection: "tls_failed", "no_request" or "request"
        self.tls_failures = []  # str of each failed TLS handshake
        self._server = None
        self._thread = None

    # -- configuration (any time)

    @property
    def url(self):
        assert self.port, "the stub has no port yet"
        scheme = "https" if self.certfile else "http"
        return f"{scheme}://127.0.0.1:{self.port}/pods"

    def set_pods(self, items):
        with self._lock:
            self._pods = pod_list(items)

    def require_token(self, token):
        with self._lock:
            self._token = token

    def fail_next(self, count, status=401):
        """Answers the next `count` requests with `status` (whatever their token)."""
        with self._lock:
            self._fail_next = [status] * count

    def serve_garbage(self, on=True):
        """Answers 200 with a body that is not JSON (when the token is right)."""
        with self._lock:
            self._garbage = on

    def serve_raw(self, data):
        """Answers every request with `data` as it is (not HTTP), or normally again with None."""
        with self._lock:
            self._raw = data

    def serve_oversized(self, length):
        """Answers 200 with Content-Length `length` and streams spaces until the client hangs up
        (None: normally again)."""
        with self._lock:
            self._oversized = length

    def hang(self, on=True):
        """Reads requests but answers none (until hang(False) or stop(), at most
        HANG_LIMIT seconds): a kubelet that stopped responding."""
        with self._lock:
            self._hang = on
            if on:
                self._release.clear()
        if not on:
            self._release.set()

    # -- observations

    def requests(self):
        with self._lock:
            return [dict(r) for r in self.log]

    def request_count(self):
        with self._lock:
            return len(self.log)

    def tokens_seen(self):
        with self._lock:
            return [r["token"] for r in self.log]

    def header_names_seen(self):
        """The names of the request header lines, per request, as they arrived."""
        with self._lock:
            return [[name for name, _ in r["headers"]] for r in self.log]

    def ok_count(self):
        """Requests answered 200 with a PodList."""
        with self._lock:
            return sum(1 for r in self.log
                       if r["status"] == 200 and not r["garbage"] and not r["hung"])

    def tls_failure_count(self):
        with self._lock:
            return len(self.tls_failures)

    def connection_outcomes(self):
        with self._lock:
            return list(self.connections)

    # -- lifecycle

    def start(self):
        start_server(self, _Server, "kubelet-stub")
        return self

    def stop(self):
        self._release.set()  # hung requests end (the client may be gone already)
        if self._server is None:
            return
        with self._lock:
            self._oversized = None  # an oversized response in flight ends
        stop_server(self)

    @property
    def running(self):
        return self._server is not None

    # -- serving

    def _record_tls_failure(self, error):
        with self._lock:
            self.tls_failures.append(str(error))
            self.connections.append("tls_failed")

    def _record_connection(self, requests_before):
        with self._lock:
            self.connections.append("request" if len(self.log) > requests_before
                                    else "no_request")

    def _handle(self, handler):
        token = bearer_token(handler)
        with self._lock:
            expected = self._token
            forced = self._fail_next.pop(0) if self._fail_next else None
            garbage = self._garbage
            raw = self._raw
            oversized = self._oversized
            hang = self._hang
            pods = self._pods
            path = handler.path
            if path.split("?", 1)[0] != "/pods":
                status = 404
            elif forced is not None:
                status = forced
            elif token != expected:
                status = 401
            else:
                status = 200
            self.log.append({"path": path, "token": token, "status": status,
                             "garbage": status == 200 and (garbage or raw is not None
                                                           or oversized is not None),
                             "hung": hang, "time": time.monotonic(),
                             "headers": list(handler.headers.items())})
        if hang:
            self._release.wait(HANG_LIMIT)
        if raw is not None:
            handler._send_raw(raw)
        elif status == 200 and oversized is not None:
            sent = handler._send_oversized(oversized)
            with self._lock:
                self.oversized_bytes_sent.append(sent)
        elif status == 200 and garbage:
            handler.send_body(200, b'{"kind":"PodList","apiVersion":"v1","items":[{"metadata":')
        elif status == 200:
            handler.send_body(200, json.dumps(pods).encode())
        elif status == 404:
            handler.send_body(404, b"404 page not found\n", "text/plain; charset=utf-8")
        else:
            reason = {401: "Unauthorized", 403: "Forbidden"}.get(status, "Error")
            handler.send_body(status, f"{reason}\n".encode(), "text/plain; charset=utf-8")

