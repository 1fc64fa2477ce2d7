"""Simulator truth as targets: aligned with the dataset's items, batched, and moved with the image by D4."""

import pytest
import torch

from d4lenspinn.config import load_config
from d4lenspinn.data import Batch, Truth, TruthTable, batch_loader, prepare_data, simulation_preset
from d4lenspinn.data.simulator import substructure_convergence, true_macro_lens
from d4lenspinn.physics import MacroLens
from d4lenspinn.physics.light import convolve_psf, gaussian_psf_kernel
from d4lenspinn.symmetry import D4_ELEMENTS, transform_macro, transform_scalar


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("truth") / "data"
    config = load_config(overrides=[f"data.root={root}", "data.n_per_class=10", "data.preset=model_ii_broad"])
    return prepare_data(config.data, seed=0)


def test_every_split_has_its_truth_row_for_row(splits):
    assert splits.truth is not None and simulation_preset(splits.train.sources[0].parents[2]).name == "model_ii_broad"
    for name in ("train", "val", "test"):
        dataset, table = getattr(splits, name), splits.truth[name]
        assert len(table) == len(dataset)
        assert (table.lenses.label.numpy() == dataset.labels).all()


def test_targets_are_the_macro_lens_and_the_psf_smoothed_substructure(splits):
    table = splits.truth["train"]
    index = torch.tensor([0, 5, 11])
    truth = table.targets(index)
    lenses = table.lenses.select(index)
    torch.testing.assert_close(truth.macro, torch.stack(tuple(true_macro_lens(lenses)), dim=1).float())
    preset = table.preset
    psf = gaussian_psf_kernel(preset.psf_fwhm, preset.pixel_scale, preset.psf_truncation, torch.float64)
    expected = convolve_psf(substructure_convergence(lenses, table.preset), psf).float()
    torch.testing.assert_close(truth.substructure, expected)
    assert truth.substructure.shape == (3, 1, 64, 64) and truth.macro.dtype == torch.float32


def test_batches_are_typed_and_carry_their_positions(splits):
    batch = next(iter(batch_loader(splits.val, 4)))
    assert isinstance(batch, Batch) and batch.truth is None
    assert batch.images.shape == (3, 1, 64, 64) and batch.index.tolist() == [0, 1, 2]  # 1 of each class


def test_the_truth_transforms_with_the_images_elements(splits):
    truth = splits.truth["train"].targets(torch.arange(8))
    moved = truth.transform(torch.arange(8))  # every element once
    for i, g in enumerate(D4_ELEMENTS):
        torch.testing.assert_close(moved.substructure[i], transform_scalar(truth.substructure[i], g))
        expected = transform_macro(MacroLens.from_tensor(truth.macro[i : i + 1]), g).as_tensor()[0]
        torch.testing.assert_close(moved.macro[i], expected)


def test_data_without_a_manifest_has_no_truth(tmp_path):
    assert simulation_preset(tmp_path) is None
    assert TruthTable.for_dataset(object(), tmp_path) is None
    assert Truth._fields == ("macro", "substructure")
