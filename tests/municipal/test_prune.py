"""The outbox is pruned past its retention, and only of rows no destination needs: delivered everywhere, no open dead
letter, and not the newest static record of a lot or a charging station (the drain looks a lot's facts up there; a
destination added later needs both)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from v2x.municipal.v1 import municipal_pb2 as pb

from services.common.config import ConfigError
from services.common.runtime import Resources
from services.municipal.destinations import Adapter
from services.municipal.emulator import RunningEmulator
from services.municipal.settings import MunicipalSettings
from services.municipal.store import MunicipalStore
from tests.municipal.conftest import StartAdapter, destination
from tests.municipal.helpers import charger_static, insert, lot_dynamic, lot_static
from tests.municipal.test_delivery import caught_up

AGED = text("UPDATE outbox SET created_at = now() - interval '200 hours' WHERE id = ANY(CAST(:ids AS bigint[]))")
LEFT = text("SELECT id FROM outbox WHERE id = ANY(CAST(:ids AS bigint[])) ORDER BY id")
DEAD = text("""
INSERT INTO municipal_dead_letters (destination, outbox_id, kind, record_key, idempotency_key, reason, message)
VALUES (:d, :id, 'lot_dynamic', 'k', 'k', 'REJECTED', 'refused by the platform')""")


async def test_rows_past_the_retention_go_once_every_destination_is_past_them(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, unique: str) -> None:
    live, held = destination(emulator), destination(emulator)
    a = await start_adapter(live, held)
    await a.stub.Pause(pb.PauseRequest(destination=held.name, reason="platform maintenance"), metadata=a.md)
    lot = f"P{unique}"
    static_old, static_new = (await insert(resources.engine, [("lot_static", lot, lot_static(lot))]) +
                              await insert(resources.engine, [("lot_static", lot, lot_static(lot, name="新名"))]))
    dynamic = await insert(resources.engine, [("lot_dynamic", lot, lot_dynamic(lot, s)) for s in range(1, 4)])
    station = f"Q{unique}"
    station_old, station_new = await insert(resources.engine, [
        ("charger_static", station, charger_static(station, version=v)) for v in (1, 2)])
    dead_lettered = dynamic[0]
    old = [static_old, static_new, *dynamic, station_old, station_new]
    await caught_up(a, live.name)
    async with resources.engine.begin() as conn:
        await conn.execute(AGED, {"ids": old})
        await conn.execute(DEAD, {"d": live.name, "id": dead_lettered})
    recent = await insert(resources.engine, [("lot_dynamic", lot, lot_dynamic(lot, 4))])
    await caught_up(a, live.name)
    pruner = Adapter(MunicipalStore(resources.engine), MunicipalSettings(destinations=(live, held)))

    async def left() -> list[int]:
        async with resources.engine.connect() as conn:
            return [r[0] for r in await conn.execute(LEFT, {"ids": old + recent})]

    await pruner.prune_once()
    assert await left() == sorted(old + recent)  # the paused destination has not had them yet

    await a.stub.Resume(pb.ResumeRequest(destination=held.name), metadata=a.md)
    await caught_up(a, held.name)
    await pruner.prune_once()
    # Kept: the lot's and the station's newest static records, the row behind an open dead letter, the row inside the
    # retention.
    assert await left() == sorted([static_new, station_new, dead_lettered, *recent])
    # The destinations go on as before.
    more = await insert(resources.engine, [("lot_dynamic", lot, lot_dynamic(lot, 5))])
    status = await caught_up(a, live.name)
    assert status.cursor == more[0]


def test_the_retention_is_off_or_at_least_two_days() -> None:
    assert MunicipalSettings.from_env({"V2X_MUNICIPAL_OUTBOX_RETENTION_H": "0"}).outbox_retention_h == 0
    assert MunicipalSettings.from_env({}).outbox_retention_h == 168
    with pytest.raises(ConfigError, match="at least 48 hours"):
        MunicipalSettings.from_env({"V2X_MUNICIPAL_OUTBOX_RETENTION_H": "24"})
