"""The two things every server fixture needs: a free port, and waiting until the server answers."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Callable

import httpx


def free_port() -> int:
    """A port nobody listens on now (the OS picks it; the server binds it right after)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(ready: Callable[[], bool], timeout: float, what: str, *, process: subprocess.Popen | None = None,
               log_tail: Callable[[], str] = lambda: "", interval: float = 0.2) -> None:
    """Call ``ready()`` until it is true; an HTTP error counts as "not yet". Fails early, with the
    server's log, if ``process`` exits first, and after ``timeout`` seconds."""
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before it was ready\n{log_tail()}")
        try:
            if ready():
                return
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s {last}\n{log_tail()}")


class SlowLink:
    """A TCP relay on 127.0.0.1 in front of a real server that holds each chunk of its answers
    ``delay_s`` before passing it on: a slow or congested network path, every byte still the
    server's own. ``with SlowLink(port, 0.4) as link: ... link.url``."""

    def __init__(self, target_port: int, delay_s: float):
        self.target_port, self.delay_s = target_port, delay_s
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.sockets: list[socket.socket] = [self.listener]

    def __enter__(self) -> SlowLink:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        for sock in self.sockets:
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, 0.0), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, self.delay_s), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, delay_s: float) -> None:
        try:
            while data := source.recv(65536):
                time.sleep(delay_s)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
