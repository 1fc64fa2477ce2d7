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
from .data.inputs import InputImage, list_input_images, read_input_image
from .data.scan_report import MAX_LISTED
from .device import resolve_device
from .io import exclusive_writer, write_text
from .progress import progress_bar
from .tta import predict

__all__ = ["PredictionReport", "predict_files", "check_predict_arguments", "min_max_normalise"]

logger = logging.getLogger(__name__)


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
    if card.contradicts_pixel_scale(pixel_scale):
        raise ValueError(
            f"--pixel-scale {pixel_scale:g} arcsec/pixel differs from the {card.pixel_scale:g} arcsec/pixel the model "
            f"in {checkpoint} was trained at"
        )
    good, bad, normalised = _load(list_input_images(inputs), card)
    if bad and not skip_bad:
        listed = "\n  ".join(bad[:MAX_LISTED])
        more = f"\n  ... and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
        raise DataError(f"{len(bad)} bad input image(s) (use --skip-bad to leave them out):\n  {listed}{more}")
    if bad:
        write_text(out.with_name(out.name + ".bad.txt"), "\n".join(bad) + "\n")
        logger.warning("skipped %d bad image(s) (first: %s); all listed in %s.bad.txt", len(bad), bad[0], out)
    if not good:
        raise DataError("no readable image to predict on")
    if normalised:
        logger.warning("%d of %d images were outside [0, 1] and were min-max normalised", normalised, len(good))

    rows = []
    batches = range(0, len(good), batch_size)
    for start in progress_bar(batches, desc="predicting", unit="batch", leave=False, disable=len(batches) < 5):
        chunk = good[start : start + batch_size]
        images = torch.from_numpy(np.stack([array for _, array in chunk]))[:, None].to(device)  # (b, 1, n, n)
        probabilities = predict(model, images, tta=tta).float().cpu().numpy()
        for (image, _), p in zip(chunk, probabilities, strict=True):
            rows.append([str(image.path), "" if image.index is None else image.index, *p, card.class_names[p.argmax()]])
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["path", "index", *(f"p_{name}" for name in card.class_names), "predicted"])
    writer.writerows(rows)
    write_text(out, text.getvalue())
    return PredictionReport(out, len(rows), normalised, tuple(bad), card)
