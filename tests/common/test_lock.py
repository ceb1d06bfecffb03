"""The lock: uv.lock pins every dependency (with hashes) for what pyproject.toml asks, and the venv holds exactly it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).parent / "uv"


def _uv(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(Path(sys.executable).parent.parent)}
    return subprocess.run([str(UV), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def test_the_lock_agrees_with_pyproject() -> None:
    out = _uv("lock", "--check", "--offline")
    assert out.returncode == 0, f"run `make lock` (or `uv lock`): {out.stderr}"


def test_a_pyproject_that_asks_for_what_the_lock_lacks_fails_the_check(tmp_path: Path) -> None:
    shutil.copy(ROOT / "uv.lock", tmp_path / "uv.lock")
    text = (ROOT / "pyproject.toml").read_text()
    assert '"orjson>=3.10,<4",' in text
    (tmp_path / "pyproject.toml").write_text(text.replace('"orjson>=3.10,<4",', '"orjson>=3.10,<4",\n    "six>=1.16",'))
    out = _uv("lock", "--check", cwd=tmp_path)
    assert out.returncode != 0
    assert "needs to be updated" in out.stderr


def test_the_venv_holds_exactly_the_lock() -> None:
    out = _uv("sync", "--check", "--locked", "--all-extras", "--offline")
    assert out.returncode == 0, f"the venv differs from uv.lock (run `make`): {out.stdout}{out.stderr}"


def test_every_locked_package_is_pinned_with_hashes() -> None:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    unhashed = [p["name"] for p in lock["package"] if p.get("source", {}).get("registry")
                and not all(a.get("hash") for a in [*p.get("wheels", []), *([p["sdist"]] if "sdist" in p else [])])]
    assert not unhashed
    assert all("version" in p for p in lock["package"])


def test_make_bootstraps_the_uv_of_the_lock() -> None:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    version = next(p["version"] for p in lock["package"] if p["name"] == "uv")
    line = subprocess.run([sys.executable, str(ROOT / "infra" / "uv_requirement.py")], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert line.startswith(f"uv=={version} --hash=sha256:")
    assert _uv("--version").stdout.split()[1] == version
