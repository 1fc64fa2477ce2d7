"""Train D4LensPINN and the comparison models on the same data, budget, seeds and tuning grid; write docs/RESULTS.md.

    python benchmarks/compare.py                       # the CPU configuration (about an hour on 2 cores, 1 thread)
    python benchmarks/compare.py --n-per-class 5000 --epochs 30 --device cuda --threads 8   # the GPU configuration

Every model gets the same tuning budget: one full training run per learning rate in ``--lrs`` (same simulated data,
split, seed, epochs, batch size, warm-up + cosine schedule, weight decay, D4 augmentation); the run with the best
*validation* macro AUC is the one evaluated on the test split, with and without D4 TTA. The TTA gain comes with a
paired bootstrap interval (both predictions resampled with the same stratified indices).

Runs live in ``--out/<model>/lr<lr>/`` and are reused: a finished run (``timing.json``) is skipped, an interrupted
one resumes from its ``last.pt``. ``--report-only`` rebuilds the results from the finished runs without training.
Outputs: ``--out/results.json``, ``--results`` (markdown) and its figure ``docs/figures/compare_auc.png``. Text after
the line ``NOTES_MARKER`` in an existing ``--results`` file (the discussion of the numbers) is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _machine import describe_machine  # noqa: E402

from d4lenspinn.checkpoint import load_trained_model  # noqa: E402
from d4lenspinn.classes import CLASS_NAMES  # noqa: E402
from d4lenspinn.config import DataConfig, LossConfig, ModelConfig, OptimConfig, TrainConfig  # noqa: E402
from d4lenspinn.data import batch_loader, prepare_data  # noqa: E402
from d4lenspinn.device import resolve_device  # noqa: E402
from d4lenspinn.evaluate import evaluate  # noqa: E402
from d4lenspinn.io import atomic_path, write_text  # noqa: E402
from d4lenspinn.metrics import classification_metrics  # noqa: E402
from d4lenspinn.models import count_parameters  # noqa: E402
from d4lenspinn.train import train  # noqa: E402
from d4lenspinn.tta import collect_predictions  # noqa: E402

NOTES_MARKER = "<!-- notes below are kept when compare.py rewrites this file -->"
MODELS = (
    "d4lenspinn_lens",
    "d4lenspinn",
    "resnet18",
    "vanilla_lenspinn_lens",
    "lenspinn_small",
    "d4_cnn",
    "residual_cnn",
    "efficientnetv2_b0",
)
# entries that are a registered model with settings: name -> (registered model, model kwargs, loss weights): the
# lens model (both heads, with substructure supervision, self-supervised by the consistency loss instead of the
# truth) and its ablations (no macro model, no supervision, with the residual channels)
VARIANTS = {
    "d4lenspinn_lens": ("d4lenspinn_lens", {}, {"macro": 1.0}),
    "d4lenspinn_lens_substructure": ("d4lenspinn_lens", {}, {"macro": 1.0, "substructure": 1000.0}),
    "d4lenspinn_lens_self_supervised": ("d4lenspinn_lens", {}, {"consistency": 1.0}),
    "d4lenspinn_lens_effnet": ("d4lenspinn_lens", {"head": "tf_efficientnetv2_b0"}, {"macro": 1.0}),
    "vanilla_lenspinn_lens": ("vanilla_lenspinn_lens", {}, {"macro": 1.0}),
    "ablation_no_macro": ("d4lenspinn", {"head": "d4_cnn"}, {}),
    "ablation_unsupervised": ("d4lenspinn_lens", {}, {}),
    "ablation_residual_channels": ("d4lenspinn_lens", {"residual_channels": True}, {"macro": 1.0}),
}


def run_config(args: argparse.Namespace, model: str, lr: float) -> TrainConfig:
    """The one config every model shares, but for its name (with a variant's settings) and learning rate."""
    name, kwargs, loss = VARIANTS.get(model, (model, {}, {}))
    data = DataConfig(
        root=args.root,
        preset=args.preset,
        hard=args.hard,
        n_per_class=args.n_per_class,
        n_val_per_class=args.n_val_per_class,
        scheme=args.scheme,
        batch_size=args.batch,
    )
    return TrainConfig(
        data=data,
        model=ModelConfig(name=name, kwargs=dict(kwargs)),
        loss=LossConfig(weights=dict(loss)),
        optim=OptimConfig(
            epochs=args.epochs, lr=lr, warmup_epochs=0.5, weight_decay=1e-4, early_stopping_patience=args.epochs
        ),
        seed=args.seed,
        out=str(Path(args.out) / model / f"lr{lr:g}"),
        device=args.device,
        n_bootstrap=args.n_bootstrap,
    )


def train_once(config: TrainConfig) -> dict:
    """Train (or resume, or skip when finished) one run; returns its ``timing.json``."""
    run_dir = Path(config.out)
    timing_path = run_dir / "timing.json"
    if timing_path.exists():
        return json.loads(timing_path.read_text())
    resume = (run_dir / "last.pt").exists()
    start = time.perf_counter()
    train(config, resume=resume)
    timing = {"train_seconds": time.perf_counter() - start, "resumed": resume, "threads": torch.get_num_threads()}
    write_text(timing_path, json.dumps(timing))
    return timing


def best_validation(run_dir: Path) -> tuple[float, int]:
    """Best validation macro AUC of a run and the epoch it came from (the epoch of ``best.pt``)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    best = max(rows, key=lambda row: row["val_macro_auc"])
    return best["val_macro_auc"], best["epoch"]


REFERENCES = ("d4_cnn", "vanilla_lenspinn_lens")  # every model's paired AUC difference to these (with D4 TTA)


def test_predictions(run_dir: Path) -> dict[str, np.ndarray]:
    """Test-split probabilities of a run's ``best.pt`` without and with D4 TTA, and the labels."""
    device = resolve_device("auto")
    model, config, _ = load_trained_model(run_dir / "best.pt", device)
    loader = batch_loader(prepare_data(config.data, seed=config.seed).test, 64)
    single, labels = collect_predictions(model, loader, device, tta=False)
    averaged, _ = collect_predictions(model, loader, device, tta=True)
    return {"no TTA": single, "D4 TTA": averaged, "labels": labels}


def paired_difference(a: np.ndarray, b: np.ndarray, labels: np.ndarray, n_bootstrap: int, seed: int) -> dict:
    """Macro AUC of probabilities ``a`` minus ``b`` on the same images, with a paired stratified bootstrap 95%
    interval (both resampled with the same indices)."""
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(labels == k) for k in range(len(CLASS_NAMES))]
    auc = lambda p, i: classification_metrics(p[i], labels[i], CLASS_NAMES)["macro_auc"]  # noqa: E731
    differences = []
    for _ in range(n_bootstrap):
        index = np.concatenate([rng.choice(m, size=len(m)) for m in members])
        differences.append(auc(a, index) - auc(b, index))
    everything = np.arange(len(labels))
    low, high = np.percentile(differences, [2.5, 97.5])
    return {"gain": float(auc(a, everything) - auc(b, everything)), "ci95": [float(low), float(high)]}


