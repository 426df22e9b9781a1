"""The Elasticsearch connection and its error handling: one place that decides what is retried.

Writes wait with backoff (up to ``dependency_wait_s``) while a node is down or overloaded, then raise
``StoreUnavailable``; reads raise it at once. Bulk requests report per-document failures; merges use
optimistic concurrency (``if_seq_no``) instead of scripts, since not every node has painless
(Elastic's test distribution has none).
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from elasticsearch import ApiError, ConnectionError, ConnectionTimeout, Elasticsearch, NotFoundError, helpers
from tenacity import Retrying, retry_if_exception, stop_after_delay, stop_before_delay, wait_exponential

from imagesearch.config import Settings
from imagesearch.stores.base import StoreUnavailable, StoreWriteError

log = logging.getLogger(__name__)
T = TypeVar("T")
Item = TypeVar("Item")

CONFLICT_ROUNDS = 20  # re-reads of a document that others keep changing under us
RETRYABLE_STATUS = (429, 502, 503, 504)
# When the read running in this thread must have its answer (time.monotonic()): each request it makes
# gets what is left, so a search of several requests (layout, kNN, records) and its retries of a busy
# cluster end within ``es_timeout_s`` together, not each.
_read_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("es_read_deadline", default=None)


def redact(url: str) -> str:
    """The URL without credentials, for messages and logs."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        parts = parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host)
    return urlunsplit(parts)


def busy(exc: BaseException) -> bool:
    """The cluster answered that it cannot serve this now: overloaded (429), or a shard's copy just
    went away with its node and the request failed before the cluster moved on to another copy."""
    return isinstance(exc, ApiError) and exc.meta.status in RETRYABLE_STATUS


def transient(exc: BaseException) -> bool:
    """Worth waiting for: no node is reachable, or the cluster is busy."""
    return isinstance(exc, (ConnectionError, ConnectionTimeout)) or busy(exc)


def reason(error) -> str:
    if isinstance(error, dict):
        return f"{error.get('type', 'error')}: {error.get('reason', '')}"
    return str(error)


