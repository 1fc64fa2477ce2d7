"""A substructure detector that needs no training: fit the smooth lens to each image, then scan what it cannot
explain for a subhalo and for a vortex (``d4lenspinn detect``; the file level is :mod:`d4lenspinn.detection_files`).

    fit = PriorFit(PixelGrid(64, 0.101), psf_fwhm=0.16, supersampling=3)    # the instrument, the fit's settings
    found = detect_substructure(fit(images), fit, stride=2)     # images (B, 1, n, n) in any linear units
    found.max_delta_chi2, found.x, found.y, found.p_value  # (B,) each; found.scan.delta_chi2 (B, 1, n/2, n/2)
    found.max_delta_chi2_vortex, found.vortex_angle, found.vortex_half_length  # (B,) each; found.vortex (B, 7, 16)

The fit (:class:`PriorFit`, no network: :func:`~d4lenspinn.physics.fit_smooth_lens` from a grid of starts over
the prior's Einstein radii) and the scans (:func:`~d4lenspinn.physics.substructure_scans`: the subhalo and the vortex
scan) are the package's physics; what this adds is the read-out a lens modeller
reports: the largest ``delta chi^2`` of one trial subhalo, where it sits, and how surprising it is, and the largest
of one trial vortex (a line of mass through the lens centre), its orientation and length: the two compare a point
perturber with a line. Without a subhalo, and with the smooth model and the noise right, each position's ``delta
chi^2`` is 0 with probability 1/2 (a negative best mass) and otherwise a chi^2 of one degree of freedom, so ``P(delta
chi^2 > t) = Phi(-sqrt t)``; over ``M`` trial positions the Bonferroni bound ``p <= M Phi(-sqrt t)`` holds however
the positions correlate (conservative: neighbours overlap). It is only as right as the smooth model: misfit (a
clumpy source, pixel centres for integrated light; docs/RESULTS.md) reads as a subhalo. Where it is not exact,
:func:`empirical_p_value` ranks the largest ``delta chi^2`` among those of lenses known to hold no substructure
(simulated for the same instrument and fitted the same way) instead.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import NamedTuple, Protocol

import torch

from .physics import (
    LensFit,
    PixelGrid,
    StartGrid,
    SubhaloScan,
    VortexScan,
    centred_lens,
    fit_smooth_lens,
    scan_positions,
    substructure_scans,
    vortex_angles,
)
from .physics.grid import check_supersampling
from .physics.lens_fit import MAX_ELLIPTICITY, MAX_SHEAR, check_shot_noise
from .physics.unexplained import VORTEX_ANGLES, VORTEX_HALF_LENGTHS

__all__ = ["Detection", "FitSettings", "PriorFit", "detect_substructure", "empirical_p_value"]


class FitSettings(Protocol):
    """What a scan of a fit needs to know about it: the fit's grid, PSF truncation, whether the PSF width was
    fitted and its supersampling (:class:`PriorFit`; the fit inside a ``d4lenspinn_fit`` model)."""

    grid: PixelGrid
    psf_truncation: float
    fit_psf: bool
    supersampling: int


class PriorFit:
    """A smooth-lens fit that needs no network: from :meth:`StartGrid.over_prior` about a centred lens (theta_E
    ``prior_theta_e`` [arcsec], centre +-2 px, and at each Einstein radius the centred lens made elliptical by
    ``start_ellipticity`` and sheared by ``start_shear`` along each axis and diagonal, 0: none; the
    ``refined_starts`` candidates of lowest chi^2 each given the first ``trial_steps`` steps, the best of them the
    rest), ``steps`` Levenberg-Marquardt steps with the instrument's Gaussian PSF (``psf_fwhm`` [arcsec], truncated
    at ``psf_truncation`` sigma; its width fitted with ``fit_psf``), the light integrated over ``supersampling`` x
    ``supersampling`` sub-pixels and (``shot_noise``: ``"fit"`` or the background noise in electrons per pixel) each
    pixel weighed by its own noise, in float32 (with ``refined_starts=1, start_ellipticity=0, start_shear=0`` as
    ``d4lenspinn_fit`` with ``lens_start="prior"`` fits). Settings are checked here, before any image is read."""

    def __init__(
        self,
        grid: PixelGrid,
        psf_fwhm: float,
        psf_truncation: float = 4.0,
        device: torch.device | str = "cpu",
        steps: int = 5,
        fit_psf: bool = False,
        supersampling: int = 1,
        shot_noise: str | float | None = None,
        prior_theta_e: tuple[float, float] = (0.6, 1.6),
        refined_starts: int = 4,
        trial_steps: int = 2,
        start_ellipticity: float = 0.15,
        start_shear: float = 0.07,
    ) -> None:
        if not (0 < psf_fwhm < math.inf and 0 < psf_truncation < math.inf):
            raise ValueError(f"psf_fwhm and psf_truncation must be finite and > 0, got {psf_fwhm}, {psf_truncation}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
        check_supersampling(supersampling)
        check_shot_noise(shot_noise)
        self.grid, self.psf_fwhm, self.psf_truncation, self.device = grid, psf_fwhm, psf_truncation, device
        self.steps, self.fit_psf, self.supersampling, self.shot_noise = steps, fit_psf, supersampling, shot_noise
        for name, value, limit in (
            ("start_ellipticity", start_ellipticity, MAX_ELLIPTICITY),
            ("start_shear", start_shear, MAX_SHEAR),
        ):
            if not (isinstance(value, Real) and not isinstance(value, bool) and 0 <= value <= limit):
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{name} ({flag}) must be 0 (none) or an offset in (0, {limit}], got {value!r}")
        self.starts = StartGrid.over_prior(
            prior_theta_e,
            refined=refined_starts,
            trial_steps=trial_steps,
            ellipticities=(float(start_ellipticity),) if start_ellipticity else (),
            shears=(float(start_shear),) if start_shear else (),
        )
        try:
            self.starts.check()
        except ValueError as error:
            flags = "--refined-starts, --trial-steps, --start-ellipticity, --start-shear"
            raise ValueError(
                f"refined_starts, trial_steps, start_ellipticity, start_shear ({flags}): {error}"
            ) from None

    def __call__(self, images: torch.Tensor) -> LensFit:
        """The fit of ``images (B, 1, n, n)`` (any linear units; moved to the fit's device, float32)."""
        images = images.to(self.device).float()
        return fit_smooth_lens(
            images,
            centred_lens(len(images), device=self.device),
            self.grid,
            self.psf_fwhm,
            self.psf_truncation,
            self.steps,
            gradients=False,
            starts=self.starts,
            fit_psf=self.fit_psf,
            supersampling=self.supersampling,
            shot_noise=self.shot_noise,
        )


class Detection(NamedTuple):
    """The scans of a smooth-lens fit, read out per image (``(B,)`` unless said); +inf or NaN where the fit failed."""

    fit: LensFit
    scan: SubhaloScan  # the maps (B, 1, n / stride, n / stride); zero where the fit failed
    max_delta_chi2: torch.Tensor  # the largest delta chi^2; +inf where the fit failed (nothing smooth explains it)
    x: torch.Tensor  # where it is [arcsec, the grid's coordinates]; NaN where the fit failed
    y: torch.Tensor
    p_value: torch.Tensor  # Bonferroni bound on P(max >= observed | no subhalo), in [0, 1]; NaN where the fit failed
    vortex: VortexScan  # the trial lines (B, len(VORTEX_HALF_LENGTHS), VORTEX_ANGLES); zero where the fit failed
    max_delta_chi2_vortex: torch.Tensor  # the largest over the lines; +inf where the fit failed
    vortex_angle: torch.Tensor  # its orientation [radians from +x, in [0, pi)]; NaN where the fit failed
    vortex_half_length: torch.Tensor  # its half-length [arcsec]; NaN where the fit failed


def detect_substructure(fit: LensFit, settings: FitSettings, stride: int = 2) -> Detection:
    """Scan ``fit`` (made with ``settings``) for a subhalo at the centre of every ``stride x stride`` block and for
    a vortex (:func:`~d4lenspinn.physics.vortex_scan`, its default lines) and read out the largest ``delta chi^2``
    of each, where it is and the subhalo's p-value bound (module docstring). Failed fits are not scanned. Raises
    ``ValueError`` for a stride that does not divide the image size."""
    batch, n = fit.model.shape[0], settings.grid.n
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1 or n % stride:
        raise ValueError(f"stride must be a positive integer dividing the image size {n}, got {stride!r}")
    side, device, dtype = n // stride, fit.model.device, fit.model.dtype
    points = SubhaloScan(*torch.zeros(2, batch, 1, side, side, dtype=dtype, device=device))
    lines = VortexScan(*torch.zeros(2, batch, len(VORTEX_HALF_LENGTHS), VORTEX_ANGLES, dtype=dtype, device=device))
    kept = (~fit.failed).nonzero().flatten()
    if len(kept):
        scans = substructure_scans(fit.select(kept), settings.grid, settings.psf_truncation, settings.fit_psf, stride,
                                   supersampling=settings.supersampling)  # fmt: skip
        for maps, values in zip((points, lines), scans, strict=True):
            for kept_maps, value in zip(maps, values, strict=True):
                kept_maps[kept] = value
    largest, where = points.delta_chi2.flatten(1).double().max(dim=1)
    positions = scan_positions(settings.grid, stride, device=device)
    x, y = positions[where % side], positions[where // side]
    tail = 0.5 * torch.erfc(largest.sqrt() / math.sqrt(2))  # Phi(-sqrt t)
    p_value = (side * side * tail).clamp(max=1.0)
    largest_line, line = lines.delta_chi2.flatten(1).double().max(dim=1)
    angle = vortex_angles(VORTEX_ANGLES, device=device)[line % VORTEX_ANGLES]
    half_length = torch.tensor(VORTEX_HALF_LENGTHS, dtype=torch.float64, device=device)[line // VORTEX_ANGLES]
    failed = fit.failed.to(device)
    failing = lambda value, fill: torch.where(failed, torch.full_like(value, fill), value)  # noqa: E731
    return Detection(
        fit=fit,
        scan=points,
        max_delta_chi2=failing(largest, math.inf),
        x=failing(x, math.nan),
        y=failing(y, math.nan),
        p_value=failing(p_value, math.nan),
        vortex=lines,
        max_delta_chi2_vortex=failing(largest_line, math.inf),
        vortex_angle=failing(angle, math.nan),
        vortex_half_length=failing(half_length * fit.macro.theta_e.detach().double().to(device), math.nan),
    )


def empirical_p_value(max_delta_chi2: torch.Tensor, null: torch.Tensor) -> torch.Tensor:
    """``(1 + #{null >= t}) / (1 + N)`` for each largest ``delta chi^2`` ``t`` of ``max_delta_chi2 (B,)``, with
    ``null (N,)`` those of ``N`` lenses without substructure: the p-value of a permutation test, exact whatever the
    smooth model's misfit if the null lenses are drawn like the tested ones (a +inf, a failed fit, counts as larger
    than every finite value). Raises ``ValueError`` for an empty or NaN null."""
    null = torch.as_tensor(null, dtype=torch.float64).flatten()
    if null.numel() == 0 or bool(torch.isnan(null).any()):
        raise ValueError(f"the null needs at least one largest delta chi^2 and no NaN, got {null.numel()} values")
    observed = torch.as_tensor(max_delta_chi2, dtype=torch.float64)
    larger = (null.to(observed.device)[None, :] >= observed[:, None]).sum(dim=1, dtype=torch.float64)
    return (1 + larger) / (1 + null.numel())
