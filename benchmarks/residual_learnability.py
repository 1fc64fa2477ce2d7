"""Does the fit's residual make the broad prior learnable? One classifier, the same images and budget, different inputs.

    python benchmarks/residual_learnability.py [--preset model_ii_broad] [--n-train 1000] [--n-test 300]
                                               [--epochs 6] [--steps 5] [--inputs image residual inversion] [--seed 0]
                                               [--subsets 1000 3000]

``--n-train`` / ``--n-test`` lenses per class of ``--preset`` are simulated (min-max normalised, as the models see
them); the smooth lens is fitted to each (:func:`~d4lenspinn.physics.fit_smooth_lens`, ``--steps``
Levenberg-Marquardt steps from the true lens with a network's typical errors, benchmarks/fit.py), once with the
preset's nominal PSF and once with the PSF width fitted too (``fit_psf=True``), each fit is scanned for a subhalo,
and the pixelated source is inverted through each fitted lens and PSF (:func:`~d4lenspinn.physics.invert_source`,
64 x 64 source pixels of 0.05", regularisation 10); only the fits and maps the ``--inputs`` need are computed. They
are computed once, before any training, so the inputs differ and nothing else does: ``d4_cnn`` (the D4-invariant
CNN) is trained from the same seed on each input for ``--epochs`` (batch 32, AdamW lr 1e-3 with one-cycle schedule,
weight decay 1e-4, one thread) and tested on the held-out lenses:

* ``image``: the image alone (what every classifier of the package sees);
* ``residual``: ``asinh((image - fitted smooth model) / sigma)``, the Sersic fit's residual in units of the noise;
* ``inversion``: ``asinh(residual of the pixelated-source inversion / sigma)``: any source structure the fitted
  lens maps consistently is absorbed;
* ``image+residual``: both channels;
* ``residual-psf``, ``inversion-psf``: the same two residuals with the PSF width fitted;
* ``scan``, ``scan-psf``: the subhalo scan of either fit (:func:`~d4lenspinn.physics.subhalo_scan`, stride 2), as
  ``asinh(sqrt(delta chi^2))`` (the significance of a subhalo at each 2 x 2 block, repeated onto its 4 pixels):
  where one subhalo would explain the residual; ``residual-psf+scan-psf`` both channels.

With ``--subsets`` each input is also trained on the first N training lenses per class (a learning curve: is the
budget what limits it?). Printed: test macro AUC with a stratified bootstrap 95% interval, per peak-SNR bin, and
paired against ``image`` (the ``-psf`` inputs also against the same input with the nominal PSF, every size against
the smallest).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from _machine import describe_machine
from fit import perturbed

from d4lenspinn.classes import CLASS_NAMES
from d4lenspinn.data.presets import get_preset
from d4lenspinn.data.simulator import render_images, sample_lenses, true_macro_lens
from d4lenspinn.metrics import bootstrap_intervals, classification_metrics, paired_difference
from d4lenspinn.models import create_model
from d4lenspinn.physics import MacroLens, PixelGrid, fit_smooth_lens, invert_source, macro_deflection, subhalo_scan
from d4lenspinn.physics.light import gaussian_psf_kernels
from d4lenspinn.progress import progress_bar
from d4lenspinn.report import markdown_table

BATCH = 64
INPUTS = ("image", "residual", "inversion", "image+residual", "residual-psf", "inversion-psf")
INPUTS += ("scan", "scan-psf", "residual-psf+scan-psf")
FITTED = tuple(f"{kind}{suffix}" for suffix in ("", "-psf") for kind in ("residual", "inversion", "scan"))
SNR_BINS = ((0.0, 30.0), (30.0, 100.0), (100.0, np.inf))


def simulate(preset, per_class: int, seed: int, steps: int, needed: set[str]) -> dict[str, torch.Tensor]:
    """Images, labels, peak SNR (inf: noiseless) and the ``needed`` maps of the fits (of :data:`FITTED`)."""
    grid = PixelGrid(preset.n_pixels, preset.pixel_scale)
    psf = (preset.psf_fwhm, preset.psf_truncation)
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in ("image", "labels", "snr", *needed)}
    for label in range(len(CLASS_NAMES)):
        lenses = sample_lenses(preset, label, per_class, torch.Generator().manual_seed(seed + label))
        images = render_images(lenses, preset, torch.Generator().manual_seed(seed + 10 + label))
        init = perturbed(true_macro_lens(lenses), grid.pixel_scale, torch.Generator().manual_seed(seed + 20 + label))
        for start in progress_bar(range(0, per_class, BATCH), desc=f"fit {CLASS_NAMES[label]}", leave=False):
            image = images[start : start + BATCH]
            guess = MacroLens(*(value[start : start + BATCH].float() for value in init))
            parts["image"].append(image)
            for suffix, fit_psf in (("", False), ("-psf", True)):
                if not {f"{kind}{suffix}" for kind in ("residual", "inversion", "scan")} & needed:
                    continue
                fit = fit_smooth_lens(image, guess, grid, *psf, steps, gradients=False, fit_psf=fit_psf)
                if "residual" + suffix in needed:
                    parts["residual" + suffix].append(torch.asinh(fit.normalised_residual))
                if "inversion" + suffix in needed:
                    data = image - fit.background.reshape(-1, 1, 1, 1)
                    alpha = macro_deflection(fit.macro, grid)
                    kernels = gaussian_psf_kernels(fit.psf_fwhm, preset.pixel_scale, preset.psf_truncation)
                    inversion = invert_source(data, alpha, grid, PixelGrid(64, 0.05), kernels, fit.sigma, 10.0, 80)
                    parts["inversion" + suffix].append(torch.asinh(inversion.normalised_residual))
                if "scan" + suffix in needed:
                    parts["scan" + suffix].append(scan_map(fit, grid, preset.psf_truncation, fit_psf))
        parts["labels"].append(torch.full((per_class,), label))
        parts["snr"].append(lenses.peak_snr.double())
    return {name: torch.cat(values) for name, values in parts.items()}


def scan_map(fit, grid: PixelGrid, psf_truncation: float, fit_psf: bool) -> torch.Tensor:
    """``asinh(sqrt(delta chi^2))`` of the subhalo scan at stride 2, each block's value on its 4 pixels, ``(B, 1, n,
    n)``; 0 where the fit failed."""
    values = torch.zeros_like(fit.model)
    kept = (~fit.failed).nonzero().flatten()
    if len(kept):
        scan = subhalo_scan(fit.select(kept), grid, psf_truncation, fit_psf, stride=2).delta_chi2
        values[kept] = torch.asinh(scan.sqrt()).repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    return values


def channels(data: dict[str, torch.Tensor], inputs: str) -> torch.Tensor:
    return torch.cat([data[name] for name in inputs.split("+")], dim=1)


def train_and_predict(train: torch.Tensor, labels: torch.Tensor, test: torch.Tensor, epochs: int, seed: int):
    """``d4_cnn`` trained on ``train (N, C, n, n)``; its softmax probabilities on ``test``, ``(M, 3)`` numpy."""
    torch.manual_seed(seed)
    model = create_model("d4_cnn", image_size=train.shape[-1], in_chans=train.shape[1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    steps = epochs * (len(train) // 32)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 1e-3, total_steps=steps)
    order = torch.Generator().manual_seed(seed)
    for _ in progress_bar(range(epochs), desc="epochs", leave=False):
        model.train()
        permutation = torch.randperm(len(train), generator=order)
        for start in range(0, len(train) - 31, 32):
            index = permutation[start : start + 32]
            loss = F.cross_entropy(model(train[index]).logits, labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        return torch.cat([model(test[i : i + 256]).logits.softmax(dim=1) for i in range(0, len(test), 256)]).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="model_ii_broad")
    parser.add_argument("--n-train", type=int, default=1000, help="training lenses per class")
    parser.add_argument("--n-test", type=int, default=300, help="test lenses per class")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=5, help="Levenberg-Marquardt steps of each fit")
    parser.add_argument("--inputs", nargs="+", default=list(INPUTS), choices=INPUTS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--subsets", type=int, nargs="+", help="also train on the first N lenses per class (a learning curve)"
    )
    args = parser.parse_args()
    if args.subsets and not all(0 < n <= args.n_train for n in args.subsets):
        parser.error(f"--subsets must lie in 1..--n-train ({args.n_train}), got {args.subsets}")
    torch.set_num_threads(1)
    print(describe_machine(torch.device("cpu")))
    print("command: python benchmarks/residual_learnability.py " + " ".join(sys.argv[1:]))
    preset = get_preset(args.preset)
    needed = {name for inputs in args.inputs for name in inputs.split("+")} & set(FITTED)
    start = time.time()
    train = simulate(preset, args.n_train, args.seed, args.steps, needed)
    test = simulate(preset, args.n_test, args.seed + 1000, args.steps, needed)
    print(f"simulated and fitted {3 * (args.n_train + args.n_test)} lenses in {time.time() - start:.0f} s")
    labels = test["labels"].numpy()
    snr = test["snr"].numpy()
    sizes = sorted(set(args.subsets or [args.n_train]))
    probabilities = {}
    for size in sizes:
        subset = torch.cat([torch.arange(size) + label * args.n_train for label in range(len(CLASS_NAMES))])
        for inputs in args.inputs:
            start = time.time()
            probabilities[inputs, size] = train_and_predict(
                channels(train, inputs)[subset], train["labels"][subset], channels(test, inputs), args.epochs, args.seed
            )
            print(f"{inputs}, {size} per class: trained in {time.time() - start:.0f} s")
    bins = {f"SNR {low:g}-{high:g}": (snr >= low) & ((snr < high) | (high == np.inf)) for low, high in SNR_BINS}
    header = ["input", "training lenses per class", "test macro AUC [95%]"]
    header += [f"{name} (n={int(sel.sum())})" for name, sel in bins.items()]
    header.append("paired (vs the image, the PSF-fitted residual, the nominal PSF for -psf inputs, the smallest set)")
    rows = []
    for (inputs, size), p in probabilities.items():
        interval = bootstrap_intervals(p, labels, CLASS_NAMES, 1000, seed=0)["macro_auc"]
        overall = (
            f"{classification_metrics(p, labels, CLASS_NAMES)['macro_auc']:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"
        )
        per_bin = [f"{classification_metrics(p[s], labels[s], CLASS_NAMES)['macro_auc']:.3f}" for s in bins.values()]
        pairs = []
        for reference in (
            ("image", size),
            (inputs.removesuffix("-psf"), size),
            ("residual-psf", size),
            (inputs, sizes[0]),
        ):
            if reference != (inputs, size) and reference in probabilities:
                gain = paired_difference(p, probabilities[reference], labels, CLASS_NAMES, 1000, seed=0)
                name = f"{reference[0]} at {reference[1]}" if len(sizes) > 1 else reference[0]
                pairs.append(f"{gain['gain']:+.3f} [{gain['ci95'][0]:+.3f}, {gain['ci95'][1]:+.3f}] vs {name}")
        rows.append([inputs, str(size), overall, *per_bin, "; ".join(pairs)])
    print(
        f"preset {preset.name}: {args.n_train} training and {args.n_test} test lenses per class, {args.epochs} epochs"
    )
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
