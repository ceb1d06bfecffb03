"""The boundaries between packages run one way.

- `services/common` serves every service and imports none of them.
- A service package (parking, charging, idps, roadside, municipal) imports `services.common` and itself, never
  another service: services meet over their contracts (gRPC, the Redis streams, the outbox), not over code.
- The web console (`services/console`) is a client of the services: it imports `services.common`, the generated
  protos and itself, never a service's code, and no datastore but Redis for its own sign-ins (in `sessions.py`
  only); and nothing but the composition roots imports it.
- The composition roots (`services/cli.py`, `services/registry.py`, `services/runner/`) may import any service.
- A service reads another service's data only through that service's published read model (views named
  `<service>_read_*`), never its tables.
Every import counts, also one inside a function.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("parking", "charging", "idps", "roadside", "municipal")
# A table named right after FROM, JOIN, INTO or UPDATE (columns such as charging's `parking_lot_id` do not count).
TABLE_PREFIXES = {s: re.compile(rf"\b(?:FROM|JOIN|INTO|UPDATE)\s+({s}_(?!read_)[a-z_]+)\b", re.IGNORECASE)
                  for s in SERVICES}


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "services" else None


def test_common_imports_no_service() -> None:
    bad = [f"{p.relative_to(ROOT)}:{line} imports {m}"
           for p in sorted((ROOT / "services" / "common").rglob("*.py"))
           for line, m in _imports(p) if _package(m) not in (None, "common")]
    assert not bad, bad


def test_a_service_imports_no_other_service() -> None:
    bad = []
    for service in SERVICES:
        for p in sorted((ROOT / "services" / service).rglob("*.py")):
            for line, m in _imports(p):
                other = _package(m)
                if other is not None and other not in ("common", service):
                    bad.append(f"{p.relative_to(ROOT)}:{line} imports {m}")
    assert not bad, bad


# The console's own state: its sign-ins, shared by its replicas (services/console/sessions.py). Not the services' data.
CONSOLE_SESSIONS = ROOT / "services" / "console" / "sessions.py"


def test_the_console_imports_only_common_the_protos_and_itself() -> None:
    bad = [f"{p.relative_to(ROOT)}:{line} imports {m}"
           for p in sorted((ROOT / "services" / "console").rglob("*.py"))
           for line, m in _imports(p) if _package(m) not in (None, "common", "console")
           # nor a datastore: it reaches data only through the services' rpcs, with the caller's key; Redis holds
           # its sessions, and only the sessions' module may speak to it
           or m.split(".")[0] in ("sqlalchemy", "asyncpg")
           or (m.split(".")[0] == "redis" and p != CONSOLE_SESSIONS)]
    assert not bad, bad


def test_no_service_imports_the_console() -> None:
    bad = [f"{p.relative_to(ROOT)}:{line} imports {m}"
           for service in (*SERVICES, "common")
           for p in sorted((ROOT / "services" / service).rglob("*.py"))
           for line, m in _imports(p) if _package(m) == "console"]
    assert not bad, bad


def test_a_service_reads_no_other_services_tables() -> None:
    bad = []
    for service in SERVICES:
        for p in sorted((ROOT / "services" / service).rglob("*.py")):
            text = p.read_text()
            for other, pattern in TABLE_PREFIXES.items():
                if other == service:
                    continue
                for m in pattern.finditer(text):
                    line = text.count("\n", 0, m.start()) + 1
                    bad.append(f"{p.relative_to(ROOT)}:{line} reads {m.group(1)}")
    assert not bad, bad


def test_the_rules_would_see_a_crossing() -> None:
    # The checks above read what they are meant to read: a function-level import and a table in SQL.
    probe = ast.parse("def f():\n    from services.parking.store import ParkingStore\n")
    assert [n.module for n in ast.walk(probe) if isinstance(n, ast.ImportFrom)] == ["services.parking.store"]
    assert TABLE_PREFIXES["parking"].search("SELECT 1 FROM parking_spots")
    assert not TABLE_PREFIXES["parking"].search("SELECT 1 FROM parking_read_spots")
