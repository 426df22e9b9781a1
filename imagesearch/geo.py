"""Distances on the Earth, as the place filter measures them: great-circle (haversine) on a sphere
of the Earth's mean radius, the model Elasticsearch's ``geo_distance`` uses too."""

from __future__ import annotations

import math

EARTH_RADIUS_KM = 6371.0088  # the mean radius (IUGG)
EARTH_HALF_CIRCUMFERENCE_KM = math.pi * EARTH_RADIUS_KM  # no two points are farther apart


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The great-circle distance between two positions in decimal degrees."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((phi2 - phi1) / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def bounding_box(lat: float, lon: float, km: float) -> tuple[float, float, list[tuple[float, float]]]:
    """Latitude bounds and longitude ranges that hold every position within ``km`` of (lat, lon):
    a cheap index-friendly test before the exact distance. Across the antimeridian the longitudes
    are two ranges; a circle that reaches a pole covers every longitude."""
    dlat = math.degrees(km / EARTH_RADIUS_KM)
    south, north = lat - dlat, lat + dlat
    if south <= -90 or north >= 90:
        return max(south, -90.0), min(north, 90.0), [(-180.0, 180.0)]
    # The circle's widest longitude span, where it touches its tangent meridians (a circle that
    # reaches no pole has an angular radius under 90 - |lat| degrees, so the sine ratio is below 1).
    dlon = math.degrees(math.asin(min(1.0, math.sin(km / EARTH_RADIUS_KM) / math.cos(math.radians(lat)))))
    west, east = lon - dlon, lon + dlon
    if west < -180:
        return south, north, [(west + 360, 180.0), (-180.0, east)]
    if east > 180:
        return south, north, [(west, 180.0), (-180.0, east - 360)]
    return south, north, [(west, east)]
