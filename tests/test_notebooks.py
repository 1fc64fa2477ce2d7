"""The notebooks in notebooks/: each runs end to end in tiny mode, and each is stored without outputs."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = ("01_training", "02_controls", "03_interpretability")


def parameter_cells(notebook) -> list:
    return [cell for cell in notebook.cells if "parameters" in cell.get("metadata", {}).get("tags", [])]


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_tiny_mode(name, tmp_path):
    path = NOTEBOOK_DIR / f"{name}.ipynb"
    assert path.is_file(), f"{path} is missing"
    notebook = nbformat.read(path, as_version=4)
    cells = parameter_cells(notebook)
    assert len(cells) == 1, f"{path.name} needs exactly one code cell tagged 'parameters', found {len(cells)}"
    cells[0].source = f"TINY = True\nWORKDIR = {str(tmp_path)!r}\n"  # other parameters keep their defaults
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the failing cell and traceback, on any error
    assert (tmp_path / "runs").is_dir()  # the runs went into WORKDIR, not the repository


@pytest.mark.parametrize("path", sorted(NOTEBOOK_DIR.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_is_stored_clean(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {index} has outputs: clear them before committing"
            assert cell.execution_count is None, f"{path.name} cell {index} has an execution count"
    assert len(parameter_cells(notebook)) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
    assert notebook.metadata.get("kernelspec", {}).get("name") == "python3"


def test_every_notebook_is_tested():
    assert sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)
