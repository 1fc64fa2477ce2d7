"""Supervised losses: cross-entropy on the labels and the macro-lens parameter errors against the simulator's truth."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..physics import MacroLens

__all__ = ["classification_loss", "macro_parameter_loss", "MACRO_TOLERANCES"]


MACRO_TOLERANCES = {"theta_e": 0.02, "center": 0.5, "ellipticity": 0.02, "shear": 0.01}
"""The errors :func:`macro_parameter_loss` counts as 1: 2% of theta_E, half a pixel of centre, 0.02 of ellipticity,
0.01 of shear (the lens-quality targets)."""


def macro_parameter_loss(predicted: MacroLens, true: MacroLens, pixel_scale: float) -> dict[str, torch.Tensor]:
    """Squared errors of a macro-lens estimate in units of :data:`MACRO_TOLERANCES`, mean over the batch, by name.

    ``theta_e``: ``(delta theta_E / (0.02 theta_E))^2``; ``center``: ``|delta c|^2 / (0.5 pixel_scale)^2``
    (``pixel_scale`` in arcsec); ``ellipticity``, ``shear``: ``|delta e|^2 / 0.02^2``, ``|delta gamma|^2 / 0.01^2``;
    ``total``: their sum, so 4 is "every parameter at its tolerance". ``predicted``, ``true``: ``MacroLens`` of
    ``(B,)`` tensors (``true`` is detached by nature: it comes from the simulator).
    """
    t = MACRO_TOLERANCES
    terms = {
        "theta_e": ((predicted.theta_e - true.theta_e) / (t["theta_e"] * true.theta_e)).square().mean(),
        "center": ((predicted.center_x - true.center_x).square() + (predicted.center_y - true.center_y).square()).mean()
        / (t["center"] * pixel_scale) ** 2,
        "ellipticity": ((predicted.e1 - true.e1).square() + (predicted.e2 - true.e2).square()).mean()
        / t["ellipticity"] ** 2,
        "shear": ((predicted.gamma1 - true.gamma1).square() + (predicted.gamma2 - true.gamma2).square()).mean()
        / t["shear"] ** 2,
    }
    return {**terms, "total": sum(terms.values())}


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of ``logits (B, K)`` against integer ``labels (B,)``, averaged over the batch; nats."""
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (B, K) and labels (B,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
