"""Metrics match hand-computed values and scikit-learn; bootstrap intervals behave; the table prints what it holds."""

import json
import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from d4lenspinn.metrics import (
    _metrics_from_counts,
    bootstrap_intervals,
    classification_metrics,
    evaluation_report,
    format_metrics_table,
    paired_difference,
)
from d4lenspinn.report import markdown_table

NAMES = ("no", "sphere", "vort")

# Hand-made case. Column "no": positives 0.9, 0.15 against negatives 0.8, 0.2, 0.1, 0.05 win 4 + 2 of 8 pairs -> 0.75.
# Column "sphere": positives 0.1, 0.7 against 0.05, 0.8, 0.1, 0.15 win 1.5 (one tie) + 3 of 8 -> 0.5625. "vort": 1.
HAND_PROBS = np.array(
    [
        [0.90, 0.05, 0.05],
        [0.15, 0.80, 0.05],
        [0.80, 0.10, 0.10],
        [0.20, 0.70, 0.10],
        [0.10, 0.10, 0.80],
        [0.05, 0.15, 0.80],
    ]
)
HAND_LABELS = np.array([0, 0, 1, 1, 2, 2])


def _synthetic(n, seed=0, separation=1.5):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    logits = np.round(rng.normal(size=(n, 3)), 1)  # rounding makes score ties
    logits[np.arange(n), labels] += separation
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True), labels


