"""D4LensPINN: exact equivariance of everything before the head, TTA invariance and fast path, export."""

import pytest
import torch

from d4lenspinn.data.presets import get_preset
from d4lenspinn.data.simulator import render_images, sample_lenses
from d4lenspinn.models import create_model
from d4lenspinn.models.preprocessing import Preprocessing
from d4lenspinn.models.unet import UNet, level_sizes
from d4lenspinn.symmetry import D4_ELEMENTS, transform_scalar, transform_vector
from d4lenspinn.tta import predict, predict_naive_tta


def _relative(a, b):
    return ((a - b).norm() / b.norm()).item()


def _lensed_images(n, count=2, seed=0):
    preset = get_preset("model_ii", n_pixels=n, pixel_scale=6.46 / n)
    return render_images(
        sample_lenses(preset, 1, count, torch.Generator().manual_seed(seed)),
        preset,
        torch.Generator().manual_seed(seed + 1),
    )


@pytest.fixture(scope="module")
def model64():
    torch.manual_seed(0)
    model = create_model("d4lenspinn", image_size=64, pixel_scale=0.101)
    # the classifier starts at zero (uniform predictions); give it weights so the head's outputs depend on the input
    torch.nn.init.normal_(model.head.get_classifier().weight, std=0.5)
    return model.eval()


@pytest.mark.parametrize("n", [64, 150])
def test_preprocessing_is_invariant(n):
    images = _lensed_images(n)
    features = Preprocessing()(images)
    assert features.shape == (2, 5, n, n)
    for g in D4_ELEMENTS:
        assert _relative(Preprocessing()(transform_scalar(images, g)), transform_scalar(features, g)) < 1e-6


@pytest.mark.parametrize("n", [64, 150, 65])
def test_unet_is_equivariant_for_every_element(n):
    torch.manual_seed(1)
    unet = UNet(5, n, widths=(2, 4, 8, 16)).eval()
    features = Preprocessing()(_lensed_images(n, count=1))
    with torch.no_grad():
        kappa = unet(features)
        assert kappa.shape == (1, 1, n, n) and kappa.min() >= 0
        for g in D4_ELEMENTS:
            assert _relative(unet(transform_scalar(features, g)), transform_scalar(kappa, g)) < 1e-5


@pytest.mark.parametrize("n", [64, 150])
def test_a_unet_on_block_averages_is_equivariant_and_constant_over_each_block(n):
    torch.manual_seed(1)
    unet = UNet(5, n, widths=(2, 4, 8, 16), input_pool=2).eval()
    assert unet.sizes[0] == n // 2
    features = Preprocessing()(_lensed_images(n, count=1))
    with torch.no_grad():
        kappa = unet(features)
        assert kappa.shape == (1, 1, n, n)
        blocks = kappa.unfold(2, 2, 2).unfold(3, 2, 2)  # (1, 1, n/2, n/2, 2, 2)
        assert torch.equal(blocks, blocks[..., :1, :1].expand_as(blocks))
        for g in D4_ELEMENTS:
            assert _relative(unet(transform_scalar(features, g)), transform_scalar(kappa, g)) < 1e-5
        torch.testing.assert_close(unet.export()(features), kappa, rtol=1e-5, atol=1e-6)


def test_sizes_keep_every_resampling_exact():
    assert level_sizes(150, 3) == [150, 75, 38, 19]
    assert level_sizes(64, 3) == [64, 32, 16, 8]
    with pytest.raises(ValueError, match="too small"):
        level_sizes(12, 4)


def test_plain_unet_is_not_equivariant_and_has_a_similar_size():
    torch.manual_seed(1)
    d4, plain = UNet(5, 64, equivariant=True).eval(), UNet(5, 64, equivariant=False).eval()
    n_d4, n_plain = (sum(p.numel() for p in m.parameters()) for m in (d4, plain))
    assert 0.8 < n_plain / n_d4 < 1.25
    features = Preprocessing()(_lensed_images(64, count=1))
    g = D4_ELEMENTS[1]
    with torch.no_grad():
        assert _relative(plain(transform_scalar(features, g)), transform_scalar(plain(features), g)) > 1e-3


