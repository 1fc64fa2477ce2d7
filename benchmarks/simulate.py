"""Images/s of the lensing simulator, side by side with the same recipe in lenstronomy, and of the dataset reader.

    python benchmarks/simulate.py [--repeats 10] [--lenstronomy-images 40] [--skip-lenstronomy] [--skip-reader]

Ours: ``sample_lenses`` + ``render_images`` (noise and min-max normalisation included) on batches of 64 on the CPU,
median of ``--repeats`` batches after a warm-up batch, with torch's default threads and with one (on a loaded machine
multi-threaded torch suffers most). lenstronomy (optional: ``pip install -e ".[bench]"``, which pins 1.14.1 beside
numpy 1.26.4; a bare ``pip install lenstronomy==1.14.1`` upgrades numpy to 2.x and breaks escnn): one ``ImageModel``
per class, built once, then per image the same lens (SIE + SHEAR + POINT_MASS) and source (SERSIC_ELLIPSE)
parameters, its Gaussian PSF, then the same Poisson + background noise and normalisation in numpy, in one process.
Both are first checked to give the same noiseless image for the same parameters. The reader is timed on a freshly
simulated ``.npy`` folder (files in the OS page cache, dataset cache off), alone and followed by the trainer's
D4 augmentation of each batch in the main process (``random_transform``, as ``Trainer.augment``).
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
from d4lenspinn.data.presets import SimulationPreset, get_preset
from d4lenspinn.data.simulator import LensSample, render_images, sample_lenses
from d4lenspinn.data.writer import simulate_dataset
from d4lenspinn.physics.light import gaussian_psf_kernel, sersic_b
from d4lenspinn.symmetry import random_transform

BATCH = 64
TARGET = 10.0  # ours / lenstronomy single process, mixed model_i set
VORTEX_POINTS = 50  # lenstronomy's discretised vortex, as DeepLenseSim
READER_TRAIN, READER_VAL = 200, 50  # images per class of the reader's folder


def _vortex_points(params: LensSample, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``VORTEX_POINTS`` equal point masses spread evenly along the vortex of lens ``i``."""
    s = (np.arange(VORTEX_POINTS) + 0.5) / VORTEX_POINTS * 2 - 1
    along = s * float(params.vortex_half_length[i])
    angle = float(params.vortex_angle[i])
    return along * math.cos(angle), along * math.sin(angle)


class LenstronomySimulator:
    """The preset's recipe with lenstronomy's ImageModel, one image at a time; models are built once per class."""

    def __init__(self, preset: SimulationPreset) -> None:
        from lenstronomy.Data.pixel_grid import PixelGrid
        from lenstronomy.Data.psf import PSF
        from lenstronomy.ImSim.image_model import ImageModel
        from lenstronomy.LensModel.lens_model import LensModel
        from lenstronomy.LightModel.light_model import LightModel
        from lenstronomy.Util.param_util import phi_q2_ellipticity

        n, s = preset.n_pixels, preset.pixel_scale
        grid = PixelGrid(n, n, np.diag([s, s]), -(n - 1) / 2 * s, -(n - 1) / 2 * s)
        psf = PSF(psf_type="GAUSSIAN", fwhm=preset.psf_fwhm, pixel_size=s)
        self.preset, self._ellipticity = preset, phi_q2_ellipticity
        self.models = {
            label: ImageModel(
                grid,
                psf,
                lens_model_class=LensModel(["SIE", "SHEAR"] + ["POINT_MASS"] * points),
                source_model_class=LightModel(["SERSIC_ELLIPSE"]),
                kwargs_numerics={"supersampling_factor": 1},
            )
            for label, points in {NO_SUBSTRUCTURE: 0, SUBHALOS: preset.n_subhalos, VORTEX: VORTEX_POINTS}.items()
        }

    def kwargs(self, params: LensSample, i: int) -> tuple[list[dict], list[dict]]:
        """lenstronomy lens and source keyword lists of lens ``i`` (amp per arcsec^2 = ours per pixel / s^2)."""
        p = {name: value[i].tolist() for name, value in params.__dict__.items()}
        e1, e2 = self._ellipticity(p["lens_phi"], p["lens_q"])
        lens = [
            dict(theta_E=p["theta_e"], e1=e1, e2=e2, center_x=p["lens_x"], center_y=p["lens_y"]),
            dict(gamma1=p["shear_gamma1"], gamma2=p["shear_gamma2"]),
        ]
        unit = p["theta_e"] ** 2 / self.preset.main_halo_mass  # theta_E^2 per Msun
        if p["label"] == SUBHALOS:
            for m, x, y in zip(p["subhalo_mass"], p["subhalo_x"], p["subhalo_y"], strict=True):
                lens.append(dict(theta_E=math.sqrt(unit * m), center_x=x + p["lens_x"], center_y=y + p["lens_y"]))
        elif p["label"] == VORTEX:
            theta_e = math.sqrt(unit * p["vortex_mass"] / VORTEX_POINTS)
            xs, ys = _vortex_points(params, i)
            cx, cy = p["lens_x"], p["lens_y"]
            lens += [dict(theta_E=theta_e, center_x=x + cx, center_y=y + cy) for x, y in zip(xs, ys, strict=True)]
        e1, e2 = self._ellipticity(p["source_phi"], p["source_q"])
        source = dict(
            amp=p["source_amplitude"] / self.preset.pixel_scale**2,
            R_sersic=p["source_radius"],
            n_sersic=p["source_sersic_n"],
            e1=e1,
            e2=e2,
            center_x=p["source_x"],
            center_y=p["source_y"],
        )
        return lens, [source]

    def noiseless(self, params: LensSample, i: int) -> np.ndarray:
        """Noiseless, un-normalised image ``(n, n)`` of lens ``i``, brightness per pixel."""
        return self.models[int(params.label[i])].image(*self.kwargs(params, i))

    def render(self, params: LensSample, rng: np.random.Generator) -> list[np.ndarray]:
        """Noisy, min-max normalised images of every lens in ``params``."""
        images = []
        for i in range(len(params)):
            image, exposure = self.noiseless(params, i), float(params.exposure[i])
            image = rng.poisson(np.clip(image, 0, None) * exposure) / exposure
            image = image + self.preset.background_rms * rng.standard_normal(image.shape)
            images.append((image - image.min()) / max(image.max() - image.min(), 1e-12))
        return images


