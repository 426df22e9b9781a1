"""The cap on a request's body, for every route: a body over it is refused with 413 before anything
can hold it, whether it declares its length or comes in chunks of unknown total.

FastAPI reads a JSON body whole into memory, and spools a multipart one to disk, before any handler
or dependency runs (the key check included): without a cap counted as the bytes arrive, one client
could fill the memory or the disk with a single chunked request.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagesearch.api import errors

BODY_SLACK = 65536  # multipart framing and form fields around an upload of the maximum size


class BodyTooLarge(Exception):
    """Raised into whatever reads the body once it passes the cap."""


class BodyLimit:
    """Plain ASGI middleware (like ``metrics.RequestTimer``, for the same reason). A declared
    Content-Length over the cap is refused before a byte is read; otherwise the body's chunks are
    counted as the application reads them, and the read that passes the cap raises ``BodyTooLarge``.
    Whatever the application makes of that error (FastAPI answers 400 to a body it cannot read) is
    dropped: the client gets the 413."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    def too_large(self) -> ASGIApp:
        return errors.error(413, "too_large", f"the request body is over {self.limit} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.limit + BODY_SLACK
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > cap:
            await self.too_large()(scope, receive, send)
            return
        received, over, started = 0, False, False

        async def counted_receive() -> Message:
            nonlocal received, over
            if over:
                raise BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    over = True
                    raise BodyTooLarge
            return message

        async def send_unless_over(message: Message) -> None:
            nonlocal started
            if over and not started:
                return  # the application's answer to a body it could not read: the 413 replaces it
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, send_unless_over)
        except Exception:
            if not over or started:
                raise
        if over and not started:
            await self.too_large()(scope, receive, send)
