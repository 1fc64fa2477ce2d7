"""How do trained models hold up on lenses our simulator did not make? A lenstronomy grid of shifts.

    python benchmarks/shift.py --checkpoints demo=runs/demo/best.pt d4_cnn=runs/baseline/d4_cnn/best.pt
                               [--instrument model_ii] [--references d4_cnn] [--tta both] [--per-class 200]
                               [--sensitivity-per-class 400] [--cells reference snr_10 ...] [--data data/shift]
                               [--out runs/shift] [--n-bootstrap 1000] [--seed 0] [--batch 64] [--device auto]
                               [--scan-stride 2]
    python benchmarks/shift.py --fits pixel: integrated:supersampling=3,shot_noise=24.69 --references pixel
                               [--cells ...] [--scan-stride 2]     # physics-only rows, no network

Test sets (benchmarks/shift_cells.py; parameters drawn in numpy, images rendered by lenstronomy on the grid of
``--instrument``: ``model_ii``, Euclid VIS settings, 64 x 64 at 0.101"/px, PSF FWHM 0.16"; or ``model_i``, Common
Test I's 150 x 150 at 0.05"/px, PSF FWHM 0.087"; data and output default to ``data/shift``, ``runs/shift`` for
Model II and ``data/shift_model_i``, ``runs/shift_model_i`` for Model I): a reference cell (theta_E 1.0", peak SNR
30, Sersic source, mild lens) and cells moving one axis at a time (theta_E 0.7/1.3/1.6", SNR 10/100/noiseless,
clumpy source, strong ellipticity and shear), all inside the broad training prior, plus extrapolation cells just
outside it (theta_E 0.45" and 1.9", SNR 5, |e| 0.3 with |gamma| 0.15); ``--per-class`` images per class in each;
and a control cell with the faithful preset's own fixed lens and source at its SNR (in neither pool). A sensitivity
set at the reference lens (``--sensitivity-per-class``, 0 skips it) with wider substructure masses gives detection
AUC in bins of the largest and total subhalo mass, the vortex mass and the vortex half-length.

Each checkpoint is scored on every cell without and/or with D4 TTA (``--tta off|on|both``): macro AUC over the
three classes and detection AUC (none vs substructure, score -log p(no)), each with stratified bootstrap 95%
intervals; pooled over the in-prior cells and over the extrapolation cells; the drop from the model's own test split
(``metrics.json`` beside the checkpoint, when present); paired differences against the ``--references`` rows on
both pools and on the control cell. A model that fits the lens to each image also gives its physics-only
detectors: the fit's chi^2, and with ``--scan-stride S`` the largest delta chi^2 of the subhalo scan at that stride.
Other scorers (benchmarks/shift_scoring.py, ``Scorer``) plug in through :func:`run_benchmark`.
Writes ``shift.json``, ``shift.md``, ``shift_auc.png`` and ``sensitivity.png`` under ``--out`` (atomically).
Cells and predictions already on disk with the same settings are reused, so an interrupted run continues.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from _machine import describe_machine
from shift_cells import (
    TEMPLATE_SNR,
    Cell,
    Instrument,
    Renderer,
    grid,
    instrument,
    read_metadata,
    sensitivity_cell,
    write_cell,
)
from shift_scoring import (
    FitChi2Scorer,
    ModelFit,
    NetworkScorer,
    ScanScorer,
    Scorer,
    binned_detection,
    detection_scores,
    paired,
    score_folder,
    score_metrics,
    smallest_detected,
)

from d4lenspinn.checkpoint import load_trained_model
from d4lenspinn.classes import SUBHALOS, VORTEX
from d4lenspinn.detection import PriorFit
from d4lenspinn.device import resolve_device
from d4lenspinn.io import atomic_path, save_figure, write_text
from d4lenspinn.physics import PixelGrid
from d4lenspinn.report import markdown_table

SENSITIVITY_BINS = {  # metadata field: (class, log10 bin edges)
    "largest_subhalo_mass": (SUBHALOS, np.arange(7.0, 10.01, 0.5)),
    "total_subhalo_mass": (SUBHALOS, np.arange(7.5, 11.01, 0.5)),
    "vortex_mass": (VORTEX, np.arange(9.0, 11.01, 0.5)),
    "vortex_half_length": (VORTEX, np.arange(-2.0, 1.01, 0.5)),
}


def _cached_outputs(scorer: Scorer, key: str, cache: Path, folder: Path, labels: np.ndarray, batch: int) -> np.ndarray:
    """The scorer's outputs on a cell, read from ``cache`` when it was computed with the same ``key``."""
    if cache.exists():
        with np.load(cache, allow_pickle=False) as stored:
            if str(stored["key"]) == key:
                return stored["outputs"]
    outputs = score_folder(scorer, folder, labels, batch)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache) as path, open(path, "wb") as handle:
        np.savez(handle, outputs=outputs, key=np.array(key))
    return outputs


