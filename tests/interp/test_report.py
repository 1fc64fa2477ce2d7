"""`d4lenspinn interp` end to end on a tiny trained checkpoint: every study writes its JSON, figures and section;
the registry of studies and the result objects' JSON and markdown."""

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import interp.studies
from d4lenspinn.cli import main
from interp.report import run_studies
from interp.studies import get_study, register_study, study_names
from interp.studies.attribution import AttributionResult
from interp.studies.probes import ProbesResult


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


@pytest.fixture
def registry(monkeypatch):
    """A copy of the study registry for one test: what it registers is gone afterwards."""
    monkeypatch.setattr(interp.studies, "_REGISTRY", dict(interp.studies._REGISTRY))


@dataclass
class _ToyResult:
    n_images: int
    layers: list[str]

    def to_json(self):
        return {"n_images": self.n_images, "layers": self.layers}

    def figures(self, out_dir):
        path = out_dir / "toy.txt"
        path.write_text("a figure")
        return [path]

    def markdown(self):
        return f"## Toy\n\n{self.n_images} images, first layer `{self.layers[0]}`."


def test_a_registered_study_runs_in_the_report_and_writes_its_json_figures_and_section(checkpoint, tmp_path, registry):
    @register_study("toy")
    def toy(context):
        return _ToyResult(n_images=len(context.images), layers=context.layers)

    assert study_names() == ("equivariance", "patching", "probes", "attribution", "toy") and get_study("toy") is toy
    layers = ["unet", "preprocessing"]
    summary = run_studies(checkpoint, tmp_path, studies=["toy"], layers=layers, n_images=6)
    assert summary["toy"] == {"n_images": 6, "layers": ["preprocessing", "unet"]}  # two per class, forward order
    assert json.loads((tmp_path / "toy.json").read_text()) == summary["toy"]
    assert (tmp_path / "figures" / "toy.txt").read_text() == "a figure"
    report = (tmp_path / "report.md").read_text()
    assert report == (
        f"# Interpretability of `{checkpoint}` (d4lenspinn)\n\n## Toy\n\n6 images, first layer `preprocessing`.\n"
    )


def test_the_registry_names_the_built_in_studies_and_refuses_unknown_or_duplicate_names(registry):
    assert study_names() == ("equivariance", "patching", "probes", "attribution")
    assert get_study("probes").__name__ == "probes_study"
    with pytest.raises(ValueError, match="unknown study 'telepathy'; registered studies: equivariance, patching"):
        get_study("telepathy")
    with pytest.raises(ValueError, match="study 'probes' is already registered"):
        register_study("probes")(lambda context: None)


def test_probe_result_markdown_is_one_table_row_per_layer():
    rows = [
        {"layer": "unet", "target": "class", "score": 0.5, "shuffled": 0.25},
        {"layer": "unet", "target": "d4_element", "score": 0.75, "shuffled": 0.0},
        {"layer": "head", "target": "class", "score": 1.0, "shuffled": 0.5},
    ]
    result = ProbesResult(rows=rows, n_lenses=6)
    assert result.to_json() is rows
    table = result.markdown().split("\n\n")[2]
    assert table == (
        "| layer | class | d4_element |\n|---|---:|---:|\n"
        "| `unet` | 0.50 (0.25) | 0.75 (0.00) |\n| `head` | 1.00 (0.50) | - |"
    )


def test_attribution_result_without_grad_cam_or_kappa_map():
    result = AttributionResult(
        images=torch.zeros(1, 1, 4, 4),
        maps={"Integrated Gradients": torch.zeros(1, 1, 4, 4)},
        titles=["no"],
        ig_completeness_delta=[0.001],
        ig_relative_delta_max=0.002,
        cam_layer=None,
    )
    assert result.to_json() == {"ig_completeness_delta": [0.001], "ig_relative_delta_max": 0.002, "cam_layer": None}
    assert result.markdown() == (
        "## Attribution\n\nIntegrated Gradients (black-image baseline) and no Grad-CAM (the model has no plain conv "
        "layer) for the true class. Completeness: max |delta| / |F(x) - F(baseline)| = 2.00e-03.\n\n"
        "![attributions](figures/attributions.png)"
    )
    result.localisation = {"sphere": {"mean_r": 0.5, "control_mean_r": 0.0, "r": np.array([0.25, 0.75])}}
    result.localisation_field = "kappa"
    written = result.to_json()
    assert written["kappa_localisation"] == {"sphere": {"mean_r": 0.5, "control_mean_r": 0.0, "r": [0.25, 0.75]}}
    assert written["kappa_localisation_field"] == "kappa"
    assert "| sphere | 0.500 | 0.000 |" in result.markdown()
