"""The lenstronomy shift grid of benchmarks/shift.py: named cells, their lenses drawn in numpy, rendered and written.

Two instruments, each a faithful preset's grid, PSF and noise level (:func:`instrument`): ``model_ii`` (the default),
Euclid VIS as lenstronomy's ``Euclid(band="VIS", psf_type="GAUSSIAN", coadd_years=6)`` defines it, 64 x 64 pixels of
0.101", Gaussian PSF of FWHM 0.16" truncated at 5 sigma, background 24.69 e- per pixel; and ``model_i`` (Common Test
I), 150 x 150 pixels of 0.05", FWHM 0.087" truncated at 3 sigma (DeepLenseSim's), background 17.8 e- per pixel
(Model I's background rms 0.01 times its median exposure of 10^3.25 s).
Every parameter is drawn here with ``numpy.random.default_rng`` (seeded per cell and class), never by our simulator,
and every image is rendered by lenstronomy's ``ImageModel`` (supersampling 3): ``SIE + SHEAR + POINT_MASS...`` lens,
``SERSIC_ELLIPSE`` source (plus ``SERSIC_ELLIPSE`` knots for clumpy sources).

Noise rule (peak SNR = max of the noiseless PSF-convolved image / std per pixel of the background noise):
the image is scaled to electrons so that its peak is ``peak_snr * sigma_b``, with ``sigma_b`` the instrument's
background in electrons per pixel; the noisy image is ``Poisson(image) + Normal(0, sigma_b)`` (shot noise of the
source's own electrons plus the background), then min-max normalised to [0, 1] as DeepLense data. A noiseless cell
(``peak_snr = inf``) is the normalised image itself.

The control cell ``<instrument>_template`` renders that faithful preset's own fixed lens and source (DeepLenseSim's:
Model II theta_E 0.812", e1 0.1, shear 0.0317; Model I theta_E 1.281", e1 0.1, shear 0.05; source R 0.25", n 1,
centre U(-0.35, 0.35)") at the preset's peak SNR (Model II 300; Model I 22, the median of the model_i preset's
noiseless peak over its background rms) with the grid's substructure: it is reported beside the grid but pooled with
neither part.

Reference lens (and what the grid cells vary, one axis at a time): theta_E 1.0", lens centre U(-0.1, 0.1)" per axis;
mild lens |e| U(0, 0.05), |gamma| U(0, 0.03) at uniform angles (strong: |e| U(0.15, 0.2), |gamma| U(0.07, 0.1);
beyond the prior: |e| = 0.3, |gamma| = 0.15, so max(|e1|, |e2|) >= 0.21 and max(|g1|, |g2|) >= 0.106 lie outside
the +-0.2 / +-0.1 prior box); Sersic source R U(0.15, 0.35)", n U(0.7, 2.5), e1/e2 U(-0.2, 0.2), centre lens centre
+ U(-0.15, 0.15)"; clumpy sources add 2-6 knots (R U(0.02, 0.06)", n 1, offsets Normal(0, R) from the source
centre) carrying U(0.2, 0.5) of the total flux, split by a flat Dirichlet. Substructure as the broad prior:
``sphere`` 10-40 point masses of 1e6-1e10 Msun (dN/dm ~ m^-0.9) at radius U(0.25, 2.0)" from the lens centre,
theta_E(m)^2 = theta_E^2 m / M_main (the preset's main-halo mass: Model II 0.633738e12 Msun through SimAPI's
deflection scale, Model I 1e12 Msun); ``vort`` 100 equal point masses on a line through
the lens centre at angle U(0, pi), total mass log-uniform 1e10-1e11 Msun, half-length 0.06 / (2 m_a) 1e-22" with
log10 m_a U(-24.5, -21.5). The sensitivity set widens the masses so detection can be read as a function of them:
the upper subhalo mass limit of each image is log-uniform in 1e7-1e10 Msun, the vortex mass in 1e9-1e11 Msun.
"""

from __future__ import annotations

import functools
import json
import math
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from d4lenspinn.classes import CLASS_NAMES, SUBHALOS, VORTEX
from d4lenspinn.data.presets import get_preset
from d4lenspinn.io import atomic_path, write_text
from d4lenspinn.progress import progress_bar

