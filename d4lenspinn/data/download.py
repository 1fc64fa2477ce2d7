"""Download, verify and cache the public DeepLense datasets.

Every dataset lives under ``cache_root()/<name>/``: the verified archive, the extracted folder and a
``.complete`` marker (JSON: name, Drive id, archive sha256, timestamp) written only after extraction
succeeded. A dataset counts as present if and only if its marker exists, so an interrupted download or a
failed extraction is never mistaken for a complete dataset; the next call simply starts again. Google Drive
is reached in one place only, :func:`_fetch_from_drive` (via ``gdown``).

Example::

    from d4lenspinn.data.download import download_dataset, dataset_path

    root = download_dataset("common_test_i")          # ~1.13 GB on first call, instant afterwards
    train_dir = root / "train"                        # train/{no,sphere,vort}/*.npy
    assert dataset_path("common_test_i") == root

    # offline machine: fetch https://drive.google.com/uc?id=<drive_id> elsewhere, then
    download_dataset("common_test_i", from_zip="~/Downloads/dataset.zip")

The cache directory is the ``cache_dir`` argument, else ``$D4LENSPINN_CACHE``, else ``~/.cache/d4lenspinn``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from ..io import atomic_path, write_text
from ..progress import progress_bar

logger = logging.getLogger(__name__)

MARKER = ".complete"
CACHE_ENV = "D4LENSPINN_CACHE"
_IGNORED = ("__MACOSX/", ".DS_Store")  # macOS zip clutter, never extracted
_DEEPLENSESIM = "github.com/mwt5345/DeepLenseSim"
_ML4SCI = "github.com/ML4SCI/DeepLense, Updating_the_DeepLense_Pipeline__Saranga_K_Mahanta/Classification"
_MODEL_CLASSES = ("no_sub", "cdm", "axion")


class DownloadError(RuntimeError):
    """A dataset could not be downloaded, verified or extracted; the message says how to proceed."""


@dataclass(frozen=True)
class DatasetSpec:
    """One downloadable dataset.

    ``root`` is the folder the archive extracts to and ``layout`` the sub-folders expected inside it. The
    archive format (zip or tar) is detected from its content, so ``filename`` is only the name it is cached
    under. ``source`` records where the Drive id was published.
    """

    name: str
    drive_id: str
    filename: str
    description: str
    root: str
    layout: tuple[str, ...]
    approx_size: str | None = None
    image_size: int | None = None
    classes: tuple[str, ...] = ()
    source: str = ""
    pixel_scale: float | None = None  # arcsec per pixel of the instrument its images simulate

    @property
    def url(self) -> str:
        """Direct Google Drive download URL."""
        return f"https://drive.google.com/uc?id={self.drive_id}"


def _model(
    name: str, drive_id: str, root: str, size: int, description: str, source: str, pixel_scale: float
) -> DatasetSpec:
    """A DeepLenseSim archive: one folder per class (``no_sub/ cdm/ axion/``) of ``.npy`` images."""
    return DatasetSpec(
        name=name,
        drive_id=drive_id,
        filename=f"{name}.archive",
        description=description,
        root=root,
        layout=_MODEL_CLASSES,
        image_size=size,
        classes=_MODEL_CLASSES,
        source=source,
        pixel_scale=pixel_scale,
    )


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "common_test_i",
            "1ZEyNMEO43u3qhJAwJeBZxFBEYc_pVYZQ",
            "dataset.zip",
            "DeepLense Common Test I: 150x150 images, 10,000/class in train/, 2,500/class in val/",
            "dataset",
            ("train", "val"),
            "1.13 GB",
            150,
            ("no", "sphere", "vort"),
            "ML4SCI DeepLense GSoC Common Test I",
            pixel_scale=0.05,  # DeepLenseSim Model I: deltaPix = 0.05
        ),
        _model(
            "model_i_train",
            "1QMVLpqag6S9JWqzmGM_pK4C0F1eBVIfV",
            "Model_I",
            150,
            "DeepLenseSim Model I training set (Gaussian PSF, SNR ~25)",
            f"{_DEEPLENSESIM} Model_I/README.md",
            0.05,  # arcsec/pixel: deltaPix = 0.05
        ),
        _model(
            "model_i_test",
            "1rUAKLLS3p9jDaL9R9m84JVKvMcUuVsO1",
            "Model_I_test",
            150,
            "DeepLenseSim Model I test set",
            f"{_DEEPLENSESIM} Model_I/README.md",
            0.05,  # arcsec/pixel: deltaPix = 0.05
        ),
        _model(
            "model_ii_train",
            "1HYPkdtVUj9xsoGzFDxT4rhl37KmqDCg4",
            "Model_II",
            64,
            "DeepLenseSim Model II training set (Euclid-like), 30,000 images/class",
            f"{_DEEPLENSESIM} Model_II/README.md",
            0.101,  # arcsec/pixel: lenstronomy Euclid VIS
        ),
        _model(
            "model_ii_test",
            "1PFdpqk7XOAKtg0Cnav4HTzyJiudx9dZv",
            "Model_II_test",
            64,
            "DeepLenseSim Model II test set (Euclid-like), 5,000 images/class",
            f"{_ML4SCI}/Model_II/README.md",
            0.101,  # arcsec/pixel: lenstronomy Euclid VIS
        ),
        _model(
            "model_iii_train",
            "1ynKMJoEeKKJqLfuKRR1Y7rQjeBMM0w94",
            "Model_III",
            64,
            "DeepLenseSim Model III training set (HST-like), 30,000 images/class",
            f"{_DEEPLENSESIM} Model_III/README.md",
            0.08,  # arcsec/pixel: lenstronomy HST WFC3 F160W
        ),
        _model(
            "model_iii_test",
            "18BuCv40t6qmiNnhjJF1y9rqSBhBOfDon",
            "Model_III_test",
            64,
            "DeepLenseSim Model III test set (HST-like), 5,000 images/class",
            f"{_ML4SCI}/Model_III/README.md",
            0.08,  # arcsec/pixel: lenstronomy HST WFC3 F160W
        ),
    )
}


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache directory: ``cache_dir``, else ``$D4LENSPINN_CACHE``, else ``~/.cache/d4lenspinn``."""
    chosen = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV) or "~/.cache/d4lenspinn"
    return Path(chosen).expanduser()


