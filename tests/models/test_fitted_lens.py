"""The fitted lens model: the fit refines the estimate, the residual reaches the head, the gradients go where the
module doc says, every map and the fitted lens move with the image (all 8 D4 elements), export is exact."""

import pytest
import torch

from d4lenspinn.config import LossConfig
from d4lenspinn.data import Batch, Truth
from d4lenspinn.data.presets import get_preset
from d4lenspinn.data.simulator import render_images, sample_lenses, true_macro_lens
from d4lenspinn.losses import Objective
from d4lenspinn.models import create_model
from d4lenspinn.models.fitted_lens import DEFAULT_PSF_PIXELS, DEFAULT_STARTS
from d4lenspinn.physics import StartGrid, centred_lens, fit_smooth_lens
from d4lenspinn.symmetry import D4_ELEMENTS, transform_macro, transform_scalar

PRESET = get_preset("model_ii_broad", clumpy_fraction=0.0, psf_scale=(1.0, 1.0), noiseless_fraction=0.0)
SMALL = dict(widths=(1, 2), macro_widths=(1, 2), fit_steps=3, psf_fwhm=PRESET.psf_fwhm)


def _relative(a, b):
    return ((a - b).norm() / b.norm()).item()


def _lenses(label=1, count=4, seed=0):
    params = sample_lenses(PRESET, label, count, torch.Generator().manual_seed(seed))
    return render_images(params, PRESET, torch.Generator().manual_seed(seed + 1)), params


def _model(**kwargs):
    torch.manual_seed(0)
    model = create_model("d4lenspinn_fit", image_size=64, pixel_scale=PRESET.pixel_scale, **{**SMALL, **kwargs})
    with torch.no_grad():  # zero-initialised layers (delta_kappa, estimator read-out) get values: nothing trivial
        for parameter in model.parameters():
            if not parameter.any():
                parameter.normal_(0, 0.5)
    return model.eval()


def test_the_maps_are_the_fit_of_the_estimate_and_the_head_sees_its_residual():
    images, _ = _lenses()
    model = _model()
    with torch.no_grad():
        maps = model.forward_features(images)
        estimate = model.macro_estimator(maps.features)
        fit = fit_smooth_lens(
            images, estimate, model.grid, PRESET.psf_fwhm, steps=3, gradients=False, starts=DEFAULT_STARTS
        )
        stacked = model.head_channels(maps)
    torch.testing.assert_close(maps.macro_estimate.theta_e, estimate.theta_e)
    torch.testing.assert_close(maps.macro.theta_e, fit.macro.theta_e)
    torch.testing.assert_close(maps.normalised_residual, fit.normalised_residual)
    assert maps.reduced_chi2.shape == maps.noise_sigma.shape == maps.fit_failed.shape == (4,)
    assert model.head_channel_names[:3] == ("image", "asinh(residual / sigma)", "delta_kappa")
    assert stacked.shape == (4, 7, 64, 64)
    # eval-mode standardisation is the running statistics' affine map (identity at initialisation)
    torch.testing.assert_close(stacked[:, 1:2], torch.asinh(fit.normalised_residual) / (1 + 1e-5) ** 0.5)