def collect_results(args: argparse.Namespace) -> dict:
    """Per model: every run's validation AUC and time, the selected run, its test report and TTA gain."""
    results, predictions = {}, {}
    for model in args.models:
        runs = {}
        for lr in args.lrs:
            run_dir = Path(run_config(args, model, lr).out)
            if not (run_dir / "timing.json").exists():
                continue
            val_auc, epoch = best_validation(run_dir)
            runs[f"{lr:g}"] = {
                "val_macro_auc": val_auc,
                "best_epoch": epoch,
                **json.loads((run_dir / "timing.json").read_text()),
            }
        if not runs:
            continue
        chosen = max(runs, key=lambda lr: runs[lr]["val_macro_auc"])
        run_dir = Path(args.out) / model / f"lr{chosen}"
        report = evaluate(run_dir / "best.pt", tta=True)
        trained = load_trained_model(run_dir / "best.pt")
        predictions[model] = test_predictions(run_dir)
        single, averaged, labels = (predictions[model][key] for key in ("no TTA", "D4 TTA", "labels"))
        results[model] = {
            "parameters": count_parameters(trained.model),
            "runs": runs,
            "selected_lr": chosen,
            "test": report["reports"],
            "tta_gain": paired_difference(averaged, single, labels, args.n_bootstrap, args.seed),
            "report": report["report"],
        }
    for model, r in results.items():  # paired differences to the reference models, with TTA
        r["versus"] = {
            reference: paired_difference(
                predictions[model]["D4 TTA"],
                predictions[reference]["D4 TTA"],
                predictions[model]["labels"],
                args.n_bootstrap,
                args.seed,
            )
            for reference in REFERENCES
            if reference in predictions and reference != model
        }
    return results


