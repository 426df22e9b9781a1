"""The URL list format, and the list shipped in data/."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from imagesearch.ingest.urls import UrlEntry, parse_url_file, parse_url_lines

DATA = Path(__file__).resolve().parent.parent / "data"


def test_urls_captions_comments_and_blank_lines():
    text = (
        "# a comment\n"
        "\n"
        "https://example.com/a.jpg\n"
        "https://example.com/b.jpg\ta red circle\n"
        "   # indented comment\n"
        "http://example.com/c.png\t  a\tblue   square \r\n"
        "https://example.com/a.jpg\tlisted twice: the first wins\n"
    )
    entries, malformed = parse_url_lines(text.splitlines(keepends=True))
    assert malformed == []
    assert entries == [
        UrlEntry("https://example.com/a.jpg", "", 3),
        UrlEntry("https://example.com/b.jpg", "a red circle", 4),
        UrlEntry("http://example.com/c.png", "a blue square", 6),
    ]


def test_malformed_lines_are_reported_with_line_numbers_and_skipped():
    lines = [
        "https://example.com/ok.jpg",
        "not a url",
        "ftp://example.com/x.jpg",
        "https://example.com/space in path.jpg",
        "http://",
        "https://example.com/also-ok.jpg\tcaption",
        "file:///etc/passwd",
    ]
    entries, malformed = parse_url_lines(lines)
    assert [e.url for e in entries] == ["https://example.com/ok.jpg", "https://example.com/also-ok.jpg"]
    assert [m.line for m in malformed] == [2, 3, 4, 5, 7]
    assert all(m.reason for m in malformed)
    assert "TAB" in malformed[2].reason and malformed[2].text == lines[3]


def test_parse_file_survives_bad_bytes(tmp_path):
    path = tmp_path / "urls.txt"
    path.write_bytes(b"https://example.com/a.jpg\tcaf\xe9\n\xff\xfe garbage\nhttps://example.com/b.jpg\n")
    entries, malformed = parse_url_file(path)
    assert [e.url for e in entries] == ["https://example.com/a.jpg", "https://example.com/b.jpg"]
    assert [m.line for m in malformed] == [2]


def test_shipped_url_list_is_well_formed():
    entries, malformed = parse_url_file(DATA / "image_urls.txt")
    assert malformed == []
    lines = (DATA / "image_urls.txt").read_text().splitlines()
    assert len(entries) == len([l for l in lines if l.strip() and not l.lstrip().startswith("#")]) >= 200  # every URL line
    assert all(e.caption for e in entries)
    assert all(urlsplit(e.url).scheme == "https" for e in entries)
    assert len({e.url for e in entries}) == len(entries)
