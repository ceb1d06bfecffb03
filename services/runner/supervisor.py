"""The supervisor of `v2x run`: keeps every process of the suite running.

A process that exits is restarted after a backoff, and its exit (code, or the signal that killed it) is logged; a
native crash says so. Meanwhile its clients see UNAVAILABLE, then the service again. The suite gives up only when
a process fails to start (exits, or does not become ready) `max_failed_starts` times in a row, and says which and
why. Each process is otherwise independent: one that dies does not take the others down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.common.backoff import backoff_s

log = logging.getLogger("v2x.supervisor")

MAX_FAILED_STARTS = 5
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 10.0
READY_TIMEOUT_S = 60.0
STOP_MARGIN_S = 10.0
# A crash is a death by one of these: the process could not say why itself (faulthandler printed its stack).
CRASH_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL, signal.SIGFPE})

Probe = Callable[[], Awaitable[bool]]


class SuiteFailed(RuntimeError):
    """A process failed to start `max_failed_starts` times in a row: the suite cannot run."""


@dataclass(frozen=True)
class ChildSpec:
    """One process of the suite: how to start it and how to tell that it is ready."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    ready: Probe  # True once the process serves (e.g. its gRPC health check says SERVING)


@dataclass(frozen=True)
class Exit:
    at: float  # time.time()
    code: int  # the exit code, or -N for signal N (as subprocess reports it)
    uptime_s: float
    ready: bool  # it had become ready before it exited

    @property
    def signal(self) -> str | None:
        if self.code >= 0:
            return None
        try:
            return signal.Signals(-self.code).name
        except ValueError:
            return f"signal {-self.code}"

    @property
    def crash(self) -> bool:
        return self.code < 0 and -self.code in {int(s) for s in CRASH_SIGNALS}

    def describe(self) -> str:
        how = f"was killed by {self.signal}" if self.signal else f"exited with code {self.code}"
        if self.crash:
            how += " (a native crash; its Python stack is above)"
        return f"{how} after {self.uptime_s:.1f} s"

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "code": self.code, "signal": self.signal, "crash": self.crash,
                "uptime_s": round(self.uptime_s, 3), "ready": self.ready}


@dataclass
class Child:
    spec: ChildSpec
    proc: asyncio.subprocess.Process | None = None
    starts: int = 0
    failed_in_a_row: int = 0
    exits: list[Exit] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def restarts(self) -> int:
        return max(0, self.starts - 1)

    def as_dict(self) -> dict[str, Any]:
        return {"pid": self.proc.pid if self.proc is not None and self.proc.returncode is None else None,
                "starts": self.starts, "restarts": self.restarts, "crashes": sum(e.crash for e in self.exits),
                "exits": [e.as_dict() for e in self.exits[-20:]]}