def test_kappa_alpha_and_source_outputs_are_equivariant(model64):
    images = _lensed_images(64)
    with torch.no_grad():
        out = model64(images).maps
        for g in D4_ELEMENTS:
            moved = model64(transform_scalar(images, g)).maps
            assert _relative(moved.kappa, transform_scalar(out.kappa, g)) < 1e-5
            assert _relative(moved.alpha, transform_vector(out.alpha, g)) < 1e-5
            assert _relative(moved.source, transform_scalar(out.source, g)) < 1e-5
            assert _relative(moved.relensed, transform_scalar(out.relensed, g)) < 1e-5


def test_tta_is_invariant_and_the_fast_path_equals_eight_passes(model64):
    images = _lensed_images(64, count=3)
    fast = predict(model64, images, tta=True)
    assert fast.shape == (3, 3) and torch.allclose(fast.sum(dim=1), torch.ones(3))
    torch.testing.assert_close(fast, predict_naive_tta(model64, images), rtol=0, atol=1e-5)
    for g in D4_ELEMENTS:
        torch.testing.assert_close(predict(model64, transform_scalar(images, g), tta=True), fast, rtol=0, atol=1e-5)
    single = predict(model64, images)
    assert (single - fast).abs().max() > 0  # the head alone is not invariant: TTA does something


def test_export_gives_the_same_outputs_with_plain_torch(model64):
    from escnn import nn as enn

    images = _lensed_images(64)
    exported = model64.export()
    assert not any(isinstance(m, enn.EquivariantModule) for m in exported.modules())
    with torch.no_grad():
        reference, plain = model64(images), exported(images)
    torch.testing.assert_close(plain.logits, reference.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain.maps.kappa, reference.maps.kappa, rtol=1e-5, atol=1e-6)
    assert exported.head is not model64.head  # an independent copy


def test_wrong_inputs_give_clear_errors(model64):
    with pytest.raises(ValueError, match=r"built for 64x64 images \(B, 1, 64, 64\)"):
        model64(torch.rand(1, 1, 150, 150))
    with pytest.raises(ValueError, match="input channel"):
        model64(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="in_chans=1"):
        create_model("d4lenspinn", image_size=64, pixel_scale=0.101, in_chans=3)
    with pytest.raises(ValueError, match="unknown model 'resnet19'.*d4lenspinn"):
        create_model("resnet19")


def test_without_preprocessing_the_bare_image_feeds_unet_and_head():
    torch.manual_seed(0)
    model = create_model("d4lenspinn", image_size=32, pixel_scale=7.5 / 32, preprocessing=False).eval()
    images = _lensed_images(32)
    with torch.no_grad():
        out = model.forward_features(images)
        assert out.features.shape == (2, 1, 32, 32) and torch.equal(out.features, images)
        assert model.head_channels(out).shape == (2, 4, 32, 32)
        assert model.head_channel_names == ("image", "log(1 + kappa)", "source", "I - R")
        moved = model.forward_features(transform_scalar(images, D4_ELEMENTS[5]))
    assert _relative(moved.kappa, transform_scalar(out.kappa, D4_ELEMENTS[5])) < 1e-5
    assert torch.allclose(predict(model, images, tta=True), predict_naive_tta(model, images), atol=1e-6)


def _with_macro_lens(n: int, shared_trunk: bool = True, trunk_pool: int = 1) -> torch.nn.Module:
    """D4LensPINN with a macro lens, its zero-initialised U-Net heads given weights (then eval: escnn caches
    filters)."""
    torch.manual_seed(0)
    own = {} if shared_trunk else {"macro_widths": (1, 2)}
    model = create_model(
        "d4lenspinn",
        image_size=n,
        pixel_scale=6.46 / n,
        macro_lens=True,
        widths=(1, 2),
        shared_trunk=shared_trunk,
        trunk_pool=trunk_pool,
        **own,
    )
    unets = [model.unet] if shared_trunk else [model.unet, model.macro_estimator.unet]
    with torch.no_grad():
        for unet in unets:
            for parameter in unet.blocks["head"].parameters():
                parameter.normal_(0, 0.5)
        torch.nn.init.normal_(model.head.get_classifier().weight, std=0.5)
    return model.eval()


def test_with_a_macro_lens_training_starts_from_the_smooth_lens():
    model = create_model("d4lenspinn", image_size=32, pixel_scale=0.2, macro_lens=True, widths=(1, 2))
    out = model(_lensed_images(32)).maps
    assert torch.all(out.delta_kappa == 0) and out.macro.theta_e.shape == (2,)
    assert (
        model.capabilities.macro_lens
        and not create_model("d4lenspinn", image_size=32, pixel_scale=0.2).capabilities.macro_lens
    )


