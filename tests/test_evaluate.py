"""Evaluation: report, metrics with intervals for both TTA settings, figures, and clear errors."""

import json

import numpy as np
import pytest
import torch

from d4lenspinn.cli import main
from d4lenspinn.data.presets import get_preset
from d4lenspinn.data.writer import simulate_dataset
from d4lenspinn.evaluate import evaluate, write_report


@pytest.fixture
def trained_run(tiny_run):
    return tiny_run


def test_report_with_and_without_tta(trained_run):
    evaluation = evaluate(trained_run / "best.pt")
    files = write_report(evaluation)
    saved = json.loads((trained_run / "metrics.json").read_text())
    assert set(saved["reports"]) == {"no TTA", "D4 TTA"} and saved["n_test"] == 3
    for report in saved["reports"].values():
        assert 0 <= report["metrics"]["macro_auc"] <= 1 and "macro_auc" in report["ci95"]
    report = (trained_run / "report.md").read_text()
    for figure in ("roc_no_tta.png", "roc_d4_tta.png", "confusion_no_tta.png", "training_curves.png", "gallery.png"):
        assert f"figures/{figure}" in report and (trained_run / "figures" / figure).stat().st_size > 1000
    assert "| macro AUC |" in evaluation.table() and files.report == trained_run / "report.md"
    assert files.figures["gallery"] == trained_run / "figures" / "gallery.png"
    assert saved == json.loads(json.dumps(evaluation.to_json()))


def test_evaluation_holds_the_predictions_its_metrics_come_from(trained_run):
    from d4lenspinn.checkpoint import load_trained_model
    from d4lenspinn.classes import CLASS_NAMES
    from d4lenspinn.metrics import evaluation_report
    from d4lenspinn.models import count_parameters

    files_before = sorted(trained_run.rglob("*"))
    evaluation = evaluate(trained_run / "best.pt")
    assert sorted(trained_run.rglob("*")) == files_before  # evaluate writes nothing
    predictions = evaluation.predictions
    assert set(predictions.probabilities) == {"no TTA", "D4 TTA"} and evaluation.n_test == 3
    assert predictions.indices.tolist() == [0, 1, 2] and predictions.labels.shape == (3,)
    for label, probabilities in predictions.probabilities.items():
        assert probabilities.shape == (3, len(CLASS_NAMES))
        assert evaluation.reports[label] == evaluation_report(probabilities, predictions.labels, CLASS_NAMES, 20, 0)
    assert evaluation.parameters == count_parameters(load_trained_model(trained_run / "best.pt").model)
    assert evaluation.gallery.images.shape[1:] == (1, 64, 64) and len(evaluation.history) == 1
    without_tta = evaluate(trained_run / "best.pt", tta=False)
    assert list(without_tta.reports) == ["no TTA"]
    assert (without_tta.predictions.probabilities["no TTA"] == predictions.probabilities["no TTA"]).all()


def test_evaluate_predicts_through_the_exported_network_with_the_model_s_probabilities(trained_run):
    from escnn.nn import EquivariantModule

    from d4lenspinn.checkpoint import load_trained_model
    from d4lenspinn.data import batch_loader, prepare_data
    from d4lenspinn.tta import collect_predictions, inference_network

    model, config, _ = load_trained_model(trained_run / "best.pt")
    network = inference_network(model)
    assert not any(isinstance(module, EquivariantModule) for module in network.modules())
    assert any(isinstance(module, EquivariantModule) for module in model.modules())  # the model is left as it was
    evaluation = evaluate(trained_run / "best.pt")
    loader = batch_loader(prepare_data(config.data, seed=config.seed).test, 2)
    for label, tta in (("no TTA", False), ("D4 TTA", True)):
        escnn, _ = collect_predictions(model, loader, torch.device("cpu"), tta=tta)
        np.testing.assert_allclose(evaluation.predictions.probabilities[label], escnn, rtol=0, atol=1e-5)


def test_data_of_another_size_is_refused(trained_run, tmp_path):
    simulate_dataset(tmp_path / "small", get_preset("model_ii", n_pixels=32), n_per_class=4, progress=False)
    with pytest.raises(ValueError, match="model for 64x64 images but the data has 32x32"):
        evaluate(trained_run / "best.pt", data_source=str(tmp_path / "small"))


def test_cli_evaluate_and_missing_checkpoint(trained_run, tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(trained_run / "best.pt"), "--no-tta", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "D4 TTA" not in printed and (tmp_path / "report.md").exists()
    assert 'model card: d4lenspinn: 64x64 px at 0.101"/px' in printed
    with pytest.raises(SystemExit) as exit_info:  # argparse: the argument is checked before any work
        main(["evaluate", "--checkpoint", str(tmp_path / "nothing.pt")])
    assert exit_info.value.code == 2 and "no such file" in capsys.readouterr().err


def test_evaluate_on_a_labelled_folder_agrees_with_predict(trained_run, tmp_path):
    import csv

    import numpy as np

    from d4lenspinn.classes import CLASS_ALIASES, CLASS_NAMES
    from d4lenspinn.inference import predict_files
    from d4lenspinn.metrics import classification_metrics

    simulate_dataset(
        tmp_path / "other", get_preset("model_ii"), n_per_class=8, n_val_per_class=6, seed=5, progress=False
    )
    result = evaluate(trained_run / "best.pt", data_source=str(tmp_path / "other"))
    assert result.n_test == 18  # every image of val/ (the DeepLense layout), none of train/
    # the evaluation's batch size (the run's: 6): this barely trained model's near-tied probabilities would
    # otherwise reorder by float rounding of other batch shapes
    report = predict_files(trained_run / "best.pt", [tmp_path / "other" / "val"], tmp_path / "p.csv", batch_size=6)
    with open(report.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    probabilities = np.array([[float(r[f"p_{c}"]) for c in CLASS_NAMES] for r in rows])
    labels = np.array([CLASS_ALIASES[r["path"].split("/")[-2]] for r in rows])
    expected = classification_metrics(probabilities, labels, CLASS_NAMES)["macro_auc"]
    assert result.reports["D4 TTA"]["metrics"]["macro_auc"] == pytest.approx(expected, abs=1e-9)
    everything = evaluate(trained_run / "best.pt", data_source=str(tmp_path / "other"), split="all", tta=False)
    assert everything.n_test == 42
    with pytest.raises(ValueError, match="no split 'test'"):
        evaluate(trained_run / "best.pt", data_source=str(tmp_path / "other"), split="test")
