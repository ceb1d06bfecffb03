"""The gRPC adapter of the IDPS service: validate, call the store, publish what committed, map the answer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from grpc import aio
from prometheus_client import Counter
from v2x.idps.v1 import idps_pb2 as pb
from v2x.idps.v1 import idps_pb2_grpc

from services.common.config import Settings
from services.common.errors import FieldViolation, InvalidArgument, PermissionDenied
from services.common.principal import Principal, Role, current_principal
from services.idps import convert
from services.idps.batching import ReportBatcher
from services.idps.feed import ChangeFeed, Subscriptions
from services.idps.model import Change, ReportInput, ReportOutcome
from services.idps.store import IdpsStore

REPORTS = Counter("v2x_idps_reports_total", "Reports by outcome", ["outcome"])
# The counter's children, looked up once (labels() takes a lock and builds a key on every call).
_OUTCOMES = {name: REPORTS.labels(name) for name in ("duplicate", "opened", "reactivated", "joined")}
Context = aio.ServicerContext[Any, Any]
SERVICE = pb.DESCRIPTOR.services_by_name["IdpsService"]


def _now() -> datetime:
    return datetime.now(UTC)


def may_see_evidence(principal: Principal) -> bool:
    """Plates and images are for the police only; every other role sees them redacted, and plate numbers
    typed into descriptions and notes masked."""
    return principal.role is Role.POLICE


class IncidentService:
    """What ReportEvent and the roadside consumer share: store the report (in a batch with other
    concurrent ones), then publish the change."""

    def __init__(self, store: IdpsStore, feed: ChangeFeed) -> None:
        self.store = store
        self.feed = feed
        self.batcher = ReportBatcher(store, feed)

    async def report(self, r: ReportInput, now: datetime) -> ReportOutcome:
        outcome = await self.batcher.report(r, now)
        _OUTCOMES["duplicate" if outcome.duplicate else "opened" if outcome.opened
                  else "reactivated" if outcome.reactivated else "joined"].inc()
        return outcome

    async def publish(self, changes: Sequence[Change]) -> None:
        await self.feed.publish(changes)


class IdpsServicer(idps_pb2_grpc.IdpsServiceServicer):
    def __init__(self, incidents: IncidentService, subscriptions: Subscriptions, settings: Settings) -> None:
        self.incidents = incidents
        self.store = incidents.store
        self.subscriptions = subscriptions
        self.settings = settings

    async def ReportEvent(self, request: pb.ReportEventRequest, context: Context) -> pb.ReportEventResponse:
        principal = current_principal()
        now = _now()
        r = convert.report(request, str(principal), self.settings.max_future_skew_s, now)
        if principal.role is Role.CAMERA and (r.source_kind != pb.SOURCE_KIND_ROADSIDE_DETECTION
                                              or r.source_id != principal.scope):
            raise PermissionDenied(f"camera {principal.scope} may only report its own detections "
                                   f"(source_kind ROADSIDE_DETECTION, source_id {principal.scope})")
        outcome = await self.incidents.report(r, now)
        return pb.ReportEventResponse(incident_id=outcome.incident.id, opened=outcome.opened,
                                      reactivated=outcome.reactivated, duplicate=outcome.duplicate,
                                      report_id=outcome.report_id, incident_version=outcome.incident.version)

    async def TransitionIncident(self, request: pb.TransitionIncidentRequest, context: Context) -> pb.Incident:
        iid = convert.incident_id(request.incident_id)
        target = convert.target_status(request.target_status)
        version = convert.version(request.expected_version)
        note = convert.note(request.note)
        change = await self.store.transition(iid, target, version, note, str(current_principal()), _now())
        await self.incidents.publish([change])
        return convert.incident_proto(change.incident)

    async def UpdateIncident(self, request: pb.UpdateIncidentRequest, context: Context) -> pb.Incident:
        spec = convert.update_spec(request)
        change = await self.store.update(request.incident_id, spec, request.expected_version,
                                         str(current_principal()), _now())
        await self.incidents.publish([change])
        return convert.incident_proto(change.incident)

    async def MergeIncidents(self, request: pb.MergeIncidentsRequest, context: Context) -> pb.Incident:
        target = convert.incident_id(request.target_incident_id, "target_incident_id")
        others = convert.id_list(list(request.incident_ids), "incident_ids", 1, convert.MAX_MERGE)
        if target in others:
            raise InvalidArgument(FieldViolation("incident_ids", "must not contain the target incident"))
        version = convert.version(request.expected_version)
        note = convert.note(request.note)
        changes = await self.store.merge(target, others, version, note, str(current_principal()), _now())
        await self.incidents.publish(changes)
        return convert.incident_proto(changes[0].incident)

    async def SplitSource(self, request: pb.SplitSourceRequest, context: Context) -> pb.SplitSourceResponse:
        iid = convert.incident_id(request.incident_id)
        reports = convert.id_list(list(request.report_ids), "report_ids", 1, convert.MAX_SPLIT)
        version = convert.version(request.expected_version)
        note = convert.note(request.note)
        old, new = await self.store.split(iid, reports, version, note, str(current_principal()), _now())
        await self.incidents.publish([old, new])
        return pb.SplitSourceResponse(incident=convert.incident_proto(old.incident),
                                      new_incident=convert.incident_proto(new.incident))

    async def GetIncident(self, request: pb.GetIncidentRequest, context: Context) -> pb.GetIncidentResponse:
        redact = not may_see_evidence(current_principal())
        detail = await self.store.get(convert.incident_id(request.incident_id))
        out = pb.GetIncidentResponse(incident=convert.incident_proto(detail.incident, redact),
                                     audit=[convert.audit_proto(a, redact) for a in detail.audit],
                                     links=[convert.link_proto(link) for link in detail.links])
        out.incident.sources.extend(convert.source_proto(s, redact) for s in detail.sources)
        return out

    async def GetEvidence(self, request: pb.GetEvidenceRequest, context: Context) -> pb.Evidence:
        if not may_see_evidence(current_principal()):  # the policy admits the police only; kept as a second lock
            raise PermissionDenied("evidence (plates, images) is for the police only")
        plate, colour, snapshot = await self.store.evidence(convert.incident_id(request.report_id, "report_id"))
        return pb.Evidence(snapshot_jpeg=snapshot, plate=plate, plate_colour=colour,  # type: ignore[arg-type]
                           has_snapshot=bool(snapshot))

    async def ListIncidents(self, request: pb.ListIncidentsRequest, context: Context) -> pb.ListIncidentsResponse:
        redact = not may_see_evidence(current_principal())
        q = convert.list_query(request)
        rows = await self.store.list_incidents(replace(q, limit=q.limit + 1))
        out = pb.ListIncidentsResponse(incidents=[convert.incident_proto(i, redact) for i in rows[:q.limit]])
        if len(rows) > q.limit:
            out.page.next_page_token = convert.page_token(rows[q.limit - 1])
        return out

    async def Subscribe(self, request: pb.SubscribeRequest,  # type: ignore[override]
                        context: Context) -> AsyncIterator[bytes]:
        f = convert.incident_filter(request.filter, live=True)
        cursor = convert.cursor(request.cursor)
        heartbeat = convert.heartbeat(request.heartbeat_interval_s)
        redact = not may_see_evidence(current_principal())
        async with aclosing(self.subscriptions.stream(f, cursor, heartbeat)) as chunks:
            async for chunk in chunks:
                yield convert.redact_subscribe_chunk(chunk) if redact else chunk