SUPERSAMPLING = 3
VORTEX_POINTS = 100
SUBHALO_SLOPE = 0.9  # dN/dm ~ m^-slope
FORMAT = 1  # bump when the drawing or rendering changes: cells written before are then rebuilt
LENS_SHAPES = {  # (|e| range, |gamma| range)
    "mild": ((0.0, 0.05), (0.0, 0.03)),
    "strong": ((0.15, 0.2), (0.07, 0.1)),
    "beyond": ((0.3, 0.3), (0.15, 0.15)),
}
TEMPLATE_SNR = {"model_ii": 300.0, "model_i": 22.0}  # the control cell's peak SNR per instrument (module docstring)
SUBSTRUCTURE = {  # (log10 upper subhalo mass limit, log10 vortex mass) ranges
    "prior": ((10.0, 10.0), (10.0, 11.0)),
    "sensitivity": ((7.0, 10.0), (9.0, 11.0)),
}
METADATA_FIELDS = (
    "label",
    "theta_e",
    "peak_snr",
    "noise_sigma",
    "largest_subhalo_mass",
    "total_subhalo_mass",
    "n_subhalos",
    "vortex_mass",
    "vortex_half_length",
    "source_clumpy",
    "lens_e1",
    "lens_e2",
    "shear_gamma1",
    "shear_gamma2",
)


@dataclass(frozen=True)
class Instrument:
    """The grid, PSF and noise of one shift grid, and the fixed lens and source of the faithful preset it copies."""

    name: str  # the faithful preset: "model_ii" or "model_i"
    n_pixels: int
    pixel_scale: float  # arcsec per pixel
    psf_fwhm: float  # arcsec, Gaussian
    psf_truncation: float  # kernel radius in sigmas
    background_sigma: float  # electrons per pixel
    main_halo_mass: float  # Msun; a point mass m has theta_E(m)^2 = theta_E^2 m / main_halo_mass
    template_lens: dict  # SIE theta_E, e1, e2 and shear gamma1, gamma2 of the preset (centre (0, 0))
    template_source: dict  # SERSIC_ELLIPSE R_sersic, n_sersic, e1, e2 (centre U(-0.35, 0.35)" per axis)


@functools.cache
def instrument(name: str) -> Instrument:
    """The shift grid's instrument ``name`` (``model_ii`` or ``model_i``) from that faithful preset."""
    if name not in TEMPLATE_SNR:
        raise ValueError(f"unknown instrument {name!r}; valid: {sorted(TEMPLATE_SNR)}")
    p = get_preset(name)
    if p.camera is None:  # Model I: background rms [counts/s] times the median exposure [s]
        background = p.background_rms * 10 ** (sum(p.log10_exposure) / 2)
    else:
        background = p.camera.background_sigma(p.pixel_scale) * p.camera.total_exposure
    lens = dict(theta_E=p.theta_e[0], e1=p.lens_e1[0], e2=p.lens_e2[0], gamma1=p.shear_gamma1[0])
    source = dict(R_sersic=p.source_radius[0], n_sersic=p.source_sersic_n[0], e1=p.source_e1[0], e2=p.source_e2[0])
    return Instrument(
        name,
        p.n_pixels,
        p.pixel_scale,
        p.psf_fwhm,
        p.psf_truncation,
        background,
        p.main_halo_mass,
        lens | dict(gamma2=p.shear_gamma2[0]),
        source,
    )


@dataclass(frozen=True)
class Cell:
    """One test set of the grid: what it holds (angles in arcsec) and whether the broad training prior covers it."""

    name: str
    axis: str  # which axis it moves away from the reference ("reference" for the reference itself)
    theta_e: float = 1.0  # arcsec (the control cell: its preset's)
    peak_snr: float = 30.0  # math.inf: noiseless
    source: str = "sersic"  # "sersic", "clumpy" or "template" (the instrument's preset's)
    lens: str = "mild"  # a key of LENS_SHAPES or "template" (the instrument's preset's)
    substructure: str = "prior"  # a key of SUBSTRUCTURE
    in_prior: bool = True
    control: bool = False  # reported, but in neither pool
    instrument: str = "model_ii"  # a key of TEMPLATE_SNR

    def __post_init__(self) -> None:
        if self.source not in ("sersic", "clumpy", "template") or self.lens not in (*LENS_SHAPES, "template"):
            raise ValueError(
                f"cell {self.name}: source must be sersic/clumpy/template, lens one of {[*LENS_SHAPES, 'template']}"
            )
        if self.substructure not in SUBSTRUCTURE or not (self.theta_e > 0 and self.peak_snr > 0):
            raise ValueError(f"cell {self.name}: need theta_e > 0, peak_snr > 0 and substructure prior/sensitivity")
        if self.instrument not in TEMPLATE_SNR:
            raise ValueError(f"cell {self.name}: instrument must be one of {sorted(TEMPLATE_SNR)}")


