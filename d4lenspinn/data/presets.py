"""Simulation presets: DeepLenseSim's Model I (Common Test I), Model II (Euclid) and Model III (HST), and their broad
variants.

Every lens and source parameter is a ``(low, high)`` range sampled uniformly (log-uniformly where the field says so);
a fixed value is ``(v, v)``. The faithful presets ``model_i``, ``model_ii``, ``model_iii`` reproduce DeepLenseSim;
the broad presets ``model_i_broad``, ``model_ii_broad``, ``model_iii_broad`` keep each instrument's grid and nominal
PSF and draw the lens, source, noise, PSF width and substructure from wide ranges (:data:`BROAD_RANGES`,
docs/data.md). Angles in arcsec, masses in solar masses, exposure in seconds, brightness in counts per second per
pixel.

The presets follow DeepLenseSim's public source (mwt5345/DeepLenseSim, ``deeplense/lens.py``). Model I renders with
lenstronomy's ``ImageModel`` and its own noise recipe (:attr:`SimulationPreset.camera` ``None``); Models II and III
go through lenstronomy's ``SimAPI`` with an instrument (:class:`Camera`), a source of magnitude 20 and lens
redshifts, which rescales every deflection of the lens plane (:data:`SIMAPI_DEFLECTION_SCALE`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

__all__ = [
    "Camera",
    "SimulationPreset",
    "PRESETS",
    "FAITHFUL_PRESETS",
    "BROAD_RANGES",
    "get_preset",
    "DEEPLENSE_THETA_E",
    "SIMAPI_DEFLECTION_SCALE",
]

Range = tuple[float, float]
Count = tuple[int, int]  # (low, high), both included

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
    psf_fwhm: float  # arcsec, Gaussian PSF (nominal: each image's width is psf_fwhm times a draw of psf_scale)
    psf_truncation: float = 4.0  # kernel radius round(truncation * sigma) pixels, as lenstronomy's PSF
    psf_scale: Range = (1.0, 1.0)  # per-image PSF width / psf_fwhm
    # noise: camera None is DeepLenseSim's Model I recipe (Gaussian Poisson approximation + background, then Poisson
    # counts of the clipped image, exposure 10^U(3, 3.5) s); a Camera is SimAPI's instrument noise. peak_snr (not
    # None) replaces both: Gaussian noise set by a peak signal-to-noise per image (see d4lenspinn.data.noise)
    camera: Camera | None = None
    log10_exposure: Range = (3.0, 3.5)  # seconds; Model I recipe only
    background_rms: float = 1e-2  # Gaussian background noise, brightness units; Model I recipe only
    peak_snr: Range | None = None  # log-uniform: max of the noiseless image / background sigma
    noiseless_fraction: float = 0.0  # share of images without noise (peak_snr inf); needs peak_snr
    shot_noise_fraction: Range = (0.0, 1.0)  # source shot-noise variance at the peak / background variance
    # main lens: SIE (+ external shear)
    theta_e: Range = (DEEPLENSE_THETA_E, DEEPLENSE_THETA_E)
    lens_e1: Range = (0.1, 0.1)
    lens_e2: Range = (0.0, 0.0)
    shear_gamma1: Range = (0.05, 0.05)
    shear_gamma2: Range = (0.0, 0.0)
    lens_center: Range = (0.0, 0.0)  # SIE centre, per axis, arcsec; substructure is placed around it
    main_halo_mass: float = 1e12  # Msun; substructure Einstein radii scale as sqrt(m / main_halo_mass) * theta_e
    # source: elliptical Sersic, and in a share of images Sersic knots on top (a clumpy source)
    source_radius: Range = (0.25, 0.25)  # half-light radius, arcsec
    source_sersic_n: Range = (1.0, 1.0)
    source_e1: Range = (-0.1, -0.1)
    source_e2: Range = (0.1, 0.1)
    source_offset: Range = (-0.35, 0.35)  # centre, per axis, arcsec
    source_amplitude: Range = (0.05, 0.05)  # brightness at the half-light radius (Model I: amp 20 per arcsec^2)
    source_magnitude: Range = (20.0, 20.0)  # apparent magnitude, with a camera (then it sets the amplitude)
    clumpy_fraction: float = 0.0  # share of sources with knots
    n_knots: Count = (2, 6)  # knots of a clumpy source, uniform integer
    knot_radius: Range = (0.03, 0.12)  # half-light radius of each round n = 1 Sersic knot, arcsec
    knot_flux_fraction: Range = (0.2, 0.5)  # the knots' share of the source's total flux
    knot_spread: float = 1.5  # knots lie uniformly in a disc of this many source half-light radii
    # "sphere" (CDM): point-mass subhalos
    subhalo_count: Count = (25, 25)  # subhalos per lens, uniform integer (absent ones have zero mass)
    subhalo_mass: Range = (1e6, 1e10)
    subhalo_slope: float = 0.9  # dN/dm ~ m^-slope; 0.9 as DeepLenseSim samples (1.9 is the CDM slope)
    subhalo_radius: Range = (0.25, 2.0)  # distance from the lens centre, arcsec
    # "vort" (axion): a line of mass through the lens centre
    vortex_mass: Range = (3e10, 3e10)  # Msun, log-uniform
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
        self._check_broad_fields()

    def _check_broad_fields(self) -> None:
        """Ranges of the per-image noise, PSF, knots and substructure counts (each names the field and the need)."""
        need = {
            "psf_scale": self.psf_scale[0] > 0,
            "peak_snr": self.peak_snr is None or (0 < self.peak_snr[0] and math.isfinite(self.peak_snr[1])),
            "noiseless_fraction": 0 <= self.noiseless_fraction <= 1
            and (self.peak_snr is not None or self.noiseless_fraction == 0),
            "shot_noise_fraction": self.shot_noise_fraction[0] >= 0,
            "clumpy_fraction": 0 <= self.clumpy_fraction <= 1,
            "n_knots": all(isinstance(k, int) for k in self.n_knots) and self.n_knots[0] >= 1,
            "knot_radius": self.knot_radius[0] > 0,
            "knot_flux_fraction": 0 <= self.knot_flux_fraction[0] and self.knot_flux_fraction[1] < 1,
            "knot_spread": self.knot_spread > 0,
            "subhalo_count": all(isinstance(k, int) for k in self.subhalo_count) and self.subhalo_count[0] >= 0,
            "vortex_mass": self.vortex_mass[0] > 0,
        }
        expected = {
            "psf_scale": "a range of positive factors",
            "peak_snr": "None or a finite range of positive signal-to-noise ratios",
            "noiseless_fraction": "a share in [0, 1], and 0 unless peak_snr is set",
            "shot_noise_fraction": "a range of fractions >= 0",
            "clumpy_fraction": "a share in [0, 1]",
            "n_knots": "a range of whole numbers >= 1",
            "knot_radius": "a range of radii > 0 [arcsec]",
            "knot_flux_fraction": "a range of shares in [0, 1)",
            "knot_spread": "> 0 source half-light radii",
            "subhalo_count": "a range of whole numbers >= 0",
            "vortex_mass": "a range of masses > 0 [Msun]",
        }
        for field, ok in need.items():
            if not ok:
                raise ValueError(
                    f"preset {self.name!r}: {field} must be {expected[field]}, got {getattr(self, field)!r}"
                )

    @property
    def n_subhalos(self) -> int:
        """Subhalo slots per lens (the width of the subhalo arrays): the most subhalos a lens can have."""
        return self.subhalo_count[1]

    @property
    def max_knots(self) -> int:
        """Knot slots per source (the width of the knot arrays): 0 when no source is clumpy."""
        return self.n_knots[1] if self.clumpy_fraction > 0 else 0

    def training_prior(self) -> dict:
        """What a model trained on this preset has seen, for its model card and ``predict``'s ``outside_prior``
        flag: ``theta_e`` [arcsec] and ``peak_snr`` ranges (``None``: the preset's own noise recipe, no peak SNR
        drawn) and whether noiseless images were among them."""
        peak = None if self.peak_snr is None else list(self.peak_snr)
        return {"theta_e": list(self.theta_e), "peak_snr": peak, "noiseless": self.noiseless_fraction > 0}

    @classmethod
    def from_dict(cls, values: dict) -> SimulationPreset:
        """Inverse of ``dataclasses.asdict`` after a JSON round trip (lists back to ranges, the camera rebuilt).

        Manifests written before a field became a range read as before: ``n_subhalos: k`` as ``subhalo_count
        (k, k)``, a single ``vortex_mass`` as ``(m, m)``; fields added later read as their defaults."""
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        if isinstance(values.get("camera"), dict):
            values["camera"] = Camera(**values["camera"])
        if "n_subhalos" in values and "subhalo_count" not in values:
            values["subhalo_count"] = (values["n_subhalos"],) * 2
        if isinstance(values.get("vortex_mass"), (int, float)):
            values["vortex_mass"] = (float(values["vortex_mass"]),) * 2
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

# the broad prior (issue 19): the same absolute ranges for every instrument; each keeps its grid, nominal PSF,
# source brightness and main-halo mass (the SimAPI convention of Models II/III)
BROAD_RANGES = dict(
    theta_e=(0.6, 1.6),  # both DeepLenseSim conventions: 0.81" (SimAPI's scaling) and 1.28"
    lens_e1=(-0.2, 0.2),
    lens_e2=(-0.2, 0.2),
    shear_gamma1=(-0.1, 0.1),
    shear_gamma2=(-0.1, 0.1),
    lens_center=(-0.3, 0.3),
    source_radius=(0.1, 0.5),
    source_sersic_n=(0.5, 4.0),
    source_e1=(-0.3, 0.3),
    source_e2=(-0.3, 0.3),
    clumpy_fraction=0.5,
    n_knots=(2, 6),
    knot_radius=(0.03, 0.12),
    knot_flux_fraction=(0.2, 0.5),
    knot_spread=1.5,
    peak_snr=(10.0, 1000.0),
    noiseless_fraction=0.1,
    shot_noise_fraction=(0.0, 1.0),
    psf_scale=(0.7, 1.3),
    subhalo_count=(10, 40),
    vortex_mass=(1e10, 1e11),
    log10_axion_mass=(-24.5, -21.5),
)
FAITHFUL_PRESETS = ("model_i", "model_ii", "model_iii")  # DeepLenseSim's recipes; each has a *_broad variant
for _name in FAITHFUL_PRESETS:
    PRESETS[f"{_name}_broad"] = replace(PRESETS[_name], name=f"{_name}_broad", **BROAD_RANGES)


def get_preset(name: str, **overrides) -> SimulationPreset:
    """The preset ``name`` (one of :data:`PRESETS`: ``model_i``, ``model_ii``, ``model_iii`` and their ``*_broad``
    variants) with fields overridden."""
    if name not in PRESETS:
        raise ValueError(f"unknown simulation preset {name!r}; valid presets: {sorted(PRESETS)}")
    preset = PRESETS[name]
    return replace(preset, **overrides) if overrides else preset
