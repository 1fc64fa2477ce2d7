import math
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F
from escnn import gspaces
from escnn import nn as enn
from torch import nn

from d4lenspinn.symmetry import D4_ELEMENTS, transform_scalar
from interp.equivariance import equivariance_errors, format_equivariance_table, plot_equivariance
from interp.fields import escnn_element, transform_activation

GSPACE = gspaces.flipRot2dOnR2(N=4)


class Deflection(NamedTuple):
    alpha: torch.Tensor  # vector field
    density: torch.Tensor  # scalar field


class Gradient(nn.Module):
    """Centred-difference gradient (x along columns, y along rows): an exactly equivariant vector field."""

    def forward(self, x: torch.Tensor) -> Deflection:
        gx = (torch.roll(x, -1, -1) - torch.roll(x, 1, -1))[..., 1:-1, 1:-1] / 2
        gy = (torch.roll(x, -1, -2) - torch.roll(x, 1, -2))[..., 1:-1, 1:-1] / 2
        return Deflection(alpha=torch.cat((gx, gy), dim=1), density=x[..., 1:-1, 1:-1] ** 2)


class SymmetricConv(nn.Module):
    """3x3 convolution with a D4-symmetric kernel: equivariant on scalar fields."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([[[[0.1, 0.5, 0.1], [0.5, -2.0, 0.5], [0.1, 0.5, 0.1]]]]))

    def forward(self, x):
        return F.conv2d(x, self.weight, padding=1)


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.symmetric = SymmetricConv()
        self.generic = nn.Conv2d(1, 3, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.gradient = Gradient()
        in_type = enn.FieldType(GSPACE, [GSPACE.trivial_repr])
        self.steerable = enn.R2Conv(in_type, enn.FieldType(GSPACE, 2 * [GSPACE.regular_repr]), 5, padding=2)

    def forward(self, x):
        s = self.symmetric(x)
        self.generic(s)
        self.steerable(enn.GeometricTensor(s, self.steerable.in_type))
        self.gradient(s)
        return self.pool(s).flatten(1)  # (B, 1): invariant


@pytest.fixture(scope="module")
def rows():
    torch.manual_seed(0)
    return equivariance_errors(Toy(), torch.rand(2, 1, 9, 9) + 0.5)  # positive: no cancellation in the pool


def _max_error(rows, layer):
    return max(r["error"] for r in rows if r["layer"] == layer)


def test_escnn_elements_act_like_ours_on_the_pixel_grid():
    trivial = enn.FieldType(GSPACE, [GSPACE.trivial_repr])
    x = torch.randn(1, 1, 7, 7)
    for g in D4_ELEMENTS:
        moved = enn.GeometricTensor(x, trivial).transform(escnn_element(GSPACE, g)).tensor
        assert torch.equal(moved, transform_scalar(x, g)), str(g)


def test_known_equivariant_layers_are_at_float_precision(rows):
    for layer in ("symmetric", "steerable", "gradient.alpha", "gradient.density", "pool", "output"):
        assert _max_error(rows, layer) < 1e-5, layer
    identity = [r for r in rows if r["element"] == "rot0"]
    assert all(r["error"] == 0 for r in identity)


def test_known_non_equivariant_layer_is_not(rows):
    assert _max_error(rows, "generic") > 0.1


def test_vector_field_must_be_rotated_as_a_vector():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 9, 9)
    as_scalars = equivariance_errors(Toy(), x, layers=["gradient"], vector_fields=())
    assert _max_error(as_scalars, "gradient.alpha") > 0.5  # components not rotated: wrong transformation law


def test_rows_cover_all_elements_and_kinds(rows):
    layers = {r["layer"] for r in rows}
    assert layers == {"symmetric", "generic", "pool", "steerable", "gradient.alpha", "gradient.density", "output"}
    assert len(rows) == 8 * len(layers)
    kinds = {r["layer"]: r["kind"] for r in rows}
    assert kinds["steerable"] == "escnn regular x2" and kinds["gradient.alpha"] == "vector x1"
    assert kinds["pool"] == "scalar x1" and kinds["output"] == "invariant"
    table = format_equivariance_table(rows)
    assert "| `generic` | scalar x3 |" in table


def test_unsupported_outputs_are_nan_and_plot_is_written(tmp_path, rows):
    assert transform_activation(torch.zeros(2, 5, 7), D4_ELEMENTS[1]) is None
    model = nn.Sequential(nn.Flatten(2))  # (B, C, n*n) tokens: no D4 action
    tokens = equivariance_errors(model, torch.randn(1, 1, 4, 4), layers=["0"])
    assert all(math.isnan(r["error"]) and r["kind"] == "unsupported" for r in tokens if r["layer"] == "0")
    assert plot_equivariance(rows, tmp_path / "eq.png").stat().st_size > 0


def test_model_mode_is_restored_and_bad_input_rejected():
    model = Toy().train()
    equivariance_errors(model, torch.randn(1, 1, 5, 5), layers=["symmetric"])
    assert model.training
    with pytest.raises(ValueError, match="square"):
        equivariance_errors(model, torch.randn(1, 1, 5, 6))


class MacroHead(nn.Module):
    """A macro-lens estimate from the image: exactly equivariant by construction (the MacroEstimator)."""

    def __init__(self) -> None:
        super().__init__()
        from d4lenspinn.models.macro_estimator import MacroEstimator

        self.estimator = MacroEstimator(16, 0.2, widths=(1, 2))
        with torch.no_grad():
            for parameter in self.estimator.unet.blocks["head"].parameters():
                parameter.normal_(0, 0.5)

    def forward(self, x):
        return self.estimator(x)


def test_a_macro_lens_is_measured_as_one_quantity_with_its_parameter_types():
    from d4lenspinn.symmetry import transform_macro

    torch.manual_seed(0)
    rows = equivariance_errors(MacroHead(), torch.rand(2, 1, 16, 16), layers=["estimator"])
    macro_rows = [r for r in rows if r["layer"] == "estimator"]
    assert len(macro_rows) == 8 and {r["kind"] for r in macro_rows} == {"macro lens"}
    assert max(r["error"] for r in macro_rows) < 1e-5
    macro = MacroHead()(torch.rand(2, 1, 16, 16))
    for got, want in zip(
        transform_activation(macro, D4_ELEMENTS[3]), transform_macro(macro, D4_ELEMENTS[3]), strict=True
    ):
        torch.testing.assert_close(got, want)
