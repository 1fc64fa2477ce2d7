"""Prediction with D4 test-time augmentation (TTA): the mean softmax over the 8 symmetries of the pixel grid.

``predict(model, images, tta=True)`` averages the class probabilities of the 8 transformed images, so its output is
invariant to any D4 transform of the input. The naive way runs the whole model 8 times. For models whose maps are
exactly equivariant (D4LensPINN: preprocessing, escnn U-Net and lensing physics), :func:`predict` runs that part
once, transforms its output maps 8 ways and runs only the (non-equivariant) head 8 times; the two agree to float
precision (tests/test_tta.py) and the fast path costs one backbone pass plus 8 head passes
(benchmarks/models.py measures it).

Example::

    probabilities = predict(model, images, tta=True)        # (B, num_classes), rows sum to 1
"""

from __future__ import annotations

import torch
from torch import nn

from .symmetry import D4_ELEMENTS, transform_scalar

__all__ = ["predict", "predict_naive_tta"]


def _has_equivariant_maps(model: nn.Module) -> bool:
    return (
        callable(getattr(model, "maps", None))
        and callable(getattr(model, "head_input", None))
        and getattr(getattr(model, "unet", None), "equivariant", False)
    )


@torch.no_grad()
def predict_naive_tta(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Mean softmax over the 8 transformed inputs, running the full model 8 times; ``(B, num_classes)``."""
    model.eval()
    probabilities = [model(transform_scalar(images, g)).logits.softmax(dim=-1) for g in D4_ELEMENTS]
    return torch.stack(probabilities).mean(dim=0)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """Class probabilities ``(B, num_classes)`` for ``images (B, C, H, W)``, in eval mode.

    With ``tta=True``: the D4-averaged probabilities, by the one-pass fast path when the model exposes equivariant
    ``maps`` (D4LensPINN) and by :func:`predict_naive_tta` otherwise.
    """
    model.eval()
    if not tta:
        return model(images).logits.softmax(dim=-1)
    if not _has_equivariant_maps(model):
        return predict_naive_tta(model, images)
    stacked = model.head_input(model.maps(images))  # (B, C, n, n), every channel a scalar field
    # one head call per element: on CPU, 8 calls of B images are faster than one of 8B (benchmarks/models.py)
    probabilities = [model.head(transform_scalar(stacked, g)).softmax(dim=-1) for g in D4_ELEMENTS]
    return torch.stack(probabilities).mean(dim=0)  # (B, K)
