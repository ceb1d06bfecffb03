"""Geometry for correlation: headings and the lock cells that make correlation
race-free (two reports close enough to correlate always share at least one cell lock)."""

from __future__ import annotations

import math

M_PER_DEG_LAT = 111_320.0
# Namespace of the suite's IDPS advisory locks (high bits of the 64-bit key).
_LOCK_NAMESPACE = 0x1D95 << 48


def heading_difference(a: float, b: float) -> float:
    """Smallest angle between two headings, 0..180 degrees."""
    d = abs(a - b) % 360.0
    return 360.0 - d if d > 180.0 else d


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
