from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from d4lenspinn.data.presets import get_preset
from d4lenspinn.data.simulator import render_images, sample_lenses, true_convergence
from d4lenspinn.models import ModelCapabilities
from d4lenspinn.models.output import ModelOutput
from interp.attribution import (
    default_cam_layer,
    grad_cam,
    integrated_gradients,
    kappa_localisation,
    plot_attributions,
    plot_kappa_localisation,
    predicted_kappa,
)


class Tiny(nn.Module):
    """conv -> tanh -> average pool -> linear, returning a ModelOutput (kappa: the conv's first channel, or None).

    Smooth (tanh, not ReLU) so that the IG path integral converges fast; dropout checks that eval mode is used.
    """

    def __init__(self, with_kappa: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Dropout(0.5))
        self.classifier = nn.Linear(4, 3)
        self.with_kappa = with_kappa

    def forward(self, images):
        maps = self.features(images)
        kappa = SimpleNamespace(kappa=maps[:, :1]) if self.with_kappa else None  # a maps object with a kappa field
        return ModelOutput(logits=self.classifier(maps.mean(dim=(2, 3))), maps=kappa)


class Linear(nn.Module):
    def __init__(self, size: int = 6) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.weight = nn.Parameter(torch.randn(2, size * size))

    def forward(self, images):
        return ModelOutput(logits=images.flatten(1) @ self.weight.T)


def test_integrated_gradients_completeness_and_restores_mode():
    model = Tiny().train()
    images = torch.rand(3, 1, 8, 8)
    attributions, delta = integrated_gradients(model, images, target=torch.tensor([0, 1, 2]), n_steps=128)
    assert attributions.shape == images.shape and delta.shape == (3,)
    assert model.training
    model.eval()
    with torch.no_grad():
        gain = (
            model(images).logits[torch.arange(3), torch.tensor([0, 1, 2])]
            - model(torch.zeros_like(images)).logits[torch.arange(3), torch.tensor([0, 1, 2])]
        )
    torch.testing.assert_close(attributions.sum(dim=(1, 2, 3)), gain, atol=1e-4, rtol=1e-3)
    assert torch.all(delta.abs() < 1e-3 * gain.abs().clamp_min(1e-3))
    torch.testing.assert_close(delta, attributions.sum(dim=(1, 2, 3)) - gain, atol=1e-5, rtol=0)


def test_integrated_gradients_of_a_linear_model_is_input_times_weight():
    model = Linear()
    images, baseline = torch.rand(2, 1, 6, 6), torch.full((1, 1, 6, 6), 0.2)
    attributions, delta = integrated_gradients(model, images, target=1, baseline=baseline, n_steps=8)
    expected = (images - baseline) * model.weight[1].detach().reshape(1, 1, 6, 6)
    torch.testing.assert_close(attributions, expected, atol=1e-5, rtol=1e-4)
    assert delta.abs().max() < 1e-4
    with pytest.raises(ValueError, match="baseline must have"):
        integrated_gradients(model, images, target=1, baseline=torch.zeros(2, 1, 5, 5))
    with pytest.raises(ValueError, match="target must be"):
        integrated_gradients(model, images, target=torch.tensor([0, 1, 1]))


def test_grad_cam_shape_non_negative_and_restores_mode():
    model = Tiny().train()
    cam = grad_cam(model, torch.rand(2, 1, 8, 8), target=1)
    assert cam.shape == (2, 1, 8, 8) and torch.all(cam >= 0)
    assert model.training


def test_default_cam_layer():
    assert default_cam_layer(Tiny()) == "features.0"
    model = nn.Module()
    model.head = nn.Module()
    model.head.conv_head = nn.Conv2d(2, 2, 1)
    model.late = nn.Conv2d(2, 2, 1)
    assert default_cam_layer(model) == "late"  # nothing declared: the last Conv2d
    model.capabilities = ModelCapabilities(cam_layer="head.conv_head")
    assert default_cam_layer(model) == "head.conv_head"  # what the model declares
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        default_cam_layer(Linear())


@pytest.fixture(scope="module")
def preset():
    return get_preset("model_ii")


def oracle(sample, preset, seed=0):
    """A predict_kappa that knows the truth: the true convergence of whichever rendering it is given.

    kappa_localisation renders the images with substructure and their smooth twins with the same seed; the oracle
    renders them too and answers by comparing the images, so it does not depend on the order of the calls.
    """
    smooth = sample.without_substructure()
    x_sub = render_images(sample, preset, torch.Generator().manual_seed(seed))
    kappa_sub, kappa_smooth = true_convergence(sample, preset), true_convergence(smooth, preset)
    return lambda images: kappa_sub if torch.equal(images, x_sub) else kappa_smooth


def test_kappa_localisation_oracle_beats_control(preset, tmp_path):
    sample = sample_lenses(preset, 1, 4, torch.Generator().manual_seed(0))
    result = kappa_localisation(oracle(sample, preset), sample, preset)
    assert result["r"].shape == (4,) and result["predicted"].shape == (4, 1, 64, 64)
    assert result["mean_r"] > 0.9
    assert result["control_mean_r"] < 0.5
    path = plot_kappa_localisation(result, tmp_path / "kappa.png", n=2)
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_kappa_localisation_rejects_lenses_without_substructure(preset):
    sample = sample_lenses(preset, 0, 3, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="no substructure"):
        kappa_localisation(oracle(sample, preset), sample, preset)


def test_predicted_kappa(preset):
    model = Tiny().train()
    kappa = predicted_kappa(model, batch_size=2)(torch.rand(3, 1, 8, 8))
    assert kappa.shape == (3, 1, 8, 8) and not kappa.requires_grad
    assert model.training
    with pytest.raises(ValueError, match="predicts no kappa map"):
        predicted_kappa(Tiny(with_kappa=False))(torch.rand(1, 1, 8, 8))


def test_plot_attributions(tmp_path):
    images = np.random.default_rng(0).random((2, 1, 8, 8))
    attributions = {"IG": images - 0.5, "Grad-CAM": torch.rand(2, 1, 8, 8)}
    path = plot_attributions(images, attributions, tmp_path / "attr.png", titles=["a", "b"])
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="must have shape"):
        plot_attributions(images, {"IG": images[:1]}, tmp_path / "bad.png")
