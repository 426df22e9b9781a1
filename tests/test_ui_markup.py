"""The one helper that makes index text safe for Streamlit's Markdown (ui/markup.py): the escaping
itself here; tests/test_ui_features.py checks what Chromium renders of it."""

from __future__ import annotations

import string

import pytest

from imagesearch.ui.markup import WORD_JOINER, file_name, link, literal, web_url


@pytest.mark.parametrize("text", [
    "![](https://tracker.example/p.png) a photo",
    "[click me](https://phish.example/x)",
    '<img src=x onerror="alert(1)">',
    "$e^{i\\pi}$ and $$x$$",
    ":red[alarm] :smile: **bold** _it_ `code` ~~gone~~",
    "# heading\n- item\n| a | b |",
    "&lt;script&gt; &amp;",
    "https://phish.example/bare www.phish.example a@phish.example",
])
def test_every_punctuation_mark_is_escaped_and_nothing_else_changes(text):
    escaped = literal(text)
    assert "\n" not in escaped
    unescaped, i = [], 0
    while i < len(escaped):
        if escaped[i] == "\\":
            assert escaped[i + 1] in string.punctuation, escaped
            unescaped.append(escaped[i + 1])
            i += 2
        else:
            assert escaped[i] not in string.punctuation, escaped  # no punctuation left unescaped
            unescaped.append(escaped[i])
            i += 1
    shown = "".join(unescaped)
    assert shown.replace(WORD_JOINER, "") == text.replace("\n", " ")  # the same characters, on one line
    for pattern in ("://", "www.", "@p"):  # what remark-gfm would make a link of (after escapes) is broken up
        assert pattern not in shown


def test_links_only_to_http_urls_and_never_past_their_end():
    assert link("source", "https://example.org/a.jpg") == r"[source](https://example.org/a.jpg)"
    hostile = "http://example.org/x.jpg?)![](https://tracker.example/p.png)"
    made = link("source", hostile)
    destination = made[len("[source](") : -1]
    assert not set(destination) & set("()[]<> \\\"'`$"), made  # nothing that could end the link or start markup
    assert destination == web_url(hostile)
    for unsafe in ("javascript:alert(1)", "data:image/png;base64,AAAA", "file:///etc/passwd", "/home/me/a.jpg", "",
                   None, "http://", "vbscript:x"):
        assert web_url(unsafe) is None
        assert "](" not in link("source", unsafe)


def test_the_file_name_of_a_path_or_url():
    assert file_name("/photos/2023/red_circle_1.jpg") == "red_circle_1.jpg"
    assert file_name("https://example.org/a/b.png") == "b.png"