def grid(instrument_name: str = "model_ii") -> tuple[Cell, ...]:
    """The cells of one instrument's grid: the reference, one axis at a time inside the broad prior, extrapolation
    cells just outside it, and the control cell ``<instrument>_template`` (the preset's own lens and source)."""
    reference = Cell("reference", "reference", instrument=instrument_name)
    template = instrument(instrument_name).template_lens["theta_E"]
    return (
        reference,
        *(replace(reference, name=f"theta_e_{t}", axis="theta_E", theta_e=t) for t in (0.7, 1.3, 1.6)),
        replace(reference, name="snr_10", axis="peak SNR", peak_snr=10.0),
        replace(reference, name="snr_100", axis="peak SNR", peak_snr=100.0),
        replace(reference, name="noiseless", axis="peak SNR", peak_snr=math.inf),
        replace(reference, name="clumpy", axis="source", source="clumpy"),
        replace(reference, name="strong_lens", axis="lens e, shear", lens="strong"),
        replace(reference, name="theta_e_0.45", axis="theta_E", theta_e=0.45, in_prior=False),
        replace(reference, name="theta_e_1.9", axis="theta_E", theta_e=1.9, in_prior=False),
        replace(reference, name="snr_5", axis="peak SNR", peak_snr=5.0, in_prior=False),
        replace(reference, name="e0.3_g0.15", axis="lens e, shear", lens="beyond", in_prior=False),
        Cell(
            f"{instrument_name}_template",
            "control",
            template,
            TEMPLATE_SNR[instrument_name],
            "template",
            "template",
            control=True,
            instrument=instrument_name,
        ),
    )


def sensitivity_cell(instrument_name: str = "model_ii") -> Cell:
    """The reference lens with wider substructure masses, so detection can be read as a function of them."""
    return Cell("sensitivity", "substructure mass", substructure="sensitivity", instrument=instrument_name)


REFERENCE = grid()[0]


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


def _spin2(rng: np.random.Generator, modulus: tuple[float, float]) -> tuple[float, float]:
    """Components of a spin-2 quantity of modulus U(modulus) at a uniform angle."""
    size, angle = _uniform(rng, modulus), rng.uniform(0, math.pi)
    return size * math.cos(2 * angle), size * math.sin(2 * angle)


def _subhalo_masses(rng: np.random.Generator, count: int, upper: float) -> np.ndarray:
    """``count`` masses [Msun] from dN/dm ~ m^-0.9 on [1e6, upper] by the inverse CDF."""
    a, low = 1 - SUBHALO_SLOPE, 1e6
    return (low**a + rng.uniform(size=count) * (upper**a - low**a)) ** (1 / a)


