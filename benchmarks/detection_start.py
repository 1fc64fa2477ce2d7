"""Is the start what miscalibrates ``d4lenspinn detect`` on lenstronomy's lenses? The same fit and scan from the true
lens instead of the prior's starts.

    python benchmarks/detection_start.py [--cell snr_100] [--n 200] [--true-sigma] [--data data/shift]

For the first ``--n`` no-substructure lenses of a lenstronomy cell written by benchmarks/shift.py (seed 0), their
true SIE + shear is recovered by replaying the cell's draws (``draw_lens`` and the noise draws, in order, as
``write_cell`` made them), and the smooth lens is fitted from it alone (5 Levenberg-Marquardt steps, light integrated
over 3 x 3 sub-pixels, the source's shot noise at the instrument's background, as ``d4lenspinn detect
--instrument model_ii --supersampling 3 --shot-noise 24.69`` fits from the prior's starts), then scanned (stride 2).
Prints the share of lenses whose Bonferroni bound falls below 0.05 (the false alarms) and the median largest delta
chi^2. ``--true-sigma`` gives the fit each image's true noise instead of the estimate.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _machine import describe_machine
from shift_cells import Renderer, cell_rng, draw_lens, grid, instrument

from d4lenspinn.classes import NO_SUBSTRUCTURE
from d4lenspinn.detection import PriorFit, detect_substructure
from d4lenspinn.physics import MacroLens, PixelGrid, fit_smooth_lens

BACKGROUND = 24.69  # electrons per pixel, the Model II grid's (benchmarks/shift_cells.py)
BATCH = 16


def true_lenses(cell, count: int) -> torch.Tensor:
    """``(count, 7)`` SIE + shear of the cell's first no-substructure lenses, in MacroLens order."""
    renderer, rng, lenses = Renderer(instrument(cell.instrument)), cell_rng(cell, 0, NO_SUBSTRUCTURE), []
    for _ in range(count):
        draw = draw_lens(cell, NO_SUBSTRUCTURE, rng)
        renderer.observe(renderer.noiseless(draw), cell.peak_snr, rng)  # the noise draws, to keep the sequence
        sie, shear = draw["lens"][0], draw["lens"][1]
        keys = ("theta_E", "e1", "e2", "center_x", "center_y")
        lenses.append([*(sie[key] for key in keys), shear["gamma1"], shear["gamma2"]])
    return torch.tensor(lenses, dtype=torch.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="snr_100")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--true-sigma", action="store_true")
    parser.add_argument("--data", type=Path, default=Path("data/shift"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(describe_machine(torch.device("cpu")))
    cell = {cell.name: cell for cell in grid("model_ii")}[args.cell]
    folder = args.data / cell.name
    lenses = true_lenses(cell, args.n)
    images = torch.from_numpy(np.stack([np.load(folder / "no" / f"img{i:05d}.npy") for i in range(args.n)]))[:, None]
    true_sigma = torch.from_numpy(np.load(folder / "metadata.npz")["noise_sigma"][: args.n]).float()
    setup = instrument(cell.instrument)
    grid_of_cell = PixelGrid(setup.n_pixels, setup.pixel_scale)
    settings = PriorFit(grid_of_cell, setup.psf_fwhm, setup.psf_truncation, supersampling=3, shot_noise=BACKGROUND)
    p_values, maxima = [], []
    for start in range(0, args.n, BATCH):
        chosen = slice(start, start + BATCH)
        init = MacroLens(*lenses[chosen].T)
        sigma = true_sigma[chosen] if args.true_sigma else None
        fit = fit_smooth_lens(images[chosen].float(), init, settings.grid, settings.psf_fwhm, settings.psf_truncation,
                              5, sigma, False, supersampling=3, shot_noise=BACKGROUND)  # fmt: skip
        found = detect_substructure(fit, settings, 2)
        p_values.append(found.p_value)
        maxima.append(found.max_delta_chi2)
    p_value, largest = torch.cat(p_values), torch.cat(maxima)
    noise = "true sigma" if args.true_sigma else "estimated sigma"
    print(
        f"{cell.name}, fitted from the true lens ({noise}): p < 0.05 for {int((p_value < 0.05).sum())} of {args.n} "
        f"no-substructure lenses; median largest delta chi^2 {float(largest.median()):.2f}"
    )


if __name__ == "__main__":
    main()
