"""The evaluation protocol, and every method on every category measured with it, beside the paper.

The protocol (:func:`evaluate_method`), the same for every method and every notebook: fit on the
normal training images minus a held-out validation part (:func:`mvtec_tutorial.data.load_split`),
pick the paper's minimum-defect-area threshold on the validation maps, predict the test set and
compute every metric. :func:`run` measures a grid of methods x categories with it and appends tidy
rows to ``<out>/results.csv``. Command line (``mvtec-benchmark`` once the package is installed)::

    mvtec-benchmark --root ROOT --categories all --methods mean_image patchcore --out results/

A cell is done when all its rows are in the file under its key, which covers everything that
changes a number (:func:`cell_key`); rows of other keys are kept. The file is replaced atomically
after every cell, and one lock per folder keeps two runs from writing it at once.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from mvtec_tutorial import __version__, data, metrics, models, synthetic, thresholds
from mvtec_tutorial import cache as fit_cache
from mvtec_tutorial.models.base import SCHEDULES, AnomalyDetector, benchmark_methods
from mvtec_tutorial.settings import ROOT_ENV, source_hash

PAPER_TABLES = ("table2_classification.csv", "table3_segmentation.csv")
RESULTS_FILE = "results.csv"
COLUMNS = ["category", "method", "metric", "value", "seed", "image_size", "schedule", "data", "device", "cached",
           "version", "created", "settings", "key"]
METRICS = ["image_auroc", "pixel_auroc", "au_pro", "good_accuracy", "defective_accuracy", "region_overlap",
           "fit_seconds", "predict_seconds"]
#: The paper's threshold rule "fails" when it calls nearly every defective image good although the
#: scores rank them well: defective accuracy below 0.2 while the image AUROC is above 0.8.
FAILED_RULE_DEFECTIVE_ACCURACY, FAILED_RULE_IMAGE_AUROC = 0.2, 0.8


@dataclass(frozen=True)
class Protocol:
    """The protocol's settings: the one place both a cell's key and its measurement read them from.

    Attributes
    ----------
    validation_fraction : float, default=0.2
        Share of the normal training images held out to choose the threshold on.
    relative_min_defect_area : float, default=0.001
        Minimum defect area as a fraction of the image (:func:`thresholds.min_defect_area_pixels`).
    """

    validation_fraction: float = 0.2
    relative_min_defect_area: float = thresholds.DEFAULT_RELATIVE_MIN_DEFECT_AREA


#: The course's protocol (every notebook and results/ use it).
PROTOCOL = Protocol()


def methods() -> dict[str, type[AnomalyDetector]]:
    """Every method the benchmark runs: name -> class, from the classes' own declarations.

    A method class names itself (:attr:`~mvtec_tutorial.models.base.AnomalyDetector.benchmark_names`)
    and gives its settings per schedule and kind (:attr:`~mvtec_tutorial.models.base.AnomalyDetector.schedules`);
    nothing here lists methods. Schedules: :data:`mvtec_tutorial.models.base.SCHEDULES`.
    """
    return benchmark_methods()


def after_2019() -> list[str]:
    """The methods published after the MVTec AD paper (their classes set ``after_2019 = True``).

    Notebook 08 ranks the paper's methods only; notebook 09 and later teach these and add their rows.
    """
    return [name for name, cls in methods().items() if cls.after_2019]


def make_detector(method: str, category: str, *, seed: int = 0, schedule: str = "cpu",
                  device: str | torch.device | None = None) -> AnomalyDetector:
    """The registered detector ``method`` with the settings the benchmark uses for ``category``.

    Raises
    ------
    ValueError
        For an unknown method, schedule or category, or a method that does not apply to the
        category's kind (e.g. ``gmm_texture`` on an object).
    """
    kind = data.category_info(category).kind
    return detector_for_kind(method, kind, seed=seed, schedule=schedule, device=device,
                             what=f"{category} ({kind})")


def detector_for_kind(method: str, kind: str, *, seed: int = 0, schedule: str = "cpu",
                      device: str | torch.device | None = None, what: str | None = None) -> AnomalyDetector:
    """The registered detector ``method`` with its settings for images of ``kind`` ("object" or "texture").

    ``what`` names the images in the error for a method that does not apply to them (default: the kind).

    Raises
    ------
    ValueError
        For an unknown method or schedule, or a method that does not apply to ``kind``.
    """
    known = methods()
    if method not in known:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(known)}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
    cls = known[method]
    if kind not in cls.kinds():
        raise ValueError(f"{method} applies to {' and '.join(cls.kinds())} images, not to {what or kind}")
    return cls(**cls.recommended_settings(kind, schedule=schedule), **cls.benchmark_names[method], seed=seed,
               device=device)


@dataclass
class Evaluation:
    """Everything :func:`evaluate_method` measured for one detector on one split.

    Attributes
    ----------
    metrics : dict of str to float
        :func:`mvtec_tutorial.metrics.evaluate`'s values plus ``fit_seconds`` and ``predict_seconds``.
    maps : ndarray of shape (N_test, H, W), float32
    scores : ndarray of shape (N_test,), float32
    validation_maps : ndarray of shape (N_validation, H, W), float32
    validation_scores : ndarray of shape (N_validation,), float32
    threshold : float
        The paper's minimum-defect-area threshold, chosen on the validation maps.
    min_defect_area : int
        The minimum defect area in pixels it was chosen (and images are classified) with.
    detector : AnomalyDetector
        The fitted detector.
    split : mvtec_tutorial.data.Split
        The images it was measured on (labels, masks and defect types of the test images).
    fit : mvtec_tutorial.cache.CachedFit
        Whether the fit came from the cache, and what it cost.
    warnings : list of str
        Problems a reader should know about, e.g. a threshold rule that failed (:func:`threshold_warning`).
    """

    metrics: dict[str, float]
    maps: np.ndarray
    scores: np.ndarray
    validation_maps: np.ndarray
    validation_scores: np.ndarray
    threshold: float
    min_defect_area: int
    detector: AnomalyDetector
    split: data.Split
    fit: fit_cache.CachedFit
    warnings: list[str]


def evaluate_method(detector: AnomalyDetector, split: data.Split, *,
                    relative_min_defect_area: float = thresholds.DEFAULT_RELATIVE_MIN_DEFECT_AREA,
                    cache: bool | str | Path = True, progress: bool = True) -> Evaluation:
    """The course's protocol: fit, threshold on normal validation images, predict, evaluate.

    Parameters
    ----------
    detector : AnomalyDetector
        Unfitted (or fitted: it is fitted again, or loaded from the cache); fitted in place.
    split : mvtec_tutorial.data.Split
        From :func:`mvtec_tutorial.data.load_split`.
    relative_min_defect_area : float, default=0.001, keyword-only
        Minimum defect area as a fraction of the image (:func:`thresholds.min_defect_area_pixels`).
    cache : bool, str or Path, default=True, keyword-only
        Where to look for and keep the fit (:func:`mvtec_tutorial.cache.fit`): True uses the
        course's cache folder, False always fits.
    progress : bool, default=True, keyword-only

    Returns
    -------
    Evaluation

    Examples
    --------
    >>> from mvtec_tutorial import synthetic
    >>> root = synthetic.make_dataset(tmp_path, categories=["bottle"], image_size=64, n_train=10, progress=False)
    >>> split = data.load_split(root, "bottle", image_size=64, progress=False)
    >>> evaluation = evaluate_method(models.MeanImage(), split, cache=False, progress=False)
    >>> evaluation.maps.shape, round(evaluation.metrics["image_auroc"], 2)
    ((28, 64, 64), 0.92)
    """
    fitted = fit_cache.fit(detector, split.train, directory=cache, progress=progress)
    validation = fit_cache.predict(detector, split.validation, fitted=fitted, directory=cache, progress=progress)
    validation_maps, validation_scores = validation.maps, validation.scores
    min_defect_area = thresholds.min_defect_area_pixels(validation_maps.shape[1:],
                                                        relative_area=relative_min_defect_area)
    threshold = thresholds.min_defect_area_threshold(validation_maps, min_defect_area)
    test = fit_cache.predict(detector, split.test, fitted=fitted, directory=cache, progress=progress)
    maps, scores, predict_seconds = test.maps, test.scores, test.seconds
    values = metrics.evaluate(split.masks, maps, split.labels, scores, threshold=threshold,
                              min_defect_area=min_defect_area)
    values.update(fit_seconds=fitted.fit_seconds, predict_seconds=predict_seconds)
    warning = threshold_warning(values)
    return Evaluation(metrics=values, maps=maps, scores=scores, validation_maps=validation_maps,
                      validation_scores=validation_scores, threshold=threshold, min_defect_area=min_defect_area,
                      detector=detector, split=split, fit=fitted, warnings=[warning] if warning else [])


def threshold_warning(values: dict[str, float]) -> str | None:
    """A sentence when the threshold missed nearly every defect the scores do rank well, else None.

    Parameters
    ----------
    values : dict
        At least ``defective_accuracy`` and ``image_auroc``, as :func:`metrics.evaluate` returns.
    """
    if (values["defective_accuracy"] < FAILED_RULE_DEFECTIVE_ACCURACY
            and values["image_auroc"] > FAILED_RULE_IMAGE_AUROC):
        return (f"the minimum-defect-area threshold calls {1 - values['defective_accuracy']:.0%} of the defective "
                f"images good although the image AUROC is {values['image_auroc']:.2f}: the threshold sits above "
                "nearly every defect; compare the other rules (benchmark.threshold_rules)")
    return None


def threshold_rules(evaluation: Evaluation, *, k: float = 3.0) -> pd.DataFrame:
    """Accuracies of the paper's threshold rule beside two image-score rules, all from validation images.

    Rows: ``minimum defect area`` (the paper's, on maps; images classified by
    :func:`metrics.classify`), ``k sigma of scores`` (mean + k std of the validation image scores)
    and ``largest validation score`` (no validation image flagged); the last two classify an image
    as defective when its score exceeds the threshold.

    Returns
    -------
    pandas.DataFrame
        Columns ``rule``, ``threshold``, ``good_accuracy``, ``defective_accuracy``.
    """
    labels = evaluation.split.labels
    paper = metrics.classify(evaluation.maps, evaluation.threshold, min_defect_area=evaluation.min_defect_area)
    rules = [("minimum defect area (paper)", evaluation.threshold, paper)]
    for name, value in (("k sigma of validation scores", thresholds.k_sigma_threshold(evaluation.validation_scores, k=k)),
                        ("largest validation score", float(evaluation.validation_scores.max()))):
        rules.append((name, value, (evaluation.scores > value).astype(np.int64)))
    rows = []
    for name, value, predictions in rules:
        good, defective = metrics.classification_accuracy(labels, predictions)
        rows.append({"rule": name, "threshold": value, "good_accuracy": good, "defective_accuracy": defective})
    return pd.DataFrame(rows)


def data_fingerprint(root: str | Path, category: str) -> str:
    """SHA-256 of a category folder's file names and sizes: another copy of the same files gives the same."""
    folder = Path(root).expanduser() / category
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist; check --root and --categories")
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        # The name's bytes as on disk: a name that is not UTF-8 still counts (UTF-8 names as before).
        digest.update(os.fsencode(path.relative_to(folder).as_posix()) + f":{path.stat().st_size}\n".encode())
    return digest.hexdigest()


