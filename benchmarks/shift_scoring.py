"""Scorers and metrics of benchmarks/shift.py: anything that turns images into class probabilities or a
substructure score, scored per cell, pooled, paired and binned by substructure mass.

A scorer is any object with a ``name``, an ``output`` (``"classes"``: ``(B, 3)`` class probabilities in
``CLASS_NAMES`` order; ``"binary"``: ``(B,)`` substructure score, larger = more substructure) and a call
``scorer(images)`` on min-max normalised images ``(B, 1, n, n)`` returning that numpy array. Networks are wrapped
by :class:`NetworkScorer`; a non-network detector (e.g. the chi^2 of a fitted smooth lens) is just another class::

    class SmoothLensChi2:
        name, output = "smooth-lens chi^2", "binary"
        def __call__(self, images):            # (B, 1, 64, 64) -> (B,)
            return fitted_chi2_per_image(images)

Every scorer gets the detection AUC (no substructure vs subhalos or vortex; a class scorer's score is
``-log p(no)``); class scorers also get the macro AUC over the three classes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from d4lenspinn.classes import CLASS_NAMES, NO_SUBSTRUCTURE
from d4lenspinn.data import batch_loader, prepare_test_data
from d4lenspinn.detection import PriorFit, detect_substructure
from d4lenspinn.metrics import bootstrap_intervals, classification_metrics, paired_difference
from d4lenspinn.physics import LensFit
from d4lenspinn.tta import predict

DETECTION_CLASSES = ("none", "substructure")


class Scorer(Protocol):
    name: str
    output: str  # "classes" or "binary"

    def __call__(self, images: torch.Tensor) -> np.ndarray: ...


class NetworkScorer:
    """A trained classifier as a scorer: softmax probabilities ``(B, 3)``, optionally D4 test-time augmented."""

    output = "classes"

    def __init__(self, name: str, model: nn.Module, tta: bool) -> None:
        self.name, self.model, self.tta = name, model, tta
        self.device = next(model.parameters()).device

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        return predict(self.model, images.to(self.device), tta=self.tta).float().cpu().numpy()


class ModelFit:
    """The smooth-lens fit inside a model that fits the lens to each image (``d4lenspinn_fit``: its estimate or its
    prior starts, then its Levenberg-Marquardt steps), with the settings a scan of it needs."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.grid, self.psf_truncation = model, model.grid, model.psf_truncation
        self.fit_psf, self.supersampling = model.fit_psf, model.supersampling
        self.device = next(model.parameters()).device

    def __call__(self, images: torch.Tensor) -> LensFit:
        with torch.no_grad():
            images = images.to(self.device)
            return self.model.fit_lens(images, self.model.preprocessing(images))[0]


class FitChi2Scorer:
    """A smooth-lens fit (:class:`ModelFit` or :class:`PriorFit`) as a detector that needs no classifier: the fit's
    reduced chi^2 per image."""

    output = "binary"

    def __init__(self, name: str, fit: ModelFit | PriorFit) -> None:
        self.name, self.fit = name, fit

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        return self.fit(images).reduced_chi2.double().cpu().numpy()


class ScanScorer:
    """The subhalo scan (:func:`~d4lenspinn.physics.subhalo_scan`, a trial subhalo at the centre of every ``stride x
    stride`` block) through a smooth-lens fit (:class:`ModelFit` or :class:`PriorFit`), as a detector that needs no
    classifier: the largest delta chi^2 per image (+inf where the fit failed: nothing smooth explains the image)."""

    output = "binary"

    def __init__(self, name: str, fit: ModelFit | PriorFit, stride: int) -> None:
        self.name, self.fit, self.stride = name, fit, stride

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        return detect_substructure(self.fit(images), self.fit, self.stride).max_delta_chi2.cpu().numpy()