def test_perfect_classifier():
    labels = np.array([0, 1, 2, 2, 1, 0])
    metrics = classification_metrics(np.eye(3)[labels] * 0.9 + 0.1 / 3, labels, NAMES)
    for key in ("macro_auc", "auc_no", "auc_sphere", "auc_vort", "accuracy", "micro_f1", "macro_f1"):
        assert metrics[key] == pytest.approx(1.0)
    assert metrics["confusion_matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]


def test_hand_computed_case():
    metrics = classification_metrics(HAND_PROBS, HAND_LABELS, NAMES)
    assert metrics["auc_no"] == pytest.approx(0.75)
    assert metrics["auc_sphere"] == pytest.approx(0.5625)
    assert metrics["auc_vort"] == pytest.approx(1.0)
    assert metrics["macro_auc"] == pytest.approx((0.75 + 0.5625 + 1.0) / 3)
    assert metrics["confusion_matrix"] == [[1, 1, 0], [1, 1, 0], [0, 0, 2]]
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["micro_f1"] == pytest.approx(4 / 6)
    assert metrics["macro_f1"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)  # F1 = 2TP / (2TP + FP + FN) per class


def test_matches_sklearn_on_random_data():
    probs, labels = _synthetic(500)
    metrics = classification_metrics(probs, labels, NAMES)
    assert metrics["macro_auc"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    assert metrics["macro_f1"] == pytest.approx(f1_score(labels, probs.argmax(1), average="macro"))
    assert np.array(metrics["confusion_matrix"]).sum() == 500


def test_weighted_metrics_equal_metrics_of_repeated_data():
    """The vectorised bootstrap kernel gives, per row of counts, exactly the metrics of the data repeated that often."""
    probs, labels = _synthetic(200, seed=1)
    counts = np.random.default_rng(2).integers(0, 4, size=(3, 200))
    counts[0] = 1
    resampled = _metrics_from_counts(probs, labels, list(NAMES), counts)
    for b in range(3):
        index = np.repeat(np.arange(200), counts[b])
        expected = classification_metrics(probs[index], labels[index], NAMES)
        for key, values in resampled.items():
            assert values[b] == pytest.approx(expected[key], abs=1e-12), key


def test_absent_class_gives_nan_auc_and_macro_over_present():
    probs, labels = HAND_PROBS[:4], HAND_LABELS[:4]
    metrics = classification_metrics(probs, labels, NAMES)
    assert math.isnan(metrics["auc_vort"])
    assert metrics["macro_auc"] == pytest.approx((metrics["auc_no"] + metrics["auc_sphere"]) / 2)
    intervals = bootstrap_intervals(probs, labels, NAMES, n_bootstrap=50)
    assert all(math.isnan(bound) for bound in intervals["auc_vort"])
    report = evaluation_report(probs, labels, NAMES, n_bootstrap=50)
    assert report["metrics"]["auc_vort"] is None and report["ci95"]["auc_vort"] == [None, None]
    json.dumps(report, allow_nan=False)
    assert "| AUC vort | n/a |" in format_metrics_table({"run": report})


def test_bootstrap_contains_estimate_shrinks_and_is_deterministic():
    small, large = _synthetic(300, seed=3), _synthetic(3000, seed=3)
    point = classification_metrics(*large, NAMES)
    intervals = bootstrap_intervals(*large, NAMES, n_bootstrap=300, seed=5)
    assert set(intervals) == set(point) - {"confusion_matrix"}
    for key, (low, high) in intervals.items():
        assert low <= point[key] <= high, key
    small_intervals = bootstrap_intervals(*small, NAMES, n_bootstrap=300, seed=5)
    for key, (low, high) in intervals.items():
        assert high - low < 0.6 * (small_intervals[key][1] - small_intervals[key][0]), key
    assert bootstrap_intervals(*large, NAMES, n_bootstrap=300, seed=5) == intervals
    assert bootstrap_intervals(*large, NAMES, n_bootstrap=300, seed=6) != intervals
    wider = bootstrap_intervals(*large, NAMES, n_bootstrap=300, confidence=0.99, seed=5)
    assert wider["macro_auc"][0] <= intervals["macro_auc"][0] and wider["macro_auc"][1] >= intervals["macro_auc"][1]


def test_bootstrap_is_stratified():
    """Every resample keeps the class counts, so accuracy of a classifier perfect on one class and wrong on the
    others never moves."""
    labels = np.repeat([0, 1, 2], [5, 7, 9])
    probs = np.tile([0.8, 0.1, 0.1], (21, 1))
    low, high = bootstrap_intervals(probs, labels, NAMES, n_bootstrap=200)["accuracy"]
    assert low == high == pytest.approx(5 / 21)


def test_evaluation_report_is_json():
    probs, labels = _synthetic(100)
    report = evaluation_report(probs, labels, NAMES, n_bootstrap=100, seed=1)
    assert report["n"] == 100 and report["n_bootstrap"] == 100 and report["seed"] == 1
    assert report["metrics"] == classification_metrics(probs, labels, NAMES)
    assert json.loads(json.dumps(report, allow_nan=False)) == {
        **report,
        "ci95": {k: list(v) for k, v in report["ci95"].items()},
    }


@pytest.mark.parametrize(
    ("probs", "labels", "names", "match"),
    [
        (np.ones((4, 2)) / 2, np.zeros(4, int), NAMES, r"shape \(N >= 1, K = 3\)"),
        (np.ones(3) / 3, np.zeros(1, int), NAMES, "probabilities must have shape"),
        (np.ones((4, 3)) / 3, np.zeros(5, int), NAMES, r"labels must have shape \(4,\)"),
        (np.full((4, 3), np.nan), np.zeros(4, int), NAMES, "finite; 12 entries"),
        (np.ones((4, 3)) / 3, np.array([0, 1, 2, 3]), NAMES, r"labels must lie in \[0, 3\)"),
        (np.ones((4, 3)) / 3, np.zeros(4), NAMES, "labels must be integers"),
        (np.ones((4, 3)) / 3, np.zeros(4, int), ("a", "a", "b"), "unique"),
    ],
)
def test_input_validation(probs, labels, names, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(probs, labels, names)


def test_bootstrap_argument_validation():
    with pytest.raises(ValueError, match="n_bootstrap"):
        bootstrap_intervals(HAND_PROBS, HAND_LABELS, NAMES, n_bootstrap=0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_intervals(HAND_PROBS, HAND_LABELS, NAMES, confidence=1.0)


def test_format_metrics_table():
    def report(scale):
        metrics = {"macro_auc": 0.97349 * scale, "auc_no": 0.99, "auc_vort": 0.5, "accuracy": 0.9, "micro_f1": 0.9}
        metrics["macro_f1"] = None
        return {"n": 3000, "metrics": metrics, "ci95": {"macro_auc": [0.96751, 0.97849], "auc_no": [0.98, 1.0]}}

    table = format_metrics_table({"no TTA": report(1.0), "D4 TTA": report(1.001)})
    assert table.splitlines() == [
        "| metric | no TTA | D4 TTA |",
        "|---|---:|---:|",
        "| macro AUC | 0.973 [0.968, 0.978] | 0.974 [0.968, 0.978] |",
        "| AUC no | 0.990 [0.980, 1.000] | 0.990 [0.980, 1.000] |",
        "| AUC vort | 0.500 | 0.500 |",
        "| accuracy | 0.900 | 0.900 |",
        "| micro F1 | 0.900 | 0.900 |",
        "| macro F1 | n/a | n/a |",
        "| images | 3000 | 3000 |",
    ]
    assert "| AUC sphere | - |" in format_metrics_table(
        {"a": report(1.0), "b": evaluation_report(HAND_PROBS, HAND_LABELS, NAMES, 20)}
    )
    with pytest.raises(ValueError, match="at least one"):
        format_metrics_table({})


def test_paired_difference_of_hand_made_cases():
    constant = np.full_like(HAND_PROBS, 1 / 3)  # every score tied: AUC 0.5 per class
    difference = paired_difference(HAND_PROBS, constant, HAND_LABELS, NAMES, n_bootstrap=50, seed=0)
    assert difference["gain"] == pytest.approx((0.75 + 0.5625 + 1) / 3 - 0.5, abs=1e-12)
    assert paired_difference(HAND_PROBS, HAND_PROBS, HAND_LABELS, NAMES, 50) == {"gain": 0.0, "ci95": [0.0, 0.0]}
    perfect = np.eye(3)[HAND_LABELS]  # every resample keeps every class, so AUC 1 against 0 in each of them
    assert paired_difference(perfect, 1 - perfect, HAND_LABELS, NAMES, 50) == {"gain": 1.0, "ci95": [1.0, 1.0]}
    assert difference == paired_difference(HAND_PROBS, constant, HAND_LABELS, NAMES, n_bootstrap=50, seed=0)
    with pytest.raises(ValueError, match="probabilities must have shape"):
        paired_difference(HAND_PROBS, constant[:, :2], HAND_LABELS, NAMES)


def test_paired_difference_equals_the_loop_over_resamples():
    """The vectorised paired bootstrap gives what scoring each resample with classification_metrics gives."""
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1, 2], [7, 5, 6])
    a, b = rng.dirichlet([1, 1, 1], len(labels)), rng.dirichlet([1, 1, 1], len(labels))
    draws = np.random.default_rng(4)  # the same stream paired_difference(seed=4) draws its resamples from
    members = [np.flatnonzero(labels == k) for k in range(3)]
    loop = []
    for _ in range(30):
        index = np.concatenate([draws.choice(m, size=len(m)) for m in members])
        auc = [classification_metrics(p[index], labels[index], NAMES)["macro_auc"] for p in (a, b)]
        loop.append(auc[0] - auc[1])
    result = paired_difference(a, b, labels, NAMES, n_bootstrap=30, seed=4)
    np.testing.assert_allclose(result["ci95"], np.percentile(loop, [2.5, 97.5]), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="n_bootstrap must be a positive integer"):
        paired_difference(a, b, labels, NAMES, n_bootstrap=0)


def test_markdown_table():
    table = markdown_table(["model", "AUC", "note"], [["d4_cnn", 0.967, "x"], ["resnet18", "0.954", ""]], align="lrl")
    assert table.splitlines() == [
        "| model | AUC | note |",
        "|---|---:|---|",
        "| d4_cnn | 0.967 | x |",
        "| resnet18 | 0.954 |  |",
    ]
    assert markdown_table(["a", "b"], []).splitlines() == ["| a | b |", "|---|---:|"]
    with pytest.raises(ValueError, match="row 0 has 1 cells but the table has 2 columns"):
        markdown_table(["a", "b"], [["only"]])
    with pytest.raises(ValueError, match="align must hold one of 'l' or 'r' per column"):
        markdown_table(["a", "b"], [], align="lc")
