"""Registry: one smoke test over every registered model, unknown and duplicate names, and the ``models`` command."""

from __future__ import annotations

import pytest
import torch

import d4lenspinn.models  # noqa: F401  (importing registers every model)
from d4lenspinn.cli import main
from d4lenspinn.models import (
    D4LensPINN,
    KappaMaps,
    LensMaps,
    ModelOutput,
    capabilities_of,
    create_model,
    list_models,
    register_model,
)
from d4lenspinn.symmetry import D4_ELEMENTS, transform_scalar
from d4lenspinn.tta import predict

SIZE = 32  # every registered model accepts 32 x 32 (U-Net 32 -> 16 -> 8 -> 4, ViT 4 px patches)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Run on one intra-op thread: batch-2 32x32 tensors gain nothing from more, and on a shared, loaded machine each
    multi-threaded op waits for a descheduled thread (measured: 12 s instead of 0.1 s for a D4LensPINN step)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list_models())
def test_every_model_gives_logits_and_a_finite_gradient_on_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, image_size=SIZE, pixel_scale=7.5 / SIZE).train()
    out = model(torch.rand(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0)))
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (2, 3) and not out.logits.isnan().any()
    loss = out.logits.sum() + (out.maps.kappa.mean() if isinstance(out.maps, KappaMaps) else 0)
    estimate = getattr(out.maps, "macro_estimate", None)  # a fitted lens is a measurement: loss.macro trains this
    loss = loss + (0 if estimate is None else estimate.theta_e.sum())
    loss.backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert params, f"{name} has no trainable parameters"
    missing = [n for n, p in params if p.grad is None]
    assert not missing, f"{name}: no gradient reaches {len(missing)} parameters: {missing}"
    not_finite = [n for n, p in params if not torch.isfinite(p.grad).all()]
    assert not not_finite, f"{name}: non-finite gradient on {not_finite}"
    _assert_declared_capabilities_hold(name, model, out)


def _assert_declared_capabilities_hold(name: str, model: torch.nn.Module, out: ModelOutput) -> None:
    """What a model declares is what it does: the trainer, the TTA and the interp tools rely on it."""
    caps = capabilities_of(model)
    assert caps.physics_maps == hasattr(out.maps, "alpha"), name
    if caps.physics_maps:
        assert model.grid.n == SIZE, name
    assert caps.kappa_map == isinstance(out.maps, KappaMaps), name
    assert caps.macro_lens == isinstance(out.maps, LensMaps), name
    if caps.equivariant_maps:
        assert isinstance(model, D4LensPINN), name
        assert len(model.head_channel_names) == model.head_channels(out.maps).shape[1], name
    if caps.cam_layer is not None:
        assert isinstance(dict(model.named_modules())[caps.cam_layer], torch.nn.Conv2d | torch.nn.BatchNorm2d), name


def test_tta_of_an_invariant_model_is_one_plain_pass() -> None:
    model = create_model("d4_cnn", image_size=SIZE, widths=(1, 2)).eval()
    assert capabilities_of(model).invariant
    images = torch.rand(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    calls = []
    handle = model.register_forward_hook(lambda module, args, output: calls.append(1))
    try:
        averaged = predict(model, images, tta=True)
    finally:
        handle.remove()
    assert len(calls) == 1
    torch.testing.assert_close(averaged, predict(model, images))
    for g in D4_ELEMENTS:  # what the skipped passes would have given
        torch.testing.assert_close(predict(model, transform_scalar(images, g)), averaged, rtol=0, atol=1e-5)


def test_unknown_name_raises_listing_the_registered_models() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet19'") as error:
        create_model("resnet19", image_size=SIZE)
    assert all(name in str(error.value) for name in list_models())


def test_registering_a_taken_name_raises_and_keeps_the_original() -> None:
    original = list_models()
    with pytest.raises(ValueError, match="'resnet18' is already registered"):
        register_model("resnet18")(lambda image_size, in_chans=1, num_classes=3: torch.nn.Identity())
    assert list_models() == original
    assert not isinstance(create_model("resnet18", image_size=SIZE), torch.nn.Identity)


def test_models_command_lists_every_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--image-size", str(SIZE)]) == 0
    printed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert printed == list_models()
