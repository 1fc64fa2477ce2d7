"""How ``d4lenspinn detect`` does on labelled images: detection AUC and the rates at a p-value threshold.

    d4lenspinn detect data/shift/snr_100 --instrument model_ii --supersampling 3 --out runs/detect/snr_100.csv
    python benchmarks/detection_rates.py runs/detect/snr_100.csv [more.csv ...] [--alpha 0.05] [--n-bootstrap 1000]

Each image's class is the class folder in its path (``no``, ``sphere``, ``vort``: the DeepLense layout, as
benchmarks/shift.py writes its cells). Per CSV: the detection AUC of the largest delta chi^2 (no substructure
against subhalos, against vortices, against both; 95% stratified bootstrap intervals), and the share of each class
whose p-value bound is below ``--alpha`` (for ``no``: the false alarms, whose rate the bound keeps <= alpha only
where the smooth model and the noise are right), with Wilson 95% intervals. A failed fit counts as a detection (its
delta chi^2 is +inf, its p-value 0).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np
import torch
from _machine import describe_machine
from shift_scoring import detection_auc

from d4lenspinn.classes import CLASS_NAMES, NO_SUBSTRUCTURE
from d4lenspinn.report import markdown_table


def read_detections(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels (index into ``CLASS_NAMES``), largest delta chi^2 and p-value bound of every row of a detect CSV."""
    labels, scores, p_values = [], [], []
    with open(path) as handle:
        for row in csv.DictReader(handle):
            folders = [part for part in Path(row["path"]).parts[:-1] if part in CLASS_NAMES]
            if not folders:
                raise ValueError(f"{path}: {row['path']} lies in no class folder {CLASS_NAMES}")
            failed = row["fit_failed"] == "1"
            labels.append(CLASS_NAMES.index(folders[-1]))
            scores.append(math.inf if failed else float(row["max_delta_chi2"]))
            p_values.append(0.0 if failed else float(row["p_value"]))
    return np.array(labels), np.array(scores), np.array(p_values)


def auc_cell(scores: np.ndarray, positive: np.ndarray, n_bootstrap: int, seed: int) -> str:
    """AUC of ``scores`` for ``positive`` against the rest, with its 95% stratified bootstrap interval (a failed
    fit's +inf ranks above every finite score)."""
    finite = np.nan_to_num(scores, posinf=np.finfo(np.float64).max / 4)
    result = detection_auc(finite, positive, n_bootstrap, seed)
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
    args = parser.parse_args()
    print(describe_machine(torch.device("cpu")))
    rows = []
    for path in args.csvs:
        labels, scores, p_values = read_detections(path)
        rows.append({"csv": path.name, "images": str(len(labels))})
        for name in CLASS_NAMES[1:]:
            chosen = (labels == NO_SUBSTRUCTURE) | (labels == CLASS_NAMES.index(name))
            rows[-1][f"AUC no vs {name}"] = auc_cell(
                scores[chosen], labels[chosen] != NO_SUBSTRUCTURE, args.n_bootstrap, args.seed
            )
        rows[-1]["AUC no vs both"] = auc_cell(scores, labels != NO_SUBSTRUCTURE, args.n_bootstrap, args.seed)
        for index, name in enumerate(CLASS_NAMES):
            mine = labels == index
            rows[-1][f"p < {args.alpha:g}: {name}"] = wilson(int((p_values[mine] < args.alpha).sum()), int(mine.sum()))
    print(markdown_table(list(rows[0]), [list(row.values()) for row in rows]))


if __name__ == "__main__":
    main()
