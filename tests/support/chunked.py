"""A client that streams a request body in chunks of unknown total (``Transfer-Encoding: chunked``)
and, like a careful browser, reads the answer while it sends: a server that refuses the body early
answers before the client has sent it all, then stops reading it. Plain sockets, as an ordinary
HTTP client sends the whole body before it looks for an answer."""

from __future__ import annotations

import http.client
import select
import socket
import threading
from dataclasses import dataclass, field


@dataclass
class Answer:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    sent: int = 0  # body bytes the server took before it answered or stopped reading
    error: str = ""  # why no answer came, if none did


def post_chunked(port: int, path: str, chunk: bytes, total: int, headers: dict[str, str] | None = None,
                 prefix: bytes = b"", suffix: bytes = b"", timeout_s: float = 60.0) -> Answer:
    """POST ``prefix``, then ``chunk`` repeated up to ``total`` bytes, then ``suffix``, to 127.0.0.1:``port``,
    in chunks; stop sending as soon as an answer arrives."""
    answer, answered = Answer(), threading.Event()
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Transfer-Encoding: chunked",
            *(f"{k}: {v}" for k, v in (headers or {}).items())]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())

    def read() -> None:
        try:
            response = http.client.HTTPResponse(sock)
            response.begin()
            answer.status, answer.headers = response.status, {k.lower(): v for k, v in response.getheaders()}
            answer.body = response.read()
        except OSError as exc:
            answer.error = repr(exc)
        finally:
            answered.set()

    reader = threading.Thread(target=read, name="chunked-answer", daemon=True)
    reader.start()
    try:
        parts = [prefix] if prefix else []
        for part in _parts(parts, chunk, total, suffix):
            if not _send(sock, b"%x\r\n" % len(part) + part + b"\r\n", answered):
                break
            answer.sent += len(part)
        else:
            _send(sock, b"0\r\n\r\n", answered)
        if not answered.wait(timeout_s):
            answer.error = f"no answer in {timeout_s:.0f}s"
    finally:
        sock.close()
    reader.join(5)
    return answer


def _parts(parts: list[bytes], chunk: bytes, total: int, suffix: bytes):
    yield from parts
    for _ in range(total // len(chunk)):
        yield chunk
    if suffix:
        yield suffix


def _send(sock: socket.socket, frame: bytes, answered: threading.Event) -> bool:
    """Send ``frame`` unless an answer arrives first (or the server closes); whether it all went."""
    view, offset = memoryview(frame), 0
    while offset < len(frame):
        if answered.is_set():
            return False
        if not select.select([], [sock], [], 0.05)[1]:
            continue  # the server is not reading: look for its answer again
        try:
            offset += sock.send(view[offset:])
        except OSError:
            return False
    return True
