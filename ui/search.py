"""What the UI asks the API, and the pages it has: the request built from the query, the feedback
and the sidebar's options, page 1 fetched when any of them changes, "Load more" appending the next.

The pages live in ``st.session_state.pages`` so that a rerun (a click anywhere) does not search again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import streamlit as st

from imagesearch.ui.api_client import ApiDown, body, call, problem

MODES = {"meaning": "vector", "words": "text", "both": "hybrid"}  # what the text is matched by -> the API's mode
UPLOAD_FILTERS = ("taken_after", "taken_before", "camera", "near", "within_km", "tags")  # the upload form's fields


@dataclass(frozen=True)
class Options:
    """The sidebar's choices: the POST body's ``filters`` and the rest of what shapes a search."""

    filters: dict = field(default_factory=dict)
    sort: str = "relevance"
    min_score: float | None = None
    collapse: bool = False


@dataclass
class Pages:
    request: dict  # {"json": POST /search body} or {"form": /search/image fields}, without the offset
    results: list[dict]
    next_offset: int | None
    took_ms: float
    model: str
    error: str | None = None  # the last page's request failed: why


def feedback() -> tuple[list[str], list[str]]:
    """The ids liked (👍) and disliked (👎) for the current query."""
    return st.session_state.setdefault("liked", []), st.session_state.setdefault("disliked", [])


def request_for(query: dict, options: Options, k: int, model: str | None) -> dict:
    """The request that answers ``query`` with these options (and the feedback given so far)."""
    common = {"k": k, "sort": options.sort, "collapse": options.collapse,
              **({"model": model} if model else {}), **({"min_score": options.min_score} if options.min_score else {})}
    if "upload" in query:
        return {"form": {**common, **_form_filters(options.filters)}}
    liked, disliked = feedback()
    json_body = {**query, **common, **({"filters": options.filters} if options.filters else {})}
    if "text" in query:  # feedback steers the vector search: with it, the text is matched by meaning
        json_body["mode"] = "vector" if liked or disliked else MODES[st.session_state.get("mode", "meaning")]
    if liked:
        json_body["positive_ids"] = list(liked)
    if disliked:
        json_body["negative_ids"] = list(disliked)
    return {"json": json_body}


def _form_filters(filters: dict) -> dict:
    form = {name: value for name, value in filters.items() if name in UPLOAD_FILTERS}
    if "near" in form:  # a form field: "LAT,LON"
        form["near"] = f"{filters['near']['lat']},{filters['near']['lon']}"
    return form


class SearchFailed(Exception):
    pass


def _fetch(request: dict, offset: int) -> dict:
    if "form" in request:
        upload = st.session_state.upload
        response = call("POST", "/search/image", files={"file": (upload.name, upload.getvalue(), upload.type)},
                        data={**request["form"], "offset": offset})
    else:
        response = call("POST", "/search", json={**request["json"], "offset": offset})
    if response.status_code != 200:
        raise SearchFailed(problem(response))
    return body(response)


def _key(request: dict) -> str:
    upload = st.session_state.get("upload")
    return json.dumps([request, upload.file_id if upload is not None and "form" in request else None], sort_keys=True)


def current_pages(request: dict) -> Pages:
    """The pages of ``request`` shown so far: page 1 is fetched when the request changed (SearchFailed, ApiDown)."""
    pages: Pages | None = st.session_state.get("pages")
    if pages is None or st.session_state.get("pages_key") != _key(request):
        st.session_state.pages = None
        answer = _fetch(request, 0)
        pages = Pages(request, answer["results"], answer.get("next_offset"), answer["took_ms"], answer["model"])
        st.session_state.pages, st.session_state.pages_key = pages, _key(request)
    return pages


def load_more() -> None:
    """"Load more": the next page appended (an id already shown is not shown twice)."""
    pages: Pages = st.session_state.pages
    try:
        answer = _fetch(pages.request, pages.next_offset or 0)
    except (SearchFailed, ApiDown) as exc:
        pages.error = str(exc)
        return
    shown = {result["id"] for result in pages.results}
    pages.results += [result for result in answer["results"] if result["id"] not in shown]
    pages.next_offset, pages.took_ms, pages.error = answer.get("next_offset"), answer["took_ms"], None


def forget(image_id: str) -> None:
    """An image removed from the index leaves the pages shown and the feedback."""
    pages: Pages | None = st.session_state.get("pages")
    if pages is not None:
        pages.results = [result for result in pages.results if result["id"] != image_id]
    for name in ("liked", "disliked"):
        if image_id in st.session_state.get(name, []):
            st.session_state[name].remove(image_id)
