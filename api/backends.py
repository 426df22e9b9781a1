"""The encoder and the store behind the API, built on first use and again after a failure."""

from __future__ import annotations

import threading

from api.metrics import Metrics
from imagesearch.config import Settings
from imagesearch.encoders import EncoderUnavailable, make_encoder
from imagesearch.search import SearchService
from imagesearch.stores import StoreUnavailable, make_store


class Backends:
    """A store that is not up yet when the API starts, or a model exported later, is picked up by a
    later request, so the API itself always starts and says in /healthz what is missing."""

    def __init__(self, settings: Settings, metrics: Metrics, service: SearchService | None = None):
        self.settings, self.metrics = settings, metrics
        self._service = service
        self._encoder = service.encoder if service else None
        self._store = service.store if service else None
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def _build(self) -> None:
        self._errors = {}
        if self._encoder is None:
            try:
                self._encoder = self.metrics.timed_encoder(make_encoder(self.settings))
            except Exception as exc:  # a missing model, files that do not load: not a client error
                self._errors["encoder"] = f"the encoder cannot start: {exc}"
        if self._store is None:
            try:
                self._store = self.metrics.timed_store(make_store(self.settings))
            except Exception as exc:
                self._errors["store"] = f"the store cannot open: {exc}"
        if self._encoder is not None and self._store is not None:
            self._service = SearchService(self.settings, self._encoder, self._store)

    def service(self) -> SearchService:
        with self._lock:
            if self._service is None:
                self._build()
            if "encoder" in self._errors:
                raise EncoderUnavailable(self._errors["encoder"])
            if "store" in self._errors:
                raise StoreUnavailable(self._errors["store"])
            assert self._service is not None
            return self._service

    def health(self) -> dict:
        try:
            self.service()
        except (EncoderUnavailable, StoreUnavailable):
            pass
        parts = {}
        for name, part in (("encoder", self._encoder), ("store", self._store)):
            parts[name] = part.health() if part is not None else {"ok": False, "error": self._errors.get(name, "")}
        ok = all(p.get("ok") for p in parts.values())
        model = self._service.model if self._service else (self.settings.model or None)
        return {"ok": ok, "model": model, **parts}

    def close(self) -> None:
        if self._service is not None:
            self._service.close()
