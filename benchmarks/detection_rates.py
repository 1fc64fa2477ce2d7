"""How ``d4lenspinn detect`` does on labelled images: detection AUC and the rates at a p-value threshold.

    d4lenspinn detect data/shift/snr_100 --instrument model_ii --supersampling 3 --out runs/detect/snr_100.csv
    python benchmarks/detection_rates.py runs/detect/snr_100.csv [more.csv ...] [--alpha 0.05] [--n-bootstrap 1000]
    python benchmarks/detection_rates.py runs/detect/broad.csv --truth data/broad/truth.h5   # by SNR and source
    python benchmarks/detection_rates.py runs/detect/snr_100.csv --null runs/detect/null_snr_100.csv
    python benchmarks/detection_rates.py runs/detect/snr_100.csv --against runs/detect/snr_100_one_start.csv
    python benchmarks/detection_rates.py runs/detect/snr_100.csv --classes-from runs/detect/simulated.csv
    python benchmarks/detection_rates.py runs/detect/snr_100.csv --classes-from runs/detect/simulated.csv \
        --classes-without vortex_delta_chi2                       # what one feature adds, paired

Each image's class is the class folder in its path (``no``, ``sphere``, ``vort``: the DeepLense layout, as
benchmarks/shift.py writes its cells). Per CSV: the detection AUC of the largest delta chi^2 (no substructure
against subhalos, against vortices, against both; 95% stratified bootstrap intervals), and the share of each class
whose p-value bound is below ``--alpha`` (for ``no``: the false alarms, whose rate the bound keeps <= alpha only
where the smooth model and the noise are right), with Wilson 95% intervals. A failed fit counts as a detection (its
delta chi^2 is +inf, its p-value 0). A CSV written with ``--null`` gets the same shares of its empirical ``p_null``;
``--null NULL_CSV`` here computes ``p_null`` against that run's lenses instead (the package's
:func:`~d4lenspinn.detection.empirical_p_value`, as ``d4lenspinn detect --null`` would). With ``--truth`` (the
``truth.h5`` of ``d4lenspinn simulate``, whose ``file`` entries end each image's path) the same rows again for each
bin of the true peak SNR and, above SNR 30, by source (single Sersic or clumpy). With ``--against REF_CSV`` (a run
on the same images with other settings) a second table gives each CSV's AUCs minus the reference's, with paired
bootstrap 95% intervals (both resampled with the same images). With ``--classes-from TRAIN_CSV`` (a run on other
labelled images, for example the package's own simulations) a multinomial logistic regression on five numbers of
each row (the largest delta chi^2, the reduced chi^2, the peak SNR, the best trial subhalo's distance from the ring,
the vortex scan's largest delta chi^2), learnt there (:mod:`d4lenspinn.detection_classes`, as ``d4lenspinn detect
--classes-from`` applies it), turns every CSV's rows into class probabilities, and a third table gives their macro
AUC (each class against the rest, averaged: the DeepLense metric) with its 95% bootstrap interval and each class's
AUC: what the fit and the scan say about the class, with nothing learnt from the images scored. A failed fit counts
as substructure of either kind (probabilities 0, 1/2, 1/2). ``--classes-without NAME ...`` learns a second model
without those features (:data:`~d4lenspinn.detection_classes.FEATURE_NAMES`) and adds its macro AUC and the full
model's minus it, with a paired bootstrap 95% interval: what the features left out add. ``--classes-figure PNG``
draws each run's largest delta chi^2 against the best trial subhalo's distance from the ring by class, the learning
run first.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import h5py
import numpy as np
import torch
from _machine import describe_machine
from shift_scoring import detection_auc, paired, score_metrics

from d4lenspinn.classes import CLASS_NAMES, NO_SUBSTRUCTURE
from d4lenspinn.detection import empirical_p_value
from d4lenspinn.detection_classes import (
    FEATURE_NAMES,
    class_label,
    class_probabilities,
    learn_classes,
    read_labelled_run,
)
from d4lenspinn.detection_files import read_null
from d4lenspinn.plots import plot_detection_classes
from d4lenspinn.report import markdown_table

SNR_BINS = ((0.0, 30.0), (30.0, 100.0), (100.0, math.inf))


def read_detections(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Labels (index into ``CLASS_NAMES``), largest delta chi^2, p-value bound, empirical ``p_null`` (NaN without a
    null) and image path of every row of a detect CSV."""
    labels, scores, p_values, p_nulls, paths = [], [], [], [], []
    with open(path) as handle:
        for row in csv.DictReader(handle):
            paths.append(row["path"])
            p_nulls.append(float(row.get("p_null") or "nan"))
            labels.append(class_label(row["path"]))
            if labels[-1] < 0:
                raise ValueError(f"{path}: {row['path']} lies in no class folder {CLASS_NAMES}")
            failed = row["fit_failed"] == "1"
            scores.append(math.inf if failed else float(row["max_delta_chi2"]))
            p_values.append(0.0 if failed else float(row["p_value"]))
    return np.array(labels), np.array(scores), np.array(p_values), np.array(p_nulls), paths


