"""The run directory (``config.out``): claimed by one run, never overwritten silently.

    claim_run_dir(Path("runs/demo"), resume=False, overwrite=False)   # ValueError if another run lives there

A fresh run needs a directory without run files (missing or empty is fine; so is one whose run stopped before its
first checkpoint, holding only what a start writes). ``overwrite`` removes the old run's files together (checkpoints,
metrics, evaluation report and figures, interpretability results), so nothing stale describes the new model; other
files are left alone. ``resume`` needs the run's ``last.pt``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["RUN_FILES", "claim_run_dir"]

RUN_FILES = (
    "config.yaml",
    "bad_files.txt",
    "tensorboard",
    "metrics.jsonl",
    "last.pt",
    "best.pt",
    "timing.json",
    "metrics.json",
    "report.md",
    "figures",
    "interp",
)
"""What training, evaluation and interpretation write into a run directory."""

_START_FILES = {"config.yaml", "bad_files.txt", "tensorboard"}  # written before the first epoch


def claim_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Make ``run_dir`` ready for a run; ``ValueError`` when it holds another run (and neither ``resume`` nor
    ``overwrite`` says what to do with it), when ``resume`` finds no ``last.pt``, or when it is a file."""
    if resume and overwrite:
        raise ValueError("--resume continues the run in out, --overwrite replaces it: choose one")
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"out {run_dir} is a file; the run needs a directory")
    if resume:
        if not (run_dir / "last.pt").is_file():
            raise ValueError(f"--resume: no checkpoint {run_dir / 'last.pt'} to continue from")
        return
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if found and not overwrite and not set(found) <= _START_FILES:
        raise ValueError(
            f"out {run_dir} holds another run ({', '.join(found)}): continue it with --resume, choose a new out, "
            "or replace it with --overwrite"
        )
    for name in found:
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
