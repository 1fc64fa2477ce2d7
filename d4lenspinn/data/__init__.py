"""Data: the lensing simulator and its writer, DeepLense-format readers, and the Drive download and cache."""

from .datasets import (
    CLASS_ALIASES,
    CLASS_NAMES,
    DataError,
    DataSplits,
    LensingImageDataset,
    load_splits,
    split_indices,
)
from .download import DATASETS, DatasetSpec, DownloadError, cache_root, dataset_path, download_dataset
from .presets import PRESETS, SimulationPreset, get_preset
from .simulator import LensSample, render_images, sample_lenses, true_convergence
from .writer import read_truth, simulate_dataset

__all__ = [
    "CLASS_NAMES",
    "CLASS_ALIASES",
    "DataError",
    "DataSplits",
    "LensingImageDataset",
    "load_splits",
    "split_indices",
    "DATASETS",
    "DatasetSpec",
    "DownloadError",
    "cache_root",
    "dataset_path",
    "download_dataset",
    "PRESETS",
    "SimulationPreset",
    "get_preset",
    "LensSample",
    "sample_lenses",
    "render_images",
    "true_convergence",
    "simulate_dataset",
    "read_truth",
]
