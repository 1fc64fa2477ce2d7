"""Figures are written (atomically) where asked and show what they claim."""

import matplotlib.image

from d4lenspinn.cli import main
from d4lenspinn.data.presets import get_preset
from d4lenspinn.plots import plot_class_examples


def test_class_examples_figure(tmp_path):
    path = plot_class_examples(get_preset("model_ii", n_pixels=32), tmp_path / "figs" / "examples.png", seed=1)
    assert path.exists() and matplotlib.image.imread(path).shape[0] > 300
    assert [p.name for p in path.parent.iterdir()] == ["examples.png"]  # no temporary file left behind


def test_cli_plot_examples(tmp_path, capsys):
    out = tmp_path / "ex.png"
    assert main(["plot-examples", "--preset", "model_ii", "--out", str(out)]) == 0
    assert out.exists() and str(out) in capsys.readouterr().out
