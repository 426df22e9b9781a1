"""The data every service passes around: image records, URL failures, search hits, counts."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from imagesearch.geo import EARTH_HALF_CIRCUMFERENCE_KM, great_circle_km

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
MAX_K = 10_000  # the most results one search can return: Elasticsearch's result window, and both stores' cap
MAX_TAG_CHARS = 100  # the longest tag (a vocabulary label), as the vocabulary and the tag filter accept it
MAX_FILTER_TAGS = 20  # the most tags one filter may ask for
Source = Literal["url", "folder", "upload"]

# Why a URL produced no image. Stable codes: the CLI summary, /status and the store use them.
FAILURE_REASONS = (
    "http_status",  # a 4xx/5xx that was not retried away (detail has the code)
    "timeout",
    "connection",
    "too_large",
    "not_an_image",
    "blocked",  # SSRF guard, bad scheme
    "robots",  # robots.txt disallows it (or cannot be read), or X-Robots-Tag: noai / noimageai
    "too_many_redirects",
    "invalid_url",
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def is_image_id(value: str) -> bool:
    return bool(SHA256_HEX.fullmatch(value))  # not match(): "$" would also match before a final newline


def instant(when: datetime) -> datetime:
    """``when`` as an aware datetime. A naive one is a camera's local time with no offset known: it
    is taken as UTC, so that it compares and sorts with the others (off by the camera's offset)."""
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def camera_key(name: str) -> str:
    """A camera name as the camera filter compares it: lower case, single spaces."""
    return " ".join(name.lower().split())


def tag_key(label: str) -> str:
    """A tag as the vocabulary, the stores and the tag filter hold it: lower case, single spaces."""
    return " ".join(label.lower().split())


class GeoPoint(BaseModel):
    """A position in decimal degrees (WGS 84, as GPS gives it)."""

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class PhotoMetadata(BaseModel):
    """What a photo's EXIF says about it, read at ingest. Every field None: read, and nothing found."""

    taken_at: datetime | None = Field(None, description="when the photo was taken (EXIF DateTimeOriginal): with its "
                                      "UTC offset where the camera wrote one (OffsetTimeOriginal), else the camera's local time")
    camera_make: str | None = None
    camera_model: str | None = None
    location: GeoPoint | None = Field(None, description="where it was taken (EXIF GPS)")

    @property
    def camera(self) -> str | None:
        """Make and model as one name ("Canon EOS R5"; the model alone when it names the make already)."""
        make, model = self.camera_make or "", self.camera_model or ""
        if model.lower().startswith(make.lower()):
            return model or None
        return f"{make} {model}".strip() or None

    @property
    def cameras(self) -> list[str]:
        """The names the camera filter matches (``camera_key``): the make, the model and both together."""
        names = [self.camera_make or "", self.camera_model or "", f"{self.camera_make or ''} {self.camera_model or ''}"]
        return list(dict.fromkeys(key for key in map(camera_key, names) if key))


class ImageRecord(BaseModel):
    """One image, identified by the sha256 of its bytes. The same picture from two URLs is one record."""

    id: str
    urls: list[str] = Field(default_factory=list)
    captions: list[str] = Field(default_factory=list)
    sources: list[Source] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list, description="folder files it was found at")
    width: int
    height: int
    format: str  # jpeg, png, webp, gif, bmp, tiff
    bytes: int
    first_seen: datetime = Field(default_factory=utcnow)
    last_seen: datetime = Field(default_factory=utcnow)
    photo: PhotoMetadata | None = Field(None, description="the photo's EXIF metadata; None: never read (stored before "
                                        "ingest read it: the next ingest reads it from the stored file)")
    tags: list[str] = Field(default_factory=list, description="the labels of the tag vocabulary that fit the image best, "
                            "best first (empty: none fits, or not tagged yet); written by ingest (set_tags), kept by merges")

    @property
    def url(self) -> str | None:
        """The address a user would recognize: the first URL, else the folder path."""
        return self.urls[0] if self.urls else (self.paths[0] if self.paths else None)

    @property
    def keyword_text(self) -> str:
        """What keyword search matches: the captions, the tags, and the words of the file names in the
        URLs and folder paths (``Eiffel_Tower-1889.jpg`` -> ``Eiffel Tower 1889 jpg``)."""
        names = [url.split("?")[0].split("#")[0].rstrip("/").rsplit("/", 1)[-1] for url in self.urls]
        names += [path.rsplit("/", 1)[-1] for path in self.paths]
        return " ".join([*self.captions, *self.tags, *(re.sub(r"[\W_]+", " ", name) for name in names)]).strip()

    def merge(self, other: ImageRecord) -> ImageRecord:
        """This record plus what ``other`` (same id) adds: new URLs, captions, sources, paths."""

        def union(a: list, b: list) -> list:
            return a + [x for x in b if x not in a]

        return self.model_copy(update={
            "urls": union(self.urls, other.urls),
            "captions": union(self.captions, other.captions),
            "sources": union(self.sources, other.sources),
            "paths": union(self.paths, other.paths),
            "first_seen": min(self.first_seen, other.first_seen),
            "last_seen": max(self.last_seen, other.last_seen),
            "photo": self.photo if self.photo is not None else other.photo,  # the same bytes: the same EXIF
        })


