"""The one way to get a run's data: simulate (on disk or online), download or open it, check every file, split it.

    splits = prepare_data(config.data, seed=config.seed)      # DataSplits: train/val/test, pixel scale, description

Training, evaluation, the interpretability report and the benchmarks all rebuild their splits here, so a run's test
split is always the same images (same ``data.scheme``, ``skip_bad`` and seed). The pixel scale comes from the data:
the simulation preset, the named dataset's instrument, or the ``manifest.json`` our simulator writes beside its
images; ``data.pixel_scale`` sets it for other data, and contradicting what the data says is an error. For our own
simulations the splits carry the simulator's truth (:class:`~d4lenspinn.data.truth.TruthTable`, ``splits.truth``).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

from ..config import DataConfig
from .download import DATASETS, download_dataset
from .formats import DataError
from .online import SIMULATE_ONLINE, online_splits
from .presets import get_preset
from .splits import DataSplits, load_splits, load_test_split
from .truth import TruthTable, simulation_preset
from .writer import check_simulation, simulate_dataset

__all__ = ["prepare_data", "prepare_test_data"]


def prepare_data(data: DataConfig, seed: int) -> DataSplits:
    """Simulate (once), download (once) or open ``data.source``, check every file and split it with ``seed``.

    A complete simulation already in ``data.root`` is reused only if it was made with the same preset, counts and
    seed; otherwise this is a ``ValueError`` (never silently the wrong data). Bad files fail here, all named in one
    :class:`~d4lenspinn.data.DataError`, before any training step (or are dropped with ``data.skip_bad``)."""
    n_val = data.n_val_per_class if data.n_val_per_class is not None else max(1, data.n_per_class // 4)
    if data.source == SIMULATE_ONLINE:
        preset = get_preset(data.preset)
        scale = _pixel_scale(preset.pixel_scale, data.pixel_scale, SIMULATE_ONLINE)
        return replace(online_splits(preset, data.n_per_class, n_val, seed, scale), prior=preset.training_prior())
    if data.source == "simulate":
        root = Path(data.root)
        if root.exists() and not root.is_dir():
            raise DataError(f"data.root {root}: is a file; expected a folder for the simulated data")
        preset = get_preset(data.preset)
        manifest = root / "manifest.json"
        if manifest.exists() and json.loads(manifest.read_text()).get("complete"):
            check_simulation(root, preset, data.n_per_class, data.n_val_per_class, seed=seed)  # the same data?
        else:
            simulate_dataset(root, preset, data.n_per_class, data.n_val_per_class, seed=seed)
        source, known_scale = root, preset.pixel_scale
        description = (
            f"simulated preset {preset.name}, {data.n_per_class}/class in train/ and {n_val}/class in val/, "
            f"seed {seed} ({root})"
        )
    elif data.source in DATASETS:
        spec = DATASETS[data.source]
        source, known_scale = download_dataset(data.source), spec.pixel_scale
        description = f"dataset {spec.name} ({spec.description})"
    else:
        source = Path(data.source)
        preset = simulation_preset(source)
        known_scale = None if preset is None else preset.pixel_scale
        description = f"images under {source}"
    prior = None if data.source in DATASETS or preset is None else preset.training_prior()
    pixel_scale = _pixel_scale(known_scale, data.pixel_scale, source)
    splits = load_splits(source, scheme=data.scheme, seed=seed, skip_bad=data.skip_bad)
    description += f", split {data.scheme}"
    read: dict = {}  # the three splits share their truth file: read it once
    tables = {name: TruthTable.for_dataset(getattr(splits, name), source, read) for name in ("train", "val", "test")}
    truth = tables if tables["train"] is not None else None  # an empty split has no table
    return replace(splits, pixel_scale=pixel_scale, description=description, truth=truth, prior=prior)


def prepare_test_data(
    source: str | Path, split: str = "auto", skip_bad: bool = False, pixel_scale: float | None = None
) -> DataSplits:
    """Every labelled image of ``source`` as a test set (:func:`~d4lenspinn.data.splits.load_test_split`: by
    default its ``val/``, the DeepLense layout, else every class folder), with the pixel scale the source records
    (or ``pixel_scale``) and, for our simulations, the truth (``truth["test"]``)."""
    splits = load_test_split(source, split, skip_bad=skip_bad)
    preset = simulation_preset(source)
    scale = _pixel_scale(None if preset is None else preset.pixel_scale, pixel_scale, source)
    truth = TruthTable.for_dataset(splits.test, source)
    description = f"images under {source} (split {split})"
    return replace(splits, pixel_scale=scale, description=description, truth=None if truth is None else {"test": truth})


def _pixel_scale(known: float | None, configured: float | None, source: str | Path) -> float | None:
    if configured is None:
        return known
    if not configured > 0:
        raise ValueError(f"data.pixel_scale must be > 0 arcsec per pixel, got {configured}")
    if known is not None and not math.isclose(known, configured, rel_tol=1e-6):
        raise ValueError(
            f"data.pixel_scale {configured} arcsec/pixel contradicts the {known} arcsec/pixel that {source} records"
        )
    return configured
