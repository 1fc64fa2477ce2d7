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

Anything else is a ``ValueError`` naming the file: a missing, truncated or foreign file, a checkpoint written before
format version 1 (before checkpoints were versioned: retrain it), or a newer format version.
"""

from __future__ import annotations

import math
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
from .models.registry import check_model_kwargs

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

FORMAT = "d4lenspinn-checkpoint"
FORMAT_VERSION = 1
INPUT_NORMALISATION = "min-max per image to [0, 1]"
"""How every reader of this package presents images to a model (the DeepLense convention)."""


@dataclass(frozen=True)
class ModelCard:
    """What a trained model expects and where it came from; shown by ``evaluate`` and checked against the data.

    ``pixel_scale`` is arcsec per pixel (``None`` only when the training data did not say and the model does not
    use it); ``class_names[i]`` is the name of label ``i``; ``training_prior`` the simulation preset's ranges
    (:meth:`~d4lenspinn.data.presets.SimulationPreset.training_prior`; ``None`` for other data and older cards)."""

    model: str
    image_size: int
    pixel_scale: float | None
    class_names: tuple[str, ...] = CLASS_NAMES
    normalisation: str = INPUT_NORMALISATION
    training_data: str = ""
    package_version: str = __version__
    training_prior: dict | None = None

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
    rng: dict  # the global generators' states (torch, CUDA, numpy, Python): d4lenspinn.resume.capture_rng
    data_rng: torch.Tensor  # state of the generator behind the data order and augmentation, at the epoch's start
    progress: dict  # the trainer's TrainingState as a dict


@dataclass
class Checkpoint:
    """A checkpoint as read back: typed config and card, the weights, and (``last.pt``) the resume state."""

    path: Path
    format_version: int
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
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises ``ValueError`` naming ``path`` when the file is missing, unreadable (truncated, not a torch file, not
    loadable with ``weights_only=True``), not a d4lenspinn checkpoint, or of a format version other than 1."""
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
        raise ValueError(
            f"{path} has checkpoint format version 0 (written before checkpoints were versioned); this d4lenspinn "
            f"{__version__} reads format {FORMAT_VERSION} only: retrain the model"
        )
    raise ValueError(
        f"{path} is a torch file but not a d4lenspinn checkpoint (keys {sorted(map(str, raw))[:8]}; expected "
        f"format {FORMAT!r})"
    )


def _from_format_1(path: Path, raw: dict) -> Checkpoint:
    resume = raw.get("resume")
    try:
        config = config_from_dict(raw["config"], recorded=True)
    except ValueError as error:
        raise ValueError(f"{path}: its config does not fit this d4lenspinn {__version__}: {error}") from error
    return Checkpoint(
        path=path,
        format_version=raw["format_version"],
        card=ModelCard.from_dict(raw["card"]),
        config=config,
        model_state=raw["model"],
        metadata=raw.get("metadata", {}),
        resume=None if resume is None else _resume_state(path, resume),
    )


def _resume_state(path: Path, values: dict) -> ResumeState:
    try:
        return ResumeState(**values)
    except TypeError as error:
        raise ValueError(
            f"{path}: its resume state (keys {sorted(values)}) was written by another d4lenspinn version and cannot "
            "be continued; train anew"
        ) from error


def build_model(checkpoint: Checkpoint) -> nn.Module:
    """The checkpoint's model, built from its card and config, with its weights loaded, in eval mode."""
    card = checkpoint.card
    model = create_model(
        card.model,
        image_size=card.image_size,
        pixel_scale=card.pixel_scale,
        num_classes=len(card.class_names),
        **_model_settings(checkpoint),
    )
    load_weights(model, checkpoint.model_state, checkpoint.path)
    return model.eval()


def _model_settings(checkpoint: Checkpoint) -> dict:
    """The config's ``model.kwargs``; a lens model saved before the shared trunk (2026-12-06: its weights hold a
    ``macro_estimator`` U-Net and its config says nothing of ``shared_trunk``) is rebuilt with ``shared_trunk=False``,
    the architecture it was trained with."""
    settings = dict(checkpoint.config.model.kwargs)
    separate = any(key.startswith("macro_estimator.") for key in checkpoint.model_state)
    if separate and "shared_trunk" not in settings:
        try:
            check_model_kwargs(checkpoint.card.model, {"shared_trunk": False})
        except ValueError:  # a model without the option (the fitted lens model always has its own estimator)
            return settings
        settings["shared_trunk"] = False
    return settings


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load the eval-mode ``state`` of a checkpoint into ``model`` strictly (in eval mode, whose keys it has; the
    model's mode is kept). Raises ``ValueError`` naming ``source`` when the weights do not fit."""
    was_training = model.training
    model.eval()
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{source}: the weights do not fit the model its config describes: {error}") from error
    finally:
        model.train(was_training)


class TrainedModel(NamedTuple):
    model: nn.Module  # in eval mode
    config: TrainConfig  # what it was trained with
    card: ModelCard  # what it expects


def load_trained_model(path: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """The model stored in a ``best.pt``/``last.pt`` (on ``device``, eval mode), its training config and model card."""
    checkpoint = load_checkpoint(path, map_location=device)
    return TrainedModel(build_model(checkpoint).to(device), checkpoint.config, checkpoint.card)
