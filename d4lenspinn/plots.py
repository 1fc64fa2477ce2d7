"""Figures (matplotlib, Agg backend): each function draws one figure, saves it and returns the path.

Every figure in the docs is made by a command (see docs/), e.g.::

    d4lenspinn plot-examples --preset model_i --seed 0 --out docs/figures/simulated_examples.png
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .data.datasets import CLASS_NAMES  # noqa: E402
from .data.presets import SimulationPreset  # noqa: E402
from .data.simulator import render_images, sample_lenses, true_convergence  # noqa: E402

__all__ = ["plot_class_examples"]

_CLASS_TITLES = ("no substructure", "CDM subhalos (sphere)", "axion vortex (vort)")


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_class_examples(preset: SimulationPreset, path: str | Path, seed: int = 0) -> Path:
    """One lens and source rendered as each class: image, change from the no-substructure image, substructure kappa.

    The three rows share the main lens and the source (same parameter stream), so the middle column isolates
    what the substructure does to the arcs.
    """
    extent = [-preset.n_pixels * preset.pixel_scale / 2, preset.n_pixels * preset.pixel_scale / 2] * 2
    fig, axes = plt.subplots(3, 3, figsize=(10.5, 10), constrained_layout=True)
    for label, (name, row) in enumerate(zip(CLASS_NAMES, axes, strict=True)):
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
    return _save(fig, path)
