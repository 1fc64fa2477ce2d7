"""The training-free substructure detector on a user's own images: ``d4lenspinn detect``.

    report = detect_files(["cutouts/", "lens.fits"], "detections.csv", psf_fwhm=0.16, pixel_scale=0.101,
                          supersampling=3)
    report.n_images, report.n_failed, report.skipped

For every image: the smooth lens fitted from the prior's starts and the scan of what it cannot explain
(:mod:`d4lenspinn.detection`); one CSV row each with ``path``, ``index`` (within a multi-image file, else empty),
the fitted lens (:data:`LENS_COLUMNS`), the estimated peak signal-to-noise, the fit's reduced chi^2 and failure
flag, and the scans' read-out (:data:`SCAN_COLUMNS`: the largest delta chi^2 of a trial subhalo, where it is, its
p-value bound; the largest of a trial vortex, its orientation and half-length). A failed fit leaves the scans' cells
empty. Images are read in their own linear units (the fit solves for the amplitude and the sky), all of one size;
the pixel scale is ``pixel_scale`` or, when every file states one (FITS headers), theirs, and a file that states
another scale is an error naming both. Unreadable, constant or mis-sized images are listed in one error, or with
``skip_bad`` left out and listed in ``<csv>.bad.txt``. ``maps`` also writes every image's scan map, vortex lines'
delta chi^2, normalised residual and smooth model to a ``.npz`` (plain arrays, no pickles); ``figure`` draws the
first :data:`FIGURE_IMAGES`. ``null``, the CSV of an earlier run on lenses known to hold no substructure (simulated
for the same instrument, run with the same settings), adds the column ``p_null``: each image's largest delta chi^2
ranked among theirs (:func:`~d4lenspinn.detection.empirical_p_value`), a p-value that holds where the bound does
not. ``classes_from``, the CSV of an earlier run on labelled images (paths in class folders ``no``, ``sphere``,
``vort``; for example the package's own simulations, run with the same settings), adds :data:`PROBABILITY_COLUMNS`:
each image's class probabilities from a logistic regression learnt there (:mod:`d4lenspinn.detection_classes`).
Arguments are checked before any image is read; one run writes a CSV at a time
(:func:`~d4lenspinn.io.exclusive_writer`).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data.formats import DataError
from .data.inputs import InputImage, list_input_images, list_skipped, read_input_image, refuse_bad
from .detection import Detection, PriorFit, detect_substructure, empirical_p_value
from .detection_classes import PROBABILITY_COLUMNS, class_features, class_probabilities, learn_classes
from .device import resolve_device
from .io import atomic_path, exclusive_writer, write_text
from .physics import PixelGrid, scan_positions, vortex_angles
from .physics.unexplained import VORTEX_ANGLES, VORTEX_HALF_LENGTHS
from .progress import progress_bar

__all__ = [
    "DetectionReport",
    "LENS_COLUMNS",
    "NULL_COLUMN",
    "PROBABILITY_COLUMNS",
    "SCAN_COLUMNS",
    "detect_files",
    "read_null",
]

LENS_COLUMNS = (
    "theta_e_arcsec",
    "center_x_arcsec",
    "center_y_arcsec",
    "e1",
    "e2",
    "gamma1",
    "gamma2",
    "psf_fwhm_arcsec",
    "peak_snr",
    "fit_reduced_chi2",
    "fit_failed",
)
SCAN_COLUMNS = (
    "max_delta_chi2",
    "subhalo_x_arcsec",
    "subhalo_y_arcsec",
    "p_value",
    "max_delta_chi2_vortex",
    "vortex_angle_deg",
    "vortex_half_length_arcsec",
)
NULL_COLUMN = "p_null"  # with ``null``: the empirical p-value among the null run's lenses
FIGURE_IMAGES = 6  # images drawn by ``figure``


@dataclass(frozen=True)
class DetectionReport:
    """What :func:`detect_files` wrote: the CSV (and maps), how many images, how many fits failed, what it
    skipped, and the pixel scale it used [arcsec/pixel]."""

    csv: Path
    n_images: int
    n_failed: int
    skipped: tuple[str, ...]
    pixel_scale: float
    maps: Path | None = None


def detect_files(
    inputs: Sequence[str | os.PathLike],
    out: str | Path,
    psf_fwhm: float,
    *,
    pixel_scale: float | None = None,
    stride: int = 2,
    batch_size: int = 16,
    skip_bad: bool = False,
    device: str = "auto",
    maps: str | Path | None = None,
    figure: str | Path | None = None,
    null: str | Path | None = None,
    classes_from: str | Path | None = None,
    **fit_settings,
) -> DetectionReport:
    """Fit and scan every image under ``inputs`` and write one CSV row per image to ``out`` (module docstring).
    ``fit_settings`` go to :class:`~d4lenspinn.detection.PriorFit` (``psf_truncation``, ``steps``, ``fit_psf``,
    ``supersampling``, ``shot_noise``, ``prior_theta_e``, ``refined_starts``, ``trial_steps``,
    ``start_ellipticity``, ``start_shear``)."""
    out = Path(out)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size (--batch-size) must be a whole number >= 1, got {batch_size!r}")
    for name, path in (("out (--out)", out), ("maps (--maps)", maps), ("figure (--figure)", figure)):
        if path is not None and Path(path).is_dir():
            raise ValueError(f"{name} {path} is a directory; expected the name of a file to write")
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride (--stride) must be a whole number >= 1, got {stride!r}")
    if pixel_scale is not None and not 0 < pixel_scale < math.inf:
        raise ValueError(f"pixel_scale (--pixel-scale) must be > 0 arcsec/pixel, got {pixel_scale}")
    PriorFit(PixelGrid(2, 1.0), psf_fwhm, **fit_settings)  # checks the settings before any image is read
    null_values = None if null is None else read_null(Path(null))
    try:
        classes = None if classes_from is None else learn_classes(classes_from)
    except ValueError as error:
        raise ValueError(f"classes_from (--classes-from) {error}") from None
    with exclusive_writer(out):
        return _detect_files(inputs, out, psf_fwhm, pixel_scale, stride, batch_size, skip_bad, device, maps, figure,
                             null_values, classes, fit_settings)  # fmt: skip


def read_null(path: Path) -> torch.Tensor:
    """The largest delta chi^2 of every row of an earlier run's CSV ``(N,)``, +inf for its failed fits. Raises
    ``ValueError`` naming the file when it is not such a CSV or holds no row."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        values = [math.inf if row["fit_failed"] == "1" else float(row["max_delta_chi2"]) for row in rows]
    except (OSError, KeyError, ValueError, TypeError) as error:
        reason = f"{type(error).__name__}: {error}"
        raise ValueError(f"null (--null) {path}: not the CSV of a detect run ({reason})") from error
    if not values:
        raise ValueError(f"null (--null) {path}: holds no row")
    return torch.tensor(values, dtype=torch.float64)


