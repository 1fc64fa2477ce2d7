"""Evaluation of a trained checkpoint: predictions and metrics with bootstrap confidence intervals, with and without
D4 TTA (:func:`evaluate`), then a markdown report with figures (:func:`write_report`).

    evaluation = evaluate("runs/demo/best.pt")        # or: d4lenspinn evaluate --checkpoint runs/demo/best.pt
    evaluation.predictions.probabilities["D4 TTA"]    # (N, K); .labels (N,); evaluation.reports: metrics + intervals
    files = write_report(evaluation)                  # metrics.json, report.md, figures/*.png

The test split is rebuilt from the training config and seed (:func:`d4lenspinn.data.prepare_data`), so it is
exactly the images the run never saw; with ``data_source`` every labelled image of that folder or HDF5 file is the
test set instead (:func:`d4lenspinn.data.prepare_test_data`: its ``val/`` by default, the DeepLense layout).
The report starts with the checkpoint's model card, and the data must agree with it (image size, pixel scale,
classes). :func:`write_report` writes into the checkpoint's run directory (or ``out``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .checkpoint import ModelCard, load_trained_model
from .classes import CLASS_NAMES
from .data import DataSplits, batch_loader, prepare_data, prepare_test_data
from .data.simulator import true_convergence
from .device import resolve_device
from .io import write_text
from .metrics import evaluation_report, format_metrics_table
from .models import count_parameters
from .plots import plot_confusion_matrix, plot_prediction_gallery, plot_roc_curves, plot_training_curves
from .tta import collect_predictions, inference_network

__all__ = ["Evaluation", "Gallery", "Predictions", "ReportFiles", "check_data_matches_card", "evaluate", "write_report"]

GALLERY_PER_CLASS = 2  # gallery images per class: the first test images of each class


@dataclass(frozen=True)
class Predictions:
    """Test-set predictions: ``probabilities`` per TTA setting (``"no TTA"``, and ``"D4 TTA"`` when asked for),
    each ``(N, K)`` class probabilities; ``labels (N,)`` the true classes; ``indices (N,)`` each image's position in
    the test set (``splits.test[i]``)."""

    probabilities: dict[str, np.ndarray]
    labels: np.ndarray
    indices: np.ndarray


@dataclass(frozen=True)
class Gallery:
    """The first :data:`GALLERY_PER_CLASS` test images of each class and the model's maps of them: ``indices (G,)``
    test-set positions, ``images (G, 1, n, n)``, ``maps`` name (kappa, source, relensed) -> ``(G, 1, n, n)`` or
    ``None`` where the model has no such map, ``true_kappa (G, 1, n, n)`` when the data is our simulation."""

    indices: np.ndarray
    images: np.ndarray
    maps: dict[str, np.ndarray | None]
    true_kappa: np.ndarray | None


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate` measured; :func:`write_report` turns it into files."""

    checkpoint: Path
    card: ModelCard
    parameters: int  # trainable parameters of the model
    test_set: str  # which images were the test set, in words
    n_bootstrap: int  # resamples of the confidence intervals
    predictions: Predictions
    reports: dict[str, dict]  # TTA setting -> metrics.evaluation_report (metrics and 95% intervals)
    gallery: Gallery
    history: list[dict]  # the run's metrics.jsonl rows (empty when it has none)

    @property
    def n_test(self) -> int:
        return len(self.predictions.labels)

    def table(self) -> str:
        """Markdown table of the metrics, one column per TTA setting."""
        return format_metrics_table(self.reports)

    def to_json(self) -> dict:
        """What ``metrics.json`` holds: checkpoint, model, model card, test image count and the reports."""
        return {
            "checkpoint": str(self.checkpoint),
            "model": self.card.model,
            "model_card": self.card.describe(),
            "n_test": self.n_test,
            "reports": self.reports,
        }


@dataclass(frozen=True)
class ReportFiles:
    """The files :func:`write_report` wrote: ``report.md``, ``metrics.json`` and the figures (title -> PNG)."""

    report: Path
    metrics: Path
    figures: dict[str, Path]


def evaluate(
    checkpoint: str | Path,
    data_source: str | None = None,
    tta: bool = True,
    skip_bad: bool | None = None,
    split: str = "auto",
) -> Evaluation:
    """Predictions and metrics of ``checkpoint`` on its run's test split, or on every labelled image of
    ``data_source``; writes nothing (see :func:`write_report`).

    ``split`` (with ``data_source``): ``"auto"`` (``val/`` when there is one, else everything), ``"val"``,
    ``"train"`` or ``"all"``. ``skip_bad`` overrides the run's ``data.skip_bad`` (drop bad files with one warning
    instead of failing). ``tta``: also predict with D4 test-time augmentation (the ``"D4 TTA"`` entries).
    """
    checkpoint = Path(checkpoint)
    device = resolve_device("auto")
    model, config, card = load_trained_model(checkpoint, device)
    if skip_bad is not None:
        config = replace(config, data=replace(config.data, skip_bad=skip_bad))
    if data_source is None:
        splits = prepare_data(config.data, seed=config.seed)
        test_set = f"the run's test split: scheme `{config.data.scheme}`, seed {config.seed}"
    else:
        splits = prepare_test_data(data_source, split, skip_bad=config.data.skip_bad)
        test_set = f"every labelled image of `{data_source}`, split `{split}`"
    check_data_matches_card(splits, card, checkpoint)

    loader = batch_loader(splits.test, config.data.batch_size)
    settings = {"no TTA": False, "D4 TTA": True} if tta else {"no TTA": False}
    probabilities = {}
    network = inference_network(model)
    for label, with_tta in settings.items():
        probabilities[label], labels = collect_predictions(network, loader, device, tta=with_tta)
    predictions = Predictions(probabilities, labels, np.arange(len(labels)))
    reports = {
        label: evaluation_report(values, labels, CLASS_NAMES, config.n_bootstrap, config.seed)
        for label, values in probabilities.items()
    }
    return Evaluation(
        checkpoint=checkpoint,
        card=card,
        parameters=count_parameters(model),
        test_set=test_set,
        n_bootstrap=config.n_bootstrap,
        predictions=predictions,
        reports=reports,
        gallery=_gallery(network, splits, labels, device),
        history=_history(checkpoint.parent / "metrics.jsonl"),
    )


