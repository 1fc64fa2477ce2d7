"""Time the lensing physics engine: forward and forward+backward for a batch of images.

    python benchmarks/physics.py [--batch 64] [--repeats 20] [--device cpu|cuda] [--scan]

Prints the median wall time per batch (and the interquartile range) for the Poisson solve alone (psi and
alpha), the whole engine forward (+ source reconstruction and re-lensing) and forward+backward, at the
DeepLense Model I grid (150 x 150, 0.05"/pixel) and a Model II-like grid (64 x 64, 0.101"/pixel). With ``--scan``,
also the subhalo scan (:func:`~d4lenspinn.physics.subhalo_scan`) of 4 fitted ``model_ii_broad`` images, seconds per
image at strides 2 and 1, in float32 and float64, and the fit, the subhalo scan and the vortex scan
(:func:`~d4lenspinn.physics.vortex_scan`, its default 112 lines) with the light sampled at pixel centres and
integrated over 3 x 3 sub-pixels (``supersampling``).
"""

from __future__ import annotations

import argparse
import functools
import statistics

import torch
from _machine import describe_machine, wall_times

from d4lenspinn.data.presets import get_preset
from d4lenspinn.data.simulator import render_images, sample_lenses, true_macro_lens
from d4lenspinn.physics import LensingEngine, PixelGrid, fft_size, fit_smooth_lens, subhalo_scan, vortex_scan
from d4lenspinn.physics import profiles as P

GRIDS = {"64x64": PixelGrid(64, 0.101), "150x150": PixelGrid(150, 0.05)}


def _median_ms(step, device: torch.device, repeats: int) -> tuple[float, float, float]:
    """Median and quartiles of ``step()``'s wall time in ms, after five warm-up calls."""
    q1, median, q3 = statistics.quantiles([1e3 * t for t in wall_times(step, device, repeats, warmup=5)], n=4)
    return median, q1, q3


def _inputs(grid: PixelGrid, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of SIS-plus-noise convergence maps and random images."""
    generator = torch.Generator().manual_seed(0)
    x, y = grid.coordinates()
    kappa = P.sis_convergence(x, y, 1.0)[None] + 0.05 * torch.rand(batch, 1, grid.n, grid.n, generator=generator)
    image = torch.rand(batch, 1, grid.n, grid.n, generator=generator)
    return kappa.to(device), image.to(device)


def _time_grid(grid: PixelGrid, batch: int, device: torch.device, repeats: int) -> list[tuple[float, float, float]]:
    """Timings of the Poisson solve, the engine forward, and the engine forward+backward on one grid."""
    engine = LensingEngine(grid).to(device)
    kappa, image = _inputs(grid, batch, device)
    kappa_grad, image_grad = kappa.clone().requires_grad_(), image.clone().requires_grad_()

    def train_step() -> None:
        out = engine(kappa_grad, image_grad)
        (out.psi.mean() + out.source.mean() + out.relensed.mean()).backward()

    with torch.no_grad():
        poisson = _median_ms(lambda: engine.potential_and_deflection(kappa), device, repeats)
        forward = _median_ms(lambda: engine(kappa, image), device, repeats)
    return [poisson, forward, _median_ms(train_step, device, repeats)]


def _time_scan(device: torch.device, repeats: int) -> None:
    """Seconds per image of the subhalo scan of 4 fitted model_ii_broad images (PSF width fitted, 5 steps)."""
    preset = get_preset("model_ii_broad")
    grid = PixelGrid(preset.n_pixels, preset.pixel_scale)
    lenses = sample_lenses(preset, 1, 4, torch.Generator().manual_seed(0))
    images = render_images(lenses, preset, torch.Generator().manual_seed(1))
    print("subhalo scan of 4 fitted 64x64 images, median of runs, seconds per image")
    for dtype in (torch.float32, torch.float64):
        fit = fit_smooth_lens(
            images.to(device, dtype), true_macro_lens(lenses), grid, preset.psf_fwhm, preset.psf_truncation, 5,
            gradients=False, fit_psf=True,
        )  # fmt: skip
        for stride in (2, 1):
            scan = functools.partial(subhalo_scan, fit, grid, preset.psf_truncation, stride=stride)
            times = wall_times(scan, device, repeats)
            print(f"  {str(dtype).removeprefix('torch.')}, stride {stride}: {statistics.median(times) / 4:.3f} s")
    print("the fit (5 steps from the true lens), the scan (stride 2) and the vortex scan by supersampling, float32,")
    print("seconds per image")
    images = images.to(device)
    for factor in (1, 3):
        options = dict(gradients=False, fit_psf=True, supersampling=factor)
        fit = functools.partial(
            fit_smooth_lens, images, true_macro_lens(lenses), grid, preset.psf_fwhm, preset.psf_truncation, 5, **options
        )
        fit_seconds = statistics.median(wall_times(fit, device, repeats)) / 4
        fitted, on = fit(), dict(supersampling=factor)
        scans = {
            "scan": functools.partial(subhalo_scan, fitted, grid, preset.psf_truncation, stride=2, **on),
            "vortex scan": functools.partial(vortex_scan, fitted, grid, preset.psf_truncation, **on),
        }
        seconds = [
            f"{name} {statistics.median(wall_times(scan, device, repeats)) / 4:.3f} s" for name, scan in scans.items()
        ]
        print(f"  supersampling {factor}: fit {fit_seconds:.3f} s, " + ", ".join(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--scan", action="store_true", help="also time the subhalo scan")
    args = parser.parse_args()
    device = torch.device(args.device)

    print(f"machine: {describe_machine(device)}")
    print(f"batch {args.batch}, float32, median of {args.repeats} runs [interquartile range], ms per batch")
    print(f"{'grid':>8} {'FFT':>8} {'poisson fwd':>22} {'engine fwd':>22} {'engine fwd+bwd':>22}")
    for name, grid in GRIDS.items():
        cells = [f"{m:7.1f} [{lo:5.1f}-{hi:5.1f}]" for m, lo, hi in _time_grid(grid, args.batch, device, args.repeats)]
        size = fft_size(2 * grid.n - 1)
        print(f"{name:>8} {f'{size}x{size}':>8} " + " ".join(f"{c:>22}" for c in cells))
    if args.scan:
        _time_scan(device, max(1, args.repeats // 10))


if __name__ == "__main__":
    main()
