"""IMAGESEARCH_TRITON_TIMEOUT_S against a real tritonserver behind a slow link: a request whose answer
takes longer than the deadline fails at the deadline with a message naming it (not when the server
finally answers), and a deadline longer than the link's delay gets the server's vectors."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import numpy as np
import pytest

from imagesearch.config import Settings
from imagesearch.encoders import EncoderUnavailable, make_encoder


class SlowingLink:
    """A TCP relay on 127.0.0.1 in front of a real server that holds each chunk of the server's
    answers ``answer_delay_s`` before passing it on; unlike tests/support/net.py's ``SlowLink``, the
    delay can change while a connection is open (gRPC keeps one), so a client can start on a fast
    link and then meet a slow one."""

    def __init__(self, target_port: int):
        self.target_port, self.answer_delay_s = target_port, 0.0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.sockets: list[socket.socket] = [self.listener]

    def __enter__(self) -> SlowingLink:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        try:
            while data := source.recv(65536):
                if answers:
                    time.sleep(self.answer_delay_s)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def triton_settings(test_model_repo, link: SlowingLink) -> Settings:
    """The settings a service reads, IMAGESEARCH_TRITON_TIMEOUT_S from the environment."""
    return Settings(model_repository=test_model_repo, model="shapes-tiny", encoder="triton", triton_url=link.address,
                    triton_retry_s=1.0, triton_startup_wait_s=30.0)


def test_the_triton_timeout_bounds_each_request(triton_server, test_model_repo, monkeypatch):
    texts = ["a red circle", "a blue square"]
    expected = make_encoder(Settings(model_repository=test_model_repo, model="shapes-tiny")).encode_texts(texts)
    with SlowingLink(triton_server.grpc_port) as link:
        monkeypatch.setenv("IMAGESEARCH_TRITON_TIMEOUT_S", "0.5")
        tight = triton_settings(test_model_repo, link)
        assert tight.triton_timeout_s == 0.5
        encoder = make_encoder(tight)  # started over the fast link
        link.answer_delay_s = 3.0
        started = time.monotonic()
        with pytest.raises(EncoderUnavailable, match=rf"Triton at {link.address} did not answer for model .* within 0\.5s"):
            encoder.encode_texts(texts)
        took = time.monotonic() - started
        assert 0.4 <= took < 2.5, took  # the deadline, not the link's 3 s (and no retry of a deadline)
        encoder.close()

        link.answer_delay_s = 0.0
        monkeypatch.setenv("IMAGESEARCH_TRITON_TIMEOUT_S", "30")
        patient = make_encoder(triton_settings(test_model_repo, link))
        link.answer_delay_s = 1.0
        started = time.monotonic()
        vectors = patient.encode_texts(texts)
        assert time.monotonic() - started >= 1.0  # it did wait for the slow answer
        np.testing.assert_allclose(vectors, expected, atol=1e-5)
        patient.close()
