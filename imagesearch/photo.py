"""A photo's metadata from its EXIF (``PhotoMetadata``): when it was taken, with which camera, where.

Read with Pillow from an image it has opened, without decoding the pixels. EXIF comes from cameras
and editors of every quality, so nothing here raises: a value that does not parse is left out.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone

from PIL import Image

from imagesearch.records import GeoPoint, PhotoMetadata

# EXIF tags (the EXIF 2.32 standard) and the sub-IFDs they live in
MAKE, MODEL = 0x010F, 0x0110
EXIF_IFD, GPS_IFD = 0x8769, 0x8825
DATE_TIME_ORIGINAL, OFFSET_TIME_ORIGINAL = 0x9003, 0x9011
GPS_LATITUDE_REF, GPS_LATITUDE, GPS_LONGITUDE_REF, GPS_LONGITUDE = 1, 2, 3, 4

EXIF_DATE = re.compile(r"(\d{4})[:-](\d{2})[:-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
EXIF_OFFSET = re.compile(r"([+-])(\d{2}):(\d{2})")


def read_photo_metadata(img: Image.Image) -> PhotoMetadata:
    """What ``img``'s EXIF says; an empty ``PhotoMetadata`` when it has none (or none that parses)."""
    try:
        exif = img.getexif()
        details, gps = exif.get_ifd(EXIF_IFD), exif.get_ifd(GPS_IFD)
    except Exception:  # noqa: BLE001 - a broken EXIF block is no metadata, not a broken image
        return PhotoMetadata()
    return PhotoMetadata(
        taken_at=taken_at(details.get(DATE_TIME_ORIGINAL), details.get(OFFSET_TIME_ORIGINAL)),
        camera_make=text(exif.get(MAKE)), camera_model=text(exif.get(MODEL)),
        location=position(gps.get(GPS_LATITUDE), gps.get(GPS_LATITUDE_REF), gps.get(GPS_LONGITUDE), gps.get(GPS_LONGITUDE_REF)),
    )


def text(value: object) -> str | None:
    """An EXIF ASCII value as text: NUL padding and spaces stripped; None when empty."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", " ").strip()
    return value[:200] or None


def taken_at(value: object, offset: object = None) -> datetime | None:
    """"YYYY:MM:DD HH:MM:SS" (EXIF's form), aware when ``offset`` ("+HH:MM") is given, else naive."""
    match = EXIF_DATE.match(text(value) or "")
    if not match:
        return None  # also "0000:00:00 00:00:00" and blanks, which cameras without a clock write
    try:
        year, month, day, hour, minute, second = (int(part) for part in match.groups())
        when = datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None
    shift = EXIF_OFFSET.fullmatch(text(offset) or "")
    if shift:
        sign, hours, minutes = shift.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes))
        if delta < timedelta(hours=24):
            when = when.replace(tzinfo=timezone(-delta if sign == "-" else delta))
    return when


def position(lat: object, lat_ref: object, lon: object, lon_ref: object) -> GeoPoint | None:
    """Decimal degrees from the GPS IFD's (degrees, minutes, seconds) rationals and N/S, E/W refs."""
    latitude, longitude = degrees(lat), degrees(lon)
    if latitude is None or longitude is None:
        return None
    if (text(lat_ref) or "N").upper().startswith("S"):
        latitude = -latitude
    if (text(lon_ref) or "E").upper().startswith("W"):
        longitude = -longitude
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        return None
    return GeoPoint(lat=latitude, lon=longitude)


def degrees(value: object) -> float | None:
    """(degrees, minutes, seconds) as one number; None for anything else (a zero denominator too)."""
    if not isinstance(value, tuple) or len(value) != 3:
        return None
    try:
        d, m, s = (float(part) for part in value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    total = d + m / 60 + s / 3600
    return total if math.isfinite(total) and min(d, m, s) >= 0 else None
