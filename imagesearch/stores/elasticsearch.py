"""The Elasticsearch vector store: image metadata, URL failures and one HNSW vector index per model.

Indices (``p`` = ``IMAGESEARCH_ES_INDEX_PREFIX``):

- ``p-images``: one document per image (``_id`` = sha256), the ``ImageRecord`` plus its embedding
  state: ``vec.<vector index>: true`` once its vector is in that index, ``embed_errors.<model>``:
  why it could not be embedded. This index is the work queue: ``pending(model)`` = the documents
  with neither for the model's current write index. Switching model therefore re-embeds every
  stored image, and nothing is downloaded again.
- ``p-failures``: one document per URL that gave no image (``_id`` = sha256 of the URL).
- ``p-vectors-<model>-v<N>``: the model's vectors (``dense_vector``, ``dot_product``: vectors are
  L2-normalized), kept out of ``_source``, with copies of the filterable metadata (format, sources,
  width, height) so filters run inside the kNN as a pre-filter. Reached through two aliases:
  ``p-vectors-<model>`` (searches) and ``p-vectors-<model>-write`` (the embed worker). Both point
  at one index, except during a rebuild (``begin_rebuild``/``swap``): the write alias then points at
  a new index that the embed worker fills from the stored images while searches still read the old
  one; ``swap`` moves the search alias over atomically and drops the old index.

Writes are bulk requests keyed by the content hash, so re-runs and concurrent workers never
duplicate. Merges (new URLs of a known image, failure attempts) are read-modify-write with
optimistic concurrency (``if_seq_no``): no scripts, since not every node has painless (Elastic's
test distribution has none). Writes wait (with backoff, up to ``dependency_wait_s``) for a node
that is down or overloaded, then raise ``StoreUnavailable``; reads raise it at once.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from elasticsearch import ApiError, ConnectionError, ConnectionTimeout, Elasticsearch, NotFoundError, helpers
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from imagesearch.config import Settings
from imagesearch.records import Counts, Hit, ImageRecord, SearchFilters, UrlFailure
from imagesearch.stores import StoreUnavailable

log = logging.getLogger(__name__)

MAX_RESULT_WINDOW = 10_000  # Elasticsearch's limit for k, num_candidates and size
CONFLICT_ROUNDS = 20  # re-reads of a document that others keep changing under us
RETRYABLE_STATUS = (429, 502, 503, 504)
LONG_KEYWORD = 8191  # longer URLs/paths are stored but not indexed (Lucene's term limit is 32k bytes)


class StoreWriteError(RuntimeError):
    """Elasticsearch rejected some documents of a write (not retryable); the others were written."""

    def __init__(self, failures: dict[str, str]):
        self.failures = failures
        sample = "; ".join(f"{key}: {reason}" for key, reason in list(failures.items())[:5])
        super().__init__(f"{len(failures)} document(s) rejected by Elasticsearch: {sample}")


def redact(url: str) -> str:
    """The URL without credentials, for messages and logs."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        parts = parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host)
    return urlunsplit(parts)


def name_key(name: str) -> str:
    """A model slug (or prefix) as a part of an index name: lowercase, no dots; a hash keeps it unique."""
    key = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_") or "x"
    return key if key == name else f"{key}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def url_id(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, (ConnectionError, ConnectionTimeout)) or (
        isinstance(exc, ApiError) and exc.meta.status in RETRYABLE_STATUS)


def _reason(error) -> str:
    if isinstance(error, dict):
        return f"{error.get('type', 'error')}: {error.get('reason', '')}"
    return str(error)


