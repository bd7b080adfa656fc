"""The package's imports run one way: no module reaches into another's private names, and
no two modules import each other, not even through an import inside a function."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lmreport"


def _imports() -> list[tuple[str, str, list[str]]]:
    """(importing module, imported module, names) for every relative import in the package."""
    found = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    found.append((path.stem, node.module, [a.name for a in node.names]))
                else:  # from . import grid, report
                    found.extend((path.stem, a.name, []) for a in node.names)
    return found


def test_the_scan_sees_the_package_imports():
    edges = {(a, b) for a, b, _ in _imports()}
    # a few imports the package is known to make, so a scan that finds nothing fails
    assert {("grid", "config"), ("report", "files"), ("cli", "grid")} <= edges


def test_no_module_imports_another_modules_private_names():
    private = [f"{a} imports {name} from {b}" for a, b, names in _imports()
               for name in names if name.startswith("_")]
    assert not private, "; ".join(private)


def test_no_two_modules_import_each_other():
    edges = {(a, b) for a, b, _ in _imports() if a != b}
    cycles = sorted(f"{a} <-> {b}" for a, b in edges if (b, a) in edges and a < b)
    assert not cycles, ", ".join(cycles)
