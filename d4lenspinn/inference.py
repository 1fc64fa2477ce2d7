"""Predictions for a user's own images with a trained checkpoint: ``d4lenspinn predict``.

    report = predict_files("runs/demo/best.pt", ["cutouts/", "lens.fits"], "predictions.csv")
    report.n_images, report.normalised, report.skipped

One CSV row per image: ``path``, ``index`` (within a multi-image file, else empty), one ``p_<class>`` column per
class of the model card, and ``predicted`` (the class name). Images are presented as the model was trained: the
DeepLense convention, min-max per image to [0, 1]; an image outside [0, 1] is min-max normalised, and the report
(and the command line, once) says how many were. The model card fixes the image size and the pixel scale: a file
whose header states another scale, or a ``pixel_scale`` argument that differs, is an error naming both; so is an
image of another size. Unreadable, NaN or mis-shaped images are listed in one error, or, with ``skip_bad``, left
out of the CSV with one warning and listed in ``<csv>.bad.txt``. TTA is on unless ``tta=False`` (an invariant model
skips it anyway, as :func:`d4lenspinn.tta.predict` does).

Arguments are checked before the checkpoint is loaded (``batch_size`` >= 1, ``out`` not a directory), and one run
writes a CSV at a time: a second run to the same ``out`` while the first still runs fails at once with
:class:`~d4lenspinn.io.WriterBusyError` ("another process is writing ...") and neither run's rows are lost.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import ModelCard, load_trained_model
from .data.formats import DataError
from .data.inputs import InputImage, list_input_images, list_skipped, read_input_image, refuse_bad
from .device import resolve_device
from .io import exclusive_writer, write_text
from .progress import progress_bar
from .tta import inference_network, predict_with_maps

__all__ = ["PredictionReport", "predict_files", "check_predict_arguments", "min_max_normalise", "outside_prior"]

logger = logging.getLogger(__name__)


LENS_COLUMNS = ("theta_e_arcsec", "psf_fwhm_arcsec", "peak_snr", "fit_reduced_chi2", "fit_failed", "outside_prior")


def outside_prior(theta_e: np.ndarray, peak_snr: np.ndarray, prior: dict) -> np.ndarray:
    """Whether each image's fitted ``theta_e`` [arcsec] or estimated ``peak_snr`` lies outside a model card's
    ``training_prior``; a peak SNR above the range counts as inside when the model saw noiseless images."""
    low, high = prior["theta_e"]
    outside = (theta_e < low) | (theta_e > high)
    if prior.get("peak_snr") is not None:
        low, high = prior["peak_snr"]
        outside |= (peak_snr < low) | ((peak_snr > high) & (not prior.get("noiseless", False)))
    return outside


def _lens_cells(maps, prior: dict | None) -> list[list]:
    """The :data:`LENS_COLUMNS` of a batch of fitted maps (``FittedLensMaps``)."""
    theta_e = maps.macro.theta_e.double().cpu().numpy()
    psf_fwhm = maps.psf_fwhm.double().cpu().numpy()
    peak_snr = (1 / maps.noise_sigma).double().cpu().numpy()
    chi2 = maps.reduced_chi2.double().cpu().numpy()
    failed = maps.fit_failed.cpu().numpy()
    flags = outside_prior(theta_e, peak_snr, prior) if prior is not None else [""] * len(theta_e)
    return [
        [f"{t:.4f}", f"{w:.4f}", f"{q:.1f}", f"{c:.4f}", int(f), "" if o == "" else int(o)]
        for t, w, q, c, f, o in zip(theta_e, psf_fwhm, peak_snr, chi2, failed, flags, strict=True)
    ]


@dataclass(frozen=True)
class PredictionReport:
    """What :func:`predict_files` wrote: the CSV, how many images, how many it normalised, what it skipped."""

    csv: Path
    n_images: int
    normalised: int
    skipped: tuple[str, ...]
    card: ModelCard


def min_max_normalise(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """``image`` scaled to [0, 1] by its own minimum and maximum, unless it already lies in [0, 1]; whether it was."""
    low, high = float(image.min()), float(image.max())
    if low >= 0.0 and high <= 1.0:
        return image, False
    return ((image - low) / (high - low) if high > low else np.zeros_like(image)), True


def _check_scale(image: InputImage, stated: float | None, card: ModelCard) -> None:
    if card.contradicts_pixel_scale(stated):
        raise ValueError(
            f"{image} states a pixel scale of {stated:g} arcsec/pixel but the model was trained at "
            f"{card.pixel_scale:g} arcsec/pixel"
        )


def _load(images: list[InputImage], card: ModelCard) -> tuple[list[tuple[InputImage, np.ndarray]], list[str], int]:
    """Read every image: (image, array) of the good ones, ``"image: reason"`` of the bad ones, how many normalised."""
    good, bad, normalised = [], [], 0
    for image in progress_bar(images, desc="reading images", unit="img", leave=False, disable=len(images) < 200):
        try:
            array, stated = read_input_image(image)
            if array.shape != (card.image_size, card.image_size):
                raise DataError(
                    f"{image}: the image is {array.shape[0]}x{array.shape[1]} but the model takes "
                    f"{card.image_size}x{card.image_size}"
                )
        except DataError as error:
            bad.append(str(error))
            continue
        _check_scale(image, stated, card)
        array, changed = min_max_normalise(array)
        normalised += changed
        good.append((image, array))
    return good, bad, normalised


def predict_files(
    checkpoint: str | Path,
    inputs: Sequence[str | os.PathLike],
    out: str | Path,
    tta: bool = True,
    batch_size: int = 64,
    pixel_scale: float | None = None,
    skip_bad: bool = False,
    device: str = "auto",
) -> PredictionReport:
    """Write class probabilities for every image under ``inputs`` to the CSV ``out``; see the module docstring."""
    out = Path(out)
    check_predict_arguments(out, batch_size)
    with exclusive_writer(out):
        return _predict_files(checkpoint, inputs, out, tta, batch_size, pixel_scale, skip_bad, device)


def check_predict_arguments(out: Path, batch_size: int) -> None:
    """Raise ``ValueError`` naming the argument if ``batch_size`` < 1 or ``out`` is an existing directory."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size (--batch-size) must be a whole number >= 1, got {batch_size!r}")
    if out.is_dir():
        raise ValueError(f"out (--out) {out} is a directory; expected the name of the CSV file to write")


