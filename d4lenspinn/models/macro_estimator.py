"""A D4-equivariant estimate of the smooth macro lens (SIE + external shear) of each image.

An escnn U-Net turns the image into four scalar maps; fixed, parameter-free read-outs turn those into the seven
parameters, each with its D4 type, so the estimate is exactly equivariant by construction
(``estimate(g.x) == transform_macro(estimate(x), g)``)::

    image (B, 1, n, n) -> UNet (D4-equivariant, signed scalar maps)     h, w_r, w_e, w_g  (B, 4, n, n)
    centre   c  = sum_p softmax(h + log L)_p  p                         a vector: where the lens is
    theta_E     = sum_p softmax(w_r + log L)_p |p - c|                  invariant: the radius the ring map marks
    e (spin 2)  = squash(mean_p w_e(p) u(p - c))                        |e| < 1 by construction
    gamma       = mean_p w_g(p) u(p - c)                                spin 2, unbounded
    u(d) = ((d_x^2 - d_y^2), 2 d_x d_y) / |d|^2,  squash(s) = s tanh(|s|) / |s|

``p`` runs over the pixel centres in arcsec, so the grid's symmetry makes every read-out commute with D4, and
``L = max(I, 0) + 1e-3`` is the light of the first input channel (the image), a scalar field too. At initialisation
(zero head) the centre is therefore the light's centroid and ``theta_E`` the light-weighted radius about it (the
arcs lie near the Einstein ring), both parameter-free equivariant statistics the network then corrects; ``e`` and
``gamma`` start at 0. The read-out is its own module (:class:`MacroReadout`), so a U-Net that computes other maps
too (the lens model's shared trunk, :class:`~d4lenspinn.models.physics_informed.MacroPINN`) can feed it. Example::

    estimator = MacroEstimator(image_size=64, pixel_scale=0.101)
    macro = estimator(images)                    # MacroLens of (B,) tensors
    loss = macro_parameter_loss(macro, true_macro, pixel_scale=0.101)
    macro = MacroReadout(estimator.grid)(maps[:, :4], images)    # four scalar maps from any equivariant network
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..physics import MacroLens, PixelGrid
from .unet import UNet

__all__ = ["MacroEstimator", "MacroReadout"]

_EPS2 = 1e-12  # arcsec^2 / dimensionless^2: keeps |d| and |s| differentiable at 0
_LIGHT_FLOOR = 1e-3  # added to the (min-max normalised) image before its log: dark pixels keep a small weight


def _spin2_basis(dx: torch.Tensor, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos 2t, sin 2t)`` of the direction ``(dx, dy)``, differentiable everywhere."""
    r2 = dx * dx + dy * dy + _EPS2
    return (dx * dx - dy * dy) / r2, 2 * dx * dy / r2


class MacroReadout(nn.Module):
    """Four scalar maps ``(B, 4, n, n)`` ``(h, w_r, w_e, w_g)`` and the images ``(B, C, n, n)`` (channel 0: the
    image) -> :class:`~d4lenspinn.physics.MacroLens` of ``(B,)`` tensors; parameter-free, see the module doc."""

    n_maps = 4

    def __init__(self, grid: PixelGrid) -> None:
        super().__init__()
        self.grid = grid
        x, y = grid.coordinates(torch.float32)
        self.register_buffer("coordinates", torch.stack((x, y)), persistent=False)  # (2, n, n) arcsec

    def forward(self, maps: torch.Tensor, images: torch.Tensor) -> MacroLens:
        h, w_r, w_e, w_g = maps.flatten(2).unbind(dim=1)  # each (B, n*n)
        log_light = torch.log(images[:, 0].flatten(1).clamp_min(0) + _LIGHT_FLOOR)  # (B, n*n)
        x, y = self.coordinates.to(maps.dtype).flatten(1)  # (n*n,)
        weights = (h + log_light).softmax(dim=1)
        cx, cy = weights @ x, weights @ y  # (B,)
        dx, dy = x - cx[:, None], y - cy[:, None]  # (B, n*n)
        radius = torch.sqrt(dx * dx + dy * dy + _EPS2)
        theta_e = ((w_r + log_light).softmax(dim=1) * radius).sum(dim=1)
        u1, u2 = _spin2_basis(dx, dy)
        s1, s2 = (w_e * u1).mean(dim=1), (w_e * u2).mean(dim=1)
        size = torch.sqrt(s1 * s1 + s2 * s2 + _EPS2)
        squash = torch.tanh(size) / size
        gamma1, gamma2 = (w_g * u1).mean(dim=1), (w_g * u2).mean(dim=1)
        return MacroLens(theta_e, s1 * squash, s2 * squash, cx, cy, gamma1, gamma2)


class MacroEstimator(nn.Module):
    """Images ``(B, in_chans, n, n)`` -> :class:`~d4lenspinn.physics.MacroLens`, D4-equivariant; see the module doc.

    ``in_chans`` scalar input maps (the image, or the image and its invariant preprocessed maps); ``widths``: the
    U-Net's regular fields per level; ``equivariant=False``: the plain U-Net of the same topology (the read-outs
    stay exact, the maps they read do not).
    """

    def __init__(
        self,
        image_size: int,
        pixel_scale: float,
        in_chans: int = 1,
        widths: tuple[int, ...] = (2, 4, 8, 16),
        equivariant: bool = True,
    ) -> None:
        super().__init__()
        self.grid = PixelGrid(image_size, pixel_scale)
        self.unet = UNet(
            in_chans,
            image_size,
            tuple(widths),
            equivariant=equivariant,
            out_channels=MacroReadout.n_maps,
            non_negative=False,
        )
        head = self.unet.blocks["head"]
        for parameter in head.parameters():  # start from the centred, round, unsheared lens
            nn.init.zeros_(parameter)
        self.readout = MacroReadout(self.grid)

    def export(self) -> MacroEstimator:
        """A copy whose U-Net is plain torch (escnn ``export``), in eval mode, with the same estimates."""
        exported = copy.copy(self)
        exported._modules = dict(self._modules)
        exported.unet = self.unet.export()
        return exported.eval()

    def forward(self, images: torch.Tensor) -> MacroLens:
        return self.readout(self.unet(images), images)
