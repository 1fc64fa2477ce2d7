"""The command line's help is light: ``--help`` of the command and of every sub-command imports no heavy library."""

import subprocess
import sys
from pathlib import Path

import pytest

from d4lenspinn.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "escnn", "captum", "sklearn", "timm", "h5py", "matplotlib", "scipy")


def _sub_commands() -> list[str]:
    parser = build_parser()
    (sub,) = [action for action in parser._actions if action.__class__.__name__ == "_SubParsersAction"]
    return sorted(sub.choices)


def _imported_packages(stderr: str) -> set[str]:
    """Top-level packages in ``-X importtime`` output (``import time: self | cumulative | package.module``)."""
    lines = [line for line in stderr.splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in lines[1:]}  # lines[0] is the header


def test_sub_commands_are_discovered():
    assert {"simulate", "download", "train", "evaluate", "interp"} <= set(_sub_commands())


@pytest.mark.parametrize("command", [[], *([name] for name in _sub_commands())], ids=lambda c: " ".join(c) or "-")
def test_help_imports_no_heavy_library(command):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "d4lenspinn", *command, "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage: d4lenspinn" in result.stdout
    imported = _imported_packages(result.stderr)
    assert "d4lenspinn" in imported  # the importtime output was parsed
    assert not imported & set(HEAVY), f"d4lenspinn {' '.join(command)} --help imports {sorted(imported & set(HEAVY))}"
