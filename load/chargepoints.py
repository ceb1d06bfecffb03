"""Charge points that speak OCPP 1.6J and 2.0.1 over WebSocket with HTTP Basic (the `ocpp` package's charge point
side), as real chargers do: boot, heartbeats, status notifications, a transaction, and a drop.

Used by the charging tests, the soak (`load/soak.py`) and the simulator's chargers. Only contracts: the OCPP
messages, the gateway's URL and a charge point's password.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ocpp.v16 import ChargePoint as Client16Base
from ocpp.v16 import call as call16
from ocpp.v201 import ChargePoint as Client201Base
from ocpp.v201 import call as call201
from websockets.asyncio.client import ClientConnection, connect


class Client16(Client16Base):  # type: ignore[misc]
    """An OCPP 1.6J charge point that only sends (no handlers for central system requests)."""


class Client201(Client201Base):  # type: ignore[misc]
    """An OCPP 2.0.1 charging station that only sends."""


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def ocpp_now(seconds_ago: float = 0) -> str:
    at = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def open_ws(url: str, cp_id: str, password: str | None, subprotocol: str) -> ClientConnection:
    headers = {"Authorization": basic(cp_id, password)} if password is not None else {}
    return await connect(f"{url}/{cp_id}", subprotocols=[subprotocol], additional_headers=headers,  # type: ignore[list-item]
                         open_timeout=10, compression=None)


@contextlib.asynccontextmanager
async def ocpp_client(url: str, cp_id: str, password: str, version: str = "1.6") -> AsyncIterator[Any]:
    """A connected charge point; its receive loop runs until the block ends."""
    ws = await open_ws(url, cp_id, password, "ocpp1.6" if version == "1.6" else "ocpp2.0.1")
    cp = (Client16 if version == "1.6" else Client201)(cp_id, ws, response_timeout=10)
    task = asyncio.create_task(cp.start())
    try:
        yield cp
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await ws.close()


@dataclass(frozen=True)
class ChargePointAccess:
    """A registered charge point: the gateway's URL, its identity and password, its protocol and connectors."""

    url: str
    cp_id: str
    password: str
    version: str  # "1.6" or "2.0.1"
    connectors: int  # 1.6: connector ids 1..n; 2.0.1: EVSE ids 1..n with connector 1 each


async def session(cp: ChargePointAccess, rng: random.Random, *, heartbeats: int = 2, drop: bool = True) -> int:
    """One connection of a charge point: boot, heartbeats, every connector's status, one transaction on a random
    connector; then it drops the connection without a close handshake (`drop`) or closes it. Returns the calls
    the central system answered."""
    answered = 0
    connector = rng.randint(1, cp.connectors)
    ws = await open_ws(cp.url, cp.cp_id, cp.password, "ocpp1.6" if cp.version == "1.6" else "ocpp2.0.1")
    client = (Client16 if cp.version == "1.6" else Client201)(cp.cp_id, ws, response_timeout=10)
    receiving = asyncio.create_task(client.start())
    try:
        for message in _messages(cp, connector, heartbeats, rng):
            await client.call(message)
            answered += 1
    finally:
        receiving.cancel()
        with contextlib.suppress(BaseException):
            await receiving
        if drop:
            ws.transport.abort()  # the charger loses power or its network
        else:
            await ws.close()
    return answered


def _messages(cp: ChargePointAccess, connector: int, heartbeats: int, rng: random.Random) -> list[Any]:
    if cp.version == "1.6":
        out: list[Any] = [call16.BootNotification(charge_point_model="DC120", charge_point_vendor="v2x-load")]
        out += [call16.Heartbeat() for _ in range(heartbeats)]
        out += [call16.StatusNotification(connector_id=c, error_code="NoError", status="Available",
                                          timestamp=ocpp_now()) for c in range(1, cp.connectors + 1)]
        out += [call16.StatusNotification(connector_id=connector, error_code="NoError", status="Charging",
                                          timestamp=ocpp_now()),
                call16.StartTransaction(connector_id=connector, id_tag=f"RFID-{rng.randint(1, 9999):04d}",
                                        meter_start=1000, timestamp=ocpp_now())]
        return out
    tx = f"tx-{rng.getrandbits(48):012x}"
    out = [call201.BootNotification(charging_station={"model": "DC120", "vendor_name": "v2x-load"},
                                    reason="PowerUp")]
    out += [call201.Heartbeat() for _ in range(heartbeats)]
    out += [call201.StatusNotification(timestamp=ocpp_now(), connector_status="Available", evse_id=e, connector_id=1)
            for e in range(1, cp.connectors + 1)]
    out += [call201.TransactionEvent(event_type="Started", timestamp=ocpp_now(), trigger_reason="CablePluggedIn",
                                     seq_no=0, transaction_info={"transaction_id": tx, "charging_state": "Charging"},
                                     evse={"id": connector, "connector_id": 1}),
            call201.TransactionEvent(event_type="Ended", timestamp=ocpp_now(), trigger_reason="EVCommunicationLost",
                                     seq_no=1, evse={"id": connector, "connector_id": 1},
                                     transaction_info={"transaction_id": tx, "stopped_reason": "EVDisconnected"})]
    return out
