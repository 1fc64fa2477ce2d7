"""Linear probes: how much of a quantity can a linear read-out recover from a layer's spatially pooled activations?

Each probe is cross-validated and paired with a control that runs the identical pipeline on a shuffled target, so a
score is only evidence of encoding when it clearly beats both the control and chance.

    sample = sample_lenses(preset, label=1, count=256, generator=torch.Generator().manual_seed(0))
    images = render_images(sample, preset, torch.Generator().manual_seed(1))
    pooled = collect_pooled(model, images, ["unet", "engine", "head.conv_head"])   # layer -> (N, D) float64
    rows = probe_layers(pooled, simulator_targets(sample))                         # one row per (layer, target)
    plot_probes(rows, "runs/x/probes.png")

    rotated, element = d4_element_dataset(images, seed=0)                          # "which D4 element" probe
    rows += probe_layers(collect_pooled(model, rotated, layers), {"d4_element": (element, "classification")})
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from escnn import nn as enn
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from d4lenspinn.data.simulator import LensSample
from d4lenspinn.plots import save_figure
from d4lenspinn.symmetry import D4_ELEMENTS, transform_scalar

from .hooks import capture, eval_mode

__all__ = [
    "pooled_features",
    "collect_pooled",
    "probe",
    "probe_layers",
    "simulator_targets",
    "d4_element_dataset",
    "plot_probes",
]

KINDS = ("classification", "regression")
RIDGE_ALPHAS = np.logspace(-3, 3, 13)
SUBHALO_MASS_UNIT = 1e10  # Msun; the "subhalo_mass" target is log10(1 + total subhalo mass / this)


def pooled_features(activation: Any) -> np.ndarray:
    """One feature vector per image, ``(B, D)`` float64, from a layer's output.

    ``(B, C, H, W)`` tensors and escnn ``GeometricTensor`` (its ``.tensor``) are averaged over ``H, W`` (``D = C``);
    ``(B, C)`` is kept, ``(B,)`` (one number per image, e.g. a macro-lens parameter) is ``(B, 1)``; ``(B, N, D)``
    token tensors are averaged over the ``N`` tokens. A named tuple (e.g. the lensing engine's output, whose fields
    have different spatial sizes, or the seven ``(B,)`` macro-lens parameters) gives the concatenation of its pooled
    fields, in field order, skipping ``None`` fields.
    """
    if isinstance(activation, enn.GeometricTensor):
        activation = activation.tensor
    if isinstance(activation, torch.Tensor):
        tensor = activation.detach().to("cpu", torch.float64)
        if tensor.dim() == 4:
            return tensor.mean(dim=(2, 3)).numpy()
        if tensor.dim() == 3:
            return tensor.mean(dim=1).numpy()
        if tensor.dim() == 2:
            return tensor.numpy()
        if tensor.dim() == 1:
            return tensor[:, None].numpy()
        raise ValueError(
            f"cannot pool a tensor of shape {tuple(tensor.shape)}; expected (B, C, H, W), (B, N, D), (B, C) or (B,)"
        )
    if isinstance(activation, tuple) and hasattr(activation, "_fields"):
        parts = [pooled_features(value) for value in activation if value is not None]
        if not parts:
            raise ValueError(f"every field of the {type(activation).__name__} is None; nothing to pool")
        return np.concatenate(parts, axis=1)
    raise ValueError(
        f"cannot pool an activation of type {type(activation).__name__}; expected a tensor, an escnn GeometricTensor "
        "or a named tuple of tensors"
    )


def collect_pooled(
    model: nn.Module, images: torch.Tensor, layers: Sequence[str], batch_size: int = 64
) -> dict[str, np.ndarray]:
    """``layer -> pooled activations (N, D)`` float64 for ``images (N, C, H, W)``, see :func:`pooled_features`.

    Runs the model in eval mode without gradients, ``batch_size`` images at a time on the model's device, and
    restores the model's train/eval mode afterwards. A layer that the forward pass never calls is an error.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if len(images) == 0:
        raise ValueError("images is empty; need at least one image to collect activations")
    device = next(model.parameters(), torch.empty(0)).device
    parts: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(images), batch_size):
            with capture(model, layers) as activations:
                model(images[start : start + batch_size].to(device))
            missing = [name for name in layers if name not in activations]
            if missing:
                raise ValueError(f"layer(s) {missing} were not called by the model's forward pass")
            for name in layers:
                parts[name].append(pooled_features(activations[name]))
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def _check_probe_inputs(features: np.ndarray, target: np.ndarray, kind: str, n_splits: int) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if n_splits < 2:
        raise ValueError(f"n_splits must be at least 2, got {n_splits}")
    if features.ndim != 2:
        raise ValueError(f"features must have shape (N, D), got {features.shape}")
    if target.ndim != 1 or len(target) != len(features):
        raise ValueError(
            f"target must have shape ({len(features)},) to match features {features.shape}, got {target.shape}"
        )
    if not np.isfinite(features).all():
        raise ValueError("features contain NaN or infinite values")
    if kind == "regression":
        if not np.isfinite(target).all():
            raise ValueError("regression target contains NaN or infinite values")
        if np.ptp(target) == 0:
            raise ValueError(f"regression target is constant ({target[0]}); there is nothing to predict")
        if len(target) < 2 * n_splits:
            raise ValueError(f"need at least {2 * n_splits} samples for {n_splits}-fold regression, got {len(target)}")
        return
    classes, counts = np.unique(target, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"classification target has a single class ({classes[0]}); there is nothing to predict")
    if counts.min() < n_splits:
        raise ValueError(
            f"every class needs at least n_splits={n_splits} samples for stratified folds, got class counts "
            f"{dict(zip(classes.tolist(), counts.tolist(), strict=True))}"
        )