def _pool(outputs: dict[str, np.ndarray], labels: dict[str, np.ndarray], cells: list[Cell]):
    return np.concatenate([outputs[c.name] for c in cells]), np.concatenate([labels[c.name] for c in cells])


def run_benchmark(
    scorers: dict[str, tuple[Scorer, str, float | None]],
    cells: list[Cell],
    data: Path,
    out: Path,
    pairs: list[tuple[str, str]],
    n_bootstrap: int = 1000,
    seed: int = 0,
    batch: int = 64,
) -> dict:
    """Score every scorer on every written cell. ``scorers``: row name -> (scorer, cache key, own test macro AUC or
    None); ``pairs``: (row, reference row) to compare with paired bootstraps. Returns the JSON-ready results (cells,
    rows with per-cell and pooled metrics, paired differences)."""
    labels = {c.name: read_metadata(data / c.name)["label"] for c in cells}
    pools = {
        "in_prior": [c for c in cells if c.in_prior and not c.control],
        "extrapolation": [c for c in cells if not (c.in_prior or c.control)],
        "control": [c for c in cells if c.control],  # pooled and paired on its own, never with the grid
    }
    outputs, rows = {}, {}
    for row, (scorer, key, own) in scorers.items():
        outputs[row] = {
            c.name: _cached_outputs(
                scorer,
                f"{key}|{(data / c.name / 'cell.json').read_text()}",
                out / "predictions" / row / f"{c.name}.npz",
                data / c.name,
                labels[c.name],
                batch,
            )
            for c in cells
        }
        result = {"output": scorer.output, "own_test_macro_auc": own, "cells": {}, "pooled": {}}
        for c in cells:
            result["cells"][c.name] = score_metrics(
                outputs[row][c.name], scorer.output, labels[c.name], n_bootstrap, seed
            )
        for pool, members in pools.items():
            if members:
                pooled_outputs, pooled_labels = _pool(outputs[row], labels, members)
                result["pooled"][pool] = score_metrics(pooled_outputs, scorer.output, pooled_labels, n_bootstrap, seed)
        if own is not None and "in_prior" in result["pooled"] and "macro" in result["pooled"]["in_prior"]:
            result["drop_from_own_test"] = own - result["pooled"]["in_prior"]["macro"]["auc"]
        rows[row] = result
    differences = {}
    for row, reference in pairs:
        differences[f"{row} - {reference}"] = {}
        for pool, members in pools.items():
            if members:
                (a, pooled_labels), (b, _) = (
                    _pool(outputs[row], labels, members),
                    _pool(outputs[reference], labels, members),
                )
                kinds = (scorers[row][0].output, scorers[reference][0].output)
                differences[f"{row} - {reference}"][pool] = paired(a, b, kinds, pooled_labels, n_bootstrap, seed)
    return {"cells": [asdict(c) | {"n": len(labels[c.name])} for c in cells], "rows": rows, "paired": differences}