def draw_lens(cell: Cell, label: int, rng: np.random.Generator) -> dict:
    """The parameters of one image: lenstronomy keyword lists (``lens``, ``source``) and its metadata row."""
    setup = instrument(cell.instrument)
    if cell.lens == "template":
        cx = cy = 0.0
        e1, e2, g1, g2 = (setup.template_lens[k] for k in ("e1", "e2", "gamma1", "gamma2"))
    else:
        cx, cy = rng.uniform(-0.1, 0.1, size=2)
        (e1, e2), (g1, g2) = (_spin2(rng, r) for r in LENS_SHAPES[cell.lens])
    lens = [
        dict(theta_E=cell.theta_e, e1=e1, e2=e2, center_x=cx, center_y=cy),
        dict(gamma1=g1, gamma2=g2, ra_0=cx, dec_0=cy),
    ]
    meta = dict.fromkeys(METADATA_FIELDS, 0.0) | dict(
        label=label, theta_e=cell.theta_e, lens_e1=e1, lens_e2=e2, shear_gamma1=g1, shear_gamma2=g2
    )
    unit = cell.theta_e**2 / setup.main_halo_mass  # point-mass theta_E^2 per Msun, arcsec^2
    subhalo_limit, vortex_mass = SUBSTRUCTURE[cell.substructure]
    if label == SUBHALOS:
        masses = _subhalo_masses(rng, int(rng.integers(10, 41)), 10 ** _uniform(rng, subhalo_limit))
        radius, angle = rng.uniform(0.25, 2.0, len(masses)), rng.uniform(0, 2 * math.pi, len(masses))
        for m, x, y in zip(masses, cx + radius * np.cos(angle), cy + radius * np.sin(angle), strict=True):
            lens.append(dict(theta_E=math.sqrt(unit * m), center_x=x, center_y=y))
        meta |= dict(largest_subhalo_mass=masses.max(), total_subhalo_mass=masses.sum(), n_subhalos=len(masses))
    elif label == VORTEX:
        mass = 10 ** _uniform(rng, vortex_mass)
        half_length = 0.06 / (2 * 10 ** rng.uniform(-24.5, -21.5)) * 1e-22
        along, angle = np.linspace(-half_length, half_length, VORTEX_POINTS), rng.uniform(0, math.pi)
        theta = math.sqrt(unit * mass / VORTEX_POINTS)
        for x, y in zip(cx + along * math.cos(angle), cy + along * math.sin(angle), strict=True):
            lens.append(dict(theta_E=theta, center_x=x, center_y=y))
        meta |= dict(vortex_mass=mass, vortex_half_length=half_length)
    return dict(
        lens=lens, source=_draw_source(cell, rng, cx, cy), meta=meta | dict(source_clumpy=cell.source == "clumpy")
    )


def _draw_source(cell: Cell, rng: np.random.Generator, cx: float, cy: float) -> list[dict]:
    """Sersic source (and knots) as ``SERSIC_ELLIPSE`` keywords, with ``flux`` (total flux share) instead of amp."""
    if cell.source == "template":
        centre = dict(center_x=rng.uniform(-0.35, 0.35), center_y=rng.uniform(-0.35, 0.35))
        return [dict(flux=1.0, **centre, **instrument(cell.instrument).template_source)]
    radius = _uniform(rng, (0.15, 0.35))
    sx, sy = cx + rng.uniform(-0.15, 0.15), cy + rng.uniform(-0.15, 0.15)
    shape = dict(n_sersic=_uniform(rng, (0.7, 2.5)), e1=_uniform(rng, (-0.2, 0.2)), e2=_uniform(rng, (-0.2, 0.2)))
    if cell.source == "sersic":
        return [dict(flux=1.0, R_sersic=radius, center_x=sx, center_y=sy, **shape)]
    count, share = int(rng.integers(2, 7)), _uniform(rng, (0.2, 0.5))
    source = [dict(flux=1.0 - share, R_sersic=radius, center_x=sx, center_y=sy, **shape)]
    for weight, (dx, dy) in zip(rng.dirichlet(np.ones(count)), rng.normal(0, radius, (count, 2)), strict=True):
        knot = dict(n_sersic=1.0, e1=_uniform(rng, (-0.2, 0.2)), e2=_uniform(rng, (-0.2, 0.2)))
        source.append(
            dict(flux=share * weight, R_sersic=_uniform(rng, (0.02, 0.06)), center_x=sx + dx, center_y=sy + dy, **knot)
        )
    return source


