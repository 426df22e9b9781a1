"""The two things every server fixture needs: a free port, and waiting until the server answers."""

from __future__ import annotations

import socket
import subprocess
import time
from typing import Callable

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
