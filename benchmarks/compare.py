"""Train D4LensPINN and the comparison models on the same data, budget, seeds and tuning grid; tabulate the results.

    python benchmarks/compare.py                       # the CPU configuration (about an hour on 2 cores, 1 thread)
    python benchmarks/compare.py --report-only --results docs/RESULTS.md --figure docs/figures/compare_auc.png
    python benchmarks/compare.py --n-per-class 5000 --epochs 30 --device cuda --threads 8   # the GPU configuration

Each model of ``--models`` is a recipe, ``configs/recipes/<name>.yaml`` (the registered model, its settings and loss
weights); the comparison's shared settings are added as ``key=value`` overrides, so every run is exactly
``d4lenspinn train --config configs/recipes/<name>.yaml --set ...`` (``--print-commands`` prints those commands).
Every model gets the same tuning budget: one full training run per learning rate in ``--lrs`` (same simulated data,
split, seed, epochs, batch size, warm-up + cosine schedule, weight decay, D4 augmentation); the run with the best
*validation* macro AUC is the one evaluated on the test split, with and without D4 TTA. The TTA gain comes with a
paired bootstrap interval (both predictions resampled with the same stratified indices).

Runs live in ``--out/<model>/lr<lr>/`` and are reused: a finished run (``timing.json``) is skipped, an interrupted
one resumes from its ``last.pt``. ``--report-only`` rebuilds the results from the finished runs without training.
Outputs: ``--out/results.json``, ``--results`` (markdown, default ``--out/RESULTS.md``) and its figure ``--figure``
(default ``--out/compare_auc.png``); docs/RESULTS.md is rewritten only when named (second command above). Text after
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
import yaml  # noqa: E402

from d4lenspinn.classes import CLASS_NAMES  # noqa: E402
from d4lenspinn.config import TrainConfig, load_config  # noqa: E402
from d4lenspinn.data import prepare_data  # noqa: E402
from d4lenspinn.data.presets import PRESETS  # noqa: E402
from d4lenspinn.device import resolve_device  # noqa: E402
from d4lenspinn.evaluate import evaluate, write_report  # noqa: E402
from d4lenspinn.io import atomic_path, write_text  # noqa: E402
from d4lenspinn.metrics import paired_difference  # noqa: E402
from d4lenspinn.report import markdown_table  # noqa: E402
from d4lenspinn.train import train  # noqa: E402

NOTES_MARKER = "<!-- notes below are kept when compare.py rewrites this file -->"
REPOSITORY = Path(__file__).resolve().parents[1]
RECIPES = Path("configs") / "recipes"  # one YAML per model of the comparison: model name, its settings, loss weights
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


def recipe_path(recipe: str) -> Path:
    """``configs/recipes/<recipe>.yaml`` of this repository; ``ValueError`` listing the recipes when it is missing."""
    path = REPOSITORY / RECIPES / f"{recipe}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (REPOSITORY / RECIPES).glob("*.yaml"))
        raise ValueError(f"no recipe {recipe!r} ({path} does not exist); recipes: {known}")
    return path


def _override(key: str, value) -> str:
    """``key=value`` spelled so that the config loader reads ``value`` back (a plain word where YAML allows one)."""
    plain = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return f"{key}={plain if yaml.safe_load(plain) == value else json.dumps(value)}"


def shared_overrides(args: argparse.Namespace, recipe: str, lr: float) -> list[str]:
    """The settings every model of the comparison shares, as ``key=value`` overrides of its recipe: the data, the
    optimiser (but for the learning rate ``lr``), the seed, the device and the run directory
    ``--out/<recipe>/lr<lr>``."""
    settings = {
        "data.root": args.root,
        "data.preset": args.preset,
        "data.n_per_class": args.n_per_class,
        "data.n_val_per_class": args.n_val_per_class,
        "data.scheme": args.scheme,
        "data.batch_size": args.batch,
        "optim.epochs": args.epochs,
        "optim.lr": lr,
        "optim.warmup_epochs": 0.5,
        "optim.weight_decay": 1e-4,
        "optim.early_stopping_patience": args.epochs,
        "seed": args.seed,
        "out": str(Path(args.out) / recipe / f"lr{lr:g}"),
        "device": args.device,
        "n_bootstrap": args.n_bootstrap,
    }
    return [_override(key, value) for key, value in settings.items()]


def run_config(args: argparse.Namespace, recipe: str, lr: float) -> TrainConfig:
    """The recipe's config with the comparison's shared settings and learning rate ``lr``: exactly what
    :func:`train_command` trains."""
    return load_config(recipe_path(recipe), shared_overrides(args, recipe, lr))


def train_command(args: argparse.Namespace, recipe: str, lr: float) -> str:
    """The ``d4lenspinn train`` command line (run from the repository root) that trains this comparison's run."""
    words = ["d4lenspinn", "train", "--config", (RECIPES / f"{recipe}.yaml").as_posix()]
    for override in shared_overrides(args, recipe, lr):
        words += ["--set", override]
    return shlex.join(words)


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


