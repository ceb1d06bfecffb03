"""The municipal adapter in `v2x run`: a local platform emulator to deliver to, and what to print."""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp

from services.common.config import Settings
from services.municipal.status_report import StatusClient, report_lag

READY_TIMEOUT_S = 60.0
# How often `v2x run` prints the adapter's lag (one line for all destinations).
LAG_REPORT_INTERVAL_S = 30.0


def demo_platform_env(port: int) -> tuple[dict[str, str], dict[str, str]]:
    """What `v2x run` needs to run `v2x platform-emulator --port PORT` for the adapter: the emulator's environment and
    the adapter's settings to deliver to it (a municipal JSON and an NGSI-LD destination, one fresh shared secret)."""
    secret = secrets.token_hex(24)
    base = f"http://127.0.0.1:{port}"
    destinations = [
        {"name": "city", "url": f"{base}/municipal/v1/records", "profile": "municipal_json",
         "secret_env": "V2X_DEMO_PLATFORM_SECRET", "rate_limit_rps": 2000},
        {"name": "city-fiware", "url": f"{base}/ngsi-ld/v1/entityOperations/upsert", "profile": "ngsi_ld",
         "secret_env": "V2X_DEMO_PLATFORM_SECRET", "rate_limit_rps": 2000},
    ]
    return ({"V2X_EMULATOR_SECRET": secret},
            {"V2X_MUNICIPAL_DESTINATIONS": json.dumps(destinations), "V2X_DEMO_PLATFORM_SECRET": secret})


async def emulator_ready(port: int) -> bool:
    """The platform emulator on `port` answers its health check."""
    with contextlib.suppress(aiohttp.ClientError, OSError):
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz",
                                                             timeout=aiohttp.ClientTimeout(total=2)) as r:
            return r.status == 200
    return False


def v2x_command() -> str:
    """How to call this `v2x` from another terminal: `v2x` when that is it on PATH, else its full path."""
    script = Path(sys.argv[0]) if Path(sys.argv[0]).name == "v2x" else Path(sys.executable).parent / "v2x"
    if not script.is_file():
        return f"{sys.executable} -m services.cli"
    on_path = shutil.which("v2x")
    if on_path is not None and Path(on_path).resolve() == script.resolve():
        return "v2x"
    return str(script.absolute())


def municipal_banner(settings: Settings, emulator_port: int | None) -> str:
    lines = ["municipal adapter (delivers every parking and charging change to the city platform):",
             "  status per destination (lag in records and seconds, delivered, dead letters, paused, last error):",
             f"  {v2x_command()} municipal-status      (the lag is also printed here every "
             f"{LAG_REPORT_INTERVAL_S:.0f} s)",
             f"  lag gauges: curl -s http://127.0.0.1:{settings.metrics_ports['municipal']}/metrics "
             "| grep v2x_municipal_lag"]
    if emulator_port is not None:
        lines += [f"  platform emulator: curl -s http://127.0.0.1:{emulator_port}/_admin/state   "
                  f"make it fail: curl -X PUT -d '{{\"fail_rate\": 0.3}}' "
                  f"http://127.0.0.1:{emulator_port}/_admin/faults"]
    return "\n".join(lines)


async def report_municipal_lag(settings: Settings, admin_key: str, say: Callable[[str], None], *,
                               interval_s: float = LAG_REPORT_INTERVAL_S) -> None:
    """`v2x run`'s lag reporter, until cancelled: says the lag every `interval_s`."""
    async with StatusClient(f"127.0.0.1:{settings.ports['municipal']}", admin_key) as client:
        await report_lag(client, say, interval_s)
