"""Can the network get the lens right? Train the MacroEstimator alone and measure its parameter errors.

    python benchmarks/macro_estimator.py [--preset model_ii_broad] [--steps 600] [--batch 32] [--widths 2 4 8 16]
    python benchmarks/macro_estimator.py --loss consistency        # self-supervised: no truth in the loss

Training images are simulated on the fly from ``--preset``, by default the broad prior (Einstein radius, ellipticity,
shear, lens centre within +-0.3", source, PSF width and noise all vary; every class, so substructure is a nuisance
here), each step a
fresh batch from a seeded stream; the loss is :func:`d4lenspinn.losses.macro_parameter_loss` against the
simulator's truth (``--loss macro``) or :func:`d4lenspinn.losses.lens_consistency_loss` of the image through the
estimated lens (``--loss consistency``, which never sees the truth), with AdamW and a cosine schedule; ``--steps 0``
scores the initial, parameter-free read-outs. The held-out set (``--n-test`` lenses per class, another seed)
is scored at the end: median and 90th percentile of the theta_E error relative to theta_E, of the centre error in
pixels, and of |delta e| and |delta gamma|. One torch thread; a CPU run takes minutes.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from _machine import describe_machine

from d4lenspinn.classes import CLASS_NAMES
from d4lenspinn.data.presets import get_preset
from d4lenspinn.data.simulator import LensSample, render_images, sample_lenses, true_macro_lens
from d4lenspinn.losses import image_plane_coverage, lens_consistency_loss, macro_parameter_loss
from d4lenspinn.models.macro_estimator import MacroEstimator
from d4lenspinn.physics import LensingEngine, MacroLens, PixelGrid
from d4lenspinn.report import markdown_table


def simulated(preset, per_class: int, seed: int) -> tuple[torch.Tensor, MacroLens]:
    """``per_class`` images of each class (float32) and their true macro lens (float32)."""
    lenses = LensSample.concatenate(
        [sample_lenses(preset, label, per_class, torch.Generator().manual_seed(seed + label)) for label in range(3)]
    )
    images = render_images(lenses, preset, torch.Generator().manual_seed(seed + len(CLASS_NAMES)))
    return images.float(), MacroLens(*(value.float() for value in true_macro_lens(lenses)))


def errors(predicted: MacroLens, true: MacroLens, pixel_scale: float) -> dict[str, torch.Tensor]:
    """Per-lens errors: relative theta_E, centre in pixels, |delta e|, |delta gamma|."""
    return {
        "theta_E (relative)": ((predicted.theta_e - true.theta_e) / true.theta_e).abs(),
        "centre [px]": torch.hypot(predicted.center_x - true.center_x, predicted.center_y - true.center_y)
        / pixel_scale,
        "|delta e|": torch.hypot(predicted.e1 - true.e1, predicted.e2 - true.e2),
        "|delta gamma|": torch.hypot(predicted.gamma1 - true.gamma1, predicted.gamma2 - true.gamma2),
    }


def consistency(images: torch.Tensor, macro: MacroLens, engine: LensingEngine) -> torch.Tensor:
    """The self-supervised loss of ``images`` through the macro lens alone (no substructure map)."""
    out = engine(torch.zeros_like(images), images, macro)
    mask = image_plane_coverage(out.source_weight, out.alpha, engine.grid)
    return lens_consistency_loss(images, out.relensed, out.source, mask, engine.grid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="model_ii_broad", help="a preset whose lens varies (docs/data.md)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=32, help="images per step (a multiple of 3: equal classes)")
    parser.add_argument("--widths", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--loss", choices=("macro", "consistency"), default="macro")
    parser.add_argument("--n-test", type=int, default=100, help="held-out lenses per class")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    preset = get_preset(args.preset)
    print(describe_machine(torch.device("cpu")))
    print(
        f"preset {preset.name}, {args.steps} steps of {args.batch} fresh images, widths {args.widths}, lr {args.lr}, "
        f"loss {args.loss}"
    )

    estimator = MacroEstimator(preset.n_pixels, preset.pixel_scale, widths=tuple(args.widths))
    engine = LensingEngine(PixelGrid(preset.n_pixels, preset.pixel_scale))
    optimizer = torch.optim.AdamW(estimator.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, args.steps))))
    )
    start = time.perf_counter()
    for step in range(args.steps):
        images, truth = simulated(preset, max(1, args.batch // 3), seed=1_000_003 * (args.seed + 1) + 7 * step)
        macro = estimator(images)
        if args.loss == "macro":
            terms = macro_parameter_loss(macro, truth, preset.pixel_scale)
        else:
            terms = {"total": consistency(images, macro, engine)}
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(estimator.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % max(1, args.steps // 10) == 0 or step == args.steps - 1:
            parts = ", ".join(f"{k} {v.item():.3g}" for k, v in terms.items())
            print(f"step {step:5d} ({time.perf_counter() - start:6.0f} s): {parts}", flush=True)

    estimator.eval()
    images, truth = simulated(preset, args.n_test, seed=987_654 + args.seed)
    with torch.no_grad():
        chunks = [estimator(chunk) for chunk in images.split(64)]
        predicted = MacroLens(*(torch.cat(parts) for parts in zip(*chunks, strict=True)))
    print()
    print(f"held-out: {3 * args.n_test} {preset.name} lenses (all classes)")
    rows = []
    for name, values in errors(predicted, truth, preset.pixel_scale).items():
        median, p90 = torch.quantile(values, torch.tensor([0.5, 0.9])).tolist()
        rows.append([name, f"{median:.4f}", f"{p90:.4f}"])
    print(markdown_table(["error", "median", "90th percentile"], rows))


if __name__ == "__main__":
    main()
