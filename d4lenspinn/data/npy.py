"""Reading ``.npy`` images without ever running code from the file.

A plain ``.npy`` is read by ``np.load(allow_pickle=False)``. An object array (DeepLense Model II axions store
``[image, mass]``) is a pickle after the NPY header; unpickling it with :mod:`pickle` would run whatever the file
asks for. Here the payload goes through :class:`RestrictedUnpickler`, which resolves only the globals a numpy array
and numpy scalars need (``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``,
``numpy.core.multiarray.scalar``); lists, tuples, numbers and strings need none. Anything else is a
:class:`~d4lenspinn.data.formats.DataError` naming the file and the global it tried to load; nothing is called.

    image = load_npy(Path("axion/img0.npy"))    # the image (H, W) of an [image, mass] object array, or the array
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from .formats import DataError

__all__ = ["RestrictedUnpickler", "UnsafePickleError", "load_npy", "npy_header"]

_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
)


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global that is not a numpy array or scalar constructor (``module.name`` in the message)."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays, numpy scalars and plain Python values, and refuses every other global."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(f"{module}.{name}")
        return super().find_class(module, name)


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a ``.npy`` file's header, without reading its data (any failure raises)."""
    with open(path, "rb") as fh:
        return _read_header(fh)


def _read_header(fh: io.BufferedReader) -> tuple[tuple[int, ...], np.dtype]:
    fmt = np.lib.format
    version = fmt.read_magic(fh)
    read_header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}[version]
    shape, _, dtype = read_header(fh)
    return shape, dtype


def _is_object_npy(path: Path) -> bool:
    try:
        return bool(npy_header(path)[1].hasobject)
    except Exception:  # any header failure means "not an object .npy"
        return False


def _has_npy_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(np.lib.format.MAGIC_PREFIX)) == np.lib.format.MAGIC_PREFIX
    except OSError:
        return False


def load_npy(path: Path) -> np.ndarray:
    """Load a ``.npy`` image; object arrays ``[image, mass]`` (DeepLense Model II axions) give their image.

    Object arrays are unpickled by :class:`RestrictedUnpickler` (numpy arrays and numbers only; no code runs).
    Raises :class:`~d4lenspinn.data.formats.DataError` naming ``path`` for anything unreadable or refused."""
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        if not (isinstance(exc, ValueError) and _is_object_npy(path)):
            if isinstance(exc, ValueError) and not _has_npy_magic(path):  # numpy would call it "pickled data"
                raise DataError(f"{path}: could not be read as .npy (no NPY header: not a .npy file)") from exc
            raise DataError(f"{path}: could not be read as .npy ({type(exc).__name__}: {exc})") from exc
    obj = _load_object_array(path)
    images = [np.asarray(x) for x in np.ravel(obj) if isinstance(x, np.ndarray) and x.ndim >= 2]
    if len(images) != 1:
        raise DataError(f"{path}: expected an object array [image, mass] with one image, got {obj!r:.200}")
    return images[0]


def _load_object_array(path: Path) -> np.ndarray:
    """The object array of an object ``.npy``, unpickled by :class:`RestrictedUnpickler`."""
    try:
        with open(path, "rb") as fh:
            _read_header(fh)
            obj = RestrictedUnpickler(fh).load()
    except UnsafePickleError as exc:
        raise DataError(
            f"{path}: object .npy holds a pickled {exc}, not numpy arrays and numbers; refused (nothing was run)"
        ) from None
    except Exception as exc:  # unpickling can fail with almost any exception type
        raise DataError(f"{path}: could not unpickle the object array ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, np.ndarray):
        raise DataError(f"{path}: expected an object array [image, mass], got a pickled {type(obj).__name__}")
    return obj
