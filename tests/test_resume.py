"""Resume after an interrupt reproduces the uninterrupted run, for every registered model."""

import pytest
import torch

from d4lenspinn.config import load_config
from d4lenspinn.data import prepare_data
from d4lenspinn.models import list_models
from d4lenspinn.train import Trainer, train

# the smallest settings each model accepts, so that the whole test stays within about a minute and a half
TINY = {
    "d4lenspinn": "{widths: [1, 2]}",
    "vanilla_lenspinn": "{widths: [1, 2]}",
    "d4_cnn": "{widths: [1, 2]}",
    "d4_cnn_preprocessed": "{widths: [1, 2]}",
    "vit_small": "{embed_dim: 32, depth: 1, num_heads: 2}",
    "cait_small": "{embed_dim: 32, depth: 1, num_heads: 2}",
    "lenspinn_small": "{encoder_dim: 16, encoder_depth: 1, hidden: 16}",
    "lenspinn_large": "{encoder_dim: 16, encoder_depth: 1, hidden: 16}",
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """8 simulated 64x64 images per class: 18 training images, two steps of 9 an epoch."""
    root = tmp_path_factory.mktemp("resume") / "data"
    prepare_data(_config(root, root.parent / "unused", "resnet18").data, seed=0)
    return root


def _overrides(data_root, out, model):
    return [
        f"data.root={data_root}",
        "data.n_per_class=8",
        "data.batch_size=9",
        f"model.name={model}",
        f"model.kwargs={TINY.get(model, '{}')}",
        "optim.epochs=2",
        "optim.warmup_epochs=0.5",
        f"out={out}",
    ]


def _config(data_root, out, model):
    return load_config(overrides=_overrides(data_root, out, model))


def _weights(run_dir):
    return torch.load(run_dir / "last.pt", weights_only=True)["model"]


@pytest.mark.parametrize("model", list_models())
def test_interrupted_run_resumes_to_the_uninterrupted_weights(model, data_root, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    reference = train(_config(data_root, tmp_path / "reference", model))

    real_step, calls = Trainer.train_step, []

    def interrupt_in_epoch_two(self, batch):
        calls.append(1)
        if len(calls) == 4:  # epoch 2, after its first step: mid-epoch, after a validation pass (eval mode)
            raise KeyboardInterrupt
        return real_step(self, batch)

    config = _config(data_root, tmp_path / "interrupted", model)
    monkeypatch.setattr(Trainer, "train_step", interrupt_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    monkeypatch.setattr(Trainer, "train_step", real_step)
    progress = torch.load(tmp_path / "interrupted" / "last.pt", weights_only=True)["resume"]["progress"]
    assert (progress["epoch"], progress["step"]) == (1, 1)

    resumed = train(config, resume=True)
    expected, got = _weights(reference), _weights(resumed)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=1e-6, msg=f"{model}: {key}")
    assert (resumed / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()


def test_online_simulation_resumes_exactly(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    online = ["data.source=simulate-online", "data.n_val_per_class=2"]
    config = lambda out: load_config(overrides=[*_overrides(tmp_path, out, "d4_cnn"), *online])  # noqa: E731
    reference = train(config(tmp_path / "reference"))
    real_step, calls = Trainer.train_step, []

    def interrupt_in_epoch_two(self, batch):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", interrupt_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path / "interrupted"))
    monkeypatch.setattr(Trainer, "train_step", real_step)
    resumed = train(config(tmp_path / "interrupted"), resume=True)
    for key, value in _weights(reference).items():
        torch.testing.assert_close(_weights(resumed)[key], value, rtol=0, atol=1e-6, msg=key)
    assert (resumed / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()