def cell_key(detector: AnomalyDetector, *, method: str, category: str, fingerprint: str, image_size: int,
             seed: int, protocol: Protocol = PROTOCOL) -> str:
    """Hex SHA-256 of everything that changes a cell's numbers.

    The method's name and every parameter, the device kind, the category and its files'
    fingerprint (:func:`data_fingerprint`), image size, seed, validation fraction, minimum defect
    area, and the package's version and source hash.
    """
    params = detector.get_params(deep=False)
    params["device"] = detector.device_.type
    identity = dict(method=method, params=json.loads(json.dumps(params, sort_keys=True, default=repr)),
                    category=category, data=fingerprint, image_size=image_size, seed=seed,
                    validation_fraction=protocol.validation_fraction,
                    relative_min_defect_area=protocol.relative_min_defect_area, version=__version__, source=source_hash())
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def run_cell(root: str | Path, category: str, method: str, *, image_size: int = 256, seed: int = 0,
             schedule: str = "cpu", device: str | torch.device | None = None, protocol: Protocol = PROTOCOL,
             cache: bool | str | Path = True, progress: bool = True) -> pd.DataFrame:
    """Measure one method on one category with :func:`evaluate_method`; return its tidy rows.

    Images are read before any clock starts, so the times measure the method, not PNG decoding.
    Warnings of the evaluation (e.g. a failed threshold rule) are printed.
    """
    cell = _Cell.prepare(root, category, method, image_size=image_size, seed=seed, schedule=schedule,
                         device=device, protocol=protocol)
    return cell.measure(cache=cache, progress=progress)


