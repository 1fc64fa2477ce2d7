"""Every registered model's declared symmetries, checked numerically at 64 px for all 8 elements of D4.

``capabilities.invariant``: ``logits(g.x) == logits(x)``; ``capabilities.equivariant_maps``:
``forward_features(g.x) == forward_features(x).transform(g)`` (scalar maps move their pixels, ``alpha`` is a vector
field, the macro lens transforms by :func:`~d4lenspinn.symmetry.transform_macro`). Nothing is claimed, so nothing is
checked, for the other models. Relative errors at most 1e-4 in float32, as escnn checks its modules, on simulated
lenses: a model that fits the lens (``d4lenspinn_fit``) is D4-equivariant step by step, but on an image that is no
lens (uniform noise) the fit wanders to ill-conditioned lenses (theta_E beyond the field, |e| at its bound) where
float32 round-off grows to ~5e-3 in the source map.
"""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch

import d4lenspinn.models  # noqa: F401  (importing registers every model)
from d4lenspinn.data.presets import get_preset
from d4lenspinn.data.simulator import render_images, sample_lenses
from d4lenspinn.models import capabilities_of, create_model, list_models
from d4lenspinn.physics import MacroLens
from d4lenspinn.symmetry import D4_ELEMENTS, transform_scalar

SIZE = 64
TOLERANCE = 1e-4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).norm() / want.norm().clamp_min(1e-12)).item()


def _model(name: str) -> torch.nn.Module:
    """The registered model, its zero-initialised parameters (classifiers, the delta_kappa layer) given random
    values so that no output is trivially symmetric; eval mode."""
    torch.manual_seed(0)
    model = create_model(name, image_size=SIZE, pixel_scale=7.5 / SIZE)
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.normal_(0, 0.5)
    return model.eval()


def _lenses() -> torch.Tensor:
    """A subhalo and a vortex lens, Model II at this test's pixel scale, ``(2, 1, SIZE, SIZE)``."""
    preset = get_preset("model_ii", pixel_scale=7.5 / SIZE)
    lenses = [sample_lenses(preset, label, 1, torch.Generator().manual_seed(label)) for label in (1, 2)]
    return torch.cat([render_images(params, preset, torch.Generator().manual_seed(9)) for params in lenses])


def _max_error(maps, moved) -> dict[str, float]:
    """Relative error per field of ``moved`` against ``maps`` (macro lenses: per parameter; flags: 0 or 1)."""
    errors = {}
    for field in fields(maps):
        want, got = getattr(maps, field.name), getattr(moved, field.name)
        if isinstance(want, MacroLens):
            errors |= {f"{field.name}.{k}": _relative(getattr(got, k), getattr(want, k)) for k in want._fields}
        elif isinstance(want, torch.Tensor) and want.dtype == torch.bool:  # flags: equal or not
            errors[field.name] = float(not torch.equal(got, want))
        elif want is not None:
            errors[field.name] = _relative(got, want)
    return errors


@pytest.mark.parametrize("name", list_models())
def test_declared_symmetries_hold_for_every_element(name: str) -> None:
    model = _model(name)
    caps = capabilities_of(model)
    if not (caps.invariant or caps.equivariant_maps):
        pytest.skip(f"{name} declares no symmetry")
    images = _lenses()
    with torch.no_grad():
        out = model(images)
        assert out.logits.std() > 0, name
        for g in D4_ELEMENTS:
            moved = model(transform_scalar(images, g))
            if caps.invariant:
                assert _relative(moved.logits, out.logits) <= TOLERANCE, (name, str(g))
            if caps.equivariant_maps:
                errors = _max_error(out.maps.transform(g), moved.maps)
                assert max(errors.values()) <= TOLERANCE, (name, str(g), errors)
