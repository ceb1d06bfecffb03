"""The demo district's road network as the simulator sees it: junctions, their approaches and lane geometry, in
the district's local metres (net coordinates minus the net's offset; see roadside_sim/district/build_net.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import sumolib

from roadside_sim.geometry import LocalFrame, Point

NET_PATH = Path(__file__).resolve().parent / "district" / "district.net.xml"


@dataclass(frozen=True)
class SimLane:
    id: str
    index: int  # 0 = the kerb lane
    incoming: bool  # towards the junction
    heading_deg: float  # direction of travel, clockwise from north
    length: float


@dataclass(frozen=True)
class Approach:
    """One arm of a junction: the edge coming in (2 lanes) and the edge going out beside it. Positions are given
    from the stop line upstream (`along`, metres) and from the kerb of the lanes coming in (`across`, metres,
    negative towards the middle of the road)."""

    junction: str
    edge_in: str
    edge_out: str
    stop_line_kerb: Point  # where the stop line meets the kerb of the lanes coming in
    direction: Point  # unit vector of travel of the lanes coming in
    lane_width: float
    lanes_in: tuple[SimLane, ...]
    lanes_out: tuple[SimLane, ...]
    out_start: Point  # the start of the outgoing kerb lane (its position 0)

    @property
    def right(self) -> Point:
        """Unit vector to the right of the traffic coming in (towards its kerb)."""
        return self.direction[1], -self.direction[0]

    def point_upstream(self, along: float, across: float) -> Point:
        d, r = self.direction, self.right
        return (self.stop_line_kerb[0] - d[0] * along + r[0] * across,
                self.stop_line_kerb[1] - d[1] * along + r[1] * across)

    def coordinates(self, p: Point) -> tuple[float, float]:
        """(along, across) of a ground point."""
        dx, dy = p[0] - self.stop_line_kerb[0], p[1] - self.stop_line_kerb[1]
        d, r = self.direction, self.right
        return -(dx * d[0] + dy * d[1]), dx * r[0] + dy * r[1]

    def _band(self, lane: SimLane) -> tuple[float, float]:
        w = self.lane_width
        if lane.incoming:
            return -(lane.index + 1) * w, -lane.index * w
        return -(4 - lane.index) * w, -(3 - lane.index) * w

    def lane_quad(self, lane: SimLane, near: float, far: float, shift: float = 0.0) -> list[Point]:
        """The lane's stretch from `near` to `far` metres before the stop line, moved `shift` metres across."""
        a, b = self._band(lane)
        a, b = a + shift, b + shift
        return [self.point_upstream(near, b), self.point_upstream(near, a), self.point_upstream(far, a),
                self.point_upstream(far, b)]

    def kerb_quad(self, near: float, far: float, width: float, inner: float = 0.0) -> list[Point]:
        """The strip beside the kerb lane coming in (where a vehicle pulls over), from `inner` to `width` metres
        outside the kerb line."""
        return [self.point_upstream(near, width), self.point_upstream(near, inner), self.point_upstream(far, inner),
                self.point_upstream(far, width)]

    def far_kerb_quad(self, near: float, far: float, width: float, reach: float = 0.0
                      ) -> tuple[Point, Point, Point, Point]:
        """The strip beside the kerb lane going out (on-street parking), reaching `reach` metres into the lane."""
        k = -4 * self.lane_width + reach
        return (self.point_upstream(near, k - width - reach), self.point_upstream(near, k), self.point_upstream(far, k),
                self.point_upstream(far, k - width - reach))

    def out_lane_pos(self, along: float) -> float:
        """Position on the outgoing lanes (metres from their start) of a point `along` metres from the stop line."""
        p = self.point_upstream(along, -3.5 * self.lane_width)
        return (p[0] - self.out_start[0]) * -self.direction[0] + (p[1] - self.out_start[1]) * -self.direction[1]

    def in_lane_pos(self, along: float, lane_length: float) -> float:
        """Position on a lane coming in (metres from its start) of a point `along` metres before the stop line."""
        return lane_length - along


class District:
    def __init__(self, net_path: Path = NET_PATH) -> None:
        self.net_path = net_path
        self.net = sumolib.net.readNet(str(net_path), withInternal=False)
        ox, oy = self.net.getLocationOffset()
        self.offset = (float(ox), float(oy))
        self.frame = LocalFrame(31.40, 121.49)

    def local(self, x: float, y: float) -> Point:
        return x - self.offset[0], y - self.offset[1]

    @cached_property
    def junctions(self) -> list[str]:
        return sorted(n.getID() for n in self.net.getNodes() if n.getType() == "traffic_light")

    def approaches(self, junction: str) -> list[Approach]:
        node = self.net.getNode(junction)
        out: list[Approach] = []
        # Arms in a fixed order: from the west, south, east, north (where the grid has them).
        for edge in sorted(node.getIncoming(), key=lambda e: _arm_order(e, node)):
            back = [e for e in node.getOutgoing() if e.getToNode().getID() == edge.getFromNode().getID()]
            if not back:
                continue
            lanes = edge.getLanes()
            shape0 = [self.local(*p) for p in lanes[0].getShape()]
            (x0, y0), (x1, y1) = shape0[-2], shape0[-1]
            length = math.hypot(x1 - x0, y1 - y0)
            d = ((x1 - x0) / length, (y1 - y0) / length)
            w = float(lanes[0].getWidth())
            r = (d[1], -d[0])
            kerb = (x1 + r[0] * w / 2, y1 + r[1] * w / 2)
            heading_in = math.degrees(math.atan2(d[0], d[1])) % 360
            lanes_in = tuple(SimLane(lane.getID(), lane.getIndex(), True, heading_in, float(lane.getLength()))
                             for lane in lanes)
            out_lanes = back[0].getLanes()
            lanes_out = tuple(SimLane(lane.getID(), lane.getIndex(), False, (heading_in + 180) % 360,
                                      float(lane.getLength())) for lane in out_lanes)
            out_start = self.local(*out_lanes[0].getShape()[0])
            out.append(Approach(junction, edge.getID(), back[0].getID(), kerb, d, w, lanes_in, lanes_out, out_start))
        return out


def _arm_order(edge: sumolib.net.edge.Edge, node: sumolib.net.node.Node) -> float:
    fx, fy = edge.getFromNode().getCoord()
    nx, ny = node.getCoord()
    # west (180 deg from the node), south, east, north
    angle = math.degrees(math.atan2(fy - ny, fx - nx)) % 360
    return (180 - angle) % 360 if angle <= 180 else 360 - angle + 180
