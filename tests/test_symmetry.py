"""D4 group actions: group structure, exactness on the pixel grid, vector / point / spin-2 rules, augmentation."""

import itertools

import pytest
import torch

from d4lenspinn.physics import PixelGrid
from d4lenspinn.symmetry import (
    D4_ELEMENTS,
    IDENTITY,
    D4Element,
    random_transform,
    transform_point,
    transform_scalar,
    transform_spin2,
    transform_vector,
)


def test_eight_distinct_elements_closed_under_composition():
    assert len(set(D4_ELEMENTS)) == 8
    assert len({g.matrix for g in D4_ELEMENTS}) == 8
    for g, h in itertools.product(D4_ELEMENTS, repeat=2):
        assert (g * h) in D4_ELEMENTS
    for g in D4_ELEMENTS:
        assert g * g.inverse() == IDENTITY
        assert g.inverse() * g == IDENTITY


@pytest.mark.parametrize("g,h", list(itertools.product(D4_ELEMENTS, repeat=2)))
def test_action_is_a_group_homomorphism(g, h):
    field = torch.randn(2, 3, 5, 5)
    assert torch.equal(transform_scalar(transform_scalar(field, h), g), transform_scalar(field, g * h))
    vec = torch.randn(2, 2, 6, 6)
    assert torch.equal(transform_vector(transform_vector(vec, h), g), transform_vector(vec, g * h))


@pytest.mark.parametrize("n", [5, 6])
@pytest.mark.parametrize("g", D4_ELEMENTS, ids=str)
def test_pixel_action_is_the_point_map_of_its_matrix(n, g):
    """(g.f)(r) = f(R^-1 r): transforming the coordinate maps as scalars gives R^-1 applied to the coordinates."""
    x, y = PixelGrid(n, 0.3).coordinates(torch.float64)
    (a, b), (c, d) = g.inverse().matrix
    assert torch.equal(transform_scalar(x, g), a * x + b * y)
    assert torch.equal(transform_scalar(y, g), c * x + d * y)


@pytest.mark.parametrize("g", D4_ELEMENTS, ids=str)
def test_position_vector_field_is_invariant(g):
    """v(r) = r satisfies R v(R^-1 r) = r for every element."""
    x, y = PixelGrid(7, 0.1).coordinates(torch.float64)
    field = torch.stack((x, y))[None]
    assert torch.equal(transform_vector(field, g), field)


@pytest.mark.parametrize("g", D4_ELEMENTS, ids=str)
def test_gradient_of_transformed_scalar_is_transformed_gradient(g):
    field = torch.randn(1, 1, 9, 9, dtype=torch.float64)

    def grad(f):
        gy, gx = torch.gradient(f[:, 0], dim=(-2, -1))
        return torch.stack((gx, gy), dim=1)

    torch.testing.assert_close(grad(transform_scalar(field, g)), transform_vector(grad(field), g), rtol=0, atol=1e-14)


def test_random_transform_applies_a_d4_element_per_image_reproducibly():
    images = torch.rand(64, 2, 6, 6, generator=torch.Generator().manual_seed(0))  # no symmetry of their own
    out = random_transform(images, torch.Generator().manual_seed(7))
    used = []
    for original, moved in zip(images, out, strict=True):
        matches = [g for g in D4_ELEMENTS if torch.equal(moved, transform_scalar(original, g))]
        assert len(matches) == 1, "the output is not one D4 transform of its input"
        used.append(matches[0])
    assert len(set(used)) == len(D4_ELEMENTS)  # 64 independent draws reach all 8 elements
    assert torch.equal(out, random_transform(images, torch.Generator().manual_seed(7)))
    assert not torch.equal(out, random_transform(images, torch.Generator().manual_seed(8)))
    assert torch.equal(images, torch.rand(64, 2, 6, 6, generator=torch.Generator().manual_seed(0)))  # not in place


def test_bad_input():
    with pytest.raises(ValueError, match="rotations"):
        D4Element(4)
    with pytest.raises(ValueError, match="square"):
        transform_scalar(torch.zeros(1, 1, 4, 5), IDENTITY)
    with pytest.raises(ValueError, match="2 channels"):
        transform_vector(torch.zeros(1, 3, 4, 4), IDENTITY)
    with pytest.raises(ValueError, match="at least 3"):
        transform_vector(torch.zeros(4, 4), IDENTITY)


def test_point_and_spin2_actions_are_group_actions():
    """Composing two elements acts as applying them one after the other, for points and spin-2 pairs alike."""
    x, y = torch.tensor(0.3, dtype=torch.float64), torch.tensor(-0.7, dtype=torch.float64)
    for g in D4_ELEMENTS:
        for h in D4_ELEMENTS:
            torch.testing.assert_close(transform_point(x, y, g * h), transform_point(*transform_point(x, y, h), g))
            torch.testing.assert_close(transform_spin2(x, y, g * h), transform_spin2(*transform_spin2(x, y, h), g))
        torch.testing.assert_close(transform_spin2(*transform_spin2(x, y, g), g.inverse()), (x, y), rtol=0, atol=1e-15)
