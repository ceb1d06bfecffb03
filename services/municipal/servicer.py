"""The gRPC adapter of the municipal admin service: validate, call the adapter, map the answer."""

from __future__ import annotations

from typing import Any

from grpc import aio
from v2x.municipal.v1 import municipal_pb2 as pb
from v2x.municipal.v1 import municipal_pb2_grpc

from services.common.errors import FieldViolation, InvalidArgument
from services.common.validation import Validator
from services.municipal import convert
from services.municipal.destinations import Adapter

Context = aio.ServicerContext[Any, Any]


class MunicipalAdminServicer(municipal_pb2_grpc.MunicipalAdminServiceServicer):
    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    async def _one(self, name: str) -> pb.DestinationStatus:
        (lane, st), = await self.adapter.status(name)
        return convert.status_proto(lane, st)

    async def GetStatus(self, request: pb.GetStatusRequest, context: Context) -> pb.GetStatusResponse:
        rows = await self.adapter.status(request.destination)
        return pb.GetStatusResponse(destinations=[convert.status_proto(lane, st) for lane, st in rows])

    async def ListDeadLetters(self, request: pb.ListDeadLettersRequest,
                              context: Context) -> pb.ListDeadLettersResponse:
        kind = convert.kind(request.kind, "kind")
        size, before = convert.page(request.page)
        rows = await self.adapter.dead_letters(request.destination, kind, request.include_resolved, before,
                                               size + 1)
        out = pb.ListDeadLettersResponse(dead_letters=[convert.dead_letter_proto(d) for d in rows[:size]])
        if len(rows) > size:
            out.page.next_page_token = convert.token(rows[size - 1].id)
        return out

    async def RetryDeadLetters(self, request: pb.RetryDeadLettersRequest,
                               context: Context) -> pb.RetryDeadLettersResponse:
        if request.all and request.ids:
            raise InvalidArgument(FieldViolation("ids", "must be empty with all"))
        if not request.all and not request.ids:
            raise InvalidArgument(FieldViolation("ids", "name dead letters to retry, or set all"))
        if len(request.ids) > convert.MAX_RETRY_IDS:
            raise InvalidArgument(FieldViolation("ids", f"at most {convert.MAX_RETRY_IDS} per call"))
        n = await self.adapter.retry(request.destination, None if request.all else list(request.ids))
        return pb.RetryDeadLettersResponse(requeued=n)

    async def Replay(self, request: pb.ReplayRequest, context: Context) -> pb.ReplayResponse:
        from_time = convert.replay_time(request)
        kinds = [k for i, v in enumerate(request.kinds) if (k := convert.kind(v, f"kinds[{i}]"))]
        return pb.ReplayResponse(queued=await self.adapter.replay(request.destination, from_time, kinds))

    async def Pause(self, request: pb.PauseRequest, context: Context) -> pb.DestinationStatus:
        v = Validator()
        v.text("reason", request.reason, 500)
        v.check()
        await self.adapter.pause(request.destination, request.reason)
        return await self._one(request.destination)

    async def Resume(self, request: pb.ResumeRequest, context: Context) -> pb.DestinationStatus:
        await self.adapter.resume(request.destination)
        return await self._one(request.destination)

    async def Reconcile(self, request: pb.ReconcileRequest, context: Context) -> pb.ReconcileResponse:
        day = convert.day(request.day)
        result, compared = await self.adapter.reconcile(request.destination, day)
        return convert.reconciliation_proto(result, compared)
