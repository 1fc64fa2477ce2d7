"""Simulation presets: the DeepLenseSim "Model I" recipe behind Common Test I, a Euclid-like Model II, and "hard".

Every lens and source parameter is a ``(low, high)`` range sampled uniformly; a fixed value is ``(v, v)``. The
``hard`` variant of a preset widens the main-lens and source ranges (see :func:`get_preset` and docs/data.md).
Angles in arcsec, masses in solar masses, exposure in seconds, brightness in counts per second per pixel.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

__all__ = ["SimulationPreset", "PRESETS", "get_preset"]

Range = tuple[float, float]


@dataclass(frozen=True)
class SimulationPreset:
    """Everything that defines a simulated dataset except its size and seed."""

    name: str
    n_pixels: int
    pixel_scale: float  # arcsec / pixel
    psf_fwhm: float  # arcsec, Gaussian PSF
    log10_exposure: Range = (3.0, 3.5)  # seconds; Poisson noise on the counts
    background_rms: float = 1e-2  # Gaussian background noise, brightness units
    # main lens: SIE (+ external shear); theta_e ~ 1.28" for a 1e12 Msun halo at z_l = 0.5, z_s = 1.0
    theta_e: Range = (1.28, 1.28)
    lens_e1: Range = (0.1, 0.1)
    lens_e2: Range = (0.0, 0.0)
    shear_gamma1: Range = (0.05, 0.05)
    shear_gamma2: Range = (0.0, 0.0)
    lens_center: Range = (0.0, 0.0)  # SIE centre, per axis, arcsec; substructure is placed around it
    main_halo_mass: float = 1e12  # Msun; substructure Einstein radii scale as sqrt(m / main_halo_mass)
    # source: elliptical Sersic
    source_radius: Range = (0.25, 0.25)  # half-light radius, arcsec
    source_sersic_n: Range = (1.0, 1.0)
    source_e1: Range = (-0.1, -0.1)
    source_e2: Range = (0.1, 0.1)
    source_offset: Range = (-0.35, 0.35)  # centre, per axis, arcsec
    source_amplitude: Range = (0.1, 0.1)  # brightness at the half-light radius
    # "sphere" (CDM): point-mass subhalos
    n_subhalos: int = 25
    subhalo_mass: Range = (1e6, 1e10)
    subhalo_slope: float = 0.9  # dN/dm ~ m^-slope; 0.9 as DeepLenseSim samples (1.9 is the CDM slope)
    subhalo_radius: Range = (0.25, 2.0)  # distance from the lens centre, arcsec
    # "vort" (axion): a uniform line of mass through the lens centre
    vortex_mass: float = 3e10
    log10_axion_mass: Range = (-24.0, -22.0)  # eV; half-length L = 0.06 / (2 m_a) * 1e-22 arcsec
    vortex_profile: str = "segment"  # "segment" (closed form) or "points" (discretised, as DeepLenseSim)
    vortex_points: int = 50  # point masses when vortex_profile == "points"

    def __post_init__(self) -> None:
        if self.vortex_profile not in ("segment", "points"):
            raise ValueError(f"vortex_profile must be 'segment' or 'points', got {self.vortex_profile!r}")
        for field, value in asdict(self).items():
            if isinstance(value, tuple) and (len(value) != 2 or value[0] > value[1]):
                raise ValueError(f"{field} must be a (low, high) range with low <= high, got {value!r}")
        if self.n_pixels < 8 or self.pixel_scale <= 0 or self.psf_fwhm <= 0:
            raise ValueError(
                f"preset {self.name!r}: need n_pixels >= 8, pixel_scale > 0 and psf_fwhm > 0, got "
                f"{self.n_pixels}, {self.pixel_scale}, {self.psf_fwhm}"
            )


PRESETS: dict[str, SimulationPreset] = {
    # DeepLenseSim Model I (Common Test I): 150 x 150 at 0.05"/pixel, FWHM 0.087"
    "model_i": SimulationPreset("model_i", n_pixels=150, pixel_scale=0.05, psf_fwhm=0.087),
    # Euclid-VIS-like: 64 x 64 at 0.101"/pixel, seeing 0.16"
    "model_ii": SimulationPreset("model_ii", n_pixels=64, pixel_scale=0.101, psf_fwhm=0.16),
}

# widened main lens and source for the "hard" variant
_HARD = dict(
    theta_e=(0.9, 1.6),
    lens_e1=(-0.2, 0.2),
    lens_e2=(-0.2, 0.2),
    shear_gamma1=(-0.08, 0.08),
    shear_gamma2=(-0.08, 0.08),
    lens_center=(-0.3, 0.3),
    source_radius=(0.15, 0.4),
    source_sersic_n=(0.7, 2.5),
    source_e1=(-0.25, 0.25),
    source_e2=(-0.25, 0.25),
    source_amplitude=(0.05, 0.2),
)


def get_preset(name: str, hard: bool = False, **overrides) -> SimulationPreset:
    """The preset ``name`` (``model_i``, ``model_ii``), optionally hardened and with fields overridden."""
    if name not in PRESETS:
        raise ValueError(f"unknown simulation preset {name!r}; valid presets: {sorted(PRESETS)}")
    preset = PRESETS[name]
    if hard:
        preset = replace(preset, name=f"{name}_hard", **_HARD)
    return replace(preset, **overrides) if overrides else preset
