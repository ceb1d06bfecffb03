"""The command line of `v2x platform-emulator` (kept apart so that `v2x` starts without importing aiohttp)."""

from __future__ import annotations

import argparse
from pathlib import Path

from services.municipal.signing import DEFAULT_TOLERANCE_S


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8700, help="port (default 8700; 0 = any free port)")
    p.add_argument("--secret", action="append", default=[],
                   help="an HMAC secret to accept (repeat for rotation; or V2X_EMULATOR_SECRET)")
    p.add_argument("--max-skew-s", type=float, default=DEFAULT_TOLERANCE_S,
                   help="refuse request timestamps further than this from our clock (default 300)")
    p.add_argument("--fail-rate", type=float, default=0.0, help="share of requests answered HTTP 500")
    p.add_argument("--fail-after-store", type=float, default=0.5,
                   help="share of those 500s given after the records were stored (default 0.5)")
    p.add_argument("--latency-ms", type=float, default=0.0, help="latency added to every answer")
    p.add_argument("--latency-jitter-ms", type=float, default=0.0, help="random extra latency, up to this")
    p.add_argument("--drop-rate", type=float, default=0.0, help="share of connections dropped without an answer")
    p.add_argument("--outage-at", type=float, default=0.0, help="an outage starts this many seconds after start")
    p.add_argument("--outage-for", type=float, default=0.0, help="outage length in seconds (0 = none)")
    p.add_argument("--outage-mode", choices=("503", "drop"), default="503", help="answer outages 503, or drop")
    p.add_argument("--store", type=Path, help="also append received records to this JSON-lines file")
    p.add_argument("--admin-token", default="",
                   help="require this bearer token on /_admin/ (or V2X_EMULATOR_ADMIN_TOKEN)")
    p.add_argument("--seed", type=int, help="seed of the failure dice")
    p.add_argument("--tls-cert", type=Path,
                   help="serve https with this PEM certificate chain (leaf first; needs --tls-key)")
    p.add_argument("--tls-key", type=Path, help="the PEM private key of --tls-cert")
    p.add_argument("--standards", type=Path,
                   help="the published schemas' folder (default: ../shared/standards beside the checkout, or "
                        "V2X_STANDARDS_DIR); DATEX II bodies are checked against its XSD and answered 400 when invalid")
    p.add_argument("--no-schema-check", action="store_true", help="do not check DATEX II bodies against the XSD")
