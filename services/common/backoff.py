"""How long to wait before the next attempt: one rule for every retry loop of the suite."""

from __future__ import annotations

import random


def backoff_s(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with "equal jitter": half the step fixed, half random. `attempt` counts from 1."""
    step = min(cap, base * 2.0 ** min(attempt - 1, 30))
    return step / 2 + rng.uniform(0, step / 2)
