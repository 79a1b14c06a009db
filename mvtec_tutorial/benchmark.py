"""Every method on every category, measured the same way, beside the paper's numbers.

Command line::

    python -m mvtec_tutorial.benchmark --root ROOT --categories bottle --methods mean_image patchcore --out results/

For each (category, method) cell: fit on the normal training images minus a held-out validation
part, pick the paper's minimum-defect-area threshold on the validation maps, predict the test set,
compute every metric and append tidy rows to ``results.csv`` (category, method, metric, value,
seconds, settings). Finished cells are not recomputed; a failing cell is recorded and the rest go on.
"""
from __future__ import annotations

import argparse
import time
import traceback
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mvtec_tutorial import data, metrics, models, synthetic, thresholds
from mvtec_tutorial.models import anogan, autoencoder
from mvtec_tutorial.models.base import AnomalyDetector

#: The paper's published tables (Bergmann et al. 2019, Tables 2 and 3), tidy CSV.
ASSETS = Path(__file__).resolve().parent.parent / "assets"
PAPER_TABLES = ("paper_table2_classification.csv", "paper_table3_segmentation.csv")
RESULTS_FILE = "results.csv"
COLUMNS = ["category", "method", "metric", "value", "seconds", "settings"]
METRICS = ["image_auroc", "pixel_auroc", "au_pro", "good_accuracy", "defective_accuracy", "region_overlap",
           "fit_seconds", "predict_seconds"]

# name -> (factory(kind, seed, quick) -> method, kinds it applies to). ``quick`` shrinks training for
# smoke runs (tests, fast notebooks); results in results/ use quick=False. Each method's own module
# documents its settings.
Factory = Callable[[str, int, bool], AnomalyDetector]
METHODS: dict[str, tuple[Factory, tuple[str, ...]]] = {
    "mean_image": (lambda kind, seed, quick: models.MeanImage(seed=seed), ("texture", "object")),
    "ae_ssim": (lambda kind, seed, quick: models.ConvAutoencoder(
        loss="ssim", seed=seed, **autoencoder.recommended_settings(kind, quick=quick)), ("texture", "object")),
    "ae_l2": (lambda kind, seed, quick: models.ConvAutoencoder(
        loss="l2", seed=seed, **autoencoder.recommended_settings(kind, quick=quick)), ("texture", "object")),
    "anogan": (lambda kind, seed, quick: models.AnoGAN(
        seed=seed, **anogan.recommended_settings(kind, method="anogan", quick=quick)), ("texture", "object")),
    "f_anogan": (lambda kind, seed, quick: models.FAnoGAN(
        seed=seed, **anogan.recommended_settings(kind, method="f_anogan", quick=quick)), ("texture", "object")),
    "feature_dictionary": (lambda kind, seed, quick: models.FeatureDictionary(
        n_fit_patches=2000 if quick else 20000, seed=seed), ("texture", "object")),
    "gmm_texture": (lambda kind, seed, quick: models.GMMTexture(n_fit_patches=2000 if quick else 10000, seed=seed),
                    ("texture",)),
    "variation_model": (lambda kind, seed, quick: models.VariationModel(seed=seed), ("object",)),
    "padim": (lambda kind, seed, quick: models.PaDiM(seed=seed), ("texture", "object")),
    # On tiny quick images a 1 % coreset can keep a single patch, too few for the score reweighting.
    "patchcore": (lambda kind, seed, quick: models.PatchCore(coreset_ratio=0.1 if quick else 0.01, seed=seed),
                  ("texture", "object")),
}


def paper_table() -> pd.DataFrame:
    """The paper's Tables 2 and 3 as tidy rows: category, method, metric, value."""
    frames = [pd.read_csv(ASSETS / name, comment="#") for name in PAPER_TABLES]
    return pd.concat([f.melt(id_vars=["category", "method"], var_name="metric") for f in frames], ignore_index=True)


def run_cell(root: str | Path, category: str, method: str, *, image_size: int = 256, seed: int = 0,
             quick: bool = False, validation_fraction: float = 0.2,
             relative_min_defect_area: float = thresholds.DEFAULT_RELATIVE_MIN_DEFECT_AREA) -> pd.DataFrame:
    """Fit, threshold, predict and evaluate one method on one category; return tidy rows."""
    factory, _ = METHODS[method]
    detector = factory(category_kind(root, category), seed, quick)
    train, validation = data.train_validation_split(
        data.MVTecAD(root, category, "train", image_size=image_size),
        validation_fraction=validation_fraction, seed=seed)
    # Images are read before the clocks start, so the times measure the method, not PNG decoding.
    train_images, validation_images = data.stack(train)[0], data.stack(validation)[0]
    test_images, masks, labels, _ = data.stack(data.MVTecAD(root, category, "test", image_size=image_size))
    start = time.perf_counter()
    detector.fit(train_images)
    fit_seconds = time.perf_counter() - start
    validation_maps, _ = detector.predict(validation_images)
    min_defect_area = thresholds.min_defect_area_pixels(validation_maps.shape[1:],
                                                        relative_area=relative_min_defect_area)
    threshold = thresholds.min_defect_area_threshold(validation_maps, min_defect_area)
    start = time.perf_counter()
    maps, scores = detector.predict(test_images)
    predict_seconds = time.perf_counter() - start
    values = metrics.evaluate(masks, maps, labels, scores, threshold=threshold, min_defect_area=min_defect_area)
    values.update(fit_seconds=fit_seconds, predict_seconds=predict_seconds)
    settings = f"{detector!r} {_run_key(root, image_size, quick)}"
    return pd.DataFrame([{"category": category, "method": method, "metric": name, "value": float(value),
                          "seconds": fit_seconds + predict_seconds, "settings": settings}
                         for name, value in values.items()], columns=COLUMNS)


