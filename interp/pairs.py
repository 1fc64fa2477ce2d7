"""Clean/corrupted image pairs for activation patching.

* :func:`substructure_pairs`: the same lens, source and noise seed rendered with substructure (clean, class
  ``label``) and without it (corrupted, class 0), so the pair differs only by the dark-matter substructure.
* :func:`d4_pairs`: an image and its D4-transformed copy; for an exactly invariant model they give the same output.

    clean, corrupted, sample = substructure_pairs(get_preset("model_ii"), label=1, count=64, seed=0)
"""

from __future__ import annotations

import torch

from d4lenspinn.classes import NO_SUBSTRUCTURE
from d4lenspinn.data.presets import SimulationPreset
from d4lenspinn.data.simulator import LensSample, render_images, sample_lenses
from d4lenspinn.symmetry import D4Element, transform_scalar

__all__ = ["render_pairs", "substructure_pairs", "d4_pairs"]


def render_pairs(sample: LensSample, preset: SimulationPreset, noise_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(with, without)``: images ``(B, 1, n, n)`` of ``sample`` and of the same lenses without substructure, both
    drawn with the noise generator seeded ``noise_seed``."""
    with_substructure = render_images(sample, preset, torch.Generator().manual_seed(noise_seed))
    smooth = render_images(sample.without_substructure(), preset, torch.Generator().manual_seed(noise_seed))
    return with_substructure, smooth


def substructure_pairs(
    preset: SimulationPreset, label: int, count: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, LensSample]:
    """``(clean, corrupted, sample)``: images ``(count, 1, n, n)`` of class ``label`` (1 subhalos or 2 vortex) and
    the same lenses without substructure, drawn from ``preset`` with ``seed`` (the noise uses the same seed too)."""
    if label == NO_SUBSTRUCTURE:
        raise ValueError("substructure pairs need label 1 (subhalos) or 2 (vortex); 0 has nothing to remove")
    sample = sample_lenses(preset, label, count, torch.Generator().manual_seed(seed))
    clean, corrupted = render_pairs(sample, preset, noise_seed=seed + 1)
    return clean, corrupted, sample


def d4_pairs(images: torch.Tensor, g: D4Element) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, g . images)`` for images ``(B, C, n, n)``."""
    return images, transform_scalar(images, g)
