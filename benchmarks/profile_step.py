"""Where the time of one training step goes: each part of a physics-informed model, forward and backward alone on the
inputs it sees in the step, next to the whole step (forward, loss, backward, AdamW; as benchmarks/models.py times it).

    python benchmarks/profile_step.py [--model d4lenspinn_lens] [--size 150] [--batch 32] [--threads 1]
                                      [--set shared_trunk=false --set head_pool=1 ...]

The parts: the preprocessing (no parameters, forward only), each U-Net (``unet``, and ``macro_estimator`` where the
model has one), the lensing engine (gradient into its convergence), the head on the stacked channels. The parts
are timed alone, so their sum differs from the step by the loss, the optimiser and what runs between them. Times are
medians of ``--repeats`` runs after one warm-up, in milliseconds; ``--set`` overrides the model's settings (values
parsed as YAML), so one command profiles the configuration before a change and another after it.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _machine import describe_machine, model_settings, wall_times
from models import _pixel_scale, _train_step

from d4lenspinn.models import create_model


def _milliseconds(step, device: torch.device, repeats: int) -> float:
    return 1000 * statistics.median(wall_times(step, device, repeats))


def _forward_backward(module, *inputs):
    """A step running ``module(*inputs)`` and backpropagating the sum of its tensor outputs."""

    def step() -> None:
        out = module(*inputs)
        tensors = [out] if torch.is_tensor(out) else [t for t in out if torch.is_tensor(t)]
        sum(t.float().sum() for t in tensors).backward()

    return step


def profile(name: str, size: int, batch: int, repeats: int, device: torch.device, settings: dict) -> dict[str, float]:
    """Milliseconds per part and for the whole step of model ``name`` at ``size`` px."""
    torch.manual_seed(0)
    model = create_model(name, image_size=size, pixel_scale=_pixel_scale(size), **settings).to(device).train()
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 1, size, size, generator=generator).to(device)
    labels = torch.randint(0, 3, (batch,), generator=generator).to(device)
    with torch.no_grad():
        features = model.preprocessing(images)
        maps = model.forward_features(images)
        channels = model.head_channels(maps)
    times = {"preprocessing (forward)": _milliseconds(lambda: model.preprocessing(images), device, repeats)}
    residual = getattr(maps, "normalised_residual", None)  # the fitted lens model's U-Net also reads the residual
    unet_input = features if residual is None else torch.cat((features, torch.asinh(residual)), dim=1)
    times["unet"] = _milliseconds(_forward_backward(model.unet, unet_input), device, repeats)
    if hasattr(model, "macro_estimator"):
        times["macro_estimator"] = _milliseconds(_forward_backward(model.macro_estimator, features), device, repeats)
    delta = maps.delta_kappa if hasattr(maps, "delta_kappa") else maps.kappa
    delta = delta.detach().requires_grad_()
    macro = getattr(maps, "macro", None)
    times["engine"] = _milliseconds(_forward_backward(model.engine, delta, images, macro), device, repeats)
    times["head"] = _milliseconds(_forward_backward(model.head, channels.detach()), device, repeats)
    times["whole step"] = _milliseconds(_train_step(model, images, labels), device, repeats)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="d4lenspinn_lens")
    parser.add_argument("--size", type=int, default=150)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a model setting")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    settings = model_settings(args.set, "--set")
    device = torch.device(args.device)
    print(f"machine: {describe_machine(device)}")
    print(f"{args.model} at {args.size} px, batch {args.batch}, settings {settings or 'registered'}\n")
    times = profile(args.model, args.size, args.batch, args.repeats, device, settings)
    step = times["whole step"]
    print("| part | ms | share of the step |\n|---|---:|---:|")
    for part, ms in times.items():
        print(f"| {part} | {ms:.0f} | {100 * ms / step:.0f}% |")


if __name__ == "__main__":
    main()
