"""Every command-line argument is checked before any work starts: a bad value exits with code 2 and one line on
stderr naming the argument and what was expected, no traceback, and no output file is written."""

import subprocess
import sys

import pytest

from d4lenspinn import cli
from d4lenspinn.cli import main


def _fails(argv, capsys) -> str:
    """Run ``d4lenspinn argv`` in-process; assert exit code 2 and one error line; return that line."""
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line and not line.startswith("usage:") and not line.startswith(" ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "best.pt"
    path.write_bytes(b"never read: the arguments fail first")
    return path


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "lens.npy"
    path.write_bytes(b"never read")
    return path


@pytest.mark.parametrize("value", ["-5", "0", "2.5", "many"])
def test_predict_batch_size_must_be_a_whole_number_of_at_least_one(value, checkpoint, image, tmp_path, capsys):
    out = tmp_path / "p.csv"
    line = _fails(
        ["predict", "--checkpoint", str(checkpoint), str(image), "--out", str(out), "--batch-size", value], capsys
    )
    assert line.startswith("d4lenspinn predict: error: argument --batch-size: expected a whole number >= 1, got ")
    assert value in line and not out.exists()


def test_predict_out_naming_a_directory_fails_before_inference(checkpoint, image, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    line = _fails(["predict", "--checkpoint", str(checkpoint), str(image), "--out", str(tmp_path / "out")], capsys)
    assert line == (
        f"d4lenspinn predict: error: argument --out: {tmp_path / 'out'} is a directory; "
        "expected the name of a file to write"
    )
    assert list((tmp_path / "out").iterdir()) == []


def test_predict_missing_inputs_and_checkpoint_are_named(checkpoint, tmp_path, capsys):
    out = tmp_path / "p.csv"
    line = _fails(["predict", "--checkpoint", str(checkpoint), str(tmp_path / "gone.npy"), "--out", str(out)], capsys)
    assert line == f"d4lenspinn predict: error: argument INPUT: no such file or directory: {tmp_path / 'gone.npy'}"
    line = _fails(["predict", "--checkpoint", str(tmp_path / "no.pt"), str(checkpoint), "--out", str(out)], capsys)
    assert line == f"d4lenspinn predict: error: argument --checkpoint: no such file: {tmp_path / 'no.pt'}"
    line = _fails(["predict", "--checkpoint", str(tmp_path), str(checkpoint), "--out", str(out)], capsys)
    assert line == f"d4lenspinn predict: error: argument --checkpoint: {tmp_path} is a directory; expected a file"
    assert not out.exists()


@pytest.mark.parametrize("value", ["-0.1", "0", "nan", "inf"])
def test_predict_pixel_scale_must_be_positive_and_finite(value, checkpoint, image, tmp_path, capsys):
    argv = ["predict", "--checkpoint", str(checkpoint), str(image), "--out", str(tmp_path / "p.csv")]
    line = _fails([*argv, "--pixel-scale", value], capsys)
    assert "argument --pixel-scale: expected a" in line and "number > 0" in line
    assert not (tmp_path / "p.csv").exists()


def _train(tmp_path, *overrides):
    return ["train", "--set", f"data.root={tmp_path / 'data'}", "--set", f"out={tmp_path / 'run'}", *overrides]


def test_train_unknown_model_kwargs_list_the_valid_keys(tmp_path, capsys):
    line = _fails(_train(tmp_path, "--set", "model.kwargs.foo=1"), capsys)
    assert line.startswith("d4lenspinn train: error: model.kwargs: model 'd4lenspinn' takes no foo; valid keys: ")
    assert "widths" in line and "preprocessing" in line and "image_size, " not in line.split("(")[0]
    assert list(tmp_path.iterdir()) == []


def test_train_model_kwargs_set_by_the_data_are_refused(tmp_path, capsys):
    line = _fails(_train(tmp_path, "--set", "model.name=resnet18", "--set", "model.kwargs.num_classes=5"), capsys)
    assert line.startswith(
        "d4lenspinn train: error: model.kwargs: model 'resnet18' takes no num_classes; valid keys: in_chans"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=0", "data.batch_size must be an integer >= 1, got 0"),
        ("data.batch_size=-5", "data.batch_size must be an integer >= 1, got -5"),
        ("data.num_workers=-1", "data.num_workers must be an integer >= 0, got -1"),
        ("data.n_per_class=0", "data.n_per_class must be an integer >= 1, got 0"),
        ("data.n_val_per_class=-3", "data.n_val_per_class must be an integer >= 1, got -3"),
        ("n_bootstrap=0", "n_bootstrap must be an integer >= 1, got 0"),
    ],
)
def test_train_counts_are_checked_before_any_data_is_made(override, message, tmp_path, capsys):
    assert _fails(_train(tmp_path, "--set", override), capsys) == f"d4lenspinn train: error: {message}"
    assert list(tmp_path.iterdir()) == []


def test_train_a_file_where_a_folder_is_wanted(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    argv = ["train", "--set", f"data.root={tmp_path / 'f'}", "--set", f"out={tmp_path / 'run'}"]
    line = _fails(argv, capsys)
    assert line == (
        f"d4lenspinn train: error: data.root {tmp_path / 'f'} is a file; expected the folder the simulated data goes to"
    )
    line = _fails(["train", "--set", f"data.root={tmp_path / 'data'}", "--set", f"out={tmp_path / 'f'}"], capsys)
    assert line == f"d4lenspinn train: error: out {tmp_path / 'f'} is a file; expected the run directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_train_config_and_override_syntax(tmp_path, capsys):
    line = _fails(["train", "--config", str(tmp_path / "none.yaml")], capsys)
    assert line == f"d4lenspinn train: error: argument --config: no such file: {tmp_path / 'none.yaml'}"
    line = _fails(["train", "--set", "optim.lr"], capsys)
    assert line == "d4lenspinn train: error: argument --set: expected KEY=VALUE (e.g. optim.lr=3e-4), got 'optim.lr'"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n-per-class", "0"], "argument --n-per-class: expected a whole number >= 1, got 0"),
        (
            ["--n-per-class", "4", "--n-val-per-class", "-3"],
            "argument --n-val-per-class: expected a whole number >= 1, got -3",
        ),
        (["--n-per-class", "4", "--batch-size", "0"], "argument --batch-size: expected a whole number >= 1, got 0"),
    ],
)
def test_simulate_counts(args, message, tmp_path, capsys):
    line = _fails(["simulate", *args, "--out", str(tmp_path / "sim")], capsys)
    assert line == f"d4lenspinn simulate: error: {message}"
    assert list(tmp_path.iterdir()) == []  # no stray manifest


