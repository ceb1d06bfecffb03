"""Documents the code cites are in the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CITED = re.compile(r"\b((?:docs|load|models|services/[a-z_/]+)/[A-Za-z_]+\.md)\b")


def test_every_markdown_file_the_code_and_protos_cite_exists() -> None:
    sources = [*ROOT.glob("services/**/*.py"), *ROOT.glob("protos/**/*.proto"), *ROOT.glob("tests/**/*.py"),
               *ROOT.glob("load/*.py"), ROOT / "README.md"]
    missing = sorted({f"{p.relative_to(ROOT)}: {m}" for p in sources for m in CITED.findall(p.read_text())
                      if not (ROOT / m).is_file()})
    assert not missing, missing
    assert (ROOT / "docs" / "DOMAIN.md").is_file() and (ROOT / "docs" / "ARCHITECTURE.md").is_file()
