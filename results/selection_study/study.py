"""Selection study (issue 13): PaDiM and PatchCore settings chosen across categories, never per category.

Every configuration is measured with the course's protocol (:func:`mvtec_tutorial.benchmark.evaluate_method`,
no fit cache) on every real category under ``--root`` and on the four categories of the course's
synthetic set, for several seeds (the seed draws the validation split, PaDiM's channels and
PatchCore's coreset). Backbone features do not depend on the configuration, so each image's
features are computed once, for the union of all layers the grid uses, and served from memory to
every fit and prediction (:func:`memoise_features`); the detectors themselves run unchanged.

Usage (from the repository root; resumes where ``--out`` stops)::

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python results/selection_study/study.py \\
        --root /work/shared/mvtec_ad --out results/selection_study/study.csv [--data real|synthetic] [--seeds 2]
    PYTHONPATH=$PWD python results/selection_study/study.py --summary results/selection_study/study.csv

Rows of ``study.csv``: one per category, seed, method and configuration, with the protocol's metrics
(``image_auroc``, ``pixel_auroc``, ``au_pro``, ``good_accuracy``, ``defective_accuracy``) and, for
PaDiM, ``image_auroc_top1pct``: the image AUROC when an image is scored by the mean of its 1 %
highest map pixels instead of the maximum (the same fit and maps, only the image score differs).
Fit and predict times are not reported here: features come from memory. Time the chosen defaults
with ``mvtec-benchmark`` instead.
"""
from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mvtec_tutorial import benchmark, data, metrics, settings, synthetic
from mvtec_tutorial.backbones import FeatureExtractor

SEEDS = (0, 1, 2)
IMAGE_SIZE = 256
#: Image score the PaDiM rows also report: mean of the top 1 % of the map's pixels.
TOP_K_FRACTION = 0.01
PADIM_LAYER_SETS = {"b2+b4+b10": ("block2", "block4", "block10"), "b4+b10": ("block4", "block10"),
                    "b3+b7": ("block3", "block7"), "b4+b7": ("block4", "block7")}
#: (method, configuration name) -> settings on top of the registered detector's.
CONFIGS: dict[tuple[str, str], dict] = {
    # top_k_fraction=None: the first round scored images as the methods then did (PaDiM by the map's
    # maximum, PatchCore by eq. 7); the image scores were compared afterwards (run_image_scores).
    **{("padim", f"{name} p={p} d=100"): dict(layers=layers, neighborhood_size=p, n_features=100,
                                              top_k_fraction=None)
       for name, layers in PADIM_LAYER_SETS.items() for p in (1, 3)},
    ("patchcore", "greedy 1% proj128"): dict(coreset_ratio=0.01, coreset_method="greedy", projection_dim=128,
                                             top_k_fraction=None),
    ("patchcore", "greedy 10% proj32"): dict(coreset_ratio=0.1, coreset_method="greedy", projection_dim=32,
                                             top_k_fraction=None),
    ("patchcore", "random 10%"): dict(coreset_ratio=0.1, coreset_method="random", top_k_fraction=None),
    # Second round: the neighbourhood average (p) and the image score (eq. 7's reweighting or the max).
    ("patchcore", "greedy 1% proj128 p=1"): dict(coreset_ratio=0.01, coreset_method="greedy", projection_dim=128,
                                                 neighborhood_size=1, top_k_fraction=None),
    ("patchcore", "greedy 1% proj128 max"): dict(coreset_ratio=0.01, coreset_method="greedy", projection_dim=128,
                                                 n_reweight_neighbors=None, top_k_fraction=None),
    ("patchcore", "greedy 1% proj128 p=1 max"): dict(coreset_ratio=0.01, coreset_method="greedy",
                                                     projection_dim=128, neighborhood_size=1,
                                                     n_reweight_neighbors=None, top_k_fraction=None),
    ("patchcore", "random 10% max"): dict(coreset_ratio=0.1, coreset_method="random", n_reweight_neighbors=None,
                                          top_k_fraction=None),
    ("patchcore", "random 10% p=1 max"): dict(coreset_ratio=0.1, coreset_method="random", neighborhood_size=1,
                                              n_reweight_neighbors=None, top_k_fraction=None),
    # Third round, with the top-5 % image score both methods now use: a shallower stride-8 block.
    ("patchcore", "b4+b10 greedy 1% top5%"): dict(layers=("block4", "block10"), top_k_fraction=0.05),
    ("patchcore", "b3+b10 greedy 1% top5%"): dict(layers=("block3", "block10"), top_k_fraction=0.05),
    # Fourth: the greedy 10 % coreset again, with the top-5 % score (on the idle machine it fits the time budget).
    ("patchcore", "greedy 10% proj32 top5%"): dict(coreset_ratio=0.1, coreset_method="greedy", projection_dim=32,
                                                   top_k_fraction=0.05),
}
ALL_LAYERS = ("block2", "block3", "block4", "block7", "block10")
METRICS = ["image_auroc", "pixel_auroc", "au_pro", "good_accuracy", "defective_accuracy"]