def _read(images: list[InputImage]) -> tuple[list[tuple[InputImage, np.ndarray]], list[str], list[float | None]]:
    """Every image as float32 ``(H, W)``: (image, array) of the good ones, ``"image: reason"`` of the bad ones, and
    the pixel scale each good one's file states."""
    good, bad, stated = [], [], []
    for image in progress_bar(images, desc="reading images", unit="img", leave=False, disable=len(images) < 200):
        try:
            array, scale = read_input_image(image)
            if good and array.shape != good[0][1].shape:
                raise DataError(f"{image}: the image is {array.shape}, the first one {good[0][1].shape}")
            if array.shape[0] != array.shape[1]:
                raise DataError(f"{image}: the image is {array.shape}; the detector takes square images")
            if not float(array.max()) > float(array.min()):
                raise DataError(f"{image}: the image is constant, so its noise cannot be estimated")
        except DataError as error:
            bad.append(str(error))
            continue
        good.append((image, array))
        stated.append(scale)
    return good, bad, stated


def _resolve_scale(given: float | None, stated: list[float | None], images: list[InputImage]) -> float:
    """The pixel scale: ``given`` or else the files' own; an error if any file states another, or none is known."""
    known = [(image, scale) for image, scale in zip(images, stated, strict=True) if scale is not None]
    scale = given if given is not None else (known[0][1] if known else None)
    if scale is None:
        raise ValueError("the images state no pixel scale: give --pixel-scale (arcsec/pixel)")
    for image, value in known:
        if not math.isclose(value, scale, rel_tol=1e-3):
            source = "--pixel-scale" if given is not None else f"{known[0][0]}"
            raise ValueError(f"{image} states a pixel scale of {value:g} arcsec/pixel, {source} {scale:g}")
    return scale


def _peak_snr(found: Detection) -> torch.Tensor:
    """Each image's fitted light at its peak over the estimated noise ``(B,)``."""
    return (found.fit.model.flatten(1).amax(dim=1) - found.fit.background) / found.fit.sigma


def _class_cells(classes, found: Detection) -> list[list[str]]:
    """The :data:`PROBABILITY_COLUMNS` cells of a batch."""
    fit = found.fit
    columns = (found.max_delta_chi2, fit.reduced_chi2, _peak_snr(found), fit.macro.theta_e, fit.macro.center_x,
               fit.macro.center_y, found.x, found.y, found.max_delta_chi2_vortex)  # CLASS_COLUMNS  # fmt: skip
    values, failed = torch.stack(columns, dim=1).double().cpu().numpy(), fit.failed.cpu().numpy()
    features = class_features(np.where(failed[:, None], 1.0, values))
    return [[f"{p:.5g}" for p in row] for row in class_probabilities(classes, features, failed)]


