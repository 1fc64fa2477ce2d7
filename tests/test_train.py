"""Training: config handling, determinism, exact resume after an interruption, non-finite losses, checkpoints."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from d4lenspinn import metrics_log
from d4lenspinn import train as train_module
from d4lenspinn.checkpoint import load_trained_model
from d4lenspinn.config import load_config, save_config
from d4lenspinn.data import DataError
from d4lenspinn.train import TrainingDiverged, train


def _config(tmp_path, name="run", model="resnet18", **extra):
    overrides = [
        f"data.root={tmp_path / 'data'}",
        "data.n_per_class=8",
        "data.batch_size=6",
        "data.preset=model_ii",
        f"model.name={model}",
        "optim.epochs=2",
        "optim.warmup_epochs=0.5",
        f"out={tmp_path / name}",
        "n_bootstrap=20",
    ] + [f"{k}={v}" for k, v in extra.items()]
    return load_config(overrides=overrides)


def _weights(run_dir, checkpoint="last.pt"):
    return torch.load(run_dir / checkpoint, weights_only=True)["model"]


def test_unknown_keys_and_bad_overrides_are_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config key\(s\) optim.learning_rate; valid keys: .*'lr'"):
        load_config(overrides=["optim.learning_rate=0.1"])
    with pytest.raises(ValueError, match="key.subkey=value"):
        load_config(overrides=["optim.lr"])
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  batch_sise: 4\n")
    with pytest.raises(ValueError, match="data.batch_sise"):
        load_config(path)
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_config_round_trips_through_yaml(tmp_path):
    config = load_config(overrides=["optim.lr=3e-4", "model.kwargs={widths: [2, 4, 8]}", "data.augment=false"])
    assert config.optim.lr == 3e-4 and config.model.kwargs == {"widths": [2, 4, 8]} and config.data.augment is False
    assert load_config(save_config(config, tmp_path / "config.yaml")) == config


def test_same_seed_same_metrics_and_checkpoints(tmp_path):
    first = train(_config(tmp_path, "a"))
    second = train(_config(tmp_path, "b"))
    rows_a = (first / "metrics.jsonl").read_text().splitlines()
    assert len(rows_a) == 2 and rows_a == (second / "metrics.jsonl").read_text().splitlines()
    for key, value in _weights(first).items():
        assert torch.equal(value, _weights(second)[key]), key
    model, config, card = load_trained_model(first / "best.pt")
    assert card.image_size == 64 and card.pixel_scale == 0.101 and config.model.name == "resnet18"
    assert not model.training
    assert (first / "config.yaml").exists()


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    reference = train(_config(tmp_path, "reference"))
    real_draw, calls = train_module.random_elements, []

    def interrupt_in_epoch_two(count, generator):
        calls.append(1)
        if len(calls) == 5:  # epoch 2 (3 steps per epoch), second step, while drawing its augmentation
            raise KeyboardInterrupt
        return real_draw(count, generator)

    monkeypatch.setattr(train_module, "random_elements", interrupt_in_epoch_two)
    config = _config(tmp_path, "interrupted")
    with pytest.raises(KeyboardInterrupt):
        train(config)
    saved = torch.load(tmp_path / "interrupted" / "last.pt", weights_only=True)
    assert saved["resume"]["progress"]["epoch"] == 1 and saved["resume"]["progress"]["step"] == 1
    monkeypatch.setattr(train_module, "random_elements", real_draw)
    resumed = train(config, resume=True)
    for key, value in _weights(reference).items():
        torch.testing.assert_close(_weights(resumed)[key], value, rtol=0, atol=0, msg=key)
    assert (resumed / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()


def test_non_finite_loss_stops_naming_the_term_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    real_objective, calls = train_module.Objective.__call__, []

    def poisoned(objective, *args):
        terms = real_objective(objective, *args)
        calls.append(1)
        if len(calls) > 4:  # in epoch 2
            terms["tv"] = torch.tensor(float("nan"))
        return terms

    monkeypatch.setattr(train_module.Objective, "__call__", poisoned)
    config = _config(tmp_path, "nan", model="d4lenspinn", **{"optim.epochs": 3, "model.kwargs": "{widths: [1, 2]}"})
    with pytest.raises(TrainingDiverged, match="loss term 'tv' became nan at epoch 2"):
        train(config)
    saved = torch.load(tmp_path / "nan" / "last.pt", weights_only=True)
    assert saved["resume"]["progress"]["epoch"] == 1  # the good checkpoint of epoch 1 is kept
    assert len((tmp_path / "nan" / "metrics.jsonl").read_text().splitlines()) == 1
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


def test_batch_must_split_across_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setattr(train_module, "Distributed", _FakeWorld)
    with pytest.raises(ValueError, match="batch_size 6 must be divisible by the 4 processes"):
        train(_config(tmp_path, "ddp"))


class _FakeWorld:
    """Rank 0 of four processes, without a process group."""

    main = True

    def __init__(self, device):
        self.world, self.rank, self.device = 4, 0, device

    def barrier(self):
        pass

    def shard(self, batch):
        return batch


def test_the_lens_phase_trains_the_lens_alone_then_everything_trains(tmp_path):
    config = _macro_config(tmp_path, "phases", **{"data.preset": "model_ii_broad", "loss.lens_epochs": 1})
    trainer = train_module.Trainer(config)
    batch = trainer.with_truth(next(iter(trainer.train_loader)))
    classifier = trainer.model.head.get_classifier()
    for epoch, head_learns in ((0, False), (1, True)):
        trainer.state.epoch = epoch
        trainer.model.zero_grad(set_to_none=True)
        terms = trainer.objective(trainer.model(batch.images), batch, epoch, trainer.model.grid)
        trunk_head = trainer.model.unet.blocks["head"].weights  # the shared trunk's maps: the lens and delta_kappa
        assert torch.autograd.grad(terms["macro"], trunk_head, retain_graph=True)[0].abs().sum() > 0
        terms["total"].backward()
        assert trainer.objective.lens_phase(epoch) is not head_learns
        assert (classifier.weight.grad is not None and bool(classifier.weight.grad.abs().sum() > 0)) is head_learns
    trainer.state.epoch = 0
    run_dir = trainer.fit()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2] and all("val_macro_auc" in row for row in rows)
    with pytest.raises(ValueError, match="lens_epochs trains the lens alone"):
        train_module.Trainer(_config(tmp_path, "no_lens", **{"loss.lens_epochs": 1, "data.preset": "model_ii_broad"}))


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint .*last.pt to continue from"):
        train(_config(tmp_path, "fresh"), resume=True)


def test_epoch_metrics_go_to_tensorboard_when_it_is_installed(tmp_path, monkeypatch):
    """TensorBoard is optional (not installed in CI): a stand-in writer checks what training logs to it."""
    logged, closed = [], []

    class Writer:
        def __init__(self, log_dir):
            assert log_dir == str(tmp_path / "board" / "tensorboard")

        def add_scalar(self, key, value, step):
            logged.append((key, step))

        def flush(self):
            pass

        def close(self):
            closed.append(True)

    monkeypatch.setattr(metrics_log, "_tensorboard", lambda run_dir, purge_step: Writer(str(run_dir / "tensorboard")))
    train(_config(tmp_path, "board"))
    assert ("val_macro_auc", 1) in logged and ("train_loss", 2) in logged and closed == [True]


def test_reusing_a_data_root_simulated_differently_is_an_error(tmp_path):
    train(_config(tmp_path, "first", **{"optim.epochs": 1}))
    with pytest.raises(ValueError, match=r"different simulation \(counts"):
        train(_config(tmp_path, "second", **{"data.n_per_class": 9}))


def _folder_with_three_bad_files(root):
    """64x64 class folders (4 good images each) plus a corrupt file, a NaN image and a mis-shaped image."""
    rng = np.random.default_rng(0)
    for name in ("no", "sphere", "vort"):
        (root / name).mkdir(parents=True)
        for i in range(4):
            np.save(root / name / f"{i}.npy", rng.random((64, 64), dtype=np.float32))
    (root / "no" / "corrupt.npy").write_bytes(b"\x93NUMPY garbage")
    nan = rng.random((64, 64), dtype=np.float32)
    nan[3, 4] = np.nan
    np.save(root / "sphere" / "nan.npy", nan)
    np.save(root / "vort" / "small.npy", rng.random((32, 32), dtype=np.float32))
    return root


def test_bad_files_fail_before_the_first_step_all_named(tmp_path, monkeypatch):
    source = _folder_with_three_bad_files(tmp_path / "folder")
    monkeypatch.setattr(train_module.Trainer, "train_step", _never_called)
    config = _config(tmp_path, "bad", **{"data.source": str(source), "data.pixel_scale": 0.101})
    with pytest.raises(DataError) as error:
        train(config)
    for name in ("corrupt.npy", "nan.npy", "small.npy"):
        assert name in str(error.value)


def test_skip_bad_drops_them_and_lists_them_in_the_run_directory(tmp_path):
    source = _folder_with_three_bad_files(tmp_path / "folder")
    config = _config(tmp_path, "skip", **{"data.source": str(source), "data.skip_bad": True, "optim.epochs": 1})
    with pytest.warns(UserWarning, match="3 bad"):
        run_dir = train(config)
    listed = (run_dir / "bad_files.txt").read_text().splitlines()
    assert sorted(Path(line.split(":")[0]).name for line in listed) == ["corrupt.npy", "nan.npy", "small.npy"]


def _never_called(*args, **kwargs):
    raise AssertionError("an optimisation step ran on data with bad files")


def test_the_pixel_scale_comes_from_the_data_and_a_contradiction_is_an_error(tmp_path):
    config = _config(tmp_path, "scale", model="d4lenspinn", **{"model.kwargs": "{widths: [1, 2]}", "optim.epochs": 1})
    trainer = train_module.Trainer(config)
    assert trainer.model.grid.pixel_scale == 0.101 == trainer.card.pixel_scale  # the model_ii preset's
    assert "simulated preset model_ii" in trainer.card.training_data
    with pytest.raises(ValueError, match="data.pixel_scale 0.05 arcsec/pixel contradicts the 0.101"):
        train_module.Trainer(_config(tmp_path, "scale2", **{"data.pixel_scale": 0.05}))
    with pytest.raises(ValueError, match="set data.pixel_scale instead"):
        train_module.Trainer(_config(tmp_path, "scale3", **{"model.kwargs": "{pixel_scale: 0.1}"}))


def test_the_progress_bar_stays_quiet_in_a_log(tmp_path, capfd):
    """Off a terminal the epoch bar is not redrawn on every step (a log file would get one line per step)."""
    train(_config(tmp_path, "quiet", **{"optim.epochs": 1, "data.batch_size": 2}))  # 9 steps
    assert capfd.readouterr().err.count("acc=") <= 1


def _macro_config(tmp_path, name, **extra):
    kwargs = "{macro_lens: true, widths: [1, 2]}"
    return _config(
        tmp_path,
        name,
        model="d4lenspinn",
        **{"model.kwargs": kwargs, "loss.macro": 1.0, "loss.substructure": 1.0},
        **extra,
    )


def test_on_simulations_the_supervised_terms_train_the_macro_lens(tmp_path):
    trainer = train_module.Trainer(
        _macro_config(tmp_path, "supervised", **{"data.preset": "model_ii_broad", "optim.epochs": 1})
    )
    assert trainer.truth is not None
    batch = train_module.augment(trainer.with_truth(next(iter(trainer.train_loader))), torch.arange(6) % 8)
    terms = trainer.objective(trainer.model(batch.images), batch, 0, trainer.model.grid)
    assert {"cross_entropy", "tv", "l1", "centre", "macro", "substructure", "total"} <= set(terms)
    assert "poisson" not in terms  # exact with a macro lens: nothing to measure
    trunk_head = trainer.model.unet.blocks["head"].weights
    assert torch.autograd.grad(terms["macro"], trunk_head, retain_graph=True)[0].abs().sum() > 0
    terms["total"].backward()
    trainer.fit()
    assert (tmp_path / "supervised" / "best.pt").exists()


def test_without_truth_the_supervised_terms_switch_off_with_one_line(tmp_path, caplog):
    source = _folder_with_three_bad_files(tmp_path / "folder")
    config = _macro_config(
        tmp_path, "no_truth", **{"data.source": str(source), "data.skip_bad": True, "data.pixel_scale": 0.101}
    )
    with pytest.warns(UserWarning, match="3 bad"), caplog.at_level("WARNING", logger="d4lenspinn"):
        trainer = train_module.Trainer(config)
    assert trainer.truth is None
    assert [r.message for r in caplog.records if "supervised" in r.message] == [
        "the data has no simulator truth: the supervised terms (loss.macro, loss.substructure) are off"
    ]
    with pytest.raises(ValueError, match="supervise a macro-lens estimate, which model 'resnet18' does not make"):
        train_module.Trainer(_config(tmp_path, "resnet", **{"loss.macro": 1.0}))


def test_a_directory_holding_another_run_is_refused_unless_resumed_or_overwritten(tmp_path):
    config = _config(tmp_path, "run", **{"optim.epochs": 1})
    run_dir = train(config)
    (run_dir / "report.md").write_text("the old run's report")
    (run_dir / "figures").mkdir()
    (run_dir / "notes.txt").write_text("not a run file")
    with pytest.raises(
        ValueError, match=r"holds another run \(config.yaml, metrics.jsonl, last.pt, best.pt, report.md"
    ):
        train(config)
    with pytest.raises(ValueError, match="choose one"):
        train(config, resume=True, overwrite=True)
    train(config, overwrite=True)
    assert not (run_dir / "report.md").exists() and not (run_dir / "figures").exists()
    assert (run_dir / "notes.txt").exists() and len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="out .*file is a file"):
        train(_config(tmp_path, "file"))


def test_a_start_that_never_reached_a_checkpoint_may_start_again(tmp_path):
    train_module.Trainer(_config(tmp_path, "started", **{"optim.epochs": 1}))  # writes config.yaml, trains nothing
    assert train(_config(tmp_path, "started", **{"optim.epochs": 1})).is_dir()


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("optim.epochs", 0, "optim.epochs must be an integer >= 1, got 0"),
        ("optim.early_stopping_patience", 0, "optim.early_stopping_patience must be an integer >= 1"),
        ("optim.lr", 0, "optim.lr must be a finite number > 0, got 0.0"),
        ("optim.weight_decay", -1, "optim.weight_decay must be a finite number >= 0"),
        ("optim.label_smoothing", 1, "optim.label_smoothing must be below 1"),
        ("data.batch_size", 0, "data.batch_size must be an integer >= 1, got 0"),
        ("data.n_per_class", -3, "data.n_per_class must be an integer >= 1"),
        ("data.n_val_per_class", 0, "data.n_val_per_class must be an integer >= 1"),
        ("data.pixel_scale", -0.1, "data.pixel_scale must be a number > 0"),
        ("n_bootstrap", 0, "n_bootstrap must be an integer >= 1"),
    ],
)
def test_settings_that_would_train_nothing_are_config_errors(key, value, expected):
    with pytest.raises(ValueError, match=re.escape(expected)):
        load_config(overrides=[f"{key}={value}"])
