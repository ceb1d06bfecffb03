"""Which implementation of services/municipal/fastpath.py runs: the mypyc-compiled one when it was built from
the current source, else the source itself.

`make native` (part of `make deps`) compiles fastpath.py as the extension module `_fastpath_native`, with the
SHA-256 of the source it was built from. A stale build (fastpath.py edited since) is never used: it would run
code that is no longer in the repository.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from pathlib import Path
from types import ModuleType

from services.municipal import fastpath as source

log = logging.getLogger("v2x.municipal")

SOURCE = Path(source.__file__)
NATIVE_NAME = "services.municipal._fastpath_native"


def source_sha256() -> str:
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()


def load() -> tuple[ModuleType, str]:
    """The module to run and why it was chosen."""
    try:
        native = importlib.import_module(NATIVE_NAME)
    except ImportError:
        return source, "not built (`make native` compiles it)"
    if getattr(native, "SOURCE_SHA256", None) != source_sha256():
        return source, "the compiled module is stale (fastpath.py changed since `make native`)"
    return native, "compiled with mypyc"


fastpath, reason = load()
COMPILED = fastpath is not source
if not COMPILED:
    log.debug("municipal fast path runs interpreted: %s", reason)
