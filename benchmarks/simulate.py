"""Our simulator against DeepLenseSim's recipes run in lenstronomy: same images, same noise statistics, images/s.

    python benchmarks/simulate.py [--stats-images 200] [--repeats 10] [--lenstronomy-images 40]
                                  [--skip-lenstronomy] [--skip-timing] [--skip-reader]

lenstronomy is optional: ``pip install -e ".[bench]"`` pins 1.14.1 beside numpy 1.26.4 (a bare ``pip install
lenstronomy==1.14.1`` upgrades numpy to 2.x and breaks escnn). :class:`LenstronomySimulator` runs each preset's
DeepLenseSim recipe as its public source (mwt5345/DeepLenseSim, ``deeplense/lens.py``) does: Model I with
``ImageModel`` (PSF truncated at 3 sigma) and ``simple_sim``'s noise (``add_poisson`` + ``add_background``, then
``np.random.poisson`` of the clipped counts); Models II/III with ``SimAPI`` (lens redshifts 0.5, source 1.0,
``z_source_convention`` 2.5, the Euclid VIS / HST WFC3 F160W ``ObservationConfig``, a magnitude source) plus the
``noise_for_model`` that ``simple_sim_2`` computes. Lens parameters are given in DeepLenseSim's convention (the
Einstein radius of the main halo before SimAPI's redshift scaling), converted from ours with lenstronomy's own
``beta_double_source_plane``; both simulators then draw the same lenses and sources.

Three checks: (1) noiseless images of the same parameters agree (max |ours - lenstronomy| / peak); (2) noisy,
min-max normalised images of the same parameters have the same statistics, per preset and class: background level
(median of the outer frame), median peak SNR ((max - background) / std of the frame) and ring radius (flux-weighted
radius of the pixels above 30% of the peak), with the targets of docs/data.md; (3) images/s of ours (batches of 64,
sampling included, median of ``--repeats`` batches after a warm-up, default threads and one) and of lenstronomy
(one process), and of the dataset reader on a freshly written ``.npy`` folder (page cache, dataset cache off), alone
and followed by the trainer's D4 augmentation of each batch (``random_transform``, as ``train.augment``).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from dataclasses import replace
from unittest import mock

import numpy as np
import torch
from _machine import describe_machine
from torch.utils.data import DataLoader

from d4lenspinn.classes import CLASS_NAMES, NO_SUBSTRUCTURE, SUBHALOS, VORTEX
from d4lenspinn.data.datasets import LensingImageDataset
from d4lenspinn.data.presets import FAITHFUL_PRESETS, PRESETS, SimulationPreset, get_preset
from d4lenspinn.data.simulator import LensSample, psf_kernel, render_images, sample_lenses
from d4lenspinn.data.writer import simulate_dataset
from d4lenspinn.physics.light import sersic_b, sersic_total_flux
from d4lenspinn.symmetry import random_transform

BATCH = 64
TARGET = 10.0  # ours / lenstronomy single process, mixed model_i set
READER_TRAIN, READER_VAL = 200, 50  # images per class of the reader's folder
# noisy statistics: |background ours - lenstronomy| (absolute, after min-max) and |ratio - 1| of SNR and ring radius
BACKGROUND_TOLERANCE, RATIO_TOLERANCE = 0.02, 0.10
Z_LENS, Z_SOURCE, Z_CONVENTION = 0.5, 1.0, 2.5  # DeepLenseSim's redshifts and SimAPI's z_source_convention


def _observation(preset: SimulationPreset) -> dict:
    """lenstronomy's own instrument description of a camera preset (``kwargs_single_band``)."""
    from lenstronomy.SimulationAPI.ObservationConfig.Euclid import Euclid
    from lenstronomy.SimulationAPI.ObservationConfig.HST import HST

    base = preset.name.removesuffix("_broad")
    if base == "model_ii":
        return Euclid(band="VIS", psf_type="GAUSSIAN", coadd_years=6).kwargs_single_band()
    if base == "model_iii":
        return HST(band="WFC3_F160W", psf_type="GAUSSIAN").kwargs_single_band()
    raise ValueError(f"no lenstronomy instrument for preset {preset.name!r}")


