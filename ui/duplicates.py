"""The duplicates page: the groups of near-duplicate images (``GET /duplicates``), largest first,
each as thumbnails with the group's score."""

from __future__ import annotations

import streamlit as st

from imagesearch.ui.api_client import duplicate_groups, thumbnail
from imagesearch.ui.markup import literal
from imagesearch.ui.results import more_like

MAX_GROUPS = 50  # a page of thumbnails; the API's answer says how many there are in all
COLUMNS = 6


def _search_like(image_id: str) -> None:
    more_like(image_id)
    st.session_state.view = "Search"


def group(number: int, entry: dict) -> None:
    ids = entry["ids"]
    st.markdown(f"**Group {number}** · {len(ids)} images · score {entry['min_score']:.3f}",
                help="the lowest similarity among the pairs that joined the group")
    for start in range(0, len(ids), COLUMNS):
        for column, image_id in zip(st.columns(COLUMNS), ids[start : start + COLUMNS], strict=False):
            with column:
                data = thumbnail(image_id)
                if data:
                    st.image(data, width="stretch")
                st.caption(image_id[:12])
                st.button("More like this", key=f"dup-more-{number}-{image_id}", on_click=_search_like, args=(image_id,))


def duplicates_view(model: str | None) -> None:
    st.subheader("Near-duplicates")
    answer, error = duplicate_groups(model)
    if error:
        st.warning(f"The API could not list the near-duplicates: {literal(error)}")
        return
    groups = answer.get("groups", [])
    st.caption(f"{len(groups)} group{'' if len(groups) == 1 else 's'} of images at a similarity of "
               f"{answer.get('threshold', 0):.2f} or more · model {literal(answer.get('model', ''))}"
               + (f" · the largest {MAX_GROUPS} shown" if len(groups) > MAX_GROUPS else ""))
    if not groups:
        st.info("No near-duplicates: no two images are that alike.")
    for number, entry in enumerate(groups[:MAX_GROUPS], start=1):
        group(number, entry)
