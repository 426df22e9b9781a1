"""Index and alias lifecycle: the base indices, each model's vector index, rebuild and swap.

Names (``p`` = ``IMAGESEARCH_ES_INDEX_PREFIX``): ``p-images``, ``p-failures``, ``p-removed``, and per model
``p-vectors-<model>-v<N>`` reached through two aliases: ``p-vectors-<model>`` (searches) and
``p-vectors-<model>-write`` (the embed worker). Both point at one index, except during a rebuild:
the write alias then points at a new index that the embed worker fills from the stored images while
searches still read the old one; ``swap`` moves the search alias over atomically and drops the old
index. ``imagesearch index rebuild|swap|status`` drives it.
"""

from __future__ import annotations

import hashlib
import re
import time

from elasticsearch import ApiError

from imagesearch.stores.base import StoreUnavailable, describe_layout
from imagesearch.stores.elasticsearch import mappings, queries
from imagesearch.stores.elasticsearch.client import EsClient, reason


def name_key(name: str) -> str:
    """A model slug (or prefix) as a part of an index name: lowercase, no dots; a hash keeps it unique."""
    key = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_") or "x"
    return key if key == name else f"{key}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


class Indices:
    def __init__(self, client: EsClient):
        self.client = client
        self.settings = client.settings
        self.prefix = prefix = name_key(self.settings.es_index_prefix)
        self.images = f"{prefix}-images"
        self.failures = f"{prefix}-failures"
        self.removed = f"{prefix}-removed"
        self.vectors_prefix = f"{prefix}-vectors-"
        self._base_ready = False  # the base indices exist, and the images index has our schema version
        self._layouts: dict[str, tuple[int, int]] = {}  # index -> (dim, vectors per image)
        self._model_layouts: dict[str, tuple[int, int]] = {}  # model -> the layout of its search index
        client.on_index_missing = self.forget

    def forget(self) -> None:
        """An index was deleted under us: check (and create) the base indices again next time."""
        self._base_ready = False
        self._layouts.clear()
        self._model_layouts.clear()

    def _settings(self) -> dict:
        return mappings.index_settings(self.settings.es_shards, self.settings.es_replicas)

    def ensure_base(self) -> None:
        """Create the base indices that are missing and check the schema version of the images index:
        once per instance (again after ``forget``)."""
        if self._base_ready:
            return
        self._create_base(self.images, mappings.IMAGES)
        # checked before the others are created: a prefix of another schema gets nothing new
        self.checked_mapping(self.client.es.indices.get_mapping(index=self.images).body)
        self._create_base(self.failures, mappings.FAILURES)
        self._create_base(self.removed, mappings.REMOVED)
        self._base_ready = True

    def _create_base(self, index: str, body: dict) -> None:
        es = self.client.es
        if not es.indices.exists(index=index):
            try:
                es.indices.create(index=index, settings=self._settings(), mappings=body)
            except ApiError as exc:
                if exc.error != "resource_already_exists_exception":  # another worker was first: fine
                    raise

    def checked_mapping(self, found: dict) -> dict:
        """The mapping in ``get_mapping``'s answer for one index; an index of another schema version
        (or none: not made by this store) is refused, since nothing here can upgrade it."""
        (index, body), = found.items()
        version = mappings.schema_version(body["mappings"])
        if version != mappings.SCHEMA_VERSION:
            has = "no schema version" if version is None else f"schema version {version!r}"
            raise StoreUnavailable(
                f"index {index} at {self.client.url} has {has}, but this imagesearch expects schema version "
                f"{mappings.SCHEMA_VERSION} (_meta.{mappings.SCHEMA_KEY}); there is no upgrade path before the first "
                f"release: set a new IMAGESEARCH_ES_INDEX_PREFIX, or delete the old indices ({self.prefix}-*)")
        return body["mappings"]

    # --- a model's vector index --------------------------------------------------------------

    def alias_target(self, alias: str) -> str | None:
        found = self.client.es.options(ignore_status=404).indices.get_alias(name=alias)
        return next(iter(found.body), None) if found.meta.status == 200 else None

    def vector_indices(self) -> list[str]:
        """Every model's vector indices, those being rebuilt included."""
        return list(self.client.es.indices.get_alias(index=f"{self.vectors_prefix}*", allow_no_indices=True).body)

    def aliases(self, model: str) -> tuple[str, str]:
        """(search alias, write alias) of ``model``."""
        read = self.vectors_prefix + name_key(model)
        return read, f"{read}-write"

    def write_index(self, model: str) -> str:
        """The index the embed worker fills for ``model`` (the name it will have, if none exists yet)."""
        read, write = self.aliases(model)
        return self.alias_target(write) or f"{read}-v1"

    def queue_states(self, model: str) -> dict[str, dict]:
        return queries.queue_states(self.write_index(model), name_key(model))

    def _create_vector_index(self, name: str, dim: int, vectors_per_image: int, aliases: dict,
                             index_type: str | None = None, m: int | None = None, ef_construction: int | None = None) -> None:
        s = self.settings
        body = mappings.vector_index(
            dim, index_type=index_type or s.es_index_type, m=m or s.es_hnsw_m,
            ef_construction=ef_construction or s.es_hnsw_ef_construction, shards=s.es_shards,
            replicas=s.es_replicas, refresh_interval=s.es_refresh_interval, vectors_per_image=vectors_per_image)
        try:
            self.client.es.indices.create(index=name, aliases=aliases, **body)
        except ApiError as exc:
            if exc.error != "resource_already_exists_exception":  # another worker was first: fine
                raise ValueError(
                    f"cannot create vector index {name}: "
                    f"{reason(exc.body.get('error') if isinstance(exc.body, dict) else exc.body)}"
                ) from exc

    def layout(self, index: str) -> tuple[int, int]:
        """(dim, vectors per image) of a vector index; remembered (an index's mapping of it is fixed)."""
        if index not in self._layouts:
            self._layouts[index] = mappings.layout(self.checked_mapping(self.client.es.indices.get_mapping(index=index).body))
        return self._layouts[index]

    def search_layout(self, model: str) -> tuple[int, int] | None:
        """The layout of ``model``'s search index, or None when it has none; remembered per model
        (a model's layout never changes: a rebuild re-embeds the same model)."""
        if model not in self._model_layouts:
            found = self.client.es.options(ignore_status=404).indices.get_mapping(index=self.aliases(model)[0])
            if found.meta.status != 200:
                return None
            self._model_layouts[model] = mappings.layout(self.checked_mapping(found.body))
        return self._model_layouts[model]

    def ensure_model(self, model: str, dim: int, vectors_per_image: int = 1) -> str:
        """-> the model's write index, created (with both aliases) if there is none."""
        self.ensure_base()
        read, write = self.aliases(model)
        index = self.alias_target(write)
        if index is None:
            index = f"{read}-v1"
            self._create_vector_index(index, dim, vectors_per_image, {read: {}, write: {}})
        if (stored := self.layout(index)) != (dim, vectors_per_image):
            raise ValueError(
                f"index {index} holds {describe_layout(*stored)} but model {model} gives "
                f"{describe_layout(dim, vectors_per_image)}; "
                f"re-embed it into a new index: `imagesearch index rebuild --model {model}`"
            )
        return index

    def begin_rebuild(self, model: str, dim: int, index_type: str | None = None,
                      m: int | None = None, ef_construction: int | None = None, vectors_per_image: int = 1) -> str:
        """Start re-embedding ``model`` into a new index (new weights, dims or index options): from
        now on the queue hands out every image again for it and new vectors fill the new index,
        while searches keep reading the current one until ``swap``. Returns its name."""
        read, write = self.aliases(model)
        current = self.alias_target(write)
        if current is None:  # nothing to rebuild yet: this is the first index
            return self.ensure_model(model, dim, vectors_per_image)
        new = f"{read}-v{int(current.rsplit('-v', 1)[1]) + 1}"
        self._create_vector_index(new, dim, vectors_per_image, {}, index_type, m, ef_construction)
        self.client.es.indices.update_aliases(actions=[
            {"remove": {"index": current, "alias": write}}, {"add": {"index": new, "alias": write}},
        ])
        return new

    def pending_count(self, model: str) -> int:
        self.client.es.indices.refresh(index=self.images)
        return self.client.es.count(index=self.images, query=self.queue_states(model)["pending"])["count"]

    def swap(self, model: str, force: bool = False) -> str:
        """Point searches at the index being filled (atomically) and delete the one it replaces.
        Refuses while images are still pending for it, unless ``force``. Returns the new index."""
        read, write = self.aliases(model)
        old, new = self.alias_target(read), self.alias_target(write)
        if new is None:
            raise StoreUnavailable(f"no vector index for model {model} at {self.client.url}")
        if old is None or old == new:  # no search index yet, or nothing to swap
            return new
        if (left := self.pending_count(model)) and not force:
            raise ValueError(f"{left} image(s) still pending for {new}: finish embedding first (or force)")
        # Vectors written since the new index's last refresh (never, with refresh_interval -1) are not
        # searchable yet: searches that go there must find them all. The refresh API returns once done.
        self.client.es.indices.refresh(index=new)
        self.client.es.indices.update_aliases(actions=[
            {"remove": {"index": old, "alias": read}}, {"add": {"index": new, "alias": read}},
        ])
        self.client.es.indices.delete(index=old)
        return new

    def status(self, model: str) -> dict:
        """What the lifecycle looks like now for ``model``: the search and write indices, pending."""
        read, write = self.aliases(model)
        search_index, write_index = self.alias_target(read), self.alias_target(write)
        return {"model": model, "search_index": search_index, "write_index": write_index,
                "rebuilding": search_index != write_index, "pending": self.pending_count(model) if write_index else None,
                "search_segments": self.segments(search_index) if search_index else None}

    def segments(self, index: str) -> int:
        """How many segments the primary shards of ``index`` have (a kNN search visits each in turn)."""
        rows = self.client.es.cat.segments(index=index, format="json", h="prirep,segment").body
        return len([row for row in rows if isinstance(row, dict) and row.get("prirep") in ("p", "primary")])

    def merge(self, model: str) -> dict:
        """Force-merge ``model``'s search index into one segment: one graph to search instead of one
        per segment, so searches get faster. Blocks until done, which takes long for a large index."""
        index = self.alias_target(self.aliases(model)[0])
        if index is None:
            raise ValueError(f"model {model} has no vector index yet: run `imagesearch ingest` first")
        self.client.es.indices.refresh(index=index)  # what is written but not yet searchable goes in too
        before, started = self.segments(index), time.monotonic()
        self.client.es.options(request_timeout=24 * 3600).indices.forcemerge(index=index, max_num_segments=1)
        return {"index": index, "segments_before": before, "segments_after": self.segments(index),
                "seconds": round(time.monotonic() - started, 1)}

    def refresh(self) -> None:
        self.client.es.indices.refresh(index=f"{self.images},{self.failures},{self.removed},{self.vectors_prefix}*",
                                       ignore_unavailable=True, allow_no_indices=True)
