"""Prints the pip requirement that installs the uv of uv.lock, with its hashes (`make` bootstraps uv with it).

The lock is the one place that names uv's version: pip takes uv from here with `--require-hashes`, then uv installs
everything else from the same lock.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

LOCK = Path(__file__).resolve().parents[1] / "uv.lock"


def requirement(lock: Path = LOCK) -> str:
    packages = tomllib.loads(lock.read_text())["package"]
    uv = next((p for p in packages if p["name"] == "uv"), None)
    if uv is None:
        raise SystemExit(f"{lock} has no uv package: add uv to the dev extra and run `make lock`")
    hashes = sorted({w["hash"] for w in uv.get("wheels", []) if "manylinux" in w["url"] and "x86_64" in w["url"]})
    if not hashes:
        raise SystemExit(f"{lock} has no Linux x86_64 wheel of uv {uv['version']}")
    return f"uv=={uv['version']} " + " ".join(f"--hash={h}" for h in hashes)


if __name__ == "__main__":
    print(requirement())
    sys.exit(0)
