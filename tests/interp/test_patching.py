import numpy as np
import pytest
import torch
from torch import nn

from d4lenspinn.data.presets import get_preset
from d4lenspinn.models import ModelOutput
from d4lenspinn.symmetry import D4_ELEMENTS, transform_scalar
from interp.pairs import d4_pairs, substructure_pairs
from interp.patching import PatchingSanityError, activation_patching, plot_patching


class TwoPaths(nn.Module):
    """logit_1 - logit_0 = u + v with u = sum of the first two inputs, v = sum of the last two."""

    def __init__(self, noise: float = 0.0) -> None:
        super().__init__()
        self.u, self.v, self.head = nn.Identity(), nn.Identity(), nn.Identity()
        self.noise = noise

    def forward(self, x):
        flat = x.flatten(1)
        u = self.u(flat[:, :2].sum(1, keepdim=True))
        v = self.v(flat[:, 2:].sum(1, keepdim=True))
        jitter = self.noise * torch.rand_like(u)
        return ModelOutput(logits=self.head(torch.cat((torch.zeros_like(u), u + v + jitter), dim=1)))


def test_exact_effects_on_a_hand_built_model(tmp_path):
    # pair 0: u = 3, v = 1; pair 1: u = 1, v = 3 (clean); corrupted all zeros
    clean = torch.tensor([[1.0, 2.0, 0.5, 0.5], [0.5, 0.5, 1.0, 2.0]]).reshape(2, 1, 2, 2)
    result = activation_patching(TwoPaths(), clean, torch.zeros_like(clean), target=1, reference=0, n_bootstrap=200)
    assert result.layers == ["u", "v", "head"]
    np.testing.assert_allclose(result.effect, [0.5, 0.5, 1.0])  # ratio of sums: 4/8, 4/8, 8/8
    np.testing.assert_allclose(result.clean, [4.0, 4.0])
    np.testing.assert_allclose(result.patched[0], [3.0, 1.0])
    assert result.final_layer == "head" and result.self_patch_max_change == 0
    low, high = result.ci95[0]
    assert 0.25 <= low <= 0.5 <= high <= 0.75  # resampling the two pairs: 3/4, 1/2 or 1/4
    assert result.rows()[2] == {"layer": "head", "effect": 1.0, "low": 1.0, "high": 1.0}
    assert plot_patching({"toy": result}, tmp_path / "p.png").stat().st_size > 0


def test_sanity_check_catches_a_nondeterministic_model():
    clean = torch.ones(4, 1, 2, 2)
    with pytest.raises(PatchingSanityError, match="own activation"):
        activation_patching(TwoPaths(noise=1.0), clean, torch.zeros_like(clean), 1, 0, n_bootstrap=10)


def test_undefined_effect_and_shape_errors():
    x = torch.ones(3, 1, 2, 2)
    with pytest.raises(ValueError, match="same logit difference"):
        activation_patching(TwoPaths(), x, x.clone(), 1, 0, n_bootstrap=10)
    with pytest.raises(ValueError, match="same shape"):
        activation_patching(TwoPaths(), x, torch.ones(2, 1, 2, 2), 1, 0)
    with pytest.raises(ValueError, match="one per pair"):
        activation_patching(TwoPaths(), x, torch.zeros_like(x), [1, 1], 0)


def test_batches_give_the_same_result_as_one_pass():
    torch.manual_seed(0)
    clean, corrupted = torch.randn(7, 1, 2, 2) + 1, torch.randn(7, 1, 2, 2)
    whole = activation_patching(TwoPaths(), clean, corrupted, 1, 0, batch_size=7, n_bootstrap=50)
    split = activation_patching(TwoPaths(), clean, corrupted, 1, 0, batch_size=3, n_bootstrap=50)
    np.testing.assert_allclose(whole.patched, split.patched)
    np.testing.assert_allclose(whole.ci95, split.ci95)


def test_substructure_pairs_share_lens_source_and_noise():
    preset = get_preset("model_ii")
    clean, corrupted, sample = substructure_pairs(preset, label=1, count=3, seed=4)
    assert clean.shape == corrupted.shape == (3, 1, 64, 64)
    assert (sample.label == 1).all() and not torch.equal(clean, corrupted)
    again = substructure_pairs(preset, label=2, count=3, seed=4)[2]
    assert torch.equal(again.theta_e, sample.theta_e) and torch.equal(again.source_x, sample.source_x)
    with pytest.raises(ValueError, match="label 1"):
        substructure_pairs(preset, label=0, count=1)
    images, moved = d4_pairs(clean, D4_ELEMENTS[5])
    assert torch.equal(moved, transform_scalar(clean, D4_ELEMENTS[5]))
