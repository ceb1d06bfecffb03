"""An in-memory index of WGS-84 points: which of them lie within a radius of a place, nearest first.

Driver queries ("free parking / chargers within r of me") are answered from memory by the services that
keep such an index current; this module holds the geometry only. Each point has a slot; services keep
their per-point data in numpy columns indexed by slot (`PointIndex.column`), so that their filters run
vectorised over the candidates of one query.

Distances are great-circle distances on the sphere PostGIS uses for `use_spheroid => false` (the same
formula as `services.parking.geo.haversine_m`), so an answer from here equals the PostGIS one; ties in
distance are broken by id in code-point order, which is how PostgreSQL's C collation orders them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from services.common.geo import EARTH_RADIUS_M

# A cell is this many degrees on a side: a few cells cover a driver's radius of one or two kilometres.
CELL_DEG = 0.01
# Beyond this many cells a query scans every point instead (huge radii, near the poles).
MAX_CELLS = 400

Slots = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


def _haversine_a(lat: float, lon: float, lats_r: Floats, lons_r: Floats, cos_lats: Floats) -> Floats:
    """The haversine term `a` from one place to many points (given in radians, with their cosines): the
    distance is 2 R asin(sqrt(a)), which grows with `a`, so comparing `a` orders and bounds distances."""
    p1, l1 = math.radians(lat), math.radians(lon)
    a: Floats = np.sin((lats_r - p1) * 0.5) ** 2 + math.cos(p1) * cos_lats * np.sin((lons_r - l1) * 0.5) ** 2
    return a


def _distance(a: Floats) -> Floats:
    out: Floats = 2 * EARTH_RADIUS_M * np.arcsin(np.minimum(1.0, np.sqrt(a)))
    return out


def haversine_m(lat: float, lon: float, lats: Floats, lons: Floats) -> Floats:
    """Distances from one place to many points, on the PostGIS sphere."""
    lats_r = np.radians(lats)
    return _distance(_haversine_a(lat, lon, lats_r, np.radians(lons), np.cos(lats_r)))


def _cell(lat: float, lon: float) -> tuple[int, int]:
    return math.floor(lat / CELL_DEG), math.floor(lon / CELL_DEG)


class PointIndex:
    """Points by id, in a grid of cells, with per-slot columns that grow with the index."""

    def __init__(self, columns: dict[str, tuple[Any, Any]] | None = None, capacity: int = 1024) -> None:
        """`columns`: name -> (numpy dtype, value of an empty slot)."""
        self._capacity = max(16, capacity)
        self._specs = dict(columns or {})
        self.ids: list[str] = []
        self.slot: dict[str, int] = {}
        self.lat: Floats = np.zeros(self._capacity)
        self.lon: Floats = np.zeros(self._capacity)
        # The same in radians, and the cosine of the latitude: what every distance needs, computed once.
        self._lat_r: Floats = np.zeros(self._capacity)
        self._lon_r: Floats = np.zeros(self._capacity)
        self._cos: Floats = np.ones(self._capacity)
        self.live = np.zeros(self._capacity, dtype=bool)
        self.column: dict[str, npt.NDArray[Any]] = {
            name: np.full(self._capacity, fill, dtype=dtype) for name, (dtype, fill) in self._specs.items()}
        self._cells: dict[tuple[int, int], list[int]] = {}
        self._cell_arrays: dict[tuple[int, int], Slots] = {}
        self._cell_of: list[tuple[int, int] | None] = []

    def __len__(self) -> int:
        return len(self.slot)

    @classmethod
    def bulk(cls, ids: Sequence[str], lats: Sequence[float], lons: Sequence[float],
             columns: dict[str, tuple[Any, Any]] | None = None) -> PointIndex:
        """An index of many points at once (a start-up load): slots follow the order given."""
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate ids")
        index = cls(columns, capacity=len(ids) + len(ids) // 8)
        n = len(ids)
        index.ids = list(ids)
        index.slot = {i: k for k, i in enumerate(ids)}
        index.lat[:n] = lats
        index.lon[:n] = lons
        index._lat_r[:n] = np.radians(index.lat[:n])
        index._lon_r[:n] = np.radians(index.lon[:n])
        index._cos[:n] = np.cos(index._lat_r[:n])
        index.live[:n] = True
        if n:
            cy = np.floor(index.lat[:n] / CELL_DEG).astype(np.int64)
            cx = np.floor(index.lon[:n] / CELL_DEG).astype(np.int64)
            order = np.lexsort((cx, cy))
            keys = np.stack((cy[order], cx[order]), axis=1)
            starts = np.flatnonzero(np.any(keys[1:] != keys[:-1], axis=1)) + 1
            for group in np.split(order, starts):
                key = (int(cy[group[0]]), int(cx[group[0]]))
                index._cells[key] = group.tolist()
                index._cell_arrays[key] = group.astype(np.int64)
            index._cell_of = list(zip(cy.tolist(), cx.tolist(), strict=True))
        return index

    def put(self, point_id: str, lat: float, lon: float) -> int:
        """Adds a point or moves it; returns its slot (new slots hold each column's empty value)."""
        slot = self.slot.get(point_id)
        if slot is None:
            slot = len(self.ids)
            if slot == self._capacity:
                self._grow()
            self.ids.append(point_id)
            self._cell_of.append(None)
            self.slot[point_id] = slot
            self.live[slot] = True
        cell = _cell(lat, lon)
        old = self._cell_of[slot]
        if old != cell:
            if old is not None:
                self._cells[old].remove(slot)
                self._cell_arrays.pop(old, None)
            self._cells.setdefault(cell, []).append(slot)
            self._cell_arrays.pop(cell, None)
            self._cell_of[slot] = cell
        self.lat[slot], self.lon[slot] = lat, lon
        self._lat_r[slot], self._lon_r[slot] = math.radians(lat), math.radians(lon)
        self._cos[slot] = math.cos(self._lat_r[slot])
        return slot

    def remove(self, point_id: str) -> None:
        """Takes a point out of every answer (its slot stays allocated, empty)."""
        slot = self.slot.pop(point_id, None)
        if slot is None:
            return
        cell = self._cell_of[slot]
        if cell is not None:
            self._cells[cell].remove(slot)
            self._cell_arrays.pop(cell, None)
            self._cell_of[slot] = None
        self.live[slot] = False
        for name, (_dtype, fill) in self._specs.items():
            self.column[name][slot] = fill

    def _grow(self) -> None:
        new = self._capacity * 2

        def grown(a: npt.NDArray[Any], fill: Any) -> npt.NDArray[Any]:
            out = np.full(new, fill, dtype=a.dtype)
            out[: self._capacity] = a
            return out

        self.lat, self.lon, self.live = grown(self.lat, 0.0), grown(self.lon, 0.0), grown(self.live, False)
        self._lat_r, self._lon_r, self._cos = grown(self._lat_r, 0.0), grown(self._lon_r, 0.0), grown(self._cos, 1.0)
        self.column = {name: grown(self.column[name], fill) for name, (_dtype, fill) in self._specs.items()}
        self._capacity = new

    def _candidates(self, lat: float, lon: float, radius_m: float) -> Slots:
        """Slots of every point that may lie within the radius (a superset: the cells of its bounding box)."""
        delta = radius_m / EARTH_RADIUS_M
        # A small margin keeps points on the exact bounding box (float noise) among the candidates.
        dlat = math.degrees(delta) * (1 + 1e-9) + 1e-9
        pole = math.radians(abs(lat) + dlat)
        if delta >= math.pi / 2 or pole >= math.pi / 2:
            return self._all()
        # The widest longitude of a spherical cap: asin(sin(delta) / cos(lat)).
        dlon = math.degrees(math.asin(min(1.0, math.sin(delta) / math.cos(math.radians(lat))))) * (1 + 1e-9) + 1e-9
        if lon - dlon < -180 or lon + dlon > 180:
            return self._all()  # across the antimeridian: rare enough to scan
        y0, x0 = _cell(lat - dlat, lon - dlon)
        y1, x1 = _cell(lat + dlat, lon + dlon)
        if (y1 - y0 + 1) * (x1 - x0 + 1) > MAX_CELLS:
            return self._all()
        parts: list[Slots] = []
        cells, arrays = self._cells, self._cell_arrays
        for y in range(y0, y1 + 1):
            for x in range(x0, x1 + 1):
                key = (y, x)
                part = arrays.get(key)
                if part is None:
                    members = cells.get(key)
                    if not members:
                        continue
                    part = arrays[key] = np.array(members, dtype=np.int64)
                parts.append(part)
        if not parts:
            return np.empty(0, dtype=np.int64)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _all(self) -> Slots:
        return np.flatnonzero(self.live[: len(self.ids)]).astype(np.int64)

    def within(self, lat: float, lon: float, radius_m: float) -> tuple[Slots, Floats]:
        """Slots of the points (about) within `radius_m` of (lat, lon), in no order, with their haversine
        terms: `nearest` orders them and drops any just beyond the radius."""
        slots = self._candidates(lat, lon, radius_m)
        a = _haversine_a(lat, lon, self._lat_r[slots], self._lon_r[slots], self._cos[slots])
        # a <= sin^2(r / 2R) is distance <= r; the slack keeps a point exactly on the circle (float noise).
        keep = a <= math.sin(min(math.pi / 2, radius_m / (2 * EARTH_RADIUS_M))) ** 2 * (1 + 1e-9)
        return slots[keep], a[keep]

    def nearest(self, slots: Slots, a: Floats, radius_m: float, limit: int) -> tuple[Slots, list[float]]:
        """The first `limit` of `within`'s answer: their slots and distances, each at most `radius_m`,
        ordered by distance, then id."""
        if len(slots) > limit:
            # Only the nearest `limit` (and whatever ties the last of them) need exact distances and order.
            bound = np.partition(a, limit - 1)[limit - 1] * (1 + 1e-12)
            keep = a <= bound
            slots, a = slots[keep], a[keep]
        dist = _distance(a).tolist()
        ids, owners = self.ids, slots.tolist()
        order = sorted(range(len(dist)), key=lambda k: (dist[k], ids[owners[k]]))[:limit]
        while order and dist[order[-1]] > radius_m:
            order.pop()
        return slots[order], [dist[k] for k in order]

    def put_many(self, points: Iterable[tuple[str, float, float]]) -> list[int]:
        return [self.put(i, lat, lon) for i, lat, lon in points]
