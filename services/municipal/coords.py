"""WGS-84 to GCJ-02, the offset datum that Chinese consumer maps and many city platforms use.

The suite stores WGS-84 (GNSS); a destination that wants GCJ-02 gets it converted here, and every
record says which system it is in. The transform is the widely published one (Krasovsky ellipsoid
constants); outside mainland China both systems coincide.
"""

from __future__ import annotations

import math

_A = 6378245.0
_EE = 0.00669342162296594323


def in_china(lat: float, lon: float) -> bool:
    """The rough mainland bounding box in which GCJ-02 differs from WGS-84."""
    return 73.66 < lon < 135.05 and 3.86 < lat < 53.55


def _d_lat(x: float, y: float) -> float:
    r = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x))
    r += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    r += (20.0 * math.sin(y * math.pi) + 40.0 * math.sin(y / 3.0 * math.pi)) * 2.0 / 3.0
    r += (160.0 * math.sin(y / 12.0 * math.pi) + 320.0 * math.sin(y * math.pi / 30.0)) * 2.0 / 3.0
    return r


def _d_lon(x: float, y: float) -> float:
    r = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
    r += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    r += (20.0 * math.sin(x * math.pi) + 40.0 * math.sin(x / 3.0 * math.pi)) * 2.0 / 3.0
    r += (150.0 * math.sin(x / 12.0 * math.pi) + 300.0 * math.sin(x / 30.0 * math.pi)) * 2.0 / 3.0
    return r


def wgs84_to_gcj02(lat: float, lon: float) -> tuple[float, float]:
    if not in_china(lat, lon):
        return lat, lon
    d_lat = _d_lat(lon - 105.0, lat - 35.0)
    d_lon = _d_lon(lon - 105.0, lat - 35.0)
    rad = lat / 180.0 * math.pi
    magic = 1 - _EE * math.sin(rad) ** 2
    sqrt_magic = math.sqrt(magic)
    d_lat = (d_lat * 180.0) / ((_A * (1 - _EE)) / (magic * sqrt_magic) * math.pi)
    d_lon = (d_lon * 180.0) / (_A / sqrt_magic * math.cos(rad) * math.pi)
    return lat + d_lat, lon + d_lon


def gcj02_to_wgs84(lat: float, lon: float) -> tuple[float, float]:
    """The inverse, by fixed-point iteration (well under a centimetre after a few rounds)."""
    w_lat, w_lon = lat, lon
    for _ in range(8):
        g_lat, g_lon = wgs84_to_gcj02(w_lat, w_lon)
        w_lat, w_lon = w_lat - (g_lat - lat), w_lon - (g_lon - lon)
    return w_lat, w_lon
