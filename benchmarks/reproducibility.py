"""Is a training bit-reproducible? The same config trained twice at one thread count and once at another.

    python benchmarks/reproducibility.py [--config configs/tiny.yaml] [--set key=value ...] [--threads 1 2]
                                         [--out runs/reproducibility]

Trains the config (with the ``--set`` overrides, e.g. a short run) three times in this process: twice with
``torch.set_num_threads`` at the first ``--threads`` value, once at the second. Prints, for the repeat and for the
other thread count, the largest absolute difference of any floating-point weight of ``last.pt`` from the first run
(and where it is), and each run's last validation macro AUC. Same seed, same data, same code: a repeat that differs
means something in the step is not deterministic; a thread count that differs means the result depends on how
reductions are split, so a comparison of runs must hold the thread count (and the CPU) fixed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from _machine import describe_machine

from d4lenspinn.checkpoint import load_checkpoint
from d4lenspinn.config import load_config
from d4lenspinn.train import train


def largest_difference(first: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> tuple[float, str]:
    """The largest absolute difference between two state dicts' floating-point tensors, and its key."""
    return max(
        ((first[k].double() - other[k].double()).abs().max().item(), k) for k in first if first[k].is_floating_point()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--threads", nargs=2, type=int, default=[1, 2], metavar=("SAME", "OTHER"))
    parser.add_argument("--out", default="runs/reproducibility")
    args = parser.parse_args()
    if min(args.threads) < 1:
        parser.error(f"--threads must be two counts >= 1, got {args.threads}")
    print(f"machine: {describe_machine(torch.device('cpu'))}")
    runs = {}
    for name, threads in (("first", args.threads[0]), ("repeat", args.threads[0]), ("other", args.threads[1])):
        torch.set_num_threads(threads)
        config = load_config(args.config, [*args.overrides, f"out={Path(args.out) / name}"])
        run_dir = train(config, overwrite=True)
        rows = (run_dir / "metrics.jsonl").read_text().splitlines()
        weights = load_checkpoint(run_dir / "last.pt").model_state
        runs[name] = (threads, weights, json.loads(rows[-1]).get("val_macro_auc"))
    first = runs["first"][1]
    for name, (threads, weights, auc) in runs.items():
        difference, key = largest_difference(first, weights)
        where = "-" if name == "first" else "0 (identical)" if difference == 0 else f"{difference:.3g} ({key})"
        print(f"{name:7s} threads {threads}: largest weight difference from the first run {where}; val macro AUC {auc}")


if __name__ == "__main__":
    main()