@dataclass
class _Cell:
    """One cell of the grid, prepared once: its unfitted detector and the columns all its rows share."""

    root: Path
    category: str
    method: str
    image_size: int
    seed: int
    protocol: Protocol
    detector: AnomalyDetector
    identity: dict

    @classmethod
    def prepare(cls, root: str | Path, category: str, method: str, *, image_size: int, seed: int, schedule: str,
                device: str | torch.device | None, protocol: Protocol) -> "_Cell":
        detector = make_detector(method, category, seed=seed, schedule=schedule, device=device)
        key = cell_key(detector, method=method, category=category, fingerprint=data_fingerprint(root, category),
                       image_size=image_size, seed=seed, protocol=protocol)
        identity = _row_identity(root, category, method, seed=seed, image_size=image_size, schedule=schedule,
                                 detector=detector, key=key)
        return cls(Path(root), category, method, image_size, seed, protocol, detector, identity)

    def measure(self, *, cache: bool | str | Path, progress: bool) -> pd.DataFrame:
        """Load the split, run :func:`evaluate_method` with the cell's protocol, return the tidy rows."""
        split = data.load_split(self.root, self.category, image_size=self.image_size,
                                validation_fraction=self.protocol.validation_fraction, seed=self.seed,
                                progress=progress)
        evaluation = evaluate_method(self.detector, split,
                                     relative_min_defect_area=self.protocol.relative_min_defect_area, cache=cache,
                                     progress=progress)
        for warning in evaluation.warnings:
            tqdm.write(f"{self.category} / {self.method}: {warning}")
        return pd.DataFrame([{**self.identity, "metric": name, "value": float(value), "cached": evaluation.fit.hit}
                             for name, value in evaluation.metrics.items()], columns=COLUMNS)


