"""An HTTP reverse proxy that does not pass WebSockets, as some in front of servers do."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

# Headers about one hop, not the request: a proxy neither forwards nor returns them.
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "content-length"}


class _Forward(BaseHTTPRequestHandler):
    upstream: str
    cut: threading.Event
    protocol_version = "HTTP/1.1"

    def _forward(self) -> None:
        if self.cut.is_set():  # the link is down: no answer, the connection dropped
            self.close_connection = True
            return
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self.send_error(502, "this proxy does not pass WebSockets")
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers.pop("Host", None)
        with httpx.Client(base_url=self.upstream, timeout=60) as client:
            request = client.build_request(self.command, self.path, headers=headers, content=body)
            response = client.send(request, stream=True)
            content = b"".join(response.iter_raw())
        self.send_response(response.status_code)
        for key, value in response.headers.multi_items():
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the tests read the CLI's output, not the proxy's


@contextmanager
def http_only_proxy(upstream: str) -> Iterator[str]:
    """Serve a proxy to ``upstream`` (``http://host:port/``) on a free port; yields its URL."""
    with cuttable_proxy(upstream) as (url, _):
        yield url


@contextmanager
def cuttable_proxy(upstream: str) -> Iterator[tuple[str, threading.Event]]:
    """The same proxy, and an event that, while set, cuts it: every request through it is
    dropped unanswered, as over a link that is down."""
    cut = threading.Event()
    handler = type("Forward", (_Forward,), {"upstream": upstream.rstrip("/"), "cut": cut})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", cut
    finally:
        server.shutdown()
        server.server_close()
