"""The simulator is a client from outside: services/ imports nothing from roadside_sim/, and roadside_sim/ imports
nothing from services/ (only the contracts: the generated v2x.* stubs). Every import counts, lazy ones inside
functions included. `v2x sim` reaches the simulator by running `python -m roadside_sim` (services/cli.py), not by
importing it, so there is no exception."""

from __future__ import annotations

import ast
from pathlib import Path

from roadside_sim.scene import KEY_COLOURS as SIM_COLOURS
from services.roadside.keycolour import KEY_COLOURS as SERVICE_COLOURS

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, at any depth; relative imports resolved to absolute names."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            out.append((node.lineno, module))
            out += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return out


def crossings(folder: str, forbidden: str) -> list[str]:
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for line, module in imported_modules(path):
            if module == forbidden or module.startswith(forbidden + "."):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return found


def test_services_import_nothing_from_the_simulator() -> None:
    assert crossings("services", "roadside_sim") == []


def test_the_simulator_imports_nothing_from_services() -> None:
    assert crossings("roadside_sim", "services") == []


def test_the_import_check_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    sample = ROOT / "roadside_sim" / "_boundary_probe_does_not_exist.py"
    source = ("def f() -> None:\n    from services.roadside import detector\n    import services.cli\n"
              "from . import scene\n")
    tree_modules = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom | ast.Import):
            tree_modules.append(node)
    assert len(tree_modules) == 3
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    # imported_modules works on files under ROOT; check it on a copy placed where the simulator lives.
    assert not sample.exists()
    sample.write_text(source)
    try:
        modules = [m for _, m in imported_modules(sample)]
        assert "services.roadside" in modules and "services.cli" in modules and "roadside_sim.scene" in modules
        assert any("services" in c for c in crossings("roadside_sim", "services"))
    finally:
        sample.unlink()


def test_the_demo_key_colours_agree_on_both_sides() -> None:
    assert {str(k): v for k, v in SIM_COLOURS.items()} == {str(k): v for k, v in SERVICE_COLOURS.items()}
