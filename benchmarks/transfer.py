"""Does a model trained only on our ``model_i`` simulations hold on DeepLenseSim's Model I recipe run in lenstronomy?

    python benchmarks/transfer.py [--model resnet18] [--n-per-class 900] [--test-per-class 500] [--epochs 8]
                                  [--lr 1e-3] [--out runs/transfer] [--n-bootstrap 1000] [--seed 0]

Needs lenstronomy: ``pip install -e ".[bench]"`` (a bare ``pip install lenstronomy==1.14.1`` upgrades numpy to 2.x
and breaks escnn). One training run on our ``model_i`` set (``--n-per-class`` images per class in ``train/``, split
90/10 into train and validation; scheme "official"), the best-validation checkpoint tested on two sets of
``--test-per-class`` images per class: our own ``val/`` split, and lenses drawn from the same preset but rendered by
:class:`simulate.LenstronomySimulator` (DeepLenseSim's ``simple_sim``: ``ImageModel``, PSF truncated at 3 sigma,
Poisson-of-clipped-counts noise), written as a DeepLense folder under ``--out/lenstronomy``. Reports the macro AUC
of both (with and without D4 TTA) with stratified bootstrap 95% intervals and the gap ours - lenstronomy with the
interval of independent bootstraps of the two sets. Target (docs/data.md): gap <= 0.03. Everything is reused when
present (training resumes from ``last.pt``), so an interrupted run continues.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from _machine import describe_machine
from compare import train_once
from simulate import LenstronomySimulator

from d4lenspinn.checkpoint import load_trained_model
from d4lenspinn.classes import CLASS_NAMES
from d4lenspinn.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from d4lenspinn.data import batch_loader, prepare_data, prepare_test_data
from d4lenspinn.data.presets import get_preset
from d4lenspinn.data.simulator import sample_lenses
from d4lenspinn.io import atomic_path, write_text
from d4lenspinn.metrics import bootstrap_intervals, classification_metrics
from d4lenspinn.progress import progress_bar
from d4lenspinn.report import markdown_table
from d4lenspinn.tta import collect_predictions

TARGET_GAP = 0.03
LENSTRONOMY_SEED = 1000  # lens streams of the lenstronomy set: distinct from the training simulation's


def write_lenstronomy_set(root: Path, count: int, seed: int) -> Path:
    """``count`` Model I images per class by lenstronomy in ``root/val/<class>/`` (skipped when complete)."""
    done = root / "complete.json"
    if done.exists() and json.loads(done.read_text()) == {"count": count, "seed": seed}:
        return root
    preset, sim = get_preset("model_i"), LenstronomySimulator(get_preset("model_i"))
    np.random.seed(seed)  # noqa: NPY002 (DeepLenseSim draws its noise from numpy's global generator)
    for label, name in enumerate(CLASS_NAMES):
        folder = root / "val" / name
        folder.mkdir(parents=True, exist_ok=True)
        lenses = sample_lenses(preset, label, count, torch.Generator().manual_seed(LENSTRONOMY_SEED + seed + label))
        for i in progress_bar(range(count), desc=f"lenstronomy {name}", unit="img"):
            (image,) = sim.render(lenses.select([i]))
            with atomic_path(folder / f"img{i:05d}.npy") as path, open(path, "wb") as handle:
                np.save(handle, image.astype(np.float32))
    write_text(done, json.dumps({"count": count, "seed": seed}))
    return root


def _macro_auc_resamples(probabilities: np.ndarray, labels: np.ndarray, n: int, rng) -> np.ndarray:
    """Macro AUC of ``n`` stratified bootstrap resamples."""
    members = [np.flatnonzero(labels == k) for k in range(len(CLASS_NAMES))]
    values = []
    for _ in range(n):
        index = np.concatenate([m[rng.integers(0, len(m), len(m))] for m in members])
        values.append(classification_metrics(probabilities[index], labels[index], CLASS_NAMES)["macro_auc"])
    return np.array(values)


def results_table(results: dict) -> str:
    """Markdown table of every test set (with and without TTA): images, macro AUC with interval, AUC per class."""
    rows = []
    for key, r in results.items():
        low, high = r["intervals"]["macro_auc"]
        aucs = [f"{r[f'auc_{c}']:.3f}" for c in CLASS_NAMES]
        rows.append([key, r["n"], f"{r['macro_auc']:.3f} [{low:.3f}, {high:.3f}]", *aucs])
    headers = ["test set", "images", "macro AUC [95% CI]", *(f"AUC {c}" for c in CLASS_NAMES)]
    return markdown_table(headers, rows, align="lrl" + "r" * len(CLASS_NAMES))


def training_config(args: argparse.Namespace) -> TrainConfig:
    """The one training run: our ``model_i`` set (``train/`` split 90/10, ``val/`` the test set)."""
    data = DataConfig(
        root=str(Path(args.out) / "ours"),
        preset="model_i",
        n_per_class=args.n_per_class,
        n_val_per_class=args.test_per_class,
        scheme="official",
        batch_size=args.batch,
    )
    return TrainConfig(
        data=data,
        model=ModelConfig(name=args.model),
        optim=OptimConfig(epochs=args.epochs, lr=args.lr, warmup_epochs=0.5, early_stopping_patience=args.epochs),
        seed=args.seed,
        out=str(Path(args.out) / args.model),
        device=args.device,
        n_bootstrap=args.n_bootstrap,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--n-per-class", type=int, default=900)
    parser.add_argument("--test-per-class", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", default="runs/transfer")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    out = Path(args.out)

    config = training_config(args)
    print(f"machine: {describe_machine(torch.device('cpu'))}")
    timing = train_once(config)
    model, _, _ = load_trained_model(out / args.model / "best.pt")
    sets = {
        "ours (model_i val/)": prepare_data(config.data, seed=args.seed).test,
        "lenstronomy (DeepLenseSim Model I)": prepare_test_data(
            write_lenstronomy_set(out / "lenstronomy", args.test_per_class, args.seed), split="val"
        ).test,
    }
    results, resamples = {}, {}
    device = next(model.parameters()).device
    for name, dataset in sets.items():
        for tta in (False, True):
            probabilities, labels = collect_predictions(model, batch_loader(dataset, 64), device, tta=tta)
            key = f"{name}{', TTA' if tta else ''}"
            metrics = classification_metrics(probabilities, labels, CLASS_NAMES)
            intervals = bootstrap_intervals(probabilities, labels, CLASS_NAMES, args.n_bootstrap, seed=args.seed)
            results[key] = {"n": len(labels), **metrics, "intervals": intervals}
            resamples[key] = _macro_auc_resamples(probabilities, labels, args.n_bootstrap, np.random.default_rng(0))

    print(f"\n{args.model} trained on our model_i ({args.n_per_class}/class, {args.epochs} epochs, lr {args.lr:g}; "
          f"{timing['train_seconds'] / 60:.1f} min on {timing['threads']} threads)")  # fmt: skip
    print(results_table(results))
    names = list(sets)
    for suffix in ("", ", TTA"):
        ours, theirs = names[0] + suffix, names[1] + suffix
        gap = results[ours]["macro_auc"] - results[theirs]["macro_auc"]
        low, high = np.percentile(resamples[ours] - resamples[theirs], [2.5, 97.5])
        verdict = "met" if gap <= TARGET_GAP else "NOT met"
        results[f"gap{suffix}"] = {"gap": gap, "interval": [low, high]}
        print(f"gap ours - lenstronomy{suffix or ' (no TTA)'}: {gap:+.3f} [{low:+.3f}, {high:+.3f}]; "
              f"target <= {TARGET_GAP}: {verdict}")  # fmt: skip
    write_text(out / "transfer.json", json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