def _predict_files(
    checkpoint: str | Path,
    inputs: Sequence[str | os.PathLike],
    out: Path,
    tta: bool,
    batch_size: int,
    pixel_scale: float | None,
    skip_bad: bool,
    device: str,
) -> PredictionReport:
    device = resolve_device(device)
    model, _, card = load_trained_model(checkpoint, device)
    model = inference_network(model)
    if card.contradicts_pixel_scale(pixel_scale):
        raise ValueError(
            f"--pixel-scale {pixel_scale:g} arcsec/pixel differs from the {card.pixel_scale:g} arcsec/pixel the model "
            f"in {checkpoint} was trained at"
        )
    good, bad, normalised = _load(list_input_images(inputs), card)
    refuse_bad(bad, skip_bad)
    list_skipped(bad, out)
    if not good:
        raise DataError("no readable image to predict on")
    if normalised:
        logger.warning("%d of %d images were outside [0, 1] and were min-max normalised", normalised, len(good))

    fits = isinstance(getattr(model, "fit_steps", None), int)  # the model fits the lens: write what it found
    if fits and card.training_prior is None:
        logger.warning("the model card records no training prior (older checkpoint, or not a simulation): "
                       "outside_prior is left empty")  # fmt: skip
    rows = []
    batches = range(0, len(good), batch_size)
    for start in progress_bar(batches, desc="predicting", unit="batch", leave=False, disable=len(batches) < 5):
        chunk = good[start : start + batch_size]
        images = torch.from_numpy(np.stack([array for _, array in chunk]))[:, None].to(device)  # (b, 1, n, n)
        probabilities, maps = predict_with_maps(model, images, tta=tta)
        probabilities = probabilities.float().cpu().numpy()
        lens = _lens_cells(maps, card.training_prior) if fits else [[]] * len(chunk)
        for (image, _), p, extra in zip(chunk, probabilities, lens, strict=True):
            index = "" if image.index is None else image.index
            rows.append([str(image.path), index, *p, card.class_names[p.argmax()], *extra])
    text = io.StringIO()
    writer = csv.writer(text)
    names = [f"p_{name}" for name in card.class_names]
    writer.writerow(["path", "index", *names, "predicted", *(LENS_COLUMNS if fits else ())])
    writer.writerows(rows)
    write_text(out, text.getvalue())
    return PredictionReport(out, len(rows), normalised, tuple(bad), card)
