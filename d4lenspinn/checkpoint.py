"""Checkpoints: one way to write them, one way to read them, and the model card every checkpoint carries.

    save_checkpoint(run_dir / "best.pt", model, config, card, metadata={"epoch": 3, "val_macro_auc": 0.91})
    checkpoint = load_checkpoint("runs/demo/best.pt")        # typed: .config (TrainConfig), .card (ModelCard), ...
    model, config, card = load_trained_model("runs/demo/best.pt")   # the model rebuilt, in eval mode

Format version 1 is a ``torch.save`` dict of tensors and plain Python values (read with ``weights_only=True``)::

    format "d4lenspinn-checkpoint", format_version 1
    card       ModelCard as a dict: model, image size, pixel scale, classes, input normalisation, training data, version
    config     the resolved TrainConfig as a dict
    model      the state dict, always taken in eval mode (escnn keeps its expanded filters as buffers only in eval
               mode, so a state dict taken in train mode would miss keys a fresh model has)
    metadata   free-form numbers (epoch, validation AUC)
    resume     (last.pt only) optimiser, scheduler, random generators and training progress

Anything else is a ``ValueError`` naming the file: a missing, truncated or foreign file, or a newer format version.
A checkpoint written before versioning (format 0) loads with its model card inferred and one warning.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from . import __version__
from .classes import CLASS_NAMES
from .config import TrainConfig, config_from_dict, config_to_dict
from .io import save_torch
from .models import create_model

__all__ = [
    "FORMAT_VERSION",
    "INPUT_NORMALISATION",
    "ModelCard",
    "ResumeState",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "load_trained_model",
    "TrainedModel",
]

logger = logging.getLogger(__name__)

FORMAT = "d4lenspinn-checkpoint"
FORMAT_VERSION = 1
INPUT_NORMALISATION = "min-max per image to [0, 1]"
"""How every reader of this package presents images to a model (the DeepLense convention)."""

_LEGACY_SCALES = {150: 0.05, 64: 0.101}  # what models before format 1 took for these sizes; else a 7.5" field
_REMOVED_CONFIG_KEYS = {"loss": ("physics_start_epoch",)}  # config keys older checkpoints may hold, now gone
_ESCNN_CACHES = (".filter", ".expanded_bias")  # buffers escnn adds in eval mode and drops in train mode


@dataclass(frozen=True)
class ModelCard:
    """What a trained model expects and where it came from; shown by ``evaluate`` and checked against the data.

    ``pixel_scale`` is arcsec per pixel (``None`` only when the training data did not say and the model does not
    use it); ``class_names[i]`` is the name of label ``i``."""

    model: str
    image_size: int
    pixel_scale: float | None
    class_names: tuple[str, ...] = CLASS_NAMES
    normalisation: str = INPUT_NORMALISATION
    training_data: str = ""
    package_version: str = __version__

    @classmethod
    def from_dict(cls, values: dict) -> ModelCard:
        return cls(**{**values, "class_names": tuple(values["class_names"])})

    def contradicts_pixel_scale(self, scale: float | None) -> bool:
        """Whether ``scale`` [arcsec/pixel] differs from the card's by more than 0.1% (a stated scale is often
        rounded, or converted from degrees); unknown on either side contradicts nothing."""
        return None not in (scale, self.pixel_scale) and not math.isclose(scale, self.pixel_scale, rel_tol=1e-3)

    def describe(self) -> str:
        """One line for logs and reports."""
        scale = "unknown" if self.pixel_scale is None else f'{self.pixel_scale:g}"/px'
        return (
            f"{self.model}: {self.image_size}x{self.image_size} px at {scale}, classes {list(self.class_names)}, "
            f"inputs {self.normalisation}; trained on {self.training_data or 'unrecorded data'} "
            f"(d4lenspinn {self.package_version})"
        )


@dataclass
class ResumeState:
    """Everything besides the weights that continuing a run needs."""

    optimizer: dict
    scheduler: dict
    torch_rng: torch.Tensor
    data_rng: torch.Tensor  # state of the generator behind the data order and augmentation, at the epoch's start
    progress: dict  # the trainer's TrainingState as a dict
    cuda_rng: list[torch.Tensor] | None = None


@dataclass
class Checkpoint:
    """A checkpoint as read back: typed config and card, the weights, and (``last.pt``) the resume state."""

    path: Path
    format_version: int  # 0: written before versioning
    card: ModelCard
    config: TrainConfig
    model_state: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)
    resume: ResumeState | None = None


def eval_mode_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` taken in eval mode (the one mode every checkpoint uses); the model's mode is kept."""
    was_training = model.training
    model.eval()
    state = model.state_dict()
    model.train(was_training)
    return state


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    config: TrainConfig,
    card: ModelCard,
    *,
    metadata: dict[str, Any] | None = None,
    resume: ResumeState | None = None,
) -> Path:
    """Write a format-1 checkpoint of ``model`` atomically to ``path``; return the path."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "card": asdict(card),
        "config": config_to_dict(config),
        "model": eval_mode_state_dict(model),
        "metadata": dict(metadata or {}),
    }
    if resume is not None:
        payload["resume"] = asdict(resume)
    return save_torch(payload, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (or by a version before format 1).

    Raises ``ValueError`` naming ``path`` when the file is missing, unreadable (truncated, not a torch file, not
    loadable with ``weights_only=True``), not a d4lenspinn checkpoint, or of a newer format version."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for a bad file (RuntimeError, UnpicklingError, EOFError ...)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"{path} is not a readable d4lenspinn checkpoint (truncated, or not written by torch.save): {reason}"
        ) from error
    if not isinstance(raw, dict):
        raise ValueError(f"{path} is not a d4lenspinn checkpoint: it holds a {type(raw).__name__}, not a dict")
    if raw.get("format") == FORMAT:
        version = raw.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(
                f"{path} has checkpoint format version {version!r}, newer than the {FORMAT_VERSION} this d4lenspinn "
                f"{__version__} reads; upgrade d4lenspinn to load it"
            )
        return _from_format_1(path, raw)
    if {"model", "config", "image_size"} <= set(raw):
        return _from_format_0(path, raw)
    raise ValueError(
        f"{path} is a torch file but not a d4lenspinn checkpoint (keys {sorted(map(str, raw))[:8]}; expected "
        f"format {FORMAT!r})"
    )


def _without_removed_keys(config: dict) -> dict:
    """A saved config without the keys later versions removed (they described nothing the model needs)."""
    config = dict(config)
    for section, keys in _REMOVED_CONFIG_KEYS.items():
        config[section] = {k: v for k, v in config.get(section, {}).items() if k not in keys}
    return config


def _from_format_1(path: Path, raw: dict) -> Checkpoint:
    resume = raw.get("resume")
    return Checkpoint(
        path=path,
        format_version=raw["format_version"],
        card=ModelCard.from_dict(raw["card"]),
        config=config_from_dict(_without_removed_keys(raw["config"])),
        model_state=raw["model"],
        metadata=raw.get("metadata", {}),
        resume=None if resume is None else ResumeState(**resume),
    )


def _from_format_0(path: Path, raw: dict) -> Checkpoint:
    """A checkpoint from before versioning: ``{model, config, image_size[, optimizer, scheduler, torch_rng,
    epoch_generator, state][, epoch, val_macro_auc]}``; the model card is inferred from its config."""
    saved = _without_removed_keys(raw["config"])
    kwargs = dict(saved["model"].get("kwargs", {}))
    size = int(raw["image_size"])
    scale = kwargs.pop("pixel_scale", None) or _LEGACY_SCALES.get(size, 7.5 / size)
    config = config_from_dict({**saved, "model": {**saved["model"], "kwargs": kwargs}})
    data = config.data
    described = f"simulated {data.preset}" if data.source == "simulate" else data.source
    card = ModelCard(
        config.model.name, size, scale, training_data=described, package_version="unknown (before checkpoint format 1)"
    )
    warnings.warn(
        f"{path} was written before checkpoints were versioned; its model card is inferred ({card.describe()})",
        stacklevel=3,
    )
    resume = None
    if "optimizer" in raw:
        state = dict(raw["state"])
        sums = state.pop("sums", {})
        progress = {**state, "loss_sum": sums.get("loss", 0.0), "correct": sums.get("correct", 0)}
        progress["seen"] = sums.get("seen", 0)
        resume = ResumeState(raw["optimizer"], raw["scheduler"], raw["torch_rng"], raw["epoch_generator"], progress)
    metadata = {key: raw[key] for key in ("epoch", "val_macro_auc") if key in raw}
    return Checkpoint(path, 0, card, config, raw["model"], metadata, resume)


def build_model(checkpoint: Checkpoint) -> nn.Module:
    """The checkpoint's model, built from its card and config, with its weights loaded, in eval mode."""
    card, config = checkpoint.card, checkpoint.config
    model = create_model(
        card.model,
        image_size=card.image_size,
        pixel_scale=card.pixel_scale,
        num_classes=len(card.class_names),
        **config.model.kwargs,
    )
    load_weights(model, checkpoint.model_state, checkpoint.path)
    return model.eval()


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load ``state`` into ``model`` strictly; a state taken in train mode (before format 1) has no escnn caches,
    which the model then drops too. Raises ``ValueError`` naming ``source`` when the weights do not fit."""
    if not any(key.endswith(_ESCNN_CACHES) for key in state):
        model.eval()
        model.train()  # escnn: leaving eval mode drops the cached filters, as in the saved state
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{source}: the weights do not fit the model its config describes: {error}") from error


class TrainedModel(NamedTuple):
    model: nn.Module  # in eval mode
    config: TrainConfig  # what it was trained with
    card: ModelCard  # what it expects


def load_trained_model(path: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """The model stored in a ``best.pt``/``last.pt`` (on ``device``, eval mode), its training config and model card."""
    checkpoint = load_checkpoint(path, map_location=device)
    return TrainedModel(build_model(checkpoint).to(device), checkpoint.config, checkpoint.card)
