"""The attribution study: Integrated Gradients and Grad-CAM on two images per class, and whether the predicted
kappa (models that have one) localises the true substructure."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from d4lenspinn.classes import CLASS_NAMES, SUBSTRUCTURE_LABELS
from d4lenspinn.data.simulator import sample_lenses
from d4lenspinn.models import capabilities_of
from interp.attribution import (
    default_cam_layer,
    grad_cam,
    integrated_gradients,
    kappa_localisation,
    plot_attributions,
    plot_kappa_localisation,
    predicted_kappa,
)

from ._markdown import markdown_table
from .context import StudyContext

__all__ = ["AttributionResult", "attribution_study"]


@dataclass
class AttributionResult:
    """Attribution maps ``(B, 1, H, W)`` by method of the ``images`` ``(B, 1, H, W)`` (titled by class), the
    Integrated Gradients completeness errors ``(B,)``, and per substructure class the
    :func:`~interp.attribution.kappa_localisation` result of the map ``localisation_field`` (empty: no kappa map)."""

    images: torch.Tensor
    maps: dict[str, torch.Tensor]
    titles: list[str]
    ig_completeness_delta: list[float]
    ig_relative_delta_max: float
    cam_layer: str | None
    localisation: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    localisation_field: str | None = None

    def to_json(self) -> dict[str, Any]:
        summary = {
            "ig_completeness_delta": self.ig_completeness_delta,
            "ig_relative_delta_max": self.ig_relative_delta_max,
            "cam_layer": self.cam_layer,
        }
        if self.localisation:
            summary["kappa_localisation"] = {
                name: {k: result[k] for k in ("mean_r", "control_mean_r")} | {"r": result["r"].tolist()}
                for name, result in self.localisation.items()
            }
            summary["kappa_localisation_field"] = self.localisation_field
        return summary

    def figures(self, out_dir: Path) -> list[Path]:
        paths = [plot_attributions(self.images, self.maps, out_dir / "attributions.png", titles=self.titles)]
        for name, result in self.localisation.items():
            paths.append(plot_kappa_localisation(result, out_dir / f"kappa_localisation_{name}.png"))
        return paths

    def markdown(self) -> str:
        cam = f"Grad-CAM at `{self.cam_layer}`" if self.cam_layer else "no Grad-CAM (the model has no plain conv layer)"
        lines = [
            "## Attribution",
            "",
            f"Integrated Gradients (black-image baseline) and {cam} for the true class. "
            f"Completeness: max |delta| / |F(x) - F(baseline)| = {self.ig_relative_delta_max:.2e}.",
            "",
            "![attributions](figures/attributions.png)",
        ]
        if self.localisation:
            rows = [[k, f"{v['mean_r']:.3f}", f"{v['control_mean_r']:.3f}"] for k, v in self.localisation.items()]
            lines += [
                "",
                f"Does the predicted `{self.localisation_field}` put the substructure where it is? Pearson r between "
                "its change (image with minus without substructure) and the true substructure kappa, both smoothed; "
                "control: the true map of another lens.",
                "",
                markdown_table(["class", "mean r", "control mean r"], rows),
                "",
                *(f"![kappa {k}](figures/kappa_localisation_{k}.png)" for k in self.localisation),
            ]
        return "\n".join(lines)


def attribution_study(context: StudyContext) -> AttributionResult:
    """Integrated Gradients and Grad-CAM for the true class of the first two context images of each class; for
    a model with a kappa map, its localisation of the substructure on ``n_pairs`` lenses of each substructure class."""
    labels = context.labels
    picked = torch.cat([torch.nonzero(labels == k).flatten()[:2] for k in range(len(CLASS_NAMES))])
    chosen, targets = context.images[picked], labels[picked].to(context.device)
    ig, delta = integrated_gradients(context.model, chosen, targets)
    maps = {"Integrated Gradients": ig.cpu()}
    try:
        cam_layer = default_cam_layer(context.model)
    except ValueError:  # only escnn layers (GeometricTensor outputs): no plain feature map to weight
        cam_layer = None
    if cam_layer is not None:
        maps[f"Grad-CAM ({cam_layer})"] = grad_cam(context.model, chosen, targets, cam_layer).cpu()
    gap = (ig.flatten(1).sum(1) - delta).abs().clamp_min(1e-12)  # |F(x) - F(baseline)|
    result = AttributionResult(
        images=chosen.cpu(),
        maps=maps,
        titles=[CLASS_NAMES[int(k)] for k in targets],
        ig_completeness_delta=delta.cpu().tolist(),
        ig_relative_delta_max=float((delta.abs() / gap).max()),
        cam_layer=cam_layer,
    )
    capabilities = capabilities_of(context.model)
    if capabilities.kappa_map:
        field = "delta_kappa" if capabilities.macro_lens else "kappa"  # the map that claims to be the substructure
        result.localisation = _kappa_localisations(context, field)
        result.localisation_field = field
    return result


def _kappa_localisations(context: StudyContext, field: str) -> dict[str, dict[str, Any]]:
    """:func:`~interp.attribution.kappa_localisation` of the model's ``field`` map on ``n_pairs`` lenses of each
    substructure class, by class name."""
    localisation = {}
    for label in SUBSTRUCTURE_LABELS:
        generator = torch.Generator().manual_seed(context.seed + 40 + label)
        lenses = sample_lenses(context.preset, label, context.n_pairs, generator)
        predict = predicted_kappa(context.model, field=field)
        localisation[CLASS_NAMES[label]] = kappa_localisation(predict, lenses, context.preset, seed=context.seed)
    return localisation
