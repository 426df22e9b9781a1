"""The web UI: a text box or an example image -> a grid of thumbnails, refined by 👍 / 👎, filtered
and sorted from the sidebar, paged by "Load more"; a details view of one image, and a page of
near-duplicates.

Run with ``imagesearch ui`` (Streamlit runs this file as a script). It talks only to the search API
(``IMAGESEARCH_API_URL``), so it holds no model and no index itself, and it fetches the images through
the API too (the browser may not be able to reach the API's address, e.g. inside docker compose).
Nothing from the index is shown as markup: see ``markup.py``.
"""

from __future__ import annotations

import streamlit as st

from imagesearch.formats import FILE_SUFFIXES
from imagesearch.ui import sidebar
from imagesearch.ui.api_client import API_URL, ApiDown, api_state
from imagesearch.ui.details import details_view
from imagesearch.ui.duplicates import duplicates_view
from imagesearch.ui.markup import literal
from imagesearch.ui.results import chips, clear_feedback, pages_view
from imagesearch.ui.search import MODES, UPLOAD_FILTERS, Options, SearchFailed, current_pages, request_for

K_CHOICES = [4, 8, 12, 16, 24, 32, 48, 64, 100]
UPLOAD_TYPES = sorted(suffix.lstrip(".") for suffix in FILE_SUFFIXES)


# --- what to search for: set by the widgets' callbacks (a new query starts without feedback) ------

def _on_text() -> None:
    st.session_state.query = {"text": st.session_state.text} if st.session_state.text.strip() else None
    st.session_state.details = None
    clear_feedback()


def _on_upload() -> None:
    st.session_state.query = {"upload": True} if st.session_state.upload is not None else None
    st.session_state.details = None
    clear_feedback()


def model_choice(status: dict | None) -> str | None:
    """With several models served (e.g. CLIP and BLIP-2), a selector; the first is the API's default."""
    models = [m["slug"] for m in (status or {}).get("models", [])]
    if len(models) < 2:
        return None
    return st.selectbox("Model", models, key="model", help="each image is embedded with every model; "
                        "they rank differently (BLIP-2 scores an image by the best of its 32 query vectors)")


def query_widgets() -> int:
    """The text box, k, the match mode and the upload; returns k."""
    text_column, k_column = st.columns([5, 1])
    text_column.text_input("Describe what you are looking for", key="text", on_change=_on_text,
                           placeholder="a dog running on a beach")
    k = k_column.selectbox("Results", K_CHOICES, index=K_CHOICES.index(12), key="k") or 12  # None only with no choices
    st.radio("Match the text by", list(MODES), key="mode", horizontal=True,
             help="meaning: what the image shows (CLIP); words: its caption and file name; both: the two ranked together")
    st.file_uploader("…or search by an example image", type=UPLOAD_TYPES, key="upload", on_change=_on_upload)
    return k


def show_notice() -> None:
    """What a callback (a removal) has to say, once."""
    notice = st.session_state.pop("notice", None)
    if notice:
        kind, message = notice
        (st.success if kind == "success" else st.error)(literal(message))


def search_view(options: Options) -> None:
    k = query_widgets()
    model = model_choice(api_state()[1])
    show_notice()
    if st.session_state.get("details"):
        details_view(st.session_state.details)
        return
    query = st.session_state.query
    if not query:
        st.info("Type a description and press Enter, or upload an image.")
        return
    if "image_id" in query:
        st.subheader(f"Similar to {query['image_id'][:12]}")
    elif "upload" in query:
        st.subheader(f"Similar to {literal(st.session_state.upload.name)}")
        if set(options.filters) - set(UPLOAD_FILTERS):
            st.caption("Format, source and size filters apply to text and “more like this” searches only.")
    chips()
    try:
        pages = current_pages(request_for(query, options, k, model))
    except ApiDown as exc:
        st.error(f"The search API at {literal(API_URL)} stopped answering ({literal(exc)}). Try again when it is back.")
        return
    except SearchFailed as exc:
        st.warning(f"The search failed: {literal(exc)}")
        return
    pages_view(pages, with_feedback="upload" not in query)


def main() -> None:
    st.set_page_config(page_title="Image search", layout="wide")
    st.title("Image search")
    st.session_state.setdefault("query", None)
    view = sidebar.view()
    try:
        sidebar.status()
    except ApiDown as exc:
        st.sidebar.error("API not reachable")
        st.error(f"The search API at {literal(API_URL)} is not reachable, so nothing can be searched right now. "
                 f"Start it with `imagesearch serve` (or `make run`) and reload this page.\n\n({literal(exc)})")
        st.stop()
    try:
        if view == "Duplicates":
            duplicates_view(st.session_state.get("model"))
        else:
            search_view(sidebar.options())
    except ApiDown as exc:
        st.error(f"The search API at {literal(API_URL)} stopped answering ({literal(exc)}). Try again when it is back.")


main()
