"""How right is a trained model's lens? Macro-parameter errors and the substructure map, on held-out simulations.

    python benchmarks/lens_quality.py --checkpoint runs/macro/best.pt [--n 100] [--seed 4242] [--prior-starts]
                                      [--every-start]

For a checkpoint of a model with a macro lens (``capabilities.macro_lens``), fresh lenses of every class are
simulated from ``--preset``, by default the broad variant of the checkpoint's preset (the faithful presets fix the
lens, so a constant would score perfectly there), with a seed the training never used. Printed: median and 90th
percentile of the theta_E error relative to theta_E, the centre error in pixels, |delta e| and |delta gamma| (for a
model that fits the lens to each image, of the network's estimate and of the fitted lens, on the no-substructure
images whose true lens is the smooth one, and on all; with ``--prior-starts`` also of the same fit started from
``StartGrid.over_prior`` of the broad prior's Einstein radii instead of the network, as ``lens_start="prior"``
does; with ``--every-start`` also of the fit run from each of those starts, keeping per image the one of lowest
chi^2 after the steps: a multi-start search at 54x the cost, the bound of choosing among those starts); and, per
substructure class, the mean Pearson r between the predicted ``delta_kappa`` and the true substructure convergence,
both smoothed to the PSF scale (the training target), with the same r against another lens's truth as the control,
and an oracle: the true map kept only near the arcs, which bounds what any map read from the image can reach.
"""

from __future__ import annotations

import argparse

import torch
from _machine import describe_machine
from macro_estimator import errors as lens_errors

from d4lenspinn.checkpoint import load_trained_model
from d4lenspinn.classes import CLASS_NAMES, SUBSTRUCTURE_LABELS
from d4lenspinn.data.presets import BROAD_RANGES, get_preset
from d4lenspinn.data.simulator import LensSample, psf_kernel, render_images, sample_lenses, true_macro_lens
from d4lenspinn.data.truth import TruthTable
from d4lenspinn.models import capabilities_of
from d4lenspinn.physics import MacroLens, StartGrid, centred_lens, fit_smooth_lens
from d4lenspinn.physics.light import convolve_psf
from d4lenspinn.report import markdown_table


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image Pearson correlation of ``(B, ...)`` maps."""
    a, b = a.flatten(1) - a.flatten(1).mean(1, keepdim=True), b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


NEAR_ARCS_LIGHT = 0.05  # of the min-max normalised noiseless image
NEAR_ARCS_PIXELS = 4


QUANTILES = torch.tensor([0.5, 0.9])
PRIOR_STARTS = StartGrid.over_prior(BROAD_RANGES["theta_e"])  # 6 radii 0.6-1.6", centre +-2 px


def fitted_from_prior(model, images: torch.Tensor) -> MacroLens:
    """The model's fit (its PSF, steps and ``fit_psf``) from :data:`PRIOR_STARTS` about the centred round lens,
    without the network's estimate."""
    lenses = []
    for chunk in images.split(32):
        fit = fit_smooth_lens(
            chunk, centred_lens(len(chunk)), model.grid, model.psf_fwhm, model.psf_truncation, model.fit_steps,
            gradients=False, starts=PRIOR_STARTS, fit_psf=model.fit_psf,
        )  # fmt: skip
        lenses.append(fit.macro)
    return MacroLens(*(torch.cat(p) for p in zip(*lenses, strict=True)))


def fitted_from_every_start(model, images: torch.Tensor) -> MacroLens:
    """The model's fit run from each start of :data:`PRIOR_STARTS`; per image the lens of lowest final chi^2."""
    best, best_chi2 = None, None
    for start in PRIOR_STARTS.candidates(centred_lens(len(images)), model.grid.pixel_scale):
        fit = fit_smooth_lens(
            images, start, model.grid, model.psf_fwhm, model.psf_truncation, model.fit_steps,
            gradients=False, fit_psf=model.fit_psf,
        )  # fmt: skip
        packed, chi2 = fit.macro.as_tensor(), torch.nan_to_num(fit.reduced_chi2, nan=torch.inf)
        if best is None:
            best, best_chi2 = packed, chi2
        else:
            better = chi2 < best_chi2
            best, best_chi2 = torch.where(better[:, None], packed, best), torch.where(better, chi2, best_chi2)
    return MacroLens.from_tensor(best)