def _rows(found: Detection) -> list[list[str]]:
    """The :data:`LENS_COLUMNS` and :data:`SCAN_COLUMNS` cells of a batch."""
    fit = found.fit
    lens = torch.stack([*fit.macro, fit.psf_fwhm.expand(len(fit.failed)), _peak_snr(found), fit.reduced_chi2], dim=1)
    line = (found.max_delta_chi2_vortex, torch.rad2deg(found.vortex_angle), found.vortex_half_length)
    scan = torch.stack([found.max_delta_chi2, found.x, found.y, found.p_value, *line], dim=1)
    rows = []
    for values, failed, read_out in zip(lens.double().cpu().numpy(), fit.failed.cpu().numpy(),
                                        scan.cpu().numpy(), strict=True):  # fmt: skip
        cells = [f"{value:.5g}" for value in values] + [str(int(failed))]
        cells += [""] * len(SCAN_COLUMNS) if failed else [f"{value:.5g}" for value in read_out]
        rows.append(cells)
    return rows


def _detect_files(inputs, out, psf_fwhm, pixel_scale, stride, batch_size, skip_bad, device, maps, figure, null,
                  classes, fit_settings) -> DetectionReport:  # fmt: skip
    good, bad, stated = _read(list_input_images(inputs))
    refuse_bad(bad, skip_bad)
    if not good:
        raise DataError("no readable image to detect on")
    scale = _resolve_scale(pixel_scale, stated, [image for image, _ in good])
    grid = PixelGrid(good[0][1].shape[0], scale)
    if grid.n % stride:
        raise ValueError(f"stride (--stride) must divide the image size {grid.n}, got {stride}")
    fit = PriorFit(grid, psf_fwhm, device=resolve_device(device), **fit_settings)
    list_skipped(bad, out)

    rows, read_outs, failed = [], [], 0
    kept = {"delta_chi2": [], "vortex_delta_chi2": [], "normalised_residual": [], "model": []}
    batches = range(0, len(good), batch_size)
    progress = progress_bar(batches, desc="fitting and scanning", unit="batch", leave=False, disable=len(batches) < 3)
    for start in progress:
        chunk = good[start : start + batch_size]
        images = torch.from_numpy(np.stack([array for _, array in chunk]))[:, None]  # (b, 1, n, n)
        found = detect_substructure(fit(images), fit, stride)
        failed += int(found.fit.failed.sum())
        ranks = [[]] * len(chunk)  # the p_null cell of each image, with a null
        if null is not None:
            ranks = [[f"{p:.5g}"] for p in empirical_p_value(found.max_delta_chi2, null).tolist()]
        probabilities = [[]] * len(chunk) if classes is None else _class_cells(classes, found)
        for (image, _), cells, rank, chances in zip(chunk, _rows(found), ranks, probabilities, strict=True):
            rows.append([str(image.path), "" if image.index is None else image.index, *cells, *rank, *chances])
        read_outs.append(torch.stack((found.max_delta_chi2, found.x, found.y), dim=1).cpu().numpy())
        if maps is not None or (figure is not None and start < FIGURE_IMAGES):
            kept["delta_chi2"].append(found.scan.delta_chi2[:, 0].cpu().numpy())
            kept["vortex_delta_chi2"].append(found.vortex.delta_chi2.cpu().numpy())
            kept["normalised_residual"].append(found.fit.normalised_residual[:, 0].cpu().numpy())
            kept["model"].append(found.fit.model[:, 0].cpu().numpy())
    text = io.StringIO()
    writer = csv.writer(text)
    optional = ([] if null is None else [NULL_COLUMN]) + ([] if classes is None else list(PROBABILITY_COLUMNS))
    writer.writerow(["path", "index", *LENS_COLUMNS, *SCAN_COLUMNS, *optional])
    writer.writerows(rows)
    write_text(out, text.getvalue())
    arrays = {key: np.concatenate(value) for key, value in kept.items() if value}
    if maps is not None:
        maps = _save_maps(Path(maps), arrays, scan_positions(grid, stride).numpy(), rows)
    if figure is not None:
        from .plots import plot_detections

        first = slice(0, FIGURE_IMAGES)
        images = np.stack([array for _, array in good[first]])
        plot_detections(images, arrays["model"][first], arrays["normalised_residual"][first],
                        arrays["delta_chi2"][first], grid.n * scale / 2, np.concatenate(read_outs)[first], figure,
                        FIGURE_IMAGES)  # fmt: skip
    return DetectionReport(out, len(rows), failed, tuple(bad), scale, maps)


def _save_maps(path: Path, arrays: dict[str, np.ndarray], positions: np.ndarray, rows: list[list]) -> Path:
    """The maps of every image, in CSV order, with the scans' trial positions and lines (half-lengths in theta_E
    units, orientations in degrees) and the images' paths and indices."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.savez(
            handle,
            **arrays,
            scan_positions_arcsec=positions,
            vortex_half_lengths_theta_e=np.array(VORTEX_HALF_LENGTHS),
            vortex_angles_deg=np.rad2deg(vortex_angles(VORTEX_ANGLES).numpy()),
            path=np.array([row[0] for row in rows], dtype=str),
            index=np.array([-1 if row[1] == "" else row[1] for row in rows], dtype=np.int64),
        )
    return path
