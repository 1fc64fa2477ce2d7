"""The parameters of a batch of simulated lenses (:class:`LensSample`): what the truth files store.

Every image the simulator makes is a pure function of its row of a :class:`LensSample` and its noise generator, so the
noiseless image, a version without substructure and the true convergence can all be recomputed exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

__all__ = ["LensSample"]


@dataclass
class LensSample:
    """Parameters of ``B`` simulated lenses: float64 tensors ``(B,)``, subhalo tensors ``(B, K)``, knot tensors
    ``(B, J)`` (``J`` = the preset's ``max_knots``, 0 for sources without knots).

    Angles in arcsec (positions) or radians (``*_phi``, ``vortex_angle``), masses in Msun, exposure in seconds (the
    total exposure), ``source_amplitude`` and ``knot_amplitude`` in brightness per pixel. Absent substructure has zero
    mass, absent knots zero amplitude. Subhalo and vortex positions are relative to the lens centre; knot positions
    are absolute source-plane positions.
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
    source_amplitude: torch.Tensor  # the main Sersic's brightness at its half-light radius
    exposure: torch.Tensor
    subhalo_x: torch.Tensor
    subhalo_y: torch.Tensor
    subhalo_mass: torch.Tensor
    vortex_mass: torch.Tensor
    vortex_angle: torch.Tensor
    vortex_half_length: torch.Tensor
    axion_mass: torch.Tensor  # eV (0 where there is no vortex)
    psf_fwhm: torch.Tensor  # Gaussian PSF width of this image, arcsec (NaN in old truth files: the preset's)
    peak_snr: torch.Tensor  # max of the noiseless image / background sigma (d4lenspinn.data.noise); inf: noiseless;
    # 0: none drawn, the noise follows the preset's own recipe (faithful presets)
    shot_noise_fraction: torch.Tensor  # source shot-noise variance at the peak / background variance (peak_snr)
    knot_x: torch.Tensor  # (B, J) round n = 1 Sersic knots of a clumpy source: centres, arcsec
    knot_y: torch.Tensor
    knot_radius: torch.Tensor  # (B, J) half-light radii, arcsec
    knot_amplitude: torch.Tensor  # (B, J) brightness at the half-light radius; 0: no knot

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
        """Inverse of :meth:`to_numpy` (extra keys are ignored). Truth files written before a parameter existed read
        as the images they hold were made: lens centre 0, the preset's PSF width (NaN) and noise recipe (peak SNR 0), no
        knots."""
        count = len(np.asarray(arrays["label"]))
        defaults = {
            "lens_x": np.zeros(count),
            "lens_y": np.zeros(count),
            "psf_fwhm": np.full(count, math.nan),
            "peak_snr": np.zeros(count),
            "shot_noise_fraction": np.zeros(count),
            **{name: np.zeros((count, 0)) for name in ("knot_x", "knot_y", "knot_radius", "knot_amplitude")},
        }
        return cls(**{f.name: torch.from_numpy(np.asarray({**defaults, **arrays}[f.name])) for f in fields(cls)})

    @classmethod
    def concatenate(cls, samples: list[LensSample]) -> LensSample:
        return cls(**{f.name: torch.cat([getattr(s, f.name) for s in samples]) for f in fields(cls)})


def as_map(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B,)`` parameters -> ``(B, 1, 1)`` on ``like``'s device and dtype, to broadcast against ``(n, n)`` maps."""
    return values.to(device=like.device, dtype=like.dtype).reshape(-1, 1, 1)
