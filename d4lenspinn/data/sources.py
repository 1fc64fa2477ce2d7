"""Source light: an elliptical Sersic, and for clumpy sources round Sersic knots on top of it.

Real sources are clumpy, and source structure is the classic confounder of substructure (issue 19). A clumpy source
is the Sersic plus ``J`` knots (round, ``n = 1``), placed uniformly in a disc of ``knot_spread`` half-light radii
about the source centre and carrying together a share ``knot_flux_fraction`` of the source's total flux; the Sersic
keeps the rest, so a source's total flux (its magnitude, with a camera) does not depend on its knots.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..physics.light import sersic_brightness, sersic_total_flux
from .lens_sample import LensSample, as_map
from .presets import Range, SimulationPreset

__all__ = ["source_brightness", "draw_knots"]

_KNOT_WEIGHT = (0.25, 1.0)  # relative flux of one knot before the knots' share is split (no knot is invisible)


def draw_knots(
    preset: SimulationPreset,
    sample: LensSample,
    uniform: Callable[[Range, tuple[int, ...]], torch.Tensor],
    draw: Callable[[tuple[int, ...]], torch.Tensor],
) -> dict[str, torch.Tensor]:
    """The knot fields of ``sample``'s sources and their rescaled Sersic amplitude, as :class:`LensSample` fields.

    ``draw(shape)`` gives uniforms ``(B, *shape)`` in [0, 1), ``uniform(bounds, shape)`` uniforms on ``bounds``; one
    call per parameter, in a fixed order (the lens stream's contract). A source is clumpy with probability
    ``clumpy_fraction``; it then has ``n_knots`` knots (uniform integer), the others zero amplitude."""
    slots = preset.max_knots
    clumpy = draw(()) < preset.clumpy_fraction
    low, high = preset.n_knots
    count = (low + torch.floor((high - low + 1) * draw(()))).clamp(max=high) * clumpy
    share = uniform(preset.knot_flux_fraction, ()) * clumpy
    distance = preset.knot_spread * sample.source_radius[:, None] * draw((slots,)).sqrt()  # uniform in the disc
    angle = uniform((0.0, 2 * math.pi), (slots,))
    radius = uniform(preset.knot_radius, (slots,))
    present = torch.arange(slots) < count[:, None]
    weight = uniform(_KNOT_WEIGHT, (slots,)) * present
    total = sersic_total_flux(sample.source_amplitude, sample.source_radius, sample.source_sersic_n)
    flux = (share * total)[:, None] * weight / weight.sum(dim=1, keepdim=True).clamp_min(1e-300)
    return dict(
        knot_x=sample.source_x[:, None] + distance * torch.cos(angle),
        knot_y=sample.source_y[:, None] + distance * torch.sin(angle),
        knot_radius=radius,
        knot_amplitude=flux / sersic_total_flux(torch.ones_like(radius), radius, torch.ones_like(radius)),
        source_amplitude=sample.source_amplitude * (1 - share),
    )


def source_brightness(params: LensSample, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Source brightness ``(B, 1, n, n)`` [per pixel] at source-plane coordinates ``x, y (B, n, n)`` [arcsec]: the
    Sersic of each source plus the sum of its knots (knots of zero amplitude add nothing and are skipped)."""
    m = lambda v: as_map(v, x)  # noqa: E731
    light = sersic_brightness(
        x,
        y,
        m(params.source_amplitude),
        m(params.source_radius),
        m(params.source_sersic_n),
        m(params.source_q),
        m(params.source_phi),
        m(params.source_x),
        m(params.source_y),
    )
    for k in range(params.knot_amplitude.shape[1]):
        amplitude = params.knot_amplitude[:, k]
        if torch.any(amplitude > 0):
            knot_x, knot_y = params.knot_x[:, k], params.knot_y[:, k]
            light = light + sersic_brightness(
                x, y, m(amplitude), m(params.knot_radius[:, k]), 1.0, 1.0, 0.0, m(knot_x), m(knot_y)
            )
    return light