class LenstronomySimulator:
    """A preset's DeepLenseSim recipe in lenstronomy, one image at a time; models are built once per class."""

    def __init__(self, preset: SimulationPreset) -> None:
        from astropy.cosmology import FlatLambdaCDM
        from lenstronomy.Cosmo.lens_cosmo import LensCosmo
        from lenstronomy.Data.pixel_grid import PixelGrid
        from lenstronomy.Data.psf import PSF
        from lenstronomy.ImSim.image_model import ImageModel
        from lenstronomy.LensModel.lens_model import LensModel
        from lenstronomy.LightModel.light_model import LightModel
        from lenstronomy.SimulationAPI.sim_api import SimAPI
        from lenstronomy.Util.param_util import phi_q2_ellipticity

        n, s = preset.n_pixels, preset.pixel_scale
        self.preset, self._ellipticity = preset, phi_q2_ellipticity
        points = {NO_SUBSTRUCTURE: 0, SUBHALOS: preset.n_subhalos, VORTEX: preset.vortex_points}
        lens_models = {label: ["SIE", "SHEAR"] + ["POINT_MASS"] * k for label, k in points.items()}
        if preset.camera is None:  # Model I: ImageModel, no redshifts, the lens parameters as given
            grid = PixelGrid(n, n, np.diag([s, s]), -(n - 1) / 2 * s, -(n - 1) / 2 * s)
            psf = PSF(psf_type="GAUSSIAN", fwhm=preset.psf_fwhm, pixel_size=s, truncation=preset.psf_truncation)
            self.beta, self.sims = 1.0, None
            self.models = {
                label: ImageModel(
                    grid,
                    psf,
                    lens_model_class=LensModel(models),
                    source_model_class=LightModel(["SERSIC_ELLIPSE"]),
                    kwargs_numerics={"supersampling_factor": 1, "supersampling_convolution": False},
                )
                for label, models in lens_models.items()
            }
            return
        cosmo = FlatLambdaCDM(H0=70, Om0=0.3, Ob0=0.05)
        self.beta = LensCosmo(Z_LENS, Z_CONVENTION, cosmo=cosmo).beta_double_source_plane(
            z_lens=Z_LENS, z_source_1=Z_SOURCE, z_source_2=Z_CONVENTION
        )
        band = _observation(preset)
        self.sims = {}
        for label, models in lens_models.items():
            kwargs_model = {
                "lens_model_list": models,
                "lens_redshift_list": [Z_LENS] * len(models),
                "source_light_model_list": ["SERSIC_ELLIPSE"],
                "source_redshift_list": [Z_SOURCE],
                "cosmo": cosmo,
                "z_source_convention": Z_CONVENTION,
                "z_source": Z_SOURCE,
            }
            self.sims[label] = SimAPI(n, band, kwargs_model)
        self.models = {
            label: sim.image_model_class({"point_source_supersampling_factor": 1}) for label, sim in self.sims.items()
        }

    def kwargs(self, params: LensSample, i: int) -> tuple[list[dict], list[dict]]:
        """lenstronomy lens and source keyword lists of lens ``i`` in DeepLenseSim's convention."""
        p = {name: value[i].tolist() for name, value in params.__dict__.items()}
        beta = self.beta  # SimAPI scales every deflection of the lens plane by beta: undo it here
        e1, e2 = self._ellipticity(p["lens_phi"], p["lens_q"])
        cx, cy = p["lens_x"], p["lens_y"]
        lens = [
            dict(theta_E=p["theta_e"] / beta, e1=e1, e2=e2, center_x=cx, center_y=cy),
            dict(gamma1=p["shear_gamma1"] / beta, gamma2=p["shear_gamma2"] / beta),
        ]
        unit = p["theta_e"] ** 2 / self.preset.main_halo_mass / beta  # point-mass theta_E^2 per Msun
        if p["label"] == SUBHALOS:
            for m, x, y in zip(p["subhalo_mass"], p["subhalo_x"], p["subhalo_y"], strict=True):
                lens.append(dict(theta_E=math.sqrt(unit * m), center_x=x + cx, center_y=y + cy))
        elif p["label"] == VORTEX:  # DeepLenseSim's make_vortex: equal masses on linspace(-L, L, res)
            res = self.preset.vortex_points
            theta_e = math.sqrt(unit * p["vortex_mass"] / res)
            along = np.linspace(-p["vortex_half_length"], p["vortex_half_length"], res)
            xs, ys = along * math.cos(p["vortex_angle"]), along * math.sin(p["vortex_angle"])
            lens += [dict(theta_E=theta_e, center_x=x + cx, center_y=y + cy) for x, y in zip(xs, ys, strict=True)]
        e1, e2 = self._ellipticity(p["source_phi"], p["source_q"])
        source = dict(
            R_sersic=p["source_radius"],
            n_sersic=p["source_sersic_n"],
            e1=e1,
            e2=e2,
            center_x=p["source_x"],
            center_y=p["source_y"],
        )
        if self.sims is None:  # amp per arcsec^2 = ours per pixel / s^2
            source["amp"] = p["source_amplitude"] / self.preset.pixel_scale**2
        else:  # the magnitude our amplitude was made from, converted by SimAPI with lenstronomy's own Sersic flux
            flux = (
                sersic_total_flux(
                    torch.tensor(p["source_amplitude"]),
                    torch.tensor(p["source_radius"]),
                    torch.tensor(p["source_sersic_n"]),
                ).item()
                / self.preset.pixel_scale**2
            )
            magnitude = self.preset.camera.magnitude_zero_point - 2.5 * math.log10(flux)
            _, (source,), _ = self.sims[p["label"]].magnitude2amplitude(None, [{**source, "magnitude": magnitude}])
        return lens, [source]

    def noiseless(self, params: LensSample, i: int) -> np.ndarray:
        """Noiseless, un-normalised image ``(n, n)`` of lens ``i``, brightness per pixel."""
        return self.models[int(params.label[i])].image(*self.kwargs(params, i))

    def noisy(self, params: LensSample, i: int) -> np.ndarray:
        """The recipe's noisy image of lens ``i``, un-normalised (numpy's global generator, as DeepLenseSim)."""
        import lenstronomy.Util.image_util as image_util

        image = self.noiseless(params, i)
        if self.sims is None:  # simple_sim
            exp_time = float(params.exposure[i])
            poisson = image_util.add_poisson(image, exp_time=exp_time)
            bkg = image_util.add_background(image, sigma_bkd=self.preset.background_rms)
            counts = np.random.poisson((exp_time * (image + poisson + bkg)).clip(min=0))  # noqa: NPY002 (as DeepLenseSim)
            return counts.astype(float)
        return image + self.sims[int(params.label[i])].noise_for_model(model=image)  # simple_sim_2's noise

    def render(self, params: LensSample) -> list[np.ndarray]:
        """Noisy, min-max normalised images of every lens in ``params``."""
        images = [self.noisy(params, i) for i in range(len(params))]
        return [(image - image.min()) / max(image.max() - image.min(), 1e-12) for image in images]


