"""Compiles services/municipal/fastpath.py with mypyc into services/municipal/_fastpath_native*.so (`make native`).

The compiled module carries the SHA-256 of the source it was built from; services/municipal/native.py runs it only
while that matches (else the source runs, as it does when there is no compiler). A failed build is reported and
leaves the interpreted path in place: it never fails `make deps`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "services" / "municipal"
SOURCE = PACKAGE / "fastpath.py"
NAME = "_fastpath_native"


def build() -> list[Path]:
    """The extension modules built (mypyc makes two: the module and the shared runtime of its group)."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()
    copy = PACKAGE / f"{NAME}.py"  # mypyc names the module after its file; it must sit in the package
    copy.write_text(SOURCE.read_text() + f'\n\nSOURCE_SHA256 = "{digest}"\n')
    try:
        with tempfile.TemporaryDirectory(prefix="v2x-native-") as work:
            env = {**os.environ, "MYPYPATH": str(ROOT)}
            out = Path(work) / "services" / "municipal"
            out.mkdir(parents=True)  # mypyc copies what it built there (relative to where it runs)
            proc = subprocess.run([sys.executable, "-m", "mypyc", "--ignore-missing-imports", str(copy)],
                                  cwd=work, env=env, capture_output=True, text=True, check=False)
            built = sorted(out.glob(f"{NAME}*{suffix}"))
            if proc.returncode != 0 or not built:
                raise RuntimeError(f"mypyc failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
            targets = []
            for path in built:
                target = PACKAGE / path.name
                tmp = target.with_name(target.name + ".tmp")
                shutil.copyfile(path, tmp)
                tmp.replace(target)  # a running process keeps the old file open; new ones get the new one
                targets.append(target)
    finally:
        copy.unlink(missing_ok=True)
    return targets


def main() -> int:
    try:
        targets = build()
    except Exception as exc:  # no compiler, no headers: the interpreted path still works
        print(f"warning: the municipal fast path was not compiled, it runs interpreted: {exc}", file=sys.stderr)
        return 0
    print(f"compiled {SOURCE.relative_to(ROOT)} -> {', '.join(str(t.relative_to(ROOT)) for t in targets)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
