"""Two checkpoints on the same test split: each one's test macro AUC and the paired difference.

    python benchmarks/paired.py runs/a/best.pt runs/b/best.pt [--tta] [--n-bootstrap 1000] [--threads 1]

Both are evaluated as ``d4lenspinn evaluate`` does (each on its own run's test split, which must be the same images:
same data, seed and split), and the difference ``A - B`` of macro AUC gets a paired stratified bootstrap 95%
interval (both predictions resampled with the same indices, within each class).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _machine import describe_machine

from d4lenspinn.classes import CLASS_NAMES
from d4lenspinn.evaluate import evaluate
from d4lenspinn.metrics import classification_metrics, paired_difference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first")
    parser.add_argument("second")
    parser.add_argument("--tta", action="store_true", help="with D4 test-time augmentation")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe_machine(torch.device("cpu")))
    setting = "D4 TTA" if args.tta else "no TTA"
    predictions = [evaluate(path, tta=args.tta).predictions for path in (args.first, args.second)]
    if not np.array_equal(predictions[0].labels, predictions[1].labels):
        raise SystemExit("the two checkpoints were tested on different images (data, seed or split differ)")
    labels = predictions[0].labels
    for path, p in zip((args.first, args.second), predictions, strict=True):
        auc = classification_metrics(p.probabilities[setting], labels, CLASS_NAMES)["macro_auc"]
        print(f"{path}: test macro AUC {auc:.3f}")
    a, b = (p.probabilities[setting] for p in predictions)
    gain = paired_difference(a, b, labels, CLASS_NAMES, args.n_bootstrap, seed=0)
    low, high = gain["ci95"]
    print(f"first - second ({setting}, {len(labels)} images): {gain['gain']:+.3f} [{low:+.3f}, {high:+.3f}] (paired)")


if __name__ == "__main__":
    main()
