"""Online simulation (``data.source: simulate-online``) against a fixed simulated set: epoch time and test AUC.

    python benchmarks/online.py [--model d4_cnn] [--preset model_ii] [--n-per-class 600] [--epochs 6] [--lr 1e-3]
                                [--timing-per-class 200] [--out runs/online] [--n-bootstrap 1000] [--seed 0]
                                [--timing-only]

(1) Wall time of one training epoch (``Trainer.train_epoch``, the same model, batch size and number of steps) on a
simulated set written to disk (read back through the page cache) and on the online source, which renders every
batch; one torch thread, run on an idle machine. Target (issue): online <= 1.2x on-disk. (2) Two trainings at equal
steps, ``--n-per-class`` training images per class and ``--epochs`` epochs each: a fixed set (source "simulate",
80/10/10 split of train/, so 80% of the images train) against fresh images every epoch (online, the same number of
images per epoch); both tested on the same held-out set (the online source's fixed test stream, images neither run
trained on) with stratified bootstrap intervals and the paired interval of their macro AUC difference.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _machine import describe_machine
from compare import train_once

from d4lenspinn.checkpoint import load_trained_model
from d4lenspinn.classes import CLASS_NAMES
from d4lenspinn.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from d4lenspinn.data import batch_loader, prepare_data
from d4lenspinn.io import write_text
from d4lenspinn.metrics import bootstrap_intervals, classification_metrics, paired_difference
from d4lenspinn.report import markdown_table
from d4lenspinn.train import Trainer
from d4lenspinn.tta import collect_predictions

TARGET_RATIO = 1.2


def _config(args, out: Path, source: str, n_per_class: int, epochs: int) -> TrainConfig:
    online = source == "simulate-online"
    # equal steps: the fixed set trains on 80% of train/, so online draws that many images per class per epoch
    data = DataConfig(
        source=source,
        root=str(out / "data" / f"{args.preset}_{n_per_class}"),
        preset=args.preset,
        n_per_class=round(0.8 * n_per_class) if online else n_per_class,
        n_val_per_class=max(1, n_per_class // 4),
        batch_size=args.batch,
    )
    optim = OptimConfig(epochs=epochs, lr=args.lr, warmup_epochs=0.5, early_stopping_patience=epochs)
    run = out / f"{'online' if online else 'fixed'}_{n_per_class}"
    return TrainConfig(data=data, model=ModelConfig(name=args.model), optim=optim, seed=args.seed, out=str(run))


def epoch_seconds(config: TrainConfig) -> tuple[float, int]:
    """Wall time of one training epoch of a fresh trainer (the first epoch, after the data are ready) and its steps."""
    trainer = Trainer(config)
    start = time.perf_counter()
    trainer.train_epoch()
    return time.perf_counter() - start, len(trainer.train_loader)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="d4_cnn")
    parser.add_argument("--preset", default="model_ii")
    parser.add_argument("--n-per-class", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--timing-per-class", type=int, default=200)
    parser.add_argument("--out", default="runs/online")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timing-only", action="store_true", help="measure the epoch times, skip the trainings")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    print(f"machine: {describe_machine(torch.device('cpu'))}")

    times = {}
    for source in ("simulate", "simulate-online"):
        config = _config(args, out / "timing", source, args.timing_per_class, epochs=1)
        prepare_data(config.data, seed=args.seed)  # the on-disk set is written before the clock starts
        times[source] = epoch_seconds(config)
    (disk, steps), (online, _) = times["simulate"], times["simulate-online"]
    verdict = "met" if online <= TARGET_RATIO * disk else "NOT met"
    print(f"\none epoch of {args.model}, {steps} steps of {args.batch} {args.preset} images, 1 thread:")
    print(f"on disk {disk:.1f} s, online {online:.1f} s: {online / disk:.2f}x (target <= {TARGET_RATIO}x: {verdict})")

    results = {"epoch_seconds": {"disk": disk, "online": online, "steps": steps}}
    if args.timing_only:
        return
    runs = {source: _config(args, out, source, args.n_per_class, args.epochs) for source in times}
    test = prepare_data(runs["simulate-online"].data, seed=args.seed).test
    probabilities = {}
    for source, config in runs.items():
        timing = train_once(config)
        model, _, _ = load_trained_model(Path(config.out) / "best.pt")
        probabilities[source], labels = collect_predictions(model, batch_loader(test, 64), torch.device("cpu"))
        metrics = classification_metrics(probabilities[source], labels, CLASS_NAMES)
        intervals = bootstrap_intervals(probabilities[source], labels, CLASS_NAMES, args.n_bootstrap, seed=args.seed)
        results[source] = {**metrics, "intervals": intervals, "train_seconds": timing["train_seconds"]}
    print(f"\n{args.model}, {args.epochs} epochs at equal steps, tested on {len(labels)} fresh {args.preset} images")
    rows = []
    for source in runs:
        r, (low, high) = results[source], results[source]["intervals"]["macro_auc"]
        name = "fixed set (on disk)" if source == "simulate" else "online (fresh every epoch)"
        aucs = [f"{r[f'auc_{c}']:.3f}" for c in CLASS_NAMES]
        rows.append([name, f"{r['macro_auc']:.3f} [{low:.3f}, {high:.3f}]", *aucs, f"{r['train_seconds'] / 60:.1f}"])
    headers = ["training data", "macro AUC [95% CI]", *(f"AUC {c}" for c in CLASS_NAMES), "train min"]
    print(markdown_table(headers, rows, align="ll" + "r" * (len(CLASS_NAMES) + 1)))
    difference = paired_difference(
        probabilities["simulate-online"], probabilities["simulate"], labels, CLASS_NAMES, args.n_bootstrap, args.seed
    )
    (low, high), gain = difference["ci95"], difference["gain"]
    print(f"online - fixed: {gain:+.3f} macro AUC, paired 95% interval [{low:+.3f}, {high:+.3f}]")
    results["online_minus_fixed"] = difference
    write_text(out / "online.json", json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
