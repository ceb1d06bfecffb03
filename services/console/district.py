"""The district map's fixed layers as GeoJSON: the outline of the simulated road network and its lanes.

The lanes come from the SUMO net of the simulated district (read with sumolib). Its coordinates are metres in a
transverse Mercator projection on a sphere (the net's `projParameter`); sumolib's own conversion to WGS-84 needs
pyproj, which the suite does not install, so the spherical inverse (Snyder, "Map Projections", eq. 8-6/8-7) is
done here.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("v2x.console")
_PARAM = re.compile(r"\+(\w+)=([^\s]+)")
# The outline is the net's boundary grown by this much, so that the approaches' ends sit inside it.
OUTLINE_MARGIN_M = 30.0


class Projection:
    """`+proj=tmerc` on a sphere (`+R`), as netgenerate's nets of the simulator carry it."""

    def __init__(self, proj: str, offset: tuple[float, float]) -> None:
        params: dict[str, str] = dict(_PARAM.findall(proj))
        if params.get("proj") != "tmerc" or "R" not in params:
            raise ValueError(f"only a spherical transverse Mercator is supported, not {proj!r}")
        self.lat0 = math.radians(float(params.get("lat_0", "0")))
        self.lon0 = math.radians(float(params.get("lon_0", "0")))
        self.k0 = float(params.get("k", params.get("k_0", "1")))
        self.radius = float(params["R"])
        self.x0, self.y0 = float(params.get("x_0", "0")), float(params.get("y_0", "0"))
        self.offset = offset

    def lonlat(self, x: float, y: float) -> tuple[float, float]:
        """Net coordinates (projected + netOffset) to WGS-84 longitude, latitude."""
        e = (x - self.offset[0] - self.x0) / (self.k0 * self.radius)
        d = (y - self.offset[1] - self.y0) / (self.k0 * self.radius) + self.lat0
        lat = math.asin(max(-1.0, min(1.0, math.sin(d) / math.cosh(e))))
        lon = self.lon0 + math.atan2(math.sinh(e), math.cos(d))
        return round(math.degrees(lon), 7), round(math.degrees(lat), 7)


def district_geojson(net_path: str) -> dict[str, Any]:
    """A FeatureCollection: one `outline` polygon and a `lane` line per lane of the net (no internal lanes)."""
    if not net_path or not Path(net_path).is_file():
        return {"type": "FeatureCollection", "features": []}
    try:
        import sumolib  # the `sim` extra, which the image (Dockerfile) leaves out: the console starts without lanes
    except ImportError:
        log.warning("sumolib (the `sim` extra) is not installed: the map draws no lanes of %s", net_path)
        return {"type": "FeatureCollection", "features": []}

    net = sumolib.net.readNet(net_path, withInternal=False)
    location = getattr(net, "_location", {})
    offset = tuple(float(v) for v in str(location.get("netOffset", "0,0")).split(","))
    proj = Projection(str(location.get("projParameter", "")), (offset[0], offset[1]))
    features: list[dict[str, Any]] = []
    xmin, ymin, xmax, ymax = net.getBoundary()
    m = OUTLINE_MARGIN_M
    ring = [proj.lonlat(x, y) for x, y in ((xmin - m, ymin - m), (xmax + m, ymin - m), (xmax + m, ymax + m),
                                          (xmin - m, ymax + m), (xmin - m, ymin - m))]
    features.append({"type": "Feature", "properties": {"layer": "outline", "name": "simulated district"},
                     "geometry": {"type": "Polygon", "coordinates": [ring]}})
    for edge in net.getEdges():
        for lane in edge.getLanes():
            features.append({"type": "Feature",
                             "properties": {"layer": "lane", "id": lane.getID(), "edge": edge.getID(),
                                            "speed_kmh": round(lane.getSpeed() * 3.6)},
                             "geometry": {"type": "LineString",
                                          "coordinates": [proj.lonlat(x, y) for x, y in lane.getShape()]}})
    return {"type": "FeatureCollection", "features": features}