REFERENCES = ("d4_cnn", "resnet18", "vanilla_lenspinn_lens")  # default --references: paired differences to these


def finished_runs(args: argparse.Namespace, recipe: str) -> dict[str, dict]:
    """Learning rate (as ``f"{lr:g}"``) -> validation AUC, best epoch and timing of each finished run of a recipe."""
    runs = {}
    for lr in args.lrs:
        run_dir = Path(run_config(args, recipe, lr).out)
        if (run_dir / "timing.json").exists():
            val_auc, epoch = best_validation(run_dir)
            timing = json.loads((run_dir / "timing.json").read_text())
            runs[f"{lr:g}"] = {"val_macro_auc": val_auc, "best_epoch": epoch, "lr": lr, **timing}
    return runs


def collect_results(args: argparse.Namespace) -> dict:
    """Per recipe: every run's validation AUC and time, the selected run, its test report and TTA gain, and the
    paired differences to the reference models."""
    results, predictions = {}, {}
    for recipe in args.models:
        runs = finished_runs(args, recipe)
        if not runs:
            continue
        chosen = max(runs, key=lambda lr: runs[lr]["val_macro_auc"])
        config = run_config(args, recipe, runs[chosen]["lr"])
        evaluation = evaluate(Path(config.out) / "best.pt", tta=True)
        predictions[recipe] = evaluation.predictions
        probabilities, labels = evaluation.predictions.probabilities, evaluation.predictions.labels
        results[recipe] = {
            "parameters": evaluation.parameters,
            "runs": runs,
            "selected_lr": chosen,
            "command": train_command(args, recipe, runs[chosen]["lr"]),
            "test": evaluation.reports,
            "tta_gain": paired_difference(
                probabilities["D4 TTA"], probabilities["no TTA"], labels, CLASS_NAMES, args.n_bootstrap, args.seed
            ),
            "report": str(write_report(evaluation).report),
        }
    for recipe, r in results.items():  # paired differences to the reference models, with TTA
        r["versus"] = {
            reference: paired_difference(
                predictions[recipe].probabilities["D4 TTA"],
                predictions[reference].probabilities["D4 TTA"],
                predictions[recipe].labels,
                CLASS_NAMES,
                args.n_bootstrap,
                args.seed,
            )
            for reference in args.references
            if reference in predictions and reference != recipe
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


def _interval(difference: dict) -> str:
    (low, high), gain = difference["ci95"], difference["gain"]
    return f"{gain:+.3f} [{low:+.3f}, {high:+.3f}]"


def main_table(results: dict) -> str:
    """One row per model: size, selected run, test macro AUC without and with TTA, TTA gain, accuracy."""
    headers = ["model", "parameters", "lr", "best epoch", "train min", "val macro AUC", "test macro AUC"]
    headers += ["with D4 TTA", "TTA gain", "accuracy"]
    rows = []
    for model, r in results.items():
        run, test = r["runs"][r["selected_lr"]], r["test"]
        rows.append(
            [model, f"{r['parameters']:,}", r["selected_lr"], run["best_epoch"], _minutes(run["train_seconds"])]
            + [f"{run['val_macro_auc']:.3f}", _ci(test["no TTA"], "macro_auc"), _ci(test["D4 TTA"], "macro_auc")]
            + [_interval(r["tta_gain"]), _ci(test["no TTA"], "accuracy")]
        )
    return markdown_table(headers, rows)


def per_class_table(results: dict) -> str:
    """One-vs-rest test AUC per class, no TTA (with interval) / with D4 TTA."""
    rows = [
        [model]
        + [
            f"{_ci(r['test']['no TTA'], f'auc_{name}')} / {r['test']['D4 TTA']['metrics'][f'auc_{name}']:.3f}"
            for name in CLASS_NAMES
        ]
        for model, r in results.items()
    ]
    return markdown_table(["model", *(f"AUC {name}" for name in CLASS_NAMES)], rows)


def versus_table(results: dict, references: list[str]) -> str:
    """Paired macro AUC differences (with D4 TTA) of every model to each reference model."""
    rows = [
        [model, *("-" if ref not in r["versus"] else _interval(r["versus"][ref]) for ref in references)]
        for model, r in results.items()
    ]
    return markdown_table(["model", *(f"minus {ref}" for ref in references)], rows)


def grid_table(results: dict, lrs: list[float]) -> str:
    """Validation macro AUC and training minutes of every run of the tuning grid."""
    rows = []
    for model, r in results.items():
        runs = [r["runs"].get(f"{lr:g}") for lr in lrs]
        cells = [
            "-" if run is None else f"{run['val_macro_auc']:.3f} ({_minutes(run['train_seconds'])} min)" for run in runs
        ]
        rows.append([model, *cells])
    return markdown_table(["model", *(f"lr {lr:g}" for lr in lrs)], rows)


def write_markdown(results: dict, args: argparse.Namespace, machine: str, figure: Path, path: Path) -> None:
    n_test = next(iter(results.values()))["test"]["no TTA"]["n"]
    lines = [
        "# Results: D4LensPINN and the comparison models",
        "",
        f"Simulated `{args.preset}` data, {args.n_per_class} training "
        f"images per class (split {args.scheme} with "
        f"seed {args.seed}: {n_test} test images), {args.epochs} epochs, batch {args.batch}, AdamW (weight decay "
        "1e-4), 0.5 epoch linear warm-up then cosine decay, random D4 augmentation, default physics-loss weights for "
        "the models with a lensing engine; each model's settings (model, its options, loss weights) are its recipe "
        "`configs/recipes/<model>.yaml`, and `d4lenspinn train --config configs/recipes/<model>.yaml` with the "
        "shared settings as `--set` overrides trains its run (the command below with `--print-commands` prints "
        "them). "
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
        main_table(results),
        "",
        f"![test macro AUC]({os.path.relpath(figure, path.parent)})",
        "",
        "Per-class one-vs-rest test AUC (no TTA / with D4 TTA):",
        "",
        per_class_table(results),
    ]
    references = [ref for ref in args.references if any(ref in r["versus"] for r in results.values())]
    if references:
        lines += [
            "",
            "Paired difference of test macro AUC with D4 TTA to the reference models (same images, paired "
            "stratified bootstrap 95% interval):",
            "",
            versus_table(results, references),
        ]
    lines += [
        "",
        "Every run of the tuning grid (validation macro AUC at the best epoch, training minutes):",
        "",
        grid_table(results, args.lrs),
        "",
        "Each selected run's own report (ROC, confusion matrix, curves, gallery) is under `" + args.out + "`.",
    ]
    previous = path.read_text() if path.exists() else ""
    if NOTES_MARKER in previous:  # the hand-written reading of the numbers is kept
        lines += ["", NOTES_MARKER + previous.split(NOTES_MARKER, 1)[1].rstrip("\n")]
    write_text(path, "\n".join(lines) + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="recipe names (configs/recipes/<name>.yaml)")
    parser.add_argument("--lrs", nargs="+", type=float, default=[3e-4, 1e-3])
    parser.add_argument(
        "--preset", default="model_ii", choices=sorted(PRESETS), help="a faithful preset or its *_broad prior"
    )
    parser.add_argument("--n-per-class", type=int, default=1000)
    parser.add_argument("--n-val-per-class", type=int, default=None, help="simulated val/ images per class")
    parser.add_argument("--scheme", default="80/10/10", help='"official": val/ is the test set')
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--references",
        nargs="+",
        default=list(REFERENCES),
        help="models of --models every other one is compared with, paired (test macro AUC with D4 TTA)",
    )
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--root", default="data/compare", help="where the simulated data is written (and reused)")
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--results", help="markdown to (re)write; default --out/RESULTS.md")
    parser.add_argument("--figure", help="figure of the test AUCs; default --out/compare_auc.png")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is steadiest on a shared CPU)")
    parser.add_argument("--report-only", action="store_true", help="only collect the finished runs and write results")
    parser.add_argument(
        "--print-commands", action="store_true", help="print the `d4lenspinn train` command of every run and exit"
    )
    return parser


