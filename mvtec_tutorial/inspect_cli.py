"""``mvtec-inspect``: fit a detector on a folder of your normal images, score new images, evaluate with labels.

Three sub-commands (``mvtec-inspect COMMAND --help`` lists every option)::

    mvtec-inspect fit NORMAL_FOLDER --out detector.pt [--method padim] [--rule false-reject --target-rate 0.01]
    mvtec-inspect score detector.pt NEW_FOLDER_OR_FILES ... --out report/
    mvtec-inspect evaluate detector.pt LABELLED_FOLDER --out report/ [--masks MASK_FOLDER]

``fit`` reads every image under NORMAL_FOLDER (any layout), holds out ``--validation-fraction`` of
them, fits on the rest and chooses the threshold on the held-out ones by ``--rule``; the threshold,
the rule and the image geometry are saved with the detector. ``score`` streams the images in
batches and writes ``scores.csv`` and ``report.html`` (:mod:`mvtec_tutorial.report`).
``evaluate`` does the same with labels: from ``--masks`` (an image whose mask is not all black is
defective, no mask = good) or else from sub-folder names (``good/``, ``ok/``, ``normal/``, ``pass/``
in any case hold good images, any other first-level sub-folder defective ones), and adds the image
AUROC and the accuracies on good and defective images.

Exit codes: 0 done (``score``: no image flagged), 1 ``score`` flagged at least one image, 2 wrong
usage or input (the message names the file or option and the fix).
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mvtec_tutorial import benchmark, data, metrics, models, own_images, thresholds
from mvtec_tutorial.report import ReportWriter

EXIT_OK, EXIT_FLAGGED, EXIT_USAGE = 0, 1, 2


def methods() -> dict[str, type[models.AnomalyDetector]]:
    """The methods ``--method`` accepts, the benchmark's: name -> class."""
    return benchmark.methods()


def make_detector(method: str, *, kind: str, seed: int, schedule: str, settings: dict[str, Any],
                  device: str | None) -> models.AnomalyDetector:
    """The benchmark's detector ``method`` for a ``kind`` of image, with ``settings`` on top."""
    kinds = methods()[method].kinds() if method in methods() else (kind,)
    detector = benchmark.detector_for_kind(method, kind, seed=seed, schedule=schedule,
                                           what=f"{kind} images; pass --kind {kinds[0]}")
    try:
        return detector.set_params(device=device, **settings)
    except ValueError as error:
        known = ", ".join(sorted(detector.get_params(deep=False)))
        raise ValueError(f"--set: {error}; settings of {method}: {known}") from None


def _setting(text: str) -> tuple[str, Any]:
    """``name=value`` with value read as a Python literal (0.1, 3, None, 'l2'), else kept as text."""
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not name=value, e.g. coreset_ratio=0.1")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mvtec-inspect", description=__doc__.split("\n")[0],
                                     epilog="exit codes: 0 done, 1 score flagged images, 2 usage or input error")
    commands = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    common.add_argument("--batch-size", type=int, default=16, help="images read and scored at once (default 16)")
    common.add_argument("--quiet", action="store_true", help="no progress bars")

    fit = commands.add_parser("fit", parents=[common], help="fit a detector on a folder of normal images")
    fit.add_argument("normal", type=Path, help="folder of normal (good) images, any layout below it")
    fit.add_argument("--out", type=Path, required=True, help="file to save the detector to, e.g. detector.pt")
    fit.add_argument("--method", default="padim", choices=list(methods()), help="detector (default padim)")
    fit.add_argument("--kind", default="object", choices=("object", "texture"),
                     help="what the images show: the method's recommended settings differ (default object)")
    fit.add_argument("--set", dest="settings", type=_setting, action="append", default=[], metavar="NAME=VALUE",
                     help="a setting of the method, e.g. --set coreset_ratio=0.1 (repeatable)")
    fit.add_argument("--schedule", default="cpu", choices=benchmark.SCHEDULES, help="training schedule of networks")
    fit.add_argument("--image-size", type=int, default=256, help="side of the square images become (default 256)")
    fit.add_argument("--fit", default="pad", choices=own_images.FITS,
                     help="pad (keep all, default), crop (centre square) or stretch non-square images")
    fit.add_argument("--tile", type=int, default=None, help="fit and score tiles of this side (divides --image-size)")
    fit.add_argument("--ignore-mask", type=Path, default=None,
                     help="image at the images' size, non-black where the map is ignored (a label, a fixture)")
    fit.add_argument("--rule", default="min-defect-area", choices=own_images.RULES, help="threshold rule")
    fit.add_argument("--target-rate", type=float, default=0.01, help="false-reject rule: accepted share of good parts rejected")
    fit.add_argument("--k", type=float, default=3.0, help="k-sigma rule: standard deviations above the mean")
    fit.add_argument("--min-area", type=float, default=thresholds.DEFAULT_RELATIVE_MIN_DEFECT_AREA,
                     help="min-defect-area rule: smallest defect as a fraction of the image (default 0.001)")
    fit.add_argument("--confidence", type=float, default=thresholds.DEFAULT_CONFIDENCE,
                     help="confidence of the false-reject bound (default 0.95)")
    fit.add_argument("--validation-fraction", type=float, default=0.2, help="normal images held out for the threshold")
    fit.add_argument("--seed", type=int, default=0)

    for name, text in (("score", "score images with a saved detector"),
                       ("evaluate", "score a labelled folder and measure the decisions")):
        command = commands.add_parser(name, parents=[common], help=text)
        command.add_argument("detector", type=Path, help="file written by mvtec-inspect fit")
        command.add_argument("inputs", type=Path, nargs="+" if name == "score" else 1, metavar="IMAGES",
                             help="image files and folders" if name == "score" else "folder with good/ and defect sub-folders")
        command.add_argument("--out", type=Path, required=True, help="folder for scores.csv and report.html")
        command.add_argument("--max-images", type=int, default=60, help="images shown in report.html (default 60)")
    commands.choices["evaluate"].add_argument("--masks", type=Path, default=None,
                                              help="mask folder (same sub-folders and names); default: labels from folder names")
    return parser


