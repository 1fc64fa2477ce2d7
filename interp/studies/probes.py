"""The linear-probe study: class, simulator truth and D4 element from every layer's pooled activations."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from d4lenspinn.classes import CLASS_NAMES
from interp.probes import collect_pooled, d4_element_dataset, plot_probes, probe_layers, simulator_targets

from ._markdown import markdown_table
from .context import StudyContext, simulated_lenses

__all__ = ["ProbesResult", "probes_study"]


@dataclass
class ProbesResult:
    """One row per (layer, target) as :func:`~interp.probes.probe_layers` returns them."""

    rows: list[dict]
    n_lenses: int

    def to_json(self) -> list[dict]:
        return self.rows

    def figures(self, out_dir: Path) -> list[Path]:
        return [plot_probes(self.rows, out_dir / "probes.png")]

    def markdown(self) -> str:
        targets = list(dict.fromkeys(row["target"] for row in self.rows))
        by_key = {(row["layer"], row["target"]): row for row in self.rows}
        rows = []
        for layer in dict.fromkeys(row["layer"] for row in self.rows):
            cells = [
                f"{by_key[layer, t]['score']:.2f} ({by_key[layer, t]['shuffled']:.2f})" if (layer, t) in by_key else "-"
                for t in targets
            ]
            rows.append([f"`{layer}`", *cells])
        lines = [
            "## Linear probes",
            "",
            "5-fold cross-validated score of a linear probe on spatially pooled activations "
            f"({self.n_lenses} lenses); in brackets the same probe on shuffled targets. Accuracy for class "
            "and d4_element, R^2 otherwise.",
            "",
            markdown_table(["layer", *targets], rows),
            "",
            "![probes](figures/probes.png)",
        ]
        return "\n".join(lines)


def probes_study(context: StudyContext) -> ProbesResult:
    """Linear probes for the class and the simulator truth on ``n_probe`` simulated lenses per class, and for the
    D4 element that moved each of them."""
    images, sample = simulated_lenses(context.preset, context.n_probe, context.seed + 100)
    pooled = collect_pooled(context.model, images.to(context.device), context.layers)
    rows = probe_layers(pooled, simulator_targets(sample), seed=context.seed)
    moved, element = d4_element_dataset(images, seed=context.seed)
    pooled_moved = collect_pooled(context.model, moved.to(context.device), context.layers)
    rows += probe_layers(pooled_moved, {"d4_element": (element, "classification")}, seed=context.seed)
    return ProbesResult(rows=rows, n_lenses=len(CLASS_NAMES) * context.n_probe)