def score_folder(scorer: Scorer, folder: Path, expected_labels: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The scorer's output on every image of a written cell, in the package loader's order (checked against the
    labels of the cell's metadata, so the per-image masses line up)."""
    dataset = prepare_test_data(folder).test
    outputs, labels = [], []
    for batch in batch_loader(dataset, batch_size):
        outputs.append(np.asarray(scorer(batch.images), dtype=np.float64))
        labels.append(batch.labels.numpy())
    if not np.array_equal(np.concatenate(labels), expected_labels):
        raise ValueError(f"{folder}: the loader's labels do not match metadata.npz (files changed after writing?)")
    outputs = np.concatenate(outputs)
    expected = (len(outputs), len(CLASS_NAMES)) if scorer.output == "classes" else (len(outputs),)
    if scorer.output not in ("classes", "binary") or outputs.shape != expected or not np.isfinite(outputs).all():
        raise ValueError(
            f"scorer {scorer.name!r}: output must be 'classes' (finite (B, 3) probabilities) or 'binary' (finite "
            f"(B,) scores); got output {scorer.output!r}, shape {outputs.shape}, "
            f"{np.isfinite(outputs).mean():.0%} finite"
        )
    return outputs


def detection_scores(outputs: np.ndarray, output: str) -> np.ndarray:
    """Substructure score ``(N,)``: ``-log p(no)`` of class probabilities (the ranking of ``1 - p(no)``, which
    rounds to 1 for the p(no) ~ 1e-20 of a saturated softmax), the score itself for a binary scorer."""
    return -np.log(np.clip(outputs[:, NO_SUBSTRUCTURE], 1e-300, None)) if output == "classes" else outputs


def _two_columns(score: np.ndarray) -> np.ndarray:
    """A score as the ``(N, 2)`` input of the package's metrics (any finite scores work for AUC)."""
    return np.stack([-score, score], axis=1)


def _with_interval(value: float, interval: tuple[float, float]) -> dict:
    return {"auc": value, "ci95": [interval[0], interval[1]]}


def detection_auc(score: np.ndarray, has_substructure: np.ndarray, n_bootstrap: int, seed: int) -> dict:
    """AUC of ``score`` for substructure vs none with its stratified bootstrap 95% interval, and the counts."""
    labels = has_substructure.astype(np.int64)
    columns = _two_columns(score)
    value = classification_metrics(columns, labels, DETECTION_CLASSES)["auc_substructure"]
    interval = bootstrap_intervals(columns, labels, DETECTION_CLASSES, n_bootstrap, seed=seed)["auc_substructure"]
    return _with_interval(value, interval) | {"n_none": int((labels == 0).sum()), "n_substructure": int(labels.sum())}


def score_metrics(outputs: np.ndarray, output: str, labels: np.ndarray, n_bootstrap: int, seed: int) -> dict:
    """Detection AUC (every scorer) and, for class scorers, macro AUC and per-class AUCs, with 95% intervals."""
    result = {
        "n": len(labels),
        "detection": detection_auc(detection_scores(outputs, output), labels != 0, n_bootstrap, seed),
    }
    if output == "classes":
        metrics = classification_metrics(outputs, labels, CLASS_NAMES)
        interval = bootstrap_intervals(outputs, labels, CLASS_NAMES, n_bootstrap, seed=seed)["macro_auc"]
        result["macro"] = _with_interval(metrics["macro_auc"], interval)
        result["per_class"] = {name: metrics[f"auc_{name}"] for name in CLASS_NAMES}
        result["accuracy"] = metrics["accuracy"]
    return result


def paired(
    a: np.ndarray, b: np.ndarray, outputs: tuple[str, str], labels: np.ndarray, n_bootstrap: int, seed: int
) -> dict:
    """AUC of ``a`` minus that of ``b`` on the same images with a paired bootstrap 95% interval: macro AUC when both
    are class scorers, detection AUC always."""
    result = {
        "detection": paired_difference(
            _two_columns(detection_scores(a, outputs[0])),
            _two_columns(detection_scores(b, outputs[1])),
            (labels != 0).astype(np.int64),
            DETECTION_CLASSES,
            n_bootstrap,
            seed,
        )
    }
    if outputs == ("classes", "classes"):
        result["macro"] = paired_difference(a, b, labels, CLASS_NAMES, n_bootstrap, seed)
    return result


def binned_detection(
    score: np.ndarray,
    labels: np.ndarray,
    positive: int,
    values: np.ndarray,
    edges: np.ndarray,
    n_bootstrap: int,
    seed: int,
) -> list[dict]:
    """Detection AUC of class ``positive`` vs no substructure in bins of ``values`` (the positives' mass or length):
    every no-substructure image against the positives whose value lies in ``[edges[i], edges[i+1])``."""
    none = labels == NO_SUBSTRUCTURE
    bins = []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        members = (labels == positive) & (values >= low) & (values < high)
        row = {"low": float(low), "high": float(high), "n": int(members.sum())}
        if members.sum() >= 5:  # an AUC of fewer positives is noise
            keep = none | members
            row |= detection_auc(score[keep], members[keep], n_bootstrap, seed)
        bins.append(row)
    return bins


def smallest_detected(bins: list[dict], threshold: float = 0.8) -> dict | None:
    """The lowest bin whose AUC exceeds ``threshold`` (``None`` when none does)."""
    return next((b for b in bins if b.get("auc", -math.inf) > threshold), None)