class UrlFailure(BaseModel):
    url: str
    reason: str  # one of FAILURE_REASONS
    detail: str = ""
    caption: str = ""
    attempts: int = 1
    at: datetime = Field(default_factory=utcnow)


class SearchFilters(BaseModel):
    """Metadata filters applied inside the vector search (pre-filter). An image without the field a
    filter asks about (no date, no camera, no position) does not pass that filter."""

    format: list[str] | None = Field(None, description="keep only these formats, e.g. ['jpeg','png']")
    source: list[Source] | None = None
    min_width: int | None = Field(None, ge=0)
    min_height: int | None = Field(None, ge=0)
    max_width: int | None = Field(None, ge=0)
    max_height: int | None = Field(None, ge=0)
    taken_after: datetime | None = Field(None, description="taken at or after this: an ISO 8601 datetime, or a date "
                                         "(from its start); without an offset: UTC")
    taken_before: datetime | None = Field(None, description="taken before this: an ISO 8601 datetime, or a date (up to "
                                          "the end of that day); without an offset: UTC")
    camera: str | None = Field(None, min_length=1, max_length=200,
                               description="taken with this camera: its make or model, or 'make model' (any letter case)")
    near: GeoPoint | None = Field(None, description="taken within within_km of this position (with within_km)")
    within_km: float | None = Field(None, gt=0, le=EARTH_HALF_CIRCUMFERENCE_KM,
                                    description="great-circle distance from near, in km (with near)")
    tags: list[str] | None = Field(None, min_length=1, max_length=MAX_FILTER_TAGS,
                                   description="tagged with every one of these (any letter case; also comma-separated)")

    @field_validator("taken_after", "taken_before", mode="before")
    @classmethod
    def _whole_days(cls, value: Any, info) -> Any:
        """A date alone covers its whole day: from its start (after), up to its end (before)."""
        if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
            value = date.fromisoformat(value.strip())
        if isinstance(value, date) and not isinstance(value, datetime):
            start = datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
            return start + timedelta(days=1) if info.field_name == "taken_before" else start
        return value

    @field_validator("near", mode="before")
    @classmethod
    def _lat_lon(cls, value: Any) -> Any:
        """Also "LAT,LON" (as the CLI and GET take it) or [lat, lon]."""
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                raise ValueError("a position is LAT,LON in decimal degrees, e.g. 48.8584,2.2945")
            try:
                return {"lat": float(value[0]), "lon": float(value[1])}
            except (TypeError, ValueError):
                raise ValueError("a position is LAT,LON in decimal degrees, e.g. 48.8584,2.2945") from None
        return value

    @field_validator("tags", mode="before")
    @classmethod
    def _tag_list(cls, value: Any) -> Any:
        """Tags as the stores hold them (``tag_key``); "red,circle" (as the CLI and GET may give them) is two."""
        if isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple)) and all(isinstance(tag, str) for tag in value):
            value = list(dict.fromkeys(key for tag in value for part in tag.split(",") if (key := tag_key(part))))
            if any(len(tag) > MAX_TAG_CHARS for tag in value):
                raise ValueError(f"a tag is at most {MAX_TAG_CHARS} characters long")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SearchFilters:
        if (self.near is None) != (self.within_km is None):
            raise ValueError("near and within_km go together: a position and a distance from it")
        if self.taken_after and self.taken_before and instant(self.taken_after) >= instant(self.taken_before):
            raise ValueError("taken_after must be before taken_before")
        return self

    @property
    def camera_key(self) -> str | None:
        return camera_key(self.camera) if self.camera is not None else None

    def matches(self, record: ImageRecord) -> bool:
        return (
            (self.format is None or record.format in self.format)
            and (self.source is None or any(s in self.source for s in record.sources))
            and (self.min_width is None or record.width >= self.min_width)
            and (self.min_height is None or record.height >= self.min_height)
            and (self.max_width is None or record.width <= self.max_width)
            and (self.max_height is None or record.height <= self.max_height)
            and self.matches_photo(record.photo or PhotoMetadata())
            and (self.tags is None or all(tag in record.tags for tag in self.tags))
        )

    def matches_photo(self, photo: PhotoMetadata) -> bool:
        taken = instant(photo.taken_at) if photo.taken_at else None
        where = photo.location
        return (
            (self.taken_after is None or (taken is not None and taken >= instant(self.taken_after)))
            and (self.taken_before is None or (taken is not None and taken < instant(self.taken_before)))
            and (self.camera_key is None or self.camera_key in photo.cameras)
            and (self.near is None or self.within_km is None or (
                where is not None and great_circle_km(self.near.lat, self.near.lon, where.lat, where.lon) <= self.within_km))
        )


class Hit(BaseModel):
    id: str
    score: float
    record: ImageRecord


class Counts(BaseModel):
    images: int = 0
    embedded: int = 0
    pending: int = 0
    embed_failed: int = 0
    failed_urls: int = 0
    failed_by_reason: dict[str, int] = Field(default_factory=dict)
