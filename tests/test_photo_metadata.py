"""Photo metadata read from EXIF that Pillow wrote (in every format that carries it, HEIC and AVIF
included), the formats from phones decoded like the others, and the photo filters' values."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from imagesearch.formats import FILE_SUFFIXES, FORMATS
from imagesearch.geo import bounding_box
from imagesearch.model_card import load_card
from imagesearch.photo import read_photo_metadata
from imagesearch.preprocess import photo_metadata, prepare, probe
from imagesearch.records import PhotoMetadata, SearchFilters
from imagesearch.search import QueryError, filters_from
from tests.support.photos import Exif, distance_km, exif_block, offset_position, photo

CASES = [
    Exif("2021:05:01 10:00:00", "+02:00", "Canon", "Canon EOS R5", 48.858370, 2.294481),
    Exif("2019:12:31 23:59:59", "-05:30", "Apple", "iPhone 13", -33.856784, -151.215297),
    Exif("2020:02:29 12:00:00", None, "NIKON CORPORATION", "NIKON Z 6", 35.658581, 139.745433),  # no offset: naive
    Exif(None, None, "FUJIFILM", "X-T4", None, None),  # a camera, no date, no position
    Exif("2018:07:14 08:30:00", "+00:00", None, None, 0.5, -0.5),
]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "HEIF", "AVIF"])
@pytest.mark.parametrize("tags", CASES, ids=range(len(CASES)))
def test_exif_written_by_pillow_is_read_back(fmt, tags):
    data = photo(tags, fmt)
    info = probe(data)
    assert info.format == {"HEIF": "heif"}.get(fmt, fmt.lower())
    for read in (info.photo, photo_metadata(data)):  # at ingest, and later from the stored file
        assert read.taken_at == tags.taken_at
        assert (read.taken_at.tzinfo is None) == (tags.offset is None) if tags.taken else read.taken_at is None
        assert (read.camera_make, read.camera_model) == (tags.make, tags.model)
        if tags.lat is None:
            assert read.location is None
        else:  # the seconds were written to 1/10000: within 1e-6 degrees
            assert read.location is not None
            assert abs(read.location.lat - tags.lat) < 1e-6 and abs(read.location.lon - tags.lon) < 1e-6


def test_an_image_without_exif_is_read_and_has_nothing():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")
    assert probe(buffer.getvalue()).photo == PhotoMetadata()


@pytest.mark.parametrize("taken, offset", [("0000:00:00 00:00:00", None), ("    :  :     :  :  ", None),
                                           ("2021:13:01 10:00:00", None), ("yesterday", None),
                                           ("2021:05:01 10:00:00", "garbage")])
def test_dates_that_do_not_parse_are_left_out_or_lose_only_their_offset(taken, offset):
    read = probe(photo(Exif(taken, offset, "Canon", "EOS"))).photo
    if offset:  # the date is good, the offset is not: the camera's local time
        assert read.taken_at == datetime(2021, 5, 1, 10) and read.taken_at.tzinfo is None
    else:
        assert read.taken_at is None
    assert read.camera_make == "Canon"


def test_broken_gps_values_give_no_position():
    image = Image.new("RGB", (8, 8))
    for latitude in [(IFDRational(1, 0), IFDRational(0, 1), IFDRational(0, 1)),  # a zero denominator
                     (IFDRational(91, 1), IFDRational(0, 1), IFDRational(0, 1)),  # past the pole
                     (IFDRational(10, 1), IFDRational(0, 1))]:  # two parts
        exif = exif_block(Exif(make="X"))
        gps = exif.get_ifd(0x8825)
        gps[1], gps[2], gps[3], gps[4] = "N", latitude, "E", (IFDRational(1, 1), IFDRational(0, 1), IFDRational(0, 1))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", exif=exif)
        assert probe(buffer.getvalue()).photo.location is None


def test_the_camera_names_the_filter_matches():
    both = PhotoMetadata(camera_make="Canon", camera_model="Canon  EOS R5 ")
    assert both.cameras == ["canon", "canon eos r5", "canon canon eos r5"] and both.camera == "Canon  EOS R5 "
    apple = PhotoMetadata(camera_make="Apple", camera_model="iPhone 13")
    assert apple.camera == "Apple iPhone 13" and "apple iphone 13" in apple.cameras and "iphone 13" in apple.cameras
    assert PhotoMetadata().cameras == [] and PhotoMetadata().camera is None


@pytest.mark.parametrize("fmt, suffix, content_type", [("HEIF", ".heic", "image/heic"), ("AVIF", ".avif", "image/avif")])
def test_formats_from_phones_are_in_the_one_table_and_decode_like_the_others(fmt, suffix, content_type, test_model_repo):
    name = fmt.lower()
    assert FORMATS[name].content_type == content_type and suffix in FILE_SUFFIXES
    card = load_card(test_model_repo, "shapes-tiny")
    data = photo(Exif(), fmt, colour=(20, 200, 40), size=(96, 64))
    pixels = prepare(data, card)
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32)
    assert pixels.shape == (card.image_size, card.image_size, 3)
    # the mean colour survives the lossy coding and the resize
    np.testing.assert_allclose(pixels.reshape(-1, 3).mean(0), decoded.reshape(-1, 3).mean(0), atol=6)


def test_a_date_alone_covers_its_whole_day_and_a_naive_time_is_utc():
    day = SearchFilters(taken_after="2021-05-01", taken_before="2021-05-01")
    assert day.taken_after == datetime(2021, 5, 1, tzinfo=timezone.utc)
    assert day.taken_before == datetime(2021, 5, 2, tzinfo=timezone.utc)
    inside = PhotoMetadata(taken_at=datetime(2021, 5, 1, 23, 59, 59))
    next_day = PhotoMetadata(taken_at=datetime(2021, 5, 2, 0, 30, tzinfo=timezone(timedelta(hours=2))))  # 22:30 UTC on the 1st
    later = PhotoMetadata(taken_at=datetime(2021, 5, 2, 0, 30))
    assert day.matches_photo(inside) and day.matches_photo(next_day) and not day.matches_photo(later)
    assert not day.matches_photo(PhotoMetadata())  # no date: no match


@pytest.mark.parametrize("given, problem", [
    ({"near": "48.8,2.3"}, "go together"), ({"within_km": 5}, "go together"),
    ({"near": "91,0", "within_km": 1}, "less than or equal to 90"), ({"near": "48.8", "within_km": 1}, "LAT,LON"),
    ({"near": "a,b", "within_km": 1}, "LAT,LON"), ({"near": "1,2", "within_km": 0}, "greater than 0"),
    ({"taken_after": "2021-05-02", "taken_before": "2021-05-01"}, "before taken_before"),
    ({"taken_after": "last week"}, "taken_after"), ({"camera": ""}, "camera"),
])
def test_unusable_filter_values_are_query_errors_that_say_why(given, problem):
    with pytest.raises(QueryError, match=problem):
        filters_from(**given)


def test_filters_from_loose_values():
    assert filters_from(camera=None, near=None) is None
    made = filters_from(near=" 48.85 , 2.35", within_km="2.5", taken_after="2021-05-01T10:00:00+02:00")
    assert (made.near.lat, made.near.lon, made.within_km) == (48.85, 2.35, 2.5)
    assert made.taken_after == datetime(2021, 5, 1, 8, tzinfo=timezone.utc)


def test_the_bounding_box_holds_every_position_within_the_distance():
    """Positions spread over the circle (numpy's direct geodesic), near the poles and across the antimeridian."""
    rng = np.random.default_rng(3)
    for lat, lon, km in [(48.85, 2.35, 5.0), (-33.9, 179.99, 50.0), (12.0, -179.95, 30.0), (89.9, 10.0, 40.0),
                         (-89.5, 0.0, 100.0), (0.0, 0.0, 10_000.0), (60.0, -170.0, 2_000.0)]:
        south, north, ranges = bounding_box(lat, lon, km)
        for _ in range(300):
            p = offset_position(lat, lon, km * rng.uniform(0, 0.999), rng.uniform(0, 360))
            assert distance_km(lat, lon, *p) <= km
            assert south <= p[0] <= north and any(w <= p[1] <= e for w, e in ranges), (lat, lon, km, p)


def test_a_broken_exif_block_is_no_metadata():
    class Broken:
        def getexif(self):
            raise SyntaxError("not TIFF")

    assert read_photo_metadata(Broken()) == PhotoMetadata()  # type: ignore[arg-type]
