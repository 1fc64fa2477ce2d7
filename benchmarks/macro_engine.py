"""Does the engine reproduce the simulator's lens when it is given the true lens? Deflection error on the ring.

    python benchmarks/macro_engine.py [--n 64] [--presets model_ii model_i model_ii_broad]

For simulated lenses of each class (float64, fixed seed) the simulator's exact deflection (SIE + external shear +
point-mass subhalos / vortex segment) is compared, on the pixels within 2 px of the Einstein ring, with what the
engine computes from the truth in three ways:

* ``FFT of the true kappa``: the whole true convergence through the free-space Poisson solver, the only input the
  engine took before the macro model (it cannot produce the external shear);
* ``macro + FFT of the substructure kappa``: the true SIE + shear analytically plus the solver on the substructure
  convergence alone (the engine with a macro lens);
* ``macro only``: the true smooth lens and nothing else, i.e. how much the substructure itself deflects.

Errors in pixels: median and 90th percentile of ``|alpha_engine - alpha_simulator| / pixel_scale`` over ring pixels.
"""

from __future__ import annotations

import argparse

import torch
from _machine import describe_machine

from d4lenspinn.classes import CLASS_NAMES
from d4lenspinn.data.presets import get_preset
from d4lenspinn.data.simulator import (
    deflection_field,
    sample_lenses,
    substructure_convergence,
    true_convergence,
    true_macro_lens,
)
from d4lenspinn.physics import LensingEngine, PixelGrid
from d4lenspinn.report import markdown_table


def ring_errors(preset_name: str, n: int, seed: int) -> list[list[str]]:
    preset = get_preset(preset_name)
    grid = PixelGrid(preset.n_pixels, preset.pixel_scale)
    engine = LensingEngine(grid).to(torch.float64)
    x, y = grid.coordinates(torch.float64)
    rows = []
    for label, name in enumerate(CLASS_NAMES):
        lenses = sample_lenses(preset, label, n, torch.Generator().manual_seed(seed + label))
        exact = deflection_field(lenses, x, y, preset)
        macro = true_macro_lens(lenses)
        ring = (torch.hypot(x, y) - lenses.theta_e[:, None, None]).abs() < 2 * grid.pixel_scale  # (B, n, n)
        candidates = {
            "FFT of the true kappa": engine.potential_and_deflection(true_convergence(lenses, preset))[1],
            "macro + FFT of the substructure kappa": engine.potential_and_deflection(
                substructure_convergence(lenses, preset), macro
            )[1],
            "macro only": engine.potential_and_deflection(torch.zeros_like(exact[:, :1]), macro)[1],
        }
        for kind, alpha in candidates.items():
            error = ((alpha - exact).norm(dim=1) / grid.pixel_scale)[ring]
            median, p90 = torch.quantile(error, torch.tensor([0.5, 0.9], dtype=error.dtype)).tolist()
            rows.append([preset.name, name, kind, f"{median:.3f}", f"{p90:.3f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="lenses per class")
    parser.add_argument("--presets", nargs="+", default=["model_ii", "model_i"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(describe_machine(torch.device("cpu")))
    print()
    rows = [row for preset in args.presets for row in ring_errors(preset, args.n, args.seed)]
    headers = ["preset", "class", "engine input", "median error [px]", "90th percentile [px]"]
    print(markdown_table(headers, rows, align="lllrr"))


if __name__ == "__main__":
    main()
