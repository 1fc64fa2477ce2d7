"""MacroEstimator: exact D4 equivariance with each parameter's type, physical ranges, gradients, the loss."""

import pytest
import torch

from d4lenspinn.data.presets import get_preset
from d4lenspinn.data.simulator import render_images, sample_lenses, true_macro_lens
from d4lenspinn.losses import macro_parameter_loss
from d4lenspinn.models.macro_estimator import MacroEstimator
from d4lenspinn.physics import MacroLens, check_macro
from d4lenspinn.symmetry import D4_ELEMENTS, transform_macro, transform_scalar


def _trained_looking(estimator: MacroEstimator) -> MacroEstimator:
    """Random head weights (the zero-initialised head would make every output trivially symmetric)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in estimator.unet.blocks["head"].parameters():
            parameter.normal_(0, 5.0)
    return estimator.eval()


@pytest.mark.parametrize("preset_name", ["model_ii", "model_i"])
def test_the_estimate_moves_with_the_image_as_each_parameter_type_says(preset_name):
    preset = get_preset(f"{preset_name}_broad")  # elliptical, sheared, off-centre lenses: nothing averages to 0
    lenses = sample_lenses(preset, 1, 2, torch.Generator().manual_seed(0))
    images = render_images(lenses, preset, torch.Generator().manual_seed(1)).float()
    torch.manual_seed(0)
    estimator = _trained_looking(MacroEstimator(preset.n_pixels, preset.pixel_scale, widths=(1, 2)))
    with torch.no_grad():
        macro = estimator(images)
        for g in D4_ELEMENTS:
            moved, expected = estimator(transform_scalar(images, g)), transform_macro(macro, g)
            for name, got, want in zip(MacroLens._fields, moved, expected, strict=True):
                # angles relative to the field's half-width, e and gamma (dimensionless, |.| ~ 0.1) absolute
                unit = estimator.grid.half_extent if name in ("theta_e", "center_x", "center_y") else 1.0
                assert (got - want).abs().max().item() <= 1e-5 * unit, f"{g}: {name}"
    assert macro.e1.abs().max() > 1e-2 and macro.gamma2.abs().max() > 1e-3  # not trivially zero


def test_estimates_are_physical_and_start_from_the_light_centroid_and_a_round_lens():
    estimator = MacroEstimator(32, 0.2, widths=(1, 2))
    images = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        start = estimator(images)
    light = images[:, 0] + 1e-3  # min-max images are >= 0; the floor keeps dark pixels in
    weights = light / light.sum(dim=(1, 2), keepdim=True)
    x, y = estimator.grid.coordinates(torch.float32)
    cx, cy = (weights * x).sum(dim=(1, 2)), (weights * y).sum(dim=(1, 2))
    torch.testing.assert_close(start.center_x, cx)
    torch.testing.assert_close(start.center_y, cy)
    radius = torch.hypot(x - cx[:, None, None], y - cy[:, None, None])
    torch.testing.assert_close(start.theta_e, (weights * radius).sum(dim=(1, 2)), rtol=1e-5, atol=1e-6)
    assert torch.all(start.e1 == 0) and torch.all(start.gamma1 == 0) and torch.all(start.theta_e > 0)
    wild = _trained_looking(MacroEstimator(32, 0.2, widths=(1, 2)))
    with torch.no_grad():
        for parameter in wild.unet.blocks["head"].parameters():
            parameter.mul_(1e3)  # saturate every read-out
        check_macro(wild(torch.rand(3, 1, 32, 32)))  # theta_E > 0, |e| < 1, finite


def test_every_parameter_gets_a_gradient_from_the_macro_loss():
    preset = get_preset("model_ii_broad", n_pixels=32)
    lenses = sample_lenses(preset, 0, 4, torch.Generator().manual_seed(0))
    images = render_images(lenses, preset, torch.Generator().manual_seed(1))
    estimator = MacroEstimator(32, preset.pixel_scale, widths=(1, 2))
    true = MacroLens(*(value.float() for value in true_macro_lens(lenses)))
    terms = macro_parameter_loss(estimator(images), true, preset.pixel_scale)
    assert set(terms) == {"theta_e", "center", "ellipticity", "shear", "total"}
    terms["total"].backward()
    missing = [name for name, p in estimator.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_the_loss_counts_an_error_at_its_tolerance_as_one():
    true = MacroLens.from_values(theta_e=1.0, e1=0.1, gamma1=0.05, dtype=torch.float32)
    off = true._replace(theta_e=true.theta_e * 1.02, center_x=true.center_x + 0.05)
    off = off._replace(e2=off.e2 + 0.02, gamma2=off.gamma2 + 0.01)
    terms = macro_parameter_loss(off, true, pixel_scale=0.1)
    for name in ("theta_e", "center", "ellipticity", "shear"):
        assert terms[name].item() == pytest.approx(1.0, rel=1e-5), name
