"""How well does the per-image smooth-lens fit recover the lens, how fast, and how well does its chi^2 detect
substructure? Also: which noise estimate to trust.

    python benchmarks/fit.py [--preset model_ii_broad] [--n 64] [--steps 5 10 20] [--snr 30] [--seed 7]

Fresh lenses of every class are simulated from ``--preset`` (a ``*_broad`` preset with single-Sersic sources and
its nominal PSF, the fit's source model; any name ``get_preset`` knows works) and min-max normalised, as the models
see them. Noise: the simulator's own
(``--snr 0``) or Gaussian noise of ``peak / snr`` on the noiseless normalised image (peak 1). The fit starts from the
true lens perturbed as a network's estimate would be: theta_E by a relative N(0, 0.075), each centre coordinate by
N(0, 0.7 px), each ellipticity component by N(0, 0.04), each shear component by N(0, 0.03). The fit runs in float32
(as in a model). Printed, per step count: on the no-substructure images, median and 90th percentile of
|d theta_E| / theta_E, the centre error [px] and |d gamma| before and after the fit; the median theta_E error of the
substructure classes (their subhalos' or vortex's mass adds to the ring's, so the smooth lens absorbs it); the
failures, the median reduced chi^2 per class, the AUC of the reduced chi^2 as a substructure detector (no vs
subhalos, no vs vortex), and the wall time per batch of 32 on one CPU thread (without gradients, and forward +
backward with them). Then the noise estimates against the truth.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import torch
from _machine import describe_machine, wall_times

from d4lenspinn.data.presets import get_preset
from d4lenspinn.data.simulator import add_noise, render_images, sample_lenses, true_macro_lens
from d4lenspinn.physics import MacroLens, PixelGrid, fit_smooth_lens
from d4lenspinn.physics.noise import estimate_noise, frame_noise, high_pass_noise
from d4lenspinn.report import markdown_table

BATCH = 32
CLASSES = ("no", "sphere", "vort")


def preset_named(name: str):
    """The preset ``name`` with single-Sersic sources (the fit's source model) and the nominal PSF."""
    preset = get_preset(name)
    return replace(preset, clumpy_fraction=0.0, psf_scale=(1.0, 1.0)) if name.endswith("_broad") else preset


def auc(negatives: torch.Tensor, positives: torch.Tensor) -> float:
    """Area under the ROC curve of a score that should be higher for ``positives`` (Mann-Whitney, ties count half)."""
    greater = (positives[:, None] > negatives[None, :]).double().mean()
    ties = (positives[:, None] == negatives[None, :]).double().mean()
    return float(greater + 0.5 * ties)


def perturbed(truth: MacroLens, pixel_scale: float, generator: torch.Generator) -> MacroLens:
    """The true lens with a network's typical errors (see the module docstring)."""
    normal = lambda scale: scale * torch.randn(truth.theta_e.shape, generator=generator, dtype=torch.float64)  # noqa: E731
    return MacroLens(
        truth.theta_e * (1 + normal(0.075)),
        truth.e1 + normal(0.04),
        truth.e2 + normal(0.04),
        truth.center_x + normal(0.7 * pixel_scale),
        truth.center_y + normal(0.7 * pixel_scale),
        truth.gamma1 + normal(0.03),
        truth.gamma2 + normal(0.03),
    )


def lens_errors(macro: MacroLens, truth: MacroLens, pixel_scale: float) -> dict[str, torch.Tensor]:
    return {
        "theta_E": (macro.theta_e - truth.theta_e).abs() / truth.theta_e,
        "centre [px]": torch.hypot(macro.center_x - truth.center_x, macro.center_y - truth.center_y) / pixel_scale,
        "d gamma": torch.hypot(macro.gamma1 - truth.gamma1, macro.gamma2 - truth.gamma2),
    }


def summary(errors: dict[str, torch.Tensor]) -> list[str]:
    return [f"{e.median().item():.4f} / {e.quantile(0.9).item():.4f}" for e in errors.values()]


def simulate(preset, count: int, snr: float, seed: int):
    """Normalised images (float32), the true lens, the labels, and the true noise sigma in normalised units."""
    images, truths, labels, sigmas = [], [], [], []
    for label in range(3):
        lenses = sample_lenses(preset, label, count, torch.Generator().manual_seed(seed + label))
        clean = render_images(lenses, preset, noise=False, normalise=False)
        if snr > 0:
            peak = clean.amax(dim=(1, 2, 3), keepdim=True) - clean.amin(dim=(1, 2, 3), keepdim=True)
            normalised = (clean - clean.amin(dim=(1, 2, 3), keepdim=True)) / peak
            noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed + 10 + label))
            image, sigma = normalised + noise / snr, torch.full((count,), 1 / snr)
        else:  # the simulator's noise; truth: the sky's sigma in the units of the normalised image
            if preset.camera is None or preset.peak_snr is not None:
                raise SystemExit(
                    f"--snr 0 (the simulator's own noise) needs a camera preset without peak-SNR noise "
                    f"(model_ii, model_iii), got {preset.name!r}"
                )
            exposure = lenses.exposure.float().reshape(-1, 1, 1, 1)
            noisy = add_noise(clean, exposure, preset, torch.Generator().manual_seed(seed + 10 + label))
            span = noisy.amax(dim=(1, 2, 3)) - noisy.amin(dim=(1, 2, 3))
            image = (noisy - noisy.amin(dim=(1, 2, 3), keepdim=True)) / span.reshape(-1, 1, 1, 1)
            sigma = preset.camera.background_sigma(preset.pixel_scale) / span
        images.append(image)
        truths.append(true_macro_lens(lenses))
        labels.append(torch.full((count,), label))
        sigmas.append(sigma)
    truth = MacroLens(*(torch.cat(values) for values in zip(*truths, strict=True)))
    return torch.cat(images), truth, torch.cat(labels), torch.cat(sigmas)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="model_ii_broad")
    parser.add_argument("--n", type=int, default=64, help="lenses per class (a multiple of 32)")
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--snr", type=float, default=30.0, help="peak signal-to-noise; 0: the simulator's noise")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.n % BATCH:
        raise SystemExit(f"--n must be a multiple of {BATCH}, got {args.n}")
    torch.set_num_threads(1)
    preset = preset_named(args.preset)
    grid = PixelGrid(preset.n_pixels, preset.pixel_scale)
    psf = dict(psf_fwhm=preset.psf_fwhm, psf_truncation=preset.psf_truncation)
    print(describe_machine(torch.device("cpu")))
    print("command: python benchmarks/fit.py " + " ".join(sys.argv[1:]))
    print(f"preset {preset.name}: {3 * args.n} images ({args.n} per class), {preset.n_pixels} px, noise: "
          + (f"Gaussian, peak SNR {args.snr:g}" if args.snr > 0 else "the simulator's"))  # fmt: skip

    images, truth, labels, true_sigma = simulate(preset, args.n, args.snr, args.seed)
    init = perturbed(truth, grid.pixel_scale, torch.Generator().manual_seed(args.seed + 99))
    none = labels == 0

    def lens_cells(macro: MacroLens) -> list[str]:
        """Errors on the no-substructure images (whose true lens is the smooth one), and the theta_E error median
        of the other classes (their substructure mass adds to the ring's)."""
        errors = lens_errors(macro, truth, grid.pixel_scale)
        cells = summary({name: error[none] for name, error in errors.items()})
        return cells + [" / ".join(f"{errors['theta_E'][labels == k].median().item():.4f}" for k in (1, 2))]

    rows = [["init (network-like)", *lens_cells(init), "", "", "", "", ""]]
    batch_images, batch_init = images[:BATCH], MacroLens(*(value[:BATCH].float() for value in init))
    for steps in args.steps:
        fits = [
            fit_smooth_lens(
                images[i : i + BATCH],
                MacroLens(*(value[i : i + BATCH].float() for value in init)),
                grid,
                **psf,
                steps=steps,
                gradients=False,
            )
            for i in range(0, len(images), BATCH)
        ]
        macro = MacroLens(*(torch.cat(values).double() for values in zip(*(f.macro for f in fits), strict=True)))
        chi2 = torch.cat([f.reduced_chi2 for f in fits]).double()
        failed = int(torch.cat([f.failed for f in fits]).sum())

        def without_gradients(steps=steps):
            fit_smooth_lens(batch_images, batch_init, grid, **psf, steps=steps, gradients=False)

        plain = wall_times(without_gradients, torch.device("cpu"), repeats=3)

        def with_gradients(steps=steps):
            packed = batch_init.as_tensor().requires_grad_(True)
            fit = fit_smooth_lens(batch_images, MacroLens.from_tensor(packed), grid, **psf, steps=steps)
            (fit.reduced_chi2.sum() + fit.macro.theta_e.sum()).backward()

        backward = wall_times(with_gradients, torch.device("cpu"), repeats=3)
        medians = [f"{chi2[labels == label].median().item():.3f}" for label in range(3)]
        detection = [f"{auc(chi2[labels == 0], chi2[labels == label]):.3f}" for label in (1, 2)]
        timing = f"{min(plain):.2f} / {min(backward):.2f}"
        rows.append([f"fit, {steps} steps", *lens_cells(macro), str(failed)])
        rows[-1] += [" / ".join(medians), *detection, timing]
    header = ["lens", "no: theta_E rel. err. (median / p90)", "no: centre [px]", "no: d gamma"]
    header += ["theta_E sphere / vort (median)", "failures"]
    header += ["reduced chi^2 no / sphere / vort", "AUC chi^2 no-sphere", "AUC no-vort", "s per 32: no grad / grad"]
    print(markdown_table(header, rows))

    estimates = {
        "high-pass (2x2)": high_pass_noise(images),
        "frame MAD": frame_noise(images),
        "estimate_noise (min)": estimate_noise(images),
    }
    noise_rows = []
    for name, sigma in estimates.items():
        ratio = (sigma / true_sigma).double()
        noise_rows.append([name, *(f"{ratio.quantile(q).item():.3f}" for q in (0.05, 0.5, 0.95))])
    print(markdown_table(["noise estimate / true sigma", "5%", "median", "95%"], noise_rows))


if __name__ == "__main__":
    main()
