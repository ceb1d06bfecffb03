"""IDPS domain types: validated reports, incidents as stored, what the store answers, and the
attributes a subscription filter looks at."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from services.common.geo import Area
from services.idps import lifecycle


@dataclass(frozen=True)
class ReportInput:
    """One validated observation (from ReportEvent or the roadside stream)."""

    idempotency_key: str
    source_id: str
    source_kind: int
    type: int
    lat: float
    lon: float
    confidence: float
    observed_at: datetime
    actor: str
    external_code: str = ""
    radius_m: float = 0.0
    lane_id: str = ""
    heading_deg: float | None = None
    plate: str = ""
    plate_colour: int = 0
    snapshot_jpeg: bytes = b""
    description: str = ""


@dataclass
class Incident:
    """An incident row. Mutable only inside a store transaction that holds its row lock."""

    id: str
    type: int
    status: int
    severity: int
    lat: float
    lon: float
    confidence: float
    first_observed_at: datetime
    last_observed_at: datetime
    created_at: datetime
    updated_at: datetime
    version: int = 1
    type_fixed: bool = False
    severity_derived: bool = True
    lane_impacts: list[tuple[str, int]] = field(default_factory=list)
    radius_m: float = 0.0
    heading_deg: float | None = None
    source_conf: dict[str, float] = field(default_factory=dict)
    weight_sum: float = 0.0
    source_count: int = 0
    source_kinds: list[int] = field(default_factory=list)
    plates: list[str] = field(default_factory=list)
    cleared_at: datetime | None = None
    closed_at: datetime | None = None
    merged_into_id: str = ""
    description: str = ""

    def attrs(self) -> Attrs:
        return Attrs(self.status, self.type, self.severity, self.lat, self.lon)

    def snapshot(self) -> Incident:
        """A copy that later changes of this one leave as it is (for answers and the change feed)."""
        # Not dataclasses.replace: that re-runs __init__ over every field, and reports take a snapshot each.
        out = object.__new__(Incident)
        out.__dict__.update(self.__dict__)
        out.lane_impacts, out.source_conf = list(self.lane_impacts), dict(self.source_conf)
        out.source_kinds, out.plates = list(self.source_kinds), list(self.plates)
        return out


@dataclass(frozen=True)
class Attrs:
    """What a subscription filter looks at, as carried in each change stream entry."""

    status: int
    type: int
    severity: int
    lat: float
    lon: float

    def encode(self) -> str:
        return f"{self.status},{self.type},{self.severity},{self.lat!r},{self.lon!r}"

    @classmethod
    def decode(cls, raw: str) -> Attrs | None:
        if not raw:
            return None
        s, t, sev, lat, lon = raw.split(",")
        return cls(int(s), int(t), int(sev), float(lat), float(lon))


@dataclass(frozen=True)
class Source:
    """A stored report, as part of an incident."""

    report_id: str
    incident_id: str
    source_id: str
    source_kind: int
    type: int
    external_code: str
    lat: float
    lon: float
    radius_m: float
    confidence: float
    observed_at: datetime
    received_at: datetime
    lane_id: str
    heading_deg: float | None
    plate: str
    plate_colour: int
    has_snapshot: bool
    description: str


@dataclass(frozen=True)
class AuditEntry:
    version: int
    at: datetime
    actor: str
    action: int
    note: str = ""
    from_status: int = 0
    to_status: int = 0
    details: str = ""
    report_id: str = ""
    related_incident_id: str = ""


@dataclass(frozen=True)
class Link:
    report_id: str
    kind: int
    from_incident_id: str
    to_incident_id: str
    at: datetime
    actor: str


@dataclass(frozen=True)
class Change:
    """A committed change of one incident, to publish: its state after, and its filter attributes before
    (None when the change created it)."""

    incident: Incident
    before: Attrs | None


@dataclass(frozen=True)
class ReportOutcome:
    incident: Incident
    report_id: str
    opened: bool = False
    reactivated: bool = False
    duplicate: bool = False
    changes: tuple[Change, ...] = ()


@dataclass(frozen=True)
class IncidentDetail:
    incident: Incident
    sources: list[Source]
    audit: list[AuditEntry]
    links: list[Link]


@dataclass(frozen=True)
class IncidentFilter:
    """Which incidents a subscriber (or a list) wants. Empty sets mean all."""

    area: Area | None = None
    types: frozenset[int] = frozenset()
    min_severity: int = 0
    statuses: frozenset[int] = frozenset()

    def matches_live(self, a: Attrs) -> bool:
        """Whether a subscriber with this filter follows an incident in this state (never a terminal one)."""
        if a.status in lifecycle.TERMINAL:
            return False
        if self.statuses and a.status not in self.statuses:
            return False
        if self.types and a.type not in self.types:
            return False
        if a.severity < self.min_severity:
            return False
        return self.area is None or self.area.contains(a.lat, a.lon)


@dataclass(frozen=True)
class ListQuery:
    filter: IncidentFilter
    start_time: datetime | None
    end_time: datetime | None
    limit: int
    after: tuple[datetime, str] | None  # keyset: (created_at, id) of the last item of the previous page


@dataclass(frozen=True)
class UpdateSpec:
    type: int = 0
    severity: int = 0
    derive_severity: bool = False
    lane_impacts: tuple[tuple[str, int], ...] = ()
    note: str = ""
