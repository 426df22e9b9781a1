"""The web UI: a text box or an example image -> a grid of the top-k images; "more like this" on each.

Run with ``imagesearch ui``. It talks only to the search API (``IMAGESEARCH_API_URL``), so it holds
no model and no index itself, and it fetches the images through the API too (the browser may not
be able to reach the API's address, e.g. inside docker compose).
"""

from __future__ import annotations

import httpx
import streamlit as st

from imagesearch.config import Settings
from imagesearch.formats import FILE_SUFFIXES

API_URL = Settings().api_url.rstrip("/")
COLUMNS = 4
K_CHOICES = [4, 8, 12, 16, 24, 32, 48, 64, 100]
MODES = {"meaning": "vector", "words": "text", "both": "hybrid"}  # what the text is matched by -> the API's mode
UPLOAD_TYPES = sorted(suffix.lstrip(".") for suffix in FILE_SUFFIXES)


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


@st.cache_data(max_entries=1024, show_spinner=False)
def image_bytes(image_path: str) -> bytes | None:
    """Images are content-addressed, so a cached copy never goes stale."""
    response = call("GET", image_path)
    return response.content if response.status_code == 200 else None


@st.cache_data(ttl=5, show_spinner=False)
def api_state() -> tuple[dict, dict | None]:
    try:
        health = call("GET", "/healthz").json()
        status = call("GET", "/status")
        return health, status.json() if status.status_code == 200 else None
    except ValueError:  # something answers there, but not with JSON
        raise ApiDown("the address answers, but not as the search API") from None


# --- what to search for: set by the widgets' callbacks ---------------------------------------

def _on_text() -> None:
    st.session_state.query = {"text": st.session_state.text} if st.session_state.text.strip() else None


def _on_upload() -> None:
    st.session_state.query = {"upload": True} if st.session_state.upload is not None else None


def _more_like(image_id: str) -> None:
    st.session_state.query = {"image_id": image_id}


def search(query: dict, k: int, model: str | None) -> httpx.Response:
    if "upload" in query:
        upload = st.session_state.upload
        form = {"k": k, **({"model": model} if model else {})}
        return call("POST", "/search/image", files={"file": (upload.name, upload.getvalue(), upload.type)}, data=form)
    if "text" in query:
        query = {**query, "mode": MODES[st.session_state.get("mode", "meaning")]}
    return call("POST", "/search", json={**query, "k": k, "model": model})


def model_choice(status: dict | None) -> str | None:
    """With several models served (e.g. CLIP and BLIP-2), a selector; the first is the API's default."""
    models = [m["slug"] for m in (status or {}).get("models", [])]
    if len(models) < 2:
        return None
    return st.selectbox("Model", models, key="model", help="each image is embedded with every model; "
                        "they rank differently (BLIP-2 scores an image by the best of its 32 query vectors)")


def sidebar() -> None:
    st.sidebar.header("Status")
    health, status = api_state()
    if health.get("ok"):
        st.sidebar.success("API healthy")
    else:
        parts = {**{f"model {slug}": part for slug, part in (health.get("models") or {}).items()},
                 "store": health.get("store") or {}}
        problems = [f"{name}: {part.get('error') or 'not ok'}" for name, part in parts.items() if not part.get("ok")]
        st.sidebar.error("API unhealthy — " + "; ".join(problems))
    if status:
        counts, model = status["counts"], status["model"]
        left, right = st.sidebar.columns(2)
        left.metric("Images", counts["images"])
        right.metric("Embedded", counts["embedded"])
        left.metric("Pending", counts["pending"])
        right.metric("Failed URLs", counts["failed_urls"])
        for served in status.get("models") or [model]:
            vectors = f"{served['dim']}-d" if served.get("vectors_per_image", 1) == 1 else \
                f"{served['vectors_per_image']} × {served['dim']}-d per image"
            embedded = f" · {served['counts']['embedded']} embedded" if "counts" in served else ""
            st.sidebar.markdown(f"**Model** `{served['slug']}`  \n{served['architecture']} · {vectors}{embedded}")
        st.sidebar.caption(f"encoder {status['backends']['encoder']} · store {status['backends']['store']}")
    st.sidebar.caption(f"API: {API_URL}")


def results_grid(results: list[dict]) -> None:
    for start in range(0, len(results), COLUMNS):
        for column, result in zip(
            st.columns(COLUMNS), results[start : start + COLUMNS], strict=False
        ):  # the last row may be short:
            with column:
                data = image_bytes(result["image_url"])
                if data:
                    st.image(data, width="stretch")
                caption = result["captions"][0] if result["captions"] else ""
                source = result.get("url") or ""
                if source.startswith(("http://", "https://")):
                    link = f" · [source]({source})"
                else:  # a folder file: its name says where it came from
                    link = f" · {source.rsplit('/', 1)[-1]}" if source else ""
                st.markdown(f"**{result['score']:.3f}** {caption}{link}")
                st.caption(result["id"][:12])
                st.button("More like this", key=f"more-{result['id']}", on_click=_more_like, args=(result["id"],))


def main() -> None:
    st.set_page_config(page_title="Image search", layout="wide")
    st.title("Image search")
    try:
        sidebar()
    except ApiDown as exc:
        st.sidebar.error("API not reachable")
        st.error(f"The search API at {API_URL} is not reachable, so nothing can be searched right now. "
                 f"Start it with `imagesearch serve` (or `make run`) and reload this page.\n\n({exc})")
        st.stop()

    st.session_state.setdefault("query", None)
    text_column, k_column = st.columns([5, 1])
    text_column.text_input("Describe what you are looking for", key="text", on_change=_on_text,
                           placeholder="a dog running on a beach")
    k = k_column.selectbox("Results", K_CHOICES, index=K_CHOICES.index(12), key="k") or 12  # None only with no choices
    st.radio("Match the text by", list(MODES), key="mode", horizontal=True,
             help="meaning: what the image shows (CLIP); words: its caption and file name; both: the two ranked together")
    st.file_uploader("…or search by an example image", type=UPLOAD_TYPES, key="upload", on_change=_on_upload)
    model = model_choice(api_state()[1])

    query = st.session_state.query
    if not query:
        st.info("Type a description and press Enter, or upload an image.")
        return
    if "image_id" in query:
        st.subheader(f"Similar to {query['image_id'][:12]}")
    elif "upload" in query:
        st.subheader(f"Similar to {st.session_state.upload.name}")
    try:
        response = search(query, k, model)
    except ApiDown as exc:
        st.error(f"The search API at {API_URL} stopped answering ({exc}). Try again when it is back.")
        return
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code != 200:
        st.warning(f"The search failed: {body.get('detail') or response.text[:300]}")
        return
    n = len(body["results"])
    st.caption(f"{n} result{'' if n == 1 else 's'} in {body['took_ms']:.0f} ms · model {body['model']}")
    if not body["results"]:
        st.info("No images match.")
    results_grid(body["results"])


main()
