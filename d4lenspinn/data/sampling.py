"""Drawing lens parameters from a preset: :func:`sample_lenses` in one call, :class:`LensStream` chunk by chunk.

Each parameter is one call of a uniform draw ``(count, *shape)``, in a fixed order; parameters added after the
faithful presets existed (lens centre, PSF width, per-image noise, knots, subhalo count, vortex mass) are drawn after
the older ones and only where the preset's range is not a single value, so the faithful presets draw exactly the
stream (and make exactly the images) they always did.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

from ..classes import NO_SUBSTRUCTURE, SUBHALOS, VORTEX
from ..physics import profiles as P
from ..physics.light import sersic_total_flux
from .lens_sample import LensSample
from .presets import Range, SimulationPreset
from .sources import draw_knots

__all__ = ["sample_lenses", "LensStream"]

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

    Parameters added later are drawn last, and only where their range is not a single value (module docstring). The
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

    def u(bounds: Range, shape: tuple[int, ...] = ()) -> torch.Tensor:  # uniform on bounds, (count, *shape)
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
        psf_fwhm=torch.full((count,), preset.psf_fwhm, dtype=torch.float64),
        peak_snr=torch.zeros(count, dtype=torch.float64),  # none drawn: the preset's own noise recipe
        shot_noise_fraction=torch.zeros(count, dtype=torch.float64),
        **{
            name: torch.zeros(count, preset.max_knots, dtype=torch.float64)
            for name in ("knot_x", "knot_y", "knot_radius", "knot_amplitude")
        },
    )
    if label == SUBHALOS:
        radius, angle = u(preset.subhalo_radius, (k,)), u((0.0, 2 * math.pi), (k,))
        sample.subhalo_x, sample.subhalo_y = radius * torch.cos(angle), radius * torch.sin(angle)
        sample.subhalo_mass = _power_law_masses(preset, draw((k,)))
    elif label == VORTEX:
        sample.axion_mass = 10 ** u(preset.log10_axion_mass)
        sample.vortex_half_length = 0.06 / (2 * sample.axion_mass) * 1e-22
        sample.vortex_angle = u((0.0, math.pi))
        sample.vortex_mass = torch.full((count,), preset.vortex_mass[0], dtype=torch.float64)
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
    _draw_broad(preset, label, sample, u, draw)
    return sample


def _varies(bounds: Range) -> bool:
    return bounds[0] != bounds[1]


def _draw_broad(preset: SimulationPreset, label: int, sample: LensSample, u, draw: _Draw) -> None:
    """The parameters a broad preset varies (in place, after the faithful ones): subhalo count, vortex mass, PSF
    width, knots, peak SNR; each keeps its fixed value where the preset's range is one value."""
    count = len(sample)
    if label == SUBHALOS and _varies(preset.subhalo_count):
        low, high = preset.subhalo_count
        present = (low + torch.floor((high - low + 1) * draw(()))).clamp(max=high)
        sample.subhalo_mass = sample.subhalo_mass * (torch.arange(high) < present[:, None])
    if label == VORTEX and _varies(preset.vortex_mass):
        log_mass = u(tuple(math.log10(m) for m in preset.vortex_mass))
        sample.vortex_mass = 10**log_mass
    scale = (
        u(preset.psf_scale)
        if _varies(preset.psf_scale)
        else torch.full((count,), preset.psf_scale[0], dtype=torch.float64)
    )
    sample.psf_fwhm = preset.psf_fwhm * scale
    if preset.max_knots:
        for field, value in draw_knots(preset, sample, u, draw).items():
            setattr(sample, field, value)
    if preset.peak_snr is not None:
        snr = 10 ** u(tuple(math.log10(s) for s in preset.peak_snr))
        noiseless = draw(()) < preset.noiseless_fraction
        sample.peak_snr = torch.where(noiseless, torch.full_like(snr, math.inf), snr)
        sample.shot_noise_fraction = u(preset.shot_noise_fraction)