def _ci(report: dict, key: str) -> str:
    value, (low, high) = report["metrics"][key], report["ci95"][key]
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def plot_auc(results: dict, path: Path) -> Path:
    """Test macro AUC with 95% intervals per model, without and with D4 TTA."""
    models = list(results)
    fig, ax = plt.subplots(figsize=(8, 3.8), constrained_layout=True)
    for offset, label, color in ((-0.18, "no TTA", "tab:blue"), (0.18, "D4 TTA", "tab:orange")):
        values = np.array([results[m]["test"][label]["metrics"]["macro_auc"] for m in models])
        bounds = np.array([results[m]["test"][label]["ci95"]["macro_auc"] for m in models])
        errors = np.stack([values - bounds[:, 0], bounds[:, 1] - values])
        ax.errorbar(np.arange(len(models)) + offset, values, yerr=errors, fmt="o", color=color, capsize=3, label=label)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xticks(np.arange(len(models)), models, rotation=20)
    ax.set_ylabel("test macro ROC AUC (95% CI)")
    ax.legend()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return path


def write_markdown(results: dict, args: argparse.Namespace, machine: str, figure: Path, path: Path) -> None:
    n_test = next(iter(results.values()))["test"]["no TTA"]["n"]
    lines = [
        "# Results: D4LensPINN and the comparison models",
        "",
        f"Simulated `{args.preset}`{' (hard variant)' if args.hard else ''} data, {args.n_per_class} training "
        f"images per class (split {args.scheme} with "
        f"seed {args.seed}: {n_test} test images), {args.epochs} epochs, batch {args.batch}, AdamW (weight decay "
        "1e-4), 0.5 epoch linear warm-up then cosine decay, random D4 augmentation, default physics-loss weights for "
        "the models with a lensing engine; the variants' settings are in `VARIANTS` (benchmarks/compare.py). "
        f"Tuning budget, the same for every model: one run per learning rate in "
        f"{{{', '.join(f'{lr:g}' for lr in args.lrs)}}}; the run with the best validation macro AUC (its best epoch) "
        "is evaluated on the test split. Intervals are 95% stratified bootstrap intervals "
        f"({args.n_bootstrap} resamples); the TTA gain interval is paired.",
        "",
        f"Machine: {machine}. Command:",
        "",
        "```",
        args.command,
        "```",
        "",
        "| model | parameters | lr | best epoch | train min | val macro AUC | test macro AUC | with D4 TTA | TTA gain |"
        " accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, r in results.items():
        run = r["runs"][r["selected_lr"]]
        gain = r["tta_gain"]
        lines.append(
            f"| {model} | {r['parameters']:,} | {r['selected_lr']} | {run['best_epoch']} | "
            f"{_minutes(run['train_seconds'])} | {run['val_macro_auc']:.3f} | "
            f"{_ci(r['test']['no TTA'], 'macro_auc')} | "
            f"{_ci(r['test']['D4 TTA'], 'macro_auc')} | {gain['gain']:+.3f} [{gain['ci95'][0]:+.3f}, "
            f"{gain['ci95'][1]:+.3f}] | {_ci(r['test']['no TTA'], 'accuracy')} |"
        )
    lines += [
        "",
        f"![test macro AUC]({os.path.relpath(figure, path.parent)})",
        "",
        "Per-class one-vs-rest test AUC (no TTA / with D4 TTA):",
        "",
        "| model | " + " | ".join(f"AUC {name}" for name in CLASS_NAMES) + " |",
        "|---|" + "---:|" * len(CLASS_NAMES),
    ]
    for model, r in results.items():
        cells = [
            f"{_ci(r['test']['no TTA'], f'auc_{name}')} / {r['test']['D4 TTA']['metrics'][f'auc_{name}']:.3f}"
            for name in CLASS_NAMES
        ]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    references = [ref for ref in REFERENCES if any(ref in r["versus"] for r in results.values())]
    if references:
        lines += [
            "",
            "Paired difference of test macro AUC with D4 TTA to the reference models (same images, paired "
            "stratified bootstrap 95% interval):",
            "",
            "| model | " + " | ".join(f"minus {ref}" for ref in references) + " |",
            "|---|" + "---:|" * len(references),
        ]
        for model, r in results.items():
            cells = []
            for ref in references:
                d = r["versus"].get(ref)
                cells.append("-" if d is None else f"{d['gain']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]")
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Every run of the tuning grid (validation macro AUC at the best epoch, training minutes):",
        "",
        "| model | " + " | ".join(f"lr {lr:g}" for lr in args.lrs) + " |",
        "|---|" + "---:|" * len(args.lrs),
    ]
    for model, r in results.items():
        cells = []
        for lr in args.lrs:
            run = r["runs"].get(f"{lr:g}")
            cells.append("-" if run is None else f"{run['val_macro_auc']:.3f} ({_minutes(run['train_seconds'])} min)")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Each selected run's own report (ROC, confusion matrix, curves, gallery) is under `" + args.out + "`.",
    ]
    previous = path.read_text() if path.exists() else ""
    if NOTES_MARKER in previous:  # the hand-written reading of the numbers is kept
        lines += ["", NOTES_MARKER + previous.split(NOTES_MARKER, 1)[1].rstrip("\n")]
    write_text(path, "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--lrs", nargs="+", type=float, default=[3e-4, 1e-3])
    parser.add_argument("--preset", default="model_ii")
    parser.add_argument("--hard", action="store_true", help="the preset's hard variant (the lens varies)")
    parser.add_argument("--n-per-class", type=int, default=1000)
    parser.add_argument("--n-val-per-class", type=int, default=None, help="simulated val/ images per class")
    parser.add_argument("--scheme", default="80/10/10", help='"official": val/ is the test set')
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--root", default="data/compare", help="where the simulated data is written (and reused)")
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--results", default="docs/RESULTS.md")
    parser.add_argument("--figure", default="docs/figures/compare_auc.png")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is steadiest on a shared CPU)")
    parser.add_argument("--report-only", action="store_true", help="only collect the finished runs and write results")
    args = parser.parse_args()
    # the command that trains these runs (--report-only only re-reads them)
    args.command = "python benchmarks/compare.py " + shlex.join(a for a in sys.argv[1:] if a != "--report-only")
    torch.set_num_threads(args.threads)
    machine = describe_machine(resolve_device(args.device))
    print(machine, flush=True)
    if not args.report_only:
        first = run_config(args, args.models[0], args.lrs[0])
        prepare_data(first.data, seed=first.seed)  # simulate once, outside the timed runs
        for lr in args.lrs:  # one whole sweep per learning rate, so a partial run still compares every model
            for model in args.models:
                timing = train_once(run_config(args, model, lr))
                print(f"{model} lr={lr:g}: {timing['train_seconds'] / 60:.1f} min", flush=True)
    results = collect_results(args)
    if not results:
        raise SystemExit(f"no finished runs under {args.out}")
    write_text(
        Path(args.out) / "results.json",
        json.dumps({"machine": machine, "command": args.command, "results": results}, indent=2),
    )
    figure = plot_auc(results, Path(args.figure))
    write_markdown(results, args, machine, figure, Path(args.results))
    print(f"wrote {args.results} and {figure}", flush=True)


if __name__ == "__main__":
    main()
