"""What the route handlers share, kept on ``app.state.context`` and handed to them as a dependency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import aiohttp
from fastapi import Depends, Request

from imagesearch.api.backends import Backends
from imagesearch.api.metrics import Metrics
from imagesearch.api.rate_limit import RateLimits
from imagesearch.blobs import BlobStore
from imagesearch.config import Settings
from imagesearch.fetch import FetchOptions


@dataclass
class ApiContext:
    settings: Settings
    backends: Backends
    metrics: Metrics
    blobs: BlobStore
    fetch_options: FetchOptions  # search by image_url: the downloader's guarded fetch with the API's limits
    limits: RateLimits
    http: aiohttp.ClientSession | None = None  # opened by the app's lifespan


async def _context(request: Request) -> ApiContext:  # async: FastAPI runs a plain def on a worker thread
    return request.app.state.context


Context = Annotated[ApiContext, Depends(_context)]
