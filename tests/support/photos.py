"""Test photos with EXIF written by Pillow (date taken with or without its offset, camera, GPS), in
any format Pillow writes (JPEG, PNG, WebP, AVIF, and HEIC through pillow-heif), and the oracles the
photo tests compare against: distances with numpy, dates with the standard library."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from fractions import Fraction

import numpy as np
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

import imagesearch.preprocess  # noqa: F401 - registers the HEIF opener (and saver) with Pillow

EARTH_KM = 6371.0088  # mean radius, as Elasticsearch's geo_distance


@dataclass(frozen=True)
class Exif:
    taken: str | None = None  # EXIF form, "YYYY:MM:DD HH:MM:SS"
    offset: str | None = None  # "+HH:MM"
    make: str | None = None
    model: str | None = None
    lat: float | None = None
    lon: float | None = None

    @property
    def taken_at(self) -> datetime | None:
        """The oracle's reading of the date: aware with the offset, else naive."""
        if self.taken is None:
            return None
        when = datetime.strptime(self.taken, "%Y:%m:%d %H:%M:%S")
        if self.offset:
            sign = -1 if self.offset[0] == "-" else 1
            hours, minutes = map(int, self.offset[1:].split(":"))
            when = when.replace(tzinfo=timezone(sign * timedelta(hours=hours, minutes=minutes)))
        return when

    @property
    def utc(self) -> datetime | None:
        """The instant the filters and the sort compare: a naive time taken as UTC."""
        when = self.taken_at
        return None if when is None else when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _dms(value: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    """Degrees, minutes, seconds as EXIF rationals (seconds to 1/10000)."""
    exact = Fraction(abs(value)).limit_denominator(10**9)
    degrees = int(exact)
    minutes = int((exact - degrees) * 60)
    seconds = ((exact - degrees) * 60 - minutes) * 60
    return IFDRational(degrees, 1), IFDRational(minutes, 1), IFDRational(round(seconds * 10000), 10000)


def exif_block(tags: Exif) -> Image.Exif:
    exif = Image.Exif()
    if tags.make is not None:
        exif[0x010F] = tags.make
    if tags.model is not None:
        exif[0x0110] = tags.model
    if tags.taken is not None:
        details = exif.get_ifd(0x8769)
        details[0x9003] = tags.taken
        if tags.offset is not None:
            details[0x9011] = tags.offset
    if tags.lat is not None and tags.lon is not None:
        gps = exif.get_ifd(0x8825)
        gps[1], gps[2] = ("N" if tags.lat >= 0 else "S"), _dms(tags.lat)
        gps[3], gps[4] = ("E" if tags.lon >= 0 else "W"), _dms(tags.lon)
    return exif


def photo(tags: Exif, fmt: str = "JPEG", colour: tuple[int, int, int] = (200, 30, 30), size=(64, 48), seed: int = 0) -> bytes:
    """An image of ``colour`` (with a little noise, so every photo's bytes differ) carrying ``tags``."""
    noise = np.random.default_rng(seed).integers(0, 24, (size[1], size[0], 3))
    pixels = np.clip(np.array(colour)[None, None, :] + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, exif=exif_block(tags).tobytes())  # bytes: an Exif with no IFD0 tag is falsy
    return buffer.getvalue()


def distance_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle distances (haversine) in numpy, the oracle of the place filter."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(np.asarray(lon2) - lon1) / 2) ** 2
    return 2 * EARTH_KM * np.arcsin(np.sqrt(a))


def offset_position(lat: float, lon: float, km: float, bearing_deg: float) -> tuple[float, float]:
    """The position ``km`` from (lat, lon) along ``bearing_deg`` (the direct geodesic problem on the sphere)."""
    d, b = km / EARTH_KM, np.radians(bearing_deg)
    p1, l1 = np.radians(lat), np.radians(lon)
    p2 = np.arcsin(np.sin(p1) * np.cos(d) + np.cos(p1) * np.sin(d) * np.cos(b))
    l2 = l1 + np.arctan2(np.sin(b) * np.sin(d) * np.cos(p1), np.cos(d) - np.sin(p1) * np.sin(p2))
    return float(np.degrees(p2)), float((np.degrees(l2) + 540) % 360 - 180)


# --- made-up photo metadata for the store and search tests ---------------------------------------

CAMERAS = [
    None,
    ("Canon", "Canon EOS R5"),
    ("Apple", "iPhone 13"),
    ("Apple", "iPhone 15 Pro"),
    ("NIKON CORPORATION", "NIKON Z 6"),
]
# camera filter -> the (make, model) it matches: any letter case; the make, the model, or both
CAMERA_QUERIES = {
    "canon": {CAMERAS[1]}, "CANON EOS R5": {CAMERAS[1]}, "apple": {CAMERAS[2], CAMERAS[3]},
    "Apple iPhone 13": {CAMERAS[2]}, "iphone 15 pro": {CAMERAS[3]}, "nikon z 6": {CAMERAS[4]},
    "nikon": set(), "iphone": set(),
}
PARIS, FIJI = (48.8584, 2.2945), (-16.5, 179.95)  # FIJI: circles around it cross the antimeridian
DISTANCES_KM = (0.3, 1.5, 3.2, 4.6, 5.7, 8.0, 12.0, 40.0)  # none close to the radii the tests ask for (5, 10)
OFFSETS = (None, "+02:00", "-07:00", "+05:30")


@dataclass
class PhotoSet:
    """Per image: its metadata, and what the oracles read (UTC seconds, camera, position; None: absent)."""

    photos: list
    utc: list[float | None]
    cameras: list[tuple[str, str] | None]
    positions: np.ndarray  # [n, 2] lat, lon; NaN where absent


def photo_set(n: int, seed: int) -> PhotoSet:
    from imagesearch.records import GeoPoint, PhotoMetadata

    rng = np.random.default_rng(seed)
    photos, utc, cameras, positions = [], [], [], np.full((n, 2), np.nan)
    for i in range(n):
        tags = Exif(taken=None if i % 6 == 5 else
                    (datetime(2020, 1, 1) + timedelta(hours=int(rng.integers(0, 24 * 900)))).strftime("%Y:%m:%d %H:%M:%S"),
                    offset=OFFSETS[int(rng.integers(len(OFFSETS)))])
        camera = CAMERAS[int(rng.integers(len(CAMERAS)))]
        if i % 5 != 4:
            center = PARIS if i % 2 else FIJI
            positions[i] = offset_position(*center, float(rng.choice(DISTANCES_KM)), float(rng.uniform(0, 360)))
        where = GeoPoint(lat=positions[i, 0], lon=positions[i, 1]) if i % 5 != 4 else None
        photos.append(PhotoMetadata(taken_at=tags.taken_at, camera_make=camera[0] if camera else None,
                                    camera_model=camera[1] if camera else None, location=where))
        utc.append(tags.utc.timestamp() if tags.utc else None)
        cameras.append(camera)
    return PhotoSet(photos, utc, cameras, positions)
