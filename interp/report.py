"""All interpretability studies for one trained checkpoint, written to a folder (``d4lenspinn interp``).

    summary = run_studies("runs/demo/best.pt", "runs/demo/interp")        # report.md, *.json, figures/*.png

Inputs are fresh lenses simulated from the checkpoint's preset (or ``preset``) with ``seed``, so every study has
the simulator's ground truth and same-lens pairs; ``data`` (a dataset folder or file) replaces the simulated images
of the equivariance and attribution studies by the first labelled images of each class there (read as
``evaluate --data`` reads it: its ``val/`` when it has one). The studies are those registered in
:mod:`interp.studies`, run in registration order; the built-in ones:

* ``equivariance``: :func:`interp.equivariance.equivariance_errors` on ``n_images`` images;
* ``patching``: :func:`interp.patching.activation_patching` on ``n_pairs`` subhalo/no-substructure pairs,
  vortex/no-substructure pairs, and image/rotated-image pairs (``rot90``; skipped for a D4-invariant model, whose
  logits do not change);
* ``probes``: linear probes for the class, the simulator truth and the D4 element, ``n_probe`` lenses per class;
* ``attribution``: Integrated Gradients and Grad-CAM on two images per class, and (models with a kappa map) how
  well the predicted kappa localises the true substructure on ``n_pairs`` lenses of each substructure class.

Each study writes ``<name>.json`` (its result's ``to_json()``), its figures into ``figures/`` and its section of
``report.md``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from d4lenspinn.checkpoint import ModelCard, load_trained_model
from d4lenspinn.classes import CLASS_NAMES
from d4lenspinn.data import prepare_test_data
from d4lenspinn.data.presets import SimulationPreset, get_preset
from d4lenspinn.io import write_text

from .hooks import default_layers, forward_order
from .studies import get_study, study_names
from .studies.context import StudyContext, simulated_lenses

__all__ = ["run_studies"]


def _load(checkpoint: str | Path, preset: str | None, device: str) -> tuple[nn.Module, ModelCard, SimulationPreset]:
    """The checkpoint's model and card, and ``preset`` (default: the checkpoint's), which must make its image size."""
    model, config, card = load_trained_model(checkpoint, device)
    preset_obj = get_preset(preset or config.data.preset)
    if preset_obj.n_pixels != card.image_size:
        raise ValueError(
            f"preset {preset_obj.name} makes {preset_obj.n_pixels} px images, the model takes {card.image_size} px; "
            "pass a preset of the model's size"
        )
    return model, card, preset_obj


def _study_images(
    data: str | Path | None, preset: SimulationPreset, n_images: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """About ``n_images`` images ``(B, 1, n, n)`` and labels ``(B,)``, the same number of each class: the first
    of each class in ``data``'s test split, or lenses simulated from ``preset`` with ``seed``."""
    per_class = max(1, n_images // len(CLASS_NAMES))  # the first images of each class, not of the first class
    if data is None:
        images, sample = simulated_lenses(preset, per_class, seed)
        return images, sample.label
    test = prepare_test_data(data).test
    chosen = [int(i) for k in range(len(CLASS_NAMES)) for i in (test.labels == k).nonzero()[0][:per_class]]
    return torch.stack([test[i][0] for i in chosen]), torch.tensor([int(test[i][1]) for i in chosen])


def run_studies(
    checkpoint: str | Path,
    out: str | Path,
    data: str | Path | None = None,
    studies: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    preset: str | None = None,
    n_images: int = 8,
    n_pairs: int = 32,
    n_probe: int = 100,
    n_bootstrap: int = 1000,
    seed: int = 12345,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run ``studies`` (default: every registered study) on ``checkpoint``; write ``report.md``, one JSON per study
    and ``figures/`` into ``out``.

    ``layers`` default to :func:`interp.hooks.default_layers` (taken in forward order). ``progress`` (optional
    callable taking a message) is told when each study starts. Returns the checkpoint, model, preset, seed, each
    study's JSON under its name, and the report's path.
    """
    names = study_names()
    unknown = sorted(set(studies or ()) - set(names))
    if unknown:
        raise ValueError(f"unknown studies {unknown}; choose from {list(names)}")
    model, card, preset_obj = _load(checkpoint, preset, device)
    images, labels = _study_images(data, preset_obj, n_images, seed)
    images = images.to(device)
    context = StudyContext(
        model=model,
        model_name=card.model,
        layers=forward_order(model, images[:1], default_layers(model) if layers is None else layers),
        preset=preset_obj,
        images=images,
        labels=labels,
        device=device,
        seed=seed,
        n_pairs=n_pairs,
        n_probe=n_probe,
        n_bootstrap=n_bootstrap,
    )
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    tell = progress or (lambda message: None)
    summary: dict = {"checkpoint": str(checkpoint), "model": card.model, "preset": preset_obj.name, "seed": seed}
    sections = [f"# Interpretability of `{checkpoint}` ({card.model})"]
    for name in names:
        if studies is None or name in studies:
            tell(name)
            result = get_study(name)(context)
            summary[name] = result.to_json()
            write_text(out / f"{name}.json", json.dumps(summary[name], indent=1))
            result.figures(out / "figures")
            sections.append(result.markdown())
    write_text(out / "report.md", "\n\n".join(sections) + "\n")
    summary["report"] = str(out / "report.md")
    return summary