def memoise_features() -> None:
    """Make :meth:`FeatureExtractor.extract` compute each distinct Lite0 image once per process.

    Features are stored per image (keyed by the SHA-1 of its pixels) for :data:`ALL_LAYERS`; an
    extractor asking for a subset gets those layers of the stored features. Extraction does not
    depend on the batch (tests/test_backbones.py checks it), so the result is what the detector
    would have computed itself.
    """
    full = FeatureExtractor("efficientnet_lite0", layers=ALL_LAYERS, device="cpu")
    store: dict[str, dict[str, torch.Tensor]] = {}
    original = FeatureExtractor.extract

    def extract(self, images, *, batch_size=32, progress=True):
        if self.backbone != "efficientnet_lite0" or not set(self.layers) <= set(ALL_LAYERS):
            return original(self, images, batch_size=batch_size, progress=progress)
        images = data.as_images(images, progress=False)
        keys = [hashlib.sha1(image.numpy().tobytes()).hexdigest() for image in images]
        missing = [index for index, key in enumerate(keys) if key not in store]
        if missing:
            computed = original(full, images[missing], batch_size=batch_size, progress=False)
            for position, index in enumerate(missing):
                store[keys[index]] = {layer: computed[layer][position].clone() for layer in ALL_LAYERS}
        return {layer: torch.stack([store[key][layer] for key in keys]) for layer in self.layers}

    FeatureExtractor.extract = extract


def categories(root: Path | None, which: str = "all") -> list[tuple[Path, str]]:
    """(root, category) of every real category under ``root`` and of the synthetic set.

    ``which`` is "all", "real" or "synthetic" (processes can share the work by data and seed).
    """
    real = sorted(p.name for p in root.iterdir() if (p / "train").is_dir()) if root else []
    synthetic_root = synthetic.make_dataset(settings.synthetic_root(), progress=False)
    return ([(root, name) for name in real] * (which != "synthetic")
            + [(synthetic_root, name) for name in synthetic.SYNTHETIC_CATEGORIES] * (which != "real"))


def measure(root: Path, category: str, seed: int, method: str, config: str, split: data.Split) -> dict:
    """One row: the protocol's metrics of one configuration on one category and seed."""
    detector = benchmark.make_detector(method, category, seed=seed).set_params(**CONFIGS[method, config])
    start = time.perf_counter()
    evaluation = benchmark.evaluate_method(detector, split, cache=False, progress=False)
    row = dict(category=category, data="synthetic" if benchmark.is_synthetic(root, category) else "real",
               seed=seed, method=method, config=config, **{m: evaluation.metrics[m] for m in METRICS},
               wall_seconds=time.perf_counter() - start)
    if method == "padim":
        row["image_auroc_top1pct"] = metrics.image_auroc(split.labels, metrics.image_scores(evaluation.maps, TOP_K_FRACTION))
    return row


def pending(root: Path | None, out: Path, which: str, seeds: tuple[int, ...], keys: list[tuple],
            key_columns: list[str]):
    """Yield ``(data_root, category, seed, split, key)`` for every key of ``keys`` not yet in ``out``.

    A row of ``out`` is identified by its data kind, category, seed and ``key_columns`` (the parts of
    ``key``). Each category's split is read once per seed, and only when something is left to do.
    """
    torch.set_num_threads(settings.BLAS_THREADS)
    memoise_features()
    identity = ["data", "category", "seed", *key_columns]
    done = pd.read_csv(out) if out.is_file() else pd.DataFrame(columns=identity)
    finished = set(zip(*(done[column] for column in identity)))
    for seed in seeds:
        for data_root, category in categories(root, which):
            kind = "synthetic" if benchmark.is_synthetic(data_root, category) else "real"
            todo = [key for key in keys if (kind, category, seed, *key) not in finished]
            if not todo:
                continue
            split = data.load_split(data_root, category, image_size=IMAGE_SIZE, seed=seed, progress=False)
            for key in todo:
                yield data_root, category, seed, split, key


def append(out: Path, row: dict, label: str, shown: list[str]) -> None:
    """Append one row to ``out`` (resumable: written as soon as it is measured) and print it."""
    pd.DataFrame([row]).to_csv(out, mode="a", header=not out.is_file(), index=False)
    print(f"{row['category']:10s} seed {row['seed']} {label} " + " ".join(f"{m} {row[m]:.3f}" for m in shown),
          flush=True)


def run(root: Path | None, out: Path, which: str = "all", seeds: tuple[int, ...] = SEEDS) -> None:
    """Measure every configuration, category and seed not yet in ``out``; append each row as it is done."""
    for data_root, category, seed, split, (method, config) in pending(root, out, which, seeds, list(CONFIGS),
                                                                      ["method", "config"]):
        append(out, measure(data_root, category, seed, method, config, split), f"{method:9s} {config:22s}",
               ["image_auroc", "pixel_auroc", "au_pro"])