def _fit(args: argparse.Namespace) -> int:
    geometry = own_images.Geometry(args.image_size, args.fit, args.tile)
    ignored = own_images.load_ignore_mask(args.ignore_mask) if args.ignore_mask else None
    detector = make_detector(args.method, kind=args.kind, seed=args.seed, schedule=args.schedule,
                             settings=dict(args.settings), device=args.device)
    paths = own_images.find_images([args.normal])
    detector, inspection = own_images.fit_folder(
        detector, paths, geometry, rule=args.rule, ignored=ignored, validation_fraction=args.validation_fraction,
        seed=args.seed, batch_size=args.batch_size, progress=not args.quiet, target_rate=args.target_rate,
        confidence=args.confidence, k=args.k, relative_min_defect_area=args.min_area)
    detector.save(args.out, method=args.method, **vars(inspection))
    print(f"fitted {args.method} on {len(paths) - inspection.n_validation} images of {args.normal}; saved {args.out}\n"
          f"threshold {inspection.threshold:.6g}: {inspection.rule_text}\n"
          f"held out {inspection.n_validation} normal images, {inspection.n_rejected} flagged: false-reject rate at most "
          f"{inspection.false_reject_bound:.1%} with {inspection.confidence:.0%} confidence")
    return EXIT_OK


def mask_labels(paths: Sequence[Path], folder: Path, mask_folder: Path) -> np.ndarray:
    """Labels from masks: the mask of ``<folder>/<sub>/<name>.<ext>`` is ``<mask_folder>/<sub>/<name>[_mask].<any>``.

    Returns
    -------
    ndarray of shape (N,), int64
        1 where the image's mask has a non-black pixel, 0 where it is black or missing.

    Raises
    ------
    ValueError
        Naming a mask that belongs to no image (a misspelt name would silently make a defect good).
    """
    def key(path: Path, root: Path) -> str:
        name = path.relative_to(root).with_suffix("").as_posix()
        return name.removesuffix("_mask")

    masks = {key(path, mask_folder): path for path in own_images.find_images([mask_folder])}
    names = [key(path, folder) for path in paths]
    orphans = sorted(str(masks[name]) for name in set(masks) - set(names))
    if orphans:
        raise ValueError(f"masks without an image in {folder}: {', '.join(orphans[:3])}; give a mask its image's "
                         "sub-folder and name (optionally with _mask before the ending)")
    return np.array([int(name in masks and data.read_mask(masks[name]).any()) for name in names], dtype=np.int64)


def _score(args: argparse.Namespace) -> int:
    detector = models.AnomalyDetector.load(args.detector, device=args.device)
    inspection = own_images.Inspection.of(detector)
    inputs = list(args.inputs)
    paths = own_images.find_images(inputs)
    labels = None
    if args.command == "evaluate":
        folder = inputs[0].expanduser()
        labels = (mask_labels(paths, folder, args.masks.expanduser()) if args.masks
                  else own_images.folder_labels(paths, folder))
    root = inputs[0].expanduser() if len(inputs) == 1 and inputs[0].is_dir() else None
    writer = ReportWriter(args.out, inspection, source=", ".join(map(str, inputs)), root=root,
                          max_images=args.max_images, labelled=labels is not None)
    flagged, start = [], 0
    for batch in own_images.score_images(detector, paths, inspection, batch_size=args.batch_size,
                                         progress=not args.quiet):
        writer.add(batch, None if labels is None else labels[start:start + len(batch.paths)])
        flagged += batch.flagged.tolist()
        start += len(batch.paths)
    evaluation = None if labels is None else evaluate(labels, np.array(writer.scores), np.array(flagged))
    csv_path, html_path = writer.close(evaluation, labels)
    print(f"{sum(flagged)} of {len(flagged)} images flagged; wrote {csv_path} and {html_path}")
    for name, value in (evaluation or {}).items():
        print(f"  {name}: {value}")
    return EXIT_FLAGGED if args.command == "score" and any(flagged) else EXIT_OK


def evaluate(labels: np.ndarray, scores: np.ndarray, flagged: np.ndarray) -> dict[str, str]:
    """Image-level results for a report: counts, accuracies on good and defective images, image AUROC."""
    good_accuracy, defective_accuracy = metrics.classification_accuracy(labels, flagged)
    both = 0 < labels.sum() < len(labels)
    return {"good images (label)": f"{int((labels == 0).sum())}, of which {int((flagged & (labels == 0)).sum())} flagged",
            "defective images (label)": f"{int(labels.sum())}, of which {int((flagged & (labels == 1)).sum())} flagged",
            "good accuracy": f"{good_accuracy:.3f}", "defective accuracy": f"{defective_accuracy:.3f}",
            "image AUROC": f"{metrics.image_auroc(labels, scores):.3f}" if both else "needs good and defective images"}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mvtec-inspect``; returns the exit code (see the module docstring)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return _fit(args) if args.command == "fit" else _score(args)
    except (OSError, ValueError, models.NotFittedError) as error:  # bad files, options, detector files: named in the message
        print(f"mvtec-inspect {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