def _gallery(model, splits: DataSplits, labels: np.ndarray, device: torch.device) -> Gallery:
    indices = np.concatenate([np.flatnonzero(labels == c)[:GALLERY_PER_CLASS] for c in range(len(CLASS_NAMES))])
    images = torch.stack([splits.test[int(i)][0] for i in indices])
    with torch.no_grad():
        out = model(images.to(device))
    maps = {
        name: None if getattr(out.maps, name, None) is None else getattr(out.maps, name).cpu().numpy()
        for name in ("kappa", "source", "relensed")
    }
    return Gallery(indices, images.numpy(), maps, _true_kappa(splits, indices))


def _true_kappa(splits: DataSplits, indices: np.ndarray) -> np.ndarray | None:
    """True convergence of the gallery images (test-set positions ``indices``) when the data is our simulation."""
    table = None if splits.truth is None else splits.truth.get("test")
    if table is None:
        return None
    return true_convergence(table.lenses.select(torch.as_tensor(indices)), table.preset).numpy()


def _history(path: Path) -> list[dict]:
    """The rows of a run's ``metrics.jsonl`` (one per epoch), or none when the file is missing."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_report(evaluation: Evaluation, out: str | Path | None = None) -> ReportFiles:
    """Write ``metrics.json``, ``report.md`` and ``figures/*.png`` (ROC and confusion matrix per TTA setting,
    training curves when the run has them, the prediction gallery) into ``out`` (default: the checkpoint's run
    directory)."""
    out_dir = Path(out) if out is not None else evaluation.checkpoint.parent
    figures = _write_figures(evaluation, out_dir / "figures")
    metrics_path = write_text(out_dir / "metrics.json", json.dumps(evaluation.to_json(), indent=2))
    card = evaluation.card
    lines = [
        f"# Evaluation of `{evaluation.checkpoint}`",
        "",
        f"Model card: {card.describe()}.",
        "",
        f"Model `{card.model}`, {evaluation.n_test} test images ({evaluation.test_set}); 95% bootstrap intervals "
        f"({evaluation.n_bootstrap} resamples, stratified by class).",
        "",
        evaluation.table(),
        "",
    ]
    lines += [f"## {name}\n\n![{name}]({path.relative_to(out_dir).as_posix()})\n" for name, path in figures.items()]
    report_path = write_text(out_dir / "report.md", "\n".join(lines))
    return ReportFiles(report=report_path, metrics=metrics_path, figures=figures)


def _write_figures(evaluation: Evaluation, folder: Path) -> dict[str, Path]:
    """Every figure of the report, title -> PNG path in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    predictions, plots = evaluation.predictions, {}
    for label, probabilities in predictions.probabilities.items():
        suffix = label.replace(" ", "_").lower()
        plots[f"ROC ({label})"] = plot_roc_curves(
            probabilities,
            predictions.labels,
            CLASS_NAMES,
            folder / f"roc_{suffix}.png",
            title=f"{evaluation.card.model}, test set, {label}",
        )
        confusion = np.array(evaluation.reports[label]["metrics"]["confusion_matrix"])
        plots[f"confusion matrix ({label})"] = plot_confusion_matrix(
            confusion, CLASS_NAMES, folder / f"confusion_{suffix}.png"
        )
    if evaluation.history:
        plots["training curves"] = plot_training_curves(evaluation.history, folder / "training_curves.png")
    gallery = evaluation.gallery
    plots["gallery"] = plot_prediction_gallery(
        gallery.images,
        gallery.maps,
        predictions.labels[gallery.indices],
        predictions.probabilities["no TTA"][gallery.indices],
        CLASS_NAMES,
        folder / "gallery.png",
        true_kappa=gallery.true_kappa,
    )
    return plots


def check_data_matches_card(splits: DataSplits, card: ModelCard, checkpoint: str | Path) -> None:
    """Raise ``ValueError`` naming both values when the data's image size, pixel scale or classes differ from what
    the model card of ``checkpoint`` says the model expects."""
    if splits.image_size != card.image_size:
        raise ValueError(
            f"{checkpoint} holds a model for {card.image_size}x{card.image_size} images but the data has "
            f"{splits.image_size}x{splits.image_size} images"
        )
    if card.contradicts_pixel_scale(splits.pixel_scale):
        raise ValueError(
            f"{checkpoint} holds a model for {card.pixel_scale} arcsec/pixel but the data has "
            f"{splits.pixel_scale} arcsec/pixel"
        )
    if tuple(splits.class_names) != tuple(card.class_names):
        raise ValueError(
            f"the data's classes {list(splits.class_names)} differ from the model's {list(card.class_names)}"
        )
