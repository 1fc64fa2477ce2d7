"""Training losses: cross-entropy plus the physics regularisers on the maps a physics-informed model returns.

Every loss is a pure function returning a scalar tensor, the mean over the batch; :func:`physics_losses` applies the
ones whose maps a :class:`~d4lenspinn.models.ModelOutput` carries and returns them by name, so that a non-finite term
can be traced to its name. Terms (``kappa`` dimensionless, angles in arcsec):

* ``tv``: anisotropic total variation of ``kappa``, favouring piecewise-smooth mass maps;
* ``l1``: mean ``|kappa|``, favouring sparse mass maps;
* ``centre``: ``|kappa|`` weighted by the squared distance from the optical axis, favouring mass near the lens centre;
* ``poisson``: mean square of ``laplacian(psi) - 2 kappa``; ~0 whenever ``psi`` comes from our own solver;
* ``relensing``: mean squared difference between the image and its re-lensed reconstruction where the source is
  covered; absent from the published model (weight 0 by default) and minimised by ``kappa = 0``;
* ``consistency``: the self-supervised lens loss without that degenerate minimum (:func:`lens_consistency_loss`):
  the re-lensing residual in units of the image noise plus a source-compactness prior; its minimum over the scale
  of the true lens is at 1 (tests/test_losses.py), so it constrains the lens on data without truth.

Example::

    from d4lenspinn.losses import PhysicsLossWeights, classification_loss, physics_losses

    out = model(images)                                       # ModelOutput; baselines have no maps
    terms = physics_losses(out, images, grid, PhysicsLossWeights())
    loss = classification_loss(out.logits, labels, label_smoothing=0.1) + terms["total"]
    bad = [name for name, value in terms.items() if not torch.isfinite(value)]
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .config import PhysicsLossWeights
from .models.maps import KappaMaps, LensMaps
from .physics import MacroLens, PixelGrid, check_field, poisson_residual, ray_trace

if TYPE_CHECKING:
    from .config import LossConfig
    from .data.truth import Truth
    from .models.output import ModelOutput

__all__ = [
    "total_variation",
    "l1_sparsity",
    "centre_penalty",
    "poisson_residual_loss",
    "image_plane_coverage",
    "relensing_loss",
    "background_statistics",
    "light_second_moment",
    "lens_consistency_loss",
    "classification_loss",
    "macro_parameter_loss",
    "supervised_losses",
    "MACRO_TOLERANCES",
    "PhysicsLossWeights",
    "physics_losses",
]


def total_variation(kappa: torch.Tensor) -> torch.Tensor:
    """Anisotropic L1 total variation ``mean|kappa[i, j+1] - kappa[i, j]| + mean|kappa[i+1, j] - kappa[i, j]|``.

    ``kappa`` is ``(B, 1, n, n)``; the result is a scalar in units of kappa per pixel, each mean taken over the batch
    and the ``n (n - 1)`` differences along that axis. The anisotropic form is exactly D4-invariant: a rotation or
    reflection only permutes the absolute differences and swaps the two equally sized sets. The isotropic form
    ``sqrt(dx^2 + dy^2)`` built from forward differences pairs differences that meet at a pixel corner, and which
    pairs meet changes under reflections, so it is not; it would also need an epsilon to be differentiable at 0.
    """
    check_field(kappa, "kappa", 1)
    dx = kappa[..., :, 1:] - kappa[..., :, :-1]
    dy = kappa[..., 1:, :] - kappa[..., :-1, :]
    return dx.abs().mean() + dy.abs().mean()


def l1_sparsity(kappa: torch.Tensor) -> torch.Tensor:
    """Mean ``|kappa|`` over the batch and pixels of ``kappa (B, 1, n, n)``; dimensionless scalar."""
    check_field(kappa, "kappa", 1)
    return kappa.abs().mean()


def centre_penalty(kappa: torch.Tensor, grid: PixelGrid) -> torch.Tensor:
    """Mean of ``|kappa| r^2 / h^2`` over the batch and pixels; ``kappa (B, 1, n, n)`` on ``grid``; dimensionless.

    ``r`` is the distance of each pixel centre from the optical axis and ``h = grid.half_extent`` that of the
    outermost pixel centres (arcsec), so the weight runs from 0 at the centre to 1 at the middle of an edge and 2 in
    a corner: the same mass costs more the further out it sits. ``r^2`` is exactly D4-symmetric on the grid, so the
    penalty is D4-invariant. ``|kappa|`` keeps it bounded below for maps of either sign (a model's ``kappa >= 0``).
    """
    check_field(kappa, "kappa", 1, grid)
    x, y = grid.coordinates(kappa.dtype, kappa.device)
    weight = (x * x + y * y) / grid.half_extent**2
    return (kappa.abs() * weight).mean()


def poisson_residual_loss(psi: torch.Tensor, kappa: torch.Tensor, grid: PixelGrid) -> torch.Tensor:
    """Mean square of :func:`~d4lenspinn.physics.poisson_residual`, ``laplacian_5pt(psi) - 2 kappa``; dimensionless.

    ``psi`` [arcsec^2] and ``kappa`` are ``(B, 1, n, n)`` on ``grid``; the border pixels are left out. Our solver
    inverts this very Laplacian, so for ``psi = potential_from_kappa(kappa)`` (every physics-informed model here) the
    term is round-off, and so is its gradient: on the 150 x 0.05" grid we measured 3e-26 (Gaussian ``kappa``) to
    5e-24 (SIE capped at 5) in float64 and 1e-8 to 1.5e-6 in float32. It constrains training only when ``psi`` comes
    from elsewhere (a network head, another solver).
    """
    return poisson_residual(psi, kappa, grid).square().mean()


def image_plane_coverage(
    source_weight: torch.Tensor,
    alpha: torch.Tensor,
    grid: PixelGrid,
    source_grid: PixelGrid | None = None,
    min_weight: float = 1e-2,
) -> torch.Tensor:
    """Fraction ``(B, 1, n, n)`` in [0, 1] of each image pixel whose source is covered; no gradient.

    A source pixel is covered when at least ``min_weight`` of an image pixel landed on it
    (``source_weight (B, 1, m, m)`` on ``source_grid`` from :func:`~d4lenspinn.physics.inverse_lens`; the default
    matches :class:`~d4lenspinn.physics.LensingEngine`, below which the reconstruction fades to 0). The covered
    indicator is ray-traced through ``alpha (B, 2, n, n)`` [arcsec], exactly as the reconstruction itself is, so an
    image pixel is uncovered where its ``beta`` falls off the source grid or next to source pixels nothing reached.
    The result is detached: it selects pixels and must not reward the model for shrinking the covered area.
    """
    if min_weight <= 0:
        raise ValueError(f"min_weight must be > 0, got {min_weight}")
    check_field(source_weight, "source_weight", 1)
    covered = (source_weight.detach() >= min_weight).to(alpha.dtype)
    return ray_trace(covered, alpha.detach(), grid, source_grid)


def relensing_loss(
    image: torch.Tensor, relensed: torch.Tensor, mask: torch.Tensor | None = None, reduce: bool = True
) -> torch.Tensor:
    """Masked mean squared difference between ``image`` and ``relensed``, averaged over the batch; scalar (``(B,)``,
    one per image, with ``reduce=False``).

    ``image`` and ``relensed`` are ``(B, C, n, n)`` in image units (the DeepLense images are min-max normalised), so
    the loss is in image units squared. ``mask`` is a weight ``(B or 1, 1 or C, n, n)`` >= 0 on the image plane,
    e.g. :func:`image_plane_coverage`; ``None`` uses every pixel. Each image contributes its mask-weighted mean and
    one whose mask is empty contributes 0. The re-lensed image is a consistency check: multiple images of one source
    point must agree. Note the degenerate minimum: with ``kappa = 0`` reconstruction and re-lensing are the identity
    and the loss vanishes (up to round-off), so use it only with a small weight next to the classification loss.
    """
    check_field(image, "image", None)
    if relensed.shape != image.shape:
        raise ValueError(f"relensed must have the shape of image {tuple(image.shape)}, got {tuple(relensed.shape)}")
    squared = (image - relensed).square()
    if mask is None:
        per_image = squared.flatten(1).mean(1)
        return per_image.mean() if reduce else per_image
    batch, channels, n = image.shape[:3]
    if (
        mask.dim() != 4
        or mask.shape[0] not in (1, batch)
        or mask.shape[1] not in (1, channels)
        or mask.shape[2:] != (n, n)
    ):
        raise ValueError(f"mask must have shape ({batch} or 1, {channels} or 1, {n}, {n}), got {tuple(mask.shape)}")
    weight = mask.to(squared.dtype).expand_as(squared)
    numerator = (weight * squared).flatten(1).sum(1)
    # a weighted mean of non-negative values never exceeds their maximum, so the clamp only fades empty masks to 0
    denominator = weight.flatten(1).sum(1).clamp_min(torch.finfo(squared.dtype).eps)
    per_image = numerator / denominator
    return per_image.mean() if reduce else per_image


BACKGROUND_CUT = 3.0
"""Light counts in :func:`lens_consistency_loss` from this many noise sigmas above the background level."""
MISFIT_FLOOR = 1e-4
"""Image units^2 (min-max normalised images): the re-lensing misfit of the exact lens (bilinear interpolation, PSF)
on noiseless ``model_ii`` images, 1.3e-4; added to the noise variance so noiseless images do not divide by ~0."""
COMPACTNESS_WEIGHT = 10.0
"""Weight of the source-size ratio against the noise-normalised residual in :func:`lens_consistency_loss`: large
enough that ``kappa = 0`` (ratio 1) loses to the true lens (ratio ~0.1) by more than the noise the re-lensing
averages away (~1 in those units), small enough that the residual's sharp minimum at the true lens decides."""


def background_statistics(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Background level and noise sigma of each image ``(B, C, n, n)``: the median and ``1.4826`` median absolute
    deviation of its pixels, each ``(B, 1, 1, 1)``, in image units, detached (a lensed source covers a minority of
    the pixels, so both describe the sky)."""
    flat = images.detach().flatten(1)
    level = flat.median(dim=1).values
    sigma = 1.4826 * (flat - level[:, None]).abs().median(dim=1).values
    return level.view(-1, 1, 1, 1), sigma.view(-1, 1, 1, 1)


def light_second_moment(maps: torch.Tensor, grid: PixelGrid, cut: torch.Tensor) -> torch.Tensor:
    """Light-weighted second moment about the light's centroid, ``(B,)`` arcsec^2, of ``maps (B, 1, n, n)`` on
    ``grid`` with weights ``max(maps - cut, 0)`` (``cut (B, 1, 1, 1)``); 0 for a map with no light above the cut.
    Differentiable in ``maps``; D4-invariant."""
    check_field(maps, "maps", 1, grid)
    weight = (maps - cut).clamp_min(0)
    x, y = grid.coordinates(maps.dtype, maps.device)
    total = weight.flatten(1).sum(1).clamp_min(torch.finfo(maps.dtype).tiny)
    moment = lambda m: (weight * m).flatten(1).sum(1) / total  # noqa: E731
    mean_x, mean_y = moment(x), moment(y)
    return moment(x * x + y * y) - mean_x.square() - mean_y.square()


def lens_consistency_loss(
    images: torch.Tensor,
    relensed: torch.Tensor,
    source: torch.Tensor,
    mask: torch.Tensor,
    grid: PixelGrid,
    source_grid: PixelGrid | None = None,
) -> torch.Tensor:
    """Self-supervised lens loss of images ``(B, 1, n, n)``, scalar, dimensionless: the mean over the batch of

        residual / (sigma^2 + MISFIT_FLOOR) + COMPACTNESS_WEIGHT * size(source)^2 / size(image)^2

    ``residual``: the ``mask``-weighted mean of ``(images - relensed)^2`` (``mask`` from
    :func:`image_plane_coverage`), ``sigma``: the noise of :func:`background_statistics`, sizes: the
    :func:`light_second_moment` of the light above ``BACKGROUND_CUT`` sigmas, for the reconstructed ``source``
    ``(B, 1, m, m)`` on ``source_grid`` and for the image. The residual alone is minimised by ``kappa = 0`` (a
    source as fine as the image reproduces it); the size ratio, 1 at ``kappa = 0`` and ~0.1 for a lens that focuses
    the arcs back onto a compact source, removes that minimum. The ratio alone prefers lenses ~10% too strong (it
    focuses the light-weighted radius of the arcs, just outside the Einstein ring); the residual's sharp minimum
    at the true lens corrects that (measured: minimum over the lens scale at 1.00-1.05 on every preset).
    """
    source_grid = grid if source_grid is None else source_grid
    level, sigma = background_statistics(images)
    cut = level + BACKGROUND_CUT * sigma
    residual = relensing_loss(images, relensed, mask, reduce=False)
    image_size = light_second_moment(images, grid, cut).clamp_min(torch.finfo(images.dtype).tiny)
    ratio = light_second_moment(source, source_grid, cut) / image_size
    return (residual / (sigma.flatten().square() + MISFIT_FLOOR) + COMPACTNESS_WEIGHT * ratio).mean()


MACRO_TOLERANCES = {"theta_e": 0.02, "center": 0.5, "ellipticity": 0.02, "shear": 0.01}
"""The errors :func:`macro_parameter_loss` counts as 1: 2% of theta_E, half a pixel of centre, 0.02 of ellipticity,
0.01 of shear (the lens-quality targets)."""


def macro_parameter_loss(predicted: MacroLens, true: MacroLens, pixel_scale: float) -> dict[str, torch.Tensor]:
    """Squared errors of a macro-lens estimate in units of :data:`MACRO_TOLERANCES`, mean over the batch, by name.

    ``theta_e``: ``(delta theta_E / (0.02 theta_E))^2``; ``center``: ``|delta c|^2 / (0.5 pixel_scale)^2``
    (``pixel_scale`` in arcsec); ``ellipticity``, ``shear``: ``|delta e|^2 / 0.02^2``, ``|delta gamma|^2 / 0.01^2``;
    ``total``: their sum, so 4 is "every parameter at its tolerance". ``predicted``, ``true``: ``MacroLens`` of
    ``(B,)`` tensors (``true`` is detached by nature: it comes from the simulator).
    """
    t = MACRO_TOLERANCES
    terms = {
        "theta_e": ((predicted.theta_e - true.theta_e) / (t["theta_e"] * true.theta_e)).square().mean(),
        "center": ((predicted.center_x - true.center_x).square() + (predicted.center_y - true.center_y).square()).mean()
        / (t["center"] * pixel_scale) ** 2,
        "ellipticity": ((predicted.e1 - true.e1).square() + (predicted.e2 - true.e2).square()).mean()
        / t["ellipticity"] ** 2,
        "shear": ((predicted.gamma1 - true.gamma1).square() + (predicted.gamma2 - true.gamma2).square()).mean()
        / t["shear"] ** 2,
    }
    return {**terms, "total": sum(terms.values())}


def supervised_losses(output: ModelOutput, truth: Truth, weights: LossConfig, pixel_scale: float):
    """The supervised terms a model with a macro lens gets on simulations, by name, plus their weighted ``total``.

    ``macro``: :func:`macro_parameter_loss` ``total`` of ``output.maps.macro`` against ``truth.macro``;
    ``substructure``: mean squared difference of ``output.maps.delta_kappa`` and ``truth.substructure`` (both
    ``(B, 1, n, n)``, dimensionless). A term is computed when its weight is nonzero."""
    terms = {}
    if weights.macro:
        true_macro = MacroLens.from_tensor(truth.macro.to(output.maps.macro.theta_e))
        terms["macro"] = macro_parameter_loss(output.maps.macro, true_macro, pixel_scale)["total"]
    if weights.substructure:
        delta_kappa = output.maps.delta_kappa
        terms["substructure"] = (delta_kappa - truth.substructure.to(delta_kappa)).square().mean()
    return {**terms, "total": _weighted_total(terms, weights, output.logits)}


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of ``logits (B, K)`` against integer ``labels (B,)``, averaged over the batch; nats."""
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (B, K) and labels (B,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def physics_losses(
    output: ModelOutput,
    images: torch.Tensor,
    grid: PixelGrid,
    weights: PhysicsLossWeights | None = None,
    source_grid: PixelGrid | None = None,
) -> dict[str, torch.Tensor]:
    """Every applicable physics term of ``output``, unweighted, by name, plus ``"total"``, their weighted sum.

    ``images (B, 1, n, n)`` are the model's inputs on ``grid``; ``source_grid`` is the engine's source plane
    (default: ``grid``). A term is computed when its weight is nonzero and its maps are not ``None``: ``tv``, ``l1``,
    ``centre`` regularise the mass map the network predicts, ``delta_kappa`` (the substructure on top of a macro
    lens) when the model has one, else ``kappa``; ``poisson`` needs ``psi`` and ``kappa`` and is skipped with a
    macro lens (its analytic potential and the FFT solve are exact, so the residual measures only the display cap
    of the SIE centre); ``relensing`` needs ``relensed`` and is
    masked by :func:`image_plane_coverage` when ``source_weight`` and ``alpha`` are present too; ``consistency``
    needs all four and ``source``. For a model without
    maps the result is ``{"total": 0}``, so ``classification_loss(...) + result["total"]`` works for every model.
    A non-finite value shows up under its own name and in ``total``.
    """
    weights = PhysicsLossWeights() if weights is None else weights
    o = output.maps
    if not isinstance(o, KappaMaps):  # no convergence and engine maps: no physics term applies
        return {"total": _weighted_total({}, weights, output.logits)}

    @cache  # relensing and consistency share the mask: one ray trace
    def coverage() -> torch.Tensor | None:
        if o.source_weight is None or o.alpha is None:
            return None
        return image_plane_coverage(o.source_weight, o.alpha, grid, source_grid)

    mass = o.delta_kappa if isinstance(o, LensMaps) else o.kappa
    kappa_for_poisson = None if isinstance(o, LensMaps) else o.kappa
    candidates: dict[str, tuple[tuple[torch.Tensor | None, ...], Callable[[], torch.Tensor]]] = {
        "tv": ((mass,), lambda: total_variation(mass)),
        "l1": ((mass,), lambda: l1_sparsity(mass)),
        "centre": ((mass,), lambda: centre_penalty(mass, grid)),
        "poisson": ((o.psi, kappa_for_poisson), lambda: poisson_residual_loss(o.psi, o.kappa, grid)),
        "relensing": ((o.relensed,), lambda: relensing_loss(images, o.relensed, coverage())),
        "consistency": (
            (o.relensed, o.source, o.source_weight, o.alpha),
            lambda: lens_consistency_loss(images, o.relensed, o.source, coverage(), grid, source_grid),
        ),
    }
    terms = {
        name: compute()
        for name, (maps, compute) in candidates.items()
        if getattr(weights, name) != 0 and all(m is not None for m in maps)
    }
    return {**terms, "total": _weighted_total(terms, weights, output.logits)}


def _weighted_total(terms: dict[str, torch.Tensor], weights, like: torch.Tensor) -> torch.Tensor:
    """``sum(weights.<name> * term)`` over ``terms``, a scalar on ``like``'s device and dtype (0 without terms)."""
    total = like.new_zeros(())
    for name, value in terms.items():
        total = total + getattr(weights, name) * value
    return total
