"""Batched lensing simulator for the three DeepLense classes (no substructure, CDM subhalos, axion vortex).

Reproduces DeepLenseSim's Model I/II/III recipes (see :mod:`d4lenspinn.data.presets` and docs/data.md) with the
package's own analytic lenses, in torch, a whole batch at a time, on CPU or CUDA:

    image = normalise(noise(PSF * source(theta - alpha(theta))))

with ``alpha`` = SIE + external shear + substructure (25 point-mass subhalos, or a line of mass through the lens
centre: 100 point masses, or its closed form). :class:`LensSample` holds every parameter of a batch, so that any
image, its noiseless version, a version without substructure and the true convergence can be recomputed exactly.

Example::

    preset = get_preset("model_i")
    params = sample_lenses(preset, label=1, count=8, generator=torch.Generator().manual_seed(0))
    images = render_images(params, preset, generator=torch.Generator().manual_seed(1))  # (8, 1, 150, 150)
    kappa = true_convergence(params, preset)                                             # (8, 1, 150, 150)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from ..classes import NO_SUBSTRUCTURE, SUBHALOS, VORTEX
from ..physics import MacroLens, PixelGrid
from ..physics import profiles as P
from ..physics.light import convolve_psf, gaussian_psf_kernel, sersic_brightness, sersic_total_flux
from .presets import Range, SimulationPreset

__all__ = [
    "LensSample",
    "sample_lenses",
    "LensStream",
    "deflection_field",
    "render_images",
    "true_convergence",
    "substructure_convergence",
    "true_macro_lens",
    "psf_kernel",
    "add_noise",
    "normalise_images",
    "stream_seed",
]


@dataclass
class LensSample:
    """Parameters of ``B`` simulated lenses: float64 tensors ``(B,)``, subhalo tensors ``(B, K)``.

    Angles in arcsec (positions) or radians (``*_phi``, ``vortex_angle``), masses in Msun, exposure in seconds (the
    total exposure), ``source_amplitude`` in brightness per pixel. Absent substructure has zero mass. Subhalo and
    vortex positions are relative to the lens centre.
    """

    label: torch.Tensor  # int64: 0 no substructure, 1 subhalos, 2 vortex
    theta_e: torch.Tensor
    lens_q: torch.Tensor
    lens_phi: torch.Tensor
    lens_x: torch.Tensor  # SIE centre
    lens_y: torch.Tensor
    shear_gamma1: torch.Tensor
    shear_gamma2: torch.Tensor
    source_x: torch.Tensor
    source_y: torch.Tensor
    source_radius: torch.Tensor
    source_sersic_n: torch.Tensor
    source_q: torch.Tensor
    source_phi: torch.Tensor
    source_amplitude: torch.Tensor
    exposure: torch.Tensor
    subhalo_x: torch.Tensor
    subhalo_y: torch.Tensor
    subhalo_mass: torch.Tensor
    vortex_mass: torch.Tensor
    vortex_angle: torch.Tensor
    vortex_half_length: torch.Tensor
    axion_mass: torch.Tensor  # eV (0 where there is no vortex)

    def __len__(self) -> int:
        return self.label.shape[0]

    def select(self, index) -> LensSample:
        """The lenses at ``index`` (an int slice, a list or a tensor of indices)."""
        return LensSample(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def without_substructure(self) -> LensSample:
        """The same lenses and sources with subhalos and vortices removed (label 0)."""
        return replace(
            self,
            label=torch.zeros_like(self.label),
            subhalo_mass=torch.zeros_like(self.subhalo_mass),
            vortex_mass=torch.zeros_like(self.vortex_mass),
        )

    def to_numpy(self) -> dict[str, np.ndarray]:
        """Field name -> numpy array, for the truth file."""
        return {f.name: getattr(self, f.name).cpu().numpy() for f in fields(self)}

    @classmethod
    def from_numpy(cls, arrays: dict[str, np.ndarray]) -> LensSample:
        """Inverse of :meth:`to_numpy` (extra keys are ignored; truth files written before the lens centre was a
        parameter have it at 0)."""
        count = len(np.asarray(arrays["label"]))
        defaults = {name: np.zeros(count) for name in ("lens_x", "lens_y")}
        return cls(**{f.name: torch.from_numpy(np.asarray({**defaults, **arrays}[f.name])) for f in fields(cls)})

    @classmethod
    def concatenate(cls, samples: list[LensSample]) -> LensSample:
        return cls(**{f.name: torch.cat([getattr(s, f.name) for s in samples]) for f in fields(cls)})


_Draw = Callable[[tuple[int, ...]], torch.Tensor]  # per-image shape -> uniforms in [0, 1), (count, *shape) float64


def _power_law_masses(preset: SimulationPreset, u: torch.Tensor) -> torch.Tensor:
    """Subhalo masses from dN/dm ~ m^-slope on the preset's mass range, by inverse CDF of uniforms ``u``."""
    (m_min, m_max), slope = preset.subhalo_mass, preset.subhalo_slope
    if abs(slope - 1) < 1e-12:
        return m_min * (m_max / m_min) ** u
    k = 1 - slope
    return (m_min**k + u * (m_max**k - m_min**k)) ** (1 / k)