def _run_key(root: str | Path, image_size: int, quick: bool) -> str:
    """What must match for a stored cell to count as done (besides category and method)."""
    return f"root={Path(root).resolve()} image_size={image_size} quick={quick}"


def category_kind(root: str | Path, category: str) -> str:
    """'texture' or 'object': from the paper's table, else from the synthetic set's manifest."""
    if category in data.CATEGORIES:
        return data.category_info(category).kind
    from mvtec_tutorial.synthetic import SYNTHETIC_CATEGORIES

    if category in SYNTHETIC_CATEGORIES:
        return SYNTHETIC_CATEGORIES[category]
    raise ValueError(f"cannot tell whether {category!r} is a texture or an object; "
                     "name it like an MVTec AD category or add it to the benchmark by hand")


def run(root: str | Path, categories: Sequence[str], methods: Sequence[str], out: str | Path, *,
        image_size: int = 256, seed: int = 0, quick: bool = False) -> pd.DataFrame:
    """Run a grid of cells, appending to ``<out>/results.csv``; return all rows.

    Cells already in the file with the same settings are skipped (delete rows to recompute).
    A cell that raises is recorded as one ``error`` row (its message in ``settings``), reported,
    and retried next time; the other cells go on.
    """
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS_FILE
    results = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=COLUMNS)
    results = results[results["metric"] != "error"].astype({"value": float, "seconds": float})
    cells = [(c, m) for c in categories for m in methods if category_kind(root, c) in METHODS[m][1]]
    for category, method in tqdm(cells, desc="benchmark"):
        done = results[(results["category"] == category) & (results["method"] == method)]
        if not done.empty and done["settings"].str.endswith(_run_key(root, image_size, quick)).all():
            continue
        results = results.drop(done.index)
        try:
            rows = run_cell(root, category, method, image_size=image_size, seed=seed, quick=quick)
        except Exception as error:  # one broken cell must not stop the grid
            tqdm.write(f"{category} / {method} failed: {error!r}\n{traceback.format_exc(limit=3)}")
            rows = pd.DataFrame([{"category": category, "method": method, "metric": "error", "value": np.nan,
                                  "seconds": np.nan, "settings": repr(error)}], columns=COLUMNS)
        results = pd.concat([results, rows], ignore_index=True)
        results.to_csv(path, index=False)  # after every cell, so an interrupted run resumes
    (out / "results.md").write_text(to_markdown(results, beside_paper=not any(
        is_synthetic(root, category) for category in categories)))
    return results


def is_synthetic(root: str | Path, category: str) -> bool:
    """Whether ``root/category`` was drawn by :mod:`mvtec_tutorial.synthetic` (it holds the manifest)."""
    return (Path(root) / category / synthetic.MANIFEST_NAME).is_file()


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
    stand-in, whose categories share only their names with MVTec AD's.
    """
    table = compare_with_paper(results)
    if not beside_paper:
        table["paper"] = np.nan
    lines = [] if beside_paper else ["Synthetic stand-in data: the paper's numbers (real MVTec AD) are not shown.", ""]
    for category, rows in table.groupby("category", sort=False):
        present = [m for m in METRICS if m in set(rows["metric"])]
        lines += [f"### {category}", "", "| method | " + " | ".join(present) + " |",
                  "|---|" + "---|" * len(present)]
        for method, cells in rows.groupby("method", sort=False):
            by_metric = cells.set_index("metric")
            lines.append(f"| {method} | " + " | ".join(
                _cell(by_metric, metric) for metric in present) + " |")
        lines.append("")
    errors = results[results["metric"] == "error"]
    lines += [f"- {r.category} / {r.method} failed: {r.settings}" for r in errors.itertuples()]
    return "\n".join(lines) + "\n"


def _cell(by_metric: pd.DataFrame, metric: str) -> str:
    if metric not in by_metric.index:
        return ""
    ours, paper = by_metric.loc[metric, "ours"], by_metric.loc[metric, "paper"]
    text = f"{ours:.1f}" if metric.endswith("seconds") else f"{ours:.3f}"
    return text if pd.isna(paper) else f"{text} ({paper:.2f})"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="dataset root (real MVTec AD or the synthetic set)")
    parser.add_argument("--categories", nargs="+", required=True)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help=f"default: all ({', '.join(METHODS)})")
    parser.add_argument("--out", default="results", help="folder for results.csv and results.md")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="shrunken training, for smoke runs only")
    args = parser.parse_args(argv)
    run(args.root, args.categories, args.methods, args.out, image_size=args.image_size, seed=args.seed,
        quick=args.quick)
    print((Path(args.out) / "results.md").read_text())


if __name__ == "__main__":
    main()
