"""Data: the lensing simulator and its writer, DeepLense-format readers, the file scan, and the Drive download.

The names below are imported from their submodules on first use (PEP 562), so ``import d4lenspinn.data`` (and the
command line's ``--help``) does not load torch or h5py until a reader, the simulator or the writer is needed.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..classes import CLASS_ALIASES, CLASS_NAMES

# the one list of this package's public names, by the submodule that defines them
_NAMES_BY_SUBMODULE: dict[str, tuple[str, ...]] = {
    "batch": ("Batch", "batch_loader"),
    "datasets": ("LensingImageDataset",),
    "formats": ("DataError",),
    "download": ("DATASETS", "DatasetSpec", "DownloadError", "cache_root", "dataset_path", "download_dataset"),
    "prepare": ("prepare_data", "prepare_test_data"),
    "presets": ("PRESETS", "FAITHFUL_PRESETS", "BROAD_RANGES", "SimulationPreset", "get_preset"),
    "scan": ("check_data",),
    "scan_report": ("ScanReport",),
    "splits": ("DataSplits", "load_splits", "load_test_split", "split_indices"),
    "simulator": (
        "LensSample",
        "sample_lenses",
        "render_images",
        "true_convergence",
        "substructure_convergence",
        "true_macro_lens",
    ),
    "truth": ("Truth", "TruthTable", "simulation_preset"),
    "writer": ("simulate_dataset", "read_truth"),
}
_SUBMODULE = {name: module for module, names in _NAMES_BY_SUBMODULE.items() for name in names}

__all__ = ["CLASS_NAMES", "CLASS_ALIASES", *_SUBMODULE]


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` on first access and cache the name here."""
    submodule = _SUBMODULE.get(name)
    if submodule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{submodule}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
