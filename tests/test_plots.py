"""Figures are written (atomically) where asked and show what they claim."""

import matplotlib.image
import numpy as np
import pytest

from d4lenspinn.classes import CLASS_NAMES
from d4lenspinn.cli import main
from d4lenspinn.data.presets import get_preset
from d4lenspinn.plots import (
    plot_class_examples,
    plot_confusion_matrix,
    plot_detection_classes,
    plot_prediction_gallery,
    plot_roc_curves,
    plot_training_curves,
)


def test_class_examples_figure(tmp_path):
    path = plot_class_examples(get_preset("model_ii", n_pixels=32), tmp_path / "figs" / "examples.png", seed=1)
    assert path.exists() and matplotlib.image.imread(path).shape[0] > 300
    assert [p.name for p in path.parent.iterdir()] == ["examples.png"]  # no temporary file left behind


def test_cli_plot_examples(tmp_path, capsys):
    out = tmp_path / "ex.png"
    assert main(["plot-examples", "--preset", "model_ii", "--out", str(out)]) == 0
    assert out.exists() and str(out) in capsys.readouterr().out


def _written(path, min_height=200):
    """The PNG exists, is of a sensible size, and no temporary file is left next to it."""
    assert path.exists() and matplotlib.image.imread(path).shape[0] > min_height
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == []
    return matplotlib.image.imread(path)


def _predictions(n=30, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    probs = rng.dirichlet(np.ones(3), n)
    probs[np.arange(n), labels] += 1.0
    return probs / probs.sum(axis=1, keepdims=True), labels


def test_detection_classes_figure(tmp_path):
    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(30, 5)), np.repeat([0, 1, 2], 10)
    features[0] = np.nan  # a failed fit
    path = plot_detection_classes(
        {"learnt": (features, labels), "tested": (features[::2], labels[::2])}, tmp_path / "c.png"
    )
    _written(path)
    with pytest.raises(ValueError, match="no run to plot"):
        plot_detection_classes({}, tmp_path / "none.png")


def test_roc_curves(tmp_path):
    probs, labels = _predictions()
    assert plot_roc_curves(probs, labels, CLASS_NAMES, tmp_path / "roc.png", title="test") == tmp_path / "roc.png"
    _written(tmp_path / "roc.png")
    _written(plot_roc_curves(probs[labels < 2], labels[labels < 2], CLASS_NAMES, tmp_path / "two_classes.png"))


def test_confusion_matrix(tmp_path):
    confusion = [[8, 1, 1], [0, 10, 0], [2, 0, 0]]
    _written(plot_confusion_matrix(confusion, CLASS_NAMES, tmp_path / "normalised.png"))
    _written(plot_confusion_matrix(np.zeros((3, 3), int), CLASS_NAMES, tmp_path / "counts.png", normalise=False))
    with pytest.raises(ValueError, match=r"shape \(3, 3\)"):
        plot_confusion_matrix(np.zeros((2, 2)), CLASS_NAMES, tmp_path / "bad.png")


def test_training_curves(tmp_path):
    history = [
        {"epoch": e, "train_loss": 1 / e, "train_accuracy": 1 - 0.5 / e, "lr": 1e-3 * 0.9**e} for e in range(1, 6)
    ]
    for row in history[1::2]:
        row.update(val_loss=1.2 / row["epoch"], val_accuracy=0.9, val_macro_auc=0.95)
    history[4]["val_loss"] = None
    wide = _written(plot_training_curves(history, tmp_path / "full.png"))
    narrow = _written(plot_training_curves([{"train_loss": 1.0}, {"train_loss": 0.5}], tmp_path / "loss.png"))
    assert wide.shape[1] > 2 * narrow.shape[1]  # three panels against one
    with pytest.raises(ValueError, match="at least one"):
        plot_training_curves([], tmp_path / "empty.png")
    with pytest.raises(ValueError, match="none of the plotted keys"):
        plot_training_curves([{"epoch": 1}], tmp_path / "nothing.png")


def test_prediction_gallery(tmp_path):
    probs, labels = _predictions(n=6)
    rng = np.random.default_rng(1)
    images, true_kappa = rng.random((6, 1, 16, 16)), rng.random((6, 1, 16, 16))
    outputs = {
        "kappa": rng.random((6, 1, 16, 16)),
        "source": rng.random((6, 1, 12, 12)),
        "relensed": rng.random((6, 1, 16, 16)),
        "logits": None,  # other keys are ignored
    }

    def gallery(name, maps, **kwargs):
        path = plot_prediction_gallery(images, maps, labels, probs, CLASS_NAMES, tmp_path / name, **kwargs)
        return _written(path, min_height=100)

    full = gallery("full.png", outputs, true_kappa=true_kappa, per_class=1)  # 3 rows, 5 columns
    maps = gallery("maps.png", outputs, per_class=1)  # 3 rows, 4 columns
    bare = gallery("bare.png", {"kappa": None}, per_class=1)  # 3 rows, 1 column
    tall = gallery("tall.png", {})  # 6 rows, 1 column
    assert full.shape[1] > maps.shape[1] > 1.5 * bare.shape[1]
    assert full.shape[0] == pytest.approx(maps.shape[0], rel=0.1)
    assert tall.shape[0] > 1.5 * bare.shape[0]
    with pytest.raises(ValueError, match=r"kappa must have shape \(6, 1, H, W\)"):
        gallery("bad.png", {"kappa": images[:3]})
    with pytest.raises(ValueError, match="per_class"):
        gallery("bad.png", {}, per_class=0)
