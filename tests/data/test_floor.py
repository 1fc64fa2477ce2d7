"""The data floor's structure: submodules import one another in one direction, and the file readers need no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import d4lenspinn.data

DATA = Path(d4lenspinn.data.__file__).parent


def _sibling_imports(path: Path) -> set[str]:
    """The ``d4lenspinn.data`` submodules ``path`` imports (``from .x import ...``), at any depth of the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names.update([node.module] if node.module else [alias.name for alias in node.names])
    return names


def test_no_import_cycle_among_data_modules():
    graph = {path.stem: _sibling_imports(path) for path in DATA.glob("*.py") if path.stem != "__init__"}
    done: set[str] = set()

    def visit(module: str, stack: tuple[str, ...]) -> None:
        assert module not in stack, f"import cycle: {' -> '.join((*stack, module))}"
        if module in done:
            return
        for imported in graph.get(module, ()):
            visit(imported, (*stack, module))
        done.add(module)

    for module in graph:
        visit(module, ())
    assert graph["formats"] == set() and graph["npy"] == {"formats"} and graph["layout"] == {"formats"}


def test_file_readers_load_without_torch():
    modules = ["formats", "npy", "layout", "scan_report", "inputs"]
    code = "; ".join([*(f"import d4lenspinn.data.{m}" for m in modules), "import sys; print('torch' in sys.modules)"])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
