"""The gRPC adapter of the parking service: validate, call the store, map the answer."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any

from grpc import aio
from prometheus_client import Counter
from v2x.parking.v1 import parking_pb2 as pb
from v2x.parking.v1 import parking_pb2_grpc

from services.common import paging
from services.common.cancellation import finish
from services.common.config import Settings
from services.common.errors import DomainError, FieldViolation, InvalidArgument
from services.common.principal import Principal, Role, current_principal
from services.common.stream_batches import batches
from services.common.validation import ID_RE
from services.parking import convert
from services.parking.availability import is_fresh
from services.parking.feed import AvailabilityFeed
from services.parking.model import Outcome, Report
from services.parking.settings import ParkingSettings
from services.parking.store import ParkingStore

REPORTS = Counter("v2x_parking_reports_total", "Occupancy reports by result", ["result"])
MAX_BATCH = 500
Context = aio.ServicerContext[Any, Any]


def _now() -> datetime:
    return datetime.now(UTC)


class ParkingServicer(parking_pb2_grpc.ParkingServiceServicer):
    def __init__(self, store: ParkingStore, feed: AvailabilityFeed, settings: Settings,
                 parking: ParkingSettings) -> None:
        self.store = store
        self.feed = feed
        self.settings = settings
        self.parking = parking

    # ----- lots and spots -------------------------------------------------------------------

    async def RegisterLot(self, request: pb.RegisterLotRequest, context: Context) -> pb.Lot:
        spec = convert.lot_spec(request.lot, self.parking.occupancy_default_ttl_s)
        record = await self.store.register_lot(spec)
        await self.feed.lot_changed(spec.id)
        return convert.lot_proto(record)

    async def UpdateLot(self, request: pb.UpdateLotRequest, context: Context) -> pb.Lot:
        spec = convert.lot_spec(request.lot, self.parking.occupancy_default_ttl_s)
        record = await self.store.update_lot(current_principal(), spec, request.expected_version)
        await self.feed.lot_changed(spec.id)
        return convert.lot_proto(record)

    async def GetLot(self, request: pb.GetLotRequest, context: Context) -> pb.LotView:
        now = _now()
        record, view = await self.store.get_lot(convert.lot_id(request.lot_id), now)
        return pb.LotView(lot=convert.lot_proto(record), availability=convert.availability_proto(view, now))

    async def ListLots(self, request: pb.ListLotsRequest, context: Context) -> pb.ListLotsResponse:
        principal = current_principal()
        page = paging.page(request.page, ID_RE)
        operator = request.operator_id or None
        if operator:
            convert.lot_id(operator, "operator_id")
        if principal.role is Role.OPERATOR:
            operator = principal.scope
        now = _now()
        rows = await self.store.list_lots(operator, page.cursor, page.size + 1, now)
        more = len(rows) > page.size
        rows = rows[:page.size]
        out = pb.ListLotsResponse(lots=[pb.LotView(lot=convert.lot_proto(r), availability=convert.availability_proto(
            v, now)) for r, v in rows])
        if more:
            out.page.next_page_token = paging.token(rows[-1][0].spec.id)
        return out

    async def UpsertSpots(self, request: pb.UpsertSpotsRequest, context: Context) -> pb.UpsertSpotsResponse:
        specs = convert.spot_specs(request)
        count = await self.store.upsert_spots(current_principal(), request.lot_id, specs)
        return pb.UpsertSpotsResponse(spot_count=count)

    async def ListSpots(self, request: pb.ListSpotsRequest, context: Context) -> pb.ListSpotsResponse:
        spots, view = await self.store.list_spots(convert.lot_id(request.lot_id))
        fresh = is_fresh(view.state, view.summary.ttl_s, _now())
        return pb.ListSpotsResponse(spots=[convert.spot_proto(s, fresh) for s in spots])

    # ----- occupancy ------------------------------------------------------------------------

    async def _process(self, principal: Principal, batch: Sequence[pb.OccupancyReport]) -> list[Outcome]:
        """One outcome per report, in order; valid reports are applied in one transaction."""
        now = _now()
        outcomes: list[Outcome | None] = []
        valid: list[Report] = []
        for r in batch:
            try:
                valid.append(convert.report(r, self.settings, now))
                outcomes.append(None)
            except DomainError as exc:
                outcomes.append(Outcome(pb.ACK_RESULT_REJECTED, 0, exc))
        applied: list[Outcome] = []
        if valid:
            applied, changed = await self.store.apply_reports(principal, valid, now)
            await self.feed.publish(changed, now)
        it = iter(applied)
        final = [o if o is not None else next(it) for o in outcomes]
        # One metric update per result per batch, not per report (labels() + inc() take locks each time).
        for result, count in collections.Counter(o.result for o in final).items():
            REPORTS.labels(pb.AckResult.Name(result)).inc(count)  # type: ignore[arg-type]
        return final

    async def PushOccupancy(self, request: pb.OccupancyReport, context: Context) -> pb.OccupancyAck:
        outcome = (await finish(self._process(current_principal(), [request])))[0]
        if outcome.error is not None:
            # The unary form answers a refusal with the status itself.
            raise outcome.error
        return convert.ack_proto(request, outcome)

    async def StreamOccupancy(self, request_iterator: AsyncIterator[pb.OccupancyReportBatch],
                              context: Context) -> AsyncIterator[pb.OccupancyAckBatch]:
        principal = current_principal()
        # Whatever queued up while the last transaction committed goes into the next one.
        async with aclosing(batches(request_iterator, limit=MAX_BATCH, buffered=16,
                                    weight=lambda m: len(m.reports))) as stream:
            async for messages in stream:
                reports = [r for m in messages for r in m.reports]
                outcomes: list[Outcome] = []
                for i in range(0, len(reports), MAX_BATCH):
                    outcomes += await finish(self._process(principal, reports[i:i + MAX_BATCH]))
                done = 0
                for m in messages:
                    n = len(m.reports)
                    yield convert.ack_batch_proto(reports[done:done + n], outcomes[done:done + n])
                    done += n

    # ----- passages -------------------------------------------------------------------------

    async def RecordPassage(self, request: pb.RecordPassageRequest, context: Context) -> pb.RecordPassageResponse:
        now = _now()
        spec = convert.passage(request, self.settings, now)
        created, view, changed = await self.store.record_passage(current_principal(), spec, now)
        if changed is not None:
            await self.feed.publish([changed], now)
        return pb.RecordPassageResponse(created=created, availability=convert.availability_proto(view, now))

    async def AmendPassage(self, request: pb.AmendPassageRequest, context: Context) -> pb.Passage:
        now = _now()
        amendment = convert.amendment(request, self.settings, now)
        record = await self.store.amend_passage(current_principal(), amendment, now)
        # Only the lot's own operator gets here (the policy and the store), and it sees its plates.
        return convert.passage_proto(record, redact=False)

    async def ListPassages(self, request: pb.ListPassagesRequest, context: Context) -> pb.ListPassagesResponse:
        principal = current_principal()
        lot_id = convert.lot_id(request.lot_id)
        page = paging.page(request.page, paging.ROW_CURSOR)
        since = None
        if request.HasField("since"):
            try:
                since = request.since.ToDatetime(tzinfo=UTC)
            except (ValueError, OverflowError):
                raise InvalidArgument(FieldViolation("since", "is not a valid timestamp")) from None
        rows, redact = await self.store.list_passages(principal, lot_id, since, int(page.cursor or 0), page.size + 1)
        out = pb.ListPassagesResponse(passages=[convert.passage_proto(p, redact) for _, p in rows[:page.size]],
                                      plates_redacted=redact)
        if len(rows) > page.size:
            out.page.next_page_token = paging.token(str(rows[page.size - 1][0]))
        return out

    # ----- drivers --------------------------------------------------------------------------

    async def FindAvailable(self, request: pb.FindAvailableRequest,  # type: ignore[override]
                            context: Context) -> pb.FindAvailableResponse | bytes:
        query = convert.find_query(request)
        now = _now()
        index = self.feed.index
        answer = index.find(query, now) if index is not None else None
        if answer is not None:
            return answer  # encoded (the rpc's serializer passes bytes through)
        # The index is loading, or may have missed other replicas' changes: PostGIS answers meanwhile.
        views = await self.store.find_available(query, now)
        return pb.FindAvailableResponse(lots=[convert.lot_availability_proto(v, now) for v in views])

    async def WatchAvailability(self, request: pb.WatchAvailabilityRequest,
                                context: Context) -> AsyncIterator[pb.AvailabilityUpdate]:
        area = convert.area(request.area)
        async with aclosing(self.feed.watch(area, request.snapshot)) as updates:
            async for update in updates:
                yield update