def run_sensitivity(
    scorers: dict[str, tuple[Scorer, str, float | None]],
    folder: Path,
    out: Path,
    n_bootstrap: int,
    seed: int,
    batch: int,
) -> dict:
    """Detection AUC per bin of substructure mass and vortex length on the sensitivity set, for every scorer."""
    meta = read_metadata(folder)
    results = {}
    for row, (scorer, key, _) in scorers.items():
        cache = out / "predictions" / row / f"{folder.name}.npz"
        outputs = _cached_outputs(
            scorer, f"{key}|{(folder / 'cell.json').read_text()}", cache, folder, meta["label"], batch
        )
        score = detection_scores(outputs, scorer.output)
        results[row] = {}
        for field, (positive, edges) in SENSITIVITY_BINS.items():
            values = np.log10(np.where(meta["label"] == positive, meta[field], 1.0))
            bins = binned_detection(score, meta["label"], positive, values, edges, n_bootstrap, seed)
            results[row][field] = {"log10_bins": bins, "smallest_above_0.8": smallest_detected(bins)}
    return results


def _interval(entry: dict | None) -> str:
    if entry is None or entry.get("auc") is None or math.isnan(entry["auc"]):
        return "-"
    return f"{entry['auc']:.3f} [{entry['ci95'][0]:.3f}, {entry['ci95'][1]:.3f}]"


def _snr(value: float) -> str:
    return "noiseless" if math.isinf(value) else f"{value:g}"


def tables(results: dict) -> str:
    """Markdown: macro AUC and detection AUC per cell and pool, one column per row; paired differences."""
    rows = list(results["rows"])
    text = []
    for metric, title in (
        ("macro", "macro AUC [95% CI]"),
        ("detection", "detection AUC none vs substructure [95% CI]"),
    ):
        body = []
        for c in results["cells"]:
            setting = f'theta_E {c["theta_e"]:g}", SNR {_snr(c["peak_snr"])}, {c["source"]}, {c["lens"]} lens'
            body.append(
                [
                    c["name"],
                    setting,
                    "control" if c["control"] else "yes" if c["in_prior"] else "**no**",
                    c["n"],
                    *(_interval(results["rows"][r]["cells"][c["name"]].get(metric)) for r in rows),
                ]
            )
        for pool in ("in_prior", "extrapolation"):
            cells = [r["pooled"].get(pool, {}).get(metric) for r in results["rows"].values()]
            body.append([f"**pooled {pool.replace('_', '-')}**", "", "", "", *(_interval(c) for c in cells)])
        if metric == "macro":
            own = [results["rows"][r]["own_test_macro_auc"] for r in rows]
            drop = [results["rows"][r].get("drop_from_own_test") for r in rows]
            body.append(["own test split", "", "", "", *("-" if v is None else f"{v:.3f}" for v in own)])
            body.append(["drop own - pooled in-prior", "", "", "", *("-" if v is None else f"{v:+.3f}" for v in drop)])
        text.append(
            f"**{title}**\n\n"
            + markdown_table(["cell", "setting", "in prior", "images", *rows], body, align="llll" + "r" * len(rows))
        )
    if results["paired"]:
        body = []
        for pair, pools in results["paired"].items():
            for pool, entry in pools.items():
                for metric, d in entry.items():
                    body.append([pair, pool, metric, f"{d['gain']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"])
        text.append("**paired differences [95% CI]**\n\n" + markdown_table(["rows", "pool", "AUC", "difference"], body))
    return "\n\n".join(text)


def _bin_text(entry: dict) -> str:
    auc = f"{entry['auc']:.2f}" if "auc" in entry else "-"
    return f"{entry['low']:.1f}-{entry['high']:.1f}: {auc} ({entry['n']})"


def sensitivity_table(sensitivity: dict) -> str:
    body = []
    for row, fields in sensitivity.items():
        for field, entry in fields.items():
            best = entry["smallest_above_0.8"]
            bins = " ".join(_bin_text(b) for b in entry["log10_bins"])
            where = "none" if best is None else f"10^{best['low']:.1f}-10^{best['high']:.1f}"
            body.append([row, field, where, bins])
    return markdown_table(["row", "log10 of", "smallest bin AUC > 0.8", "AUC per bin (positives)"], body)


