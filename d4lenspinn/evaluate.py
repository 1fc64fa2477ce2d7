"""Evaluation of a trained checkpoint: metrics with bootstrap confidence intervals, with and without D4 TTA, plots
and a markdown report.

    report = evaluate("runs/demo/best.pt")            # or: d4lenspinn evaluate --checkpoint runs/demo/best.pt

Writes ``metrics.json``, ``report.md`` and ``figures/*.png`` into the checkpoint's run directory (or ``out``).
The test split is rebuilt from the training config and seed (:func:`d4lenspinn.data.prepare_data`), so it is
exactly the images the run never saw; with ``data_source`` every labelled image of that folder or HDF5 file is the
test set instead (:func:`d4lenspinn.data.prepare_test_data`: its ``val/`` by default, the DeepLense layout).
The report starts with the checkpoint's model card, and the data must agree with it (image size, pixel scale,
classes).
"""

from __future__ import annotations

import json
from dataclasses import replace
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
from .plots import plot_confusion_matrix, plot_prediction_gallery, plot_roc_curves, plot_training_curves
from .tta import collect_predictions

__all__ = ["evaluate"]


def _gallery_maps(model, images: torch.Tensor, device: torch.device) -> dict:
    with torch.no_grad():
        out = model(images.to(device))
    return {
        name: getattr(out.maps, name).cpu().numpy() if hasattr(out.maps, name) else None
        for name in ("kappa", "source", "relensed")
    }


def _true_kappa(splits: DataSplits, indices: np.ndarray) -> np.ndarray | None:
    """True convergence of the gallery images (test-set positions ``indices``) when the data is our simulation."""
    table = None if splits.truth is None else splits.truth.get("test")
    if table is None:
        return None
    return true_convergence(table.lenses.select(torch.as_tensor(indices)), table.preset).numpy()


def evaluate(
    checkpoint: str | Path,
    data_source: str | None = None,
    tta: bool = True,
    out: str | Path | None = None,
    skip_bad: bool | None = None,
    split: str = "auto",
) -> dict:
    """Evaluate ``checkpoint`` on its run's test split, or on every labelled image of ``data_source``.

    ``split`` (with ``data_source``): ``"auto"`` (``val/`` when there is one, else everything), ``"val"``,
    ``"train"`` or ``"all"``. ``skip_bad`` overrides the run's ``data.skip_bad`` (drop bad files with one warning
    instead of failing).

    Returns what ``metrics.json`` holds (``reports`` per TTA setting: metrics and 95% intervals) plus ``report``
    (path of report.md), ``table`` (markdown) and ``figures`` (title -> PNG path).
    """
    checkpoint = Path(checkpoint)
    device = resolve_device("auto")
    model, config, card = load_trained_model(checkpoint, device)
    if skip_bad is not None:
        config = replace(config, data=replace(config.data, skip_bad=skip_bad))
    if data_source is None:
        splits = prepare_data(config.data, seed=config.seed)
    else:
        splits = prepare_test_data(data_source, split, skip_bad=config.data.skip_bad)
    check_data_matches_card(splits, card, checkpoint)
    out_dir = Path(out) if out is not None else checkpoint.parent
    figures = out_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)

    loader = batch_loader(splits.test, config.data.batch_size)
    predictions = {"no TTA": collect_predictions(model, loader, device, tta=False)}
    if tta:
        predictions["D4 TTA"] = collect_predictions(model, loader, device, tta=True)
    reports, plots = {}, {}
    for label, (probabilities, labels) in predictions.items():
        reports[label] = evaluation_report(probabilities, labels, CLASS_NAMES, config.n_bootstrap, config.seed)
        suffix = label.replace(" ", "_").lower()
        plots[f"ROC ({label})"] = plot_roc_curves(
            probabilities,
            labels,
            CLASS_NAMES,
            figures / f"roc_{suffix}.png",
            title=f"{card.model}, test set, {label}",
        )
        plots[f"confusion matrix ({label})"] = plot_confusion_matrix(
            np.array(reports[label]["metrics"]["confusion_matrix"]), CLASS_NAMES, figures / f"confusion_{suffix}.png"
        )
    single_probabilities, labels = predictions["no TTA"]

    history_path = checkpoint.parent / "metrics.jsonl"
    if history_path.exists():
        history = [json.loads(line) for line in history_path.read_text().splitlines() if line.strip()]
        plots["training curves"] = plot_training_curves(history, figures / "training_curves.png")

    gallery_index = np.concatenate([np.flatnonzero(labels == c)[:2] for c in range(len(CLASS_NAMES))])
    images = torch.stack([splits.test[int(i)][0] for i in gallery_index])
    plots["gallery"] = plot_prediction_gallery(
        images.numpy(),
        _gallery_maps(model, images, device),
        labels[gallery_index],
        single_probabilities[gallery_index],
        CLASS_NAMES,
        figures / "gallery.png",
        true_kappa=_true_kappa(splits, gallery_index),
    )

    result = {
        "checkpoint": str(checkpoint),
        "model": card.model,
        "model_card": card.describe(),
        "n_test": len(splits.test),
        "reports": reports,
    }
    write_text(out_dir / "metrics.json", json.dumps(result, indent=2))
    if data_source is None:
        test_set = f"the run's test split: scheme `{config.data.scheme}`, seed {config.seed}"
    else:
        test_set = f"every labelled image of `{data_source}`, split `{split}`"
    table = format_metrics_table(reports)
    lines = [
        f"# Evaluation of `{checkpoint}`",
        "",
        f"Model card: {card.describe()}.",
        "",
        f"Model `{card.model}`, {len(splits.test)} test images ({test_set}); 95% bootstrap intervals "
        f"({config.n_bootstrap} resamples, stratified by class).",
        "",
        table,
        "",
    ]
    lines += [f"## {name}\n\n![{name}]({path.relative_to(out_dir).as_posix()})\n" for name, path in plots.items()]
    write_text(out_dir / "report.md", "\n".join(lines))
    result["report"] = str(out_dir / "report.md")
    result["table"] = table
    result["figures"] = {name: str(path) for name, path in plots.items()}
    return result


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
