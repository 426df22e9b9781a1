"""The sidebar: which page, the API's state (health, counts, models) and the search options (the
filters, sort, score cutoff and near-duplicate collapse of ``POST /search``)."""

from __future__ import annotations

from datetime import date

import streamlit as st

from imagesearch.formats import FORMATS
from imagesearch.ui.api_client import API_URL, api_state, tag_names
from imagesearch.ui.markup import literal
from imagesearch.ui.search import Options

VIEWS = ["Search", "Duplicates"]
SOURCES = ["url", "folder", "upload"]
SORTS = ["relevance", "newest", "oldest"]
EARLIEST, LATEST = date(1826, 1, 1), date(2200, 12, 31)  # the date pickers' range (their default is ten years)


def view() -> str:
    return st.sidebar.radio("Page", VIEWS, key="view", horizontal=True) or VIEWS[0]


def status() -> None:
    """Health, counts and the models served (ApiDown when the API does not answer)."""
    st.sidebar.header("Status")
    health, state = api_state()
    if health.get("ok"):
        st.sidebar.success("API healthy")
    else:
        parts = {**{f"model {slug}": part for slug, part in (health.get("models") or {}).items()},
                 "store": health.get("store") or {}}
        problems = [f"{name}: {part.get('error') or 'not ok'}" for name, part in parts.items() if not part.get("ok")]
        st.sidebar.error("API unhealthy — " + literal("; ".join(problems)))
    if state:
        counts, model = state["counts"], state["model"]
        left, right = st.sidebar.columns(2)
        left.metric("Images", counts["images"])
        right.metric("Embedded", counts["embedded"])
        left.metric("Pending", counts["pending"])
        right.metric("Failed URLs", counts["failed_urls"])
        for served in state.get("models") or [model]:
            vectors = f"{served['dim']}-d" if served.get("vectors_per_image", 1) == 1 else \
                f"{served['vectors_per_image']} × {served['dim']}-d per image"
            embedded = f" · {served['counts']['embedded']} embedded" if "counts" in served else ""
            st.sidebar.markdown(f"**Model** `{served['slug']}`  \n{literal(served['architecture'])} · {vectors}{embedded}")
        st.sidebar.caption(f"encoder {literal(state['backends']['encoder'])} · store {literal(state['backends']['store'])}")
    st.sidebar.caption(f"API: {literal(API_URL)}")


def options() -> Options:
    """The search options as the sidebar sets them; a value that does not parse is said, not sent."""
    bar = st.sidebar
    bar.header("Filters")
    filters: dict = {}
    if chosen := bar.multiselect("Format", sorted(FORMATS), key="f_format"):
        filters["format"] = chosen
    if chosen := bar.multiselect("Source", SOURCES, key="f_source"):
        filters["source"] = chosen
    width, height = bar.columns(2)
    if min_width := width.number_input("Min width (px)", min_value=0, step=100, key="f_min_width"):
        filters["min_width"] = int(min_width)
    if min_height := height.number_input("Min height (px)", min_value=0, step=100, key="f_min_height"):
        filters["min_height"] = int(min_height)
    filters.update(_when_where_what())
    sort = bar.radio("Sort by", SORTS, key="f_sort", horizontal=True,
                     help="newest / oldest: the best matches in the order they were taken") or SORTS[0]
    min_score = bar.slider("Lowest score", 0.0, 1.0, 0.0, 0.01, key="f_min_score",
                           help="leave out results below this similarity (0: no cutoff; the meaning part only)")
    collapse = bar.checkbox("Collapse near-duplicates", key="f_collapse",
                            help="show the best of each group of near-identical images")
    return Options(filters, sort, min_score or None, collapse)


def _when_where_what() -> dict:
    """The photo filters (EXIF date, camera, place) and the tags."""
    bar = st.sidebar
    filters: dict[str, object] = {}
    taken_after: date | None = bar.date_input("Taken after", value=None, min_value=EARLIEST, max_value=LATEST,
                                              key="f_taken_after")
    taken_before: date | None = bar.date_input("Taken before", value=None, min_value=EARLIEST, max_value=LATEST,
                                               key="f_taken_before")
    if taken_after:
        filters["taken_after"] = taken_after.isoformat()
    if taken_before:
        filters["taken_before"] = taken_before.isoformat()
    if taken_after and taken_before and taken_after > taken_before:
        bar.warning("“Taken after” is later than “Taken before”: the dates are left out.")
        del filters["taken_after"], filters["taken_before"]
    if camera := bar.text_input("Camera", key="f_camera", placeholder="Canon, iPhone 13…").strip():
        filters["camera"] = camera
    near, within = bar.columns([3, 2])
    place = near.text_input("Near (lat,lon)", key="f_near", placeholder="48.8584,2.2945").strip()
    km = within.number_input("Within km", min_value=0.1, value=10.0, step=1.0, key="f_within_km")
    if place:
        try:
            lat, lon = (float(part) for part in place.split(","))
            filters["near"], filters["within_km"] = {"lat": lat, "lon": lon}, float(km)
        except ValueError:
            bar.warning("A place is “lat,lon” in decimal degrees, e.g. 48.8584,2.2945: it is left out.")
    if tags := bar.multiselect("Tags", tag_names(), key="f_tags", help="images with every tag chosen"):
        filters["tags"] = tags
    return filters
