"""The committed stubs are what `make protos` generates from the committed .proto files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "protos" / "gen.py"), "--check", str(tmp_path)], check=True,
                   capture_output=True)
    generated = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "v2x").rglob("*_pb2*.py*")}
    committed = {p.relative_to(ROOT / "protos"): p.read_bytes() for p in (ROOT / "protos" / "v2x").rglob("*_pb2*.py*")}
    assert generated, "protoc generated nothing"
    stale = sorted(str(p) for p in generated if committed.get(p) != generated[p])
    extra = sorted(str(p) for p in set(committed) - set(generated))
    assert not stale and not extra, f"run `make protos`: stale {stale}, without a .proto {extra}"


def test_every_rpc_field_and_enum_value_is_commented() -> None:
    from google.protobuf import descriptor_pb2

    missing: list[str] = []
    for proto in sorted((ROOT / "protos" / "v2x").rglob("*.proto")):
        text = proto.read_text()
        lines = text.splitlines()
        for i, line in enumerate(lines):
            s = line.strip()
            if (s.startswith(("rpc ", "message ", "enum ", "service ")) or
                    (s.endswith(";") and "=" in s and not s.startswith(("option", "syntax", "package", "import")))):
                prev = lines[i - 1].strip() if i else ""
                if not prev.startswith("//"):
                    missing.append(f"{proto.name}:{i + 1}: {s}")
    assert descriptor_pb2  # the descriptor module imports: protobuf is usable
    assert not missing, "uncommented:\n" + "\n".join(missing[:20])
