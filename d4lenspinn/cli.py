"""The ``d4lenspinn`` command line: one sub-command per task, each a thin wrapper over the Python API.

d4lenspinn simulate --preset model_i --n-per-class 1000 --out data/model_i --seed 0
d4lenspinn download --dataset common_test_i [--cache-dir DIR] [--from-zip PATH]
d4lenspinn plot-examples --preset model_i --out docs/figures/simulated_examples.png
d4lenspinn check-data PATH [--split train val] [--max-listed 10]
d4lenspinn train --config configs/demo.yaml [--set optim.lr=3e-4 ...] [--resume | --overwrite] [--skip-bad]
d4lenspinn evaluate --checkpoint runs/demo/best.pt [--data PATH] [--no-tta] [--skip-bad]
d4lenspinn predict --checkpoint runs/demo/best.pt cutouts/ more.fits --out predictions.csv [--no-tta] [--skip-bad]
d4lenspinn detect cutouts/ --instrument model_ii [--supersampling 3] [--out detections.csv] [--figure detections.png]
d4lenspinn interp --checkpoint runs/demo/best.pt --out runs/demo/interp [--data PATH] [--studies probes ...]
d4lenspinn models
d4lenspinn demo [--overwrite]
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from .allocator import keep_freed_memory
from .cli_checks import (
    check_train_config,
    existing_file,
    existing_path,
    is_user_error,
    output_dir,
    output_file,
    override,
    positive_number,
    whole_number,
)

__all__ = ["main", "build_parser"]


def _simulate(args: argparse.Namespace) -> int:
    from .data.presets import get_preset
    from .data.writer import SimulationInterrupted, simulate_dataset

    preset = get_preset(args.preset)
    try:
        out = simulate_dataset(
            args.out,
            preset,
            n_per_class=args.n_per_class,
            n_val_per_class=args.n_val_per_class,
            seed=args.seed,
            fmt=args.format,
            batch_size=args.batch_size,
            device=args.device,
        )
    except SimulationInterrupted as stop:
        print(f"interrupted: {stop}; run the same command again to resume", file=sys.stderr)
        return 130
    print(f"simulated {preset.name} into {out}")
    return 0


def _download(args: argparse.Namespace) -> int:
    from .data.download import download_dataset

    root = download_dataset(args.dataset, cache_dir=args.cache_dir, from_zip=args.from_zip, force=args.force)
    print(root)
    return 0


def _plot_examples(args: argparse.Namespace) -> int:
    from .data.presets import get_preset
    from .plots import plot_class_examples

    print(plot_class_examples(get_preset(args.preset), args.out, seed=args.seed))
    return 0


def _train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .train import train

    config = load_config(args.config, args.set + _skip_bad_override(args))
    check_train_config(config)
    print(f"run directory: {train(config, resume=args.resume, overwrite=args.overwrite)}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, write_report

    skip_bad = True if args.skip_bad else None  # None: as the run was trained
    evaluation = evaluate(
        args.checkpoint, data_source=args.data, tta=not args.no_tta, skip_bad=skip_bad, split=args.split
    )
    files = write_report(evaluation, args.out)
    print(f"model card: {evaluation.card.describe()}")
    print(evaluation.table())
    print(f"report: {files.report}")
    return 0


def _interp(args: argparse.Namespace) -> int:
    from interp.report import run_studies

    summary = run_studies(
        args.checkpoint,
        args.out,
        data=args.data,
        studies=args.studies,
        layers=args.layers,
        preset=args.preset,
        n_images=args.n_images,
        n_pairs=args.n_pairs,
        n_probe=args.n_probe,
        seed=args.seed,
        device=args.device,
        progress=lambda study: print(f"running {study} ...", flush=True),
    )
    print(f"report: {summary['report']}")
    return 0


def _models(args: argparse.Namespace) -> int:
    from .models import count_parameters, create_model, list_models

    for name in list_models():
        model = create_model(name, image_size=args.image_size, pixel_scale=args.pixel_scale)
        print(f"{name:20s} {count_parameters(model):>12,d} parameters")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .config import load_config
    from .evaluate import evaluate, write_report
    from .train import train

    config = load_config(args.config, args.set + _skip_bad_override(args))
    check_train_config(config)
    run_dir = train(config, overwrite=args.overwrite)
    evaluation = evaluate(run_dir / "best.pt")
    files = write_report(evaluation)
    print(evaluation.table())
    print(f"report: {files.report}")
    return 0


def _check_data(args: argparse.Namespace) -> int:
    from .data.scan import check_data

    report = check_data(args.path, args.split, progress=True)
    print(report.format(args.max_listed))
    return 0 if report.ok else 1


def _skip_bad_override(args: argparse.Namespace) -> list[str]:
    return ["data.skip_bad=true"] if args.skip_bad else []


def _add_skip_bad(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="drop bad image files with one warning instead of failing (same as --set data.skip_bad=true)",
    )


def _add_check_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check-data",
        help="check every image of a dataset (as training does first); exit 1 if any is bad",
        description="Object .npy files are read as every command reads them: numpy arrays and numbers only "
        "(a restricted unpickler; any other pickled object is a bad file, and nothing in it runs).",
    )
    p.add_argument(
        "path", type=existing_path, help="folder (train/ val/ split folders, or the class folders) or .h5 file"
    )
    p.add_argument("--split", nargs="+", default=None, help="split folders / HDF5 groups (default: all present)")
    p.add_argument(
        "--max-listed", type=whole_number(0), default=10, help="bad files named in full (0: all); the rest counted"
    )
    p.set_defaults(handler=_check_data)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (config YAML + overrides)")
    p.add_argument("--config", type=existing_file, default=None, help="YAML file (configs/*.yaml); defaults otherwise")
    p.add_argument(
        "--set", action="append", type=override, default=[], metavar="KEY=VALUE", help="override, e.g. optim.lr=3e-4"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in the config's out directory")
    p.add_argument("--overwrite", action="store_true", help="replace the run in out (its checkpoints, metrics, report)")
    _add_skip_bad(p)
    p.set_defaults(handler=_train)


def _predict(args: argparse.Namespace) -> int:
    from .inference import predict_files

    report = predict_files(
        args.checkpoint,
        args.inputs,
        args.out,
        tta=args.tta,
        batch_size=args.batch_size,
        pixel_scale=args.pixel_scale,
        skip_bad=args.skip_bad,
        device=args.device,
    )
    print(f"model card: {report.card.describe()}")
    print(
        f"{report.n_images} predictions -> {report.csv}"
        + (f" ({len(report.skipped)} skipped)" if report.skipped else "")
    )
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="class probabilities for your own images (.npy, .h5, .fits) into a CSV")
    p.add_argument("--checkpoint", type=existing_file, required=True)
    p.add_argument(
        "inputs", nargs="+", type=existing_path, metavar="INPUT", help="image files and folders (searched recursively)"
    )
    p.add_argument(
        "--out", type=output_file, default="predictions.csv", help="the CSV to write (default: predictions.csv)"
    )
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True, help="D4 test-time augmentation")
    p.add_argument("--batch-size", type=whole_number(1), default=64)
    p.add_argument(
        "--pixel-scale",
        type=positive_number,
        default=None,
        help="arcsec/pixel of the images, checked against the model",
    )
    p.add_argument("--skip-bad", action="store_true", help="leave unreadable/NaN/mis-shaped images out (listed beside)")
    p.add_argument("--device", default="auto")
    p.set_defaults(handler=_predict)


def _detect(args: argparse.Namespace) -> int:
    from .data.presets import get_preset
    from .detection_files import detect_files

    instrument = get_preset(args.instrument) if args.instrument else None

    def given_or_instrument(value, name: str, default=None):
        return value if value is not None else getattr(instrument, name, default)

    psf_fwhm = given_or_instrument(args.psf_fwhm, "psf_fwhm")
    if psf_fwhm is None:
        raise ValueError("give the PSF's width: --psf-fwhm ARCSEC, or --instrument PRESET")
    report = detect_files(
        args.inputs,
        args.out,
        psf_fwhm,
        pixel_scale=given_or_instrument(args.pixel_scale, "pixel_scale"),
        psf_truncation=given_or_instrument(args.psf_truncation, "psf_truncation", 4.0),
        steps=args.steps,
        fit_psf=args.fit_psf,
        supersampling=args.supersampling,
        shot_noise=args.shot_noise,
        prior_theta_e=tuple(args.theta_e),
        refined_starts=args.refined_starts,
        trial_steps=args.trial_steps,
        start_ellipticity=args.start_ellipticity,
        start_shear=args.start_shear,
        stride=args.stride,
        batch_size=args.batch_size,
        skip_bad=args.skip_bad,
        device=args.device,
        maps=args.maps,
        figure=args.figure,
        null=args.null,
        classes_from=args.classes_from,
    )
    print(
        f'{report.n_images} detections -> {report.csv} (pixel scale {report.pixel_scale:g}"/px'
        + (f", {report.n_failed} fits failed" if report.n_failed else "")
        + (f", {len(report.skipped)} skipped" if report.skipped else "")
        + ")"
    )
    return 0


def _shot_noise(text: str) -> str | float:
    """argparse type: ``fit`` or a background noise in electrons per pixel (> 0)."""
    return text if text == "fit" else positive_number(text)


def _add_detect(sub: argparse._SubParsersAction) -> None:
    from .data.presets import PRESETS

    p = sub.add_parser(
        "detect",
        help="no training: fit the smooth lens to each image and scan its residual for a subhalo, into a CSV",
    )
    p.add_argument(
        "inputs", nargs="+", type=existing_path, metavar="INPUT", help="image files and folders (searched recursively)"
    )
    p.add_argument("--out", type=output_file, default="detections.csv", help="the CSV to write")
    p.add_argument("--instrument", choices=sorted(PRESETS), help="take pixel scale and PSF from this simulation preset")
    p.add_argument("--pixel-scale", type=positive_number, help="arcsec/pixel (default: the files' or the instrument's)")
    p.add_argument("--psf-fwhm", type=positive_number, help="Gaussian PSF FWHM, arcsec (default: the instrument's)")
    p.add_argument("--psf-truncation", type=positive_number, help="PSF radius in sigma (default: instrument's, or 4)")
    p.add_argument("--fit-psf", action="store_true", help="fit each image's PSF width too")
    p.add_argument(
        "--supersampling", type=whole_number(1), default=1, help="sub-pixels per axis: 3 for light integrated per pixel"
    )
    p.add_argument(
        "--shot-noise", type=_shot_noise, default=None, help="'fit', or the background noise in electrons per pixel"
    )
    p.add_argument("--steps", type=whole_number(0), default=5, help="Levenberg-Marquardt steps of the fit")
    p.add_argument(
        "--refined-starts", type=whole_number(1), default=4, help="starts fitted side by side; the best goes on"
    )
    p.add_argument("--trial-steps", type=whole_number(0), default=2, help="steps before the best start is chosen")
    p.add_argument(
        "--start-ellipticity", type=float, default=0.15, help="also start from lenses this elliptical, <= 0.8 (0: none)"
    )
    p.add_argument(
        "--start-shear", type=float, default=0.07, help="also start from lenses this sheared, <= 0.5 (0: none)"
    )
    p.add_argument(
        "--theta-e", type=positive_number, nargs=2, default=(0.6, 1.6), metavar=("LOW", "HIGH"),
        help="Einstein radii the fit starts from, arcsec",
    )  # fmt: skip
    p.add_argument("--stride", type=whole_number(1), default=2, help="one trial subhalo per block of this side")
    p.add_argument("--batch-size", type=whole_number(1), default=16)
    p.add_argument("--maps", type=output_file, help="also write the scan maps, residuals and models to this .npz")
    p.add_argument("--figure", type=output_file, help="also draw the first images' fits and scans to this .png")
    p.add_argument(
        "--null", type=existing_file, help="CSV of a run on lenses without substructure: adds the empirical p_null"
    )
    p.add_argument(
        "--classes-from", type=existing_file, help="CSV of a run on labelled images: adds class probabilities p_*"
    )
    p.add_argument("--skip-bad", action="store_true", help="leave unreadable/constant/mis-sized images out")
    p.add_argument("--device", default="auto")
    p.set_defaults(handler=_detect)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="metrics with confidence intervals, plots and report.md for a checkpoint")
    p.add_argument("--checkpoint", type=existing_file, required=True)
    p.add_argument(
        "--data",
        type=existing_path,
        default=None,
        help="evaluate on every labelled image here instead of the run's test split",
    )
    p.add_argument(
        "--split",
        default="auto",
        help="with --data: auto (val/ when there is one, else every split or class folder), val, train or all",
    )
    p.add_argument("--no-tta", action="store_true", help="skip the D4 test-time augmentation column")
    p.add_argument(
        "--out", type=output_dir, default=None, help="output directory (default: the checkpoint's run directory)"
    )
    _add_skip_bad(p)
    p.set_defaults(handler=_evaluate)


def _add_interp(sub: argparse._SubParsersAction) -> None:
    from interp.studies import study_names

    p = sub.add_parser("interp", help="equivariance, patching, probes and attribution studies of a checkpoint")
    p.add_argument("--checkpoint", type=existing_file, required=True)
    p.add_argument("--out", type=output_dir, required=True, help="folder for report.md, the JSON results and figures/")
    p.add_argument(
        "--data",
        type=existing_path,
        default=None,
        help="take the equivariance/attribution images from this data's test split",
    )
    p.add_argument("--studies", nargs="+", default=None, choices=study_names(), help="default: all")
    p.add_argument("--layers", nargs="+", default=None, help="module names to study (default: two levels deep)")
    p.add_argument("--preset", default=None, help="simulation preset (default: the checkpoint's)")
    p.add_argument("--n-images", type=whole_number(1), default=8, help="images for the equivariance study")
    p.add_argument(
        "--n-pairs", type=whole_number(1), default=32, help="pairs per kind for patching and kappa localisation"
    )
    p.add_argument("--n-probe", type=whole_number(1), default=100, help="lenses per class for the probes")
    p.add_argument("--seed", type=int, default=12345, help="seed of the simulated lenses (not the training data's)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(handler=_interp)


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list every registered model with its parameter count")
    p.add_argument("--image-size", type=whole_number(1), default=64)
    p.add_argument(
        "--pixel-scale",
        type=positive_number,
        default=0.101,
        help="arcsec/pixel for the physics models (no effect on counts)",
    )
    p.set_defaults(handler=_models)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="simulate, train briefly and evaluate (the main job on its default config)")
    p.add_argument("--config", type=existing_file, default="configs/demo.yaml")
    p.add_argument("--set", action="append", type=override, default=[], metavar="KEY=VALUE")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo run in the config's out")
    _add_skip_bad(p)
    p.set_defaults(handler=_demo)


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    from .data.presets import PRESETS

    p = sub.add_parser("simulate", help="simulate a dataset in the DeepLense layout (or HDF5)")
    p.add_argument(
        "--preset",
        default="model_i",
        choices=sorted(PRESETS),
        help="a faithful preset or its *_broad prior (docs/data.md)",
    )
    p.add_argument("--n-per-class", type=whole_number(1), required=True, help="training images per class")
    p.add_argument(
        "--n-val-per-class", type=whole_number(1), default=None, help="validation images per class (default N/4)"
    )
    p.add_argument("--out", type=output_dir, required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=("npy", "h5"), default="npy")
    p.add_argument(
        "--batch-size", type=whole_number(1), default=64, help="images rendered at once (part of the noise seed)"
    )
    p.add_argument("--device", default="cpu", help="render on this torch device (noise is always drawn on CPU)")
    p.set_defaults(handler=_simulate)


def _add_download(sub: argparse._SubParsersAction) -> None:
    from .data.download import DATASETS

    p = sub.add_parser("download", help="download and cache a public DeepLense dataset")
    p.add_argument("--dataset", default="common_test_i", choices=sorted(DATASETS))
    p.add_argument(
        "--cache-dir", type=output_dir, default=None, help="default: $D4LENSPINN_CACHE or ~/.cache/d4lenspinn"
    )
    p.add_argument(
        "--from-zip", type=existing_file, default=None, help="use an archive downloaded by hand instead of the network"
    )
    p.add_argument("--force", action="store_true", help="download again even if cached")
    p.set_defaults(handler=_download)


def _add_plot_examples(sub: argparse._SubParsersAction) -> None:
    from .data.presets import PRESETS

    p = sub.add_parser("plot-examples", help="figure: one lens rendered as each class, and what substructure changes")
    p.add_argument("--preset", default="model_i", choices=sorted(PRESETS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=output_file, default="docs/figures/simulated_examples.png")
    p.set_defaults(handler=_plot_examples)


_COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_simulate,
    _add_download,
    _add_plot_examples,
    _add_check_data,
    _add_train,
    _add_evaluate,
    _add_predict,
    _add_detect,
    _add_interp,
    _add_models,
    _add_demo,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="d4lenspinn", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.handler(args)
    except KeyboardInterrupt as interrupt:  # training says where it saved the run and how to resume
        print(f"d4lenspinn {args.command}: {interrupt or 'interrupted'}", file=sys.stderr)
        return 130
    except Exception as error:
        if not is_user_error(error):
            raise  # a bug: keep its traceback
        print(f"d4lenspinn {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
