"""Class probabilities from what the detector measures, learnt on another run's labelled images.

    model = learn_classes("runs/detect/simulated.csv")   # a detect CSV whose paths lie in class folders no/sphere/vort
    features, failed, labels = read_labelled_run("runs/detect/test.csv")
    probabilities = class_probabilities(model, features, failed)   # (N, 3), columns in CLASS_NAMES order

A multinomial logistic regression (scikit-learn) on five numbers of each ``d4lenspinn detect`` row and their
products (degree 2, standardised): the subhalo scan's largest delta chi^2 as ``log(1 + x)``, the fit's reduced chi^2
and the image's peak signal-to-noise logged, how far the best trial subhalo lies from the Einstein ring, ``|log(r /
theta_E)|`` (``r`` its distance from the fitted lens centre), and the vortex scan's largest delta chi^2 as ``log(1 +
x)`` (a line through the lens centre against a point: which trial perturber explains more). None depends on the
image's units, its Einstein radius or its pixel scale, so a model learnt on one simulator's images can be applied to
another's or to the sky (docs/RESULTS.md, "A second trial perturber": learnt on our broad prior, macro AUC
0.805-0.937 on four lenstronomy cells); they do depend on the scan's stride and the image size (more trial
positions, a larger largest delta chi^2) and on the fit's noise model, so learn from a run made as the data's will
be. A failed fit gets :data:`FAILED_FIT_PROBABILITIES`: something no smooth lens explains, of unknown kind. Only CSV
text is read.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, PolynomialFeatures, StandardScaler

from .classes import CLASS_NAMES

__all__ = [
    "CLASS_COLUMNS",
    "FAILED_FIT_PROBABILITIES",
    "FEATURE_NAMES",
    "PROBABILITY_COLUMNS",
    "class_features",
    "class_label",
    "class_probabilities",
    "learn_classes",
    "read_labelled_run",
]

CLASS_COLUMNS = (  # the detect CSV columns the features are made of, in the order class_features takes them
    "max_delta_chi2",
    "fit_reduced_chi2",
    "peak_snr",
    "theta_e_arcsec",
    "center_x_arcsec",
    "center_y_arcsec",
    "subhalo_x_arcsec",
    "subhalo_y_arcsec",
    "max_delta_chi2_vortex",
)
FEATURE_NAMES = (  # the columns of class_features, in order
    "delta_chi2",
    "reduced_chi2",
    "peak_snr",
    "ring_distance",
    "vortex_delta_chi2",
)
SMALLEST_RING_RATIO = 1e-2  # r / theta_E below it is taken as it: a subhalo at the lens centre has a finite feature
PROBABILITY_COLUMNS = tuple(f"p_{name}" for name in CLASS_NAMES)
FAILED_FIT_PROBABILITIES = (0.0, 0.5, 0.5)


def class_features(values: np.ndarray) -> np.ndarray:
    """The model's features ``(N, 5)`` of the :data:`CLASS_COLUMNS` values ``(N, 9)`` (module docstring)."""
    delta_chi2, reduced_chi2, peak_snr, theta_e, centre_x, centre_y, x, y, vortex = np.asarray(values, np.float64).T
    ring = np.maximum(np.hypot(x - centre_x, y - centre_y) / theta_e, SMALLEST_RING_RATIO)
    with np.errstate(divide="ignore", invalid="ignore"):  # a value <= 0 gives a non-finite feature, told apart later
        logs = (np.log1p(delta_chi2), np.log(reduced_chi2), np.log(peak_snr), np.abs(np.log(ring)), np.log1p(vortex))
        return np.stack(logs, axis=1)


def read_labelled_run(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The :func:`class_features` ``(N, 5)`` of every row of a detect CSV (NaN where the fit failed), whether it
    failed ``(N,)`` and its label ``(N,)``: the index in ``CLASS_NAMES`` of the last class folder in its path (-1
    in none). Raises ``ValueError`` naming the file when it is not such a CSV or holds no row."""
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            rows, missing = list(reader), [name for name in CLASS_COLUMNS if name not in (reader.fieldnames or ())]
        if missing:
            raise KeyError(f"no column {', '.join(missing)} (a run of an older version: run detect again)")
        failed = np.array([row["fit_failed"] == "1" for row in rows], dtype=bool)
        values = [
            [math.nan if bad else float(row[name]) for name in CLASS_COLUMNS]
            for row, bad in zip(rows, failed, strict=True)
        ]
        labels = [class_label(row["path"]) for row in rows]
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise ValueError(f"{path}: not the CSV of a detect run ({type(error).__name__}: {error})") from error
    if not rows:
        raise ValueError(f"{path}: holds no row")
    return class_features(np.array(values).reshape(-1, len(CLASS_COLUMNS))), failed, np.array(labels)


def class_label(path: str | Path) -> int:
    """The index in ``CLASS_NAMES`` of the last class folder in an image's path, -1 in none."""
    folders = [part for part in Path(path).parts[:-1] if part in CLASS_NAMES]
    return CLASS_NAMES.index(folders[-1]) if folders else -1


def learn_classes(path: str | Path, features: tuple[str, ...] = FEATURE_NAMES) -> Pipeline:
    """The logistic regression learnt on the rows of a labelled detect CSV whose fit did not fail, on the
    ``features`` named (of :data:`FEATURE_NAMES`; the pipeline takes all five and keeps those: an ablation). Raises
    ``ValueError`` for an unknown feature and, naming the file, when a row lies in no class folder or a class has no
    such row."""
    unknown = sorted(set(features) - set(FEATURE_NAMES))
    if unknown or not features:
        raise ValueError(f"features must be some of {FEATURE_NAMES}, got {tuple(features)!r}")
    kept = [FEATURE_NAMES.index(name) for name in features]
    values, failed, labels = read_labelled_run(path)
    if (labels < 0).any():
        raise ValueError(f"{path}: {int((labels < 0).sum())} rows lie in no class folder {CLASS_NAMES}")
    usable = _usable(values, failed)
    if len(np.unique(labels[usable])) != len(CLASS_NAMES):
        raise ValueError(f"{path}: needs rows of every class {CLASS_NAMES} whose fit did not fail")
    model = make_pipeline(
        FunctionTransformer(np.take, kw_args=dict(indices=kept, axis=1)),
        PolynomialFeatures(2, include_bias=False),
        StandardScaler(),
        LogisticRegression(max_iter=2000),
    )
    return model.fit(values[usable], labels[usable])


def _usable(features: np.ndarray, failed: np.ndarray) -> np.ndarray:
    """Rows whose fit did not fail and whose features are finite (a fitted light of peak <= 0 has none)."""
    return ~failed & np.isfinite(features).all(axis=1)


def class_probabilities(model: Pipeline, features: np.ndarray, failed: np.ndarray) -> np.ndarray:
    """Probabilities ``(N, 3)`` of each class (``CLASS_NAMES`` order) for ``features (N, 5)``;
    :data:`FAILED_FIT_PROBABILITIES` where ``failed (N,)`` or a feature is not finite."""
    probabilities, usable = np.tile(FAILED_FIT_PROBABILITIES, (len(features), 1)), _usable(features, failed)
    if usable.any():
        probabilities[usable] = model.predict_proba(features[usable])
    return probabilities
