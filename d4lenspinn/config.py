"""Run configuration: nested dataclasses loaded from YAML and overridden from the command line.

    config = load_config("configs/demo.yaml", overrides=["optim.lr=3e-4", "model.name=resnet18"])
    save_config(config, run_dir / "config.yaml")

Unknown keys are errors that list the valid ones, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import logging
import math
import types
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from .io import write_text

logger = logging.getLogger(__name__)

__all__ = [
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "LossConfig",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "save_config",
]


@dataclass
class DataConfig:
    """Where the images come from and how they are split and batched."""

    # "simulate" (written once to root), "simulate-online" (fresh images every epoch, nothing on disk), a folder /
    # .h5 path, or a named dataset (d4lenspinn download)
    source: str = "simulate"
    root: str = "data/simulated"  # where "simulate" writes (and reuses) its dataset
    preset: str = "model_ii"  # simulation preset, for the simulate sources (model_i, model_ii, model_iii, *_broad)
    n_per_class: int = 600  # simulated training images per class (online: per epoch)
    n_val_per_class: int | None = None  # simulated "val/" images per class (default n_per_class / 4; online: the
    # validation and the test set each)
    scheme: str = "80/10/10"  # split of train/ (or "official": val/ is the test set)
    batch_size: int = 32
    num_workers: int = 0
    augment: bool = True  # random D4 element per training image
    skip_bad: bool = False  # drop unreadable / non-finite files with a warning instead of failing
    pixel_scale: float | None = None  # arcsec/pixel of the images; default: the preset's, dataset's or manifest's

    def __post_init__(self) -> None:
        _check_at_least(self, "data.", batch_size=1, n_per_class=1, num_workers=0)
        if self.n_val_per_class is not None:
            _check_at_least(self, "data.", n_val_per_class=1)
        if self.pixel_scale is not None and not (_is_number(self.pixel_scale) and self.pixel_scale > 0):
            raise ValueError(f"data.pixel_scale must be a number > 0 [arcsec/pixel], got {self.pixel_scale!r}")


@dataclass
class ModelConfig:
    name: str = "d4lenspinn"  # any name from `d4lenspinn models`
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to create_model


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay, per step."""

    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    grad_clip: float = 1.0  # max global gradient norm; 0 disables
    label_smoothing: float = 0.0
    amp: bool = True  # bfloat16 autocast on CUDA; CPU always runs float32
    early_stopping_patience: int = 5  # epochs without a better validation macro AUC

    def __post_init__(self) -> None:
        _check_at_least(self, "optim.", epochs=1, early_stopping_patience=1)
        for name in ("lr", "weight_decay", "warmup_epochs", "grad_clip", "label_smoothing"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0 or (name == "lr" and value == 0):
                bound = "> 0" if name == "lr" else ">= 0"
                raise ValueError(f"optim.{name} must be a finite number {bound}, got {value!r}")
        if self.label_smoothing >= 1:
            raise ValueError(f"optim.label_smoothing must be below 1, got {self.label_smoothing!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_at_least(section: Any, where: str, **minimum: int) -> None:
    """Each named integer field of ``section`` is at least its ``minimum`` (a setting below it trains nothing)."""
    for name, lowest in minimum.items():
        value = getattr(section, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            raise ValueError(f"{where}{name} must be an integer >= {lowest}, got {value!r}")


@dataclass
class LossConfig:
    """The loss: a weight per loss term, by term name, and the schedule.

    ``weights``: term name -> weight (a finite number >= 0; 0 switches the term off) for the terms declared in
    :mod:`d4lenspinn.losses.terms` (``tv``, ``l1``, ``centre``, ``poisson``, ``relensing``, ``consistency``,
    ``macro``, ``substructure``); a term not named keeps its declared default weight. The names are checked against
    the declared terms by :class:`d4lenspinn.losses.Objective`, which the trainer builds before it prepares the data
    (the declarations live with their torch code; this module loads no torch). Schedule: a lens phase of
    ``lens_epochs`` epochs (the weighted terms without the cross-entropy: the lens is learned first), then every term.

    In a config file and on the command line the weights sit beside the schedule keys: ``loss.macro=1.0``,
    ``loss.lens_epochs=2`` (:meth:`from_flat`, :meth:`to_flat`).
    """

    weights: dict[str, float] = field(default_factory=dict)
    lens_epochs: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.weights, dict):
            raise ValueError(f"loss weights must be a mapping of term name to weight, got {self.weights!r}")
        self.weights = {name: _loss_weight(name, value) for name, value in self.weights.items()}
        if isinstance(self.lens_epochs, bool) or not isinstance(self.lens_epochs, int) or self.lens_epochs < 0:
            raise ValueError(f"loss.lens_epochs must be an integer >= 0, got {self.lens_epochs!r}")

    @classmethod
    def schedule_keys(cls) -> tuple[str, ...]:
        """The keys of the ``loss`` section that are schedule, not term weights."""
        return tuple(f.name for f in fields(cls) if f.name != "weights")

    @classmethod
    def from_flat(cls, values: dict, where: str = "loss.") -> LossConfig:
        """From the file spelling: schedule keys, and every other key a term weight."""
        if not isinstance(values, dict):
            raise ValueError(f"{where.rstrip('.')} must be a mapping, got {values!r}")
        schedule = {key: _coerce(values[key], int, where + key) for key in cls.schedule_keys() if key in values}
        return cls({k: v for k, v in values.items() if k not in schedule}, **schedule)

    def to_flat(self) -> dict[str, Any]:
        """The file spelling: the term weights, then the schedule keys."""
        return {**self.weights, **{key: getattr(self, key) for key in self.schedule_keys()}}


def _loss_weight(name: str, value: Any) -> float:
    value = _coerce(value, float, f"loss.{name}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"loss weight {name} must be a finite number >= 0, got {value!r}")
    return value


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    seed: int = 0
    out: str = "runs/run"  # run directory: config, checkpoints, metrics, report
    device: str = "auto"  # "auto" (CUDA if available), "cpu", "cuda", "cuda:1", ...
    n_bootstrap: int = 1000  # resamples for the confidence intervals of the evaluation

    def __post_init__(self) -> None:
        _check_at_least(self, "", n_bootstrap=1)


def _build(cls, values: dict, where: str):
    """Instantiate dataclass ``cls`` from ``values``, recursing into nested dataclasses; reject unknown keys."""
    if not isinstance(values, dict):
        raise ValueError(f"{where or 'config'} must be a mapping, got {values!r}")
    hints = get_type_hints(cls)
    valid = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(where + k for k in unknown)}; valid keys: {sorted(valid)}")
    kwargs = {}
    for name, value in values.items():
        if hints[name] is LossConfig:
            kwargs[name] = LossConfig.from_flat(value, f"{where}{name}.")
        elif is_dataclass(hints[name]):
            kwargs[name] = _build(hints[name], value, f"{where}{name}.")
        else:
            kwargs[name] = _coerce(value, hints[name], where + name)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against a scalar field type; numbers written as strings (YAML reads ``3e-4`` as one) become
    numbers. Other types (dicts, tuples) pass through."""
    union = get_origin(hint) in (Union, types.UnionType)
    allowed = tuple(t for t in get_args(hint) if t is not type(None)) if union else (hint,)
    if value is None and type(None) in get_args(hint):
        return None
    for kind in (bool, int, float, str):
        if kind in allowed:
            if isinstance(value, kind) and not (kind is not bool and isinstance(value, bool)):
                return value
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                return float(value)
            if kind in (int, float) and isinstance(value, str):
                try:
                    return kind(value)
                except ValueError:
                    pass
    if any(kind in allowed for kind in (bool, int, float, str)):
        expected = " or ".join(t.__name__ for t in allowed)
        raise ValueError(f"config key {key} expects {expected}, got {value!r}")
    return value


def _set(values: dict, dotted: str) -> None:
    """Apply one ``a.b.c=value`` override (the value parsed as YAML) to the nested dict ``values``."""
    if "=" not in dotted:
        raise ValueError(f"override {dotted!r} must look like key.subkey=value")
    key, raw = dotted.split("=", 1)
    *parents, leaf = key.strip().split(".")
    node = values
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {dotted!r}: {part!r} is not a section")
    node[leaf] = yaml.safe_load(raw)


# data.hard (a widened variant of a preset) was replaced by the *_broad presets (issue 19)
_HARD_REPLACED = (
    "data.hard was replaced by the broad presets: set data.preset to model_i_broad, model_ii_broad or "
    "model_iii_broad (docs/data.md)"
)


def _retire_hard(values: dict, recorded: bool) -> None:
    """Drop ``data.hard`` from ``values``: ``false`` (the old default, in every config saved before) changes nothing;
    ``true`` is an error, except in a ``recorded`` config (a checkpoint's), which keeps loading with a warning."""
    data = values.get("data")
    if not isinstance(data, dict) or "hard" not in data:
        return
    if data.pop("hard"):
        if not recorded:
            raise ValueError(_HARD_REPLACED)
        logger.warning(
            "this run was trained on the retired hard variant of preset %s; %s", data.get("preset"), _HARD_REPLACED
        )


def config_from_dict(values: dict, overrides: list[str] | None = None, recorded: bool = False) -> TrainConfig:
    """The defaults updated by the (possibly partial) nested dict ``values``, then by ``key=value`` overrides.

    ``recorded``: ``values`` is a config saved by an earlier version (a checkpoint's); retired keys then load with a
    warning instead of an error."""
    merged = config_to_dict(TrainConfig())
    _merge(merged, values, "")
    for item in overrides or []:
        _set(merged, item)
    _retire_hard(merged, recorded)
    return _build(TrainConfig, merged, "")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """The defaults, updated by the YAML file at ``path`` and then by ``key=value`` overrides."""
    loaded = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path} must hold a YAML mapping of config sections")
    return config_from_dict(loaded, overrides)


def _merge(base: dict, update: dict, where: str) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key != "kwargs":
            _merge(base[key], value, f"{where}{key}.")
        else:
            base[key] = value


def save_config(config: TrainConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically)."""
    return write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))


def config_to_dict(config: TrainConfig) -> dict:
    """The config as nested plain values, as config files spell it (the loss weights flat, see :class:`LossConfig`)."""
    return {**asdict(config), "loss": config.loss.to_flat()}
