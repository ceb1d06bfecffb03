"""Distances and areas on the sphere PostGIS measures geography on without the spheroid (`use_spheroid => false`),
so that what the services compute in memory agrees with what PostGIS answers."""

from __future__ import annotations

import math
from dataclasses import dataclass

from v2x.common.v1 import common_pb2 as cpb

from services.common.validation import Validator

# PostGIS' sphere for 4326: the WGS-84 mean radius (2a + b) / 3, with a = 6378137 and b = 6356752.314245179.
# (The rounded 6371008.8 makes every distance 4.5e-9 of itself longer.)
EARTH_RADIUS_M = 6_371_008.771_415_059


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True)
class Area:
    """A box (south, west, north, east) or a circle (lat, lon, radius_m)."""

    box: tuple[float, float, float, float] | None = None
    circle: tuple[float, float, float] | None = None

    def contains(self, lat: float, lon: float) -> bool:
        if self.box is not None:
            s, w, n, e = self.box
            return s <= lat <= n and w <= lon <= e
        assert self.circle is not None
        clat, clon, r = self.circle
        return haversine_m(clat, clon, lat, lon) <= r

    @property
    def center(self) -> tuple[float, float]:
        if self.circle is not None:
            return self.circle[0], self.circle[1]
        assert self.box is not None
        s, w, n, e = self.box
        return (s + n) / 2, (w + e) / 2


def parse_area(a: cpb.Area, field: str, *, max_radius_m: float, max_box_side_deg: float | None = None) -> Area:
    """A request's area, validated: a box with its south-west corner south-west of its north-east one (and sides of
    at most `max_box_side_deg`), or a circle of 1 m to `max_radius_m`; one INVALID_ARGUMENT naming what is wrong."""
    v = Validator()
    which = a.WhichOneof("shape")
    if which == "box":
        sw, ne = a.box.south_west, a.box.north_east
        v.lat_lon(f"{field}.box.south_west", sw.lat, sw.lon)
        v.lat_lon(f"{field}.box.north_east", ne.lat, ne.lon)
        if not v.violations and (sw.lat > ne.lat or sw.lon > ne.lon):
            v.fail(f"{field}.box", "south_west must be south-west of north_east")
        if (not v.violations and max_box_side_deg is not None
                and (ne.lat - sw.lat > max_box_side_deg or ne.lon - sw.lon > max_box_side_deg)):
            v.fail(f"{field}.box", f"at most {max_box_side_deg:g} degree on a side")
        v.check()
        return Area(box=(sw.lat, sw.lon, ne.lat, ne.lon))
    if which == "circle":
        c = a.circle
        v.lat_lon(f"{field}.circle.center", c.center.lat, c.center.lon)
        v.number(f"{field}.circle.radius_m", c.radius_m, 1, max_radius_m)
        v.check()
        return Area(circle=(c.center.lat, c.center.lon, c.radius_m))
    v.fail(field, "give a box or a circle")
    v.check()
    raise AssertionError("unreachable")
