"""Measure the accuracy of the lensing physics engine and print it as markdown tables.

    python benchmarks/physics_accuracy.py

Every error figure quoted in docs/physics.md comes from this script: deflections of pixelised convergence maps
against analytic profiles, a point mass, the FFT solver against direct summation, the Poisson residual, the
divergence and curl of the deflection, D4 equivariance of LensingEngine, and the ray-trace / inverse-lens round
trip. Runs on the CPU in float64 unless a row says float32; deterministic (fixed seeds).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from _machine import describe_machine

from d4lenspinn.physics import (
    LensingEngine,
    PixelGrid,
    deflection_from_kappa,
    inverse_lens,
    poisson_kernels,
    poisson_residual,
    potential_and_deflection,
    potential_from_kappa,
    ray_trace,
)
from d4lenspinn.physics import profiles as P
from d4lenspinn.physics.green import LATTICE_GREEN_OFFSET, lattice_green_table
from d4lenspinn.symmetry import D4_ELEMENTS, transform_scalar, transform_vector

GRID = PixelGrid(150, 0.05)  # DeepLense Model I
_Q, _PHI = P.ellipticity_to_axis_ratio(0.1, 0.0)
PROFILES = {  # name: (convergence, deflection) as functions of (x, y)
    'Gaussian (kappa_0=1, sigma=0.5")': (
        lambda x, y: P.gaussian_convergence(x, y, 1.0, 0.5),
        lambda x, y: P.gaussian_deflection(x, y, 1.0, 0.5),
    ),
    'SIS (theta_E=1.28")': (lambda x, y: P.sis_convergence(x, y, 1.28), lambda x, y: P.sis_deflection(x, y, 1.28)),
    'SIE (theta_E=1.28", e1=0.1)': (
        lambda x, y: P.sie_convergence(x, y, 1.28, _Q, _PHI),
        lambda x, y: P.sie_deflection(x, y, 1.28, _Q, _PHI),
    ),
    'NFW (kappa_s=0.5, r_s=1")': (
        lambda x, y: P.nfw_convergence(x, y, 0.5, 1.0),
        lambda x, y: P.nfw_deflection(x, y, 0.5, 1.0),
    ),
}


def _table(header: list[str], rows: list[list[str]]) -> None:
    """Print one markdown table."""
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||`` over all elements."""
    return ((a - b).norm() / b.norm()).item()


def deflection_errors(profile, grid: PixelGrid) -> list[float]:
    """Relative RMS and max relative error of the solver's deflection for 0.3" < r < 2.5", then the relative RMS
    for 0.3" < r < 1.0" and for 1.0" < r < 2.5"."""
    kappa_fn, alpha_fn = profile
    x, y = grid.coordinates(torch.float64)
    r = torch.sqrt(x * x + y * y)
    alpha, exact = deflection_from_kappa(kappa_fn(x, y)[None], grid)[0], alpha_fn(x, y)
    error2, exact2 = (alpha - exact).pow(2).sum(dim=0), exact.pow(2).sum(dim=0)

    def rms(r_min: float, r_max: float) -> float:
        mask = (r > r_min) & (r < r_max)
        return (error2[mask].sum() / exact2[mask].sum()).sqrt().item()

    worst = (error2 / exact2).sqrt()[(r > 0.3) & (r < 2.5)].max().item()
    return [rms(0.3, 2.5), worst, rms(0.3, 1.0), rms(1.0, 2.5)]


def table_profiles() -> None:
    """Deflection vs analytic profiles on the default grid, a 2x wider field and 2x finer pixels.

    The wider field removes mass outside the field of view; the finer pixels shrink the pixelisation error.
    """
    grids = {'150x150, 0.05"': GRID, '300x300, 0.05" (2x field)': PixelGrid(300, 0.05)}
    grids['300x300, 0.025" (half pixel)'] = PixelGrid(300, 0.025)
    rows = [
        [name, label] + [f"{v:.2e}" for v in deflection_errors(profile, grid)]
        for name, profile in PROFILES.items()
        for label, grid in grids.items()
    ]
    print("Deflection of the pixelised convergence vs the analytic deflection, float64, relative errors.\n")
    header = ["profile", "grid", 'RMS 0.3-2.5"', 'max 0.3-2.5"', 'RMS 0.3-1.0"', 'RMS 1.0-2.5"']
    _table(header, rows)