def sample_lenses(preset: SimulationPreset, label: int, count: int, generator: torch.Generator) -> LensSample:
    """Draw ``count`` lenses of class ``label`` (0 no substructure, 1 subhalos, 2 vortex) from ``preset``.

    The lens centre is drawn last, and only when its range is not a single value, so that presets with a fixed
    centre draw exactly the stream (and make exactly the images) they did before it was a parameter. The
    generator's stream is consumed parameter by parameter (all ``count`` values of one, then the next);
    :class:`LensStream` gives the same lenses chunk by chunk."""
    return _draw_lenses(
        preset, label, count, lambda shape: torch.rand((count, *shape), generator=generator, dtype=torch.float64)
    )


class LensStream:
    """The lenses of ``sample_lenses(preset, label, count, generator)``, bit for bit, as an iterator over chunks of
    ``chunk_size`` lenses (the last one shorter): memory does not grow with ``count``. Consumes ``generator``.

    One pass over the stream (values discarded) records where each parameter's block starts; each parameter then
    reads its block through its own generator. Chunks are a multiple of 64 lenses and stay under torch's parallel
    grain: torch computes an elementwise op's (``atan2``, ``pow``...) vectorised body with SIMD code and its last
    elements with scalar code, which can differ in the last bit; so every element falls on the side it does in one
    call on one thread. (One call on several threads splits at thread boundaries; the chunks do not.)"""

    ALIGN = 64  # lenses; a multiple of every SIMD loop's step over float64 (2 x 8 lanes with AVX-512)
    _GRAIN = 32768  # elements; torch's GRAIN_SIZE: smaller elementwise ops run on one thread
    _SKIP_VALUES = 1 << 20  # uniforms drawn and discarded at once while finding the blocks

    def __init__(
        self,
        preset: SimulationPreset,
        label: int,
        count: int,
        generator: torch.Generator,
        chunk_size: int | None = None,
    ) -> None:
        width = max(1, preset.n_subhalos)  # values per lens of the widest parameter
        default = self.ALIGN * max(1, self._GRAIN // (self.ALIGN * width))
        self.chunk_size = default if chunk_size is None else chunk_size
        if self.chunk_size < 1 or self.chunk_size % self.ALIGN:
            raise ValueError(f"chunk_size must be a positive multiple of {self.ALIGN}, got {chunk_size}")
        self.preset, self.label, self.count = preset, label, count
        self._generators: list[torch.Generator] = []

        def skip_block(shape: tuple[int, ...]) -> torch.Tensor:
            start = torch.Generator()
            start.set_state(generator.get_state())
            self._generators.append(start)
            step = max(1, self._SKIP_VALUES // max(1, math.prod(shape)))
            for first in range(0, count, step):
                torch.rand((min(step, count - first), *shape), generator=generator, dtype=torch.float64)
            return torch.zeros((1, *shape), dtype=torch.float64)

        _draw_lenses(preset, label, 1, skip_block)  # the structure only: which blocks, in which order

    def __iter__(self) -> Iterator[LensSample]:
        for first in range(0, self.count, self.chunk_size):
            yield self._chunk(min(self.chunk_size, self.count - first))

    def _chunk(self, size: int) -> LensSample:
        """The next ``size`` lenses: each parameter from its own block's generator."""
        blocks = iter(self._generators)
        draw = lambda shape: torch.rand((size, *shape), generator=next(blocks), dtype=torch.float64)  # noqa: E731
        return _draw_lenses(self.preset, self.label, size, draw)


def _draw_lenses(preset: SimulationPreset, label: int, count: int, draw: _Draw) -> LensSample:
    """``count`` lenses of class ``label`` from uniforms ``draw(shape)``, one call per parameter, in stream order."""
    if label not in (NO_SUBSTRUCTURE, SUBHALOS, VORTEX):
        raise ValueError(f"label must be 0 (no), 1 (sphere) or 2 (vort), got {label!r}")

    def u(bounds: Range, shape: tuple[int, ...] = ()) -> torch.Tensor:
        low, high = bounds
        return low + (high - low) * draw(shape)

    lens_q, lens_phi = P.ellipticity_to_axis_ratio(u(preset.lens_e1), u(preset.lens_e2))
    source_q, source_phi = P.ellipticity_to_axis_ratio(u(preset.source_e1), u(preset.source_e2))
    k = preset.n_subhalos
    sample = LensSample(
        label=torch.full((count,), label, dtype=torch.int64),
        theta_e=u(preset.theta_e),
        lens_q=lens_q,
        lens_phi=lens_phi,
        lens_x=torch.zeros(count, dtype=torch.float64),
        lens_y=torch.zeros(count, dtype=torch.float64),
        shear_gamma1=u(preset.shear_gamma1),
        shear_gamma2=u(preset.shear_gamma2),
        source_x=u(preset.source_offset),
        source_y=u(preset.source_offset),
        source_radius=u(preset.source_radius),
        source_sersic_n=u(preset.source_sersic_n),
        source_q=source_q,
        source_phi=source_phi,
        source_amplitude=torch.zeros(count, dtype=torch.float64),  # set below, from magnitude or amplitude
        exposure=torch.zeros(count, dtype=torch.float64),
        subhalo_x=torch.zeros(count, k, dtype=torch.float64),
        subhalo_y=torch.zeros(count, k, dtype=torch.float64),
        subhalo_mass=torch.zeros(count, k, dtype=torch.float64),
        vortex_mass=torch.zeros(count, dtype=torch.float64),
        vortex_angle=torch.zeros(count, dtype=torch.float64),
        vortex_half_length=torch.zeros(count, dtype=torch.float64),
        axion_mass=torch.zeros(count, dtype=torch.float64),
    )
    if label == SUBHALOS:
        radius, angle = u(preset.subhalo_radius, (k,)), u((0.0, 2 * math.pi), (k,))
        sample.subhalo_x, sample.subhalo_y = radius * torch.cos(angle), radius * torch.sin(angle)
        sample.subhalo_mass = _power_law_masses(preset, draw((k,)))
    elif label == VORTEX:
        sample.axion_mass = 10 ** u(preset.log10_axion_mass)
        sample.vortex_half_length = 0.06 / (2 * sample.axion_mass) * 1e-22
        sample.vortex_angle = u((0.0, math.pi))
        sample.vortex_mass = torch.full((count,), preset.vortex_mass, dtype=torch.float64)
    if preset.camera is None:
        sample.source_amplitude, sample.exposure = u(preset.source_amplitude), 10 ** u(preset.log10_exposure)
    else:  # the magnitude fixes the total flux, as SimAPI's magnitude2amplitude
        flux = preset.camera.counts_per_second(u(preset.source_magnitude)) * preset.pixel_scale**2
        sample.source_amplitude = flux / sersic_total_flux(1.0, sample.source_radius, sample.source_sersic_n)
        sample.exposure = torch.full((count,), preset.camera.total_exposure, dtype=torch.float64)
    if preset.lens_center[0] != preset.lens_center[1]:
        sample.lens_x, sample.lens_y = u(preset.lens_center), u(preset.lens_center)
    else:
        sample.lens_x = sample.lens_y = torch.full((count,), preset.lens_center[0], dtype=torch.float64)
    return sample


def _einstein_radius_squared(mass: torch.Tensor, params: LensSample, preset: SimulationPreset) -> torch.Tensor:
    """Point-mass units: theta_E(m)^2 = theta_E(main)^2 * m / M_main, broadcast against ``mass``."""
    theta_e = params.theta_e.reshape(-1, *([1] * (mass.dim() - 1)))
    return theta_e**2 * mass / preset.main_halo_mass


def _as_map(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B,)`` parameters -> ``(B, 1, 1)`` on ``like``'s device and dtype, to broadcast against ``(n, n)`` maps."""
    return values.to(device=like.device, dtype=like.dtype).reshape(-1, 1, 1)


def deflection_field(params: LensSample, x: torch.Tensor, y: torch.Tensor, preset: SimulationPreset) -> torch.Tensor:
    """Total deflection ``(B, 2, n, n)`` [arcsec] at coordinates ``x, y (n, n)``: SIE + shear + substructure (the
    shear about the optical axis, the rest about the lens centre)."""
    m = lambda v: _as_map(v, x)  # noqa: E731
    shear = P.shear_deflection(x, y, m(params.shear_gamma1), m(params.shear_gamma2))
    x, y = x - m(params.lens_x), y - m(params.lens_y)  # (B, n, n) lens-centred coordinates
    alpha = P.sie_deflection(x, y, m(params.theta_e), m(params.lens_q), m(params.lens_phi)) + shear
    theta2 = _einstein_radius_squared(params.subhalo_mass, params, preset).to(x)
    if torch.any(theta2 > 0):
        P.point_masses_deflection(x, y, theta2, params.subhalo_x.to(x), params.subhalo_y.to(x), out=alpha)
    has_vortex = params.vortex_mass > 0
    if torch.any(has_vortex):
        alpha = alpha + _vortex_deflection(params, x, y, preset) * has_vortex.to(x).reshape(-1, 1, 1, 1)
    return alpha


_SEGMENT_SAMPLES = 200  # point masses that deposit a closed-form segment's convergence


def _vortex_points(params: LensSample, count: int, ends: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions ``(B, count)`` of equal point masses along each vortex: from ``-L`` to ``L`` inclusive (``ends``,
    DeepLenseSim's ``linspace``) or at the centres of ``count`` equal pieces (a quadrature of the uniform segment)."""
    if ends:
        s = torch.linspace(-1, 1, count, dtype=torch.float64)
    else:
        s = (torch.arange(count, dtype=torch.float64) + 0.5) / count * 2 - 1
    along = s * params.vortex_half_length[:, None]
    return along * torch.cos(params.vortex_angle)[:, None], along * torch.sin(params.vortex_angle)[:, None]


def _vortex_deflection(params: LensSample, x: torch.Tensor, y: torch.Tensor, preset: SimulationPreset):
    theta2 = _einstein_radius_squared(params.vortex_mass, params, preset)
    if preset.vortex_profile == "segment":
        half_length = params.vortex_half_length.clamp_min(1e-6)
        return P.line_segment_deflection(
            x, y, _as_map(theta2.sqrt(), x), _as_map(half_length, x), _as_map(params.vortex_angle, x)
        )
    px, py = _vortex_points(params, preset.vortex_points, ends=True)
    strength = (theta2 / preset.vortex_points).to(x)[:, None].expand(-1, preset.vortex_points)
    return P.point_masses_deflection(x, y, strength, px.to(x), py.to(x))


def render_images(
    params: LensSample,
    preset: SimulationPreset,
    generator: torch.Generator | None = None,
    noise: bool = True,
    normalise: bool = True,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Images ``(B, 1, n, n)`` float32: lensed Sersic source, Gaussian PSF, Poisson + background noise, min-max.

    ``generator`` drives the noise (a CPU generator; noise is drawn on the CPU so results do not depend on the
    device). ``noise=False`` gives the noiseless image, ``normalise=False`` keeps brightness units.
    """
    grid = PixelGrid(preset.n_pixels, preset.pixel_scale)
    x, y = grid.coordinates(torch.float32, device)
    alpha = deflection_field(params, x, y, preset)
    m = lambda v: _as_map(v, x)  # noqa: E731
    light = sersic_brightness(
        x - alpha[:, 0],
        y - alpha[:, 1],
        m(params.source_amplitude),
        m(params.source_radius),
        m(params.source_sersic_n),
        m(params.source_q),
        m(params.source_phi),
        m(params.source_x),
        m(params.source_y),
    )  # (B, 1, n, n)
    image = convolve_psf(light, psf_kernel(preset)).cpu()
    if noise:
        image = add_noise(image, params.exposure.float().reshape(-1, 1, 1, 1), preset, generator)
    return normalise_images(image) if normalise else image


def normalise_images(images: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each image of ``(B, 1, n, n)`` to [0, 1], as the DeepLense datasets are."""
    low = images.amin(dim=(-2, -1), keepdim=True)
    high = images.amax(dim=(-2, -1), keepdim=True)
    return (images - low) / (high - low).clamp_min(1e-12)


def stream_seed(*keys: object) -> int:
    """A 63-bit seed that depends only on ``keys`` (stable across runs, platforms and Python versions)."""
    digest = hashlib.sha256(repr(keys).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def psf_kernel(preset: SimulationPreset, dtype=torch.float32) -> torch.Tensor:
    """The preset's separable Gaussian PSF kernel ``(K,)`` (see :func:`gaussian_psf_kernel`)."""
    return gaussian_psf_kernel(preset.psf_fwhm, preset.pixel_scale, preset.psf_truncation, dtype)


def add_noise(
    image: torch.Tensor, exposure: torch.Tensor, preset: SimulationPreset, generator: torch.Generator | None
) -> torch.Tensor:
    """Noisy images ``(B, 1, n, n)`` from noiseless ``image`` [brightness per pixel], ``exposure (B, 1, 1, 1)`` [s].

    Without a camera, DeepLenseSim's Model I recipe (``simple_sim``): Gaussian shot noise ``sqrt(|I| / T)`` and
    background noise ``background_rms`` are added, then the counts are Poisson-sampled from the clipped result,
    ``Poisson(max(T (I + noise), 0)) / T``. With a camera, SimAPI's ``noise_for_model``: ``I`` plus Gaussian noise of
    the camera's background sigma and ``sqrt(max(I, 0) / T)``.
    """
    normal = lambda: torch.randn(image.shape, generator=generator)  # noqa: E731
    if preset.camera is None:
        noisy = image + normal() * (image.abs() / exposure).sqrt() + normal() * preset.background_rms
        return torch.poisson((noisy * exposure).clamp_min(0), generator=generator) / exposure
    background = preset.camera.background_sigma(preset.pixel_scale)
    return image + normal() * background + normal() * (image.clamp_min(0) / exposure).sqrt()


def _deposit(px: torch.Tensor, py: torch.Tensor, weight: torch.Tensor, grid: PixelGrid) -> torch.Tensor:
    """Bilinearly deposit point weights ``(B, K)`` at ``(px, py)`` [arcsec] onto ``(B, 1, n, n)`` pixels."""
    n = grid.n
    col = px / grid.pixel_scale + 0.5 * (n - 1)
    row = py / grid.pixel_scale + 0.5 * (n - 1)
    c0, r0 = torch.floor(col), torch.floor(row)
    tx, ty = col - c0, row - r0
    out = torch.zeros(px.shape[0], (n + 2) * (n + 2), dtype=weight.dtype)
    for dr, wy in ((0, 1 - ty), (1, ty)):
        for dc, wx in ((0, 1 - tx), (1, tx)):
            r = (r0 + dr).clamp(-1, n).long() + 1  # off-grid mass goes to a border that is cropped away
            c = (c0 + dc).clamp(-1, n).long() + 1
            out.scatter_add_(1, r * (n + 2) + c, weight * wy * wx)
    return out.reshape(-1, 1, n + 2, n + 2)[..., 1:-1, 1:-1]


def true_convergence(params: LensSample, preset: SimulationPreset) -> torch.Tensor:
    """The convergence ``(B, 1, n, n)`` float64 of each lens on the preset's grid: the SIE sampled at pixel centres
    plus :func:`substructure_convergence`."""
    grid = PixelGrid(preset.n_pixels, preset.pixel_scale)
    x, y = grid.coordinates(torch.float64)
    m = lambda v: _as_map(v, x)  # noqa: E731
    kappa = P.sie_convergence(
        x, y, m(params.theta_e), m(params.lens_q), m(params.lens_phi), m(params.lens_x), m(params.lens_y)
    )
    return kappa + substructure_convergence(params, preset)


def substructure_convergence(params: LensSample, preset: SimulationPreset) -> torch.Tensor:
    """The convergence ``(B, 1, n, n)`` float64 of the substructure alone (0 for the no-substructure class).

    Each point mass ``theta_E^2`` contributes ``pi theta_E^2 / s^2`` spread bilinearly over the four nearest pixels;
    a vortex is its point masses (``vortex_profile="points"``) or 200 such points along its segment."""
    grid = PixelGrid(preset.n_pixels, preset.pixel_scale)
    to_kappa = math.pi / grid.pixel_scale**2
    theta2 = _einstein_radius_squared(params.subhalo_mass, params, preset)
    cx, cy = params.lens_x[:, None], params.lens_y[:, None]
    kappa = _deposit(params.subhalo_x + cx, params.subhalo_y + cy, to_kappa * theta2, grid)
    points = preset.vortex_points if preset.vortex_profile == "points" else _SEGMENT_SAMPLES
    px, py = _vortex_points(params, points, ends=preset.vortex_profile == "points")
    vortex = (to_kappa * _einstein_radius_squared(params.vortex_mass, params, preset) / points)[:, None]
    return kappa + _deposit(px + cx, py + cy, vortex.expand(-1, points), grid)


def true_macro_lens(params: LensSample) -> MacroLens:
    """The smooth lens of each sample (SIE + shear) as a float64 ``MacroLens``."""
    size = (1 - params.lens_q) / (1 + params.lens_q)  # |e| of the axis ratio (lenstronomy convention)
    e1, e2 = size * torch.cos(2 * params.lens_phi), size * torch.sin(2 * params.lens_phi)
    shear = params.shear_gamma1, params.shear_gamma2
    return MacroLens(params.theta_e, e1, e2, params.lens_x, params.lens_y, *shear)