class ElasticsearchStore:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.url = redact(settings.es_url)
        prefix = name_key(settings.es_index_prefix)
        self.images_index = f"{prefix}-images"
        self.failures_index = f"{prefix}-failures"
        self.vectors_prefix = f"{prefix}-vectors-"
        self.client = Elasticsearch(
            settings.es_url,
            basic_auth=(settings.es_username, settings.es_password.get_secret_value()) if settings.es_username else None,
            api_key=settings.es_api_key.get_secret_value() or None,
            ca_certs=settings.es_ca_certs or None,
            request_timeout=settings.es_timeout_s,
            max_retries=0,  # retries are ours: writes wait below, reads fail fast
        )
        self.bulk_client = self.client.options(request_timeout=6 * settings.es_timeout_s)
        self._base_ready = False  # the images and failures indices exist

    # --- errors and retries ------------------------------------------------------------------

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Elasticsearch being down or an index missing -> StoreUnavailable, naming the URL."""
        try:
            yield
        except (ConnectionError, ConnectionTimeout) as exc:
            raise StoreUnavailable(f"Elasticsearch at {self.url} is unreachable ({type(exc).__name__})") from exc
        except NotFoundError as exc:
            if exc.error != "index_not_found_exception":
                raise
            self._base_ready = False
            index = exc.body.get("error", {}).get("index", "?") if isinstance(exc.body, dict) else "?"
            raise StoreUnavailable(f"index {index} is missing at {self.url}") from exc
        except ApiError as exc:
            if exc.meta.status in (401, 403):
                raise StoreUnavailable(f"Elasticsearch at {self.url} rejected the credentials ({exc.meta.status} {exc.error})") from exc
            if exc.meta.status not in RETRYABLE_STATUS:
                raise
            raise StoreUnavailable(f"Elasticsearch at {self.url} answered {exc.meta.status} ({exc.error})") from exc

    def _write(self, fn: Callable[[], object]):
        """Run a write, waiting with backoff while the node is down or overloaded."""
        retrying = Retrying(
            retry=retry_if_exception(_transient), wait=wait_exponential(multiplier=0.5, max=15),
            stop=stop_after_delay(self.settings.dependency_wait_s), reraise=True,
            before_sleep=lambda state: log.warning("Elasticsearch at %s not answering (%s); retrying",
                                                   self.url, type(state.outcome.exception()).__name__),
        )
        with self._errors():
            return retrying(fn)

    def _bulk(self, actions: list[dict], ignore_status: tuple[int, ...] = ()) -> tuple[dict[str, str], dict[str, tuple[int, str]]]:
        """Bulk in chunks (429s retried with backoff by the helper). -> ({id: result}, {id: (status, reason)})."""
        done, failed = {}, {}
        for ok, item in helpers.streaming_bulk(
            self.bulk_client, actions, chunk_size=self.settings.es_bulk_chunk, max_retries=8, initial_backoff=0.5,
            max_backoff=15, raise_on_error=False, raise_on_exception=True, ignore_status=ignore_status,
        ):
            info = next(iter(item.values()))
            if ok:
                done[info["_id"]] = info.get("result", "")
            else:
                failed[info["_id"]] = (info.get("status", 0), _reason(info.get("error")))
        return done, failed

    def _occ_write(self, index: str, items: dict[str, object], build: Callable[[dict | None, object], dict | None]) -> set[str]:
        """Write one document per id, built from the stored one (None: new) by ``build``; a document
        someone else changed meanwhile is read again. Returns the ids that were created."""
        created, rejected, todo = set(), {}, dict(items)
        for _ in range(CONFLICT_ROUNDS):
            actions = []
            for doc in self.client.mget(index=index, ids=list(todo))["docs"]:
                found = doc.get("found", False)
                source = build(doc["_source"] if found else None, todo[doc["_id"]])
                if source is None:
                    continue
                if found:
                    actions.append({"_op_type": "index", "_index": index, "_id": doc["_id"], "_source": source,
                                    "if_seq_no": doc["_seq_no"], "if_primary_term": doc["_primary_term"]})
                else:
                    actions.append({"_op_type": "create", "_index": index, "_id": doc["_id"], "_source": source})
            done, failed = self._bulk(actions)
            created |= {i for i, result in done.items() if result == "created"}
            rejected.update({i: reason for i, (status, reason) in failed.items() if status != 409})
            todo = {i: todo[i] for i, (status, _) in failed.items() if status == 409}
            if not todo:
                break
        rejected.update({i: "kept conflicting with concurrent writers" for i in todo})
        if rejected:
            raise StoreWriteError(rejected)
        return created

    # --- index management --------------------------------------------------------------------

    def _index_settings(self) -> dict:
        return {"number_of_shards": self.settings.es_shards, "number_of_replicas": self.settings.es_replicas}

    def _ensure_base(self) -> None:
        if self._base_ready:
            return
        keyword = {"type": "keyword"}
        images = {
            "dynamic": False,  # fields added to ImageRecord later are kept in _source, just not indexed
            "dynamic_templates": [
                {"vec": {"path_match": "vec.*", "mapping": {"type": "boolean"}}},
                {"embed_errors": {"path_match": "embed_errors.*", "mapping": {"type": "keyword", "ignore_above": 1024}}},
            ],
            "properties": {
                "id": keyword, "urls": {"type": "keyword", "ignore_above": LONG_KEYWORD}, "captions": {"type": "text"},
                "sources": keyword, "paths": {"type": "keyword", "ignore_above": LONG_KEYWORD},
                "width": {"type": "integer"}, "height": {"type": "integer"}, "format": keyword, "bytes": {"type": "long"},
                "first_seen": {"type": "date"}, "last_seen": {"type": "date"},
                "vec": {"type": "object", "dynamic": True}, "embed_errors": {"type": "object", "dynamic": True},
            },
        }
        failures = {
            "dynamic": False,
            "properties": {
                "url": {"type": "keyword", "ignore_above": LONG_KEYWORD}, "reason": keyword,
                "detail": {"type": "text"}, "caption": {"type": "text"}, "attempts": {"type": "integer"}, "at": {"type": "date"},
            },
        }
        for index, mappings in ((self.images_index, images), (self.failures_index, failures)):
            if not self.client.indices.exists(index=index):
                try:
                    self.client.indices.create(index=index, settings=self._index_settings(), mappings=mappings)
                except ApiError as exc:
                    if exc.error != "resource_already_exists_exception":  # another worker was first: fine
                        raise
        self._base_ready = True

    def _aliases(self, model: str) -> tuple[str, str]:
        read = self.vectors_prefix + name_key(model)
        return read, f"{read}-write"

    def _alias_target(self, alias: str) -> str | None:
        found = self.client.options(ignore_status=404).indices.get_alias(name=alias)
        return next(iter(found.body), None) if found.meta.status == 200 else None

    def _write_index(self, model: str) -> str:
        """The index the embed worker fills for ``model`` (the name it will have, if none exists yet)."""
        read, write = self._aliases(model)
        return self._alias_target(write) or f"{read}-v1"

    def _vector_index_body(self, dim: int, index_type: str, m: int, ef_construction: int) -> dict:
        return {
            "settings": {
                **self._index_settings(), "refresh_interval": self.settings.es_refresh_interval,
                "index.mapping.exclude_source_vectors": True,  # vectors live in the vector index files only
            },
            "mappings": {
                "dynamic": "strict",
                "properties": {
                    "vector": {
                        "type": "dense_vector", "dims": dim, "index": True, "similarity": "dot_product",
                        "index_options": {"type": index_type, "m": m, "ef_construction": ef_construction},
                    },
                    "format": {"type": "keyword"}, "sources": {"type": "keyword"},
                    "width": {"type": "integer"}, "height": {"type": "integer"},
                },
            },
        }

    def _create_vector_index(self, name: str, dim: int, aliases: dict, index_type: str | None = None,
                             m: int | None = None, ef_construction: int | None = None) -> None:
        body = self._vector_index_body(dim, index_type or self.settings.es_index_type, m or self.settings.es_hnsw_m,
                                       ef_construction or self.settings.es_hnsw_ef_construction)
        try:
            self.client.indices.create(index=name, aliases=aliases, **body)
        except ApiError as exc:
            if exc.error != "resource_already_exists_exception":  # another worker was first: fine
                raise ValueError(f"cannot create vector index {name}: {_reason(exc.body.get('error') if isinstance(exc.body, dict) else exc.body)}") from exc

    def _index_dims(self, index: str) -> int:
        mapping = self.client.indices.get_mapping(index=index)
        return next(iter(mapping.body.values()))["mappings"]["properties"]["vector"]["dims"]

    def ensure_model(self, model: str, dim: int) -> None:
        self._write(lambda: self._ensure_model(model, dim))

    def _ensure_model(self, model: str, dim: int) -> str:
        """-> the model's write index, created (with both aliases) if there is none."""
        self._ensure_base()
        read, write = self._aliases(model)
        index = self._alias_target(write)
        if index is None:
            index = f"{read}-v1"
            self._create_vector_index(index, dim, {read: {}, write: {}})
        if (stored := self._index_dims(index)) != dim:
            raise ValueError(f"index {index} holds {stored}-d vectors but model {model} gives {dim}-d; "
                             f"re-embed it into a new index with begin_rebuild()")
        return index

    def begin_rebuild(self, model: str, dim: int, index_type: str | None = None,
                      m: int | None = None, ef_construction: int | None = None) -> str:
        """Start re-embedding ``model`` into a new index (new weights, dims or index options): from
        now on ``pending(model)`` hands out every image again and ``set_vectors`` fills the new
        index, while searches keep reading the current one until ``swap(model)``. Returns its name."""

        def run() -> str:
            read, write = self._aliases(model)
            current = self._alias_target(write)
            if current is None:  # nothing to rebuild yet: this is the first index
                return self._ensure_model(model, dim)
            new = f"{read}-v{int(current.rsplit('-v', 1)[1]) + 1}"
            self._create_vector_index(new, dim, {}, index_type, m, ef_construction)
            self.client.indices.update_aliases(actions=[
                {"remove": {"index": current, "alias": write}}, {"add": {"index": new, "alias": write}},
            ])
            return new

        return self._write(run)

    def swap(self, model: str, force: bool = False) -> str:
        """Point searches at the index being filled (atomically) and delete the one it replaces.
        Refuses while images are still pending for it, unless ``force``. Returns the new index."""

        def run() -> str:
            read, write = self._aliases(model)
            old, new = self._alias_target(read), self._alias_target(write)
            if new is None:
                raise StoreUnavailable(f"no vector index for model {model} at {self.url}")
            if old == new:
                return new
            self.client.indices.refresh(index=self.images_index)
            left = self.client.count(index=self.images_index, query=self._state_filters(model)["pending"])["count"]
            if left and not force:
                raise ValueError(f"{left} image(s) still pending for {new}: finish embedding first (or force)")
            self.client.indices.update_aliases(actions=[
                {"remove": {"index": old, "alias": read}}, {"add": {"index": new, "alias": read}},
            ])
            self.client.indices.delete(index=old)
            return new

        return self._write(run)

    def refresh(self) -> None:
        """Make every write visible to searches now (tests and benchmarks; normally within ``es_refresh_interval``)."""
        with self._errors():
            self.client.indices.refresh(index=f"{self.images_index},{self.failures_index},{self.vectors_prefix}*",
                                        ignore_unavailable=True, allow_no_indices=True)

    # --- metadata ----------------------------------------------------------------------------

    def upsert_images(self, records: Sequence[ImageRecord]) -> list[bool]:
        batch: dict[str, ImageRecord] = {}
        for record in records:  # the same image twice in one batch: merge first
            batch[record.id] = batch[record.id].merge(record) if record.id in batch else record
        grown: dict[str, list[str]] = {}  # ids whose sources changed: the vector indices copy them

        def build(stored: dict | None, record: ImageRecord) -> dict | None:
            if stored is None:
                return {**record.model_dump(mode="json"), "vec": {}, "embed_errors": {}}
            old = ImageRecord.model_validate(stored)
            new = old.merge(record)
            if new == old:
                return None
            if new.sources != old.sources:
                grown[new.id] = new.sources
            return {**stored, **new.model_dump(mode="json")}

        def run() -> set[str]:
            self._ensure_base()
            created = self._occ_write(self.images_index, batch, build) if batch else set()
            urls = {u for r in batch.values() for u in r.urls}
            self._drop_failures(urls)
            if grown:
                self._copy_sources(grown)
            return created

        created = self._write(run)
        seen: set[str] = set()
        out = []
        for record in records:  # True only at the first occurrence of a new id
            out.append(record.id in created and record.id not in seen)
            seen.add(record.id)
        return out

    def _drop_failures(self, urls: set[str]) -> None:
        """A URL that now has an image is no longer a failure."""
        if not urls:
            return
        docs = self.client.mget(index=self.failures_index, ids=[url_id(u) for u in urls], source=False)["docs"]
        found = [d["_id"] for d in docs if d.get("found")]
        if found:
            self._bulk([{"_op_type": "delete", "_index": self.failures_index, "_id": i} for i in found], ignore_status=(404,))

    def _copy_sources(self, sources: dict[str, list[str]]) -> None:
        """Keep the ``sources`` copies in the vector indices (the ``source`` filter) in step."""
        indices = list(self.client.indices.get_alias(index=f"{self.vectors_prefix}*", allow_no_indices=True).body)
        actions = [{"_op_type": "update", "_index": index, "_id": i, "doc": {"sources": s}, "retry_on_conflict": 5}
                   for index in indices for i, s in sources.items()]
        self._bulk(actions, ignore_status=(404,))  # 404: not embedded in that index (yet)

    def record_failures(self, failures: Sequence[UrlFailure]) -> None:
        batch: dict[str, UrlFailure] = {}
        for failure in failures:  # attempts add up, the latest reason wins
            key = url_id(failure.url)
            if key in batch:
                failure = failure.model_copy(update={"attempts": batch[key].attempts + failure.attempts})
            batch[key] = failure

        def build(stored: dict | None, failure: UrlFailure) -> dict:
            attempts = failure.attempts + (stored.get("attempts", 0) if stored else 0)
            return failure.model_copy(update={"attempts": attempts}).model_dump(mode="json")

        def run() -> None:
            self._ensure_base()
            if batch:
                self._occ_write(self.failures_index, batch, build)

        self._write(run)

    def failures(self) -> list[UrlFailure]:
        with self._errors():
            self._ensure_base()
            self.client.indices.refresh(index=self.failures_index)
            hits = helpers.scan(self.client, index=self.failures_index, query={"query": {"match_all": {}}, "sort": ["url"]},
                                preserve_order=True, size=1000)
            return [UrlFailure.model_validate(h["_source"]) for h in hits]

    def known_urls(self, urls: Iterable[str]) -> set[str]:
        urls = list(dict.fromkeys(urls))
        known: set[str] = set()
        with self._errors():
            self._ensure_base()
            self.client.indices.refresh(index=self.images_index)
            for start in range(0, len(urls), 1000):
                chunk = urls[start : start + 1000]
                hits = self.client.search(index=self.images_index, query={"terms": {"urls": chunk}}, source_includes=["urls"],
                                          size=MAX_RESULT_WINDOW)["hits"]["hits"]
                wanted = set(chunk)
                known.update(u for h in hits for u in h["_source"]["urls"] if u in wanted)
        return known

    def get(self, image_id: str) -> ImageRecord | None:
        with self._errors():
            self._ensure_base()
            found = self.client.options(ignore_status=404).get(index=self.images_index, id=image_id)
            if "error" in found:  # the index itself is gone
                self._base_ready = False
                raise StoreUnavailable(f"index {self.images_index} is missing at {self.url}")
            return ImageRecord.model_validate(found["_source"]) if found.get("found") else None

    def _records(self, ids: Sequence[str]) -> dict[str, ImageRecord]:
        docs = self.client.mget(index=self.images_index, ids=list(ids), source_excludes=["vec", "embed_errors"])["docs"]
        return {d["_id"]: ImageRecord.model_validate(d["_source"]) for d in docs if d.get("found")}

    # --- vectors -----------------------------------------------------------------------------

    def _state_filters(self, model: str) -> dict[str, dict]:
        embedded = {"exists": {"field": f"vec.{self._write_index(model)}"}}
        failed = {"exists": {"field": f"embed_errors.{name_key(model)}"}}
        return {"embedded": embedded, "failed": failed, "pending": {"bool": {"must_not": [embedded, failed]}}}

    def pending(self, model: str, limit: int, exclude: Sequence[str] = ()) -> list[ImageRecord]:
        if limit <= 0:
            return []
        with self._errors():
            self._ensure_base()
            self.client.indices.refresh(index=self.images_index)  # the queue must be exact, not near-real-time
            query = {"bool": {"filter": [self._state_filters(model)["pending"]],
                              "must_not": [{"ids": {"values": list(exclude)}}] if exclude else []}}
            hits = self.client.search(index=self.images_index, query=query, size=min(limit, MAX_RESULT_WINDOW),
                                      sort=[{"first_seen": "asc"}, {"id": "asc"}], source_excludes=["vec", "embed_errors"])
            return [ImageRecord.model_validate(h["_source"]) for h in hits["hits"]["hits"]]

    def set_vectors(self, model: str, ids: Sequence[str], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids but vectors of shape {vectors.shape}")
        if not len(ids):
            return
        by_id = dict(zip(ids, vectors))  # the last vector wins for an id given twice

        def filter_fields(ids: Iterable[str]) -> dict[str, dict]:
            docs = self.client.mget(index=self.images_index, ids=list(ids), source_includes=["format", "sources", "width", "height"])
            return {d["_id"]: d["_source"] for d in docs["docs"] if d.get("found")}

        def run() -> dict[str, str]:
            index = self._alias_target(self._aliases(model)[1]) or self._ensure_model(model, vectors.shape[1])
            fields = filter_fields(by_id)
            rejected = {i: "no image record with this id" for i in by_id if i not in fields}
            _, failed = self._bulk([
                {"_op_type": "index", "_index": index, "_id": i, "_source": {"vector": _b64(v), **fields[i]}}
                for i, v in by_id.items() if i in fields
            ])
            rejected.update({i: reason for i, (_, reason) in failed.items()})
            written = [i for i in fields if i not in rejected]
            _, failed = self._bulk([  # mark them done in the queue (partial update: other fields untouched)
                {"_op_type": "update", "_index": self.images_index, "_id": i, "doc": {"vec": {index: True}}, "retry_on_conflict": 5}
                for i in written
            ])
            rejected.update({i: reason for i, (_, reason) in failed.items()})
            # An upsert that merged new sources while we copied the old ones found no vector doc to update; catch up.
            stale = {i: f["sources"] for i, f in filter_fields(written).items() if f.get("sources") != fields[i].get("sources")}
            if stale:
                self._bulk([{"_op_type": "update", "_index": index, "_id": i, "doc": {"sources": s}} for i, s in stale.items()])
            return rejected

        rejected = self._write(run)
        if rejected:
            raise StoreWriteError(rejected)

    def set_embed_errors(self, model: str, errors: dict[str, str]) -> None:
        if not errors:
            return
        key = name_key(model)

        def run() -> dict[str, tuple[int, str]]:
            self._ensure_base()
            return self._bulk([
                {"_op_type": "update", "_index": self.images_index, "_id": i, "doc": {"embed_errors": {key: reason}},
                 "retry_on_conflict": 5}
                for i, reason in errors.items()
            ])[1]

        if failed := self._write(run):
            raise StoreWriteError({i: reason for i, (_, reason) in failed.items()})

    def get_vector(self, model: str, image_id: str) -> np.ndarray | None:
        with self._errors():
            found = self.client.options(ignore_status=404).get(
                index=self._aliases(model)[0], id=image_id, source_includes=["vector"], source_exclude_vectors=False)
            if found.meta.status != 200 or not found.get("found"):
                return None  # no such vector, or no index for the model at all
            return _from_source(found["_source"]["vector"])

    # --- queries -----------------------------------------------------------------------------

    @staticmethod
    def _filter(filters: SearchFilters | None) -> list[dict]:
        if filters is None:
            return []
        clauses = []
        if filters.format is not None:
            clauses.append({"terms": {"format": filters.format}})
        if filters.source is not None:
            clauses.append({"terms": {"sources": list(filters.source)}})
        for field in ("width", "height"):
            bounds = {op: value for op, value in (("gte", getattr(filters, f"min_{field}")), ("lte", getattr(filters, f"max_{field}")))
                      if value is not None}
            if bounds:
                clauses.append({"range": {field: bounds}})
        return clauses

    def search(self, model: str, vector: np.ndarray, k: int,
               filters: SearchFilters | None = None, min_score: float | None = None) -> list[Hit]:
        if k <= 0:
            return []
        k = min(k, MAX_RESULT_WINDOW)
        knn = {
            "field": "vector", "query_vector": _b64(np.asarray(vector, np.float32).ravel()), "k": k,
            "num_candidates": min(MAX_RESULT_WINDOW, max(k, self.settings.es_num_candidates)),
        }
        if clauses := self._filter(filters):
            knn["filter"] = clauses
        if self.settings.es_rescore_oversample:  # quantized indices: exact float scores and order for the top hits
            knn["rescore_vector"] = {"oversample": self.settings.es_rescore_oversample}
        if min_score is not None:
            knn["similarity"] = min_score  # on the raw dot product, like our scores
        with self._errors():
            found = self.client.search(index=self._aliases(model)[0], knn=knn, size=k, source=False)["hits"]["hits"]
            records = self._records([h["_id"] for h in found]) if found else {}
        # dot_product scores come back as (1 + dot) / 2; give the dot product (cosine) like the local store
        return [Hit(id=h["_id"], score=2 * h["_score"] - 1, record=records[h["_id"]]) for h in found if h["_id"] in records]

    def counts(self, model: str) -> Counts:
        with self._errors():
            self._ensure_base()
            self.client.indices.refresh(index=f"{self.images_index},{self.failures_index}")
            images = self.client.search(index=self.images_index, size=0, track_total_hits=True,
                                        aggs={"state": {"filters": {"filters": self._state_filters(model)}}})
            failed = self.client.search(index=self.failures_index, size=0, track_total_hits=True,
                                        aggs={"reasons": {"terms": {"field": "reason", "size": 100}}})
        state = {name: bucket["doc_count"] for name, bucket in images["aggregations"]["state"]["buckets"].items()}
        by_reason = {b["key"]: b["doc_count"] for b in failed["aggregations"]["reasons"]["buckets"]}
        return Counts(images=images["hits"]["total"]["value"], embedded=state["embedded"], pending=state["pending"],
                      embed_failed=state["failed"], failed_urls=failed["hits"]["total"]["value"], failed_by_reason=by_reason)

    def health(self) -> dict:
        out = {"ok": False, "backend": "elasticsearch", "url": self.url}
        try:
            cluster = self.client.options(request_timeout=5).cluster.health()
            out.update(cluster=cluster["cluster_name"], status=cluster["status"], nodes=cluster["number_of_nodes"])
            out["images_index"] = bool(self.client.indices.exists(index=self.images_index))
            if self.settings.model:  # "index missing" is said here; searches then answer 503
                out["model_index"] = self._alias_target(self._aliases(self.settings.model)[0])
            out["ok"] = cluster["status"] in ("green", "yellow")
        except Exception as exc:  # noqa: BLE001 - health never raises
            out["error"] = f"Elasticsearch at {self.url}: {type(exc).__name__}"
        return out

    def close(self) -> None:
        self.client.close()


def _b64(vector: np.ndarray) -> str:
    """Elasticsearch takes float vectors as base64 of big-endian float32: 4x less JSON than numbers."""
    return base64.b64encode(np.asarray(vector, ">f4").tobytes()).decode()


def _from_source(value) -> np.ndarray:
    if isinstance(value, str):
        return np.frombuffer(base64.b64decode(value), ">f4").astype(np.float32)
    return np.asarray(value, np.float32)