def test_simulate_out_naming_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    line = _fails(["simulate", "--n-per-class", "4", "--out", str(tmp_path / "f")], capsys)
    assert line == f"d4lenspinn simulate: error: argument --out: {tmp_path / 'f'} is a file; expected a directory"
    assert (tmp_path / "f").read_text() == "x"


def test_evaluate_paths(checkpoint, tmp_path, capsys):
    line = _fails(["evaluate", "--checkpoint", str(checkpoint), "--data", str(tmp_path / "none")], capsys)
    assert line == f"d4lenspinn evaluate: error: argument --data: no such file or directory: {tmp_path / 'none'}"
    line = _fails(["evaluate", "--checkpoint", str(checkpoint), "--out", str(checkpoint)], capsys)
    assert line == f"d4lenspinn evaluate: error: argument --out: {checkpoint} is a file; expected a directory"
    line = _fails(["evaluate", "--checkpoint", str(tmp_path)], capsys)
    assert line == f"d4lenspinn evaluate: error: argument --checkpoint: {tmp_path} is a directory; expected a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


@pytest.mark.parametrize("flag", ["--n-images", "--n-pairs", "--n-probe"])
def test_interp_counts(flag, checkpoint, tmp_path, capsys):
    line = _fails(["interp", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "i"), flag, "0"], capsys)
    assert line == f"d4lenspinn interp: error: argument {flag}: expected a whole number >= 1, got 0"
    assert not (tmp_path / "i").exists()