def dataset_path(name: str, cache_dir: str | Path | None = None) -> Path | None:
    """The extracted root of dataset ``name`` if its download completed, else None. No network access."""
    spec = _get_spec(name)
    target = cache_root(cache_dir) / spec.name
    try:
        info = json.loads((target / MARKER).read_text())
    except (OSError, ValueError):
        return None
    root = target / str(info.get("root", spec.root))
    return root if root.is_dir() else None


def download_dataset(
    name: str, cache_dir: str | Path | None = None, from_zip: str | Path | None = None, force: bool = False
) -> Path:
    """Make dataset ``name`` available in the cache and return its extracted root folder.

    A complete cached copy is returned at once without any network access (unless ``force``). Otherwise the
    archive comes from ``from_zip`` (an archive downloaded by hand; copied, never modified) or from Google
    Drive, is verified, extracted next to its final place and renamed into it; the marker is written last.
    Raises ValueError for an unknown name and DownloadError when fetching, verifying or extracting fails.
    """
    spec = _get_spec(name)
    if not force and (cached := dataset_path(name, cache_dir)) is not None:
        logger.info("Dataset %r found in cache at %s", name, cached)
        return cached
    source = _checked_source(Path(from_zip).expanduser()) if from_zip is not None else None
    target = cache_root(cache_dir) / spec.name
    target.mkdir(parents=True, exist_ok=True)
    (target / MARKER).unlink(missing_ok=True)
    for stale in target.glob(".extract-*"):  # left by an extraction that was killed
        shutil.rmtree(stale, ignore_errors=True)
    archive = target / spec.filename
    if force or source is not None:
        archive.unlink(missing_ok=True)
    kind = None
    if archive.is_file():  # downloaded earlier, but the extraction did not finish
        try:
            kind = _check_archive(archive)
            logger.info("Reusing downloaded archive %s", archive)
        except DownloadError as exc:
            logger.warning("Discarding cached archive: %s", exc)
            archive.unlink()
    if kind is None:
        if source is not None:
            _copy_archive(source, archive)
        else:
            _download(spec, archive)
        try:
            kind = _check_archive(archive)
        except DownloadError as exc:
            archive.unlink(missing_ok=True)
            raise DownloadError(f"{exc}; the file was deleted. {_how_to_proceed(spec)}") from exc
    digest = _sha256(archive)
    root = _extract(archive, kind, spec, target)
    _write_marker(target, spec, root, digest)
    logger.info("Dataset %r ready at %s", name, root)
    return root


def _get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def _how_to_proceed(spec: DatasetSpec) -> str:
    return (
        f"To proceed, download {spec.url} by hand and run "
        f"`d4lenspinn download --dataset {spec.name} --from-zip PATH`, "
        "or simulate data instead with `d4lenspinn simulate`."
    )


def _fetch_from_drive(drive_id: str, destination: Path) -> None:
    """Download Drive file ``drive_id`` to ``destination`` with gdown; the module's only network call."""
    import gdown

    if gdown.download(id=drive_id, output=str(destination), quiet=False) is None:
        raise OSError(f"gdown could not retrieve Drive file {drive_id}")


