"""Does refining the lens with a pixelated source make the substructure of clumpy sources detectable?

    python benchmarks/refinement.py [--n 60] [--steps 8] [--seed 50]

``--n`` lenses per class of ``model_ii_broad`` with clumpy sources only and peak SNR 30-1000 (where the Sersic fit
fails: docs/RESULTS.md, "How detectable..."), in brightness units with the noise sigma estimated per image. Each is
fitted with the Sersic model and its PSF width (:func:`~d4lenspinn.physics.fit_smooth_lens`, 10 steps from the true
lens with a network's typical errors, benchmarks/fit.py), then its lens is refined with the pixelated source
(:func:`~d4lenspinn.physics.refine_lens`, ``--steps`` steps). Printed: the lens errors (median over the
no-substructure lenses) and the detection AUC (no vs subhalos / no vs vortex) of the reduced chi^2 of the Sersic fit,
of the inversion through the fitted lens, through the refined lens and through the true lens and PSF (the ceiling).
Inversions: 96 x 96 source pixels of 0.035", regularisation 0.3, 200 conjugate-gradient iterations (as
benchmarks/detectability.py).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from _machine import describe_machine
from detectability import ITERATIONS, REGULARISATION, SOURCE_GRID, inverted_chi2
from fit import auc, perturbed
from macro_estimator import errors as lens_errors

from d4lenspinn.data.presets import get_preset
from d4lenspinn.data.simulator import render_images, sample_lenses, true_macro_lens
from d4lenspinn.physics import MacroLens, PixelGrid, estimate_noise, fit_smooth_lens, refine_lens
from d4lenspinn.physics.light import gaussian_psf_kernels
from d4lenspinn.report import markdown_table

FIT_STEPS = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60, help="lenses per class")
    parser.add_argument("--steps", type=int, default=8, help="refinement steps")
    parser.add_argument("--seed", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(describe_machine(torch.device("cpu")))
    print("command: python benchmarks/refinement.py " + " ".join(sys.argv[1:]))
    preset = get_preset("model_ii_broad", clumpy_fraction=1.0, noiseless_fraction=0.0, peak_snr=(30.0, 1000.0))
    grid = PixelGrid(preset.n_pixels, preset.pixel_scale)
    truncation = preset.psf_truncation
    chi2: dict[str, list[torch.Tensor]] = {}
    errors: dict[str, dict[str, torch.Tensor]] = {}
    labels = []
    start = time.time()
    for label in range(3):
        lenses = sample_lenses(preset, label, args.n, torch.Generator().manual_seed(args.seed + label))
        image = render_images(lenses, preset, torch.Generator().manual_seed(args.seed + 10 + label), normalise=False)
        truth = true_macro_lens(lenses)
        init = perturbed(truth, grid.pixel_scale, torch.Generator().manual_seed(args.seed + 20 + label))
        sigma = estimate_noise(image)
        fit = fit_smooth_lens(
            image,
            MacroLens(*(v.float() for v in init)),
            grid,
            preset.psf_fwhm,
            truncation,
            FIT_STEPS,
            sigma,
            False,
            fit_psf=True,
        )
        kernels = gaussian_psf_kernels(fit.psf_fwhm, preset.pixel_scale, truncation)
        data = image - fit.background.reshape(-1, 1, 1, 1)
        refined = refine_lens(
            data, fit.macro, grid, SOURCE_GRID, kernels, sigma, args.steps, REGULARISATION, ITERATIONS
        )
        true_kernels = gaussian_psf_kernels(lenses.psf_fwhm, preset.pixel_scale, truncation)
        true_lens = MacroLens(*(v.float() for v in truth))
        rows = {
            f"chi^2 of the Sersic fit, PSF width fitted ({FIT_STEPS} steps)": fit.reduced_chi2,
            "chi^2 of the inversion through that fit": inverted_chi2(
                image, fit.background, fit.macro, sigma, grid, kernels
            ),
            f"chi^2 of the inversion through the refined lens ({args.steps} steps)": refined.inversion.reduced_chi2,
            "chi^2 of the inversion through the true lens and PSF": inverted_chi2(
                image, 0.0, true_lens, sigma, grid, true_kernels
            ),
        }
        for name, value in rows.items():
            chi2.setdefault(name, []).append(value.double())
        if label == 0:
            errors["Sersic fit, PSF width fitted"] = lens_errors(fit.macro, truth, grid.pixel_scale)
            errors["refined with the pixelated source"] = lens_errors(refined.macro, truth, grid.pixel_scale)
        labels.append(torch.full((args.n,), label))
        print(f"class {label}: {time.time() - start:.0f} s", flush=True)
    labels = torch.cat(labels).numpy()
    print(f"clumpy sources, peak SNR 30-1000, {args.n} lenses per class")
    header = ["lens (no substructure, median)", "theta_E (relative)", "centre [px]", "abs(delta e)", "abs(delta gamma)"]
    table = [[name, *(f"{value.median():.4f}" for value in found.values())] for name, found in errors.items()]
    print(markdown_table(header, table))
    rows = []
    for name, values in chi2.items():
        value = torch.cat(values)
        none = value[labels == 0]
        aucs = " / ".join(f"{auc(none, value[labels == k]):.3f}" for k in (1, 2))
        rows.append([name, aucs, f"{none.median():.3f}"])
    print(markdown_table(["statistic", "detection AUC no-sub / no-vort", "median reduced chi^2, no"], rows))


if __name__ == "__main__":
    main()
