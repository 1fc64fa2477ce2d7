"""Resume after an interrupt reproduces the uninterrupted run, wherever the interrupt lands, for every model.

The interruption points, in the order a run passes them (epoch, step: where the run is saved):

* ``before_first_validation``: epoch 1 between its steps, before any checkpoint exists (0, 1)
* ``during_validation``: as the first validation runs (0, 2): the epoch is not lost
* ``between_epochs``: after epoch 1's checkpoint, before epoch 2 starts (1, 0)
* ``mid_epoch``: epoch 2 between its steps, after a validation pass put the model in eval mode (1, 1)
* ``last_step``: a real SIGINT landing just after the run's last optimiser update, before the step is recorded (1, 2):
  the trainer defers it to the end of the step, so the update is neither lost nor applied twice
"""

import os
import signal
from pathlib import Path

import pytest
import torch

from d4lenspinn.cli import main
from d4lenspinn.config import load_config
from d4lenspinn.data import prepare_data
from d4lenspinn.interrupts import TrainingInterrupted
from d4lenspinn.losses import objective as objective_module
from d4lenspinn.models import list_models
from d4lenspinn.train import Trainer, train

# the smallest settings each model accepts, so that the whole file stays within about two minutes
TINY = {
    "d4lenspinn": "{widths: [1, 2]}",
    "vanilla_lenspinn": "{widths: [1, 2]}",
    "d4lenspinn_lens": "{widths: [1, 2]}",
    "vanilla_lenspinn_lens": "{widths: [1, 2]}",
    "d4_cnn": "{widths: [1, 2]}",
    "d4_cnn_preprocessed": "{widths: [1, 2]}",
    "vit_small": "{embed_dim: 32, depth: 1, num_heads: 2}",
    "cait_small": "{embed_dim: 32, depth: 1, num_heads: 2}",
    "lenspinn_small": "{encoder_dim: 16, encoder_depth: 1, hidden: 16}",
    "lenspinn_large": "{encoder_dim: 16, encoder_depth: 1, hidden: 16}",
}
SAVED_AT = {
    "before_first_validation": (0, 1),
    "during_validation": (0, 2),
    "between_epochs": (1, 0),
    "mid_epoch": (1, 1),
    "last_step": (1, 2),
}
POINTS = tuple(SAVED_AT)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """8 simulated 64x64 images per class: 18 training images, two steps of 9 an epoch."""
    root = tmp_path_factory.mktemp("resume") / "data"
    prepare_data(_config(root, root.parent / "unused", "resnet18").data, seed=0)
    return root


def _config(data_root, out, model, *extra):
    overrides = [
        f"data.root={data_root}",
        "data.n_per_class=8",
        "data.batch_size=9",
        f"model.name={model}",
        f"model.kwargs={TINY.get(model, '{}')}",
        "optim.epochs=2",
        "optim.warmup_epochs=0.5",
        f"out={out}",
        *extra,
    ]
    return load_config(overrides=overrides)


def _weights(run_dir):
    return torch.load(run_dir / "last.pt", weights_only=True)["model"]


def _progress(run_dir):
    progress = torch.load(run_dir / "last.pt", weights_only=True)["resume"]["progress"]
    return progress["epoch"], progress["step"]


def _interrupts(monkeypatch, pending: list[str], fired: list[str]) -> None:
    """Interrupt the run once at each point of ``pending`` (removed when it fires; appended to ``fired``)."""

    def fire(point, at):
        if pending and pending[0] == point and at:
            fired.append(pending.pop(0))
            return True
        return False

    def patch(name, before):
        real = getattr(Trainer, name)

        def patched(self, *args):
            before(self)
            return real(self, *args)

        monkeypatch.setattr(Trainer, name, patched)

    def between_steps(self):  # with_truth runs before each step, outside it
        state = self.state
        if fire("before_first_validation", (state.epoch, state.step) == (0, 1)) or fire(
            "mid_epoch", (state.epoch, state.step) == (1, 1)
        ):
            raise KeyboardInterrupt

    def validation(self):
        if fire("during_validation", self.state.epoch == 0):
            iter(self.val_loader)  # validation has begun: its loader drew a seed from torch's global generator
            raise KeyboardInterrupt

    def epoch_start(self):
        if fire("between_epochs", (self.state.epoch, self.state.step) == (1, 0)):
            raise KeyboardInterrupt

    def last_step(self):
        if fire("last_step", (self.state.epoch, self.state.step) == (1, 1)):
            hook = []  # a real SIGINT just after the optimiser update, once
            signal_after_update = lambda *args: (os.kill(os.getpid(), signal.SIGINT), hook[0].remove())  # noqa: E731
            hook.append(self.optimizer.register_step_post_hook(signal_after_update))

    patch("with_truth", between_steps)
    patch("validate", validation)
    patch("train_epoch", epoch_start)
    patch("train_step", last_step)


