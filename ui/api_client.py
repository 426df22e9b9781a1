"""The UI's only way to the search API (``IMAGESEARCH_API_URL``, with ``IMAGESEARCH_API_KEY``).

Images are fetched here, server-side, too: the browser may not be able to reach the API's address
(e.g. inside docker compose), so it gets them from Streamlit.
"""

from __future__ import annotations

import io

import httpx
import streamlit as st
from PIL import Image

from imagesearch.config import Settings

API_URL = Settings().api_url.rstrip("/")


class ApiDown(Exception):
    pass


@st.cache_resource
def client() -> httpx.Client:
    key = Settings().api_key.get_secret_value()  # IMAGESEARCH_API_KEY, when the API asks for keys
    return httpx.Client(base_url=API_URL, timeout=httpx.Timeout(30.0, connect=3.0),
                        headers={"Authorization": f"Bearer {key}"} if key else None)


def call(method: str, path: str, **kwargs) -> httpx.Response:
    try:
        return client().request(method, path, **kwargs)
    except httpx.TransportError as exc:
        raise ApiDown(f"{type(exc).__name__}: {exc}") from None


def body(response: httpx.Response) -> dict:
    """The JSON answer, or {} when the answer is not JSON (a proxy's error page)."""
    if not response.headers.get("content-type", "").startswith("application/json"):
        return {}
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def problem(response: httpx.Response) -> str:
    """What went wrong, as the API says it (plain text: show it through ``markup.literal``)."""
    return str(body(response).get("detail") or response.text[:300] or f"HTTP {response.status_code}")


@st.cache_data(max_entries=2048, show_spinner=False)
def image_bytes(image_path: str) -> bytes | None:
    """Images and their thumbnails are content-addressed, so a cached copy never goes stale."""
    response = call("GET", image_path)
    return response.content if response.status_code == 200 else None


@st.cache_data(max_entries=2048, show_spinner=False)
def thumbnail(image_id: str) -> bytes | None:
    """The small image the grid shows (the API's WebP, longest side 320 px), not the stored original.

    ``st.image`` re-encodes what is not JPEG, PNG or GIF as a JPEG of quality 90, which is twice the
    bytes of the WebP; quality 80 (that of the WebP) looks the same at this size and moves less.
    """
    response = call("GET", f"/images/{image_id}/thumbnail")
    if response.status_code != 200:
        return None
    try:
        image = Image.open(io.BytesIO(response.content))
        if image.format in ("JPEG", "PNG", "GIF"):
            return response.content
        out = io.BytesIO()
        if image.mode in ("RGBA", "LA", "P"):
            image.save(out, "PNG")  # keeps the transparency
        else:
            image.convert("RGB").save(out, "JPEG", quality=80)
        return out.getvalue()
    except (OSError, ValueError):  # not an image after all: nothing to show
        return None


def original(image_id: str) -> bytes | None:
    return image_bytes(f"/images/{image_id}")


@st.cache_data(ttl=5, show_spinner=False)
def api_state() -> tuple[dict, dict | None]:
    try:
        health = call("GET", "/healthz").json()
        status = call("GET", "/status")
        return health, status.json() if status.status_code == 200 else None
    except ValueError:  # something answers there, but not with JSON
        raise ApiDown("the address answers, but not as the search API") from None


@st.cache_data(ttl=30, show_spinner=False)
def tag_names() -> list[str]:
    """The tags the images hold, the most held first (none when the API cannot say)."""
    response = call("GET", "/tags", params={"limit": 500})
    return [entry["tag"] for entry in body(response).get("tags", [])] if response.status_code == 200 else []


@st.cache_data(ttl=60, show_spinner=False)
def duplicate_groups(model: str | None) -> tuple[dict, str | None]:
    """(answer, None) or ({}, what went wrong): the API's near-duplicate groups, largest first."""
    response = call("GET", "/duplicates", params={"model": model} if model else None)
    if response.status_code != 200:
        return {}, problem(response)
    return body(response), None
