"""All interpretability studies for one trained checkpoint, written to a folder (``d4lenspinn interp``).

    summary = run_studies("runs/demo/best.pt", "runs/demo/interp")        # report.md, *.json, figures/*.png

Inputs are fresh lenses simulated from the checkpoint's preset (or ``preset``) with ``seed``, so every study has
the simulator's ground truth and same-lens pairs; ``data`` (a dataset folder or file) replaces the simulated images
of the equivariance and attribution studies by the first labelled images of each class there (read as
``evaluate --data`` reads it: its ``val/`` when it has one). Studies:

* ``equivariance``: :func:`interp.equivariance.equivariance_errors` on ``n_images`` images;
* ``patching``: :func:`interp.patching.activation_patching` on ``n_pairs`` subhalo/no-substructure pairs,
  vortex/no-substructure pairs, and image/rotated-image pairs (``rot90``; skipped for a D4-invariant model, whose
  logits do not change);
* ``probes``: linear probes for the class, the simulator truth and the D4 element, ``n_probe`` lenses per class;
* ``attribution``: Integrated Gradients and Grad-CAM on two images per class, and (models with a kappa map) how
  well the predicted kappa localises the true substructure on ``n_pairs`` lenses of each substructure class.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from d4lenspinn.checkpoint import load_trained_model
from d4lenspinn.classes import CLASS_NAMES, NO_SUBSTRUCTURE, SUBHALOS, SUBSTRUCTURE_LABELS
from d4lenspinn.data import prepare_test_data
from d4lenspinn.data.presets import SimulationPreset, get_preset
from d4lenspinn.data.simulator import LensSample, render_images, sample_lenses
from d4lenspinn.io import write_text
from d4lenspinn.models import capabilities_of
from d4lenspinn.symmetry import D4_ELEMENTS

from .attribution import (
    default_cam_layer,
    grad_cam,
    integrated_gradients,
    kappa_localisation,
    plot_attributions,
    plot_kappa_localisation,
    predicted_kappa,
)
from .equivariance import equivariance_errors, format_equivariance_table, plot_equivariance, summarise_equivariance
from .hooks import default_layers, forward_order
from .pairs import d4_pairs, substructure_pairs
from .patching import activation_patching, plot_patching
from .probes import collect_pooled, d4_element_dataset, plot_probes, probe_layers, simulator_targets
from .studies import STUDIES

__all__ = ["STUDIES", "run_studies"]


@dataclass
class _Setup:
    """What every study needs: the model, its layers (forward order), the preset, and where to write."""

    model: torch.nn.Module
    name: str
    layers: list[str]
    preset: SimulationPreset
    out: Path
    device: str
    seed: int
    n_bootstrap: int

    @property
    def figures(self) -> Path:
        return self.out / "figures"

    def write_json(self, name: str, value) -> None:
        write_text(self.out / f"{name}.json", json.dumps(value, indent=1))


def _simulated(preset, per_class: int, seed: int):
    """``per_class`` lenses of each class: images ``(3 per_class, 1, n, n)`` and their LensSample."""
    labels = range(len(CLASS_NAMES))
    samples = [sample_lenses(preset, label, per_class, torch.Generator().manual_seed(seed + label)) for label in labels]
    sample = LensSample.concatenate(samples)
    return render_images(sample, preset, torch.Generator().manual_seed(seed + len(labels))), sample


def _equivariance(setup: _Setup, images: torch.Tensor) -> tuple[list, list[str]]:
    rows = equivariance_errors(setup.model, images, setup.layers)
    setup.write_json("equivariance", rows)
    title = f"{setup.name}: D4 equivariance error per layer"
    plot_equivariance(rows, setup.figures / "equivariance.png", title=title)
    lines = [
        "## Equivariance",
        "",
        f"Relative error ||f(gx) - g f(x)|| / ||f(x)|| over {len(images)} images, max and mean over the 7 "
        "non-identity elements.",
        "",
        format_equivariance_table(rows),
        "",
        "![equivariance](figures/equivariance.png)",
        "",
    ]
    return summarise_equivariance(rows), lines


def _patching(setup: _Setup, n_pairs: int) -> tuple[dict, list[str]]:
    def run(clean, corrupted, target):
        return activation_patching(
            setup.model,
            clean,
            corrupted,
            target,
            NO_SUBSTRUCTURE,
            setup.layers,
            n_bootstrap=setup.n_bootstrap,
            seed=setup.seed,
        )

    results = {}
    for label in SUBSTRUCTURE_LABELS:
        clean, corrupted, _ = substructure_pairs(setup.preset, label, n_pairs, seed=setup.seed + 10 * label)
        key = f"{CLASS_NAMES[label]} vs {CLASS_NAMES[NO_SUBSTRUCTURE]}"
        results[key] = run(clean.to(setup.device), corrupted.to(setup.device), label)
    invariant = capabilities_of(setup.model).invariant  # an image and its rotation give the same logits: no gap
    if not invariant:
        clean, _, _ = substructure_pairs(setup.preset, SUBHALOS, n_pairs, seed=setup.seed + 30)
        results["image vs rot90 image"] = run(*d4_pairs(clean.to(setup.device), D4_ELEMENTS[1]), SUBHALOS)
    summary = {
        key: {"gap_ci95": r.gap_ci95, "final_layer": r.final_layer, "rows": r.rows()} for key, r in results.items()
    }
    setup.write_json("patching", summary)
    title = f"{setup.name}: activation patching ({n_pairs} pairs each)"
    plot_patching(results, setup.figures / "patching.png", title=title)
    lines = ["## Activation patching", "", "| layer | " + " | ".join(results) + " |", "|---|" + "---:|" * len(results)]
    for index, layer in enumerate(next(iter(results.values())).layers):
        cells = [f"{r.effect[index]:.3f} [{r.ci95[index, 0]:.3f}, {r.ci95[index, 1]:.3f}]" for r in results.values()]
        lines.append(f"| `{layer}` | " + " | ".join(cells) + " |")
    gaps = ", ".join(f"{key}: [{r.gap_ci95[0]:.3f}, {r.gap_ci95[1]:.3f}]" for key, r in results.items())
    lines += [
        "",
        f"Normalised effect (0 none, 1 full recovery) with 95% bootstrap intervals. Mean clean - corrupted logit "
        f"difference (95% interval): {gaps}; an interval that includes 0 leaves the effect ill-defined."
        + (
            " The model is D4-invariant, so the image vs rot90 image pairs (no logit gap) are skipped."
            if invariant
            else ""
        ),
        "",
        "![patching](figures/patching.png)",
        "",
    ]
    return summary, lines


def _probes(setup: _Setup, n_probe: int) -> tuple[list, list[str]]:
    images, sample = _simulated(setup.preset, n_probe, setup.seed + 100)
    pooled = collect_pooled(setup.model, images.to(setup.device), setup.layers)
    rows = probe_layers(pooled, simulator_targets(sample), seed=setup.seed)
    moved, element = d4_element_dataset(images, seed=setup.seed)
    pooled_moved = collect_pooled(setup.model, moved.to(setup.device), setup.layers)
    rows += probe_layers(pooled_moved, {"d4_element": (element, "classification")}, seed=setup.seed)
    setup.write_json("probes", rows)
    plot_probes(rows, setup.figures / "probes.png")
    targets = list(dict.fromkeys(row["target"] for row in rows))
    lines = [
        "## Linear probes",
        "",
        "5-fold cross-validated score of a linear probe on spatially pooled activations "
        f"({len(CLASS_NAMES) * n_probe} lenses); in brackets the same probe on shuffled targets. Accuracy for class "
        "and d4_element, R^2 otherwise.",
        "",
        "| layer | " + " | ".join(targets) + " |",
        "|---|" + "---:|" * len(targets),
    ]
    by_key = {(row["layer"], row["target"]): row for row in rows}
    for layer in dict.fromkeys(row["layer"] for row in rows):
        cells = [
            f"{by_key[layer, t]['score']:.2f} ({by_key[layer, t]['shuffled']:.2f})" if (layer, t) in by_key else "-"
            for t in targets
        ]
        lines.append(f"| `{layer}` | " + " | ".join(cells) + " |")
    return rows, lines + ["", "![probes](figures/probes.png)", ""]


def _attribution(setup: _Setup, images: torch.Tensor, labels: torch.Tensor, n_pairs: int) -> tuple[dict, list[str]]:
    picked = torch.cat([torch.nonzero(labels == k).flatten()[:2] for k in range(len(CLASS_NAMES))])
    chosen, targets = images[picked], labels[picked].to(setup.device)
    ig, delta = integrated_gradients(setup.model, chosen, targets)
    maps = {"Integrated Gradients": ig.cpu()}
    try:
        cam_layer = default_cam_layer(setup.model)
    except ValueError:  # only escnn layers (GeometricTensor outputs): no plain feature map to weight
        cam_layer = None
    if cam_layer is not None:
        maps[f"Grad-CAM ({cam_layer})"] = grad_cam(setup.model, chosen, targets, cam_layer).cpu()
    plot_attributions(
        chosen.cpu(), maps, setup.figures / "attributions.png", titles=[CLASS_NAMES[int(k)] for k in targets]
    )
    gap = (ig.flatten(1).sum(1) - delta).abs().clamp_min(1e-12)  # |F(x) - F(baseline)|
    summary = {
        "ig_completeness_delta": delta.cpu().tolist(),
        "ig_relative_delta_max": float((delta.abs() / gap).max()),
        "cam_layer": cam_layer,
    }
    lines = [
        "## Attribution",
        "",
        "Integrated Gradients (black-image baseline) and "
        + (f"Grad-CAM at `{cam_layer}`" if cam_layer else "no Grad-CAM (the model has no plain conv layer)")
        + " for the true class. "
        f"Completeness: max |delta| / |F(x) - F(baseline)| = {summary['ig_relative_delta_max']:.2e}.",
        "",
        "![attributions](figures/attributions.png)",
        "",
    ]
    capabilities = capabilities_of(setup.model)
    if capabilities.kappa_map:
        field = "delta_kappa" if capabilities.macro_lens else "kappa"  # the map that claims to be the substructure
        localisation = {}
        for label in SUBSTRUCTURE_LABELS:
            generator = torch.Generator().manual_seed(setup.seed + 40 + label)
            lenses = sample_lenses(setup.preset, label, n_pairs, generator)
            predict = predicted_kappa(setup.model, field=field)
            result = kappa_localisation(predict, lenses, setup.preset, seed=setup.seed)
            name = CLASS_NAMES[label]
            localisation[name] = {k: result[k] for k in ("mean_r", "control_mean_r")} | {"r": result["r"].tolist()}
            plot_kappa_localisation(result, setup.figures / f"kappa_localisation_{name}.png")
        summary["kappa_localisation"] = localisation
        summary["kappa_localisation_field"] = field
        lines += [
            f"Does the predicted `{field}` put the substructure where it is? Pearson r between its change (image "
            "with minus without substructure) and the true substructure kappa, both smoothed; control: the true "
            "map of another lens.",
            "",
            "| class | mean r | control mean r |",
            "|---|---:|---:|",
        ]
        lines += [f"| {k} | {v['mean_r']:.3f} | {v['control_mean_r']:.3f} |" for k, v in localisation.items()]
        lines += [""] + [f"![kappa {k}](figures/kappa_localisation_{k}.png)" for k in localisation] + [""]
    setup.write_json("attribution", summary)
    return summary, lines


def run_studies(
    checkpoint: str | Path,
    out: str | Path,
    data: str | Path | None = None,
    studies: Sequence[str] = STUDIES,
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
    """Run ``studies`` on ``checkpoint``; write ``report.md``, one JSON per study and ``figures/`` into ``out``.

    ``layers`` default to :func:`interp.hooks.default_layers` (taken in forward order). ``progress`` (optional
    callable taking a message) is told when each study starts. Returns the JSON summaries.
    """
    unknown = sorted(set(studies) - set(STUDIES))
    if unknown:
        raise ValueError(f"unknown studies {unknown}; choose from {list(STUDIES)}")
    model, config, card = load_trained_model(checkpoint, device)
    image_size = card.image_size
    preset_obj = get_preset(preset or config.data.preset)
    if preset_obj.n_pixels != image_size:
        raise ValueError(
            f"preset {preset_obj.name} makes {preset_obj.n_pixels} px images, the model takes {image_size} px; "
            "pass a preset of the model's size"
        )
    if data is not None:
        test = prepare_test_data(data).test
        per_class = max(1, n_images // len(CLASS_NAMES))  # the first images of each class, not of the first class
        chosen = [int(i) for k in range(len(CLASS_NAMES)) for i in (test.labels == k).nonzero()[0][:per_class]]
        images = torch.stack([test[i][0] for i in chosen])
        labels = torch.tensor([int(test[i][1]) for i in chosen])
    else:
        images, sample = _simulated(preset_obj, max(1, n_images // len(CLASS_NAMES)), seed)
        labels = sample.label
    images = images.to(device)
    setup = _Setup(
        model=model,
        name=card.model,
        layers=forward_order(model, images[:1], default_layers(model) if layers is None else layers),
        preset=preset_obj,
        out=Path(out),
        device=device,
        seed=seed,
        n_bootstrap=n_bootstrap,
    )
    setup.figures.mkdir(parents=True, exist_ok=True)
    tell = progress or (lambda message: None)
    runs = {
        "equivariance": lambda: _equivariance(setup, images),
        "patching": lambda: _patching(setup, n_pairs),
        "probes": lambda: _probes(setup, n_probe),
        "attribution": lambda: _attribution(setup, images, labels, n_pairs),
    }
    summary: dict = {"checkpoint": str(checkpoint), "model": setup.name, "preset": preset_obj.name, "seed": seed}
    sections = [f"# Interpretability of `{checkpoint}` ({setup.name})", ""]
    for study in STUDIES:
        if study in studies:
            tell(study)
            summary[study], lines = runs[study]()
            sections += lines
    write_text(setup.out / "report.md", "\n".join(sections) + "\n")
    summary["report"] = str(setup.out / "report.md")
    return summary
