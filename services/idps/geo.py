"""Geometry for correlation: distances, areas, headings, and the lock cells that make correlation
race-free (two reports close enough to correlate always share at least one cell lock)."""

from __future__ import annotations

import math
from dataclasses import dataclass

EARTH_RADIUS_M = 6_371_008.8
M_PER_DEG_LAT = 111_320.0
# Namespace of the suite's IDPS advisory locks (high bits of the 64-bit key).
_LOCK_NAMESPACE = 0x1D95 << 48


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def heading_difference(a: float, b: float) -> float:
    """Smallest angle between two headings, 0..180 degrees."""
    d = abs(a - b) % 360.0
    return 360.0 - d if d > 180.0 else d


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


def lock_keys(lat: float, lon: float, distance_m: float) -> list[int]:
    """Advisory lock keys (sorted, so that lockers never deadlock) of the 3 x 3 cells around a point.

    Rows are `distance_m` of latitude tall; in each row the cells are at least `distance_m` wide (their
    width in degrees follows the row's latitude). Two points at most `distance_m` apart lie in the same
    or adjacent rows, and in each of those rows their cells are the same or neighbours, so each point's
    9 cells include the other's own cell: the two reports serialise on that lock."""
    row_deg = distance_m / M_PER_DEG_LAT
    row = math.floor(lat / row_deg)
    keys: set[int] = set()
    for r in (row - 1, row, row + 1):
        width = _cell_width_deg(r, row_deg, distance_m)
        col = math.floor((lon + 180.0) / width)
        for c in (col - 1, col, col + 1):
            keys.add(_LOCK_NAMESPACE | ((r + (1 << 21)) & 0x3FFFFF) << 24 | (c & 0xFFFFFF))
    return sorted(keys)


def _cell_width_deg(row: int, row_deg: float, distance_m: float) -> float:
    # The row's edge farthest from the equator, plus one row of margin, has the smallest cos(lat).
    edge = max(abs(row * row_deg), abs((row + 1) * row_deg)) + row_deg
    cos = max(math.cos(math.radians(min(edge, 89.9))), 1e-3)
    return min(distance_m / (M_PER_DEG_LAT * cos), 360.0)
