"""The plot of a `make load` run over time (locust's stats history): users, request rate, and the p99 of camera
frames, drivers' queries and the console's e2e latency (locust's current percentiles, a 10 s window).

    .venv/bin/python load/plot.py load/reports/latest --out docs/load-rush-hour.png
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

# Request types that are round trips (the others are drops, e2e latencies and the municipal lag).
CALLS = ("grpc", "ocpp1.6", "ocpp2.0.1")
CURVES = {
    ("grpc", "roadside.StreamFrames frame"): "camera frame (send -> result)",
    ("grpc", "parking.FindAvailable"): "driver FindAvailable",
    ("grpc", "charging.FindChargers"): "driver FindChargers",
    ("e2e", "console e2e: report -> console"): "console e2e (report -> console)",
}


def plot(report: Path, out: Path, title: str) -> None:
    users: dict[int, int] = {}
    rate: dict[int, float] = defaultdict(float)
    p99: dict[str, dict[int, float]] = defaultdict(dict)
    with (report / "locust_stats_history.csv").open() as f:
        for r in csv.DictReader(f):
            t = int(r["Timestamp"])
            users[t] = int(r["User Count"])
            if r["Type"] in CALLS:
                rate[t] += float(r["Requests/s"])
            label = CURVES.get((r["Type"], r["Name"]))
            if label and r["99%"] not in ("N/A", ""):
                p99[label][t] = float(r["99%"])
    if not users:
        raise SystemExit(f"{report}: no stats history")
    t0 = min(users)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    xs = sorted(users)
    top.plot([(t - t0) / 60 for t in xs], [rate[t] for t in xs], color="tab:blue", label="requests/s (gRPC + OCPP)")
    top.set_ylabel("requests/s")
    twin = top.twinx()
    twin.plot([(t - t0) / 60 for t in xs], [users[t] for t in xs], color="tab:grey", linestyle="--", label="users")
    twin.set_ylabel("users")
    top.legend(loc="upper left")
    twin.legend(loc="upper right")
    top.set_title(title)
    for label, series in p99.items():
        ts = sorted(series)
        bottom.plot([(t - t0) / 60 for t in ts], [series[t] for t in ts], label=label)
    bottom.set_yscale("log")
    bottom.set_ylabel("p99 ms (10 s window, log)")
    bottom.set_xlabel("minutes")
    bottom.legend(loc="upper left", fontsize="small")
    bottom.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report", type=Path, help="a load/reports/<timestamp> folder")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--title", default="make load, rush hour")
    ns = p.parse_args()
    plot(ns.report, ns.out, ns.title)
    print(f"wrote {ns.out}")


if __name__ == "__main__":
    main()
