"""Images to predict on: any mix of files and folders of ``.npy``, HDF5 and FITS, one entry per image.

    images = list_input_images(["cutouts/", "more.fits", "data/model_ii/val"])   # InputImage per image
    array, pixel_scale = read_input_image(images[0])       # float32 (H, W); arcsec/pixel if the file says, else None

* ``.npy``: an image ``(H, W)`` / ``(1, H, W)``, a stack ``(N, H, W)``, or a DeepLense Model II object array
  ``[image, mass]`` (read by the restricted unpickler of :mod:`d4lenspinn.data.npy`: numpy arrays and numbers only);
* ``.h5`` / ``.hdf5``: every group with an ``images`` dataset ``(N, H, W)`` (our simulator's layout);
* ``.fits`` / ``.fits.gz``: the primary HDU if it holds an image, else the first image HDU, ``(H, W)`` or a cube
  ``(N, H, W)``; the pixel scale is read from ``PIXSCALE`` (arcsec) or ``CDELT1`` / ``CD1_1`` (degrees).

A folder is searched recursively; files are taken in sorted order. Nothing is normalised here.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..io import write_text
from .formats import DataError, as_image, hdf5_image_groups
from .npy import load_npy, npy_header
from .scan_report import MAX_LISTED

__all__ = ["InputImage", "INPUT_SUFFIXES", "list_input_images", "list_skipped", "read_input_image", "refuse_bad"]

INPUT_SUFFIXES = (".npy", ".h5", ".hdf5", ".fits", ".fits.gz", ".fit")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputImage:
    """One image: its file, its index within the file (``None`` for a single-image file) and, for HDF5, the group."""

    path: Path
    index: int | None = None
    group: str | None = None

    def __str__(self) -> str:
        where = f":/{self.group}/images" if self.group else ""
        return f"{self.path}{where}" + ("" if self.index is None else f"[{self.index}]")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".fits.gz" if name.endswith(".fits.gz") else path.suffix.lower()


def _files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    files = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _suffix(p) in INPUT_SUFFIXES)
            files += [p for p in found if not any(part.startswith(".") for part in p.relative_to(path).parts)]
        elif path.is_file():
            if _suffix(path) not in INPUT_SUFFIXES:
                raise DataError(f"{path}: not an image file; expected one of {list(INPUT_SUFFIXES)}")
            files.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    return files


def _fits_image_hdu(hdus):
    for hdu in hdus:
        if hdu.is_image and hdu.data is not None and hdu.data.ndim >= 2:
            return hdu
    return None


def _entries(path: Path) -> list[InputImage]:
    """The images of one file (a file that cannot even be opened gives one entry, whose read then fails)."""
    suffix = _suffix(path)
    try:
        if suffix == ".npy":
            shape, dtype = npy_header(path)
            count = shape[0] if len(shape) == 3 and shape[0] > 1 and not dtype.hasobject else None
        elif suffix in (".h5", ".hdf5"):
            groups = hdf5_image_groups(path)  # a file without images: one entry, whose read names what it holds
            with h5py.File(path, "r") as f:
                return [InputImage(path, i, g) for g in groups for i in range(f[g]["images"].shape[0])]
        else:
            from astropy.io import fits

            with fits.open(path) as hdus:
                hdu = _fits_image_hdu(hdus)
                count = hdu.data.shape[0] if hdu is not None and hdu.data.ndim == 3 else None
    except Exception:  # unreadable: reported when read
        return [InputImage(path)]
    return [InputImage(path)] if count is None else [InputImage(path, i) for i in range(count)]


def list_input_images(paths: Iterable[str | os.PathLike]) -> list[InputImage]:
    """One :class:`InputImage` per image under ``paths`` (files and folders); ``DataError`` if there are none."""
    images = [entry for path in _files(paths) for entry in _entries(path)]
    if not images:
        raise DataError(f"no image files ({', '.join(INPUT_SUFFIXES)}) under {[str(p) for p in paths]}")
    return images


def _fits_pixel_scale(header) -> float | None:
    if "PIXSCALE" in header:
        return float(header["PIXSCALE"])
    for key in ("CDELT1", "CD1_1"):
        if key in header and float(header[key]) != 0:
            return abs(float(header[key])) * 3600.0
    return None


def read_input_image(image: InputImage) -> tuple[np.ndarray, float | None]:
    """The image as a float32 ``(H, W)`` array and the pixel scale its file states (arcsec/pixel, else None).

    Raises :class:`DataError` naming the image when it cannot be read, is not 2-D, holds NaN/inf pixels or values
    beyond float32's range, or (HDF5) the file holds no image dataset."""
    suffix = _suffix(image.path)
    scale = None
    try:
        if suffix == ".npy":
            array = load_npy(image.path)
        elif suffix in (".h5", ".hdf5"):
            if image.group is None:
                hdf5_image_groups(image.path)  # raises, naming what the file holds
            with h5py.File(image.path, "r") as f:
                array = np.asarray(f[image.group]["images"][image.index])
        else:
            from astropy.io import fits

            with fits.open(image.path) as hdus:
                hdu = _fits_image_hdu(hdus)
                if hdu is None:
                    raise DataError(f"{image}: no image HDU")
                array, scale = np.asarray(hdu.data), _fits_pixel_scale(hdu.header)
    except DataError:
        raise
    except Exception as error:  # h5py, astropy and numpy raise many types for a bad file
        raise DataError(f"{image}: could not be read ({type(error).__name__}: {error})") from error
    if image.index is not None and suffix in (".npy", ".fits", ".fits.gz", ".fit"):
        array = array[image.index]
    array = as_image(array, image, expected=None)  # the readers' checks: numeric, (H, W) or (1, H, W), finite
    if scale is not None and not (math.isfinite(scale) and scale > 0):
        scale = None
    return array, scale


def refuse_bad(bad: list[str], skip_bad: bool) -> None:
    """Raise :class:`DataError` listing the bad images (``"image: reason"``, the first ``MAX_LISTED``) unless
    ``skip_bad`` (``--skip-bad``) leaves them out."""
    if bad and not skip_bad:
        listed = "\n  ".join(bad[:MAX_LISTED])
        more = f"\n  ... and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
        raise DataError(f"{len(bad)} bad input image(s) (use --skip-bad to leave them out):\n  {listed}{more}")


def list_skipped(bad: list[str], out: Path) -> None:
    """Write the skipped images to ``<out>.bad.txt`` beside the output ``out``, with one warning; nothing if none."""
    if bad:
        write_text(out.with_name(out.name + ".bad.txt"), "\n".join(bad) + "\n")
        logger.warning("skipped %d bad image(s) (first: %s); all listed in %s.bad.txt", len(bad), bad[0], out)
