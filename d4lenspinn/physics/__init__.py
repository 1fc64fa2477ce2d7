"""Parameter-free, differentiable lensing physics: grids, Poisson solver, deflection, lens mapping, profiles."""

from . import profiles
from .engine import LensingEngine, LensingOutput, MacroResidual
from .green import lattice_green_table
from .grid import PixelGrid, bin_pixels, check_field
from .lens_fit import LensFit, StartGrid, centred_lens, fit_smooth_lens, tangent_basis
from .lens_mapping import SourceReconstruction, covering_source_grid, inverse_lens, ray_trace, source_positions
from .lens_refinement import LensRefinement, refine_lens
from .macro import MacroLens, check_macro, macro_convergence, macro_deflection, macro_potential
from .noise import estimate_noise, frame_noise, high_pass_noise
from .poisson import (
    deflection_from_kappa,
    fft_size,
    kernel_spectra,
    poisson_kernels,
    poisson_residual,
    potential_and_deflection,
    potential_from_kappa,
)
from .shapelets import shapelet_basis, shapelet_count, shapelet_order
from .smooth_lens import SersicSource, check_source, render_lensed_sersic, render_smooth_lens, source_plane
from .source_inversion import SourceInversion, invert_source
from .source_moments import initial_source
from .unexplained import (
    SubhaloScan,
    VortexScan,
    scan_positions,
    subhalo_scan,
    substructure_scans,
    unexplained_signal,
    vortex_angles,
    vortex_scan,
)

__all__ = [
    "SourceInversion",
    "invert_source",
    "PixelGrid",
    "check_field",
    "bin_pixels",
    "lattice_green_table",
    "fft_size",
    "poisson_kernels",
    "kernel_spectra",
    "potential_and_deflection",
    "potential_from_kappa",
    "deflection_from_kappa",
    "poisson_residual",
    "source_positions",
    "ray_trace",
    "inverse_lens",
    "SourceReconstruction",
    "covering_source_grid",
    "LensingEngine",
    "LensingOutput",
    "MacroResidual",
    "MacroLens",
    "check_macro",
    "macro_deflection",
    "macro_potential",
    "macro_convergence",
    "estimate_noise",
    "frame_noise",
    "high_pass_noise",
    "SersicSource",
    "check_source",
    "render_lensed_sersic",
    "render_smooth_lens",
    "source_plane",
    "shapelet_basis",
    "shapelet_count",
    "shapelet_order",
    "initial_source",
    "LensFit",
    "StartGrid",
    "centred_lens",
    "fit_smooth_lens",
    "tangent_basis",
    "LensRefinement",
    "refine_lens",
    "unexplained_signal",
    "SubhaloScan",
    "scan_positions",
    "subhalo_scan",
    "substructure_scans",
    "VortexScan",
    "vortex_angles",
    "vortex_scan",
    "profiles",
]