def figures(results: dict, sensitivity: dict | None, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c["name"] for c in results["cells"]]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4), sharey=True)
    for ax, metric in zip(axes, ("macro", "detection"), strict=True):
        for k, (row, r) in enumerate(results["rows"].items()):
            entries = [r["cells"][n].get(metric) for n in names]
            x = [i + 0.08 * (k - len(results["rows"]) / 2) for i, e in enumerate(entries) if e]
            y = np.array([[e["auc"], *e["ci95"]] for e in entries if e]).reshape(-1, 3)
            ax.errorbar(x, y[:, 0], yerr=[y[:, 0] - y[:, 1], y[:, 2] - y[:, 0]], fmt="o", ms=4, capsize=2, label=row)
        for i, c in enumerate(results["cells"]):
            if not c["in_prior"] or c["control"]:
                ax.axvspan(i - 0.5, i + 0.5, color="0.9", zorder=0)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right")
        ax.set_title(f"{metric} AUC per cell (grey: outside the prior, control)")
        ax.axhline(0.5, color="0.5", lw=0.8, ls=":")
    axes[0].set_ylabel("AUC, 95% CI")
    axes[0].legend(fontsize=8)
    save_figure(fig, out / "shift_auc.png")
    if not sensitivity:
        return
    fig, axes = plt.subplots(1, len(SENSITIVITY_BINS), figsize=(4 * len(SENSITIVITY_BINS), 3.4), sharey=True)
    for ax, field in zip(axes, SENSITIVITY_BINS, strict=True):
        for row, fields in sensitivity.items():
            bins = [b for b in fields[field]["log10_bins"] if "auc" in b]
            x = [(b["low"] + b["high"]) / 2 for b in bins]
            y = np.array([[b["auc"], *b["ci95"]] for b in bins]).reshape(-1, 3)
            ax.errorbar(x, y[:, 0], yerr=[y[:, 0] - y[:, 1], y[:, 2] - y[:, 0]], fmt="o-", ms=4, capsize=2, label=row)
        ax.axhline(0.8, color="0.5", lw=0.8, ls="--")
        if field == "vortex_mass":  # the broad prior draws 1e10-1e11 Msun; the sensitivity set goes below
            ax.axvspan(9.0, 10.0, color="0.9", zorder=0)
        unit = "arcsec" if field == "vortex_half_length" else "Msun"
        ax.set_xlabel(f"log10 {field.replace('_', ' ')} [{unit}]")
    axes[0].set_ylabel("detection AUC vs none, 95% CI")
    axes[0].legend(fontsize=8)
    save_figure(fig, out / "sensitivity.png")


def _own_test_auc(checkpoint: Path, tta: bool) -> float | None:
    """Macro AUC of the run's own test split from the ``metrics.json`` that ``evaluate`` wrote beside it."""
    try:
        reports = json.loads((checkpoint.parent / "metrics.json").read_text())["reports"]
        return float(reports["D4 TTA" if tta else "no TTA"]["metrics"]["macro_auc"])
    except (OSError, ValueError, KeyError):
        return None


def network_scorers(checkpoints: list[str], tta: str, device: torch.device, scan_stride: int = 0) -> dict:
    """Row name -> (scorer, cache key, own test AUC) for ``name=path`` arguments and the TTA setting; a model that
    fits the lens to each image also gives the row ``<name> fit chi^2`` (:class:`FitChi2Scorer`) and, with
    ``scan_stride > 0``, ``<name> subhalo scan`` (:class:`ScanScorer`)."""
    scorers = {}
    for spec in checkpoints:
        name, sep, path = spec.partition("=")
        if not sep or not name or not Path(path).is_file():
            raise SystemExit(f"--checkpoints: expected name=path to an existing checkpoint, got {spec!r}")
        model = load_trained_model(path, device).model
        stat = Path(path).stat()
        for with_tta in {"off": [False], "on": [True], "both": [False, True]}[tta]:
            row = f"{name}{' +TTA' if with_tta else ''}"
            key = f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}|tta={with_tta}"
            scorers[row] = (NetworkScorer(row, model, with_tta), key, _own_test_auc(Path(path), with_tta))
        if isinstance(getattr(model, "fit_steps", None), int):  # a model that fits the lens: its chi^2 detector too
            row, fit = f"{name} fit chi^2", ModelFit(model)
            scorers[row] = (FitChi2Scorer(row, fit), f"{Path(path).resolve()}|{stat.st_mtime_ns}|chi2", None)
            if scan_stride:
                row, key = f"{name} subhalo scan", f"{Path(path).resolve()}|{stat.st_mtime_ns}|scan{scan_stride}"
                scorers[row] = (ScanScorer(row, fit, scan_stride), key, None)
    return scorers


