"""A real HTTP server on 127.0.0.1 (stdlib, in a thread) that serves what a test registers.

    with ImageServer() as server:
        server.add("/red.jpg", jpeg_bytes)
        server.add_sequence("/flaky.jpg", [Reply(500), Reply(200, jpeg_bytes)])
        server.add_redirect("/old.jpg", "/red.jpg")
        fetch(server.url("/red.jpg"))

Each path answers with its replies in turn; the last one repeats. ``hits[path]`` counts requests,
``started`` times them,
``user_agents`` records who asked, ``max_in_flight`` the most concurrent requests. Unknown paths
answer 404.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "image/jpeg"
    headers: dict[str, str] = field(default_factory=dict)
    # send the first body_delay_after bytes, then stall body_delay_s before the rest (a slow body)
    body_delay_s: float = 0.0
    body_delay_after: int = 16
    # send the body ``repeat`` times with chunked encoding and no Content-Length (an endless stream)
    repeat: int = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real image hosts
    disable_nagle_algorithm = True  # headers and body go out as separate writes: don't wait for an ACK
    server: _Server

    def do_GET(self):  # noqa: N802 (stdlib name)
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        reply = owner._next_reply(path, self.headers.get("User-Agent", ""))
        self._counted = True
        try:
            self._send(reply)
        finally:
            self._count_out()

    def _count_out(self) -> None:
        """Out of ``in_flight`` just before the last bytes go: once the client has them it may send
        its next request, which could otherwise be counted in before this thread runs again."""
        if self._counted:
            self._counted = False
            with self.server.owner._lock:
                self.server.owner.in_flight -= 1

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        if reply.repeat:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        try:
            if reply.repeat:
                chunk = b"%x\r\n%s\r\n" % (len(reply.body), reply.body)
                for _ in range(reply.repeat):
                    self.wfile.write(chunk)
                self._count_out()
                self.wfile.write(b"0\r\n\r\n")
            elif reply.body_delay_s:
                self.wfile.write(reply.body[: reply.body_delay_after])
                self.wfile.flush()
                time.sleep(reply.body_delay_s)
                self._count_out()
                self.wfile.write(reply.body[reply.body_delay_after:])
            else:
                self._count_out()
                self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout, size cap)
            self.close_connection = True

    def log_message(self, *args):  # keep test output quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024
    owner: ImageServer


class ImageServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._routes: dict[str, list[Reply]] = {}
        self._lock = threading.Lock()
        self.hits: Counter[str] = Counter()
        self.started: list[tuple[float, str]] = []  # (time.monotonic(), path) of every request
        self.user_agents: list[str] = []
        self.in_flight = self.max_in_flight = 0  # concurrent requests, now and at most
        self._server = _Server((host, port), _Handler)
        self._server.owner = self
        self._thread: threading.Thread | None = None

    # --- registering content -----------------------------------------------------------------
    def add(self, path: str, body: bytes, content_type: str = "image/jpeg",
            headers: dict[str, str] | None = None, status: int = 200) -> str:
        return self.add_sequence(path, [Reply(status, body, content_type, dict(headers or {}))])

    def add_sequence(self, path: str, replies: list[Reply]) -> str:
        """Answer the n-th request to ``path`` with ``replies[n]``; the last reply repeats."""
        with self._lock:
            self._routes[path] = list(replies)
        return self.url(path)

    def add_redirect(self, path: str, location: str, status: int = 302) -> str:
        return self.add(path, b"", "text/plain", {"Location": location}, status)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    @property
    def host(self) -> str:
        return self._server.server_address[0]

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def _next_reply(self, path: str, user_agent: str) -> Reply:
        with self._lock:
            n = self.hits[path]
            self.hits[path] += 1
            self.started.append((time.monotonic(), path))
            self.user_agents.append(user_agent)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            replies = self._routes.get(path)
        if not replies:
            return Reply(404, b"not found", "text/plain")
        return replies[min(n, len(replies) - 1)]

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> ImageServer:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="image-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> ImageServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_forever_in_process(images: dict[str, bytes], ready, port_value) -> None:
    """Entry point for running the server in a child process (the benchmark keeps it off its CPU)."""
    server = ImageServer()
    for path, body in images.items():
        server.add(path, body)
    port_value.value = server.port
    ready.set()
    server._server.serve_forever(poll_interval=0.05)
