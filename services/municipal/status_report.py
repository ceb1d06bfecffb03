"""The municipal adapter's delivery status for people: `v2x municipal-status` and the lag line of `v2x run`.

Both read the adapter's GetStatus rpc. `v2x run` leaves the adapter's address and its demo admin key in its
run file (`services.common.runfile`), so that `v2x municipal-status` needs no configuration against it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import grpc
from grpc import aio
from v2x.municipal.v1 import municipal_pb2 as pb
from v2x.municipal.v1.municipal_pb2_grpc import MunicipalAdminServiceStub

from services.common.runfile import read_live, run_file, write_private
from services.municipal.convert import PROFILE_TO_PROTO

STATUS_TIMEOUT_S = 5.0
_ERROR_CHARS = 160  # of a destination's last error on the one-line lag report


class StatusUnavailable(Exception):
    """The status could not be read; the message says why and what to do, for people."""


# ----- where `v2x run` leaves the adapter's address and admin key -------------------------------------------


@dataclass(frozen=True)
class AdminAccess:
    """How to reach a running adapter's admin service: host:port, an admin key, the `v2x run` that wrote it."""

    target: str
    key: str = field(repr=False)
    pid: int


def access_from(run: Mapping[str, Any]) -> AdminAccess | None:
    """The adapter's address and the demo admin key in what a `v2x run` left in its run file."""
    try:
        return AdminAccess(str(run["targets"]["municipal"]), str(run["keys"]["admin"]), int(run["pid"]))
    except (KeyError, TypeError, ValueError):
        return None


def load_access(path: Path) -> AdminAccess | None:
    """The access a `v2x run` that is still running left in `path`; None when there is none."""
    run = read_live(path)
    return access_from(run) if run is not None else None


def save_access(access: AdminAccess, path: Path) -> None:
    """Leaves `access` in `path` as a run would (only the adapter's part of a run file)."""
    write_private(path, {"pid": access.pid, "targets": {"municipal": access.target}, "keys": {"admin": access.key}})


# ----- reading the status -------------------------------------------------------------------------------------