@pytest.mark.parametrize("n", [64, 150])
def test_every_map_the_fitted_lens_and_the_logits_move_with_the_image(n):
    preset = get_preset("model_ii", n_pixels=n, pixel_scale=6.46 / n)
    params = sample_lenses(preset, 2, 2, torch.Generator().manual_seed(3))
    images = render_images(params, preset, torch.Generator().manual_seed(4))
    torch.manual_seed(0)
    model = create_model("d4lenspinn_fit", image_size=n, pixel_scale=preset.pixel_scale, **SMALL)
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.normal_(0, 0.5)
        model.eval()
        out = model(images)
        assert out.maps.delta_kappa.std() > 0 and out.logits.std() > 0
        for g in D4_ELEMENTS:
            moved = model(transform_scalar(images, g))
            assert _relative(moved.logits, out.logits) < 1e-4
            want = out.maps.transform(g)
            for name in ("delta_kappa", "kappa", "relensed", "macro_relensed"):
                assert _relative(getattr(moved.maps, name), getattr(want, name)) < 1e-4, (name, str(g))
            # (I - R_macro) / sigma is a difference of nearly equal images: its rounding is R_macro's, so it is held
            # to the same 1e-4 against the image it comes from, in the same units (2 threads give 1.2e-4 against
            # the residual's own norm at 150 px)
            error = (moved.maps.normalised_residual - want.normalised_residual).norm()
            assert error / (images / out.maps.noise_sigma.view(-1, 1, 1, 1)).norm() < 1e-4, str(g)
            for lens in ("macro", "macro_estimate"):
                for got, expected in zip(
                    getattr(moved.maps, lens), transform_macro(getattr(out.maps, lens), g), strict=True
                ):
                    assert (got - expected).abs().max() < 1e-4 * 3.3, (lens, str(g))  # arcsec on a 6.5" field
            # chi^2 is quadratic in that residual, so twice its relative rounding (1.4e-4 measured, 2 threads, 150 px)
            torch.testing.assert_close(moved.maps.reduced_chi2, out.maps.reduced_chi2, rtol=3e-4, atol=0)
            assert torch.equal(moved.maps.fit_failed, out.maps.fit_failed)


def test_a_fitted_psf_width_is_the_fits_and_keeps_the_model_invariant():
    """With ``fit_psf`` the maps carry the fit's own width per image (the fixed model carries its one width), and the
    logits and that width stay invariant for all 8 elements."""
    images, _ = _lenses(label=2)
    model = _model(fit_psf=True)
    with torch.no_grad():
        out = model(images)
        estimate = model.macro_estimator(out.maps.features)
        fit = fit_smooth_lens(
            images, estimate, model.grid, PRESET.psf_fwhm, steps=3, gradients=False, starts=DEFAULT_STARTS, fit_psf=True
        )
        torch.testing.assert_close(out.maps.psf_fwhm, fit.psf_fwhm)
        assert (out.maps.psf_fwhm != PRESET.psf_fwhm).all()
        fixed = _model().forward_features(images)
        assert (fixed.psf_fwhm == PRESET.psf_fwhm).all()
        for g in D4_ELEMENTS[1:]:
            moved = model(transform_scalar(images, g))
            assert _relative(moved.logits, out.logits) < 1e-4, str(g)
            torch.testing.assert_close(moved.maps.psf_fwhm, out.maps.psf_fwhm, rtol=1e-4, atol=0, msg=str(g))