def _agreement(preset: SimulationPreset, count: int = 4) -> list[list[str]]:
    """Rows ``preset, class, max|ours - lenstronomy| / peak`` as is, with lenstronomy's b_n set to ours, interior."""
    from lenstronomy.LensModel.Profiles.sersic_utils import SersicUtil

    points = replace(preset, vortex_profile="points", vortex_points=VORTEX_POINTS)
    sim = LenstronomySimulator(preset)
    border = 2 * (gaussian_psf_kernel(preset.psf_fwhm, preset.pixel_scale).numel() // 2)  # both PSFs' reach, pixels
    rows = []
    for label, ours_preset in ((NO_SUBSTRUCTURE, preset), (SUBHALOS, preset), (VORTEX, points), (VORTEX, preset)):
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
    generator, rng, threads = torch.Generator().manual_seed(0), np.random.default_rng(0), torch.get_num_threads()
    per_round = math.ceil(count / repeats) if sim else 0
    rates = {}
    for label, name in enumerate(CLASS_NAMES):
        params = sample_lenses(preset, label, (repeats + 1) * per_round, torch.Generator().manual_seed(label))
        singles = [params.select([i]) for i in range(len(params))]
        times = [[], [], []]
        for round_ in range(repeats + 1):  # round 0 warms up
            for column, n_threads in enumerate((threads, 1)):
                times[column].append(_ours_seconds(preset, [(label, BATCH)], generator, n_threads) / BATCH)
            times[2] += [
                _seconds(sim.render, one, rng) for one in singles[round_ * per_round : (round_ + 1) * per_round]
            ]
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
            for augment in (False, True):  # True: plus the trainer's augmentation of each batch (Trainer.augment)
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
                what += " + random_transform (as Trainer.augment)" if augment else ""
                rows.append([what, f"{len(data) / statistics.median(times):.0f}"])
    return rows


def _table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed batches (ours) and epochs (reader)")
    parser.add_argument("--lenstronomy-images", type=int, default=40, help="timed lenstronomy images per class")
    parser.add_argument("--skip-lenstronomy", action="store_true")
    parser.add_argument("--skip-reader", action="store_true")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    print(f"machine: {describe_machine(torch.device('cpu'))}")
    use_lenstronomy = not args.skip_lenstronomy
    if use_lenstronomy:
        try:
            import lenstronomy
        except ImportError:
            print("lenstronomy is not importable (pip install lenstronomy==1.14.1); timing our simulator only")
            use_lenstronomy = False
        else:
            print(f"lenstronomy {lenstronomy.__version__}, numpy {np.__version__}")
    presets = [get_preset("model_i"), get_preset("model_ii")]

    if use_lenstronomy:
        print("\nnoiseless, un-normalised images of the same parameters, max |ours - lenstronomy| / peak, 4 per class")
        print(f"(vort: lenstronomy {VORTEX_POINTS} POINT_MASS along the line; ours the same points, or its segment)")
        header = ["preset", "class (ours)", "as is", "lenstronomy b_n := ours", "same, PSF border excluded"]
        print(_table(header, [row for preset in presets for row in _agreement(preset)]))

    threads = torch.get_num_threads()
    print(f"\nimages/s on the CPU; ours: float32 batches of {BATCH}, median of {args.repeats}; lenstronomy 1 process")
    print(f"vort: ours closed-form segment, lenstronomy {VORTEX_POINTS} point masses; mixed: equal thirds (ours in")
    print("class-wise batches as simulate_dataset writes them; 'one batch': the thirds inside every batch)")
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

    if not args.skip_reader:
        n_train = len(CLASS_NAMES) * READER_TRAIN
        print(f"\nreader: model_i .npy folder, {n_train} train images, median of {args.repeats} epochs after a warm-up")
        print(_table(["what", "images/s"], _reader_rows(args.repeats)))
    print(f"\nload average (1 min) at start {load:.2f}, at end {os.getloadavg()[0]:.2f} (timings need an idle machine)")


if __name__ == "__main__":
    main()