class StatusClient:
    """One channel to the adapter's admin service, for as long as the `async with` lasts."""

    def __init__(self, target: str, key: str, timeout_s: float = STATUS_TIMEOUT_S) -> None:
        self.target = target
        self._md = (("authorization", f"Bearer {key}"),)
        self._timeout_s = timeout_s
        self._channel = aio.insecure_channel(target)
        self._stub = MunicipalAdminServiceStub(self._channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._channel.close()

    async def get(self, destination: str = "") -> list[pb.DestinationStatus]:
        try:
            reply = await self._stub.GetStatus(pb.GetStatusRequest(destination=destination), metadata=self._md,
                                               timeout=self._timeout_s)
        except aio.AioRpcError as exc:
            raise StatusUnavailable(_explain(self.target, exc)) from None
        return list(reply.destinations)


def _explain(target: str, exc: aio.AioRpcError) -> str:
    code, details = exc.code(), (exc.details() or "").strip()
    said = f"{code.name}: {details}" if details else code.name
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return (f"the municipal adapter at {target} is not reachable ({said}); is `make run` "
                "(or `v2x serve municipal`) running?")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return (f"the municipal adapter at {target} refused the key ({said}); give an admin key with --key "
                "or V2X_ADMIN_KEY")
    return f"the municipal adapter at {target} answered {said}"


# ----- for people ---------------------------------------------------------------------------------------------


_PROFILE_NAMES = {number: name for name, number in PROFILE_TO_PROTO.items()}


def profile_name(profile: int) -> str:
    return _PROFILE_NAMES.get(profile, str(profile))


def delivered_total(s: pb.DestinationStatus) -> int:
    return sum(int(k.delivered) for k in s.delivered)


def _seconds(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _ago(at: datetime, now: datetime) -> str:
    age = max(0.0, (now - at).total_seconds())
    if age < 120:
        return f"{age:.0f} s ago"
    if age < 7200:
        return f"{age / 60:.0f} min ago"
    return f"{age / 3600:.0f} h ago"


def _state(s: pb.DestinationStatus) -> str:
    if s.paused:
        return "paused"
    return "replaying" if s.replaying else "delivering"


_CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}


def _error(s: pb.DestinationStatus) -> str:
    e = s.last_error
    code = _CODE_NAMES.get(e.code, str(e.code))
    return f"{code}: {e.message}" if e.message else code


_HEAD = ("DESTINATION", "PROFILE", "LAG (RECORDS)", "LAG (S)", "DELIVERED", "DEAD LETTERS", "STATE",
         "LAST DELIVERY")
_RIGHT = {2, 3, 4, 5}  # right-aligned (numbers)


def status_table(target: str, statuses: Sequence[pb.DestinationStatus], now: datetime | None = None) -> str:
    """What `v2x municipal-status` prints: one row per destination, then its pause reason and last error."""
    now = now or datetime.now(UTC)
    if not statuses:
        return f"municipal adapter {target}: no destinations configured"
    rows = [_HEAD]
    for s in statuses:
        last = _ago(s.last_delivered_at.ToDatetime(UTC), now) if s.HasField("last_delivered_at") else "never"
        rows.append((s.destination, profile_name(s.profile), f"{s.lag_records:,}", _seconds(s.lag_s),
                     f"{delivered_total(s):,}", f"{s.dead_letters:,}", _state(s), last))
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEAD))]
    lines = [f"municipal adapter {target}: {len(statuses)} destination{'s' if len(statuses) != 1 else ''} "
             "(lag: outbox records waiting, and the age of the oldest in seconds)"]
    for r in rows:
        cells = [c.rjust(w) if i in _RIGHT else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    for s in statuses:
        if s.paused:
            lines.append(f"  {s.destination}: paused: {s.pause_reason or '(no reason given)'}")
        if s.HasField("last_error"):
            when = f" {_ago(s.last_error_at.ToDatetime(UTC), now)}" if s.HasField("last_error_at") else ""
            lines.append(f"  {s.destination}: last error{when}: {_error(s)}")
    return "\n".join(lines)


def lag_line(statuses: Sequence[pb.DestinationStatus], at: datetime | None = None) -> str:
    """The one line `v2x run` prints every so often: lag, delivered, and whatever needs attention."""
    stamp = (at or datetime.now()).strftime("%H:%M:%S")
    if not statuses:
        return f"[{stamp}] municipal lag: no destinations configured"
    parts = []
    for s in statuses:
        notes = [f"{delivered_total(s):,} delivered"]
        if s.dead_letters:
            notes.append(f"{s.dead_letters:,} dead letters")
        if s.paused:
            notes.append("PAUSED")
        if s.HasField("last_error"):
            error = _error(s)
            notes.append("last error " + (error if len(error) <= _ERROR_CHARS else error[:_ERROR_CHARS - 1] + "…"))
        parts.append(f"{s.destination} {s.lag_records:,} records / {_seconds(s.lag_s)} s ({', '.join(notes)})")
    return f"[{stamp}] municipal lag: " + " | ".join(parts)


async def report_lag(client: StatusClient, say: Callable[[str], None], interval_s: float) -> None:
    """Says `lag_line` every `interval_s` until cancelled; when the status cannot be read, says why once
    (again only when the reason changes)."""
    said_error = ""
    next_at = time.monotonic() + interval_s
    while True:
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        next_at += interval_s
        try:
            statuses = await client.get()
        except StatusUnavailable as exc:
            if str(exc) != said_error:
                said_error = str(exc)
                say(f"[{datetime.now():%H:%M:%S}] municipal lag: unknown: {exc}")
            continue
        said_error = ""
        say(lag_line(statuses))


# ----- `v2x municipal-status` ---------------------------------------------------------------------------------


def resolve_access(target: str | None, key: str | None, default_target: str,
                   env: Mapping[str, str] | None = None) -> AdminAccess:
    """--target / --key, else V2X_ADMIN_KEY, else what a running `v2x run` left in `run_file()`."""
    e = os.environ if env is None else env
    found = load_access(run_file(e))
    key = key or e.get("V2X_ADMIN_KEY", "") or (found.key if found else "")
    target = target or (found.target if found else default_target)
    if not key:
        raise StatusUnavailable(
            f"no admin key: no `v2x run` is running for this user (it leaves its demo admin key in "
            f"{run_file(e)}); start the suite with `make run`, or give an admin key with --key (or V2X_ADMIN_KEY) "
            "and the adapter's host:port with --target")
    return AdminAccess(target, key, found.pid if found else 0)


async def print_status(access: AdminAccess, destination: str = "", timeout_s: float = STATUS_TIMEOUT_S) -> None:
    async with StatusClient(access.target, access.key, timeout_s) as client:
        statuses = await client.get(destination)
    print(status_table(access.target, statuses), flush=True)


def status_command(target: str | None, key: str | None, destination: str, default_target: str,
                   timeout_s: float = STATUS_TIMEOUT_S) -> int:
    """Prints the status table; on failure a one-line reason on stderr. Returns the exit code."""
    try:
        access = resolve_access(target, key, default_target)
        asyncio.run(print_status(access, destination, timeout_s))
    except StatusUnavailable as exc:
        print(f"v2x municipal-status: {exc}", file=sys.stderr)
        return 1
    return 0

