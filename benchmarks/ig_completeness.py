"""How well Integrated Gradients satisfies completeness on a trained checkpoint, as the number of steps grows.

    python benchmarks/ig_completeness.py --checkpoint runs/demo/best.pt [--steps 16 64 256] [--count 3]

For ``--count`` simulated subhalo images (seed ``--seed``) and a black-image baseline, prints the logit gap
``F(x) - F(0)`` of the subhalo class and ``|delta| / |F(x) - F(0)|`` per image and step count, where
``delta = sum(attributions) - (F(x) - F(0))`` is captum's convergence delta (0 for exact completeness).
"""

from __future__ import annotations

import argparse

import torch
from _machine import describe_machine

from d4lenspinn.checkpoint import load_trained_model
from d4lenspinn.data.presets import get_preset
from interp.attribution import integrated_gradients
from interp.pairs import substructure_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="runs/demo/best.pt")
    parser.add_argument("--steps", nargs="+", type=int, default=[16, 64, 256])
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, config, _ = load_trained_model(args.checkpoint)
    print(describe_machine(torch.device("cpu")))
    images, _, _ = substructure_pairs(get_preset(config.data.preset), 1, args.count, seed=args.seed)
    with torch.no_grad():
        gap = model(images).logits[:, 1] - model(torch.zeros_like(images)).logits[:, 1]
    print("logit gap F(x) - F(0):", " ".join(f"{v:+.4f}" for v in gap.tolist()))
    for steps in args.steps:
        _, delta = integrated_gradients(model, images, 1, n_steps=steps, internal_batch_size=64)
        ratios = (delta.abs() / gap.abs()).tolist()
        print(f"{steps:4d} steps: |delta| / |gap| =", " ".join(f"{r:.3f}" for r in ratios))


if __name__ == "__main__":
    main()
