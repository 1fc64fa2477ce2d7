"""The smooth-lens image: an elliptical Sersic source seen through the macro lens (SIE + shear) and the PSF.

This is the model a lens modeller fits first (:mod:`d4lenspinn.physics.lens_fit`); what it cannot explain is the
substructure signal. The rendering is the simulator's, term for term, so with the true parameters it reproduces a
simulated no-substructure image before noise::

    source = SersicSource.from_values(amplitude=0.05, radius=0.25, n=1.0, e1=-0.1, e2=0.1, x=0.1)
    image = render_smooth_lens(macro, source, PixelGrid(64, 0.101), psf_fwhm=0.16, psf_truncation=5.0)  # (B,1,n,n)

Under the D4 grid symmetries the source's ``amplitude``, ``radius`` and ``n`` are invariant, its centre ``(x, y)``
is a point and ``(e1, e2)`` a spin-2 pair (:func:`d4lenspinn.symmetry.transform_source`), as for the lens.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .grid import PixelGrid, bin_pixels, check_supersampling
from .light import convolve_psf, gaussian_psf_kernel, sersic_ellipticity_brightness
from .macro import MacroLens, check_macro, macro_deflection
from .parameters import broadcast_fields, unpack_columns

__all__ = ["SersicSource", "check_source", "render_smooth_lens", "render_lensed_sersic", "source_plane", "sersic_at"]


class SersicSource(NamedTuple):
    """Elliptical Sersic source parameters, each a ``(B,)`` tensor (angles in arcsec)."""

    amplitude: torch.Tensor  # brightness at the half-light radius, image units per pixel
    radius: torch.Tensor  # half-light radius (product-averaged, sqrt(a b)), arcsec, > 0
    n: torch.Tensor  # Sersic index, > 0
    e1: torch.Tensor  # ellipticity, |(e1, e2)| < 1 (lenstronomy convention, as the lens)
    e2: torch.Tensor
    x: torch.Tensor  # centre in the source plane, arcsec
    y: torch.Tensor

    @classmethod
    def from_values(cls, batch: int = 1, dtype: torch.dtype = torch.float64, device=None, **values) -> SersicSource:
        """Every parameter ``values[name]`` broadcast to a ``(batch,)`` tensor; ``e1, e2, x, y`` default to 0."""
        required = {"amplitude", "radius", "n"}
        unknown = sorted(set(values) - set(cls._fields))
        if unknown or not required <= set(values):
            raise ValueError(
                f"SersicSource needs {sorted(required)} and takes {list(cls._fields)}; got {sorted(values)}"
            )
        return cls(*broadcast_fields(cls._fields, values, batch, dtype, device))

    @classmethod
    def from_tensor(cls, packed: torch.Tensor) -> SersicSource:
        """From ``(B, 7)`` columns in field order (:meth:`as_tensor`)."""
        return cls(*unpack_columns(packed, cls._fields, "source"))

    def as_tensor(self) -> torch.Tensor:
        """``(B, 7)``, columns in field order."""
        return torch.stack(tuple(self), dim=1)


def check_source(source: SersicSource, where: str = "source") -> None:
    """Raise ``ValueError`` naming the image and value when a parameter is non-finite, ``radius <= 0``, ``n <= 0``
    or ``|e| >= 1``, or when the parameters are not ``(B,)`` tensors of one batch size."""
    if not isinstance(source, SersicSource):
        raise ValueError(f"{where} must be a SersicSource, got {type(source).__name__}")
    shapes = {name: tuple(value.shape) for name, value in zip(source._fields, source, strict=True)}
    if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 1:
        raise ValueError(f"{where}: every parameter must be a (B,) tensor of one batch size, got shapes {shapes}")
    problems = [
        (name, ~torch.isfinite(value), "a finite value") for name, value in zip(source._fields, source, strict=True)
    ]
    problems += [
        ("radius", source.radius <= 0, "radius > 0 arcsec"),
        ("n", source.n <= 0, "n > 0"),
        ("|e|", source.e1 * source.e1 + source.e2 * source.e2 >= 1, "|(e1, e2)| < 1"),
    ]
    for name, bad, expected in problems:
        if bad.any():
            i = int(bad.nonzero()[0])
            value = torch.hypot(source.e1[i], source.e2[i]) if name == "|e|" else getattr(source, name)[i]
            raise ValueError(f"{where}: {name} of image {i} is {value.item():.6g}; expected {expected}")


def source_plane(macro: MacroLens, grid: PixelGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each pixel of ``grid`` lands in the source plane, ``beta = theta - alpha(theta)``: ``(B, n, n)`` each
    [arcsec], in the lens's dtype and device."""
    x, y = grid.coordinates(macro.theta_e.dtype, macro.theta_e.device)
    alpha = macro_deflection(macro, grid)
    return x - alpha[:, 0], y - alpha[:, 1]


def sersic_at(beta_x: torch.Tensor, beta_y: torch.Tensor, source: SersicSource) -> torch.Tensor:
    """The source's brightness at the source-plane points ``(B, n, n)`` each [arcsec], ``(B, 1, n, n)``."""
    m = lambda v: v.reshape(-1, 1, 1)  # noqa: E731
    s = source
    return sersic_ellipticity_brightness(
        beta_x, beta_y, m(s.amplitude), m(s.radius), m(s.n), m(s.e1), m(s.e2), m(s.x), m(s.y)
    )


def render_lensed_sersic(macro: MacroLens, source: SersicSource, grid: PixelGrid) -> torch.Tensor:
    """The source's brightness ``S(theta - alpha(theta))`` on ``grid`` before the PSF, ``(B, 1, n, n)``, in the
    parameters' dtype and device. No input checks: the fit calls it inside ``torch.func`` transforms."""
    return sersic_at(*source_plane(macro, grid), source)


def render_smooth_lens(
    macro: MacroLens,
    source: SersicSource,
    grid: PixelGrid,
    psf_fwhm: float,
    psf_truncation: float = 4.0,
    supersampling: int = 1,
) -> torch.Tensor:
    """Noiseless image ``(B, 1, n, n)`` of ``source`` lensed by ``macro`` on ``grid``, convolved with a Gaussian PSF
    of full width ``psf_fwhm`` [arcsec] (kernel radius ``round(psf_truncation * sigma)`` pixels, as the presets'
    ``psf_truncation``); the lensed light sampled at ``supersampling x supersampling`` points per pixel and averaged
    before the PSF (1: pixel centres). Differentiable in every parameter; dtype and device follow ``macro``."""
    check_macro(macro)
    check_source(source)
    check_supersampling(supersampling)
    if source.amplitude.shape != macro.theta_e.shape:
        raise ValueError(
            f"macro and source batch sizes differ: {macro.theta_e.shape[0]} vs {source.amplitude.shape[0]}"
        )
    kernel = gaussian_psf_kernel(psf_fwhm, grid.pixel_scale, psf_truncation, macro.theta_e.dtype)
    light = bin_pixels(render_lensed_sersic(macro, source, grid.supersampled(supersampling)), supersampling)
    return convolve_psf(light, kernel)
