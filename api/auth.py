"""API keys (optional). With none configured the API is open; with any, every path but ``/healthz``
and ``/metrics`` (probes and scrapers) needs ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``:
the interactive docs and the OpenAPI schema too, unless ``IMAGESEARCH_API_DOCS_OPEN`` opens them.

``KeyGuard`` checks the key in front of the router, before any body is read, for every path that is
not in its allow-list: a route added later needs a key without anyone having to remember it. The
routes' ``require_read`` / ``require_admin`` dependencies read the role it found (and declare the
schemes in the OpenAPI schema).

Two roles: ``read`` keys search and read; ``admin`` keys may also change the index. Keys come from
``IMAGESEARCH_API_KEYS`` / ``IMAGESEARCH_ADMIN_API_KEYS`` (plain, comma-separated) and from
``IMAGESEARCH_API_KEYS_FILE`` (one ``<role> <sha256 hex>`` per line, so the file holds no key).
Only hashes are kept in memory, a presented key is compared with every one of them in constant
time, and no key is ever logged or echoed in an answer.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from imagesearch.api.errors import ApiError, error
from imagesearch.config import Settings

ROLES = ("read", "admin")
OPEN_PATHS = frozenset({"/healthz", "/metrics"})  # probes and scrapers: never a key
ROLE = "imagesearch.role"  # the scope entries KeyGuard sets: the caller's role,
CLIENT = "imagesearch.client"  # and who it is for the rate limits (the key's hash, or the address)
_bearer = HTTPBearer(auto_error=False, description="an API key as a bearer token")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key")


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    def __init__(self, settings: Settings):
        self.keys: list[tuple[bytes, str]] = []  # (sha256 of the key, role)
        for secret, role in ((settings.api_keys, "read"), (settings.admin_api_keys, "admin")):
            self.keys += [(key_hash(k.strip()), role) for k in secret.get_secret_value().split(",") if k.strip()]
        if settings.api_keys_file is not None:
            self.keys += self._read_file(settings.api_keys_file)

    @staticmethod
    def _read_file(path: Path) -> list[tuple[bytes, str]]:
        keys = []
        for number, line in enumerate(Path(path).read_text().splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            role, _, digest = line.strip().partition(" ")
            digest = digest.strip().removeprefix("sha256:")
            if role not in ROLES or len(digest) != 64:
                raise ValueError(f"{path}:{number}: expected '<read|admin> <sha256 hex of the key>'")
            keys.append((bytes.fromhex(digest), role))
        return keys

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def role_of(self, key: str) -> str | None:
        """The key's role (admin wins if listed twice); every stored hash is compared, matched or not."""
        presented, role = key_hash(key), None
        for stored, stored_role in self.keys:
            if hmac.compare_digest(presented, stored) and role != "admin":
                role = stored_role
        return role


def presented_key(headers: Headers) -> str | None:
    """The key a request carries: X-API-Key, else a bearer token (as the OpenAPI schemes read them)."""
    if key := headers.get("x-api-key"):
        return key
    scheme, credentials = get_authorization_scheme_param(headers.get("authorization"))
    return credentials if scheme.lower() == "bearer" and credentials else None


class KeyGuard:
    """Plain ASGI middleware: a request to any path outside ``open_paths`` gets 401 without a valid
    key (when keys are configured), before the router or any body read; every other one goes on
    with its role and client noted in the scope."""

    def __init__(self, app: ASGIApp, keys: KeyRing, open_paths: Collection[str] = OPEN_PATHS):
        self.app, self.keys, self.open_paths = app, keys, frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        scope[CLIENT] = f"address {client[0]}" if client else "address unknown"
        if not self.keys.enabled:
            scope[ROLE] = "admin"
        elif _route_path(scope) not in self.open_paths:
            key = presented_key(Headers(scope=scope))
            role = self.keys.role_of(key) if key else None
            if key is None or role is None:
                await self._refuse(scope, receive, send, key)
                return
            scope[ROLE], scope[CLIENT] = role, f"key {key_hash(key).hex()}"
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, key: str | None) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # policy violation
            return
        detail = ("the API key is not valid" if key else
                  "this API needs a key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        await error(401, "unauthorized", detail, {"WWW-Authenticate": "Bearer"})(scope, receive, send)


def _route_path(scope: Scope) -> str:
    """The path the router matches: without the root path a proxy may have put in front of it."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


async def require_read(request: Request, bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                       header: Annotated[str | None, Depends(_header)]) -> str:
    """The caller's role, as ``KeyGuard`` found it. ``bearer`` and ``header`` are declared so that the
    OpenAPI schema names the schemes; the guard has already checked the key they carry."""
    # async, as it never blocks: FastAPI would run a plain def on a worker thread, a hop per request
    role = request.scope.get(ROLE)
    if role is None:  # a route that asks for a key on a path the guard left open: refuse, never serve
        raise ApiError(401, "unauthorized", "this route needs a key, but its path is open", {"WWW-Authenticate": "Bearer"})
    return role


async def require_admin(role: Annotated[str, Depends(require_read)]) -> str:
    if role != "admin":
        raise ApiError(403, "forbidden", "this route changes the index: it needs an admin key")
    return role