class Renderer:
    """lenstronomy's noiseless image of drawn parameters on an instrument's grid; image models cached per component
    count."""

    def __init__(self, setup: Instrument | None = None) -> None:
        from lenstronomy.Data.pixel_grid import PixelGrid
        from lenstronomy.Data.psf import PSF

        self.setup = setup or instrument("model_ii")
        s, n = self.setup.pixel_scale, self.setup.n_pixels
        self._grid = PixelGrid(n, n, np.diag([s, s]), -(n - 1) / 2 * s, -(n - 1) / 2 * s)
        self._psf = PSF(
            psf_type="GAUSSIAN", fwhm=self.setup.psf_fwhm, pixel_size=s, truncation=self.setup.psf_truncation
        )
        self._models: dict[tuple[int, int], object] = {}

    def _model(self, n_points: int, n_light: int):
        from lenstronomy.ImSim.image_model import ImageModel
        from lenstronomy.LensModel.lens_model import LensModel
        from lenstronomy.LightModel.light_model import LightModel

        key = (n_points, n_light)
        if key not in self._models:
            self._models[key] = ImageModel(
                self._grid,
                self._psf,
                lens_model_class=LensModel(["SIE", "SHEAR"] + ["POINT_MASS"] * n_points),
                source_model_class=LightModel(["SERSIC_ELLIPSE"] * n_light),
                kwargs_numerics={"supersampling_factor": SUPERSAMPLING, "supersampling_convolution": False},
            )
        return self._models[key]

    def noiseless(self, draw: dict) -> np.ndarray:
        """Noiseless PSF-convolved image ``(n, n)``, arbitrary units (source components at their flux shares)."""
        from lenstronomy.LightModel.light_model import LightModel

        unit_flux = LightModel(["SERSIC_ELLIPSE"]).total_flux  # flux of amp = 1
        source = []
        for component in draw["source"]:
            shape = {k: v for k, v in component.items() if k != "flux"}
            source.append(shape | {"amp": component["flux"] / unit_flux([shape | {"amp": 1.0}])[0]})
        return self._model(len(draw["lens"]) - 2, len(source)).image(draw["lens"], source)

    def observe(self, image: np.ndarray, peak_snr: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """Noisy image in electrons (peak = ``peak_snr`` sigma_b) and sigma_b; noiseless when ``peak_snr`` is inf."""
        if math.isinf(peak_snr):
            return image, 0.0
        sigma = self.setup.background_sigma
        electrons = image.clip(min=0) * (peak_snr * sigma / image.max())
        noise = rng.poisson(electrons) - electrons + rng.normal(0, sigma, image.shape)
        return electrons + noise, sigma


def normalise(image: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1], float32 (the DeepLense convention)."""
    low, high = image.min(), image.max()
    if not high > low:
        raise ValueError(f"cannot min-max normalise a constant image (value {low})")
    return ((image - low) / (high - low)).astype(np.float32)


def _settings(cell: Cell, per_class: int, seed: int) -> dict:
    return {"format": FORMAT, "cell": asdict(cell), "per_class": per_class, "seed": seed}


def cell_rng(cell: Cell, seed: int, label: int) -> np.random.Generator:
    """The generator behind every draw of one class of one cell (lens, source and noise, in image order)."""
    return np.random.default_rng([seed, zlib.crc32(cell.name.encode()), label])


def write_cell(root: Path, cell: Cell, per_class: int, seed: int, renderer: Renderer | None = None) -> Path:
    """Write ``cell`` as a DeepLense folder ``root/<cell>/<class>/img#####.npy`` plus ``metadata.npz`` (one row per
    image, classes in label order, files in name order) and ``cell.json`` (the settings; written last, so it marks
    a complete cell). A complete cell with the same settings is reused; anything else there is rewritten."""
    folder = root / cell.name
    marker, settings = folder / "cell.json", _settings(cell, per_class, seed)
    if marker.exists() and json.loads(marker.read_text()) == json.loads(json.dumps(settings)):
        return folder
    renderer = renderer or Renderer(instrument(cell.instrument))
    if per_class < 1 or renderer.setup.name != cell.instrument:
        raise ValueError(
            f"need per_class >= 1 (got {per_class}) and a renderer of the cell's instrument {cell.instrument!r} "
            f"(got {renderer.setup.name!r})"
        )
    marker.unlink(missing_ok=True)
    rows = []
    for label, name in enumerate(CLASS_NAMES):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for stale in (folder / name).glob("*.npy"):
            stale.unlink()
        rng = cell_rng(cell, seed, label)
        for i in progress_bar(range(per_class), desc=f"{cell.name} {name}", unit="img"):
            draw = draw_lens(cell, label, rng)
            image, sigma = renderer.observe(renderer.noiseless(draw), cell.peak_snr, rng)
            with atomic_path(folder / name / f"img{i:05d}.npy") as path, open(path, "wb") as handle:
                np.save(handle, normalise(image))
            sigma /= image.max() - image.min()  # in the units of the normalised image
            rows.append(draw["meta"] | dict(peak_snr=cell.peak_snr, noise_sigma=sigma))
    with atomic_path(folder / "metadata.npz") as path, open(path, "wb") as handle:
        np.savez(handle, **{key: np.array([row[key] for row in rows]) for key in METADATA_FIELDS})
    write_text(marker, json.dumps(settings, indent=2))
    return folder


def read_metadata(folder: Path) -> dict[str, np.ndarray]:
    """The per-image metadata of a written cell (``METADATA_FIELDS``, one row per image in reading order)."""
    with np.load(folder / "metadata.npz", allow_pickle=False) as data:
        return {key: data[key] for key in data.files}
