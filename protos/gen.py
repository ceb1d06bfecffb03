"""Regenerates the Python stubs (+ .pyi) for every proto under protos/v2x.

Run with `make protos`. `--check DIR` writes into DIR instead, so a test can compare.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent


def _include_dirs() -> list[str]:
    grpc_tools_protos = resources.files("grpc_tools") / "_proto"
    # googleapis-common-protos ships google/rpc/*.proto inside site-packages.
    import google.rpc

    googleapis = Path(next(iter(google.rpc.__path__))).parent.parent
    return [str(ROOT), str(grpc_tools_protos), str(googleapis)]


def generate(out: Path) -> None:
    protos = sorted(p.relative_to(ROOT) for p in (ROOT / "v2x").rglob("*.proto"))
    bindir = Path(sys.executable).parent
    args = ["protoc", *(f"-I{d}" for d in _include_dirs())]
    args += [f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}"]
    args += [f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}"]
    args += [f"--python_out={out}", f"--mypy_out={out}", f"--grpc_python_out={out}", f"--mypy_grpc_out={out}"]
    args += [str(p) for p in protos]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for d in [out / "v2x", *(p for p in (out / "v2x").rglob("*") if p.is_dir())]:
        (d / "__init__.py").touch()
    (out / "v2x" / "py.typed").touch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", type=Path, help="write into this folder instead of protos/")
    ns = parser.parse_args()
    if ns.check:
        generate(ns.check)
        return
    for old in (ROOT / "v2x").rglob("*_pb2*.py*"):
        old.unlink()
    generate(ROOT)
    print(f"generated stubs for {len(list((ROOT / 'v2x').rglob('*.proto')))} protos", file=sys.stderr)


if __name__ == "__main__":
    main()