def probe(features: np.ndarray, target: np.ndarray, kind: str, n_splits: int = 5, seed: int = 0) -> dict[str, Any]:
    """Cross-validated linear probe of ``target (N,)`` from ``features (N, D)``, with a shuffled-target control.

    ``kind="classification"``: standardise + logistic regression, stratified ``n_splits``-fold CV; ``score`` is the
    mean held-out accuracy and ``chance`` the majority-class frequency. ``kind="regression"``: standardise + ridge
    (alpha chosen from 1e-3..1e3 by efficient leave-one-out inside each training fold), ``n_splits``-fold CV;
    ``score`` is the mean held-out R^2 and ``chance`` 0. Folds are shuffled with ``seed``. ``shuffled`` is the same
    pipeline on a ``seed``-permutation of the target (which breaks any feature-target link). ``*_std`` are the
    standard deviations over folds. A constant target is a ``ValueError``.

    Returns ``{"score", "score_std", "shuffled", "shuffled_std", "metric", "chance"}`` with metric ``"accuracy"`` or
    ``"r2"``.
    """
    features, target = np.asarray(features, dtype=np.float64), np.asarray(target)
    _check_probe_inputs(features, target, kind, n_splits)
    if kind == "classification":
        estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        folds = StratifiedKFold(n_splits, shuffle=True, random_state=seed)
        metric, chance = "accuracy", np.unique(target, return_counts=True)[1].max() / len(target)
    else:
        target = target.astype(np.float64)
        estimator = make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS))
        folds = KFold(n_splits, shuffle=True, random_state=seed)
        metric, chance = "r2", 0.0
    scores = cross_val_score(estimator, features, target, cv=folds, scoring=metric)
    shuffled_target = target[np.random.default_rng(seed).permutation(len(target))]
    shuffled = cross_val_score(estimator, features, shuffled_target, cv=folds, scoring=metric)
    return {
        "score": float(scores.mean()),
        "score_std": float(scores.std()),
        "shuffled": float(shuffled.mean()),
        "shuffled_std": float(shuffled.std()),
        "metric": metric,
        "chance": float(chance),
    }


def probe_layers(
    pooled: dict[str, np.ndarray], targets: dict[str, tuple[np.ndarray, str]], n_splits: int = 5, seed: int = 0
) -> list[dict[str, Any]]:
    """:func:`probe` every layer's features against every target: one row per (layer, target), layer-major.

    ``pooled``: ``layer -> (N, D)`` (from :func:`collect_pooled`); ``targets``: ``name -> (values (N,), kind)`` (from
    :func:`simulator_targets`). Rows are ``{"layer", "target", **probe(...)}``. A constant target (e.g. the Einstein
    radius of a preset that fixes it) has nothing to predict and gets no row.
    """
    varying = {name: (np.asarray(values), kind) for name, (values, kind) in targets.items()}
    varying = {name: spec for name, spec in varying.items() if np.unique(spec[0]).size > 1}
    return [
        {"layer": layer, "target": name, **probe(features, values, kind, n_splits, seed)}
        for layer, features in pooled.items()
        for name, (values, kind) in varying.items()
    ]