def _row_identity(root: str | Path, category: str, method: str, *, seed: int, image_size: int, schedule: str,
                  detector: AnomalyDetector, key: str) -> dict:
    """The columns every row of a cell shares; the data is named, never given as a machine path."""
    params = detector.get_params(deep=False)
    params.pop("device")
    return dict(category=category, method=method, seed=seed, image_size=image_size, schedule=schedule,
                data="synthetic" if is_synthetic(root, category) else Path(root).expanduser().resolve().name,
                device=detector.device_.type, version=__version__,
                created=datetime.datetime.now().isoformat(timespec="seconds"),
                settings=json.dumps(params, sort_keys=True, default=repr), key=key)


def read_results(path: str | Path) -> pd.DataFrame:
    """The rows of a ``results.csv`` written by :func:`run` (an empty table if there is no file).

    Raises
    ------
    ValueError
        If the file is damaged or was not written by the benchmark; the message names it.
    """
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    try:
        results = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a readable results file ({error}); move it away or delete it, "
                         "then run the benchmark again") from error
    missing = {"category", "method", "metric", "value"} - set(results.columns)
    if missing:
        raise ValueError(f"{path} lacks the columns {sorted(missing)}; it was not written by the benchmark: "
                         "move it away or pass another --out")
    results = results.reindex(columns=COLUMNS)  # files of older versions lack some columns
    try:
        return results.astype({"value": float})
    except ValueError as error:
        raise ValueError(f"{path} has a non-numeric value ({error}); move it away or delete it") from error


