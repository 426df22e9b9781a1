"""One image in full: the stored original, large, with its score, what matched, its captions, every
URL it came from, its EXIF date, camera and place, its tags, "more like this", and Remove (an admin
key: a read key's 403 is said plainly)."""

from __future__ import annotations

import streamlit as st

from imagesearch.ui.api_client import ApiDown, call, duplicate_groups, original, problem
from imagesearch.ui.markup import link, literal
from imagesearch.ui.results import more_like
from imagesearch.ui.search import forget

ADMIN_NEEDED = ("Removing an image needs an admin key: this UI's key (IMAGESEARCH_API_KEY) may search but "
                "not change the index.")


def close() -> None:
    st.session_state.details = None
    st.session_state.confirm_remove = False


def _more_like(image_id: str) -> None:
    close()
    more_like(image_id)


def remove(image_id: str) -> None:
    """DELETE /images/{id}; the outcome is said on the next draw (``st.session_state.notice``)."""
    try:
        response = call("DELETE", f"/images/{image_id}")
    except ApiDown as exc:
        st.session_state.notice = ("error", f"The API did not answer: {exc}")
        return
    if response.status_code == 200:
        forget(image_id)
        duplicate_groups.clear()
        close()
        st.session_state.notice = ("success", f"Removed {image_id[:12]} from the index.")
    elif response.status_code in (401, 403):
        st.session_state.confirm_remove = False
        st.session_state.notice = ("error", ADMIN_NEEDED)
    else:
        st.session_state.notice = ("error", f"The removal failed: {problem(response)}")


def facts(result: dict) -> None:
    """Everything the index knows of the image, each value shown as text."""
    st.markdown(f"**Score** {result['score']:.3f} · matched by {literal(', '.join(result.get('matched') or []))}")
    st.markdown(f"**Size** {result['width']} × {result['height']} · {literal(result['format'])}")
    st.markdown("**Captions**")
    for caption in result["captions"] or ["(none)"]:
        st.markdown(f"- {literal(caption)}")
    st.markdown("**Came from**")
    for location in result.get("urls") or [result.get("url") or "(unknown)"]:
        st.markdown(f"- {link(location, location)}")
    when = result.get("taken_at")
    st.markdown(f"**Taken** {literal(when) if when else 'unknown'} · **Camera** {literal(result.get('camera') or 'unknown')}")
    place = result.get("location")
    if place:
        lat, lon = float(place["lat"]), float(place["lon"])
        st.markdown(f"**Place** {lat:.5f}, {lon:.5f} · "
                    f"[map](https://www.openstreetmap.org/?mlat={lat:.5f}&mlon={lon:.5f}#map=15/{lat:.5f}/{lon:.5f})")
    else:
        st.markdown("**Place** unknown")
    st.markdown(f"**Tags** {literal(', '.join(result.get('tags') or [])) or 'none'}")
    st.code(result["id"], language=None)


def details_view(result: dict) -> None:
    image_id = result["id"]
    st.button("← Back to results", key="details-back", on_click=close)
    large, side = st.columns([3, 2])
    with large:
        data = original(image_id)
        if data:  # a small image at its own size: blown up, it would only look blurred
            st.image(data, width="stretch" if result["width"] >= 640 else "content")
        else:
            st.warning("The original could not be read from the API.")
    with side:
        facts(result)
        st.button("More like this", key=f"details-more-{image_id}", on_click=_more_like, args=(image_id,))
        if not st.session_state.get("confirm_remove"):
            st.button("Remove", key="remove", on_click=lambda: st.session_state.update(confirm_remove=True),
                      help="take the image out of the index (needs an admin key)")
        else:
            st.warning("Remove this image from the index? Its URLs are not downloaded again by the next ingest.")
            yes, no = st.columns(2)
            yes.button("Remove for good", key="remove-confirm", type="primary", on_click=remove, args=(image_id,))
            no.button("Cancel", key="remove-cancel", on_click=lambda: st.session_state.update(confirm_remove=False))