def _download(spec: DatasetSpec, archive: Path) -> None:
    """Fetch into ``<archive>.part`` and rename it to ``archive`` only once the download finished."""
    part = archive.with_name(archive.name + ".part")
    logger.info("Downloading %r (%s) from %s", spec.name, spec.approx_size or "size unknown", spec.url)
    try:
        _fetch_from_drive(spec.drive_id, part)
        if not part.is_file() or part.stat().st_size == 0:
            raise OSError("no data was received")
        os.replace(part, archive)
    except Exception as exc:
        raise DownloadError(
            f"Downloading dataset {spec.name!r} from {spec.url} failed ({exc}). {_how_to_proceed(spec)}"
        ) from exc
    finally:
        part.unlink(missing_ok=True)


def _checked_source(source: Path) -> Path:
    """A hand-downloaded archive (``from_zip``), verified; it is never modified or deleted."""
    if not source.is_file():
        raise FileNotFoundError(f"from_zip: no such file {source}")
    try:
        _check_archive(source)
    except DownloadError as exc:
        raise DownloadError(f"from_zip: {exc}; download it again from the Drive URL") from exc
    return source


def _copy_archive(source: Path, archive: Path) -> None:
    """Copy a verified archive into the cache atomically."""
    logger.info("Copying %s to %s", source, archive)
    with atomic_path(archive, keep_suffix=False) as tmp:
        shutil.copyfile(source, tmp)


def _check_archive(path: Path) -> str:
    """``"zip"`` or ``"tar"`` if ``path`` is a readable, non-empty archive; else raise DownloadError."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                if not zf.namelist():
                    raise DownloadError(f"Archive {path} is empty")
                if (bad := zf.testzip()) is not None:
                    raise DownloadError(f"Archive {path} is corrupt (bad CRC in {bad})")
            return "zip"
        if tarfile.is_tarfile(path):
            with tarfile.open(path) as tf:
                if not tf.getmembers():
                    raise DownloadError(f"Archive {path} is empty")
            return "tar"
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as exc:
        raise DownloadError(f"Archive {path} is corrupt ({exc})") from exc
    raise DownloadError(f"{path} is not a valid zip or tar archive (truncated download or HTML error page?)")


def _safe_names(names: list[str]) -> list[str]:
    """Drop macOS clutter; refuse absolute paths and ``..`` components."""
    kept = [n for n in names if not any(part in n for part in _IGNORED)]
    for name in kept:
        pure = PurePosixPath(name.replace("\\", "/"))
        if pure.is_absolute() or ".." in pure.parts:
            raise DownloadError(f"Refusing unsafe path {name!r} in archive")
    return kept


def _extract(archive: Path, kind: str, spec: DatasetSpec, target: Path) -> Path:
    """Extract into a temporary folder inside ``target``, then rename the dataset root to ``target/root``."""
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target))
    final = target / spec.root
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                for member in progress_bar(_safe_names(zf.namelist()), desc=f"Extracting {spec.name}", unit="file"):
                    zf.extract(member, tmp)
        else:
            with tarfile.open(archive) as tf:
                members = [tf.getmember(n) for n in _safe_names(tf.getnames())]
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(tmp, members=members, filter="data")
                else:  # Python < 3.10.12: names were checked above
                    tf.extractall(tmp, members=members)
        entries = [p for p in tmp.iterdir() if p.name not in ("__MACOSX", ".DS_Store")]
        if (tmp / spec.root).is_dir():
            source = tmp / spec.root
        elif len(entries) == 1 and entries[0].is_dir():
            source = entries[0]
        else:
            source = tmp
        missing = [sub for sub in spec.layout if not (source / sub).is_dir()]
        if missing:
            found = sorted(p.name for p in source.iterdir())
            logger.warning("Dataset %r: expected folders %s missing; found %s", spec.name, missing, found)
        if final.exists():
            shutil.rmtree(final)
        os.replace(source, final)
    except Exception as exc:
        raise DownloadError(
            f"Extracting {archive} failed ({exc}); nothing was cached. "
            "Run the command again, or pass force=True to download the archive anew."
        ) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _write_marker(target: Path, spec: DatasetSpec, root: Path, digest: str) -> None:
    """Write the ``.complete`` marker atomically; it is the last step of a successful download."""
    info = {
        "name": spec.name,
        "drive_id": spec.drive_id,
        "archive": spec.filename,
        "sha256": digest,
        "root": root.name,
        "completed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_text(target / MARKER, json.dumps(info, indent=2) + "\n")
