"""Throughput of every registered model: parameters, training and inference images/s, and the cost of D4 TTA.

    python benchmarks/models.py [--sizes 64 150] [--models d4lenspinn resnet18 ...] [--batch 32]
                                [--repeats 4 2] [--device cpu|cuda] [--threads N] [--lens-set head_pool=2 ...]

For each model and image size, on a random batch in float32:

* train: one optimisation step as in ``d4lenspinn.train`` (train mode, forward, cross-entropy plus the default
  physics losses for models with maps, backward, AdamW step);
* infer: ``tta.predict(network, x)`` with ``network = tta.inference_network(model)``, the plain-torch export that
  ``evaluate`` and ``predict`` run (the model itself where it has no export); TTA: ``predict(network, x,
  tta=True)``, which is the one-pass fast path for D4LensPINN and 8 full passes otherwise; TTA/1 is the ratio of
  their times (``naive`` adds the 8-pass ratio of ``predict_naive_tta`` for models with a fast path);
* physics: for models with a lensing engine, ``model.engine`` forward+backward on that batch's kappa and images, in
  isolation, as a share of the train step.

Times are medians over ``--repeats`` runs (one value per size, or one for all) after one warm-up run; TTA, 8 passes
a run, gets half as many runs, and the 8-pass path no warm-up (the single pass just ran on the same shapes). The targets
checked at the end, for the registered lens model ``d4lenspinn_lens``: it trains at >= 0.6x (64 px) and >= 0.5x
(150 px) the images/s of ResNet18, predicts at >= 1.0x, and its physics engine takes < 10% of its train step.

On a shared CPU, ``--threads 1`` gives steadier figures: with more threads than the cores left free, every
multi-threaded op waits for a descheduled thread, and the timings scatter by factors of several.
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable

import torch
from _machine import describe_machine, model_settings, wall_times
from torch import nn

from d4lenspinn.config import LossConfig
from d4lenspinn.data import Batch
from d4lenspinn.data.presets import PRESETS
from d4lenspinn.losses import Objective
from d4lenspinn.models import capabilities_of, count_parameters, create_model, list_models
from d4lenspinn.tta import inference_network, predict, predict_naive_tta

LENS_MODEL = "d4lenspinn_lens"  # the registered lens model, whose targets the run checks
TRAIN_TARGETS = {64: 0.6, 150: 0.5}  # its training images/s over ResNet18's, by image size
COLUMNS = ("model", "size", "parameters", "train img/s", "infer img/s", "TTA img/s", "TTA/1", "physics/step")


def _median_seconds(step: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``step()`` in seconds over ``repeats`` runs, after ``warmup`` untimed runs."""
    return statistics.median(wall_times(step, device, repeats, warmup))


def _train_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    """One AdamW step on ``images`` with the loss of ``d4lenspinn.train`` (physics terms where the model has maps)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    grid = model.grid if capabilities_of(model).physics_maps else None
    objective, batch = Objective(LossConfig()), Batch(images, labels, torch.arange(len(labels)))

    def step() -> None:
        model.train()
        loss = objective(model(images), batch, 0, grid)["total"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _physics_step(model: nn.Module, images: torch.Tensor) -> Callable[[], None]:
    """Forward+backward of ``model.engine`` alone, on the kappa the model predicts for ``images``."""
    with torch.no_grad():
        kappa = model.eval().forward_features(images).kappa.requires_grad_()

    def step() -> None:
        out = model.engine(kappa, images)
        (out.psi.mean() + out.source.mean() + out.relensed.mean()).backward()

    return step


def _pixel_scale(size: int) -> float:
    """Arcsec per pixel of the simulation preset of this image size (the physics models' grid)."""
    scales = {preset.n_pixels: preset.pixel_scale for preset in PRESETS.values()}
    if size not in scales:
        raise SystemExit(f"--sizes: no simulation preset makes {size} px images; use one of {sorted(scales)}")
    return scales[size]


def measure(
    name: str, size: int, batch: int, repeats: int, device: torch.device, settings: dict | None = None
) -> dict[str, float | str | None]:
    """The figures of one model (with ``settings`` overriding its registered ones) at one image size (times in
    seconds, throughputs in images/s)."""
    torch.manual_seed(0)
    model = create_model(name, image_size=size, pixel_scale=_pixel_scale(size), **(settings or {})).to(device)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 1, size, size, generator=generator).to(device)
    labels = torch.randint(0, 3, (batch,), generator=generator).to(device)

    train = _median_seconds(_train_step(model, images, labels), device, repeats)
    network = inference_network(model)
    single = _median_seconds(lambda: predict(network, images), device, repeats)
    # TTA runs are 8 passes each, so half as many; the naive ones reuse the warmed-up shapes of the single pass
    tta_repeats = (repeats + 1) // 2
    fast = capabilities_of(model).equivariant_maps  # predict takes the one-pass fast path
    row = {"train": train, "single": single, "naive": None, "physics": None}
    if fast:
        row["naive"] = _median_seconds(lambda: predict_naive_tta(network, images), device, tta_repeats, warmup=0)
    row["tta"] = _median_seconds(lambda: predict(network, images, tta=True), device, tta_repeats, warmup=int(fast))
    if hasattr(model, "engine"):
        row["physics"] = _median_seconds(_physics_step(model, images), device, repeats)
    label = name + "".join(f" {key}={value}" for key, value in (settings or {}).items())
    row.update(model=label, size=size, parameters=count_parameters(model))
    return row


