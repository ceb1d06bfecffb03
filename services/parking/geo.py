"""Great-circle distance on the sphere PostGIS uses for `use_spheroid => false`."""

from __future__ import annotations

import math

# PostGIS' sphere for 4326: the WGS-84 mean radius (2a + b) / 3, with a = 6378137 and
# b = 6356752.314245179. (The rounded 6371008.8 makes every distance 4.5e-9 of itself longer.)
EARTH_RADIUS_M = 6_371_008.771_415_059


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))