@pytest.mark.parametrize("options", [{}, {"supersampling": 2, "shot_noise": 25.0}], ids=["centres", "2x2+shot"])
def test_a_fit_from_the_prior_needs_no_estimator_and_keeps_the_model_invariant(options):
    """``lens_start="prior"``: no estimator is built, the fit starts from ``StartGrid.over_prior`` about the centred
    round lens (a D4-invariant init and candidate set), and the logits and the fitted lens move with the image; also
    with the light integrated over 2 x 2 sub-pixels and the noise weighed per pixel."""
    images, _ = _lenses(label=1)
    model = _model(lens_start="prior", prior_theta_e=(0.7, 1.5), **options)
    assert model.macro_estimator is None
    assert not any(name.startswith("macro_estimator") for name, _ in model.named_parameters())
    with torch.no_grad():
        out = model(images)
        starts = StartGrid.over_prior((0.7, 1.5), (-2.0, 0.0, 2.0))
        fit = fit_smooth_lens(
            images, centred_lens(4), model.grid, PRESET.psf_fwhm, steps=3, gradients=False, starts=starts, **options
        )
        assert out.maps.macro_estimate is None
        torch.testing.assert_close(out.maps.macro.theta_e, fit.macro.theta_e)
        torch.testing.assert_close(out.maps.normalised_residual, fit.normalised_residual)
        for g in D4_ELEMENTS[1:]:
            moved = model(transform_scalar(images, g))
            assert _relative(moved.logits, out.logits) < 1e-4, str(g)
            for got, expected in zip(moved.maps.macro, transform_macro(out.maps.macro, g), strict=True):
                assert (got - expected).abs().max() < 1e-4 * 6.5, str(g)  # arcsec on a 6.5" field
    cross_entropy = torch.nn.functional.cross_entropy(model.train()(images).logits, torch.ones(4, dtype=torch.long))
    grads = torch.autograd.grad(cross_entropy, list(model.unet.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_the_macro_loss_trains_the_estimator_and_the_classification_the_rest():
    images, params = _lenses()
    model = _model().train()
    output = model(images)
    truth = Truth(true_macro_lens(params).as_tensor().float(), torch.zeros(4, 1, 64, 64))
    batch = Batch(images, torch.ones(4, dtype=torch.long), torch.arange(4), truth)
    terms = Objective(LossConfig({"macro": 1.0}))(output, batch, epoch=0, grid=model.grid)
    estimator = list(model.macro_estimator.parameters())
    macro_grads = torch.autograd.grad(terms["macro"], estimator, retain_graph=True, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in macro_grads)
    cross_entropy = terms["cross_entropy"]
    head = torch.autograd.grad(cross_entropy, list(model.head.parameters()), retain_graph=True, allow_unused=True)
    unet = torch.autograd.grad(cross_entropy, list(model.unet.parameters()), retain_graph=True, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in head)
    assert any(g is not None and g.abs().sum() > 0 for g in unet)
    # the fit is a measurement of the image: no gradient reaches the estimator through it
    through_fit = torch.autograd.grad(cross_entropy, estimator, allow_unused=True)
    assert all(g is None or not g.any() for g in through_fit)


def test_export_gives_the_same_outputs():
    images, _ = _lenses(label=2)
    model = _model()
    with torch.no_grad():
        reference, plain = model(images), model.export()(images)
    torch.testing.assert_close(plain.logits, reference.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(plain.maps.macro.theta_e, reference.maps.macro.theta_e, rtol=1e-4, atol=1e-6)


def test_bad_settings_and_images_without_noise_give_clear_errors():
    model = create_model("d4lenspinn_fit", image_size=32, pixel_scale=0.2, widths=(1, 2), macro_widths=(1, 2))
    assert model.psf_fwhm == pytest.approx(DEFAULT_PSF_PIXELS * 0.2)
    with pytest.raises(ValueError, match="fit_steps"):
        create_model("d4lenspinn_fit", image_size=32, pixel_scale=0.2, fit_steps=-1)
    with pytest.raises(ValueError, match="symmetric about 0"):
        create_model("d4lenspinn_fit", image_size=32, pixel_scale=0.2, fit_centre_shifts=[0.0, 2.0])
    with pytest.raises(ValueError, match="psf_fwhm"):
        create_model("d4lenspinn_fit", image_size=32, pixel_scale=0.2, psf_fwhm=0.0)
    with pytest.raises(ValueError, match="fit_psf must be true or false, got 'yes'"):
        create_model("d4lenspinn_fit", image_size=32, pixel_scale=0.2, fit_psf="yes")
    with pytest.raises(ValueError, match="d4lenspinn_fit: shot_noise must be None, 'fit' or the background noise"):
        create_model("d4lenspinn_fit", image_size=32, pixel_scale=0.2, shot_noise=True)
    with pytest.raises(ValueError, match="d4lenspinn_fit: supersampling must be an integer >= 1"):
        create_model("d4lenspinn_fit", image_size=32, pixel_scale=0.2, supersampling=0)
    with pytest.raises(ValueError, match="lens_start must be one of"):
        create_model("d4lenspinn_fit", image_size=32, pixel_scale=0.2, lens_start="truth")
    with pytest.raises(ValueError, match="theta_e_range"):
        create_model("d4lenspinn_fit", image_size=32, pixel_scale=0.2, lens_start="prior", prior_theta_e=(1.6, 0.6))
    with pytest.raises(ValueError, match="noise"), torch.no_grad():
        model.eval()(torch.zeros(2, 1, 32, 32))


@pytest.mark.cuda
@pytest.mark.parametrize("lens_start", ["estimate", "prior"])
def test_the_fitted_model_agrees_on_cuda(lens_start):
    images, _ = _lenses(label=2)
    model = _model(lens_start=lens_start)
    with torch.no_grad():
        reference = model(images)
        moved = model.cuda()(images.cuda())
    torch.testing.assert_close(moved.logits.cpu(), reference.logits, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(moved.maps.macro.theta_e.cpu(), reference.maps.macro.theta_e, rtol=1e-3, atol=1e-5)
