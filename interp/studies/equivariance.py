"""The equivariance study: :func:`interp.equivariance.equivariance_errors` of every studied layer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from interp.equivariance import equivariance_errors, format_equivariance_table, plot_equivariance

from .context import StudyContext

__all__ = ["EquivarianceResult", "equivariance_study"]


@dataclass
class EquivarianceResult:
    """One row per (layer, D4 element) as :func:`~interp.equivariance.equivariance_errors` returns them."""

    rows: list[dict]
    n_images: int
    model_name: str

    def to_json(self) -> list[dict]:
        return self.rows

    def figures(self, out_dir: Path) -> list[Path]:
        title = f"{self.model_name}: D4 equivariance error per layer"
        return [plot_equivariance(self.rows, out_dir / "equivariance.png", title=title)]

    def markdown(self) -> str:
        lines = [
            "## Equivariance",
            "",
            f"Relative error ||f(gx) - g f(x)|| / ||f(x)|| over {self.n_images} images, max and mean over the 7 "
            "non-identity elements.",
            "",
            format_equivariance_table(self.rows),
            "",
            "![equivariance](figures/equivariance.png)",
        ]
        return "\n".join(lines)


def equivariance_study(context: StudyContext) -> EquivarianceResult:
    """Relative D4 equivariance error of every layer on the context's images, for all 8 elements."""
    rows = equivariance_errors(context.model, context.images, context.layers)
    return EquivarianceResult(rows=rows, n_images=len(context.images), model_name=context.model_name)