@dataclass
class Supervisor:
    specs: Sequence[ChildSpec]
    say: Callable[[str], None] = print
    on_change: Callable[[], None] = lambda: None  # after each start and exit (e.g. rewrite the run file)
    max_failed_starts: int = MAX_FAILED_STARTS
    ready_timeout_s: float = READY_TIMEOUT_S
    backoff_base_s: float = BACKOFF_BASE_S
    backoff_cap_s: float = BACKOFF_CAP_S
    rng: random.Random = field(default_factory=random.Random)
    children: dict[str, Child] = field(init=False)
    _tasks: list[asyncio.Task[None]] = field(init=False, default_factory=list)
    _stopping: bool = field(init=False, default=False)
    _failed: asyncio.Future[str] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.children = {s.name: Child(s) for s in self.specs}

    def start(self) -> None:
        """Starts every process, each kept running by a task of its own."""
        self._failed = asyncio.get_running_loop().create_future()
        self._tasks = [asyncio.create_task(self._keep(c), name=f"supervise {c.spec.name}")
                       for c in self.children.values()]

    async def wait_ready(self) -> None:
        """Returns once every process has been ready once; raises SuiteFailed if one gives up first."""
        assert self._failed is not None
        everyone = asyncio.ensure_future(asyncio.gather(*(c.ready.wait() for c in self.children.values())))
        waiters: list[asyncio.Future[Any]] = [everyone, self._failed]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            everyone.cancel()
            await asyncio.gather(everyone, return_exceptions=True)
        if self._failed.done():
            raise SuiteFailed(self._failed.result())

    async def wait_failed(self) -> str:
        """Returns why the suite gave up (waits until it does)."""
        assert self._failed is not None
        return await asyncio.shield(self._failed)

    def state(self) -> dict[str, Any]:
        return {name: c.as_dict() for name, c in self.children.items()}

    async def _keep(self, child: Child) -> None:
        try:
            await self._run(child)
        except Exception as exc:  # a fault of the supervisor itself: nobody keeps this process running any more
            log.exception("supervising %s failed", child.spec.name)
            self._give_up(f"supervising {child.spec.name} failed ({exc!r}); stopping the suite")

    def _give_up(self, reason: str) -> None:
        self.say(f"supervisor: {reason}")
        if self._failed is not None and not self._failed.done():
            self._failed.set_result(reason)

    async def _run(self, child: Child) -> None:
        name = child.spec.name
        while not self._stopping:
            started = time.monotonic()
            child.proc = await asyncio.create_subprocess_exec(*child.spec.argv, env=dict(child.spec.env))
            child.starts += 1
            if child.starts > 1:
                self.say(f"supervisor: {name} restarted (pid {child.proc.pid}, restart {child.restarts})")
            self.on_change()
            became_ready = await self._until_ready(child)
            if became_ready:
                child.failed_in_a_row = 0
                child.ready.set()
                if child.starts > 1:
                    self.say(f"supervisor: {name} serves again")
            code = await child.proc.wait()
            if self._stopping:
                return
            end = Exit(time.time(), code, time.monotonic() - started, became_ready)
            child.exits.append(end)
            if not became_ready:
                child.failed_in_a_row += 1
            self.on_change()
            if not became_ready and child.failed_in_a_row >= self.max_failed_starts:
                self._give_up(f"{name} failed to start {child.failed_in_a_row} times in a row (last: it "
                              f"{end.describe()}); stopping the suite")
                return
            delay = backoff_s(max(1, child.failed_in_a_row + _recent(child.exits)), self.backoff_base_s,
                              self.backoff_cap_s, self.rng)
            what = "did not start: it" if not became_ready else f"(pid {child.proc.pid})"
            self.say(f"supervisor: {name} {what} {end.describe()}; restarting in {delay:.1f} s")
            log.warning("process exited", extra={"child": name, "code": end.code, "signal": end.signal,
                                                 "crash": end.crash, "restart_in_s": round(delay, 2)})
            await asyncio.sleep(delay)

    async def _until_ready(self, child: Child) -> bool:
        """Polls the readiness probe until it says yes (True), or the process exits or takes too long (False; a
        process that is alive but never ready is stopped)."""
        proc = child.proc
        assert proc is not None
        deadline = time.monotonic() + self.ready_timeout_s
        while proc.returncode is None and time.monotonic() < deadline and not self._stopping:
            with contextlib.suppress(Exception):
                if await child.spec.ready():
                    return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(proc.wait()), 0.2)
        if proc.returncode is None and not self._stopping:
            self.say(f"supervisor: {child.spec.name} was not ready within {self.ready_timeout_s:.0f} s; stopping it")
            await _stop([proc], 5.0)
        return False

    def hold(self) -> None:
        """No more restarts from now on. A terminal's Ctrl-C reaches every child at once: one that exits on it while
        the suite is still stopping something else (the simulator first) must not be started again."""
        self._stopping = True

    async def stop(self, grace_s: float) -> None:
        """SIGTERM to every process, then waits; whichever is not gone `grace_s` + a margin later is killed."""
        self.hold()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await _stop([c.proc for c in self.children.values() if c.proc is not None], grace_s + STOP_MARGIN_S)


def _recent(exits: Sequence[Exit], window_s: float = 60.0) -> int:
    """Exits in the last `window_s` seconds beyond the first: a process that keeps dying after it served waits
    longer each time too."""
    now = time.time()
    return max(0, sum(1 for e in exits if now - e.at < window_s) - 1)


async def _stop(procs: Sequence[asyncio.subprocess.Process], within_s: float) -> None:
    for p in procs:
        if p.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), within_s)
    except TimeoutError:
        for p in procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
        await asyncio.gather(*(p.wait() for p in procs))


def python_argv(*args: str) -> list[str]:
    """`v2x ARGS` as a child process of this interpreter."""
    return [sys.executable, "-m", "services.cli", *args]
