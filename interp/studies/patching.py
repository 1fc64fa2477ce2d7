"""The activation-patching study: substructure/no-substructure pairs and image/rotated-image pairs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from d4lenspinn.classes import CLASS_NAMES, NO_SUBSTRUCTURE, SUBHALOS, SUBSTRUCTURE_LABELS
from d4lenspinn.models import capabilities_of
from d4lenspinn.symmetry import D4_ELEMENTS
from interp.pairs import d4_pairs, substructure_pairs
from interp.patching import PatchingResult, activation_patching, plot_patching

from ._markdown import markdown_table
from .context import StudyContext

__all__ = ["PatchingStudyResult", "patching_study"]


@dataclass
class PatchingStudyResult:
    """One :class:`~interp.patching.PatchingResult` per kind of pair (e.g. ``"sphere vs no"``), same layers each."""

    results: dict[str, PatchingResult]
    n_pairs: int
    invariant: bool  # the model is D4-invariant: the image vs rot90 image pairs were skipped
    model_name: str

    def to_json(self) -> dict[str, dict]:
        return {
            key: {"gap_ci95": r.gap_ci95, "final_layer": r.final_layer, "rows": r.rows()}
            for key, r in self.results.items()
        }

    def figures(self, out_dir: Path) -> list[Path]:
        title = f"{self.model_name}: activation patching ({self.n_pairs} pairs each)"
        return [plot_patching(self.results, out_dir / "patching.png", title=title)]

    def markdown(self) -> str:
        rows = []
        for index, layer in enumerate(next(iter(self.results.values())).layers):
            cells = [
                f"{r.effect[index]:.3f} [{r.ci95[index, 0]:.3f}, {r.ci95[index, 1]:.3f}]" for r in self.results.values()
            ]
            rows.append([f"`{layer}`", *cells])
        gaps = ", ".join(f"{key}: [{r.gap_ci95[0]:.3f}, {r.gap_ci95[1]:.3f}]" for key, r in self.results.items())
        skipped = " The model is D4-invariant, so the image vs rot90 image pairs (no logit gap) are skipped."
        lines = [
            "## Activation patching",
            "",
            markdown_table(["layer", *self.results], rows),
            "",
            f"Normalised effect (0 none, 1 full recovery) with 95% bootstrap intervals. Mean clean - corrupted logit "
            f"difference (95% interval): {gaps}; an interval that includes 0 leaves the effect ill-defined."
            + (skipped if self.invariant else ""),
            "",
            "![patching](figures/patching.png)",
        ]
        return "\n".join(lines)


def patching_study(context: StudyContext) -> PatchingStudyResult:
    """Activation patching from clean into corrupted images on ``n_pairs`` pairs of each kind: each substructure
    class against the same lens without substructure, and (unless the model is D4-invariant, whose logits do not
    change) an image against its rot90 image."""

    def run(clean, corrupted, target):
        return activation_patching(
            context.model,
            clean,
            corrupted,
            target,
            NO_SUBSTRUCTURE,
            context.layers,
            n_bootstrap=context.n_bootstrap,
            seed=context.seed,
        )

    n_pairs, device, seed = context.n_pairs, context.device, context.seed
    results = {}
    for label in SUBSTRUCTURE_LABELS:
        clean, corrupted, _ = substructure_pairs(context.preset, label, n_pairs, seed=seed + 10 * label)
        key = f"{CLASS_NAMES[label]} vs {CLASS_NAMES[NO_SUBSTRUCTURE]}"
        results[key] = run(clean.to(device), corrupted.to(device), label)
    invariant = capabilities_of(context.model).invariant  # an image and its rotation give the same logits: no gap
    if not invariant:
        clean, _, _ = substructure_pairs(context.preset, SUBHALOS, n_pairs, seed=seed + 30)
        results["image vs rot90 image"] = run(*d4_pairs(clean.to(device), D4_ELEMENTS[1]), SUBHALOS)
    return PatchingStudyResult(results=results, n_pairs=n_pairs, invariant=invariant, model_name=context.model_name)