def _write_atomically(results: pd.DataFrame, path: Path) -> None:
    """Replace ``path`` in one step: a reader (or a kill) sees the old file or the new, never half."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        results.to_csv(partial, index=False)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)  # after a failed write; gone already after the rename


@contextlib.contextmanager
def _exclusive(folder: Path, *, timeout: float = 120.0) -> Iterator[None]:
    """Hold ``<folder>/.results.lock`` while a results file is rewritten.

    Waits while another live process holds it (each holds it for a moment only), takes over a lock
    left by a killed process, and raises RuntimeError after ``timeout`` seconds, or at once for a
    lock older than that (stale: left by a run on another machine, or by a process whose number
    was reused).
    """
    lock = folder / ".results.lock"
    deadline = time.monotonic() + timeout
    while True:
        try:
            handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                holder = lock.read_bytes().decode(errors="replace").strip()
                age = time.time() - lock.stat().st_mtime
            except FileNotFoundError:
                continue  # released meanwhile
            if holder.isdigit() and not _alive(int(holder)):
                lock.unlink(missing_ok=True)  # left by a run that was killed
            elif age > timeout or time.monotonic() > deadline:
                raise RuntimeError(f"another benchmark run (process {holder or '?'}) has held {lock} for "
                                   f"{max(age, timeout):.0f} s; wait for it to finish, or delete the lock if no "
                                   "run is going on") from None
            else:
                time.sleep(0.2)
    try:
        os.write(handle, str(os.getpid()).encode())
        os.close(handle)
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def run(root: str | Path, categories: Sequence[str], methods: Sequence[str], out: str | Path, *,
        image_size: int = 256, seed: int = 0, schedule: str = "cpu", device: str | torch.device | None = None,
        cache: bool | str | Path = True, progress: bool = True) -> pd.DataFrame:
    """Measure a grid of cells into ``<out>/results.csv`` and ``results.md``; return this grid's rows.

    A cell whose key (:func:`cell_key`) already has all its rows in the file is not measured again;
    rows of other keys (other seeds, sizes, settings, code) stay in the file untouched, and several
    runs may write into one folder at once (each cell's rows are merged in under a lock). A cell
    that raises is recorded as one ``error`` row (its message in ``settings``), reported and
    retried next time; the other cells go on. Methods skip categories of a kind they do not apply
    to. ``results.md`` shows the latest cell of every category and method in the file
    (:func:`latest_cells`).

    Raises
    ------
    ValueError
        For an unknown method or schedule, or a damaged results file.
    RuntimeError
        If another run holds the folder's lock for minutes (a hung writer or a stale lock); checked
        before each cell is computed, so no measured rows are lost to it.

    Notes
    -----
    ``categories`` and ``methods`` may be single names (``"bottle"``), taken as one-item lists.
    """
    categories = [categories] if isinstance(categories, str) else list(categories)
    methods = [methods] if isinstance(methods, str) else list(methods)
    known = benchmark_methods()
    unknown = sorted(set(methods) - set(known))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {', '.join(known)}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS_FILE
    cells = [(c, m) for c in categories for m in methods if data.category_info(c).kind in known[m].kinds()]
    keys = []
    bar = tqdm(cells, desc="benchmark", disable=not progress)
    for category, method in bar:
        bar.set_description(f"benchmark: {category} / {method}")
        cell = _Cell.prepare(root, category, method, image_size=image_size, seed=seed, schedule=schedule,
                             device=device, protocol=PROTOCOL)
        identity = cell.identity
        keys.append(identity["key"])
        with _exclusive(out):  # a stale lock fails here, before the cell is computed, not after
            stored = read_results(path)
        if set(METRICS) <= set(stored[stored["key"] == identity["key"]]["metric"]):
            continue
        try:
            rows = cell.measure(cache=cache, progress=progress)
        except Exception as error:  # one broken cell must not stop the grid
            tqdm.write(f"{category} / {method} failed: {error!r}\n{traceback.format_exc(limit=3)}")
            rows = pd.DataFrame([{**identity, "metric": "error", "value": np.nan, "settings": repr(error)}],
                                columns=COLUMNS)
        with _exclusive(out):  # re-read: another run may have added its cells meanwhile
            stored = read_results(path)
            stored = stored[stored["key"] != identity["key"]]  # an error row or a cell cut short goes
            _write_atomically(pd.concat([stored, rows], ignore_index=True).astype({"value": float}), path)
    results = read_results(path)
    latest = latest_cells(results)
    (out / "results.md").write_text(to_markdown(latest, beside_paper=not (latest["data"] == "synthetic").any()))
    return results[results["key"].isin(keys)].reset_index(drop=True)


def latest_cells(results: pd.DataFrame) -> pd.DataFrame:
    """The rows of the most recently measured cell of every (category, method) in a results table.

    Cells are appended in the order they were measured, so the latest is the last key in the file.
    """
    keys = results["key"].fillna("rows of a version without keys")
    latest = keys.groupby([results["category"], results["method"]], sort=False).transform("last")
    return results[keys == latest].reset_index(drop=True)


def is_synthetic(root: str | Path, category: str) -> bool:
    """Whether ``root/category`` was drawn by :mod:`mvtec_tutorial.synthetic` (it holds the manifest)."""
    return (Path(root).expanduser() / category / synthetic.MANIFEST_NAME).is_file()


def paper_table() -> pd.DataFrame:
    """The paper's Tables 2 and 3 as tidy rows: category, method, metric, value (package data)."""
    tables = resources.files("mvtec_tutorial") / "paper_tables"
    frames = []
    for name in PAPER_TABLES:
        with (tables / name).open() as file:
            frames.append(pd.read_csv(file, comment="#"))
    return pd.concat([f.melt(id_vars=["category", "method"], var_name="metric") for f in frames], ignore_index=True)


def compare_with_paper(results: pd.DataFrame) -> pd.DataFrame:
    """Join our rows with the paper's on (category, method, metric): columns ours, paper, difference."""
    ours = results[results["metric"] != "error"][["category", "method", "metric", "value"]]
    joined = ours.merge(paper_table(), on=["category", "method", "metric"], how="left", suffixes=("", "_paper"))
    joined = joined.rename(columns={"value": "ours", "value_paper": "paper"})
    joined["difference"] = joined["ours"] - joined["paper"]
    return joined


def to_markdown(results: pd.DataFrame, *, beside_paper: bool = True) -> str:
    """One Markdown table per category: methods as rows, metrics as columns.

    With ``beside_paper`` the paper's value follows ours in brackets. Pass False for the synthetic
    stand-in, whose categories share only their names with MVTec AD's. Cells where the paper's
    threshold rule failed (:func:`threshold_warning`) and failed cells are listed below the tables.
    """
    table = compare_with_paper(results)
    if not beside_paper:
        table["paper"] = np.nan
    lines = [] if beside_paper else ["Synthetic stand-in data: the paper's numbers (real MVTec AD) are not shown.", ""]
    notes = []
    for category, rows in table.groupby("category", sort=False):
        present = [m for m in METRICS if m in set(rows["metric"])]
        lines += [f"### {category}", "", "| method | " + " | ".join(present) + " |",
                  "|---|" + "---|" * len(present)]
        for method, cells in rows.groupby("method", sort=False):
            by_metric = cells.set_index("metric")
            lines.append(f"| {method} | " + " | ".join(_cell(by_metric, metric) for metric in present) + " |")
            if {"defective_accuracy", "image_auroc"} <= set(by_metric.index):
                warning = threshold_warning(by_metric["ours"].to_dict())
                notes += [f"- {category} / {method}: {warning}"] if warning else []
        lines.append("")
    errors = results[results["metric"] == "error"]
    notes += [f"- {r.category} / {r.method} failed: {r.settings}" for r in errors.itertuples()]
    return "\n".join(lines + notes) + "\n"


def _cell(by_metric: pd.DataFrame, metric: str) -> str:
    if metric not in by_metric.index:
        return ""
    ours, paper = by_metric.loc[metric, "ours"], by_metric.loc[metric, "paper"]
    text = f"{ours:.1f}" if metric.endswith("seconds") else f"{ours:.3f}"
    return text if pd.isna(paper) else f"{text} ({paper:.2f})"


def main(argv: Sequence[str] | None = None) -> None:
    """The ``mvtec-benchmark`` command (also ``python -m mvtec_tutorial.benchmark``).

    Exits with status 1 when a cell failed (after measuring the others and writing their rows).
    """
    parser = argparse.ArgumentParser(prog="mvtec-benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=os.environ.get(ROOT_ENV),
                        help=f"dataset root: real MVTec AD or the synthetic set (default: ${ROOT_ENV})")
    parser.add_argument("--categories", nargs="+", default=["all"], metavar="CATEGORY",
                        help="category names, or 'all' for every MVTec AD category under --root (default)")
    known = list(methods())
    parser.add_argument("--methods", nargs="+", default=known, choices=known, metavar="METHOD",
                        help=f"default: all ({', '.join(known)})")
    parser.add_argument("--out", default="results", help="folder for results.csv and results.md")
    parser.add_argument("--image-size", type=int, default=256, help="side images are loaded at (px)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--schedule", choices=SCHEDULES, default="cpu",
                        help="training schedule of the networks: cpu (the course's), paper (the paper's, for a "
                             "GPU), quick (smoke test only)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: CUDA when available)")
    parser.add_argument("--no-cache", action="store_true", help="always fit; neither read nor write the fit cache")
    args = parser.parse_args(argv)
    if args.root is None:
        parser.error(f"pass --root or set {ROOT_ENV} to the folder holding the category folders")
    root = Path(args.root).expanduser()
    if not root.is_dir():
        parser.error(f"--root {root} is not a folder")
    categories = args.categories
    if categories == ["all"]:
        categories = [name for name in data.CATEGORIES if (root / name / "train").is_dir()]
        if not categories:
            parser.error(f"no MVTec AD category folder under {root}")
    unknown = [name for name in categories if name not in data.CATEGORIES]
    if unknown:
        parser.error(f"unknown categories {unknown}; use MVTec AD names ({', '.join(data.CATEGORIES)}) or 'all'")
    if args.device is not None:
        torch.device(args.device)  # an unknown device name fails here, before any work
    out = Path(args.out).expanduser()
    results = run(root, categories, args.methods, out, image_size=args.image_size, seed=args.seed,
                  schedule=args.schedule, device=args.device, cache=not args.no_cache)
    print((out / "results.md").read_text())
    failed = results[results["metric"] == "error"]
    if len(failed):
        cells = ", ".join(f"{row.category} / {row.method}" for row in failed.itertuples())
        sys.exit(f"{len(failed)} cell(s) failed: {cells}; their errors are listed above and in {out / 'results.md'}; "
                 "fix the cause and run again (finished cells are not measured again)")


if __name__ == "__main__":
    main()