def _interrupted_and_resumed(config, monkeypatch, points) -> None:
    """Train ``config``, interrupted at each of ``points`` in turn and resumed after each."""
    run_dir, pending, fired = Path(config.out), list(points), []
    _interrupts(monkeypatch, pending, fired)
    resume = False
    while True:
        try:
            train(config, resume=resume)
            break
        except TrainingInterrupted as interrupt:
            point = fired[-1]
            assert _progress(run_dir) == SAVED_AT[point], point
            assert str(interrupt).endswith(f"--config {run_dir / 'config.yaml'} --resume"), point
            resume = True
    assert fired == list(points) and not pending
    monkeypatch.undo()


@pytest.fixture(scope="module")
def references(data_root, tmp_path_factory):
    """The uninterrupted run of each model, trained once."""
    runs = {}

    def reference(model):
        if model not in runs:
            runs[model] = train(_config(data_root, tmp_path_factory.mktemp("reference") / model, model))
        return runs[model]

    return reference


def _assert_same_run(resumed, reference, what):
    expected, got = _weights(reference), _weights(resumed)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=1e-6, msg=f"{what}: {key}")
    assert (resumed / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text(), what


@pytest.mark.slow
@pytest.mark.parametrize("model", list_models())
def test_a_run_interrupted_at_every_point_resumes_to_the_uninterrupted_run(
    model, data_root, references, tmp_path, monkeypatch
):
    torch.set_num_threads(1)
    config = _config(data_root, tmp_path / "interrupted", model)
    _interrupted_and_resumed(config, monkeypatch, POINTS)
    _assert_same_run(tmp_path / "interrupted", references(model), model)


@pytest.mark.parametrize("point", POINTS)
def test_each_interruption_point_alone_resumes_exactly(point, data_root, references, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    config = _config(data_root, tmp_path / "interrupted", "d4_cnn")
    _interrupted_and_resumed(config, monkeypatch, [point])
    _assert_same_run(tmp_path / "interrupted", references("d4_cnn"), point)


def test_online_simulation_resumes_exactly(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    online = ["data.source=simulate-online", "data.n_val_per_class=2"]
    reference = train(_config(tmp_path, tmp_path / "reference", "d4_cnn", *online))
    config = _config(tmp_path, tmp_path / "interrupted", "d4_cnn", *online)
    _interrupted_and_resumed(config, monkeypatch, ["before_first_validation", "mid_epoch"])
    _assert_same_run(tmp_path / "interrupted", reference, "online")


def test_ctrl_c_prints_one_line_saying_how_to_resume(data_root, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "cli"
    _interrupts(monkeypatch, ["mid_epoch"], [])
    args = ["train", "--set", f"data.root={data_root}", "--set", "data.n_per_class=8", "--set", "data.batch_size=9"]
    args += ["--set", "model.name=vit_small", "--set", f"model.kwargs={TINY['vit_small']}", "--set", f"out={run_dir}"]
    args += ["--set", "optim.epochs=2"]
    assert main(args) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert err.strip().splitlines()[-1] == (
        f"d4lenspinn train: interrupted at epoch 2, step 1: saved {run_dir / 'last.pt'}; continue with: "
        f"d4lenspinn train --config {run_dir / 'config.yaml'} --resume"
    )
    monkeypatch.undo()
    assert main(["train", "--config", str(run_dir / "config.yaml"), "--resume"]) == 0


def test_training_that_draws_from_the_global_generator_resumes_exactly(data_root, tmp_path, monkeypatch):
    """Like dropout: every step draws from torch's global generator (here a random loss scale), and so does the
    validation loader, so the generator must be saved as it was after the last completed step."""
    torch.set_num_threads(1)
    real_loss = objective_module.classification_loss
    noisy = lambda *args: real_loss(*args) * (1 + torch.rand(()))  # noqa: E731
    with monkeypatch.context() as patch:
        patch.setattr(objective_module, "classification_loss", noisy)
        reference = train(_config(data_root, tmp_path / "reference", "d4_cnn"))
    monkeypatch.setattr(objective_module, "classification_loss", noisy)
    config = _config(data_root, tmp_path / "interrupted", "d4_cnn")
    _interrupted_and_resumed(config, monkeypatch, ["during_validation", "mid_epoch"])
    _assert_same_run(tmp_path / "interrupted", reference, "global generator")
