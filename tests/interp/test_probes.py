from typing import NamedTuple

import numpy as np
import pytest
import torch
from escnn import gspaces
from escnn import nn as enn
from torch import nn

from d4lenspinn.data.presets import get_preset
from d4lenspinn.data.simulator import LensSample, sample_lenses
from d4lenspinn.symmetry import D4_ELEMENTS, transform_scalar
from interp.probes import (
    collect_pooled,
    d4_element_dataset,
    plot_probes,
    pooled_features,
    probe,
    probe_layers,
    simulator_targets,
)


def planted(n=200, d=10, seed=0):
    """Features with a linear regression signal in column 0 and a class signal in column 1, plus noise columns."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, d))
    value = 2 * features[:, 0] + 0.05 * rng.normal(size=n)
    label = (features[:, 1] > 0).astype(int)
    return features, value, label


def test_probe_recovers_planted_regression_and_control_is_at_chance():
    features, value, _ = planted()
    result = probe(features, value, "regression")
    assert result["metric"] == "r2" and result["chance"] == 0
    assert result["score"] > 0.9
    assert result["shuffled"] < 0.1
    assert set(result) == {"score", "score_std", "shuffled", "shuffled_std", "metric", "chance"}


def test_probe_recovers_planted_classes_and_control_is_at_chance():
    features, _, label = planted()
    result = probe(features, label, "classification")
    assert result["metric"] == "accuracy"
    assert result["chance"] == pytest.approx(np.bincount(label).max() / len(label))
    assert result["score"] > 0.9
    assert abs(result["shuffled"] - result["chance"]) < 0.1


def test_probe_is_reproducible_with_seed():
    features, value, _ = planted()
    assert probe(features, value, "regression", seed=3) == probe(features, value, "regression", seed=3)


def test_probe_errors():
    features, value, label = planted(n=40)
    with pytest.raises(ValueError, match="target must have shape"):
        probe(features, value[:-1], "regression")
    with pytest.raises(ValueError, match="features must have shape"):
        probe(features[:, 0], value, "regression")
    with pytest.raises(ValueError, match="constant"):
        probe(features, np.ones(40), "regression")
    with pytest.raises(ValueError, match="single class"):
        probe(features, np.zeros(40, dtype=int), "classification")
    with pytest.raises(ValueError, match="at least n_splits=5"):
        probe(features, np.r_[np.zeros(37), np.ones(3)].astype(int), "classification")
    with pytest.raises(ValueError, match="kind must be one of"):
        probe(features, value, "ranking")


def test_probe_layers_rows_and_skips_constant_targets():
    features, value, label = planted(n=60)
    pooled = {"a": features, "b": features[:, ::-1]}
    targets = {
        "value": (value, "regression"),
        "label": (label, "classification"),
        "fixed": (np.full(60, 1.28), "regression"),
    }
    rows = probe_layers(pooled, targets, n_splits=3)
    assert [(row["layer"], row["target"]) for row in rows] == [
        ("a", "value"),
        ("a", "label"),
        ("b", "value"),
        ("b", "label"),
    ]
    assert all(row["score"] > 0.8 for row in rows)


class Pair(NamedTuple):
    big: torch.Tensor
    small: torch.Tensor | None
    logits: torch.Tensor


def test_pooled_features_types():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    pooled = pooled_features(x)
    assert pooled.dtype == np.float64 and pooled.shape == (2, 3)
    np.testing.assert_allclose(pooled, x.double().mean(dim=(2, 3)).numpy())
    assert pooled_features(torch.ones(2, 5)).shape == (2, 5)
    tokens = torch.randn(2, 7, 6)
    np.testing.assert_allclose(pooled_features(tokens), tokens.double().mean(dim=1).numpy())

    field_type = enn.FieldType(gspaces.flipRot2dOnR2(4), 3 * [gspaces.flipRot2dOnR2(4).trivial_repr])
    np.testing.assert_allclose(pooled_features(enn.GeometricTensor(x, field_type)), pooled)

    pair = Pair(big=x, small=None, logits=torch.ones(2, 2))
    assert pooled_features(pair).shape == (2, 5)
    with pytest.raises(ValueError, match="of type list"):
        pooled_features([x])
    np.testing.assert_allclose(pooled_features(torch.tensor([1.0, 2.0])), [[1.0], [2.0]])  # one number per image
    with pytest.raises(ValueError, match="cannot pool a tensor"):
        pooled_features(torch.ones(2, 1, 1, 1, 1))


def test_collect_pooled_shapes_and_restores_train_mode():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    model.train()
    pooled = collect_pooled(model, torch.randn(10, 1, 8, 8), ["0", "3"], batch_size=4)
    assert pooled["0"].shape == (10, 4) and pooled["3"].shape == (10, 3)
    assert model.training
    with pytest.raises(ValueError, match="unknown layer"):
        collect_pooled(model, torch.randn(2, 1, 8, 8), ["nope"])


@pytest.fixture(scope="module")
def lenses() -> LensSample:
    preset = get_preset("model_ii")
    return LensSample.concatenate(
        [sample_lenses(preset, label, 4, torch.Generator().manual_seed(0)) for label in (0, 1, 2)]
    )


def test_simulator_targets(lenses):
    targets = simulator_targets(lenses)
    assert set(targets) == {"class", "einstein_radius", "n_subhalos", "subhalo_mass", "vortex_length", "source_offset"}
    label = lenses.label.numpy()
    values = {name: values for name, (values, _) in targets.items()}
    assert targets["class"][1] == "classification"
    assert all(kind == "regression" for name, (_, kind) in targets.items() if name != "class")
    np.testing.assert_array_equal(values["class"], label)
    np.testing.assert_array_equal(values["n_subhalos"], np.where(label == 1, 25, 0))
    assert np.all((values["subhalo_mass"] > 0) == (label == 1))
    assert np.all((values["vortex_length"] > 0) == (label == 2))
    np.testing.assert_allclose(values["einstein_radius"], get_preset("model_ii").theta_e[0])
    np.testing.assert_allclose(values["source_offset"], np.hypot(lenses.source_x.numpy(), lenses.source_y.numpy()))
    assert all(len(v) == len(lenses) for v in values.values())


def test_d4_element_dataset_reproducible_and_correct():
    images = torch.randn(16, 1, 6, 6)
    moved, element = d4_element_dataset(images, seed=1)
    again, element_again = d4_element_dataset(images, seed=1)
    assert torch.equal(moved, again) and np.array_equal(element, element_again)
    assert element.shape == (16,) and np.array_equal(np.bincount(element), [2] * 8)  # balanced
    for i, index in enumerate(element):
        assert torch.equal(moved[i], transform_scalar(images[i], D4_ELEMENTS[index]))
    assert not np.array_equal(element, d4_element_dataset(images, seed=2)[1])


def test_plot_probes_writes_png(tmp_path):
    common = {"score_std": 0.02, "shuffled": 0.0, "shuffled_std": 0.02}
    rows = [
        {"layer": layer, "target": "mass", "score": s, "metric": "r2", "chance": 0.0, **common}
        for layer, s in (("unet", 0.3), ("engine", 0.6), ("head", 0.9))
    ] + [{"layer": "head", "target": "class", "score": 0.9, "metric": "accuracy", "chance": 0.34, **common}]
    path = plot_probes(rows, tmp_path / "probes.png")
    assert path.exists() and path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="rows is empty"):
        plot_probes([], tmp_path / "empty.png")