def read_truth(path: Path, images: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each image's true peak SNR (inf: noiseless) and whether its source is clumpy, from a simulator's truth file
    (every split), matched by the end of the image's path."""
    truth = {}
    with h5py.File(path, "r") as handle:
        for split in handle.values():
            clumpy = np.abs(split["knot_amplitude"][()]).sum(axis=1) > 0
            for file, snr, knots in zip(split["file"][()], split["peak_snr"][()], clumpy, strict=True):
                truth[Path(file.decode()).parts] = (float(snr), bool(knots))
    lengths = sorted({len(key) for key in truth})
    found = []
    for image in images:
        matches = [truth[key] for key in (Path(image).parts[-length:] for length in lengths) if key in truth]
        if len(matches) != 1:
            raise ValueError(f"{image}: {len(matches)} entries of {path} match it, expected 1")
        found.append(matches[0])
    return np.array([snr for snr, _ in found]), np.array([knots for _, knots in found])


def detection_tasks(labels: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(target, chosen, positive)`` of each detection task: no substructure against each substructure class and
    against both; ``chosen`` selects its images, ``positive`` marks the substructure among them."""
    tasks = []
    for target in CLASS_NAMES[1:]:
        chosen = (labels == NO_SUBSTRUCTURE) | (labels == CLASS_NAMES.index(target))
        tasks.append((target, chosen, labels[chosen] != NO_SUBSTRUCTURE))
    return [*tasks, ("both", np.ones(len(labels), dtype=bool), labels != NO_SUBSTRUCTURE)]


def rate_row(name: str, labels, scores, p_values, p_nulls, alpha: float, n_bootstrap: int, seed: int) -> dict[str, str]:
    """Detection AUCs and the shares below ``alpha`` of one set of images (of ``p_nulls`` too, unless all NaN)."""
    row = {"images": name, "count": str(len(labels))}
    for target, chosen, positive in detection_tasks(labels):
        row[f"AUC no vs {target}"] = auc_cell(scores[chosen], positive, n_bootstrap, seed)
    has_null = not np.isnan(p_nulls).all()
    for column, values in (("p", p_values), ("p_null", p_nulls)):
        for index, target in enumerate(CLASS_NAMES):
            mine = labels == index
            shares = wilson(int((values[mine] < alpha).sum()), int(mine.sum()))
            row[f"{column} < {alpha:g}: {target}"] = shares if column == "p" or has_null else ""
    return row


def _finite(scores: np.ndarray) -> np.ndarray:
    """A failed fit's +inf as a finite score above every other."""
    return np.nan_to_num(scores, posinf=np.finfo(np.float64).max / 4)


def auc_cell(scores: np.ndarray, positive: np.ndarray, n_bootstrap: int, seed: int) -> str:
    """AUC of ``scores`` for ``positive`` against the rest, with its 95% stratified bootstrap interval (a failed
    fit's +inf ranks above every finite score)."""
    result = detection_auc(_finite(scores), positive, n_bootstrap, seed)
    return f"{result['auc']:.3f} [{result['ci95'][0]:.3f}, {result['ci95'][1]:.3f}]"


def paired_row(name: str, labels, scores, reference, n_bootstrap: int, seed: int) -> dict[str, str]:
    """The detection AUCs of ``scores`` minus those of ``reference`` (the same images, in the same order) with
    paired bootstrap 95% intervals: no substructure against subhalos, vortices and both."""
    row = {"images": name}
    for target, chosen, positive in detection_tasks(labels):
        a, b = _finite(scores[chosen]), _finite(reference[chosen])
        result = paired(a, b, ("score", "score"), positive.astype(np.int64), n_bootstrap, seed)["detection"]
        low, high = result["ci95"]
        row[f"AUC no vs {target}, minus reference"] = f"{result['gain']:+.3f} [{low:+.3f}, {high:+.3f}]"
    return row


def matched(reference: Path, paths: list[str]) -> np.ndarray:
    """The largest delta chi^2 of the reference run's rows, in the order of ``paths``; raises ``ValueError`` unless
    the two runs hold the same images."""
    _, scores, _, _, reference_paths = read_detections(reference)
    index = {path: i for i, path in enumerate(reference_paths)}
    if sorted(index) != sorted(paths):
        raise ValueError(f"--against {reference}: not a run on the same images ({len(index)} against {len(paths)})")
    return scores[[index[path] for path in paths]]


def class_row(name: str, model, run, n_bootstrap: int, seed: int, reduced=None) -> dict[str, str]:
    """Macro AUC (with its 95% interval) and each class's AUC of ``model``'s probabilities for ``run``, the
    ``(features, failed, labels)`` of :func:`~d4lenspinn.detection_classes.read_labelled_run`; with a ``reduced``
    model (fewer features), its macro AUC and ``model``'s minus it, paired."""
    features, failed, labels = run
    probabilities = class_probabilities(model, features, failed)
    result = score_metrics(probabilities, "classes", labels, n_bootstrap, seed)
    row = {"images": name, "count": str(len(labels)), "macro AUC": _interval(result["macro"])}
    row |= {f"AUC {target}": f"{auc:.3f}" for target, auc in result["per_class"].items()}
    if reduced is not None:
        fewer = class_probabilities(reduced, features, failed)
        row["macro AUC, fewer features"] = _interval(
            score_metrics(fewer, "classes", labels, n_bootstrap, seed)["macro"]
        )
        gain = paired(probabilities, fewer, ("classes", "classes"), labels, n_bootstrap, seed)["macro"]
        row["all minus fewer (paired)"] = f"{gain['gain']:+.3f} [{gain['ci95'][0]:+.3f}, {gain['ci95'][1]:+.3f}]"
    return row


def _interval(result: dict) -> str:
    """An AUC with its 95% interval."""
    return f"{result['auc']:.3f} [{result['ci95'][0]:.3f}, {result['ci95'][1]:.3f}]"


def wilson(count: int, total: int) -> str:
    """``count / total`` with its Wilson 95% interval."""
    if total == 0:
        return "-"
    z, share = 1.959964, count / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return f"{share:.3f} [{max(0.0, centre - half):.3f}, {min(1.0, centre + half):.3f}] ({count}/{total})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csvs", nargs="+", type=Path, metavar="CSV")
    parser.add_argument("--alpha", type=float, default=0.05, help="p-value threshold of a detection")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--truth", type=Path, help="truth.h5 of the simulated images: rows by peak SNR and source")
    parser.add_argument("--null", type=Path, help="CSV of a detect run on lenses without substructure: p_null")
    parser.add_argument("--against", type=Path, help="CSV of a run on the same images: paired AUC differences")
    parser.add_argument("--classes-from", type=Path, help="CSV of a run on other labelled images: class model")
    parser.add_argument("--classes-figure", type=Path, help="with --classes-from: draw what it reads, every run")
    parser.add_argument("--classes-without", nargs="+", choices=FEATURE_NAMES, default=(),
                        help="with --classes-from: a model without these features too; the paired gain")  # fmt: skip
    args = parser.parse_args()
    for flag in ("classes_figure", "classes_without"):
        if getattr(args, flag) and args.classes_from is None:
            parser.error(f"--{flag.replace('_', '-')} needs --classes-from")
    fewer = tuple(name for name in FEATURE_NAMES if name not in args.classes_without)
    if args.classes_without and not fewer:
        parser.error("--classes-without leaves no feature")
    print(describe_machine(torch.device("cpu")))
    model = None if args.classes_from is None else learn_classes(args.classes_from)
    reduced = learn_classes(args.classes_from, fewer) if args.classes_without else None
    labelled = {} if model is None else {path: read_labelled_run(path) for path in args.csvs}
    rows, differences = [], []
    for path in args.csvs:
        labels, scores, p_values, p_nulls, paths = read_detections(path)
        if args.against is not None:
            reference = matched(args.against, paths)
            differences.append(paired_row(path.name, labels, scores, reference, args.n_bootstrap, args.seed))
        if args.null is not None:
            p_nulls = empirical_p_value(torch.from_numpy(scores), read_null(args.null)).numpy()
        settings = (args.alpha, args.n_bootstrap, args.seed)
        rows.append(rate_row(path.name, labels, scores, p_values, p_nulls, *settings))
        if args.truth is None:
            continue
        snr, clumpy = read_truth(args.truth, paths)
        subsets = {f"SNR {low:g}-{high:g}": (snr >= low) & (snr < high) for low, high in SNR_BINS[:-1]}
        subsets[f"SNR >= {SNR_BINS[-1][0]:g}, noisy"] = (snr >= SNR_BINS[-1][0]) & np.isfinite(snr)
        subsets["noiseless"] = np.isinf(snr)
        subsets["SNR >= 30, Sersic source"] = (snr >= 30) & ~clumpy
        subsets["SNR >= 30, clumpy source"] = (snr >= 30) & clumpy
        for name, chosen in subsets.items():
            if len(np.unique(labels[chosen])) == len(CLASS_NAMES):
                subset = (labels[chosen], scores[chosen], p_values[chosen], p_nulls[chosen])
                rows.append(rate_row(f"{path.name}: {name}", *subset, *settings))
    print(markdown_table(list(rows[0]), [list(row.values()) for row in rows]))
    if differences:
        print(f"\nminus {args.against.name} (paired):")
        print(markdown_table(list(differences[0]), [list(row.values()) for row in differences]))
    if labelled:
        settings = (args.n_bootstrap, args.seed, reduced)
        classes = [class_row(path.name, model, run, *settings) for path, run in labelled.items()]
        print(f"\nclasses, from a logistic regression on {args.classes_from.name}:")
        if reduced is not None:
            print(f"(fewer features: without {', '.join(args.classes_without)})")
        print(markdown_table(list(classes[0]), [list(row.values()) for row in classes]))
    if args.classes_figure is not None:
        runs = {args.classes_from: read_labelled_run(args.classes_from), **labelled}
        panels = {path.name: (features, labels) for path, (features, _, labels) in runs.items()}
        print(f"figure: {plot_detection_classes(panels, args.classes_figure)}")


if __name__ == "__main__":
    main()
