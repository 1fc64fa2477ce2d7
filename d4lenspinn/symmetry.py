"""The dihedral group D4 acting exactly on the pixel grid.

Every other module calls this one to rotate or reflect images, convergence maps and vector fields, so that there is
a single definition of the group action.

An element ``g = D4Element(rotations=k, flip=f)`` acts on an image by first mirroring it left-right (``x -> -x``)
when ``f`` is true, then applying ``torch.rot90`` ``k`` times to the last two axes. On a pixel grid whose centres
are symmetric about the origin (see :class:`d4lenspinn.physics.PixelGrid`) this is an exact point map
``r -> R_g r`` of the plane, with ``x`` along columns and ``y`` along rows; :attr:`D4Element.matrix` is ``R_g``.

* A scalar field transforms as ``(g.f)(r) = f(R_g^-1 r)``: pixels move, values do not change.
* A vector field (channel 0 = x component, channel 1 = y component) transforms as
  ``(g.v)(r) = R_g v(R_g^-1 r)``: pixels move and the two components are rotated/reflected.
* A point (a lens centre) moves as ``c -> R_g c``; a spin-2 pair ``(a, b)`` (ellipticity, shear), the traceless
  symmetric tensor ``[[a, b], [b, -a]]``, as ``T -> R_g T R_g^T``: ``a + ib`` gains ``exp(2i angle)`` under a
  rotation (a quarter turn negates both) and ``b -> -b`` under the x-mirror. :func:`transform_macro` applies these to
  a :class:`~d4lenspinn.physics.MacroLens` (``theta_e`` is invariant).

Example::

    from d4lenspinn.symmetry import D4_ELEMENTS, transform_scalar, transform_vector
    for g in D4_ELEMENTS:
        assert torch.allclose(engine(transform_scalar(kappa, g)), transform_vector(engine(kappa), g))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .physics.macro import MacroLens
from .physics.smooth_lens import SersicSource

__all__ = [
    "D4Element",
    "D4_ELEMENTS",
    "IDENTITY",
    "transform_scalar",
    "transform_vector",
    "transform_point",
    "transform_spin2",
    "transform_macro",
    "transform_source",
    "random_elements",
    "transform_each",
    "random_transform",
]

# torch.rot90(k=1, dims=(-2, -1)) maps the value at (x, y) to (y, -x): a clockwise quarter turn in (x, y)
# coordinates with y increasing along rows. Its matrix, acting on column vectors (x, y):
_ROT90 = ((0, 1), (-1, 0))
_FLIP_X = ((-1, 0), (0, 1))


def _matmul(a: tuple, b: tuple) -> tuple:
    return tuple(tuple(sum(a[i][k] * b[k][j] for k in range(2)) for j in range(2)) for i in range(2))


@dataclass(frozen=True)
class D4Element:
    """One of the 8 elements of D4: an optional left-right mirror followed by ``rotations`` calls of rot90."""

    rotations: int = 0
    flip: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.rotations, int) or not 0 <= self.rotations < 4:
            raise ValueError(f"D4Element.rotations must be an int in 0..3, got {self.rotations!r}")

    @property
    def matrix(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """Integer 2x2 matrix ``R_g`` acting on ``(x, y)`` column vectors."""
        m = _FLIP_X if self.flip else ((1, 0), (0, 1))
        for _ in range(self.rotations):
            m = _matmul(_ROT90, m)
        return m

    def __mul__(self, other: D4Element) -> D4Element:
        """Composition ``(self * other).x == self.(other.x)``."""
        return _ELEMENT_OF_MATRIX[_matmul(self.matrix, other.matrix)]

    def inverse(self) -> D4Element:
        """The element undoing this one."""
        inv = tuple(tuple(self.matrix[j][i] for j in range(2)) for i in range(2))  # orthogonal: R^-1 = R^T
        return _ELEMENT_OF_MATRIX[inv]

    def __str__(self) -> str:
        return f"{'flip.' if self.flip else ''}rot{90 * self.rotations}"


D4_ELEMENTS: tuple[D4Element, ...] = tuple(D4Element(k, f) for f in (False, True) for k in range(4))
IDENTITY = D4_ELEMENTS[0]
_ELEMENT_OF_MATRIX = {g.matrix: g for g in D4_ELEMENTS}


def _check_spatial(field: torch.Tensor, name: str, min_dim: int) -> None:
    if field.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimensions (..., H, W), got shape {tuple(field.shape)}")
    if field.shape[-1] != field.shape[-2]:
        raise ValueError(
            f"{name} must be square in its last two axes for D4 to act on it, got shape {tuple(field.shape)}"
        )


def transform_scalar(field: torch.Tensor, g: D4Element) -> torch.Tensor:
    """Apply ``g`` to a scalar field ``(..., H, W)`` with ``H == W``: pixels move, values are unchanged."""
    _check_spatial(field, "field", 2)
    if g.flip:
        field = torch.flip(field, dims=(-1,))
    return torch.rot90(field, g.rotations, dims=(-2, -1)) if g.rotations else field


def transform_vector(field: torch.Tensor, g: D4Element) -> torch.Tensor:
    """Apply ``g`` to a vector field ``(B, 2, H, W)`` (channel 0 = x, channel 1 = y component).

    Pixels move as for a scalar field and the components are mapped by ``R_g``.
    """
    _check_spatial(field, "field", 3)
    if field.shape[-3] != 2:
        raise ValueError(f"a vector field needs 2 channels (x, y) in axis -3, got shape {tuple(field.shape)}")
    moved = transform_scalar(field, g)
    (a, b), (c, d) = g.matrix
    vx, vy = moved.unbind(dim=-3)
    return torch.stack((a * vx + b * vy, c * vx + d * vy), dim=-3)


def transform_point(x: torch.Tensor, y: torch.Tensor, g: D4Element) -> tuple[torch.Tensor, torch.Tensor]:
    """The position ``R_g (x, y)`` of a point (any shapes that broadcast), e.g. a lens centre in arcsec."""
    (a, b), (c, d) = g.matrix
    return a * x + b * y, c * x + d * y


def transform_spin2(a: torch.Tensor, b: torch.Tensor, g: D4Element) -> tuple[torch.Tensor, torch.Tensor]:
    """A spin-2 pair ``(a, b)`` (ellipticity ``(e1, e2)``, shear ``(gamma1, gamma2)``) after ``g``:
    ``R_g [[a, b], [b, -a]] R_g^T = [[a', b'], [b', -a']]``."""
    (r11, r12), (r21, r22) = g.matrix
    # first row of R T R^T, T = [[a, b], [b, -a]]
    new_a = r11 * r11 * a + 2 * r11 * r12 * b - r12 * r12 * a
    new_b = r11 * r21 * a + (r11 * r22 + r12 * r21) * b - r12 * r22 * a
    return new_a, new_b


def transform_macro(macro: MacroLens, g: D4Element) -> MacroLens:
    """The macro lens of the transformed image: ``theta_e`` invariant, centre a point, ellipticity and shear spin-2."""
    center_x, center_y = transform_point(macro.center_x, macro.center_y, g)
    e1, e2 = transform_spin2(macro.e1, macro.e2, g)
    gamma1, gamma2 = transform_spin2(macro.gamma1, macro.gamma2, g)
    return MacroLens(macro.theta_e, e1, e2, center_x, center_y, gamma1, gamma2)


def transform_source(source: SersicSource, g: D4Element) -> SersicSource:
    """The Sersic source of the transformed image: amplitude, radius and index invariant, centre a point,
    ellipticity spin-2."""
    x, y = transform_point(source.x, source.y, g)
    e1, e2 = transform_spin2(source.e1, source.e2, g)
    return SersicSource(source.amplitude, source.radius, source.n, e1, e2, x, y)


def random_elements(count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``count`` independent uniformly random indices into :data:`D4_ELEMENTS`, int64 ``(count,)``; a CPU
    ``generator`` makes the draw reproducible."""
    return torch.randint(len(D4_ELEMENTS), (count,), generator=generator)


def transform_each(values: torch.Tensor, elements: torch.Tensor, action=None) -> torch.Tensor:
    """Apply element ``D4_ELEMENTS[elements[i]]`` to ``values[i]`` for a batch ``values (B, ...)``.

    ``action(values_subset, g)`` says how D4 acts on the values (default :func:`transform_scalar`, for images and
    scalar maps); e.g. ``lambda v, g: transform_macro(MacroLens.from_tensor(v), g).as_tensor()`` for packed
    macro-lens parameters ``(B, 7)``."""
    action = transform_scalar if action is None else action
    elements = elements.to(values.device)
    out = values.clone()
    for index, g in enumerate(D4_ELEMENTS[1:], start=1):
        selected = elements == index
        if selected.any():
            out[selected] = action(values[selected], g)
    return out


def random_transform(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply an independent uniformly random D4 element to each image of ``(B, C, H, W)`` (data augmentation).

    ``generator`` (a CPU generator) makes the choice reproducible; the transform runs on ``images``' device.
    """
    _check_spatial(images, "images", 3)
    return transform_each(images, random_elements(images.shape[0], generator))
