"""How much of the substructure's signal can a smooth-lens fit absorb? The bound on any detector that must fit the lens.

    python benchmarks/absorbed_signal.py [--preset model_ii_broad] [--n 200] [--steps 10] [--seed 0] [--shapelets N]

For ``--n`` lenses per class of ``--preset`` with a single Sersic source (the smooth model is then exact; clumpy
sources are left out, their model space is larger still), the substructure's signal ``s = m1 - m0`` (noiseless image
with and without it) in units of the image's noise sigma (estimated from the noisy image, as the models see it):

* ``d_full = |s| / sigma``: its significance for a test that knows the smooth image ``m0`` (the likelihood-ratio row
  of benchmarks/detectability.py; the known-pattern detection AUC is ``Phi(d_full / sqrt 2)``);
* ``d = |unexplained_signal(s)|``: what is left once the smooth model (SIE + shear, Sersic source, PSF width,
  amplitude, background; with ``--shapelets`` also the shapelets) is fitted to ``m0`` from the truth and ``s``
  projected off its tangent space (:func:`~d4lenspinn.physics.unexplained_signal`): the first-order answer, exact
  for weak signals (tests/physics/test_unexplained_signal.py checks it against the nonlinear refit);
* ``d_A``: the same without linearising, the chi^2 of the smooth model refitted (``--steps`` + 5
  Levenberg-Marquardt steps from the true lens and PSF width) to the noiseless ``m1``, square-rooted: the "Asimov"
  significance of the profile likelihood (Cowan et al. 2011), the median significance a test of "smooth lens
  only" reaches when it knows the substructure's pattern but must fit the smooth lens, with no prior on the lens
  parameters. ``Phi(d_A / sqrt 2)``, the detection AUC of that test, bounds every detector that fits the lens;
  ``d_A^2 / d_full^2`` is the share of the signal the smooth model does not absorb;
* the chi^2 of the refit as a detector: predicted from ``d_A`` (a chi^2 of ``k = N - p`` dof, noncentral by
  ``d_A^2``: ``AUC = Phi(d_A^2 / sqrt(4k + 4 d_A^2))`` per lens) and measured (the smooth model refitted by
  ``--steps`` steps from the true lens and PSF width to the noisy images of both classes, chi^2 AUC against the
  no-substructure lenses);
* the subhalo scan of that refit as a detector (:func:`~d4lenspinn.physics.subhalo_scan`, one trial subhalo per
  2 x 2 block, its largest delta chi^2): measured AUC, as the last column.

Medians and means over lenses, in bins of the peak SNR. One thread, float64.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import torch
from _machine import describe_machine
from fit import auc

from d4lenspinn.data.presets import get_preset
from d4lenspinn.data.simulator import render_images, sample_lenses, true_macro_lens
from d4lenspinn.physics import PixelGrid, estimate_noise, fit_smooth_lens, subhalo_scan, unexplained_signal
from d4lenspinn.report import markdown_table

BATCH = 50
SNR_BINS = ((10.0, 30.0), (30.0, 100.0), (100.0, math.inf))
CLASSES = {1: "subhalos", 2: "vortex"}


def measure(preset, label: int, count: int, steps: int, seed: int, shapelets: int | None) -> dict[str, np.ndarray]:
    """Per Sersic-source lens of class ``label``: peak SNR, the refitted chi^2 of its noisy image and the largest
    delta chi^2 of its subhalo scan; for the substructure classes also d_full, d, d_A and whether the fit of its
    smooth image converged (reduced chi^2 < 0.01)."""
    grid = PixelGrid(preset.n_pixels, preset.pixel_scale)
    values: dict[str, list[torch.Tensor]] = {}
    drawn = kept = 0
    while kept < count:
        key = seed + 100_000 * label + drawn
        lenses = sample_lenses(preset, label, BATCH, torch.Generator().manual_seed(key))
        drawn += BATCH
        single = (lenses.knot_amplitude.abs().sum(dim=1) == 0).nonzero().flatten()
        if len(single) == 0:
            continue
        lenses = lenses.select(single)
        kept += len(single)
        noisy = render_images(lenses, preset, torch.Generator().manual_seed(key + 1), normalise=False).double()
        smooth = render_images(lenses.without_substructure(), preset, noise=False, normalise=False).double()
        with_sub = render_images(lenses, preset, noise=False, normalise=False).double()
        sigma = estimate_noise(noisy)
        truth = true_macro_lens(lenses)
        widths = lenses.psf_fwhm.nan_to_num(preset.psf_fwhm).double()
        psf = dict(psf_truncation=preset.psf_truncation, sigma=sigma, gradients=False, fit_psf=True)
        refit = fit_smooth_lens(noisy, truth, grid, widths, steps=steps, shapelets=shapelets, **psf)
        rows = {
            "snr": lenses.peak_snr.double(),
            "refit_chi2": refit.normalised_residual.square().flatten(1).sum(dim=1),
            "scan": subhalo_scan(refit, grid, preset.psf_truncation, stride=2).delta_chi2.flatten(1).amax(dim=1),
        }
        if label:  # the signal's share: substructure classes only (the no-substructure lenses are the null)
            exact = fit_smooth_lens(smooth, truth, grid, widths, steps=steps + 5, shapelets=shapelets, **psf)
            signal = with_sub - smooth
            left = unexplained_signal(signal, exact, grid, preset.psf_truncation)
            asimov = fit_smooth_lens(with_sub, truth, grid, widths, steps=steps + 5, shapelets=shapelets, **psf)
            rows["d_full"] = (signal / sigma.reshape(-1, 1, 1, 1)).flatten(1).norm(dim=1)
            rows["d"] = left.flatten(1).norm(dim=1)
            rows["d_A"] = asimov.normalised_residual.flatten(1).norm(dim=1)
            rows["converged"] = exact.reduced_chi2 < 0.01
        for name, value in rows.items():
            values.setdefault(name, []).append(value)
    return {name: torch.cat(value)[:count].numpy() for name, value in values.items()}


def phi(x: np.ndarray) -> np.ndarray:
    """The standard normal CDF."""
    return torch.special.ndtr(torch.from_numpy(x)).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="model_ii_broad")
    parser.add_argument("--n", type=int, default=200, help="Sersic-source lenses per class")
    parser.add_argument("--steps", type=int, default=10, help="Levenberg-Marquardt steps of the refit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shapelets", type=int, help="the smooth model's source gains shapelets of this order")
    args = parser.parse_args()
    torch.set_num_threads(1)
    preset = get_preset(args.preset)
    print(describe_machine(torch.device("cpu")))
    print("command: python benchmarks/absorbed_signal.py " + " ".join(sys.argv[1:]))
    data = {label: measure(preset, label, args.n, args.steps, args.seed, args.shapelets) for label in range(3)}
    parameters = 14 + 2 + (0 if args.shapelets is None else (args.shapelets + 1) * (args.shapelets + 2) // 2)
    dof = preset.n_pixels**2 - parameters
    header = ["class", "peak SNR", "lenses", "median d_full", "median d", "median d_A", "median d_A^2 / d_full^2"]
    header += ["bound: mean Phi(d_A / sqrt 2)", "refit chi^2 AUC, predicted", "measured", "subhalo scan AUC"]
    rows = []
    for label, name in CLASSES.items():
        values, none = data[label], data[0]
        for low, high in ((10.0, math.inf), *SNR_BINS):
            keep = (values["snr"] >= low) & (values["snr"] < high) & values["converged"]
            null = (none["snr"] >= low) & (none["snr"] < high)
            d, d_asimov, d_full = values["d"][keep], values["d_A"][keep], values["d_full"][keep]
            if len(d) < 5 or null.sum() < 5:
                continue
            predicted = phi(d_asimov**2 / np.sqrt(4 * dof + 4 * d_asimov**2)).mean()
            measured, scanned = (
                auc(torch.from_numpy(none[name][null]), torch.from_numpy(values[name][keep]))
                for name in ("refit_chi2", "scan")
            )
            rows.append(
                [
                    name,
                    f"{low:g}-{high:g}" if high < math.inf else f">= {low:g}",
                    f"{len(d)}",
                    f"{np.median(d_full):.1f}",
                    f"{np.median(d):.1f}",
                    f"{np.median(d_asimov):.1f}",
                    f"{np.median(d_asimov**2 / d_full**2):.3f}",
                    f"{phi(d_asimov / math.sqrt(2)).mean():.3f}",
                    f"{predicted:.3f}",
                    f"{measured:.3f}",
                    f"{scanned:.3f}",
                ]
            )
    unconverged = sum(int((~data[label]["converged"]).sum()) for label in CLASSES)
    source = "Sersic source" if args.shapelets is None else f"Sersic + shapelets of order <= {args.shapelets}"
    print(f"preset {preset.name}, {args.n} single-Sersic lenses per class, smooth model with a {source}; ")
    print(f"{unconverged} lenses whose smooth image the fit did not reproduce (reduced chi^2 >= 0.01) left out")
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