def _cells(row: dict, batch: int) -> list[str]:
    """A table row: throughputs, the TTA ratio (and the naive 8-pass one) and the physics share of the step."""
    ratio = f"{row['tta'] / row['single']:.2f}"
    if row["naive"] is not None:
        ratio += f" (naive {row['naive'] / row['single']:.2f})"
    physics = "" if row["physics"] is None else f"{100 * row['physics'] / row['train']:.1f}%"
    return [
        row["model"],
        str(row["size"]),
        f"{row['parameters']:,d}",
        f"{batch / row['train']:.1f}",
        f"{batch / row['single']:.1f}",
        f"{batch / row['tta']:.1f}",
        ratio,
        physics,
    ]


def _targets(rows: list[dict]) -> list[str]:
    """PASS/FAIL lines for the lens model's targets, one set per size where it and ResNet18 were measured."""
    by_key = {(row["model"], row["size"]): row for row in rows}
    lines = []
    for (name, size), row in by_key.items():
        if name.split(" ")[0] != LENS_MODEL or ("resnet18", size) not in by_key:  # and its --lens-set variant
            continue
        reference = by_key["resnet18", size]
        train, need = reference["train"] / row["train"], TRAIN_TARGETS.get(size, 0.5)
        lines.append(f"{size}px {name} train vs ResNet18: {train:.2f}x (>= {need}x) {_verdict(train >= need)}")
        infer = reference["single"] / row["single"]
        lines.append(f"{size}px {name} predict vs ResNet18: {infer:.2f}x (>= 1.0x) {_verdict(infer >= 1.0)}")
        share = row["physics"] / row["train"]
        lines.append(f"{size}px physics engine: {100 * share:.1f}% of the train step (< 10%) {_verdict(share < 0.1)}")
    return lines


def _verdict(passed: bool) -> str:
    """``PASS`` or ``FAIL``."""
    return "PASS" if passed else "FAIL"


def main() -> None:
    """Parse the options, measure every model at every size, print the table and the targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 150])
    parser.add_argument("--models", nargs="+", default=list_models(), choices=list_models(), metavar="NAME")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, nargs="+", default=[4, 2], help="timed runs: one per size, or one")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--lens-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"also measure {LENS_MODEL} with these settings (values parsed as YAML), e.g. head_pool=2",
    )
    args = parser.parse_args()
    lens_settings = model_settings(args.lens_set, "--lens-set")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    repeats = args.repeats * len(args.sizes) if len(args.repeats) == 1 else args.repeats
    if len(repeats) != len(args.sizes):
        parser.error(f"--repeats takes one value or one per size ({len(args.sizes)}), got {args.repeats}")
    device = torch.device(args.device)

    print(f"machine: {describe_machine(device)}")
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    print(f"batch {args.batch}, float32, medians of {dict(zip(args.sizes, repeats, strict=True))} runs by size\n")
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "|".join("---" for _ in COLUMNS) + "|")
    rows = []
    for size, size_repeats in zip(args.sizes, repeats, strict=True):
        variants = [(name, None) for name in args.models]
        if lens_settings:
            variants.append((LENS_MODEL, lens_settings))
        for name, settings in variants:
            rows.append(measure(name, size, args.batch, size_repeats, device, settings))
            print("| " + " | ".join(_cells(rows[-1], args.batch)) + " |", flush=True)
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")
    for line in _targets(rows):
        print(line)


if __name__ == "__main__":
    main()
