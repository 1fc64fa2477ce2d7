"""On-the-fly simulation: items are a pure function of (seed, epoch, index); nothing is written; truth follows."""

import os

import pytest
import torch

from d4lenspinn.config import load_config
from d4lenspinn.data import batch_loader, prepare_data
from d4lenspinn.data.online import OnlineSimulation, online_splits
from d4lenspinn.data.presets import get_preset
from d4lenspinn.data.truth import TruthTable

PRESET = get_preset("model_ii", n_pixels=32)


def test_items_depend_only_on_seed_epoch_and_index():
    data = OnlineSimulation(PRESET, 4, seed=0, split="train")
    one_by_one = torch.stack([data[i][0] for i in range(len(data))])
    batched = torch.cat([torch.stack([image for image, _ in data.__getitems__(list(c))]) for c in ([5, 0, 9], [11, 2])])
    assert torch.equal(batched, one_by_one[[5, 0, 9, 11, 2]])  # batch composition does not matter
    assert [data[i][1] for i in range(len(data))] == [0] * 4 + [1] * 4 + [2] * 4
    assert one_by_one.shape == (12, 1, 32, 32) and one_by_one.amin() == 0 and one_by_one.amax() == 1
    data.set_epoch(1)
    fresh = torch.stack([data[i][0] for i in range(len(data))])
    assert not torch.equal(fresh, one_by_one)
    data.set_epoch(0)
    assert torch.equal(torch.stack([data[i][0] for i in range(len(data))]), one_by_one)
    other_seed = OnlineSimulation(PRESET, 4, seed=1, split="train")
    assert not torch.equal(other_seed[0][0], one_by_one[0])


def test_validation_and_test_are_fixed_distinct_sets_with_truth():
    splits = online_splits(PRESET, 4, 2, seed=0)
    val = torch.stack([splits.val[i][0] for i in range(len(splits.val))])
    splits.val.set_epoch(3)
    assert torch.equal(torch.stack([splits.val[i][0] for i in range(len(splits.val))]), val)
    assert len(splits.val) == len(splits.test) == 6 and len(splits.train) == 12
    assert not torch.equal(splits.test[0][0], splits.val[0][0])
    assert splits.pixel_scale == PRESET.pixel_scale and splits.image_size == 32
    index = torch.tensor([0, 7])
    for epoch in (0, 2):  # the training truth follows the epoch's lenses
        splits.train.set_epoch(epoch)
        expected = TruthTable(splits.train.lenses, PRESET).targets(index)
        got = splits.truth["train"].targets(index)
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    val_truth = TruthTable(splits.val.lenses, PRESET).targets(index - 2).macro
    assert torch.equal(splits.truth["val"].targets(index - 2).macro, val_truth)


def test_prepare_data_simulates_online_without_writing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(
        overrides=["data.source=simulate-online", "data.n_per_class=3", "data.n_val_per_class=2", f"out={tmp_path}/r"]
    )
    splits = prepare_data(config.data, seed=0)
    assert os.listdir(tmp_path) == []
    assert "online simulation of preset model_ii" in splits.description
    batch = next(iter(batch_loader(splits.train, 4, shuffle=True, generator=torch.Generator().manual_seed(0))))
    assert batch.images.shape == (4, 1, 64, 64)
    for i, index in enumerate(batch.index.tolist()):
        assert torch.equal(batch.images[i], splits.train[index][0])
    with pytest.raises(ValueError, match="contradicts"):
        prepare_data(load_config(overrides=["data.source=simulate-online", "data.pixel_scale=0.05"]).data, seed=0)