def main() -> None:
    from _machine import describe_machine  # the benchmarks' sibling module (this file imports without it)

    args = build_parser().parse_args()
    try:
        for recipe in args.models:
            recipe_path(recipe)  # every recipe exists, before anything runs
    except ValueError as error:
        raise SystemExit(str(error)) from None
    if args.print_commands:
        for lr in args.lrs:
            print("\n".join(train_command(args, recipe, lr) for recipe in args.models))
        return
    # the command that trains these runs (--report-only only re-reads them)
    args.command = "python benchmarks/compare.py " + shlex.join(a for a in sys.argv[1:] if a != "--report-only")
    torch.set_num_threads(args.threads)
    machine = describe_machine(resolve_device(args.device))
    print(machine, flush=True)
    if not args.report_only:
        first = run_config(args, args.models[0], args.lrs[0])
        prepare_data(first.data, seed=first.seed)  # simulate once, outside the timed runs
        for lr in args.lrs:  # one whole sweep per learning rate, so a partial run still compares every model
            for recipe in args.models:
                timing = train_once(run_config(args, recipe, lr))
                print(f"{recipe} lr={lr:g}: {timing['train_seconds'] / 60:.1f} min", flush=True)
    results = collect_results(args)
    if not results:
        raise SystemExit(f"no finished runs under {args.out}")
    write_text(
        Path(args.out) / "results.json",
        json.dumps({"machine": machine, "command": args.command, "results": results}, indent=2),
    )
    markdown = Path(args.results or Path(args.out) / "RESULTS.md")
    figure = plot_auc(results, Path(args.figure or Path(args.out) / "compare_auc.png"))
    write_markdown(results, args, machine, figure, markdown)
    print(f"wrote {markdown} and {figure}", flush=True)


if __name__ == "__main__":
    main()
