"""The rush hour: the district's cameras, consoles and the platform administrator stay on, while drivers, operators'
systems and chargers ramp up to the plan's counts, hold, and ramp down (load/README.md).

    locust -f load/rush_hour.py --headless ...        (`make load LOAD_SHAPE=rush`)

Phases, as shares of the run (LOAD_SECONDS): a quiet start at 20 % of the peak for 10 %, the ramp up over 25 %,
the peak for 35 %, the ramp down over 20 %, quiet again for the last 10 %.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from locust import LoadTestShape

from load.locustfile import (
    USERS,
    Camera,
    ChargePoint,
    Driver,
    Operator,
    PlatformAdmin,
    PoliceConsole,
)
from load.users.common import plan

__all__ = ["Camera", "ChargePoint", "Driver", "Operator", "PlatformAdmin", "PoliceConsole", "RushHour"]
ALWAYS_ON = ("Camera", "PoliceConsole", "PlatformAdmin")
QUIET = 0.2
# (end of the phase as a share of the run, share of the peak at its start, at its end)
PHASES = ((0.10, QUIET, QUIET), (0.35, QUIET, 1.0), (0.70, 1.0, 1.0), (0.90, 1.0, QUIET), (1.0, QUIET, QUIET))

# The ramped classes are spread by weight over the users beyond the fixed ones.
for _name, _cls in USERS.items():
    if _name not in ALWAYS_ON:
        _cls.weight = max(1, _cls.fixed_count)
        _cls.fixed_count = 0
del _name, _cls  # locust takes every User class among this module's names: no second name for one


def peak_share(t: float) -> float:
    """The share of the peak of the ramped users at `t` (0..1 of the run)."""
    start = 0.0
    for end, a, b in PHASES:
        if t <= end:
            return a + (b - a) * (t - start) / (end - start)
        start = end
    return QUIET


class RushHour(LoadTestShape):
    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        counts = plan().counts
        self.seconds = float(os.environ.get("LOAD_SECONDS", "120"))
        self.fixed = sum(counts.get(n, 0) for n in ALWAYS_ON)
        self.ramped = sum(v for n, v in counts.items() if n not in ALWAYS_ON)

    def tick(self) -> tuple[int, float] | None:
        t = self.get_run_time()  # type: ignore[no-untyped-call]
        if t >= self.seconds:
            return None
        users = self.fixed + max(1, round(self.ramped * peak_share(t / self.seconds)))
        return users, max(1.0, self.ramped / 10)
