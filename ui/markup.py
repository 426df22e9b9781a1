"""Text from the index shown as text: the one place where captions, URLs, file names, tags and error
details are made safe for Streamlit's Markdown (``st.markdown``, ``st.caption``, alerts, labels).

Anything an ingested URL list or a folder says is untrusted: a caption ``![](https://tracker/p.png)``
must not become an image, ``<img onerror=…>`` not HTML, ``$x$`` not math, and a URL with ``)`` in it
must not end its link early.
"""

from __future__ import annotations

import re
import string
from urllib.parse import quote, urlsplit

# CommonMark lets every ASCII punctuation character be escaped with a backslash, which makes it literal:
# no emphasis, link, image, HTML tag, entity, ``<…>`` autolink, ``$`` math or
# Streamlit's ``:colour[…]`` and ``:emoji:`` directives.
_PUNCTUATION = re.compile("([" + re.escape(string.punctuation) + "])")
_LINE_BREAKS = re.compile(r"\s*[\r\n\u2028\u2029]+\s*")  # a new line could start a heading, list or table
# Streamlit's Markdown (remark-gfm) turns URL-like text into links after escapes are resolved:
# ``https://…``, ``www.…`` and ``name@host``. An invisible word joiner inside each pattern keeps it text.
_AUTOLINKS = re.compile(r"(?i)(?<=:)(?=//)|(?<=www)(?=\.)|(?<=@)")
WORD_JOINER = "\u2060"
# Characters a URL may keep in a Markdown link destination; the rest (parentheses, brackets, quotes,
# spaces, backslashes, angle brackets) are percent-encoded, so the destination cannot end early.
_URL_SAFE = "/:?#@!&+,;=%-._~"


def literal(text: object) -> str:
    """``text`` as Markdown that shows these characters (on one line; URL-like text not as a link)."""
    one_line = _LINE_BREAKS.sub(" ", str(text))
    return _PUNCTUATION.sub(r"\\\1", _AUTOLINKS.sub(WORD_JOINER, one_line))


def web_url(url: str | None) -> str | None:
    """``url`` percent-encoded for a link, if it is an http(s) URL with a host; None otherwise."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return quote(url.strip(), safe=_URL_SAFE)


def link(label: str, url: str | None) -> str:
    """A Markdown link to an http(s) ``url``; for any other URL (or none), the label alone, as text."""
    target = web_url(url)
    return f"[{literal(label)}]({target})" if target else literal(label)


def file_name(location: str) -> str:
    """The last part of a path or URL (what a folder image's location says about it)."""
    return location.rstrip("/").rsplit("/", 1)[-1]
