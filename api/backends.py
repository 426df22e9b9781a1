"""The encoders and the store behind the API, built on first use and again after a failure.

One store, and one encoder and search service per served model (``IMAGESEARCH_MODELS``; the first
is the default of every request that names none).
"""

from __future__ import annotations

import contextlib
import threading

from imagesearch.api.metrics import Metrics
from imagesearch.config import Settings
from imagesearch.encoders import Encoder, EncoderUnavailable, make_encoder
from imagesearch.search import QueryError, SearchService
from imagesearch.stores import StoreUnavailable, VectorStore, make_store


class Backends:
    """A store that is not up yet when the API starts, or a model exported later, is picked up by a
    later request, so the API itself always starts and says in /healthz what is missing."""

    def __init__(self, settings: Settings, metrics: Metrics, service: SearchService | None = None):
        self.settings, self.metrics = settings, metrics
        # The models as configured ("" = the only/first one exported, known once its encoder loads).
        self.requested: list[str] = [service.model] if service else settings.model_slugs
        self._services: dict[str, SearchService] = {service.model: service} if service else {}
        self._encoders: dict[str, Encoder] = {service.model: service.encoder} if service else {}
        self._store: VectorStore | None = service.store if service else None
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def _build(self) -> None:
        self._errors = {}
        if self._store is None:
            try:
                self._store = self.metrics.timed_store(make_store(self.settings))
            except Exception as exc:
                self._errors["store"] = f"the store cannot open: {exc}"
        for requested in self.requested:
            if requested not in self._encoders:
                try:
                    self._encoders[requested] = self.metrics.timed_encoder(make_encoder(self.settings.for_model(requested)))
                except Exception as exc:  # a missing model, files that do not load: not a client error
                    self._errors[requested] = f"the encoder of {requested or 'the default model'} cannot start: {exc}"
            encoder = self._encoders.get(requested)
            if encoder is not None and self._store is not None and requested not in self._services:
                self._services[requested] = SearchService(self.settings.for_model(encoder.card.slug), encoder, self._store)

    @property
    def errors(self) -> dict[str, str]:
        """Why a part cannot answer now: "store", or a model as configured -> the message."""
        return dict(self._errors)

    def slug(self, requested: str) -> str:
        """The model's slug (the configured name until its encoder has loaded)."""
        encoder = self._encoders.get(requested)
        return encoder.card.slug if encoder is not None else requested

    def _resolve(self, model: str | None) -> str:
        if not model:
            return self.requested[0]
        for requested in self.requested:
            if model in (requested, self.slug(requested)):
                return requested
        served = ", ".join(self.slug(r) or "(default)" for r in self.requested)
        raise QueryError(f"unknown model {model[:100]!r}; this API serves: {served}")

    def service(self, model: str | None = None) -> SearchService:
        """The search service of ``model`` (None: the default). ``QueryError`` for a model not served."""
        with self._lock:
            requested = self._resolve(model)
            if requested not in self._services:
                self._build()
            if requested in self._errors:
                raise EncoderUnavailable(self._errors[requested])
            if "store" in self._errors:
                raise StoreUnavailable(self._errors["store"])
            return self._services[requested]

    def services(self) -> list[SearchService]:
        """Every served model's search service that can answer now, the default first."""
        built = []
        for requested in self.requested:
            with contextlib.suppress(EncoderUnavailable, StoreUnavailable):
                built.append(self.service(requested or None))
        return built

    def health(self) -> dict:
        self.services()  # (re)build what is missing
        models = {}
        for requested in self.requested:
            encoder = self._encoders.get(requested)
            models[self.slug(requested) or "default"] = encoder.health() if encoder is not None else {
                "ok": False, "error": self._errors.get(requested, "")}
        store = self._store.health() if self._store is not None else {"ok": False, "error": self._errors.get("store", "")}
        default = self.slug(self.requested[0]) or None
        ok = store.get("ok", False) and all(m.get("ok") for m in models.values())
        # "encoder": the default model's, as before several models could be served
        return {"ok": ok, "model": default, "encoder": next(iter(models.values())), "store": store, "models": models}

    def close(self) -> None:
        for service in self._services.values():
            service.stop_batcher()
        for encoder in self._encoders.values():
            encoder.close()
        if self._store is not None:
            self._store.close()