#: The image scores compared on the same maps: the maximum, or the mean of the top fraction of pixels.
IMAGE_SCORES = {"max": None, "top 0.1%": 0.001, "top 1%": 0.01, "top 2%": 0.02, "top 5%": 0.05, "top 10%": 0.1}


def run_image_scores(root: Path | None, out: Path, which: str = "all", seeds: tuple[int, ...] = SEEDS) -> None:
    """Image ROC AUC of every score of :data:`IMAGE_SCORES`, from the maps of PaDiM's and PatchCore's defaults.

    One fit per method, category and seed (the registered defaults); the maps do not depend on the
    image score, so every score is read from the same maps. ``detector_score`` is the image ROC
    AUC of the detector's own score (PaDiM: top 1 %; PatchCore: eq. 7's reweighted maximum patch
    distance, before upsampling and smoothing).
    """
    methods = [("padim",), ("patchcore",)]
    for data_root, category, seed, split, (method,) in pending(root, out, which, seeds, methods, ["method"]):
        evaluation = benchmark.evaluate_method(benchmark.make_detector(method, category, seed=seed), split,
                                               cache=False, progress=False)
        row = dict(data="synthetic" if benchmark.is_synthetic(data_root, category) else "real", category=category,
                   seed=seed, method=method, detector_score=evaluation.metrics["image_auroc"],
                   **{name: metrics.image_auroc(split.labels, metrics.image_scores(evaluation.maps, fraction))
                      for name, fraction in IMAGE_SCORES.items()})
        append(out, row, f"{method:9s}", ["detector_score", *IMAGE_SCORES])


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table, index first (pandas' to_markdown needs tabulate)."""
    lines = ["| " + " | ".join([frame.index.name or "", *map(str, frame.columns)]) + " |",
             "|" + "---|" * (1 + len(frame.columns))]
    lines += ["| " + " | ".join([str(index), *map(str, row)]) + " |" for index, row in zip(frame.index, frame.values)]
    return "\n".join(lines)


def summary(results: pd.DataFrame) -> str:
    """Markdown tables: mean ± std over seeds per category, and the mean over categories."""
    results = results.copy()
    results["category"] = np.where(results["data"] == "synthetic", "syn. " + results["category"], results["category"])
    metrics_shown = ["image_auroc", "image_auroc_top1pct", "pixel_auroc", "au_pro"]
    parts = []
    for method, rows in results.groupby("method", sort=False):
        shown = [m for m in metrics_shown if rows[m].notna().any()]
        per_category = rows.groupby(["config", "category"])[shown].agg(["mean", "std"])
        overall = rows.groupby(["config", "category"])[shown].mean().groupby("config").agg(["mean", "min"])
        table = pd.DataFrame(index=overall.index)
        means = rows.groupby(["config", "category"])[shown].mean()
        for score in [m for m in shown if m.startswith("image_auroc")]:
            # the selection rule: mean over categories of the mean of the three threshold-free metrics
            rule = means[[score, "pixel_auroc", "au_pro"]].mean(axis=1).groupby("config").mean()
            table[f"rule score with {score}"] = rule.map("{:.4f}".format)
        for metric in shown:
            table[f"{metric} mean over categories (worst category)"] = [
                f"{overall.loc[c, (metric, 'mean')]:.3f} ({overall.loc[c, (metric, 'min')]:.3f})" for c in overall.index]
        parts.append(f"### {method}: mean over categories of the per-category mean over seeds\n\n"
                     + markdown_table(table.sort_values([c for c in table.columns if c.startswith("rule")][-1], ascending=False)))
        for metric in shown:
            cells = per_category[metric].apply(lambda r: f"{r['mean']:.3f} ± {r['std']:.3f}", axis=1).unstack()
            parts.append(f"### {method}: {metric}, mean ± std over seeds\n\n" + markdown_table(cells))
    n_seeds = results.groupby(["method", "config", "category"]).size()
    parts.append(f"Seeds per cell: {n_seeds.min()} to {n_seeds.max()}.")
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, help="real MVTec AD categories (default: synthetic only)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("study.csv"))
    parser.add_argument("--data", choices=("all", "real", "synthetic"), default="all",
                        help="measure only these categories (run two processes to use two cores)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="default: 0 1 2")
    parser.add_argument("--summary", type=Path, help="print the tables of this study.csv and stop")
    parser.add_argument("--image-scores", type=Path, metavar="CSV",
                        help="instead of the grid, compare the image scores on the defaults' maps into this file")
    args = parser.parse_args()
    if args.summary:
        print(summary(pd.read_csv(args.summary)))
    elif args.image_scores:
        run_image_scores(args.root, args.image_scores, args.data, tuple(args.seeds))
    else:
        run(args.root, args.out, args.data, tuple(args.seeds))


if __name__ == "__main__":
    main()
