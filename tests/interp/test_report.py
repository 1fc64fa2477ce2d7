"""`d4lenspinn interp` end to end on a tiny trained checkpoint: every study writes its JSON, figures and section."""

import json

import pytest

from d4lenspinn.cli import main
from interp.report import run_studies


@pytest.fixture
def checkpoint(tiny_run):
    return tiny_run / "best.pt"


@pytest.mark.slow
def test_cli_writes_every_study(checkpoint, tmp_path, capsys):
    out = tmp_path / "interp"
    args = ["interp", "--checkpoint", str(checkpoint), "--out", str(out)]
    layers = ["--layers", "head", "engine", "unet", "preprocessing", "unet.blocks.enc1"]  # given out of order
    assert main(args + layers + ["--n-images", "3", "--n-pairs", "4", "--n-probe", "14"]) == 0
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out
    report = (out / "report.md").read_text()
    for section in ("## Equivariance", "## Activation patching", "## Linear probes", "## Attribution"):
        assert section in report
    figures = ("equivariance", "patching", "probes", "attributions", "kappa_localisation_sphere")
    for figure in figures:
        assert (out / "figures" / f"{figure}.png").stat().st_size > 0 and f"figures/{figure}.png" in report
    errors = {row["layer"]: row["error"] for row in json.loads((out / "equivariance.json").read_text())}
    assert errors["unet"] < 1e-4 and errors["engine.alpha"] < 1e-4  # last row written is the last element
    patching = json.loads((out / "patching.json").read_text())
    assert set(patching) == {"sphere vs no", "vort vs no", "image vs rot90 image"}
    order = [row["layer"] for row in patching["vort vs no"]["rows"]]
    assert order == ["preprocessing", "unet.blocks.enc1", "unet", "engine", "head"]  # forward order
    assert patching["sphere vs no"]["rows"][-1] == {"layer": "head", "effect": 1.0, "low": 1.0, "high": 1.0}
    targets = {row["target"] for row in json.loads((out / "probes.json").read_text())}
    assert {"class", "n_subhalos", "vortex_length", "source_offset", "d4_element"} <= targets


def test_unknown_study_and_wrong_preset_size_are_errors(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="unknown studies"):
        run_studies(checkpoint, tmp_path, studies=["probes", "telepathy"])
    with pytest.raises(ValueError, match="pass a preset of the model's size"):
        run_studies(checkpoint, tmp_path, studies=["equivariance"], preset="model_i")


def test_the_studies_read_a_labelled_folder_as_evaluate_data_does(checkpoint, tmp_path):
    from d4lenspinn.data.presets import get_preset
    from d4lenspinn.data.writer import simulate_dataset

    simulate_dataset(tmp_path / "data", get_preset("model_ii"), n_per_class=4, n_val_per_class=3, progress=False)
    summary = run_studies(checkpoint, tmp_path / "out", data=tmp_path / "data", studies=["equivariance"], n_images=6)
    assert summary["equivariance"] and (tmp_path / "out" / "equivariance.json").exists()
    rows = json.loads((tmp_path / "out" / "equivariance.json").read_text())
    assert rows and all(row["error"] >= 0 for row in rows)
