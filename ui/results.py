"""The results: a grid of thumbnails with score, caption, source and buttons (more like this, 👍 / 👎,
details), the feedback chips above it and "Load more" below it."""

from __future__ import annotations

import streamlit as st

from imagesearch.ui.api_client import thumbnail
from imagesearch.ui.markup import file_name, link, literal
from imagesearch.ui.search import Pages, feedback, load_more

COLUMNS = 4


# --- what the buttons do (callbacks: they run before the page is drawn again) --------------------

def more_like(image_id: str) -> None:
    """A new query: similar to this image (the feedback belongs to the query before)."""
    st.session_state.query, st.session_state.details = {"image_id": image_id}, None
    clear_feedback()


def open_details(result: dict) -> None:
    st.session_state.details = result


def rate(image_id: str, liked: bool) -> None:
    """👍 / 👎: the image joins one list (and leaves the other: an id may not be in both)."""
    likes, dislikes = feedback()
    add, drop = (likes, dislikes) if liked else (dislikes, likes)
    if image_id in drop:
        drop.remove(image_id)
    if image_id not in add:
        add.append(image_id)


def unrate(name: str, image_id: str) -> None:
    if image_id in st.session_state.get(name, []):
        st.session_state[name].remove(image_id)


def clear_feedback() -> None:
    st.session_state.liked, st.session_state.disliked = [], []


# --- drawing -------------------------------------------------------------------------------------

def summary(result: dict) -> str:
    """The line under a thumbnail: the score, the first caption and where it came from, as text."""
    caption = result["captions"][0] if result["captions"] else ""
    source = result.get("url") or ""
    if source.startswith(("http://", "https://")):
        where = f" · {link('source', source)}"
    else:  # a folder file: its name says where it came from
        where = f" · {literal(file_name(source))}" if source else ""
    return f"**{result['score']:.3f}** {literal(caption)}{where}"


def card(result: dict, with_feedback: bool) -> None:
    image_id = result["id"]
    data = thumbnail(image_id)
    if data:
        st.image(data, width="stretch")
    st.markdown(summary(result))
    st.caption(image_id[:12])
    st.button("More like this", key=f"more-{image_id}", on_click=more_like, args=(image_id,))
    up, down, details = st.columns([1, 1, 2])
    if with_feedback:  # icons, not emoji: they show the same in every browser, emoji fonts or not
        up.button(":material/thumb_up:", key=f"up-{image_id}", on_click=rate, args=(image_id, True),
                  help="👍 more like this one")
        down.button(":material/thumb_down:", key=f"down-{image_id}", on_click=rate, args=(image_id, False),
                    help="👎 less like this one")
    details.button("Details", key=f"details-{image_id}", on_click=open_details, args=(result,),
                   help="the original, large, with all that is known of it")


def grid(results: list[dict], with_feedback: bool) -> None:
    for start in range(0, len(results), COLUMNS):
        row = results[start : start + COLUMNS]  # the last row may be short
        for column, result in zip(st.columns(COLUMNS), row, strict=False):
            with column:
                card(result, with_feedback)


def chips() -> None:
    """What was liked and disliked, each removable on its own; "Clear" goes back to the query alone."""
    likes, dislikes = feedback()
    if not likes and not dislikes:
        return
    st.caption("Refined by your feedback (by meaning) — click one to take it back:")
    chosen = [("liked", ":material/thumb_up:", image_id) for image_id in likes] + \
        [("disliked", ":material/thumb_down:", image_id) for image_id in dislikes]
    columns = st.columns(min(len(chosen) + 1, 8))  # the last one for "Clear feedback"
    for n, (name, mark, image_id) in enumerate(chosen):
        with columns[n % (len(columns) - 1)]:
            if data := thumbnail(image_id):
                st.image(data, width=64)
            st.button(f"{image_id[:8]} ×", icon=mark, key=f"chip-{name}-{image_id}", on_click=unrate,
                      args=(name, image_id), help=f"{'👍' if name == 'liked' else '👎'} {image_id}: click to take it back")
    columns[-1].button("Clear feedback", key="clear-feedback", on_click=clear_feedback)


def pages_view(pages: Pages, with_feedback: bool) -> None:
    n = len(pages.results)
    st.caption(f"{n} result{'' if n == 1 else 's'} in {pages.took_ms:.0f} ms · model {literal(pages.model)}")
    if not pages.results:
        st.info("No images match.")
    grid(pages.results, with_feedback)
    if pages.error:
        st.warning(f"The next page failed: {literal(pages.error)}")
    if pages.next_offset is not None:
        st.button("Load more", key="load-more", on_click=load_more, type="primary")
