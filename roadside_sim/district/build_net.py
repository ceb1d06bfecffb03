"""Builds the demo district's road network (district.net.xml, committed beside this file).

    python -m roadside_sim.district.build_net      # rewrites roadside_sim/district/district.net.xml

A 2 x 2 grid of signalised intersections, 300 m apart, with 200 m approaches attached at the edge, two lanes each
way at 50 km/h: netgenerate (from the eclipse-sumo wheel) makes it, then its <location> gets the district's
projection, a transverse Mercator on a sphere centred on the grid's middle at 31.40 N 121.49 E (Baoshan, the demo
district of services/parking/demo.py), so that SUMO, sumolib (net.convertXY2LonLat) and the simulator's own local
frame (roadside_sim/geometry.py, the same sphere) agree to centimetres on where every lane is.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
NET = HERE / "district.net.xml"
CENTRE_LAT, CENTRE_LON = 31.40, 121.49
GRID_M, ATTACH_M = 300.0, 200.0
# The grid's middle in netgenerate's coordinates (junctions at ATTACH_M and ATTACH_M + GRID_M on both axes).
MIDDLE = ATTACH_M + GRID_M / 2
PROJECTION = f"+proj=tmerc +lat_0={CENTRE_LAT} +lon_0={CENTRE_LON} +k=1 +x_0=0 +y_0=0 +R=6371008.8 +units=m +no_defs"
NETGENERATE_ARGS = ["--grid", "--grid.x-number=2", "--grid.y-number=2", f"--grid.length={GRID_M:g}",
                    f"--grid.attach-length={ATTACH_M:g}", "--default.lanenumber=2", "--default.speed=13.89",
                    "--tls.set=A0,A1,B0,B1", "--no-turnarounds", "--seed=13"]


def netgenerate() -> Path:
    exe = Path(sys.executable).with_name("netgenerate")
    return exe if exe.is_file() else Path("netgenerate")


def build(out: Path = NET) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "grid.net.xml"
        subprocess.run([str(netgenerate()), *NETGENERATE_ARGS, "-o", str(raw)], check=True, capture_output=True)
        text = raw.read_text()
    # Projected coordinates = net coordinates - netOffset (net = projected + offset, as SUMO has it): the grid's
    # middle is the projection's origin.
    location = (f'<location netOffset="{MIDDLE:.2f},{MIDDLE:.2f}" convBoundary="0.00,0.00,700.00,700.00" '
                f'origBoundary="-180.00,-90.00,180.00,90.00" projParameter="{PROJECTION}"/>')
    text, n = re.subn(r"<location [^>]*/>", location, text, count=1)
    if n != 1:
        raise SystemExit("netgenerate wrote no <location> element")
    out.write_text(text)


if __name__ == "__main__":
    build()
    print(f"wrote {NET}")