@pytest.mark.parametrize(
    ("n", "shared_trunk", "trunk_pool"), [(64, True, 1), (150, True, 1), (64, False, 1), (64, True, 2), (150, True, 2)]
)
def test_with_a_macro_lens_every_map_and_parameter_moves_with_the_image(n, shared_trunk, trunk_pool):
    from d4lenspinn.symmetry import transform_macro

    model = _with_macro_lens(n, shared_trunk, trunk_pool)
    images = _lensed_images(n)
    with torch.no_grad():
        out = model.forward_features(images)
        assert out.delta_kappa.std() > 0  # not trivially symmetric
        for g in D4_ELEMENTS:
            moved = model.forward_features(transform_scalar(images, g))
            assert _relative(moved.delta_kappa, transform_scalar(out.delta_kappa, g)) < 1e-5
            assert _relative(moved.kappa, transform_scalar(out.kappa, g)) < 1e-5
            assert _relative(moved.alpha, transform_vector(out.alpha, g)) < 1e-5
            assert _relative(moved.relensed, transform_scalar(out.relensed, g)) < 1e-5
            assert _relative(moved.macro_relensed, transform_scalar(out.macro_relensed, g)) < 1e-5
            assert _relative(moved.macro_spread, transform_scalar(out.macro_spread, g)) < 1e-5
            for got, want in zip(moved.macro, transform_macro(out.macro, g), strict=True):
                assert (got - want).abs().max() < 1e-5 * 3.3  # arcsec on a 6.5" field; e, gamma ~ 0.1
        fast = predict(model, images, tta=True)
        torch.testing.assert_close(fast, predict_naive_tta(model, images), rtol=0, atol=1e-5)
        for g in D4_ELEMENTS[1:]:
            torch.testing.assert_close(predict(model, transform_scalar(images, g), tta=True), fast, rtol=0, atol=1e-5)


def test_the_shared_trunk_computes_delta_kappa_and_the_lens_with_one_unet():
    kwargs = dict(image_size=32, pixel_scale=0.2, macro_lens=True, widths=(1, 2))
    shared = _with_macro_lens(32)
    own = create_model("d4lenspinn", shared_trunk=False, macro_widths=(1, 2), **kwargs)
    assert not hasattr(shared, "macro_estimator") and shared.unet.blocks["head"].out_type.size == 5
    assert own.unet.blocks["head"].out_type.size == 1 and own.macro_estimator.unet.blocks["head"].out_type.size == 4
    images = _lensed_images(32)
    with torch.no_grad():
        maps, trunk = shared.forward_features(images), shared.unet(shared.preprocessing(images))
    torch.testing.assert_close(maps.delta_kappa, trunk[:, :1])
    torch.testing.assert_close(maps.macro.theta_e, shared.macro_readout(trunk[:, 1:], maps.features).theta_e)
    with pytest.raises(ValueError, match="shared_trunk=False"):
        create_model("d4lenspinn", macro_widths=(1, 2), **kwargs)


