"""Parking domain types: validated lot data, reports, passages and what the store answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.common.errors import DomainError
from services.parking.availability import LotState, Period
from services.parking.vocab import PassageAmendAction, SpaceClass


@dataclass(frozen=True)
class PriceSpec:
    free_minutes: int = 0
    first_hour_fen: int = 0
    per_hour_fen: int = 0
    daily_cap_fen: int = 0
    description: str = ""

    @property
    def hourly_fen(self) -> int:
        return max(self.first_hour_fen, self.per_hour_fen)


@dataclass(frozen=True)
class EntranceSpec:
    id: str
    lat: float
    lon: float
    entry: bool
    exit: bool


@dataclass(frozen=True)
class LotSpec:
    """A lot's static data, validated."""

    id: str
    operator_id: str
    name: str
    kind: int
    lat: float
    lon: float
    capacity: dict[int, int]
    detection_type: int
    ttl_s: int
    address: str = ""
    region_code: str = ""
    line: list[tuple[float, float]] | None = None  # (lat, lon)
    price: PriceSpec = field(default_factory=PriceSpec)
    always_open: bool = True
    periods: list[Period] = field(default_factory=list)
    entrances: list[EntranceSpec] = field(default_factory=list)
    phone: str = ""
    fast_charging_piles: int = 0
    slow_charging_piles: int = 0


@dataclass(frozen=True)
class LotRecord:
    spec: LotSpec
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class LotSummary:
    """What availability answers need of a lot: identity, place, capacity, tariff, freshness rules."""

    id: str
    operator_id: str
    name: str
    kind: int
    lat: float
    lon: float
    capacity: dict[int, int]
    price: PriceSpec
    ttl_s: int
    detection_type: int
    open_now: bool


@dataclass(frozen=True)
class LotView:
    summary: LotSummary
    state: LotState
    distance_m: float = 0.0


@dataclass(frozen=True)
class Report:
    lot_id: str
    sequence: int
    observed_at: datetime
    counts: dict[int, int]
    spots: dict[str, int]
    closed: bool
    full_at_entrance: bool
    report_id: str = ""


@dataclass(frozen=True)
class Outcome:
    """The answer to one report: ACCEPTED / STALE / DUPLICATE / REJECTED (with `error`)."""

    result: int
    stored_sequence: int
    error: DomainError | None = None


@dataclass(frozen=True)
class SpotSpec:
    id: str
    space_class: int
    connector_id: str = ""
    lat: float | None = None
    lon: float | None = None


@dataclass(frozen=True)
class SpotRecord:
    spec: SpotSpec
    status: int
    observed_at: datetime | None


@dataclass(frozen=True)
class PassageSpec:
    lot_id: str
    passage_id: str
    direction: int
    plate: str
    plate_colour: int
    lane: str
    passed_at: datetime
    space_class: int


@dataclass(frozen=True)
class PassageRecord:
    spec: PassageSpec
    received_at: datetime
    state: int = 1  # PassageState: 1 recorded, 2 corrected, 3 voided
    revision: int = 0
    amended_at: datetime | None = None
    amend_reason: str = ""


@dataclass(frozen=True)
class PassageAmendment:
    """A validated AmendPassage: the action and, for a correction, the fields it replaces (None = keep)."""

    lot_id: str
    passage_id: str
    action: PassageAmendAction
    reason: str
    plate: str | None = None
    plate_colour: int | None = None
    passed_at: datetime | None = None
    lane: str | None = None


@dataclass(frozen=True)
class FindQuery:
    lat: float
    lon: float
    radius_m: float
    limit: int
    space_class: SpaceClass
    min_free: int
    kinds: list[int]
    open_now: bool
    max_price_per_hour_fen: int


JsonDict = dict[str, Any]
