"""The demo district: public parking around Baoshan, Shanghai (31.40 N, 121.49 E).

Deterministic (a fixed seed), so every `make run` shows the same city. Garages count passages,
surface lots mix counting and single-space sensors, on-street segments detect single spaces
(the roadside cameras' zones). Capacities and tariffs are in the ranges Shanghai publishes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from v2x.parking.v1 import parking_pb2 as pb

from services.common.principal import Principal, Role
from services.parking.availability import Period
from services.parking.model import EntranceSpec, LotSpec, PriceSpec, Report, SpotSpec
from services.parking.store import ParkingStore

CENTER = (31.40, 121.49)
REGION = "310113"  # Baoshan district
OPERATORS = {
    "BSCT": "宝山城投停车",
    "SHJT": "上海交投停车",
    "WANDA": "万达商业停车",
    "STREET": "宝山区道路停车管理",
    "ACME": "Acme Parking",
}
STREETS = ["牡丹江路", "友谊路", "淞宝路", "团结路", "海江路", "同济路", "共和新路", "长江西路", "殷高西路", "呼兰路",
           "淞滨路", "密山路", "宝杨路", "双城路", "铁山路", "盘古路", "永清路", "水产路", "富锦路", "通河路",
           "泰和路", "南大路", "沪太路", "蕰川路", "锦秋路", "祁连山路", "真华路", "场中路"]
PLACES = ["万达广场", "宝山区政府", "吴淞口", "淞宝大厦", "宝山体育中心", "顾村公园", "共康商城", "大华虎城",
          "宝山医院", "上海大学", "长江路地铁站", "友谊路地铁站", "宝杨码头", "月浦镇", "通河新村", "庙行商业广场",
          "淞南社区", "高境镇", "杨行镇", "罗店古镇"]
N_GARAGES, N_SURFACE, N_STREET = 140, 110, 80


@dataclass(frozen=True)
class DemoLot:
    spec: LotSpec
    spots: list[SpotSpec]


def _offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    return lat + north_m / 111_320, lon + east_m / (111_320 * math.cos(math.radians(lat)))


def district(seed: int = 20261124) -> list[DemoLot]:
    rng = random.Random(seed)
    lots: list[DemoLot] = []

    def place(spread_m: float) -> tuple[float, float]:
        r = spread_m * math.sqrt(rng.random())
        a = rng.random() * 2 * math.pi
        return _offset(*CENTER, r * math.cos(a), r * math.sin(a))

    day_hours = [Period(d, 7 * 60, 22 * 60) for d in range(1, 8)]
    for i in range(N_GARAGES):
        lat, lon = place(6000)
        total = rng.choice([120, 180, 260, 400, 520, 800, 1200])
        ev = int(total * rng.choice([0, 0.05, 0.1, 0.15]))
        disabled = max(2, total // 100)
        reserved = rng.choice([0, 0, 10, 20])
        general = total - ev - disabled - reserved
        name = f"{rng.choice(PLACES)}{rng.choice(['地下', '立体', ''])}停车库{i % 7 + 1}号"
        operator = rng.choice(["BSCT", "SHJT", "WANDA", "ACME"])
        entrances = [EntranceSpec(f"E{k}", *_offset(lat, lon, rng.uniform(-60, 60), rng.uniform(-60, 60)),
                                  True, k != 0) for k in range(rng.choice([1, 2, 2, 3]))]
        lots.append(DemoLot(LotSpec(
            id=f"BS-G{i:04d}", operator_id=operator, name=name, kind=pb.LOT_KIND_GARAGE, lat=lat, lon=lon,
            capacity={pb.SPACE_CLASS_GENERAL: general, pb.SPACE_CLASS_EV: ev,
                      pb.SPACE_CLASS_DISABLED: disabled, pb.SPACE_CLASS_RESERVED: reserved},
            detection_type=pb.DETECTION_TYPE_BALANCING, ttl_s=1800, address=f"宝山区{rng.choice(STREETS)}"
            f"{rng.randint(1, 2000)}号", region_code=REGION,
            price=PriceSpec(15, rng.choice([800, 1000, 1200, 1500]), rng.choice([500, 800, 1000]),
                            rng.choice([0, 6000, 8000, 12000]), "夜间 22:00-07:00 每小时 2 元"),
            always_open=rng.random() < 0.8, periods=day_hours, entrances=entrances,
            phone=f"021-{rng.randint(5600_0000, 6699_9999)}"), []))
    for i in range(N_SURFACE):
        lat, lon = place(6500)
        total = rng.choice([30, 50, 80, 120, 200])
        ev = rng.choice([0, 0, 4, 8])
        disabled = rng.choice([1, 2])
        single = rng.random() < 0.3 and total <= 80
        spots = []
        if single:
            classes = [pb.SPACE_CLASS_EV] * ev + [pb.SPACE_CLASS_DISABLED] * disabled
            classes += [pb.SPACE_CLASS_GENERAL] * (total - len(classes))
            spots = [SpotSpec(f"P{k:03d}", c, f"BS-S{i:04d}-C{k:03d}" if c == pb.SPACE_CLASS_EV else "")
                     for k, c in enumerate(classes)]
        lots.append(DemoLot(LotSpec(
            id=f"BS-S{i:04d}", operator_id=rng.choice(["BSCT", "SHJT", "ACME"]),
            name=f"{rng.choice(PLACES)}地面停车场{i % 5 + 1}", kind=pb.LOT_KIND_SURFACE_LOT, lat=lat, lon=lon,
            capacity={pb.SPACE_CLASS_GENERAL: total - ev - disabled, pb.SPACE_CLASS_EV: ev,
                      pb.SPACE_CLASS_DISABLED: disabled, pb.SPACE_CLASS_RESERVED: 0},
            detection_type=pb.DETECTION_TYPE_SINGLE_SPACE if single else pb.DETECTION_TYPE_BALANCING,
            ttl_s=900, address=f"宝山区{rng.choice(STREETS)}{rng.randint(1, 2000)}号", region_code=REGION,
            price=PriceSpec(15, rng.choice([500, 600, 800]), rng.choice([300, 500]), rng.choice([0, 4000])),
            always_open=rng.random() < 0.6, periods=day_hours), spots))
    for i in range(N_STREET):
        lat, lon = place(5000)
        n = rng.choice([6, 8, 10, 12, 16, 20, 24])
        heading = rng.random() * math.pi
        half = n * 6 / 2  # 6 m per kerbside space
        a = _offset(lat, lon, -half * math.cos(heading), -half * math.sin(heading))
        b = _offset(lat, lon, half * math.cos(heading), half * math.sin(heading))
        spots = [SpotSpec(f"K{k:02d}", pb.SPACE_CLASS_DISABLED if k == 0 and n >= 12 else pb.SPACE_CLASS_GENERAL,
                          "", *_offset(a[0], a[1], (k + 0.5) * 6 * math.cos(heading),
                                       (k + 0.5) * 6 * math.sin(heading))) for k in range(n)]
        disabled = sum(1 for s in spots if s.space_class == pb.SPACE_CLASS_DISABLED)
        street = rng.choice(STREETS)
        lots.append(DemoLot(LotSpec(
            id=f"BS-R{i:04d}", operator_id="STREET", name=f"{street}道路停车{i % 9 + 1}段",
            kind=pb.LOT_KIND_ON_STREET_SEGMENT, lat=lat, lon=lon,
            capacity={pb.SPACE_CLASS_GENERAL: n - disabled, pb.SPACE_CLASS_EV: 0,
                      pb.SPACE_CLASS_DISABLED: disabled, pb.SPACE_CLASS_RESERVED: 0},
            detection_type=pb.DETECTION_TYPE_SINGLE_SPACE, ttl_s=600, address=f"宝山区{street}",
            region_code=REGION, line=[a, b], price=PriceSpec(15, 1500, 1500, 0, "道路停车 07:00-21:00 收费"),
            always_open=False, periods=[Period(d, 7 * 60, 21 * 60) for d in range(1, 8)]), spots))
    return lots


def occupancy_report(lot: DemoLot, rng: random.Random, sequence: int, at: datetime,
                     level: float | None = None) -> Report:
    """A plausible reading: an occupancy level around `level` (or a random one) for each class."""
    base = rng.uniform(0.3, 0.98) if level is None else level
    if lot.spots:
        states: dict[str, int] = {
            s.id: pb.SPOT_STATUS_OCCUPIED if rng.random() < base else pb.SPOT_STATUS_FREE for s in lot.spots}
        return Report(lot.spec.id, sequence, at, {}, states, False, False)
    counts = {c: cap - min(cap, round(cap * min(1.0, max(0.0, base + rng.uniform(-0.1, 0.1)))))
              for c, cap in lot.spec.capacity.items() if cap > 0}
    return Report(lot.spec.id, sequence, at, counts, {}, False, False)


async def seed_district(engine: AsyncEngine) -> int:
    """Registers the district (once) and gives every lot a first reading. Returns the lot count."""
    async with engine.connect() as conn:
        existing = (await conn.execute(text("SELECT count(*) FROM parking_lots WHERE id LIKE 'BS-%'"))).scalar_one()
    lots = district()
    if existing >= len(lots):
        return int(existing)
    store = ParkingStore(engine)
    admin = Principal(Role.ADMIN)
    for lot in lots:
        await store.register_lot(lot.spec)
        if lot.spots:
            await store.upsert_spots(admin, lot.spec.id, lot.spots)
    rng = random.Random(7)
    now = datetime.now(UTC)
    for operator in OPERATORS:
        mine = [lot for lot in lots if lot.spec.operator_id == operator]
        reports = [occupancy_report(lot, rng, 1, now) for lot in mine]
        for start in range(0, len(reports), 200):
            await store.apply_reports(Principal(Role.OPERATOR, operator), reports[start:start + 200], now)
    return len(lots)