def _agreement(preset: SimulationPreset, count: int = 4) -> list[list[str]]:
    """Rows ``preset, class, max|ours - lenstronomy| / peak`` as is, with lenstronomy's b_n set to ours, interior."""
    from lenstronomy.LensModel.Profiles.sersic_utils import SersicUtil

    segment = replace(preset, vortex_profile="segment")
    sim = LenstronomySimulator(preset)
    border = 2 * (psf_kernel(preset).numel() // 2)  # both PSFs' reach, pixels
    rows = []
    for label, ours_preset in ((NO_SUBSTRUCTURE, preset), (SUBHALOS, preset), (VORTEX, preset), (VORTEX, segment)):
        params = sample_lenses(ours_preset, label, count, torch.Generator().manual_seed(label))
        ours = render_images(params, ours_preset, noise=False, normalise=False)[:, 0].double().numpy()
        plain = [sim.noiseless(params, i) for i in range(count)]
        with mock.patch.object(SersicUtil, "b_n", staticmethod(sersic_b)):
            matched = [sim.noiseless(params, i) for i in range(count)]
        errors = [
            max(np.abs(o - ref).max() / ref.max() for o, ref in zip(ours, refs, strict=True))
            for refs in (plain, matched)
        ]
        inner = (slice(border, -border),) * 2
        errors.append(max(np.abs(o - m)[inner].max() / m.max() for o, m in zip(ours, matched, strict=True)))
        name = CLASS_NAMES[label] + (f" ({ours_preset.vortex_profile})" if label == VORTEX else "")
        rows.append([preset.name, name] + [f"{e:.1e}" for e in errors])
    return rows


def image_statistics(images: np.ndarray, pixel_scale: float) -> dict[str, np.ndarray]:
    """Per-image statistics of min-max normalised images ``(N, n, n)``: background level (median of the outer frame,
    n // 10 pixels wide), peak SNR ((max - background) / std of the frame) and ring radius [arcsec] (flux-weighted
    distance from the field centre of the pixels more than 30% of the peak above the background)."""
    n = images.shape[-1]
    width = max(2, n // 10)
    frame = np.ones((n, n), bool)
    frame[width:-width, width:-width] = False
    background = np.median(images[:, frame], axis=1)
    noise = images[:, frame].std(axis=1)
    peak = images.max(axis=(1, 2)) - background
    centre = (np.arange(n) - (n - 1) / 2) * pixel_scale
    radius = np.hypot(*np.meshgrid(centre, centre, indexing="ij"))
    signal = images - background[:, None, None]
    weight = np.where(signal > 0.3 * peak[:, None, None], signal, 0.0)
    ring = (weight * radius).sum(axis=(1, 2)) / weight.sum(axis=(1, 2))
    return {"background": background, "peak SNR": peak / np.maximum(noise, 1e-12), "ring radius": ring}


def _statistics_rows(preset: SimulationPreset, count: int, seed: int = 0) -> tuple[list[list[str]], bool]:
    """Rows ``preset, class, statistic, ours, lenstronomy, difference or ratio, met`` for ``count`` noisy images of
    each class, the same lenses and sources on both sides (independent noise); and whether every target is met."""
    sim, rows, met = LenstronomySimulator(preset), [], True
    np.random.seed(seed)  # noqa: NPY002 (DeepLenseSim draws its noise from numpy's global generator)
    for label, name in enumerate(CLASS_NAMES):
        params = sample_lenses(preset, label, count, torch.Generator().manual_seed(seed + label))
        ours = render_images(params, preset, torch.Generator().manual_seed(seed + 10 + label))[:, 0].double().numpy()
        theirs = np.stack(sim.render(params))
        ours_stats, their_stats = (
            image_statistics(ours, preset.pixel_scale),
            image_statistics(theirs, preset.pixel_scale),
        )
        for stat in ours_stats:
            a, b = float(np.median(ours_stats[stat])), float(np.median(their_stats[stat]))
            if stat == "background":
                gap, ok = f"{a - b:+.4f}", abs(a - b) <= BACKGROUND_TOLERANCE
            else:
                gap, ok = f"{a / b:.3f}", abs(a / b - 1) <= RATIO_TOLERANCE
            met &= ok
            rows.append([preset.name, name, f"median {stat}", f"{a:.4g}", f"{b:.4g}", gap, "yes" if ok else "NO"])
    return rows, met


def _seconds(step, *args) -> float:
    """Wall time of ``step(*args)`` in seconds."""
    start = time.perf_counter()
    step(*args)
    return time.perf_counter() - start


def _ours_seconds(preset: SimulationPreset, counts: list[tuple[int, int]], generator, threads: int) -> float:
    """Wall time of sampling and rendering (noise, normalisation) ``count`` lenses of each ``(label, count)``."""
    default = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        params = LensSample.concatenate([sample_lenses(preset, label, n, generator) for label, n in counts])
        return _seconds(render_images, params, preset, generator)
    finally:
        torch.set_num_threads(default)


def _rates(preset: SimulationPreset, repeats: int, sim: LenstronomySimulator | None, count: int) -> dict[str, list]:
    """``class -> [ours, ours on 1 thread, lenstronomy]`` images/s (lenstronomy ``None`` without ``sim``).

    Per class, rounds alternate between a batch of ours (default threads, then 1 thread) and ``count / repeats``
    lenstronomy images, so that all see the same machine load; medians over ``repeats`` rounds after a warm-up round
    (per batch for ours, per image for lenstronomy). Ours includes ``sample_lenses``, lenstronomy the conversion of
    its parameters. "mixed" is equal thirds (ours: class-wise batches as ``simulate_dataset`` writes them); "mixed,
    one batch" puts the thirds inside every batch of ours.
    """
    generator, threads = torch.Generator().manual_seed(0), torch.get_num_threads()
    per_round = math.ceil(count / repeats) if sim else 0
    rates = {}
    for label, name in enumerate(CLASS_NAMES):
        params = sample_lenses(preset, label, (repeats + 1) * per_round, torch.Generator().manual_seed(label))
        singles = [params.select([i]) for i in range(len(params))]
        times = [[], [], []]
        for round_ in range(repeats + 1):  # round 0 warms up
            for column, n_threads in enumerate((threads, 1)):
                times[column].append(_ours_seconds(preset, [(label, BATCH)], generator, n_threads) / BATCH)
            times[2] += [_seconds(sim.render, one) for one in singles[round_ * per_round : (round_ + 1) * per_round]]
        rates[name] = [1 / statistics.median(t[1:]) for t in times[:2]]
        rates[name].append(1 / statistics.median(times[2][per_round:]) if sim else None)
    rates["mixed"] = [
        statistics.harmonic_mean([rates[name][column] for name in CLASS_NAMES]) if sim or column < 2 else None
        for column in range(3)
    ]
    thirds = [(NO_SUBSTRUCTURE, BATCH - 2 * (BATCH // 3)), (SUBHALOS, BATCH // 3), (VORTEX, BATCH // 3)]
    mixed = [[_ours_seconds(preset, thirds, generator, n) for _ in range(repeats + 1)] for n in (threads, 1)]
    rates["mixed, one batch"] = [BATCH / statistics.median(t[1:]) for t in mixed] + [rates["mixed"][2]]
    return rates


def _reader_rows(repeats: int) -> list[list[str]]:
    """Rows ``what, images/s`` for writing a small model_i folder and reading it back with DataLoaders."""
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        simulate_dataset(root, get_preset("model_i"), READER_TRAIN, READER_VAL, progress=False)
        total = len(CLASS_NAMES) * (READER_TRAIN + READER_VAL)
        what = f"simulate_dataset + .npy writing, model_i, {READER_TRAIN}+{READER_VAL} per class"
        rows = [[what, f"{total / (time.perf_counter() - start):.0f}"]]
        data = LensingImageDataset.from_folder(root, "train", cache=False)
        for workers in (0, 2):
            for augment in (False, True):  # True: plus the trainer's augmentation of each batch (train.augment)
                loader = DataLoader(
                    data, batch_size=BATCH, shuffle=True, num_workers=workers, persistent_workers=workers > 0
                )
                generator = torch.Generator().manual_seed(0)
                times = []
                for epoch in range(repeats + 1):  # epoch 0 warms up (and starts the workers)
                    start = time.perf_counter()
                    for images, _ in loader:
                        if augment:
                            random_transform(images, generator)
                    if epoch:
                        times.append(time.perf_counter() - start)
                what = f"DataLoader, batch {BATCH}, num_workers={workers}, no cache"
                what += " + random_transform (as train.augment)" if augment else ""
                rows.append([what, f"{len(data) / statistics.median(times):.0f}"])
    return rows


def _table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stats-images", type=int, default=200, help="noisy images per class and preset, each side")
    parser.add_argument("--repeats", type=int, default=10, help="timed batches (ours) and epochs (reader)")
    parser.add_argument("--lenstronomy-images", type=int, default=40, help="timed lenstronomy images per class")
    parser.add_argument("--skip-lenstronomy", action="store_true")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--skip-reader", action="store_true")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    print(f"machine: {describe_machine(torch.device('cpu'))}")
    use_lenstronomy = not args.skip_lenstronomy
    if use_lenstronomy:
        try:
            import lenstronomy
        except ImportError:
            print('lenstronomy is not importable (pip install -e ".[bench]"); timing our simulator only')
            use_lenstronomy = False
        else:
            print(f"lenstronomy {lenstronomy.__version__}, numpy {np.__version__}")
    presets = [PRESETS[name] for name in FAITHFUL_PRESETS]  # DeepLenseSim's recipes, as lenstronomy runs them

    if use_lenstronomy:
        print("\nnoiseless, un-normalised images of the same parameters, max |ours - lenstronomy| / peak, 4 per class")
        print("(vort: lenstronomy DeepLenseSim's point masses along the line; ours the same points, or its segment)")
        header = ["preset", "class (ours)", "as is", "lenstronomy b_n := ours", "same, PSF border excluded"]
        print(_table(header, [row for preset in presets for row in _agreement(preset)]))

        print(f"\nnoisy, min-max normalised images, {args.stats_images} per class and preset, same lenses and sources;")
        print(f"targets: background within {BACKGROUND_TOLERANCE} (absolute), median peak SNR and ring radius within")
        print(f"{RATIO_TOLERANCE:.0%} (ratio ours / lenstronomy)")
        rows, met = [], True
        for preset in presets:
            preset_rows, preset_met = _statistics_rows(preset, args.stats_images)
            rows, met = rows + preset_rows, met and preset_met
        print(_table(["preset", "class", "statistic", "ours", "lenstronomy", "gap", "met"], rows))
        print(f"noisy-statistics targets: {'all met' if met else 'NOT all met'}")

    if not args.skip_timing:
        _print_rates(presets[:2], args, use_lenstronomy)
    if not args.skip_reader:
        n_train = len(CLASS_NAMES) * READER_TRAIN
        print(f"\nreader: model_i .npy folder, {n_train} train images, median of {args.repeats} epochs after a warm-up")
        print(_table(["what", "images/s"], _reader_rows(args.repeats)))
    print(f"\nload average (1 min) at start {load:.2f}, at end {os.getloadavg()[0]:.2f} (timings need an idle machine)")


def _print_rates(presets: list[SimulationPreset], args, use_lenstronomy: bool) -> None:
    threads = torch.get_num_threads()
    print(f"\nimages/s on the CPU; ours: float32 batches of {BATCH}, median of {args.repeats}; lenstronomy 1 process")
    print("vort: both the preset's point masses; mixed: equal thirds (ours in class-wise batches as")
    print("simulate_dataset writes them; 'one batch': the thirds inside every batch)")
    rows, ratio = [], None
    for preset in presets:
        sim = LenstronomySimulator(preset) if use_lenstronomy else None
        for name, (ours, ours_1, theirs) in _rates(preset, args.repeats, sim, args.lenstronomy_images).items():
            cells = [f"{theirs:.0f}", f"{ours / theirs:.1f}x", f"{ours_1 / theirs:.1f}x"] if theirs else ["-"] * 3
            size = f"{preset.name} ({preset.n_pixels}x{preset.n_pixels})"
            rows.append([size, name, f"{ours:.0f}", f"{ours_1:.0f}", *cells])
            if theirs and preset.name == "model_i" and name == "mixed":
                ratio = ours / theirs
    header = [
        "preset",
        "class",
        f"ours ({threads} threads)",
        "ours (1 thread)",
        "lenstronomy",
        "ratio",
        "ratio 1 thread",
    ]
    print(_table(header, rows))
    verdict = "not measured" if ratio is None else f"{ratio:.1f}x, {'met' if ratio >= TARGET else 'NOT met'}"
    print(f"target: ours ({threads} threads) / lenstronomy >= {TARGET:.0f}x on the mixed model_i set: {verdict}")


if __name__ == "__main__":
    main()
