"""Demo charging stations for the demo district (services/runner/demo_district.py), seeded by `v2x run` and `v2x seed`.

One station in every garage and surface lot that has EV spaces, run by the lot's operator and linked
to the lot. Where a surface lot detects single spaces, its EV spots name their connectors
(`BS-S0001-C003`): those connectors exist here with exactly those ids, linked to their spots. Elsewhere
connectors are `<lot id>-C<nnn>`. Mostly GB/T (DC 60-120 kW piles, AC 7 kW wall boxes), a CCS2 pile
and a Type 2 wall box (11 kW) at the international operators' stations, prices in fen per kWh in the ranges
Shanghai operators post (electricity 0.68-1.10 CNY, service fee 0.40-1.00 CNY).

Deterministic (fixed seeds), like the district. `seed_chargers` registers what is missing and gives
every connector without a fresh reading a first status through the charging store, as a pushed
ReportStatus would (state row + outbox row in one transaction).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from v2x.charging.v1 import charging_pb2 as pb
from v2x.common.v1 import common_pb2 as cpb
from v2x.parking.v1 import parking_pb2 as ppb

from services.charging import convert
from services.charging.group_commit import MAX_BATCH
from services.charging.model import Report, StationSpec
from services.charging.store import ChargingStore
from services.common.errors import AlreadyExists
from services.runner.demo_district import DemoLot, district

S = pb.ConnectorStatus
GBT_AC, GBT_DC = pb.CONNECTOR_STANDARD_GBT_AC, pb.CONNECTOR_STANDARD_GBT_DC
CCS2, TYPE2 = pb.CONNECTOR_STANDARD_CCS2, pb.CONNECTOR_STANDARD_TYPE2
STATUS_TTL_S = 600  # operators push on change and re-send at least every few minutes
MAX_CHARGERS = 20  # per garage: the rest of its EV spaces are plain EV parking
INTERNATIONAL = frozenset({"WANDA", "ACME"})  # operators that also fit CCS2 / Type 2 for imported cars
STATION_PREFIX = "BS-CS-"

# A first status for a connector nobody is parked at (weights: mostly free, a fifth in a session).
FIRST_STATUS: Sequence[tuple[int, int]] = (
    (S.CONNECTOR_STATUS_AVAILABLE, 68), (S.CONNECTOR_STATUS_CHARGING, 20), (S.CONNECTOR_STATUS_PREPARING, 2),
    (S.CONNECTOR_STATUS_SUSPENDED_EV, 1), (S.CONNECTOR_STATUS_FINISHING, 3), (S.CONNECTOR_STATUS_OCCUPIED, 3),
    (S.CONNECTOR_STATUS_FAULTED, 2), (S.CONNECTOR_STATUS_UNAVAILABLE, 1))
FAULTS: Sequence[tuple[int, str]] = (
    (pb.CONNECTOR_ERROR_CODE_GROUND_FAILURE, "绝缘检测异常"),
    (pb.CONNECTOR_ERROR_CODE_HIGH_TEMPERATURE, "充电枪过温"),
    (pb.CONNECTOR_ERROR_CODE_EV_COMMUNICATION_ERROR, "车桩通信超时"),
    (pb.CONNECTOR_ERROR_CODE_INTERNAL_ERROR, "充电模块故障"),
)


def station_id(lot_id: str) -> str:
    return STATION_PREFIX + lot_id.removeprefix("BS-")


def _connector(cid: str, standard: int, kw: float, price: int, fee: int, spot: str = "") -> pb.Connector:
    return pb.Connector(id=cid, standard=standard, max_power_kw=kw,  # type: ignore[arg-type]
                        price_per_kwh_fen=price, service_fee_per_kwh_fen=fee, parking_spot_id=spot)


def _station(lot: DemoLot, rng: random.Random) -> pb.Station | None:
    spec = lot.spec
    if spec.kind not in (ppb.LOT_KIND_GARAGE, ppb.LOT_KIND_SURFACE_LOT):
        return None
    ev = spec.capacity.get(ppb.SPACE_CLASS_EV, 0)
    if ev <= 0:
        return None
    price = rng.choice([68, 75, 83, 95, 110])  # electricity, fen per kWh
    dc_fee, ac_fee = rng.choice([60, 80, 100]), rng.choice([40, 50, 60])
    dc_kw = float(rng.choice([60, 90, 120]))
    international = spec.operator_id in INTERNATIONAL
    evses: list[pb.Evse] = []
    linked = [s for s in lot.spots if s.connector_id]
    if linked:
        # The lot's EV bays: one wall box (the first bay a DC pile) per spot, connector ids as parking knows them.
        for k, spot in enumerate(linked):
            plug = (_connector(spot.connector_id, GBT_DC, dc_kw, price, dc_fee, spot.id) if k == 0
                    else _connector(spot.connector_id, GBT_AC, 7.0, price, ac_fee, spot.id))
            evses.append(pb.Evse(id=f"E{k + 1:02d}", connectors=[plug]))
    else:
        n = min(ev, MAX_CHARGERS)
        n_dc = max(1, round(n * rng.choice([0.25, 0.4, 0.5])))

        def cid(k: int) -> str:
            return f"{spec.id}-C{k:03d}"

        for k in range(n):
            if k < n_dc:
                # DC piles; at the international operators' the last one has a CCS2 gun.
                standard = CCS2 if international and k == n_dc - 1 and n_dc > 1 else GBT_DC
                plug = _connector(cid(k), standard, dc_kw, price, dc_fee)
            elif international and k == n - 1 and n > n_dc + 1:
                plug = _connector(cid(k), TYPE2, 11.0, price, ac_fee)
            else:
                plug = _connector(cid(k), GBT_AC, 7.0, price, ac_fee)
            evses.append(pb.Evse(id=f"E{k + 1:02d}", connectors=[plug]))
    return pb.Station(id=station_id(spec.id), operator_id=spec.operator_id, name=f"{spec.name}充电站",
                      location=cpb.LatLon(lat=spec.lat, lon=spec.lon), address=spec.address,
                      parking_lot_id=spec.id, status_ttl_s=STATUS_TTL_S, evses=evses)


def stations(lots: Sequence[DemoLot] | None = None, seed: int = 20261125) -> list[StationSpec]:
    """The demo stations, validated as RegisterStation validates them."""
    rng = random.Random(seed)
    out: list[StationSpec] = []
    for lot in district() if lots is None else lots:
        st = _station(lot, rng)
        if st is not None:
            out.append(convert.station_spec(st))
    return out


def first_status(rng: random.Random, spot_status: int | None = None) -> tuple[int, int, str]:
    """(status, error code, info) for a connector's first reading; under an occupied bay a vehicle mostly
    charges, at a free bay the connector is free."""
    if spot_status == ppb.SPOT_STATUS_FREE:
        return S.CONNECTOR_STATUS_AVAILABLE, pb.CONNECTOR_ERROR_CODE_NO_ERROR, ""
    status: int
    if spot_status == ppb.SPOT_STATUS_OCCUPIED:
        status = S.CONNECTOR_STATUS_CHARGING if rng.random() < 0.75 else S.CONNECTOR_STATUS_AVAILABLE
        return status, pb.CONNECTOR_ERROR_CODE_NO_ERROR, ""
    status = rng.choices([s for s, _ in FIRST_STATUS], [w for _, w in FIRST_STATUS])[0]
    return status, *detail(status, rng)


def detail(status: int, rng: random.Random) -> tuple[int, str]:
    """The error code and info that go with a status."""
    if status == S.CONNECTOR_STATUS_FAULTED:
        return rng.choice(FAULTS)
    if status == S.CONNECTOR_STATUS_UNAVAILABLE:
        return pb.CONNECTOR_ERROR_CODE_NO_ERROR, "维护中"
    return pb.CONNECTOR_ERROR_CODE_NO_ERROR, ""


async def seed_chargers(engine: AsyncEngine) -> int:
    """Registers the demo stations that are missing (the district must be seeded first: stations link to
    its lots and spots) and gives every demo connector without a fresh reading a first status. Returns the
    number of demo stations. Running it again changes nothing while the readings are fresh."""
    specs = stations()
    ids = [s.id for s in specs]
    store = ChargingStore(engine)
    try:
        async with engine.connect() as conn:
            existing = set((await conn.execute(text("SELECT id FROM charging_stations WHERE id = ANY(:ids)"),
                                               {"ids": ids})).scalars())
        for spec in specs:
            if spec.id not in existing:
                with contextlib.suppress(AlreadyExists):  # another seeder got there first
                    await store.register_station(spec)
        # Connectors without a fresh reading (an operator's reading lives ttl_s after it was observed).
        async with engine.connect() as conn:
            stale = set((await conn.execute(text(
                "SELECT c.id FROM charging_connectors c JOIN charging_connector_state st ON st.connector_id = c.id "
                "WHERE c.station_id = ANY(:ids) AND (st.observed_at IS NULL "
                "OR st.observed_at + make_interval(secs => st.ttl_s) <= now())"), {"ids": ids})).scalars())
            spots = {(r.lot_id, r.spot_id): r.status for r in (await conn.execute(text(
                "SELECT lot_id, spot_id, status FROM parking_read_spots WHERE lot_id = ANY(:lots)"),
                {"lots": [s.parking_lot_id for s in specs]})).all()}
        rng = random.Random(11)
        now = datetime.now(UTC)
        reports: list[Report] = []
        for spec in specs:
            for _, c in spec.connectors():
                if c.id not in stale:
                    continue
                status, error_code, info = first_status(
                    rng, spots.get((spec.parking_lot_id, c.parking_spot_id)) if c.parking_spot_id else None)
                reports.append(Report(c.id, status, error_code, info, now, pb.STATUS_SOURCE_OPERATOR,
                                      spec.operator_id, report_id="demo-seed"))
        for start in range(0, len(reports), MAX_BATCH):
            outcomes, _ = await store.apply_reports(reports[start:start + MAX_BATCH], now)
            refused = [o for o in outcomes if o.error is not None]
            if refused:
                raise RuntimeError(f"demo status refused: {refused[0].error}")
    finally:
        await store.close()
    return len(specs)
