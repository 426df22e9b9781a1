"""Blobs in an S3-compatible bucket: ``s3://bucket/prefix`` + ``ab/abcdef….<ext>`` (and
``thumbnails/ab/abcdef….webp``), the folder's layout.

The guarantees are the folder's: an S3 PUT is atomic (an object is visible whole or not at all), so
a blob is complete before ``put_many`` reports it and before its record is written; a PUT of an
existing id writes the same bytes again; nothing partial is ever left to sweep (no multipart
uploads: an image is far below the single PUT's limit). While the storage cannot be reached, each
call waits for it (``IMAGESEARCH_DEPENDENCY_WAIT_S``, as the store does), then gives up with
``BlobStorageUnavailable``: the caller stops, keeping what was stored, and the next run goes on.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_delay, wait_exponential

from imagesearch.blobs.base import (
    THUMBNAIL,
    BlobItem,
    BlobMissing,
    BlobReader,
    BlobStorageError,
    BlobStorageUnavailable,
    blob_name,
    check_id,
    sha256_hex,
)
from imagesearch.config import Settings
from imagesearch.formats import content_type

log = logging.getLogger("imagesearch.blobs")
T = TypeVar("T")
_TRANSIENT_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeTooSkewed", "503", "500"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
_READ_CHUNK = 1024 * 1024
_WARN_EVERY_S = 5.0


def _transient(exc: BaseException) -> bool:
    """Worth waiting for: no connection, a timeout, the server busy or failing (5xx)."""
    if isinstance(exc, (BotoConnectionError, HTTPClientError)):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or exc.response.get("Error", {}).get("Code") in _TRANSIENT_CODES
    return False


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3BlobStore:
    def __init__(self, client, bucket: str, prefix: str, *, wait_s: float, connections: int, endpoint: str = ""):
        self.client, self.bucket, self.wait_s, self.connections = client, bucket, wait_s, connections
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.location = f"s3://{bucket}/{self.prefix}" + (f" at {endpoint}" if endpoint else "")
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._warned = -_WARN_EVERY_S

    @classmethod
    def from_settings(cls, settings: Settings, wait_s: float) -> S3BlobStore:
        bucket, _, prefix = settings.blobs.removeprefix("s3://").partition("/")
        style = settings.s3_addressing_style
        if style == "auto":
            style = "path" if settings.s3_endpoint_url else "virtual"
        config = Config(
            max_pool_connections=settings.s3_connections, connect_timeout=settings.s3_timeout_s,
            read_timeout=settings.s3_timeout_s, retries={"mode": "standard", "max_attempts": 3},
            s3={"addressing_style": style},
            # Checksums only where the API requires them: not every S3-compatible server knows the newer ones.
            request_checksum_calculation="when_required", response_checksum_validation="when_required",
        )
        secret = settings.s3_secret_access_key.get_secret_value()
        client = boto3.session.Session().client(
            "s3", endpoint_url=settings.s3_endpoint_url or None, region_name=settings.s3_region or None, config=config,
            aws_access_key_id=settings.s3_access_key_id or None, aws_secret_access_key=secret or None)
        return cls(client, bucket, prefix, wait_s=wait_s, connections=settings.s3_connections,
                   endpoint=settings.s3_endpoint_url)

    def key(self, image_id: str, fmt: str) -> str:
        return self.prefix + blob_name(image_id, fmt)

    # --- writing ------------------------------------------------------------------------------------

    def put(self, data: bytes, fmt: str, image_id: str | None = None) -> str:
        stored, error = self.put_many([(data, fmt, image_id)])
        if error is not None:
            raise error
        return stored[0]

    def put_many(self, items: Sequence[BlobItem]) -> tuple[list[str], BlobStorageError | None]:
        """The PUTs run at once (up to ``s3_connections``); the ids reported are the prefix of
        ``items`` whose PUTs all succeeded. A later item stored past a failed one is stored again
        by the next run (the same bytes under the same key)."""
        ids = [image_id or sha256_hex(data) for data, _, image_id in items]
        first: dict[str, int] = {}
        for index, image_id in enumerate(ids):
            first.setdefault(image_id, index)  # the same bytes twice in a batch: one PUT
        jobs = {index: items[index] for index in first.values()}
        futures = {index: self._threads().submit(self._put_one, ids[index], data, fmt)
                   for index, (data, fmt, _) in jobs.items()}
        failed: dict[int, BlobStorageError] = {}
        for index, future in futures.items():
            try:
                future.result()
            except BlobStorageError as exc:
                failed[index] = exc
        if not failed:
            return ids, None
        stop = min(failed)
        return ids[:stop], failed[stop]

    def _put_one(self, image_id: str, data: bytes, fmt: str) -> None:
        key = self.key(image_id, fmt)
        self._call(f"storing {key}", lambda: self.client.put_object(
            Bucket=self.bucket, Key=key, Body=data, ContentType=content_type("webp" if fmt == THUMBNAIL else fmt)))

    def _threads(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.connections, thread_name_prefix="s3-put")
            return self._pool

    # --- reading and removing -----------------------------------------------------------------------

    def get(self, image_id: str, fmt: str) -> bytes:
        key = self.key(image_id, fmt)  # the body is read inside the retries: a connection lost mid-read is retried
        return self._call(f"reading {key}", lambda: self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def open(self, image_id: str, fmt: str) -> BlobReader:
        key = self.key(image_id, fmt)
        answer = self._call(f"reading {key}", lambda: self.client.get_object(Bucket=self.bucket, Key=key))
        return BlobReader(size=int(answer["ContentLength"]), chunks=_chunks(answer["Body"]))

    def delete(self, image_id: str) -> int:
        check_id(image_id)
        start = self.prefix + blob_name(image_id, "jpeg").rsplit(".", 1)[0] + "."
        listed = self._call(f"listing {start}*", lambda: self.client.list_objects_v2(Bucket=self.bucket, Prefix=start))
        keys = [item["Key"] for item in listed.get("Contents", [])]
        for key in [*keys, self.key(image_id, THUMBNAIL)]:  # deleting a key that is not there succeeds
            self._call(f"deleting {key}", partial(self.client.delete_object, Bucket=self.bucket, Key=key))
        return len(keys)

    def sweep_leftovers(self) -> int:
        return 0  # a PUT is atomic: a killed writer leaves nothing behind

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    # --- waiting for the storage --------------------------------------------------------------------

    def _call(self, what: str, request: Callable[[], T]) -> T:
        """One request, retried while the storage is unreachable or failing, up to ``wait_s``;
        ``BlobMissing`` for an object that is not there."""
        retrying = Retrying(retry=retry_if_exception(_transient), wait=wait_exponential(multiplier=0.25, max=5),
                            stop=stop_after_delay(self.wait_s), reraise=True, before_sleep=self._waiting)
        try:
            return retrying(request)
        except ClientError as exc:
            if _code(exc) in _MISSING_CODES:
                raise BlobMissing(errno.ENOENT, f"{what}: no such object in {self.location}") from None
            if _code(exc) == "NoSuchBucket":
                raise BlobStorageError(errno.ENOENT, f"the bucket {self.bucket} does not exist ({self.location}): "
                                       "create it, or correct IMAGESEARCH_BLOBS") from None
            if _transient(exc):
                raise self._unavailable(what, exc) from None
            raise BlobStorageError(errno.EIO, f"{what} in {self.location}: {exc}") from None
        except BotoCoreError as exc:
            if _transient(exc):
                raise self._unavailable(what, exc) from None
            raise BlobStorageError(errno.EIO, f"{what} in {self.location}: {exc}") from None

    def _waiting(self, state: RetryCallState) -> None:
        """Say that the storage is waited for, once in a while (not once per request of a batch)."""
        now = time.monotonic()
        if now - self._warned >= _WARN_EVERY_S:
            self._warned = now
            log.warning("waiting for the image storage %s: %s", self.location, state.outcome and state.outcome.exception())

    def _unavailable(self, what: str, exc: BaseException) -> BlobStorageUnavailable:
        return BlobStorageUnavailable(f"the image storage {self.location} did not answer for {self.wait_s:.0f}s "
                                      f"({what}: {exc}); what was stored so far is kept: run the ingest again once it is back")


def _chunks(body) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(_READ_CHUNK)
    finally:
        body.close()
