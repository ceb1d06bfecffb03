"""Fast paths: a rule written a second time, for speed, beside its plain implementation.

A fast path stays only while a benchmark under load/ shows that it earns its place (load/README.md, "Fast
paths", gives each one's figure and the run that measured it). Each sits behind the one function the plain
path also serves (the function asks `on(...)` and falls back to the plain path) and is pinned by an
equivalence test against the plain path. Any of them can be turned off (`V2X_PLAIN_PATHS`, which the
benchmarks' `--ab` runs set), so that the figure can be measured again in one run: fast and plain side by side.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterable, Iterator


class FastPath(enum.Enum):
    # services/common/rawsql.fetch: the FindAvailable / FindChargers PostGIS queries and the nearby indexes'
    # loads read through the asyncpg driver, without SQLAlchemy's result processing.
    DRIVER_READS = "driver-reads"
    # services/common/proto_wire: nearby-index answers joined from the cached encodings of their entries
    # (bytes spliced), not built as messages from those encodings and encoded again.
    SPLICED_ANSWERS = "spliced-answers"


_plain: set[FastPath] = set()


def on(path: FastPath) -> bool:
    """Whether `path` runs (all do, unless turned off with `use_plain`)."""
    return path not in _plain


def use_plain(paths: Iterable[FastPath]) -> None:
    """Runs the plain implementation instead of each of `paths` (and the fast one of every other) from now on."""
    _plain.clear()
    _plain.update(paths)


@contextlib.contextmanager
def plain(*paths: FastPath) -> Iterator[None]:
    """The plain implementation of `paths` for the duration (equivalence tests, in-process benchmark phases)."""
    before = set(_plain)
    _plain.update(paths)
    try:
        yield
    finally:
        use_plain(before)


def parse(value: str) -> frozenset[FastPath]:
    """A comma-separated list of fast path names (`V2X_PLAIN_PATHS`); `all` names every one. ValueError names the
    unknown ones."""
    names = {n.strip() for n in value.split(",") if n.strip()}
    if names == {"all"}:
        return frozenset(FastPath)
    known = {p.value: p for p in FastPath}
    unknown = sorted(names - set(known))
    if unknown:
        raise ValueError(f"unknown fast paths {unknown}; known: {', '.join(sorted(known))} (or all)")
    return frozenset(known[n] for n in names)
