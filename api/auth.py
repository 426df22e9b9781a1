"""API keys (optional). With none configured the API is open; with any, every route but ``/healthz``
and ``/metrics`` (probes and scrapers) needs ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

Two roles: ``read`` keys search and read; ``admin`` keys may also change the index. Keys come from
``IMAGESEARCH_API_KEYS`` / ``IMAGESEARCH_ADMIN_API_KEYS`` (plain, comma-separated) and from
``IMAGESEARCH_API_KEYS_FILE`` (one ``<role> <sha256 hex>`` per line, so the file holds no key).
Only hashes are kept in memory, a presented key is compared with every one of them in constant
time, and no key is ever logged or echoed in an answer.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from imagesearch.api.errors import ApiError
from imagesearch.config import Settings

ROLES = ("read", "admin")
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


def _role(request: Request, bearer: HTTPAuthorizationCredentials | None, header: str | None) -> str:
    keys: KeyRing = request.app.state.keys
    if not keys.enabled:
        return "admin"
    key = header or (bearer.credentials if bearer else None)
    if not key:
        raise ApiError(401, "unauthorized", "this API needs a key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                       {"WWW-Authenticate": "Bearer"})
    role = keys.role_of(key)
    if role is None:
        raise ApiError(401, "unauthorized", "the API key is not valid", {"WWW-Authenticate": "Bearer"})
    return role


async def require_read(request: Request, bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                       header: Annotated[str | None, Depends(_header)]) -> str:
    # async, as it never blocks: FastAPI would run a plain def on a worker thread, a hop per request
    return _role(request, bearer, header)


async def require_admin(role: Annotated[str, Depends(require_read)]) -> str:
    if role != "admin":
        raise ApiError(403, "forbidden", "this route changes the index: it needs an admin key")
    return role
