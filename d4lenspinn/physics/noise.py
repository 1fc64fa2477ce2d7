"""The noise level of each image, estimated from the image alone, so that residuals can be read in units of it.

Two robust estimates, each invariant under the 8 D4 transforms of the image (the high-pass to round-off: its sums
change order), and their minimum:

* the frame: the median absolute deviation (MAD) of the pixels within ``n // 16`` (at least 2) of the border, where
  the sky usually is; biased high where an arc reaches the border;
* the high-pass: the MAD of ``(a - b - c + d) / 2`` over every 2x2 window ``[[a, b], [c, d]]``, which has the noise's
  variance and cancels any brightness gradient (a mirror or quarter turn only flips its sign); biased high where the
  arcs are bright (their curvature and shot noise).

Their failure modes differ, so the minimum holds up where either does. Measured on 192 simulated ``model_ii_hard``
images (``python benchmarks/fit.py``; docs/physics.md), estimate / true sigma at a peak SNR of 30, 5% / median /
95%: high-pass 0.977 / 1.016 / 1.054, frame 0.939 / 1.002 / 1.056, minimum 0.939 / 0.992 / 1.035.

Example::

    sigma = estimate_noise(images)          # (B,) in image units; raises ValueError for a constant image
"""

from __future__ import annotations

import math

import torch

from .grid import check_field

__all__ = ["estimate_noise", "frame_noise", "high_pass_noise", "shot_noise_fraction", "MAD_TO_SIGMA"]

MAD_TO_SIGMA = 1.482602218505602  # 1 / Phi^-1(3/4): sigma of a Gaussian from its median absolute deviation


def high_pass_noise(images: torch.Tensor) -> torch.Tensor:
    """``MAD((a - b - c + d) / 2)`` over all 2x2 windows of ``images (B, 1, n, n)``, ``(B,)`` (the windowed values
    have zero median for noise, so the median of their absolute value is their MAD)."""
    check_field(images, "images", 1)
    windows = images[..., :-1, :-1] - images[..., :-1, 1:] - images[..., 1:, :-1] + images[..., 1:, 1:]
    return windows.abs().flatten(1).median(dim=1).values * (MAD_TO_SIGMA / 2)


def frame_noise(images: torch.Tensor, width: int | None = None) -> torch.Tensor:
    """MAD of the pixels within ``width`` (default ``max(2, n // 16)``) of the border of ``images (B, 1, n, n)``,
    ``(B,)``."""
    check_field(images, "images", 1)
    n = images.shape[-1]
    width = max(2, n // 16) if width is None else width
    inner = torch.zeros(n, n, dtype=torch.bool, device=images.device)
    inner[width : n - width, width : n - width] = True
    frame = images[:, 0][:, ~inner]  # (B, pixels in the frame)
    deviation = (frame - frame.median(dim=1, keepdim=True).values).abs()
    return deviation.median(dim=1).values * MAD_TO_SIGMA


def estimate_noise(images: torch.Tensor, relative_floor: float = 1e-3) -> torch.Tensor:
    """Per-image noise standard deviation ``(B,)`` of ``images (B, 1, n, n)``, in image units: the minimum of
    :func:`frame_noise` and :func:`high_pass_noise`.

    The estimate is at least ``relative_floor * (max - min)`` of each image, so a noiseless image is treated as one
    of peak signal-to-noise ``1 / relative_floor`` (1000 by default) instead of an infinitely precise one; pass
    ``relative_floor=0`` for the bare estimate (an exactly flat sky then raises). Raises ``ValueError`` naming the
    images whose noise cannot be estimated (constant or all-zero images, non-finite pixels): every residual would
    be 0/0 there.
    """
    check_field(images, "images", 1)
    if not relative_floor >= 0:
        raise ValueError(f"relative_floor must be >= 0, got {relative_floor}")
    finite = torch.isfinite(images).flatten(1).all(dim=1)
    safe = torch.where(finite[:, None, None, None], images, torch.zeros_like(images))
    span = safe.flatten(1).amax(dim=1) - safe.flatten(1).amin(dim=1)
    sigma = torch.maximum(torch.minimum(frame_noise(safe), high_pass_noise(safe)), relative_floor * span)
    bad = ~finite | ~(sigma > 0)
    if bad.any():
        indices = bad.nonzero().flatten().tolist()
        raise ValueError(
            f"the noise of images {indices} (of {images.shape[0]}) cannot be estimated: they are constant, all "
            f"zero, hold non-finite pixels, or have an exactly flat sky with relative_floor=0"
        )
    return sigma


CLIP = 9.0  # squared normalised residuals are clipped at 3 sigma, so a substructure's few pixels weigh little
# E[min(X, CLIP)] for X ~ chi^2_1: P(chi^2_3 < CLIP) + CLIP P(chi^2_1 > CLIP)
CLIPPED_MEAN = (
    math.erf(math.sqrt(CLIP / 2))
    - math.sqrt(2 * CLIP / math.pi) * math.exp(-CLIP / 2)
    + CLIP * math.erfc(math.sqrt(CLIP / 2))
)


def shot_noise_fraction(
    residual: torch.Tensor, light: torch.Tensor, sigma: torch.Tensor, largest: float = 1e4
) -> torch.Tensor:
    """Per image, the source's shot-noise variance at the peak of ``light`` over the background variance, ``f (B,)``,
    for the noise model ``var = sigma^2 (1 + f t)``, ``t = light / max(light)`` (the simulator's
    ``shot_noise_fraction``; a Poisson source in its Gaussian approximation).

    ``residual (B, N)``: image minus a smooth model of it; ``light (B, N)``: that model's source light (background
    removed; clamped at 0); ``sigma (B,)``: the background noise. ``f`` solves the likelihood's score equation with
    each squared normalised residual clipped at ``CLIP`` (3 sigma), ``sum t / v (min(r^2 / (sigma^2 v), CLIP) -
    CLIPPED_MEAN) = 0`` with ``v = 1 + f t``, so a substructure's signal on a few pixels moves it little; 0 where the
    left side is already <= 0 at ``f = 0``, at most ``largest``. Found by bisection in ``log f`` (40 halvings:
    relative precision 1e-3 over ``1e-4 .. largest``). Invariant under any permutation of the pixels, the D4 actions
    included."""
    light = light.clamp_min(0)
    relative = light / light.amax(dim=1, keepdim=True).clamp_min(torch.finfo(light.dtype).tiny)
    squared = (residual / sigma[:, None]) ** 2

    def score(f: torch.Tensor) -> torch.Tensor:  # > 0: the noise model is still too small where the light is
        variance = 1 + f[:, None] * relative
        return (relative / variance * ((squared / variance).clamp_max(CLIP) - CLIPPED_MEAN)).sum(dim=1)

    low = torch.full_like(sigma, math.log(1e-4))
    high = torch.full_like(sigma, math.log(largest))
    for _ in range(40):
        middle = (low + high) / 2
        above = score(middle.exp()) > 0
        low, high = torch.where(above, middle, low), torch.where(above, high, middle)
    fraction = ((low + high) / 2).exp()
    none = ~(score(torch.zeros_like(sigma)) > 0)  # also NaN: no finite residual
    return torch.where(none, torch.zeros_like(fraction), fraction)
