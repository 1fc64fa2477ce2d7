"""Time the lensing physics engine: forward and forward+backward for a batch of images.

    python benchmarks/physics.py [--batch 64] [--repeats 20] [--device cpu|cuda]

Prints the median wall time per batch (and the interquartile range) for the Poisson solve alone (psi and
alpha), the whole engine forward (+ source reconstruction and re-lensing) and forward+backward, at the
DeepLense Model I grid (150 x 150, 0.05"/pixel) and a Model II-like grid (64 x 64, 0.101"/pixel).
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _machine import describe_machine, wall_times

from d4lenspinn.physics import LensingEngine, PixelGrid, fft_size
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    print(f"machine: {describe_machine(device)}")
    print(f"batch {args.batch}, float32, median of {args.repeats} runs [interquartile range], ms per batch")
    print(f"{'grid':>8} {'FFT':>8} {'poisson fwd':>22} {'engine fwd':>22} {'engine fwd+bwd':>22}")
    for name, grid in GRIDS.items():
        cells = [f"{m:7.1f} [{lo:5.1f}-{hi:5.1f}]" for m, lo, hi in _time_grid(grid, args.batch, device, args.repeats)]
        size = fft_size(2 * grid.n - 1)
        print(f"{name:>8} {f'{size}x{size}':>8} " + " ".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    main()
