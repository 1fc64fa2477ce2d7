"""What every study is given (:class:`StudyContext`) and the simulated lenses the studies share."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from d4lenspinn.classes import CLASS_NAMES
from d4lenspinn.data.presets import SimulationPreset
from d4lenspinn.data.simulator import LensSample, render_images, sample_lenses

__all__ = ["StudyContext", "simulated_lenses"]


@dataclass(frozen=True)
class StudyContext:
    """One checkpoint's model and the inputs and sizes the studies share.

    ``images`` ``(B, 1, n, n)`` (on ``device``) with their class ``labels`` ``(B,)`` are the equivariance and
    attribution images; ``layers`` are the module names to study, in forward order; ``preset`` simulates the
    same-lens pairs (``n_pairs`` per kind) and the probes' lenses (``n_probe`` per class); ``seed`` seeds them.
    """

    model: nn.Module
    model_name: str
    layers: list[str]
    preset: SimulationPreset
    images: torch.Tensor
    labels: torch.Tensor
    device: str
    seed: int
    n_pairs: int
    n_probe: int
    n_bootstrap: int


def simulated_lenses(preset: SimulationPreset, per_class: int, seed: int) -> tuple[torch.Tensor, LensSample]:
    """``per_class`` lenses of each class: images ``(3 per_class, 1, n, n)`` and their LensSample."""
    labels = range(len(CLASS_NAMES))
    samples = [sample_lenses(preset, label, per_class, torch.Generator().manual_seed(seed + label)) for label in labels]
    sample = LensSample.concatenate(samples)
    return render_images(sample, preset, torch.Generator().manual_seed(seed + len(labels))), sample