def test_with_a_macro_lens_export_gives_the_same_outputs():
    model = _with_macro_lens(64)
    images = _lensed_images(64)
    with torch.no_grad():
        reference, plain = model(images), model.export()(images)
    torch.testing.assert_close(plain.logits, reference.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain.maps.delta_kappa, reference.maps.delta_kappa, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(plain.maps.macro.theta_e, reference.maps.macro.theta_e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [64, 150])
def test_the_invariant_head_makes_the_whole_model_invariant_and_skips_tta(n, monkeypatch):
    model = create_model(
        "d4lenspinn",
        image_size=n,
        pixel_scale=6.46 / n,
        macro_lens=True,
        head="d4_cnn",
        widths=(1, 2),
    )
    with torch.no_grad():
        for parameter in model.unet.blocks["head"].parameters():
            parameter.normal_(0, 0.5)
    model.eval()
    images = _lensed_images(n)
    assert model.capabilities.invariant and model.capabilities.macro_lens
    with torch.no_grad():
        reference = model(images).logits
        for g in D4_ELEMENTS[1:]:
            torch.testing.assert_close(model(transform_scalar(images, g)).logits, reference, rtol=0, atol=1e-5)
        torch.testing.assert_close(model.export()(images).logits, reference, rtol=1e-5, atol=1e-6)
        calls = []
        real = model.forward_features
        monkeypatch.setattr(model, "forward_features", lambda x: calls.append(1) or real(x))
        torch.testing.assert_close(predict(model, images, tta=True), predict(model, images, tta=False))
    assert len(calls) == 2  # one pass each: TTA of an invariant model is skipped


def test_the_head_sees_the_macro_residuals_standardised_or_not_at_all():
    kwargs = dict(image_size=32, pixel_scale=0.2, macro_lens=True, widths=(1, 2))
    with_residuals = create_model("d4lenspinn", **kwargs).eval()
    without = create_model("d4lenspinn", residual_channels=False, **kwargs).eval()
    images = _lensed_images(32)
    with torch.no_grad():
        maps = with_residuals.forward_features(images)
        stacked = with_residuals.head_channels(maps)
        assert stacked.shape == (2, 9, 32, 32)
        assert without.head_channels(without.forward_features(images)).shape == (2, 6, 32, 32)
        assert without.forward_features(images).macro_relensed is None
        assert with_residuals.head_channel_names[:5] == ("image", "delta_kappa", "I - R_macro", "spread", "I - R")
        # eval-mode standardisation is the running statistics' affine map (identity at initialisation)
        image = maps.features[:, :1]
        torch.testing.assert_close(stacked[:, 2:3], (image - maps.macro_relensed) / (1 + 1e-5) ** 0.5)
    with_residuals.train()
    stacked = with_residuals.head_channels(with_residuals.forward_features(images))
    assert stacked[:, 0].mean().abs() < 1e-5 and (stacked[:, 0].var(unbiased=False) - 1).abs() < 1e-3


def test_the_registered_lens_models_have_the_lens_model_settings():
    kwargs = dict(image_size=32, pixel_scale=0.2, widths=(1, 2))
    lens = create_model("d4lenspinn_lens", **kwargs).eval()
    plain = create_model("vanilla_lenspinn_lens", **kwargs)
    assert lens.capabilities.invariant and lens.capabilities.macro_lens and not lens.residual_channels
    assert plain.capabilities.macro_lens and not plain.capabilities.equivariant_maps
    with torch.no_grad():
        assert lens.head_channels(lens.forward_features(_lensed_images(32))).shape == (2, 6, 32, 32)
    assert create_model("d4lenspinn_lens", residual_channels=True, **kwargs).residual_channels  # settings override
    assert (lens.name, plain.name) == ("d4lenspinn_lens", "vanilla_lenspinn_lens")


@pytest.mark.cuda
def test_the_lens_model_trains_under_bfloat16_autocast_and_its_export_agrees_on_cuda():
    model = _with_macro_lens(64).cuda().train()
    images = _lensed_images(64, count=4).float().cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(images)
    loss = out.logits.float().logsumexp(dim=1).mean() + out.maps.macro.theta_e.float().mean()
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        reference, plain = model(images), model.export()(images)
    torch.testing.assert_close(plain.logits, reference.logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [64, 150])
def test_the_pooled_invariant_head_keeps_the_model_invariant(n):
    torch.manual_seed(0)
    model = create_model("d4lenspinn_lens", image_size=n, pixel_scale=6.46 / n, widths=(1, 2), head_pool=2)
    with torch.no_grad():
        for parameter in model.unet.blocks["head"].parameters():
            parameter.normal_(0, 0.5)
    model.eval()
    assert model.head.network.image_size == n // 2
    images = _lensed_images(n)
    with torch.no_grad():
        reference = model(images).logits
        for g in D4_ELEMENTS[1:]:
            torch.testing.assert_close(model(transform_scalar(images, g)).logits, reference, rtol=0, atol=1e-5)
        torch.testing.assert_close(model.export()(images).logits, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"head_pool": 3}, "must divide the image side 64"),
        ({"head_pool": 0}, "whole number >= 1"),
        ({"head_pool": 2, "head": "tf_efficientnetv2_b0"}, "applies to the invariant head"),
        ({"trunk_pool": 3}, "must divide the image side 64"),
        ({"trunk_pool": 1.5}, "whole number >= 1"),
        ({"trunk_pool": 2, "shared_trunk": False}, "applies to the shared trunk"),
    ],
)
def test_a_pool_that_would_break_the_symmetry_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model("d4lenspinn_lens", image_size=64, pixel_scale=0.101, widths=(1, 2), **kwargs)
