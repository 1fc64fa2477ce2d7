"""Simulation presets: DeepLenseSim's Model I (Common Test I), Model II (Euclid) and Model III (HST), and "hard".

Every lens and source parameter is a ``(low, high)`` range sampled uniformly; a fixed value is ``(v, v)``. The
``hard`` variant of a preset widens the main-lens and source ranges (see :func:`get_preset` and docs/data.md).
Angles in arcsec, masses in solar masses, exposure in seconds, brightness in counts per second per pixel.

The presets follow DeepLenseSim's public source (mwt5345/DeepLenseSim, ``deeplense/lens.py``). Model I renders with
lenstronomy's ``ImageModel`` and its own noise recipe (:attr:`SimulationPreset.camera` ``None``); Models II and III
go through lenstronomy's ``SimAPI`` with an instrument (:class:`Camera`), a source of magnitude 20 and lens
redshifts, which rescales every deflection of the lens plane (:data:`SIMAPI_DEFLECTION_SCALE`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

__all__ = ["Camera", "SimulationPreset", "PRESETS", "get_preset", "DEEPLENSE_THETA_E", "SIMAPI_DEFLECTION_SCALE"]

Range = tuple[float, float]

# DeepLenseSim's main halo, 1e12 Msun at z_l = 0.5 lensing a source at z_s = 1.0: Einstein radius from its
# ``mass_to_radius`` (FlatLambdaCDM H0 = 70, Om0 = 0.3, with luminosity distances as that function uses them)
DEEPLENSE_THETA_E = 1.28149
# Models II/III: SimAPI with z_source_convention = 2.5 and the source at z_s = 1.0 scales the deflection of every
# z = 0.5 lens by beta = (D_ls / D_s)(z_s = 1.0) / (D_ls / D_s)(z_s = 2.5) (lenstronomy's beta_double_source_plane)
SIMAPI_DEFLECTION_SCALE = 0.633738


@dataclass(frozen=True)
class Camera:
    """A single-band instrument as lenstronomy's ``SimAPI`` models it (``ObservationConfig``), in electrons.

    The noise is Gaussian: background ``sqrt(num_exposures * read_noise^2 + T * sky per pixel) / T`` plus the
    Poisson approximation ``sqrt(image / T)`` [e-/s], with ``T = num_exposures * exposure_time``.
    """

    exposure_time: float  # seconds per exposure
    num_exposures: int
    sky_brightness: float  # mag / arcsec^2
    magnitude_zero_point: float  # magnitude of a source giving 1 e-/s
    read_noise: float  # e- per exposure

    @property
    def total_exposure(self) -> float:
        return self.exposure_time * self.num_exposures

    def counts_per_second(self, magnitude):
        """Total e-/s of a source of apparent ``magnitude``."""
        return 10 ** (0.4 * (self.magnitude_zero_point - magnitude))

    def background_sigma(self, pixel_scale: float) -> float:
        """Gaussian background noise per pixel [e-/s]: read-out noise and sky shot noise."""
        sky = self.counts_per_second(self.sky_brightness) * pixel_scale**2 * self.total_exposure
        return math.sqrt(self.num_exposures * self.read_noise**2 + sky) / self.total_exposure


# lenstronomy 1.14.1 ObservationConfig: Euclid(band="VIS", psf_type="GAUSSIAN", coadd_years=6), HST(band="WFC3_F160W")
EUCLID_VIS = Camera(
    exposure_time=566.0, num_exposures=4, sky_brightness=22.3, magnitude_zero_point=25.72, read_noise=4.2
)
HST_WFC3_F160W = Camera(
    exposure_time=5400.0, num_exposures=1, sky_brightness=22.3, magnitude_zero_point=25.96, read_noise=4.0
)


@dataclass(frozen=True)
class SimulationPreset:
    """Everything that defines a simulated dataset except its size and seed."""

    name: str
    n_pixels: int
    pixel_scale: float  # arcsec / pixel
    psf_fwhm: float  # arcsec, Gaussian PSF
    psf_truncation: float = 4.0  # kernel radius round(truncation * sigma) pixels, as lenstronomy's PSF
    # noise: camera None is DeepLenseSim's Model I recipe (Gaussian Poisson approximation + background, then Poisson
    # counts of the clipped image, exposure 10^U(3, 3.5) s); a Camera is SimAPI's instrument noise
    camera: Camera | None = None
    log10_exposure: Range = (3.0, 3.5)  # seconds; Model I recipe only
    background_rms: float = 1e-2  # Gaussian background noise, brightness units; Model I recipe only
    # main lens: SIE (+ external shear)
    theta_e: Range = (DEEPLENSE_THETA_E, DEEPLENSE_THETA_E)
    lens_e1: Range = (0.1, 0.1)
    lens_e2: Range = (0.0, 0.0)
    shear_gamma1: Range = (0.05, 0.05)
    shear_gamma2: Range = (0.0, 0.0)
    lens_center: Range = (0.0, 0.0)  # SIE centre, per axis, arcsec; substructure is placed around it
    main_halo_mass: float = 1e12  # Msun; substructure Einstein radii scale as sqrt(m / main_halo_mass) * theta_e
    # source: elliptical Sersic
    source_radius: Range = (0.25, 0.25)  # half-light radius, arcsec
    source_sersic_n: Range = (1.0, 1.0)
    source_e1: Range = (-0.1, -0.1)
    source_e2: Range = (0.1, 0.1)
    source_offset: Range = (-0.35, 0.35)  # centre, per axis, arcsec
    source_amplitude: Range = (0.05, 0.05)  # brightness at the half-light radius (Model I: amp 20 per arcsec^2)
    source_magnitude: Range = (20.0, 20.0)  # apparent magnitude, with a camera (then it sets the amplitude)
    # "sphere" (CDM): point-mass subhalos
    n_subhalos: int = 25
    subhalo_mass: Range = (1e6, 1e10)
    subhalo_slope: float = 0.9  # dN/dm ~ m^-slope; 0.9 as DeepLenseSim samples (1.9 is the CDM slope)
    subhalo_radius: Range = (0.25, 2.0)  # distance from the lens centre, arcsec
    # "vort" (axion): a line of mass through the lens centre
    vortex_mass: float = 3e10
    log10_axion_mass: Range = (-24.0, -22.0)  # eV; half-length L = 0.06 / (2 m_a) * 1e-22 arcsec
    vortex_profile: str = "points"  # "points": equal point masses from -L to L (DeepLenseSim); "segment": closed form
    vortex_points: int = 100  # point masses when vortex_profile == "points"

    def __post_init__(self) -> None:
        if self.vortex_profile not in ("segment", "points"):
            raise ValueError(f"vortex_profile must be 'segment' or 'points', got {self.vortex_profile!r}")
        for field, value in asdict(self).items():
            if isinstance(value, tuple) and (len(value) != 2 or value[0] > value[1]):
                raise ValueError(f"{field} must be a (low, high) range with low <= high, got {value!r}")
        if self.n_pixels < 8 or self.pixel_scale <= 0 or self.psf_fwhm <= 0 or self.psf_truncation <= 0:
            raise ValueError(
                f"preset {self.name!r}: need n_pixels >= 8, pixel_scale > 0, psf_fwhm > 0 and psf_truncation > 0, "
                f"got {self.n_pixels}, {self.pixel_scale}, {self.psf_fwhm}, {self.psf_truncation}"
            )
        if self.camera is not None and not isinstance(self.camera, Camera):
            raise ValueError(f"preset {self.name!r}: camera must be a Camera or None, got {self.camera!r}")

    @classmethod
    def from_dict(cls, values: dict) -> SimulationPreset:
        """Inverse of ``dataclasses.asdict`` after a JSON round trip (lists back to ranges, the camera rebuilt)."""
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        if isinstance(values.get("camera"), dict):
            values["camera"] = Camera(**values["camera"])
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def _simapi_preset(name: str, pixel_scale: float, seeing: float, camera: Camera) -> SimulationPreset:
    """A 64 x 64 DeepLenseSim preset rendered through SimAPI: its PSF (5 sigma) and the lens plane scaled by beta
    (theta_E = 0.812", shear 0.0317, subhalo theta_E^2 = beta theta_E(m)^2, i.e. main mass beta M)."""
    beta = SIMAPI_DEFLECTION_SCALE
    return SimulationPreset(
        name,
        n_pixels=64,
        pixel_scale=pixel_scale,
        psf_fwhm=seeing,
        psf_truncation=5.0,
        camera=camera,
        theta_e=(DEEPLENSE_THETA_E * beta,) * 2,
        shear_gamma1=(0.05 * beta,) * 2,
        main_halo_mass=1e12 * beta,
    )


PRESETS: dict[str, SimulationPreset] = {
    # Model I (Common Test I): 150 x 150 at 0.05"/pixel, FWHM 0.087" truncated at 3 sigma, Model I noise
    "model_i": SimulationPreset("model_i", n_pixels=150, pixel_scale=0.05, psf_fwhm=0.087, psf_truncation=3.0),
    # Model II: Euclid VIS, 0.101"/pixel, seeing 0.16"
    "model_ii": _simapi_preset("model_ii", pixel_scale=0.101, seeing=0.16, camera=EUCLID_VIS),
    # Model III: HST WFC3 F160W, 0.08"/pixel, seeing 0.08"
    "model_iii": _simapi_preset("model_iii", pixel_scale=0.08, seeing=0.08, camera=HST_WFC3_F160W),
}

# widened main lens and source for the "hard" variant (absolute ranges, the same for every preset)
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
)
_HARD_AMPLITUDE = (0.025, 0.1)  # presets without a camera: half to twice Model I's 0.05
_HARD_MAGNITUDE = (19.25, 20.75)  # presets with a camera: twice to half the flux of magnitude 20


def get_preset(name: str, hard: bool = False, **overrides) -> SimulationPreset:
    """The preset ``name`` (``model_i``, ``model_ii``, ``model_iii``), optionally hardened, with fields overridden."""
    if name not in PRESETS:
        raise ValueError(f"unknown simulation preset {name!r}; valid presets: {sorted(PRESETS)}")
    preset = PRESETS[name]
    if hard:
        brightness = {"source_magnitude": _HARD_MAGNITUDE} if preset.camera else {"source_amplitude": _HARD_AMPLITUDE}
        preset = replace(preset, name=f"{name}_hard", **_HARD, **brightness)
    return replace(preset, **overrides) if overrides else preset