def near_light(images: torch.Tensor) -> torch.Tensor:
    """``(B, 1, n, n)`` 1 within ``NEAR_ARCS_PIXELS`` of a pixel brighter than ``NEAR_ARCS_LIGHT``, else 0."""
    bright = (images > NEAR_ARCS_LIGHT).float()
    return torch.nn.functional.max_pool2d(bright, 2 * NEAR_ARCS_PIXELS + 1, stride=1, padding=NEAR_ARCS_PIXELS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--n", type=int, default=100, help="lenses per class")
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--preset", default=None, help="default: the broad variant of the checkpoint's preset")
    parser.add_argument("--prior-starts", action="store_true", help="also fit from a grid over the prior (no network)")
    parser.add_argument("--every-start", action="store_true", help="with --prior-starts: also fit from each start")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, config, card = load_trained_model(args.checkpoint)
    if not capabilities_of(model).macro_lens:
        raise SystemExit(f"{args.checkpoint}: model {card.model} estimates no macro lens")
    preset = get_preset(args.preset or f"{config.data.preset.removesuffix('_broad')}_broad")
    print(describe_machine(torch.device("cpu")))
    print(f"{args.checkpoint} ({card.describe()})")
    print(f"held-out: {args.n} lenses per class of {preset.name}, seed {args.seed}")
    lenses = LensSample.concatenate(
        [sample_lenses(preset, label, args.n, torch.Generator().manual_seed(args.seed + label)) for label in range(3)]
    )
    images = render_images(lenses, preset, torch.Generator().manual_seed(args.seed + 3)).float()
    with torch.no_grad():
        outputs = [model.forward_features(chunk) for chunk in images.split(32)]
    delta = torch.cat([o.delta_kappa for o in outputs])
    true = MacroLens(*(value.float() for value in true_macro_lens(lenses)))
    lenses_of = {"": "macro"} if getattr(outputs[0], "macro_estimate", None) is None else {}
    lenses_of = lenses_of or {"estimate: ": "macro_estimate", "fitted: ": "macro"}
    smooth = lenses.label == 0
    print()
    found = {
        prefix: MacroLens(*(torch.cat(p) for p in zip(*(getattr(o, field) for o in outputs), strict=True)))
        for prefix, field in lenses_of.items()
    }
    if args.prior_starts:
        if "fitted: " not in found:
            raise SystemExit(f"--prior-starts: model {card.model} fits no lens")
        with torch.no_grad():
            found["fitted from the prior grid, no network: "] = fitted_from_prior(model, images)
            if args.every_start:
                found["fitted from every prior start, lowest final chi^2: "] = fitted_from_every_start(model, images)
    quantiles = []
    for prefix, lens in found.items():
        errors = lens_errors(lens, true, preset.pixel_scale)
        for name, values in errors.items():
            cells = [f"{q:.4f}" for subset in (values[smooth], values) for q in torch.quantile(subset, QUANTILES)]
            quantiles.append([prefix + name, *cells])
    header = ["macro-lens error", "no substructure: median", "90th percentile", "all: median", "90th percentile"]
    print(markdown_table(header, quantiles))

    target = TruthTable(lenses, preset).targets(torch.arange(len(lenses))).substructure
    psf = psf_kernel(preset)
    smoothed = convolve_psf(delta, psf)
    near_arcs = near_light(render_images(lenses, preset, noise=False))
    print()
    table = []
    for label in SUBSTRUCTURE_LABELS:
        rows = (lenses.label == label).nonzero().flatten()
        r = pearson(smoothed[rows], target[rows])
        control = pearson(smoothed[rows], target[rows.roll(1)])
        oracle = pearson(target[rows] * near_arcs[rows], target[rows])
        table.append([CLASS_NAMES[label], f"{r.mean():.3f}", f"{control.mean():.3f}", f"{oracle.mean():.3f}"])
    headers = ["class", "mean r(delta_kappa, true substructure)", "control: another lens's truth"]
    print(markdown_table([*headers, "oracle near the arcs"], table))
    print(
        f"oracle: the true map itself, but only within {NEAR_ARCS_PIXELS} px of the noiseless image's light above "
        f"{NEAR_ARCS_LIGHT} (where the arcs can show substructure); a bound on what the image can tell"
    )


if __name__ == "__main__":
    main()
