"""The municipal adapter in `v2x run`: a local platform emulator to deliver to, and what to print."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from services.common.config import Settings
from services.municipal.status_report import AdminAccess, StatusClient, remove_access, report_lag, run_file, save_access

READY_TIMEOUT_S = 60.0
# How often `v2x run` prints the adapter's lag (one line for all destinations).
LAG_REPORT_INTERVAL_S = 30.0


def _spawn_emulator(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "services.cli", "platform-emulator", "--port", str(port)], env=env)


async def start_demo_platform(env: dict[str, str], port: int) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """Starts `v2x platform-emulator` and returns it with the adapter's settings to deliver to it: a municipal
    JSON and an NGSI-LD destination, one fresh shared secret."""
    secret = secrets.token_hex(24)
    proc = _spawn_emulator({**env, "V2X_EMULATOR_SECRET": secret}, port)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with aiohttp.ClientSession() as http:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{base}/healthz") as r:
                    if r.status == 200:
                        break
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"the platform emulator did not start on port {port}")
            await asyncio.sleep(0.1)
    destinations = [
        {"name": "city", "url": f"{base}/municipal/v1/records", "profile": "municipal_json",
         "secret_env": "V2X_DEMO_PLATFORM_SECRET", "rate_limit_rps": 2000},
        {"name": "city-fiware", "url": f"{base}/ngsi-ld/v1/entityOperations/upsert", "profile": "ngsi_ld",
         "secret_env": "V2X_DEMO_PLATFORM_SECRET", "rate_limit_rps": 2000},
    ]
    return proc, {"V2X_MUNICIPAL_DESTINATIONS": json.dumps(destinations), "V2X_DEMO_PLATFORM_SECRET": secret}


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
                               interval_s: float = LAG_REPORT_INTERVAL_S, path: Path | None = None) -> None:
    """`v2x run`'s lag reporter, until cancelled: leaves the adapter's address and the demo admin key where
    `v2x municipal-status` finds them (removed again when cancelled), and says the lag every `interval_s`."""
    target = f"127.0.0.1:{settings.ports['municipal']}"
    path = path or run_file()
    pid = os.getpid()
    try:
        save_access(AdminAccess(target, admin_key, pid), path)
    except OSError as exc:
        say(f"could not leave the admin key for `v2x municipal-status` in {path} ({exc}); give it "
            f"--key {admin_key}")
    try:
        async with StatusClient(target, admin_key) as client:
            await report_lag(client, say, interval_s)
    finally:
        remove_access(path, pid)
