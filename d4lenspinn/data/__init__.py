"""Data: DeepLense-format readers, the Drive download and cache, and (soon) the lensing simulator."""

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
]
