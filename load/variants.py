"""The variants an A/B benchmark run (`--ab`) compares: every fast path on, and each fast path of the service
turned off in turn (its plain implementation instead; services/common/fast_paths.py). A variant reaches the
service it starts through `V2X_PLAIN_PATHS`, and this process' own phases (the raw baselines) through
`fast_paths.use_plain`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from load.harness import PhaseResult, load_average
from services.common import fast_paths
from services.common.fast_paths import FastPath


@dataclass(frozen=True)
class Variant:
    name: str
    plain: frozenset[FastPath]

    def env(self) -> dict[str, str]:
        """What the service's environment needs for this variant."""
        return {"V2X_PLAIN_PATHS": ",".join(sorted(p.value for p in self.plain))}

    def apply(self) -> None:
        """This process runs the variant from now on."""
        fast_paths.use_plain(self.plain)


FAST = Variant("fast", frozenset())


def variants(paths: Iterable[FastPath]) -> list[Variant]:
    """Each of `paths` off in turn, each right after a run with every fast path on (the one it is compared with:
    on a shared machine the load drifts between runs far apart)."""
    out: list[Variant] = []
    for p in paths:
        out += [FAST, Variant(f"plain {p.value}", frozenset({p}))]
    return out


Figures = dict[str, dict[str, float | None]]


def figures(phases: dict[str, tuple[PhaseResult, bool]], serving_after_s: float) -> Figures:
    """A variant's figures: per phase (name -> (result, whether the service ran it)) its rate and the CPU per
    operation of the party that runs the fast paths (the service for gRPC phases, this process for raw ones)."""
    out: Figures = {}
    for name, (r, by_service) in phases.items():
        us = r.cpu_us_per_op()
        out[name] = {"rate": round(r.rate), "p99_ms": r.p99_ms,
                     "cpu_us_per_op": us["server"] if by_service else us["client"],
                     "other_cores": r.cpu_cores.get("other")}
    out["start"] = {"serving_after_s": serving_after_s}
    return out


def print_ab(title: str, results: list[tuple[str, Figures]]) -> None:
    """The A/B table: per run and phase, the rate, the CPU per operation and, for a plain variant, its change against
    the run with every fast path on just before it."""
    phases = [k for k in results[0][1] if k != "start"]
    print()
    print(f"{title}; load average at the end {load_average()}")
    head = f"{'variant':<30}" + "".join(f"{p:>27}" for p in phases) + f"{'serving after':>15}"
    print(head)
    print(f"{'':<30}" + "".join(f"{'rate/s  CPU us/op  change':>27}" for _ in phases) + f"{'s':>15}")
    print("-" * len(head))
    fast = results[0][1]
    for name, fig in results:
        if name == FAST.name:
            fast = fig
        cells = ""
        for p in phases:
            f, base = fig[p], fast[p]
            change = ""
            if name != FAST.name and base["cpu_us_per_op"]:
                change = f"{100 * ((f['cpu_us_per_op'] or 0) / (base['cpu_us_per_op'] or 1) - 1):+.0f} %"
            cells += f"{f['rate'] or 0:>9,.0f} {f['cpu_us_per_op'] or 0:>8,.0f} {change:>8}"
        print(f"{name:<30}{cells}{fig['start']['serving_after_s']:>15}")
