"""Figures (matplotlib): each function draws one figure, saves it atomically, closes it and returns the path.

The backend is left to matplotlib (Agg on a headless machine, inline in a notebook); figures are closed after saving,
so nothing is shown twice.

Every figure in the docs is made by a command (see docs/), e.g.::

    d4lenspinn plot-examples --preset model_i --seed 0 --out docs/figures/simulated_examples.png

Evaluation figures take numpy arrays (probabilities ``(N, K)``, labels ``(N,)``, maps ``(N, 1, H, W)``)::

    from d4lenspinn.plots import plot_confusion_matrix, plot_roc_curves

    plot_roc_curves(probs, labels, CLASS_NAMES, "runs/x/roc.png", title="D4LensPINN, D4 TTA")
    plot_confusion_matrix(report["metrics"]["confusion_matrix"], CLASS_NAMES, "runs/x/confusion.png")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.metrics import roc_curve

from . import io
from .data.presets import SimulationPreset
from .data.simulator import render_images, sample_lenses, true_convergence
from .metrics import classification_metrics

__all__ = [
    "plot_class_examples",
    "plot_confusion_matrix",
    "plot_detection_classes",
    "plot_detections",
    "plot_prediction_gallery",
    "plot_roc_curves",
    "plot_training_curves",
    "save_figure",
]

_CLASS_TITLES = ("no substructure", "CDM subhalos (sphere)", "axion vortex (vort)")


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    """Save ``fig`` (PNG, 110 dpi, tight) atomically to ``path``, creating its folder; close it; return the path."""
    return io.save_figure(fig, path, dpi=110)


def plot_class_examples(preset: SimulationPreset, path: str | Path, seed: int = 0) -> Path:
    """One lens and source rendered as each class: image, change from the no-substructure image, substructure kappa.

    The three rows share the main lens and the source (same parameter stream), so the middle column isolates
    what the substructure does to the arcs.
    """
    extent = [-preset.n_pixels * preset.pixel_scale / 2, preset.n_pixels * preset.pixel_scale / 2] * 2
    fig, axes = plt.subplots(3, 3, figsize=(10.5, 10), constrained_layout=True)
    for label, row in enumerate(axes):
        lens = sample_lenses(preset, label, 1, torch.Generator().manual_seed(seed))
        image = render_images(lens, preset, torch.Generator().manual_seed(seed + 1))[0, 0]
        smooth = lens.without_substructure()
        change = (render_images(lens, preset, noise=False) - render_images(smooth, preset, noise=False))[0, 0]
        kappa_sub = (true_convergence(lens, preset) - true_convergence(smooth, preset))[0, 0]
        limit = max(change.abs().max().item(), 1e-3)
        panels = (
            (image, "viridis", None, f"{_CLASS_TITLES[label]}\nobserved image"),
            (change, "RdBu_r", (-limit, limit), "noiseless image minus\nno-substructure image"),
            (kappa_sub, "magma", None, "substructure convergence"),
        )
        for ax, (data, cmap, limits, title) in zip(row, panels, strict=True):
            shown = ax.imshow(
                data.numpy(),
                origin="lower",
                cmap=cmap,
                extent=extent,
                vmin=limits and limits[0],
                vmax=limits and limits[1],
            )
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("x [arcsec]", fontsize=8)
            ax.set_ylabel("y [arcsec]", fontsize=8)
            fig.colorbar(shown, ax=ax, shrink=0.8)
    fig.suptitle(f"preset {preset.name}, seed {seed}: same lens and source in every row")
    return save_figure(fig, path)


def plot_roc_curves(
    probabilities: np.ndarray, labels: np.ndarray, class_names: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """One-vs-rest ROC curve per class (AUC in the legend), their macro average, and the chance diagonal.

    ``probabilities (N, K)``, ``labels (N,)`` integers in ``[0, K)``. The macro-average curve is the mean true-positive
    rate of the per-class curves on their merged false-positive rates; its legend shows ``macro_auc`` of
    :func:`~d4lenspinn.metrics.classification_metrics` (the mean of the per-class AUCs), as in the metrics tables.
    Classes absent from ``labels`` have no curve.
    """
    metrics = classification_metrics(probabilities, labels, class_names)
    probs, labels = np.asarray(probabilities, dtype=np.float64), np.asarray(labels)
    fig, ax = plt.subplots(figsize=(5.5, 5), constrained_layout=True)
    curves = []
    for k, name in enumerate(class_names):
        auc = metrics[f"auc_{name}"]
        if np.isnan(auc):
            continue
        fpr, tpr, _ = roc_curve(labels == k, probs[:, k])
        curves.append((fpr, tpr))
        ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC {auc:.3f})")
    if curves:
        grid = np.unique(np.concatenate([fpr for fpr, _ in curves]))
        mean_tpr = np.mean([np.interp(grid, fpr, tpr) for fpr, tpr in curves], axis=0)
        ax.plot(grid, mean_tpr, "k--", lw=1.5, label=f"macro average (AUC {metrics['macro_auc']:.3f})")
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls=":", label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", aspect="equal")
    ax.set_title(title or f"one-vs-rest ROC, {len(labels)} images", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)


def plot_confusion_matrix(
    confusion: np.ndarray | list, class_names: Sequence[str], path: str | Path, normalise: bool = True
) -> Path:
    """Confusion matrix ``(K, K)`` (rows = true class, columns = predicted), each cell annotated with its count and
    its fraction of the row; colours show the row fractions when ``normalise`` else the counts."""
    counts = np.asarray(confusion)
    if counts.shape != (len(class_names), len(class_names)):
        raise ValueError(f"confusion must have shape ({len(class_names)}, {len(class_names)}), got {counts.shape}")
    rows = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    shown, top = (fractions, 1) if normalise else (counts, max(counts.max(), 1))
    fig, ax = plt.subplots(figsize=(1.4 * len(class_names) + 2, 1.3 * len(class_names) + 1.2), constrained_layout=True)
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=top)
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            text = f"{counts[i, j]:g}\n{100 * fractions[i, j]:.1f}%"
            colour = "white" if shown[i, j] > 0.6 * top else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color=colour)
    ticks = range(len(class_names))
    ax.set(xticks=ticks, yticks=ticks, xticklabels=class_names, yticklabels=class_names)
    ax.set(xlabel="predicted class", ylabel="true class")
    ax.set_title(f"confusion matrix, {counts.sum():g} images", fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of true class" if normalise else "images")
    return save_figure(fig, path)


_TRAINING_PANELS = (
    ("loss", "linear", ("train_loss", "val_loss")),
    ("accuracy / AUC", "linear", ("train_accuracy", "val_accuracy", "val_macro_auc")),
    ("learning rate", "log", ("lr",)),
)


def plot_training_curves(history: Sequence[dict], path: str | Path) -> Path:
    """Loss, accuracy/AUC and learning-rate panels from per-epoch rows.

    Rows look like ``{"epoch": 1, "train_loss": .., "train_accuracy": .., "val_loss": .., "val_accuracy": ..,
    "val_macro_auc": .., "lr": ..}``; a key missing (or ``None``) in a row is skipped there, a panel with none of its
    keys is left out. Without ``"epoch"`` the row number (from 1) is used.
    """
    if not history:
        raise ValueError("history must hold at least one per-epoch row")
    panels = [
        (label, scale, [key for key in keys if any(row.get(key) is not None for row in history)])
        for label, scale, keys in _TRAINING_PANELS
    ]
    panels = [panel for panel in panels if panel[2]]
    if not panels:
        known = sorted(key for _, _, keys in _TRAINING_PANELS for key in keys)
        raise ValueError(f"history rows hold none of the plotted keys {known}")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), constrained_layout=True, squeeze=False)
    for ax, (label, scale, keys) in zip(axes[0], panels, strict=True):
        for key in keys:
            points = [(row.get("epoch", i + 1), row[key]) for i, row in enumerate(history) if row.get(key) is not None]
            epochs, values = zip(*points, strict=True)
            ax.plot(epochs, values, marker="o" if len(points) < 30 else None, ms=3, label=key)
        ax.set(xlabel="epoch", ylabel=label, yscale=scale)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_prediction_gallery(
    images: np.ndarray,
    outputs: dict[str, np.ndarray | None],
    labels: np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    true_kappa: np.ndarray | None = None,
    per_class: int = 2,
) -> Path:
    """The first ``per_class`` images of each class with what the model saw and made of them, one row per image.

    Columns: image ``(N, 1, H, W)``; then for each map present in ``outputs`` (numpy arrays, ``None`` for a model
    without it; other keys are ignored): predicted convergence ``"kappa" (N, 1, H, W)`` shown as log10(1 + kappa),
    reconstructed ``"source" (N, 1, m, m)``, and the residual image - ``"relensed" (N, 1, H, W)``; last the true
    convergence ``true_kappa (N, 1, H, W)`` when given, on the same colour scale as the predicted one. Row titles give
    the true class and the predicted probabilities ``(N, K)``. Maps use ``origin="lower"`` and carry no axis ticks.
    """
    images = np.asarray(images)
    probs, labels, names = np.asarray(probabilities), np.asarray(labels), list(class_names)
    classification_metrics(probs, labels, names)  # validates probabilities, labels and class names
    maps = {key: np.asarray(outputs[key]) for key in ("kappa", "source", "relensed") if outputs.get(key) is not None}
    if true_kappa is not None:
        maps["true_kappa"] = np.asarray(true_kappa)
    for key, array in {"images": images, **maps}.items():
        if array.ndim != 4 or array.shape[:2] != (len(labels), 1):
            raise ValueError(f"{key} must have shape ({len(labels)}, 1, H, W) to match labels, got {array.shape}")
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    chosen = [i for k in range(len(names)) for i in np.flatnonzero(labels == k)[:per_class]]
    columns = ["image"] + [key for key in ("kappa", "source", "relensed", "true_kappa") if key in maps]
    headers = {
        "kappa": "predicted log10(1 + kappa)",
        "source": "reconstructed source",
        "relensed": "residual: image - relensed",
        "true_kappa": "true log10(1 + kappa)",
    }
    fig, axes = plt.subplots(
        len(chosen),
        len(columns),
        figsize=(2.9 * len(columns), 2.4 * len(chosen)),
        squeeze=False,
        gridspec_kw={"hspace": 0.35, "wspace": 0.25, "top": 1 - 0.7 / (2.4 * len(chosen))},
    )
    for row, i in zip(axes, chosen, strict=True):
        log_kappa = {
            key: np.log10(1 + np.clip(maps[key][i, 0], 0, None)) for key in ("kappa", "true_kappa") if key in maps
        }
        kappa_max = max([1e-6] + [float(m.max()) for m in log_kappa.values()])  # shared by predicted and true
        for ax, column in zip(row, columns, strict=True):
            if column == "image":
                data, cmap, limits = images[i, 0], "viridis", (None, None)
                title = f"#{i} true: {names[labels[i]]}\n" + ", ".join(
                    f"{name} {p:.2f}" for name, p in zip(names, probs[i], strict=True)
                )
            elif column in log_kappa:
                data, cmap, limits, title = log_kappa[column], "magma", (0, kappa_max), headers[column]
            elif column == "source":
                data, cmap, limits, title = maps["source"][i, 0], "viridis", (None, None), headers[column]
            else:
                data = images[i, 0] - maps["relensed"][i, 0]
                limit = max(float(np.abs(data).max()), 1e-6)
                cmap, limits, title = "RdBu_r", (-limit, limit), headers[column]
            shown = ax.imshow(data, origin="lower", cmap=cmap, vmin=limits[0], vmax=limits[1])
            ax.set_title(title, fontsize=8)
            ax.set(xticks=[], yticks=[])
            fig.colorbar(shown, ax=ax, shrink=0.8).ax.tick_params(labelsize=6)
    title = f"predictions on {len(chosen)} images (probabilities in the order {', '.join(names)})"
    fig.suptitle(title, fontsize=10, y=1 - 0.15 / (2.4 * len(chosen)))
    return save_figure(fig, path)


def plot_detections(
    images: np.ndarray,
    model: np.ndarray,
    residual: np.ndarray,
    delta_chi2: np.ndarray,
    half_width: float,
    found: np.ndarray,
    path: str | Path,
    count: int = 6,
) -> Path:
    """The first ``count`` images of a detection run (``d4lenspinn detect --figure``), one row each: the image, the
    fitted smooth model and the normalised residual ``(N, n, n)``, and the scan's ``delta chi^2`` map ``(N, m, m)``
    with its largest value circled. ``half_width`` [arcsec] is half the field's side; ``found (N, 3)`` holds the
    largest ``delta chi^2``, its ``x`` and ``y`` [arcsec] (NaN where the fit failed). Maps use ``origin="lower"``."""
    shown = min(count, len(images))
    if shown < 1:
        raise ValueError("no image to plot")
    extent = (-half_width, half_width, -half_width, half_width)
    fig, axes = plt.subplots(shown, 4, figsize=(11.6, 2.6 * shown), squeeze=False, gridspec_kw={"hspace": 0.4})
    for row, i in zip(axes, range(shown), strict=True):
        limit = max(float(np.abs(residual[i]).max()), 1e-6)
        panels = (
            (images[i], "viridis", None, None, f"#{i} image"),
            (model[i], "viridis", None, None, "smooth lens fitted"),
            (residual[i], "RdBu_r", -limit, limit, "(image - model) / sigma"),
            (delta_chi2[i], "magma", 0, None, f"subhalo scan: max delta chi^2 {found[i, 0]:.3g}"),
        )
        for ax, (data, cmap, low, high, title) in zip(row, panels, strict=True):
            picture = ax.imshow(data, origin="lower", cmap=cmap, vmin=low, vmax=high, extent=extent)
            ax.set_title(title, fontsize=8)
            ax.tick_params(labelsize=6)
            fig.colorbar(picture, ax=ax, shrink=0.8).ax.tick_params(labelsize=6)
        if np.isfinite(found[i, 1]):
            for ax in row[2:]:
                ax.scatter([found[i, 1]], [found[i, 2]], s=120, facecolors="none", edgecolors="lime", linewidths=1.2)
    for ax in axes[-1]:
        ax.set_xlabel("x [arcsec]", fontsize=7)
    return save_figure(fig, path)


def plot_detection_classes(panels: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path) -> Path:
    """What the class model of ``--classes-from`` reads, one column per detect run, coloured by class: above, each
    image's largest delta chi^2 against how far the best trial subhalo lies from the Einstein ring (the first and the
    fourth of :func:`~d4lenspinn.detection_classes.class_features`); below, the vortex scan's largest delta chi^2
    against the subhalo scan's (the fifth and the first; on the diagonal a line explains as much as a point). The
    titles give each run's median peak SNR (the third). ``panels`` maps a name to ``(features (N, 5), labels
    (N,))``; failed fits (NaN) are left out."""
    if not panels:
        raise ValueError("no run to plot")
    fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 7.4), squeeze=False, sharey="row")
    for column, (name, (features, labels)) in enumerate(panels.items()):
        finite = np.isfinite(features).all(axis=1)
        points, lines = np.expm1(features[:, 0]), np.expm1(features[:, 4])
        for label, title in enumerate(_CLASS_TITLES):
            chosen = finite & (labels == label)
            axes[0, column].scatter(features[chosen, 3], points[chosen], s=6, alpha=0.5, label=title)
            axes[1, column].scatter(points[chosen], lines[chosen], s=6, alpha=0.5, label=title)
        axes[0, column].set(yscale="log", xlabel="|log(r / theta_E)| of the best trial subhalo")
        axes[0, column].set_title(f"{name}: median peak SNR {np.exp(np.median(features[finite, 2])):.3g}", fontsize=9)
        axes[1, column].set(xscale="log", yscale="log", xlabel="largest delta chi^2 of the subhalo scan")
        axes[1, column].axline((1, 1), (10, 10), color="0.5", linewidth=0.8)  # the diagonal, straight in log-log
    axes[0, 0].set_ylabel("largest delta chi^2 of the subhalo scan")
    axes[1, 0].set_ylabel("largest delta chi^2 of the vortex scan")
    axes[0, 0].legend(fontsize=7, markerscale=2)
    return save_figure(fig, path)