def simulator_targets(sample: LensSample) -> dict[str, tuple[np.ndarray, str]]:
    """Ground truth the simulator knows for each image, as ``name -> (values (B,), kind)`` for :func:`probe_layers`.

    * ``class`` (classification): 0 no substructure, 1 subhalos, 2 vortex.
    * ``einstein_radius``: main-lens Einstein radius [arcsec].
    * ``n_subhalos``: number of subhalos with non-zero mass.
    * ``subhalo_mass``: ``log10(1 + M / 1e10 Msun)`` with ``M`` the total subhalo mass [Msun] (0 without subhalos;
      the log tames the heavy tail of the power-law masses).
    * ``vortex_length``: full length ``2 L`` of the vortex segment [arcsec], 0 without a vortex.
    * ``source_offset``: distance of the source centre from the optical axis [arcsec].

    All but ``class`` are regression targets (float64).
    """
    numpy = sample.to_numpy()
    total_subhalo_mass = numpy["subhalo_mass"].sum(axis=1)
    return {
        "class": (numpy["label"].astype(np.int64), "classification"),
        "einstein_radius": (numpy["theta_e"].astype(np.float64), "regression"),
        "n_subhalos": ((numpy["subhalo_mass"] > 0).sum(axis=1).astype(np.float64), "regression"),
        "subhalo_mass": (np.log10(1 + total_subhalo_mass / SUBHALO_MASS_UNIT), "regression"),
        "vortex_length": (np.where(numpy["vortex_mass"] > 0, 2 * numpy["vortex_half_length"], 0.0), "regression"),
        "source_offset": (np.hypot(numpy["source_x"], numpy["source_y"]), "regression"),
    }


def d4_element_dataset(images: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Each image of ``images (B, C, H, W)`` moved by a D4 element: every element used ``B // 8`` or ``B // 8 + 1``
    times (balanced, so stratified folds work with few images), in an order shuffled with ``seed``.

    Returns the transformed images ``(B, C, H, W)`` and the element indices ``(B,)`` int64 into
    :data:`d4lenspinn.symmetry.D4_ELEMENTS` (0..7), the target of the "which D4 element" probe: an exactly
    invariant layer scores chance on it.
    """
    if images.dim() != 4:
        raise ValueError(f"images must have shape (B, C, H, W), got {tuple(images.shape)}")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    element = order % len(D4_ELEMENTS)
    out = images.clone()
    for index, g in enumerate(D4_ELEMENTS):
        selected = (element == index).to(images.device)
        if selected.any():
            out[selected] = transform_scalar(images[selected], g)
    return out, element.numpy()


def plot_probes(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """One panel per target (three per row): probe score per layer (solid, +-1 std over folds shaded),
    shuffled-target control (dashed) and chance (dotted horizontal). Layers and targets appear in the order of
    ``rows`` (from :func:`probe_layers`); the y axis is accuracy or R^2 as the target's probe reports; R^2 below
    -0.5 is clipped."""
    if not rows:
        raise ValueError("rows is empty; nothing to plot")
    layers = list(dict.fromkeys(row["layer"] for row in rows))
    targets = list(dict.fromkeys(row["target"] for row in rows))
    ncols = min(3, len(targets))
    nrows = -(-len(targets) // ncols)
    width = min(7.0, max(3.0, 0.22 * len(layers) + 1.5))
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, 4.2 * nrows), squeeze=False)
    for ax in axes.flat[len(targets) :]:
        ax.set_visible(False)
    positions = np.arange(len(layers))
    for ax, target in zip(axes.flat, targets, strict=False):  # axes beyond the targets are hidden
        by_layer = {row["layer"]: row for row in rows if row["target"] == target}
        series = {
            key: np.array([by_layer[layer][key] if layer in by_layer else np.nan for layer in layers])
            for key in ("score", "score_std", "shuffled")
        }
        score, std = series["score"], series["score_std"]
        ax.plot(positions, score, "o-", ms=3, label="probe")
        ax.fill_between(positions, score - std, score + std, alpha=0.2)
        ax.plot(positions, series["shuffled"], "s--", ms=3, color="0.4", label="shuffled target")
        first = next(iter(by_layer.values()))
        ax.axhline(first["chance"], color="0.6", ls=":", label="chance")
        ax.set_xticks(positions, layers, rotation=60, ha="right", fontsize=7)
        if first["metric"] == "accuracy":
            ax.set_ylabel("accuracy")
        else:
            ax.set_ylabel("R$^2$ (held out)")
            ax.set_ylim(bottom=max(-0.5, ax.get_ylim()[0]))
        ax.set_title(target, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