def _fit_settings(text: str) -> dict:
    """``key=value,key=value`` -> keyword arguments of :class:`PriorFit`: ``steps``, ``supersampling``,
    ``refined_starts`` and ``trial_steps`` integers, ``start_ellipticity`` and ``start_shear`` numbers (0: none),
    ``fit_psf`` true/false, ``shot_noise`` fit or a background noise in electrons."""
    settings = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        try:
            if key in ("steps", "supersampling", "refined_starts", "trial_steps"):
                settings[key] = int(value)
            elif key in ("start_ellipticity", "start_shear"):
                settings[key] = float(value)
            elif key == "fit_psf" and value in ("true", "false"):
                settings[key] = value == "true"
            elif key == "shot_noise":
                settings[key] = value if value == "fit" else float(value)
            else:
                raise ValueError
        except ValueError:
            raise SystemExit(
                f"--fits: expected steps=N, supersampling=S, refined_starts=R, trial_steps=T, start_ellipticity=E, "
                f"start_shear=G, fit_psf=true|false or shot_noise=fit|ELECTRONS, got {item!r}"
            ) from None
    return settings


def prior_fit_scorers(specs: list[str], setup: Instrument, device: torch.device, scan_stride: int) -> dict:
    """Row name -> (scorer, cache key, None) for ``name:settings`` arguments (``settings`` as :func:`_fit_settings`,
    may be empty): the physics-only detectors of a :class:`PriorFit`, its chi^2 and, with ``scan_stride``, its
    subhalo scan. The cache key holds the settings, so a row is recomputed when they change."""
    scorers, grid = {}, PixelGrid(setup.n_pixels, setup.pixel_scale)
    for spec in specs:
        name, _, text = spec.partition(":")
        settings = _fit_settings(text)
        try:
            fit = PriorFit(grid, setup.psf_fwhm, setup.psf_truncation, device, **settings)
        except ValueError as error:
            raise SystemExit(f"--fits {spec!r}: {error}") from None
        key = f"prior-fit|{setup.name}|{sorted(settings.items())}|{fit.starts}"  # the starts: their defaults changed
        scorers[f"{name} fit chi^2"] = (FitChi2Scorer(f"{name} fit chi^2", fit), f"{key}|chi2", None)
        if scan_stride:
            row = f"{name} subhalo scan"
            scorers[row] = (ScanScorer(row, fit, scan_stride), f"{key}|scan{scan_stride}", None)
    return scorers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", nargs="*", default=[], metavar="NAME=PATH")
    parser.add_argument(
        "--fits",
        nargs="*",
        default=[],
        metavar="NAME:SETTINGS",
        help="physics-only rows, no network: a smooth-lens fit from the prior's starts, its chi^2 and scan (e.g. "
        "pixel: or integrated:supersampling=3,shot_noise=24.69; settings steps, fit_psf, supersampling, shot_noise, "
        "refined_starts, trial_steps, start_ellipticity, start_shear)",
    )
    parser.add_argument(
        "--references", nargs="*", default=[], help="checkpoint (or --fits) names to pair every row (or fit) against"
    )
    parser.add_argument("--tta", choices=("off", "on", "both"), default="both")
    parser.add_argument("--instrument", choices=sorted(TEMPLATE_SNR), default="model_ii")
    parser.add_argument("--cells", nargs="*", default=None, help="cell names (default: the instrument's whole grid)")
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--sensitivity-per-class", type=int, default=400)
    parser.add_argument("--data", default=None, help="default data/shift (Model II), data/shift_model_i (Model I)")
    parser.add_argument("--out", default=None, help="default runs/shift (Model II), runs/shift_model_i (Model I)")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--scan-stride", type=int, default=0, help="models that fit the lens: also the subhalo scan at this stride"
    )
    args = parser.parse_args()
    setup, suffix = instrument(args.instrument), "" if args.instrument == "model_ii" else f"_{args.instrument}"
    known = {c.name: c for c in grid(args.instrument)}
    unknown = sorted(set(args.cells or []) - set(known))
    if unknown or args.per_class < 1 or args.sensitivity_per_class < 0:
        parser.error(
            f"unknown cells {unknown} (valid: {list(known)}), or --per-class < 1 / --sensitivity-per-class < 0"
        )
    if args.scan_stride < 0 or (args.scan_stride and setup.n_pixels % args.scan_stride):
        parser.error(
            f"--scan-stride must be 0 (no scan) or divide the cells' {setup.n_pixels} pixels, got {args.scan_stride}"
        )
    cells = [known[n] for n in args.cells] if args.cells else list(known.values())
    data, out = Path(args.data or f"data/shift{suffix}"), Path(args.out or f"runs/shift{suffix}")
    device = resolve_device(args.device)
    command = "python " + shlex.join(sys.argv)
    print(f"command: {command}\nmachine: {describe_machine(device)}")

    if not args.checkpoints and not args.fits:
        parser.error("give --checkpoints, --fits or both")
    scorers = network_scorers(args.checkpoints, args.tta, device, args.scan_stride)
    scorers |= prior_fit_scorers(args.fits, setup, device, args.scan_stride)
    names = [spec.partition("=")[0] for spec in args.checkpoints]
    fit_names = [spec.partition(":")[0] for spec in args.fits]
    if set(args.references) - set(names) - set(fit_names):
        parser.error(f"--references {args.references} must name --checkpoints or --fits entries {names + fit_names}")
    suffixes = {"off": [""], "on": [" +TTA"], "both": ["", " +TTA"]}[args.tta]
    pairs = [(n, r) for r in args.references for n in names if n != r]
    pairs = [(f"{n}{s}", f"{r}{s}") for i, (n, r) in enumerate(pairs) if (r, n) not in pairs[:i] for s in suffixes]
    detectors = [" fit chi^2"] + ([" subhalo scan"] if args.scan_stride else [])
    pairs += [
        (f"{n}{d}", f"{r}{d}")
        for r in args.references
        if r in fit_names
        for n in fit_names
        if n != r
        for d in detectors
    ]
    renderer, sensitivity_set = Renderer(setup), sensitivity_cell(args.instrument)
    start = datetime.datetime.now()
    for cell in cells:
        write_cell(data, cell, args.per_class, args.seed, renderer)
    if args.sensitivity_per_class:
        write_cell(data, sensitivity_set, args.sensitivity_per_class, args.seed, renderer)
    rendered = datetime.datetime.now()
    results = run_benchmark(scorers, cells, data, out, pairs, args.n_bootstrap, args.seed, args.batch)
    sensitivity = None
    if args.sensitivity_per_class:
        sensitivity = run_sensitivity(
            scorers, data / sensitivity_set.name, out, args.n_bootstrap, args.seed, args.batch
        )
    finished = datetime.datetime.now()
    results |= {
        "command": command,
        "machine": describe_machine(device),
        "date": start.isoformat(timespec="seconds"),
        "per_class": args.per_class,
        "sensitivity_per_class": args.sensitivity_per_class,
        "seconds": {"render": (rendered - start).total_seconds(), "score": (finished - rendered).total_seconds()},
        "sensitivity": sensitivity,
    }
    out.mkdir(parents=True, exist_ok=True)
    markdown = tables(results) + ("\n\n**sensitivity**\n\n" + sensitivity_table(sensitivity) if sensitivity else "")
    write_text(out / "shift.json", json.dumps(results, indent=2, default=float))
    write_text(out / "shift.md", f"`{command}`\n\n{results['machine']}, {results['date']}\n\n{markdown}\n")
    figures(results, sensitivity, out)
    print(markdown)
    print(
        f"wrote {out / 'shift.json'}, {out / 'shift.md'}, figures; render {results['seconds']['render']:.0f} s, "
        f"score {results['seconds']['score']:.0f} s"
    )


if __name__ == "__main__":
    main()