def test_interp_out_naming_a_file(checkpoint, tmp_path, capsys):
    line = _fails(["interp", "--checkpoint", str(checkpoint), "--out", str(checkpoint)], capsys)
    assert line == f"d4lenspinn interp: error: argument --out: {checkpoint} is a file; expected a directory"


def test_check_data_download_plot_examples_and_models(tmp_path, capsys):
    line = _fails(["check-data", str(tmp_path / "none")], capsys)
    assert line == f"d4lenspinn check-data: error: argument path: no such file or directory: {tmp_path / 'none'}"
    line = _fails(["check-data", str(tmp_path), "--max-listed", "-1"], capsys)
    assert line == "d4lenspinn check-data: error: argument --max-listed: expected a whole number >= 0, got -1"
    line = _fails(["download", "--from-zip", str(tmp_path / "a.zip")], capsys)
    assert line == f"d4lenspinn download: error: argument --from-zip: no such file: {tmp_path / 'a.zip'}"
    line = _fails(["plot-examples", "--out", str(tmp_path)], capsys)
    assert line == (
        f"d4lenspinn plot-examples: error: argument --out: {tmp_path} is a directory; "
        "expected the name of a file to write"
    )
    line = _fails(["models", "--image-size", "0"], capsys)
    assert line == "d4lenspinn models: error: argument --image-size: expected a whole number >= 1, got 0"
    assert list(tmp_path.iterdir()) == []


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(monkeypatch, capsys):
    def config_error(args):
        raise ValueError("data.preset: unknown preset 'x'")

    monkeypatch.setattr(cli, "_models", config_error)
    assert _fails(["models"], capsys) == "d4lenspinn models: error: data.preset: unknown preset 'x'"

    def bug(args):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")  # as torch raises it

    monkeypatch.setattr(cli, "_models", bug)
    with pytest.raises(RuntimeError, match="mat1"):
        main(["models"])

    def key_bug(args):
        return {}["missing"]

    monkeypatch.setattr(cli, "_models", key_bug)
    with pytest.raises(KeyError):
        main(["models"])


_HOLDER = """
import sys, time
from d4lenspinn.io import exclusive_writer
with exclusive_writer(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_predict_to_the_same_csv_is_refused_and_the_first_keeps_its_rows(tiny_run, tmp_path, capsys):
    import numpy as np

    np.save(tmp_path / "a.npy", np.random.default_rng(0).random((64, 64), dtype=np.float32))
    out = tmp_path / "p.csv"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        argv = ["predict", "--checkpoint", str(tiny_run / "best.pt"), str(tmp_path / "a.npy"), "--out", str(out)]
        line = _fails([*argv, "--no-tta"], capsys)
        assert line.startswith(f"d4lenspinn predict: error: another process is writing {out} (lock ")
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    assert main([*argv, "--no-tta"]) == 0
    assert len(out.read_text().splitlines()) == 2


def test_model_kwargs_the_factory_sets_itself_are_not_offered():
    from d4lenspinn.models.registry import check_model_kwargs

    check_model_kwargs("d4lenspinn_lens", {"head": "tf_efficientnetv2_b0", "residual_channels": True, "in_chans": 1})
    with pytest.raises(
        ValueError, match=r"model 'd4lenspinn' takes no equivariant; valid keys: head, head_drop_rate, "
    ):
        check_model_kwargs("d4lenspinn", {"equivariant": False})
    with pytest.raises(
        ValueError, match=r"takes no name; valid keys: encoder_depth, encoder_dim, hidden, in_chans, theta_e_init \("
    ):
        check_model_kwargs("lenspinn_small", {"name": "x"})
    with pytest.raises(ValueError, match="unknown model 'nope'; registered models: "):
        check_model_kwargs("nope", {})
