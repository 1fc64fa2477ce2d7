"""How detectable is the substructure of a preset at all, and how much of it does a smooth-lens fit leave visible?

    python benchmarks/detectability.py [--preset model_ii_broad] [--n 300] [--steps 5] [--seed 0] [--shapelets 6]
                                       [--scan-stride 2] [--no-inversions]

For ``--n`` lenses per class of ``--preset`` (as the models see them: noisy, in brightness units before the min-max
normalisation, which only rescales), detection AUC of substructure (no vs subhalos, no vs vortex) for eight
statistics (ten with ``--shapelets``, five without the inversions: ``--no-inversions``), in bins of the peak
signal-to-noise and, at SNR >= 30, by source (single Sersic or clumpy):

* likelihood ratio, both models known: ``|x - m0|^2 - |x - m1|^2`` over sigma^2, with ``m1`` the noiseless image and
  ``m0`` the same lens and source without substructure (the Neyman-Pearson optimum: an upper bound nothing reaches);
* chi^2 against the true smooth image ``m0``: the best possible test of "the smooth lens explains it" (an ideal lens
  modeller who knew the smooth lens and the source exactly);
* chi^2 of the smooth-lens fit (:func:`~d4lenspinn.physics.fit_smooth_lens`: SIE + shear + one Sersic source, the
  preset's nominal PSF, ``--steps`` Levenberg-Marquardt steps from the true lens perturbed as a network's estimate
  is, benchmarks/fit.py);
* chi^2 of the pixelated-source inversion (:func:`~d4lenspinn.physics.invert_source`, 96 x 96 source pixels of
  0.035", regularisation 0.3, 200 conjugate-gradient iterations: the best of a small sweep with the true lens)
  through the fitted lens: a source of any structure, the lens kept from the fit;
* the same two with the PSF width fitted too (``fit_psf=True``, starting from the nominal width; the inversion
  through each image's fitted PSF): the broad prior's seeing varies +-30%, the fit with the nominal width cannot
  follow it;
* chi^2 of the inversion through the true lens and PSF: what the pixelated source alone gives up (a flexible source
  absorbs part of the substructure's signal even when the lens is right);
* the largest delta chi^2 of the subhalo scan (:func:`~d4lenspinn.physics.subhalo_scan`, a trial subhalo at the
  centre of every ``--scan-stride`` block) through the PSF-fitted Sersic fit: a detector that asks where one
  subhalo would explain the residual, not how large the residual is;
* with ``--shapelets n_max``: chi^2 of the fit whose source is the Sersic profile plus shapelets of order
  ``<= n_max`` (PSF width fitted): the lens modeller's remedy for clumpy sources, fitted jointly with the lens; and
  the subhalo scan through that fit (its tangent space holds the shapelets too).

The noise sigma of every statistic is estimated from the image (:func:`~d4lenspinn.physics.estimate_noise`).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from _machine import describe_machine
from fit import auc, perturbed

from d4lenspinn.data.presets import get_preset
from d4lenspinn.data.simulator import render_images, sample_lenses, true_macro_lens
from d4lenspinn.physics import (
    MacroLens,
    PixelGrid,
    estimate_noise,
    fit_smooth_lens,
    invert_source,
    macro_deflection,
    subhalo_scan,
)
from d4lenspinn.physics.light import gaussian_psf_kernel, gaussian_psf_kernels
from d4lenspinn.report import markdown_table

BATCH = 100
SNR_BINS = ((0.0, 30.0), (30.0, 100.0), (100.0, np.inf))
SOURCE_GRID = PixelGrid(96, 0.035)
REGULARISATION, ITERATIONS = 0.3, 200


def inverted_chi2(image, background, lens: MacroLens, sigma, grid: PixelGrid, kernel: torch.Tensor) -> torch.Tensor:
    """Reduced chi^2 ``(B,)`` of the pixelated-source inversion of ``image - background (B,)`` through ``lens``
    with the PSF ``kernel``."""
    alpha = macro_deflection(lens, grid)
    data = image - torch.as_tensor(background).reshape(-1, 1, 1, 1)
    return invert_source(data, alpha, grid, SOURCE_GRID, kernel, sigma, REGULARISATION, ITERATIONS).reduced_chi2


def statistics(
    preset, count: int, steps: int, seed: int, shapelets: int | None, scan_stride: int, inversions: bool
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Per image: the statistics by name, the labels, the peak SNR (inf: noiseless) and whether the source is
    clumpy."""
    grid = PixelGrid(preset.n_pixels, preset.pixel_scale)
    kernel = gaussian_psf_kernel(preset.psf_fwhm, preset.pixel_scale, preset.psf_truncation)
    values: dict[str, list[torch.Tensor]] = {}
    labels, snr, clumpy = [], [], []
    for label in range(3):
        for start in range(0, count, BATCH):
            size = min(BATCH, count - start)
            key = seed + 1000 * label + start
            lenses = sample_lenses(preset, label, size, torch.Generator().manual_seed(key))
            image = render_images(lenses, preset, torch.Generator().manual_seed(key + 1), normalise=False)
            with_sub = render_images(lenses, preset, noise=False, normalise=False)
            smooth = render_images(lenses.without_substructure(), preset, noise=False, normalise=False)
            sigma = estimate_noise(image)
            inverse_variance = sigma.reshape(-1, 1, 1, 1) ** -2
            truth = true_macro_lens(lenses)
            init = perturbed(truth, grid.pixel_scale, torch.Generator().manual_seed(key + 2))
            init = MacroLens(*(value.float() for value in init))
            psf = (preset.psf_fwhm, preset.psf_truncation)
            fit = fit_smooth_lens(image, init, grid, *psf, steps, sigma, False)
            seeing = fit_smooth_lens(image, init, grid, *psf, steps, sigma, False, fit_psf=True)
            seeing_kernels = gaussian_psf_kernels(seeing.psf_fwhm, preset.pixel_scale, preset.psf_truncation)
            true_kernels = gaussian_psf_kernels(lenses.psf_fwhm, preset.pixel_scale, preset.psf_truncation)
            pixels = image[0].numel()
            rows = {
                "likelihood ratio (both models known)": (
                    ((image - smooth).square() - (image - with_sub).square()) * inverse_variance
                ).sum(dim=(1, 2, 3)),
                "chi^2 vs the true smooth image": ((image - smooth).square() * inverse_variance).sum(dim=(1, 2, 3))
                / pixels,
                f"chi^2 of the Sersic fit ({steps} steps)": fit.reduced_chi2,
                f"chi^2 of the Sersic fit, PSF width fitted ({steps} steps)": seeing.reduced_chi2,
                f"subhalo scan through that fit: largest delta chi^2 (stride {scan_stride})": subhalo_scan(
                    seeing, grid, preset.psf_truncation, stride=scan_stride
                )
                .delta_chi2.flatten(1)
                .amax(dim=1),
            }
            if inversions:
                rows["chi^2 of the pixelated-source inversion"] = inverted_chi2(
                    image, fit.background, fit.macro, sigma, grid, kernel
                )
                rows["chi^2 of the inversion through that fit and PSF"] = inverted_chi2(
                    image, seeing.background, seeing.macro, sigma, grid, seeing_kernels
                )
                rows["chi^2 of the inversion through the true lens and PSF"] = inverted_chi2(
                    image, 0.0, MacroLens(*(value.float() for value in truth)), sigma, grid, true_kernels
                )
            if shapelets is not None:
                flexible = fit_smooth_lens(
                    image, init, grid, *psf, steps, sigma, False, fit_psf=True, shapelets=shapelets
                )
                rows[f"chi^2 of the Sersic + shapelets (order {shapelets}) fit, PSF width fitted"] = (
                    flexible.reduced_chi2
                )
                rows[f"subhalo scan through the Sersic + shapelets fit (stride {scan_stride})"] = (
                    subhalo_scan(flexible, grid, preset.psf_truncation, stride=scan_stride)
                    .delta_chi2.flatten(1)
                    .amax(dim=1)
                )
            for name, value in rows.items():
                values.setdefault(name, []).append(value.double())
            labels.append(torch.full((size,), label))
            snr.append(lenses.peak_snr.double())
            clumpy.append(lenses.knot_amplitude.abs().sum(dim=1) > 0)
    stats = {name: torch.cat(value).numpy() for name, value in values.items()}
    return stats, torch.cat(labels).numpy(), torch.cat(snr).numpy(), torch.cat(clumpy).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="model_ii_broad")
    parser.add_argument("--n", type=int, default=300, help="lenses per class")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shapelets", type=int, help="also fit a source of Sersic + shapelets of this order")
    parser.add_argument("--scan-stride", type=int, default=2, help="subhalo scan: one trial per block of this side")
    parser.add_argument("--no-inversions", action="store_true", help="skip the pixelated-source rows (the slowest)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    preset = get_preset(args.preset)
    print(describe_machine(torch.device("cpu")))
    print("command: python benchmarks/detectability.py " + " ".join(sys.argv[1:]))
    stats, labels, snr, clumpy = statistics(
        preset, args.n, args.steps, args.seed, args.shapelets, args.scan_stride, not args.no_inversions
    )
    snr = np.where(snr == 0, np.nan, snr)  # 0: the preset's own noise recipe (no peak SNR drawn)
    selections = {"all": np.ones_like(clumpy)}
    if np.isfinite(snr).any() or np.isinf(snr).any():
        for low, high in SNR_BINS:
            selections[f"SNR {low:g}-{high:g}"] = (snr >= low) & ((snr < high) | (high == np.inf))
        selections["SNR >= 30, Sersic source"] = (snr >= 30) & ~clumpy
        selections["SNR >= 30, clumpy source"] = (snr >= 30) & clumpy
    header = ["statistic"] + [f"{name} (n={int(sel.sum())})" for name, sel in selections.items()]
    rows = []
    for name, value in stats.items():
        cells = []
        for selection in selections.values():
            none = value[selection & (labels == 0)]
            pair = [value[selection & (labels == k)] for k in (1, 2)]
            usable = len(none) > 4 and all(len(p) > 4 for p in pair)
            aucs = [f"{auc(torch.from_numpy(none), torch.from_numpy(p)):.3f}" for p in pair] if usable else []
            cells.append(" / ".join(aucs))
        rows.append([name, *cells])
    print(f"detection AUC, no vs subhalos / no vs vortex; preset {preset.name}, {args.n} lenses per class")
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
