"""What the HTTPS stubs of the integration tests (kubelet_stub.py, kube_api_stub.py) share: the
request handler's basics, a threaded server on 127.0.0.1 that does each connection's TLS
handshake in the connection's own thread (bounded by REQUEST_TIMEOUT, so a client that never
completes it cannot block other connections), the server's start and stop, and the bearer token
of a request.

A stub object has certfile and keyfile (None: plain HTTP), port (0: the kernel picks one at
start) and _handle(handler), called for each GET; start_server and stop_server keep the server
and its thread in the stub's _server and _thread.
"""

import http.server
import socket
import ssl
import threading

REQUEST_TIMEOUT = 10.0  # seconds a connection may take to send its request


def reserve_port():
    """A port on 127.0.0.1 where nothing listens now (for a stub started later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bearer_token(handler):
    """The token of the request's "Authorization: Bearer <token>", or None."""
    auth = handler.headers.get("Authorization")
    return auth[len("Bearer "):] if auth and auth.startswith("Bearer ") else None


class StubHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass  # the stub records requests itself; nothing goes to the test's stderr

    def send_body(self, status, body, content_type="application/json"):
        """A response with `body` (bytes), then the connection closes."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True


class StubServer(http.server.ThreadingHTTPServer):
    """Serves `handler_class` for `stub`. Subclasses may record connections (tls_failed,
    connection_started, connection_ended)."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    handler_class = StubHandler

    def __init__(self, address, stub, context):
        self.stub = stub
        self.context = context
        super().__init__(address, self.handler_class)

    def finish_request(self, request, client_address):
        # In the connection's thread: a bounded TLS handshake (unless plain HTTP), then HTTP.
        request.settimeout(REQUEST_TIMEOUT)
        try:
            tls = self.context.wrap_socket(request, server_side=True) if self.context else request
        except OSError as e:  # ssl.SSLError is an OSError
            self.tls_failed(e)
            return
        state = self.connection_started()
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            self.connection_ended(state)
            try:
                tls.close()
            except OSError:
                pass

    def tls_failed(self, error):
        pass

    def connection_started(self):
        return None

    def connection_ended(self, state):
        pass

    def handle_error(self, request, client_address):
        pass  # a client that went away mid-request; the test looks at what was recorded


def start_server(stub, server_class, name):
    """Listens on 127.0.0.1:stub.port (setting stub.port when it was 0) and serves in a thread."""
    context = None
    if stub.certfile:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(stub.certfile, stub.keyfile)
    stub._server = server_class(("127.0.0.1", stub.port), stub, context)
    stub.port = stub._server.server_address[1]
    stub._thread = threading.Thread(target=stub._server.serve_forever,
                                    kwargs={"poll_interval": 0.05}, name=name, daemon=True)
    stub._thread.start()


def stop_server(stub):
    """Stops listening and serving (connections in flight are daemon threads)."""
    stub._server.shutdown()
    stub._server.server_close()
    stub._thread.join(5)
    stub._server = None