def point_mass_errors() -> list[str]:
    """A single pixel of mass pi theta_E^2 vs the analytic point mass: max relative error beyond 10 and 20 pixels."""
    x, y = GRID.coordinates(torch.float64)
    kappa = torch.zeros(1, 1, GRID.n, GRID.n, dtype=torch.float64)
    i, j, theta_e = 80, 70, 0.3
    kappa[0, 0, i, j] = math.pi * theta_e**2 / GRID.pixel_scale**2
    psi, alpha = potential_and_deflection(kappa, GRID)
    cx, cy = x[i, j].item(), y[i, j].item()
    r_pix = torch.sqrt((x - cx) ** 2 + (y - cy) ** 2) / GRID.pixel_scale
    exact = P.point_mass_deflection(x, y, theta_e, cx, cy)
    error = (alpha[0] - exact).norm(dim=0) / exact.norm(dim=0)
    psi_error = (psi[0, 0] - P.point_mass_potential(x, y, theta_e, cx, cy)[0]).abs()[r_pix > 5].max() / theta_e**2
    return [f"{error[r_pix > 10].max():.2e}", f"{error[r_pix > 20].max():.2e}", f"{psi_error:.2e}"]


def direct_sum_errors(n: int) -> str:
    """FFT solve vs brute-force summation of the real-space kernels on an ``n x n`` grid: relative L2 error."""
    grid = PixelGrid(n, 0.1)
    kappa = torch.rand(2, 1, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    kernels = torch.from_numpy(poisson_kernels(grid).copy())
    reference = torch.zeros(2, 3, n, n, dtype=torch.float64)
    for i in range(n):  # each source pixel adds its kernel, shifted so that offset 0 sits on it
        for j in range(n):
            reference += (
                kappa[:, :, i, j, None, None] * kernels[:, n - 1 - i : 2 * n - 1 - i, n - 1 - j : 2 * n - 1 - j]
            )
    return f"{_relative(torch.cat(potential_and_deflection(kappa, grid), dim=1), reference):.1e}"


def green_errors() -> list[str]:
    """Lattice Green's function vs its closed form ``G(1, 1) = 1/pi`` and its asymptotic series beyond r = 40."""
    table = lattice_green_table(GRID.n)
    m, k = np.meshgrid(np.arange(GRID.n + 1), np.arange(GRID.n + 1), indexing="ij")
    r, phi = np.hypot(m, k), np.arctan2(m, k)
    far = r > 40
    series = np.log(r[far]) / (2 * np.pi) + LATTICE_GREEN_OFFSET - np.cos(4 * phi[far]) / (24 * np.pi * r[far] ** 2)
    return [f"{abs(table[1, 1] - 1 / np.pi):.1e}", f"{np.abs(table[far] - series).max():.1e}"]


def table_solver() -> None:
    """Lattice Green's function, point mass, direct summation, Poisson residual, divergence and curl."""
    x, y = GRID.coordinates(torch.float64)
    far10, far20, psi_error = point_mass_errors()
    exact, asymptotic = green_errors()
    rows = [
        ["lattice Green's function G(1,1) vs 1/pi", "abs. error", exact],
        ["lattice Green's function vs asymptotic series", "max abs. error, r > 40 px, offsets up to 150", asymptotic],
        ["point mass (1 pixel) vs theta_E^2/r", "max rel. error of alpha, r > 10 / r > 20 px", f"{far10} / {far20}"],
        ['point mass: psi vs theta_E^2 ln(r/1")', "max abs. error / theta_E^2, r > 5 px", psi_error],
    ]
    for n in (11, 12):
        rows.append([f"FFT vs direct summation, {n}x{n}", "relative L2 error of (psi, alpha)", direct_sum_errors(n)])
    for dtype in (torch.float64, torch.float32):
        xd, yd = GRID.coordinates(dtype)
        kappa = (P.sis_convergence(xd, yd, 1.28) + P.gaussian_convergence(xd, yd, 0.3, 0.2, 0.8, -0.4))[None]
        residual = poisson_residual(potential_from_kappa(kappa, GRID), kappa, GRID).abs().max() / kappa.abs().max()
        label = f"Poisson residual, SIS + Gaussian, {str(dtype).removeprefix('torch.')}"
        rows.append([label, "max abs(lap5 psi - 2 kappa) / max kappa", f"{residual:.1e}"])
    kappa = P.gaussian_convergence(x, y, 1.0, 0.5)[None]
    alpha = deflection_from_kappa(kappa, GRID)[0]
    d_dx = lambda f: torch.gradient(f, dim=-1)[0] / GRID.pixel_scale  # noqa: E731
    d_dy = lambda f: torch.gradient(f, dim=-2)[0] / GRID.pixel_scale  # noqa: E731
    inner = (slice(2, -2), slice(2, -2))
    scale = 2 * kappa.max()
    divergence = (d_dx(alpha[0]) + d_dy(alpha[1]) - 2 * kappa[0, 0])[inner].abs().max() / scale
    curl = (d_dx(alpha[1]) - d_dy(alpha[0]))[inner].abs().max() / scale
    rows.append(["div alpha vs 2 kappa, Gaussian", "max abs(div alpha - 2 kappa) / (2 max kappa)", f"{divergence:.1e}"])
    rows.append(["curl alpha, Gaussian", "max abs(curl alpha) / (2 max kappa)", f"{curl:.1e}"])
    print('Solver checks on the 150x150, 0.05"/px grid (float64 unless stated; div and curl by centred differences')
    print("on all but the outer two pixel rings).\n")
    _table(["check", "measure", "value"], rows)


def _lens_scene(grid: PixelGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """An off-centre SIE plus a subhalo-like Gaussian and the image of a smooth source, float64."""
    x, y = grid.coordinates(torch.float64)
    kappa = P.sie_convergence(x, y, 1.0, 0.8, 0.3, 0.1, -0.05) + P.gaussian_convergence(x, y, 0.4, 0.15, 0.7, 0.6)
    kappa = kappa[None]
    source = torch.exp(-0.5 * ((x - 0.12) ** 2 + (y + 0.07) ** 2) / 0.3**2)[None, None]
    return kappa, ray_trace(source, deflection_from_kappa(kappa, grid), grid)


def equivariance_errors(grid: PixelGrid, image_kind: str, dtype: torch.dtype) -> list[str]:
    """Max over D4 of ``||engine(g.in) - g.engine(in)|| / ||g.engine(in)||`` for each engine output."""
    engine = LensingEngine(grid).to(dtype)
    kappa, image = _lens_scene(grid)
    if image_kind == "white noise":
        image = torch.rand(image.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    kappa, image = kappa.to(dtype), image.to(dtype)
    out = engine(kappa, image)
    worst = [0.0] * 5
    for g in D4_ELEMENTS:
        moved = engine(transform_scalar(kappa, g), transform_scalar(image, g))
        act = {"alpha": transform_vector}
        expected = [act.get(name, transform_scalar)(t, g) for name, t in zip(out._fields, out, strict=True)]
        worst = [max(w, _relative(a, b)) for w, a, b in zip(worst, moved, expected, strict=True)]
    return [f"{w:.1e}" for w in worst]


def round_trip_errors() -> list[str]:
    """Ray-trace a Gaussian source through an SIS, invert, and compare where >= 2 image pixels' weight lands."""
    grid, source_grid = PixelGrid(100, 0.05), PixelGrid(40, 0.05)
    x, y = grid.coordinates(torch.float64)
    alpha = P.sis_deflection(x, y, 1.0)[None]
    xs, ys = source_grid.coordinates(torch.float64)
    source = torch.exp(-0.5 * ((xs - 0.1) ** 2 + (ys + 0.05) ** 2) / 0.15**2)[None, None]  # peak 1
    recovered, weight = inverse_lens(ray_trace(source, alpha, grid, source_grid), alpha, grid, source_grid)
    covered = weight > 2.0
    error = (recovered - source)[covered]
    return [
        f"{int(covered.sum())} / {source_grid.n**2}",
        f"{error.pow(2).mean().sqrt():.1e}",
        f"{error.abs().max():.2e}",
    ]


def table_equivariance() -> None:
    """D4 equivariance on the two standard grids for a smooth lensed image and white noise (float32), and float64."""
    cases = [(grid, kind, torch.float32) for grid in (PixelGrid(64, 0.101), GRID) for kind in ("smooth", "white noise")]
    rows = [
        [f'{grid.n}x{grid.n}, {grid.pixel_scale}"/px', kind, str(dtype).removeprefix("torch.")]
        + equivariance_errors(grid, kind, dtype)
        for grid, kind, dtype in [*cases, (GRID, "white noise", torch.float64)]
    ]
    print("D4 equivariance of LensingEngine: max over the 8 elements of the relative L2 error.\n")
    _table(["grid", "image", "dtype", "psi", "alpha", "source", "source weight", "relensed"], rows)


def table_round_trip() -> None:
    """Ray tracing followed by the inverse lens."""
    print('Round trip: SIS (theta_E=1") image of a Gaussian source (sigma=0.15", peak 1), 100x100 at 0.05"/px,')
    print('inverted onto a 40x40, 0.05"/px source grid; pixels receiving weight > 2.\n')
    _table(["covered pixels", "RMS error", "max error"], [round_trip_errors()])


def main() -> None:
    """Print the machine line and every table."""
    print(f"machine: {describe_machine(torch.device('cpu'))}\n")
    table_profiles()
    table_solver()
    table_equivariance()
    table_round_trip()


if __name__ == "__main__":
    main()
