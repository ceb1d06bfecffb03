"""The municipal adapter in `v2x run`: a local platform emulator to deliver to, and what to print."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import subprocess
import sys
import time

import aiohttp

from services.common.config import Settings

READY_TIMEOUT_S = 60.0


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


def municipal_banner(settings: Settings, admin_key: str, emulator_port: int | None) -> str:
    port = settings.ports["municipal"]
    lines = ["municipal adapter (delivers every parking and charging change to the city platform):",
             "  status, with the lag in records and seconds per destination:",
             f"  grpcurl -plaintext -H 'authorization: Bearer {admin_key}' -d '{{}}' "
             f"127.0.0.1:{port} v2x.municipal.v1.MunicipalAdminService/GetStatus",
             f"  lag gauges: curl -s http://127.0.0.1:{settings.metrics_ports['municipal']}/metrics "
             "| grep v2x_municipal_lag"]
    if emulator_port is not None:
        lines += [f"  platform emulator: curl -s http://127.0.0.1:{emulator_port}/_admin/state   "
                  f"make it fail: curl -X PUT -d '{{\"fail_rate\": 0.3}}' "
                  f"http://127.0.0.1:{emulator_port}/_admin/faults"]
    return "\n".join(lines)
