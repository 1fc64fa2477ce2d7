"""Parameter-free, D4-invariant input channels computed from the image (the "physics-informed preprocessing").

All maps are ``(B, 1, H, W)``; every one is built from centred finite differences and pointwise functions, so it is
invariant (transforms as a scalar field) under the 8 pixel-grid symmetries exactly, up to float rounding.

* ``log_contrast``: ``log((I_max + eps) / (I + eps)) / log((1 + eps) / eps)`` in [0, 1]: faint structure stands out.
* ``distortion``: LensPINN's ``|tanh(d_x d_y (log(I_max / I))^2)|`` (Ojha et al. 2024, NeurIPS ML4PS). The mixed
  derivative ``d_x d_y`` changes sign under a quarter turn or a mirror; the absolute value makes the map invariant
  (the published D4LensPINN typed the signed map as invariant, which breaks equivariance).
* ``gradient_magnitude``: ``|grad I|`` (centred differences, per pixel).
* ``laplacian``: 5-point Laplacian of ``I`` (per pixel^2).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["log_contrast", "distortion_map", "gradient_magnitude", "laplacian", "Preprocessing"]

_EPS = 1e-3  # brightness floor of min-max normalised images, where log(I_max / I) would diverge


def _shifts(field: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Neighbour maps (right, left, down, up) with replicate padding, which commutes with D4."""
    padded = F.pad(field, (1, 1, 1, 1), mode="replicate")
    return padded[..., 1:-1, 2:], padded[..., 1:-1, :-2], padded[..., 2:, 1:-1], padded[..., :-2, 1:-1]


def log_contrast(image: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """``log((I_max + eps) / (I + eps))`` scaled to [0, 1] for images in [0, 1]; ``(B, 1, H, W)``."""
    peak = image.amax(dim=(-2, -1), keepdim=True)
    return torch.log((peak + eps) / (image.clamp_min(0) + eps)) / math.log((1 + eps) / eps)


def distortion_map(image: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """``|tanh(d_x d_y L^2)|`` with ``L = log((I_max + eps) / (I + eps))`` and centred differences; ``(B,1,H,W)``."""
    squared = torch.log((image.amax(dim=(-2, -1), keepdim=True) + eps) / (image.clamp_min(0) + eps)) ** 2
    padded = F.pad(squared, (1, 1, 1, 1), mode="replicate")
    mixed = (padded[..., 2:, 2:] - padded[..., 2:, :-2] - padded[..., :-2, 2:] + padded[..., :-2, :-2]) / 4
    return torch.tanh(mixed).abs()


def gradient_magnitude(image: torch.Tensor) -> torch.Tensor:
    """``sqrt((d_x I)^2 + (d_y I)^2)`` with centred differences, per pixel; ``(B, 1, H, W)``."""
    right, left, down, up = _shifts(image)
    return torch.sqrt(((right - left) / 2) ** 2 + ((down - up) / 2) ** 2 + 1e-12)


def laplacian(image: torch.Tensor) -> torch.Tensor:
    """5-point Laplacian of ``image`` per pixel^2; ``(B, 1, H, W)``."""
    right, left, down, up = _shifts(image)
    return right + left + down + up - 4 * image


class Preprocessing(nn.Module):
    """Stack ``[I, log_contrast, distortion, |grad I|, laplacian]`` -> ``(B, 5, H, W)`` from ``I (B, 1, H, W)``."""

    channel_names = ("image", "log-contrast", "|distortion|", "|grad I|", "laplacian I")
    channels = len(channel_names)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            (image, log_contrast(image), distortion_map(image), gradient_magnitude(image), laplacian(image)), dim=1
        )
