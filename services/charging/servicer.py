"""The gRPC adapter of the charging service: validate, call the store / writer, map the answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from datetime import datetime
from typing import Any

from grpc import aio
from v2x.charging.v1 import charging_pb2 as pb
from v2x.charging.v1 import charging_pb2_grpc

from services.charging import convert, passwords, rules
from services.charging.feed import ChargingFeed
from services.charging.gateway import OcppGateway
from services.charging.group_commit import MAX_BATCH, StatusWriter
from services.charging.model import BayFlagFilter, Outcome, Report
from services.charging.settings import ChargingSettings
from services.charging.store import ChargingStore
from services.common import paging
from services.common.cancellation import finish
from services.common.config import Settings
from services.common.errors import DomainError, FieldViolation, InvalidArgument
from services.common.principal import Principal, Role, current_principal
from services.common.stream_batches import batches
from services.common.validation import ID_RE

Context = aio.ServicerContext[Any, Any]
def _sees_ocpp_identity(principal: Principal, operator_id: str) -> bool:
    """Charge point ids are the user names of the OCPP gateway: shown to admins and the owner only."""
    return principal.role is Role.ADMIN or principal.is_operator(operator_id)


def _redacted(station: pb.Station, principal: Principal) -> pb.Station:
    if not _sees_ocpp_identity(principal, station.operator_id):
        for e in station.evses:
            e.charge_point_id = ""
    return station


class ChargingServicer(charging_pb2_grpc.ChargingServiceServicer):
    def __init__(self, store: ChargingStore, writer: StatusWriter, feed: ChargingFeed, gateway: OcppGateway,
                 settings: Settings, charging: ChargingSettings, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.writer = writer
        self.feed = feed
        self.gateway = gateway
        self.settings = settings
        self.charging = charging
        self.clock = clock

    # ----- stations -----------------------------------------------------------------------

    async def RegisterStation(self, request: pb.RegisterStationRequest, context: Context) -> pb.Station:
        spec = convert.station_spec(request.station)
        record = await self.store.register_station(spec)
        await self.feed.publish_station(spec.id)
        return convert.station_proto(record, self.clock())

    async def UpdateStation(self, request: pb.UpdateStationRequest, context: Context) -> pb.Station:
        spec = convert.station_spec(request.station)
        if request.expected_version < 0:
            raise InvalidArgument(FieldViolation("expected_version", f"must be >= 0, not {request.expected_version}"))
        record = await self.store.update_station(current_principal(), spec, request.expected_version)
        await self.feed.publish_station(spec.id)
        return convert.station_proto(record, self.clock())

    async def GetStation(self, request: pb.GetStationRequest, context: Context) -> pb.Station:
        record = await self.store.get_station(convert.ident(request.station_id, "station_id"), stale_ok=True)
        return _redacted(convert.station_proto(record, self.clock()), current_principal())

    async def ListStations(self, request: pb.ListStationsRequest, context: Context) -> pb.ListStationsResponse:
        principal = current_principal()
        page = paging.page(request.page, ID_RE)
        operator = convert.ident(request.operator_id, "operator_id") if request.operator_id else None
        lot = convert.ident(request.parking_lot_id, "parking_lot_id") if request.parking_lot_id else None
        if principal.role is Role.OPERATOR:
            operator = principal.scope
        records = await self.store.list_stations(operator, lot, page.cursor, page.size + 1)
        now = self.clock()
        out = pb.ListStationsResponse(stations=[_redacted(convert.station_proto(r, now), principal)
                                                for r in records[:page.size]])
        if len(records) > page.size:
            out.page.next_page_token = paging.token(records[page.size - 1].spec.id)
        return out

    # ----- status -------------------------------------------------------------------------

    async def _process(self, principal: Principal, batch: Sequence[pb.StatusReport]) -> list[Outcome]:
        """One outcome per report, in order; valid reports are committed together (group commit)."""
        now = self.clock()
        operator = principal.scope or ""
        outcomes: list[Outcome | None] = []
        valid: list[Report] = []
        for r in batch:
            try:
                valid.append(convert.report(r, operator, self.settings, now))
                outcomes.append(None)
            except DomainError as exc:
                outcomes.append(Outcome(pb.ACK_RESULT_REJECTED, None, exc))
        applied = iter(await self.writer.submit(valid))
        return [o if o is not None else next(applied) for o in outcomes]

    async def ReportStatus(self, request: pb.StatusReport, context: Context) -> pb.StatusAck:
        outcome = (await finish(self._process(current_principal(), [request])))[0]
        if outcome.error is not None:
            raise outcome.error  # the unary form answers a refusal with the status itself
        return convert.ack_proto(request, outcome, self.clock())

    async def StreamStatus(self, request_iterator: AsyncIterator[pb.StatusReport],
                           context: Context) -> AsyncIterator[pb.StatusAck]:
        principal = current_principal()
        # Whatever queued up while the last batch committed goes into one transaction.
        async with aclosing(batches(request_iterator, limit=MAX_BATCH, buffered=4 * MAX_BATCH)) as stream:
            async for batch in stream:
                outcomes = await finish(self._process(principal, batch))
                now = self.clock()
                for report, outcome in zip(batch, outcomes, strict=True):
                    yield convert.ack_proto(report, outcome, now)

    # ----- drivers ------------------------------------------------------------------------

    async def FindChargers(self, request: pb.FindChargersRequest,  # type: ignore[override]
                           context: Context) -> pb.FindChargersResponse | bytes:
        query = convert.find_query(request)
        now = self.clock()
        index = self.feed.index
        answer = index.find(query, now) if index is not None else None
        if answer is not None:
            return answer  # encoded (the rpc's serializer passes bytes through)
        # The index is loading, or may have missed other replicas' changes: PostGIS answers meanwhile.
        return convert.answer_proto(await self.store.find(query, now), now)

    async def WatchStation(self, request: pb.WatchStationRequest, context: Context) -> AsyncIterator[pb.StationUpdate]:
        principal = current_principal()
        async with aclosing(self.feed.watch(convert.ident(request.station_id, "station_id"))) as updates:
            async for update in updates:
                if update.HasField("station"):
                    _redacted(update.station, principal)
                yield update

    # ----- EV bays ------------------------------------------------------------------------

    async def ListBayFlags(self, request: pb.ListBayFlagsRequest, context: Context) -> pb.ListBayFlagsResponse:
        principal = current_principal()
        page = paging.page(request.page, paging.ROW_CURSOR)
        station = convert.ident(request.station_id, "station_id") if request.station_id else None
        lot = convert.ident(request.parking_lot_id, "parking_lot_id") if request.parking_lot_id else None
        kinds = convert.bay_flag_kinds(list(request.kinds))
        after = int(page.cursor or 0)
        operator = None
        if principal.role is Role.OPERATOR:
            operator = principal.scope
            if station is not None:
                rules.require_owner(principal, await self.store.station_operator(station), f"station {station}")
        flags, counts = await self.store.list_bay_flags(
            BayFlagFilter(operator, station, lot, kinds, request.open_only), after, page.size + 1)
        out = pb.ListBayFlagsResponse(flags=[convert.bay_flag_proto(f) for f in flags[:page.size]],
                                      counts=[convert.bay_count_proto(c) for c in counts])
        if len(flags) > page.size:
            out.page.next_page_token = paging.token(str(flags[page.size - 1].id))
        return out

    # ----- charge points ------------------------------------------------------------------

    async def RegisterChargePoint(self, request: pb.RegisterChargePointRequest,
                                  context: Context) -> pb.RegisterChargePointResponse:
        cp_id, station_id, protocol = convert.charge_point_request(request)
        password = passwords.new_password()
        hashed = await asyncio.to_thread(passwords.hash_password, password)
        record = await self.store.register_charge_point(cp_id, station_id, protocol, hashed,
                                                        self.charging.ocpp_heartbeat_s, request.reset_password)
        if request.reset_password:
            await self.gateway.disconnect(cp_id, "password reset")
        return pb.RegisterChargePointResponse(charge_point=convert.charge_point_proto(record), password=password,
                                              endpoint_url=f"{self._endpoint()}/{cp_id}")

    def _endpoint(self) -> str:
        host = self.settings.bind_host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return self.charging.ocpp_url(host, self.gateway.port)