class EsClient:
    """The official client plus the project's rules for errors and retries."""

    def __init__(self, settings: Settings, on_index_missing: Callable[[], None] = lambda: None):
        self.settings = settings
        urls = settings.es_urls
        self.url = ", ".join(redact(url) for url in urls)
        self.on_index_missing = on_index_missing  # lets the index lifecycle re-create what was deleted
        self._es = Elasticsearch(
            urls,
            basic_auth=(settings.es_username, settings.es_password.get_secret_value()) if settings.es_username else None,
            api_key=settings.es_api_key.get_secret_value() or None,
            ca_certs=settings.es_ca_certs or None,  # type: ignore[arg-type]  # None: the system's CAs
            request_timeout=settings.es_timeout_s,
            # Retries are ours (writes wait below, reads fail fast), except that a request to a node
            # that cannot be reached goes on to the next one, so a cluster with a node down still answers.
            max_retries=len(urls) - 1, retry_on_status=(), retry_on_timeout=False,
        )
        self.bulk_es = self._es.options(request_timeout=6 * settings.es_timeout_s)

    @property
    def es(self) -> Elasticsearch:
        """The official client; inside a ``read``, with what is left of its deadline as the timeout."""
        deadline = _read_deadline.get()
        if deadline is None:
            return self._es
        left = deadline - time.monotonic()
        if left <= 0:
            raise StoreUnavailable(f"Elasticsearch at {self.url} did not answer within {self.settings.es_timeout_s:g} s")
        return self._es.options(request_timeout=left)

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Elasticsearch being down or an index missing -> StoreUnavailable, naming the URL."""
        try:
            yield
        except ConnectionTimeout as exc:
            raise StoreUnavailable(f"Elasticsearch at {self.url} did not answer in time ({exc.message})") from exc
        except ConnectionError as exc:
            raise StoreUnavailable(f"Elasticsearch at {self.url} is unreachable ({type(exc).__name__})") from exc
        except NotFoundError as exc:
            if exc.error != "index_not_found_exception":
                raise
            self.on_index_missing()
            index = exc.body.get("error", {}).get("index", "?") if isinstance(exc.body, dict) else "?"
            raise StoreUnavailable(f"index {index} is missing at {self.url}") from exc
        except ApiError as exc:
            if exc.meta.status in (401, 403):
                raise StoreUnavailable(
                    f"Elasticsearch at {self.url} rejected the credentials ({exc.meta.status} {exc.error})"
                ) from exc
            if exc.meta.status not in RETRYABLE_STATUS:
                raise
            raise StoreUnavailable(f"Elasticsearch at {self.url} answered {exc.meta.status} ({exc.error})") from exc

    def write(self, fn: Callable[[], T]) -> T:
        """Run a write, waiting with backoff while the node is down or busy (up to ``dependency_wait_s``)."""
        return self._retrying(fn, transient, self.settings.dependency_wait_s)

    def read(self, fn: Callable[[], T], *, patient: bool = False) -> T:
        """Run a read. A search fails at once when no node answers (the API says 503 right away),
        and retries a busy cluster: a node lost from a cluster costs a moment, not an error. All of
        it, every request and retry, ends within ``es_timeout_s``. ``patient``: a read of the
        ingest's work queue, which waits like a write."""
        if patient:
            return self.write(fn)
        deadline = time.monotonic() + self.settings.es_timeout_s
        outer = _read_deadline.get()
        token = _read_deadline.set(deadline if outer is None else min(outer, deadline))
        try:
            return self._retrying(fn, busy, self.settings.es_timeout_s, before_deadline=True)
        finally:
            _read_deadline.reset(token)

    def _retrying(self, fn: Callable[[], T], worth_it: Callable[[BaseException], bool], wait_s: float,
                  before_deadline: bool = False) -> T:
        retrying = Retrying(
            retry=retry_if_exception(worth_it), wait=wait_exponential(multiplier=0.25, max=15),
            # a read does not sleep past its deadline; a write may start its last try late
            stop=stop_before_delay(wait_s) if before_deadline else stop_after_delay(wait_s), reraise=True,
            before_sleep=lambda state: log.warning("Elasticsearch at %s not answering (%s); retrying",
                                                   self.url, type(state.outcome and state.outcome.exception()).__name__),
        )
        with self.errors():
            return retrying(fn)

    def bulk(self, actions: list[dict], ignore_status: tuple[int, ...] = ()) -> tuple[dict[str, str], dict[str, tuple[int, str]]]:
        """Bulk in chunks (429s retried with backoff by the helper). -> ({id: result}, {id: (status, reason)})."""
        done, failed = {}, {}
        for ok, item in helpers.streaming_bulk(
            self.bulk_es, actions, chunk_size=self.settings.es_bulk_chunk, max_retries=8, initial_backoff=0.5,
            max_backoff=15, raise_on_error=False, raise_on_exception=True, ignore_status=ignore_status,
        ):
            info = next(iter(item.values()))
            if ok:
                done[info["_id"]] = info.get("result", "")
            else:
                failed[info["_id"]] = (info.get("status", 0), reason(info.get("error")))
        return done, failed

    def occ_write(self, index: str, items: Mapping[str, Item], build: Callable[[dict | None, Item], dict | None]) -> set[str]:
        """Write one document per id, built from the stored one (None: new) by ``build``; a document
        someone else changed meanwhile is read again. Returns the ids that were created."""
        created, rejected, todo = set(), {}, dict(items)
        for _ in range(CONFLICT_ROUNDS):
            actions = []
            for doc in self.es.mget(index=index, ids=list(todo))["docs"]:
                found = doc.get("found", False)
                source = build(doc["_source"] if found else None, todo[doc["_id"]])
                if source is None:
                    continue
                if found:
                    actions.append({"_op_type": "index", "_index": index, "_id": doc["_id"], "_source": source,
                                    "if_seq_no": doc["_seq_no"], "if_primary_term": doc["_primary_term"]})
                else:
                    actions.append({"_op_type": "create", "_index": index, "_id": doc["_id"], "_source": source})
            done, failed = self.bulk(actions)
            created |= {i for i, result in done.items() if result == "created"}
            rejected.update({i: why for i, (status, why) in failed.items() if status != 409})
            todo = {i: todo[i] for i, (status, _) in failed.items() if status == 409}
            if not todo:
                break
        rejected.update({i: "kept conflicting with concurrent writers" for i in todo})
        if rejected:
            raise StoreWriteError(rejected, "Elasticsearch")
        return created

    def close(self) -> None:
        self._es.close()
