"""Figures from arrays: image grids with defect outlines, anomaly maps over images, ROC and PRO
curves, accuracies over a threshold sweep and an interactive threshold explorer, score and
defect-size histograms, heatmaps of benchmark results.

Every function takes numpy arrays (CPU tensors work too; benchmark results as a tidy DataFrame)
and returns a :class:`matplotlib.figure.Figure`, except :func:`threshold_explorer`, which returns
an explorer that redraws its Figure (and can show it with sliders); none knows a model. Anomaly maps always use
:data:`ANOMALY_CMAP` and ground-truth outlines :data:`MASK_COLOUR`, so every notebook reads the same.

Each figure is made with ``pyplot`` and closed at once: pyplot keeps no
reference to it, so nothing accumulates over a long notebook or test run, and Jupyter shows it
exactly once, as the value of the cell's last line (``viz.show_maps(...)``); a figure bound to a
name is shown with ``display(figure)`` or saved with ``figure.savefig(path)``.
:func:`plot_roc` and :func:`plot_pro` accept ``ax=`` to draw several methods into one plot; they
return ``ax.figure``.
"""
from __future__ import annotations

import ast
import inspect
import textwrap
from itertools import zip_longest
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import pyplot as plt
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, MaxNLocator
from sklearn.metrics import roc_curve

from mvtec_tutorial import metrics
from mvtec_tutorial.data import GOOD

#: The one colour map for anomaly maps, course-wide: perceptually uniform, dark = normal,
#: bright = anomalous, and readable in grayscale print.
ANOMALY_CMAP = "inferno"
#: Colour of ground-truth defect outlines: cyan is absent from inferno and rare on the products.
MASK_COLOUR = "cyan"
GOOD_COLOUR = "tab:blue"
DEFECTIVE_COLOUR = "tab:red"
#: Opacity of an anomaly map drawn over its (grayscale) image: enough to still see the object.
HEATMAP_ALPHA = 0.6
#: Colour map of score heatmaps (metrics in [0, 1]); not ANOMALY_CMAP, so a table never reads as a map.
SCORE_CMAP = "viridis"
#: Side of one image panel in inches.
PANEL_INCHES = 2.0
#: FPR steps, linear and logarithmic each, at which ROC and PRO curves are drawn (about one per
#: pixel of a 5-inch plot).
CURVE_STEPS = 2000
#: Steps of the threshold slider of :meth:`ThresholdExplorer.show_with_sliders` across its range.
SLIDER_STEPS = 200
#: Line styles of successive minimum defect areas, and colours of marked thresholds, in a sweep.
AREA_STYLES = ("-", "--", ":", "-.")
MARK_COLOURS = ("black", "tab:green", "tab:purple", "tab:brown")
#: Points of the chance diagonal: log-spaced down to 1e-12 (below one pixel of all MVTec AD test
#: images at full size), so it stays the curve y = x on a logarithmic FPR axis too.
CHANCE_POINTS = np.r_[0.0, np.geomspace(1e-12, 1.0, 241)]


# ----------------------------------------------------------------------------- shared helpers
def _as_images(images: Any) -> np.ndarray:
    """Check a batch of images, (N, 3, H, W) or (N, 1, H, W) or (N, H, W), and return it as float32."""
    images = np.asarray(images, dtype=np.float32)
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[1] in (1, 3))) or len(images) == 0:
        raise ValueError(f"expected images of shape (N, 3, H, W) (or (N, H, W) for grayscale), got "
                         f"{images.shape}; stack single images with np.stack or torch.stack")
    return images


def _to_hwc(image: Any) -> np.ndarray:
    """One image, (3, H, W), (1, H, W) or (H, W) in [0, 1], as (H, W, 3) for ``imshow``."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected one image of shape (3, H, W) or (H, W), got {image.shape}")
    # imshow reads float RGB in [0, 1]; clipping silences its warning on rounding overshoot.
    return np.clip(np.broadcast_to(image, (3, *image.shape[1:])).transpose(1, 2, 0), 0.0, 1.0)


def _check_length(name: str, values: Sequence | np.ndarray | None, n: int) -> None:
    if values is not None and len(values) != n:
        raise ValueError(f"got {len(values)} {name} for {n} images; pass one per image (or None)")


def _as_labels(labels: Any, n: int) -> np.ndarray:
    """Check image labels: shape (n,), values 0 (good) and 1 (defective)."""
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.isin(labels, (0, 1)).all():
        raise ValueError(f"expected labels of shape ({n},), one per image, of 0 (good) / 1 (defective); got "
                         f"shape {labels.shape}, label values {np.unique(labels).tolist()}")
    return labels


def _new_figure(figsize: tuple[float, float]) -> Figure:
    """A constrained-layout Figure, already closed in pyplot.

    Jupyter's inline backend shows every open pyplot figure when a cell ends, and again the
    figure a cell returns; closing it here leaves only the second, and frees pyplot's reference.
    """
    figure = plt.figure(layout="constrained", figsize=figsize)
    plt.close(figure)
    return figure


def _image_grid(nrows: int, ncols: int, *, extra_width: float = 0.0) -> tuple[Figure, np.ndarray]:
    """A Figure with an (nrows, ncols) array of tickless image Axes."""
    figure = _new_figure((ncols * PANEL_INCHES + extra_width, nrows * PANEL_INCHES))
    axes = figure.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])  # ticks off but the Axes kept on, so set_ylabel still labels a row
        ax.set_yticks([])
    return figure, axes


def _curve_axes(ax: Axes | None) -> Axes:
    """The caller's Axes, or one on a new Figure sized for a single plot."""
    return ax if ax is not None else _new_figure((5.0, 4.2)).subplots()


def _finish_fpr_plot(ax: Axes, *, n_negatives: int, log_scale: bool, title: str, xlabel: str,
                     ylabel: str) -> Figure:
    """Label a curve over the false positive rate; on a log scale the FPR axis starts at one false positive."""
    if log_scale:
        ax.set_xscale("log")
        ax.set_xlim(1 / n_negatives, 1.0)
        xlabel += ", log scale"
    else:
        ax.set_xlim(0.0, 1.0)
    ax.set(ylim=(0, 1.01), title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend(loc="upper left" if log_scale else "lower right")  # the corner the rising curves leave free
    return ax.figure


def _thin(fprs: np.ndarray, rates: np.ndarray, n_negatives: int) -> tuple[np.ndarray, np.ndarray]:
    """A curve's first and last point at each of :data:`CURVE_STEPS` linear and as many log-spaced FPR steps.

    Pixel-level curves on real data have up to millions of points, which take Agg seconds to
    draw. Both coordinates only grow, so the points kept trace the same curve to within one step,
    on a linear FPR axis and on a log one (which starts at one false positive, ``1 / n_negatives``).
    """
    steps = np.r_[np.linspace(0.0, 1.0, CURVE_STEPS + 1), np.geomspace(1 / n_negatives, 1.0, CURVE_STEPS)]
    keep = np.unique(np.r_[np.searchsorted(fprs, steps, "left"), np.searchsorted(fprs, steps, "right") - 1])
    keep = keep[(keep >= 0) & (keep < len(fprs))]
    return fprs[keep], rates[keep]


def outline(ax: Axes, mask: Any) -> None:
    """Draw the boundary of a ground-truth mask in :data:`MASK_COLOUR` on ``ax`` (over an image or a map).

    Parameters
    ----------
    ax : Axes
    mask : array of shape (H, W), bool, or None
        Nothing is drawn for None or a mask that is empty or full.
    """
    if mask is None:
        return
    mask = np.asarray(mask, dtype=bool)
    if mask.any() and not mask.all():  # contour of a constant array only warns
        ax.contour(mask.astype(np.float32), levels=[0.5], colors=MASK_COLOUR, linewidths=1.0)


def _caption(image_shape: tuple[int, ...], *, outlined: bool) -> str:
    """"(W x H px; cyan outline: ground-truth defect)" for a figure title."""
    outline = f"; {MASK_COLOUR} outline: ground-truth defect" if outlined else ""
    return f"({image_shape[-1]} x {image_shape[-2]} px{outline})"


# ----------------------------------------------------------------------------- images
def overlay_mask(ax: Axes, image: Any, mask: Any) -> Axes:
    """Draw an image with the outline of its ground-truth defect mask.

    Parameters
    ----------
    ax : matplotlib Axes
    image : array of shape (3, H, W) or (H, W), float in [0, 1]
    mask : array of shape (H, W), bool, or None
        Defective pixels; outlined in :data:`MASK_COLOUR`. None or all False draws no outline.

    Returns
    -------
    Axes
        ``ax``.
    """
    ax.imshow(_to_hwc(image))
    outline(ax, mask)
    return ax


def show_images(images: Any, titles: Sequence[str] | None = None, *, ncols: int = 8,
                masks: Any = None, title: str | None = None) -> Figure:
    """Show images in a grid, optionally with their defect outlines.

    Parameters
    ----------
    images : array or tensor of shape (N, 3, H, W), float in [0, 1]
    titles : sequence of N str, optional
        One small title per panel.
    ncols : int, default=8
        Panels per row.
    masks : array of shape (N, H, W), bool, optional
        Ground-truth defects, outlined in :data:`MASK_COLOUR`.
    title : str, optional
        Figure title; by default the number and size of the images.

    Returns
    -------
    Figure
        ``ceil(N / ncols)`` rows of ``min(N, ncols)`` panels.
    """
    images = _as_images(images)
    _check_length("titles", titles, len(images))
    _check_length("masks", masks, len(images))
    ncols = min(ncols, len(images))
    figure, axes = _image_grid(-(-len(images) // ncols), ncols)
    for index, ax in zip_longest(range(len(images)), axes.flat):
        if index is None:
            ax.set_axis_off()
            continue
        overlay_mask(ax, images[index], None if masks is None else masks[index])
        if titles is not None:
            ax.set_title(titles[index], fontsize="small")
    figure.suptitle(title or f"{len(images)} images {_caption(images.shape, outlined=masks is not None)}")
    return figure


def category_gallery(dataset: Any, *, per_type: int = 4, seed: int = 0) -> Figure:
    """Random good and defective images of one category, one row per defect type.

    Parameters
    ----------
    dataset : mvtec_tutorial.data.MVTecAD
        Usually the test split; anything with a ``defect_types`` list and item dicts holding
        ``image`` (3, H, W) and ``mask`` (H, W) works. Only the shown images are read.
    per_type : int, default=4
        Images per row; a type with fewer images shows all of them.
    seed : int, default=0
        Seeds which images are drawn.

    Returns
    -------
    Figure
        One row per type (``good`` first, then alphabetical), ``per_type`` columns; each row is
        labelled with the type and its image count; defects are outlined in :data:`MASK_COLOUR`.
    """
    if not hasattr(dataset, "defect_types"):
        raise TypeError(f"expected a dataset with a defect_types list such as data.MVTecAD(root, category, "
                        f"'test'), got {type(dataset).__name__}")
    types = np.asarray(dataset.defect_types)
    names = sorted(set(types.tolist()), key=lambda name: (name != GOOD, name))
    rng = np.random.default_rng(seed)
    figure, axes = _image_grid(len(names), per_type)
    for row, name in zip(axes, names):
        indices = np.flatnonzero(types == name)
        chosen = np.sort(rng.choice(indices, size=min(per_type, len(indices)), replace=False))
        for ax, index in zip_longest(row, chosen):
            if index is None:
                ax.set_axis_off()
                continue
            item = dataset[int(index)]
            overlay_mask(ax, item["image"], item["mask"])
        row[0].set_ylabel(f"{name}\n({len(indices)} images)")
    figure.suptitle(f"{getattr(dataset, 'category', 'dataset')}: random images per defect type\n"
                    f"{_caption(np.shape(item['image']), outlined=True)}")
    return figure


#: Percentiles of all maps that end :func:`show_maps`'s default colour scale: the top half percent
#: of pixels (often one small region of one image) would otherwise set the scale for every map.
SCALE_PERCENTILES = (0.0, 99.5)
#: Characters per line of a row label in :func:`show_maps` (about the height of one row).
ROW_LABEL_WIDTH = 22


def show_maps(images: Any, maps: Any, *, masks: Any = None, titles: Sequence[str] | None = None,
              vmin: float | None = None, vmax: float | None = None, threshold: float | None = None) -> Figure:
    """Show anomaly maps over their images, one image per row.

    Columns: the image; its anomaly map in :data:`ANOMALY_CMAP` over the grayscale image (one
    colour scale for all rows, with a colour bar); with ``masks``, the image with the
    ground-truth outline; with ``threshold``, the binarised map ``map > threshold``
    (:func:`mvtec_tutorial.metrics.binarize`). Ground-truth outlines are drawn on every map panel.

    Parameters
    ----------
    images : array or tensor of shape (N, 3, H, W), float in [0, 1]
    maps : array of shape (N, H, W), float; higher = more anomalous.
    masks : array of shape (N, H, W), bool, optional
    titles : sequence of N str, optional
        Row labels, e.g. defect type and image score; wrapped to :data:`ROW_LABEL_WIDTH`
        characters a line so that a long label neither leaves the figure nor runs into the next row's.
    vmin, vmax : float, optional
        Ends of the shared colour scale; default the :data:`SCALE_PERCENTILES` of all ``maps``, so
        that a few extreme pixels (a squared residual, say) do not turn every other map black;
        values beyond an end are drawn in its colour, and the colour bar shows an arrow there.
        Fix them to compare figures of different methods fairly.
    threshold : float, optional
        Adds the binarised-map column.

    Returns
    -------
    Figure
        N rows of 2 to 4 panels and one colour bar.

    Examples
    --------
    >>> images = np.full((2, 3, 32, 32), 0.5, dtype=np.float32)
    >>> masks = np.zeros((2, 32, 32), dtype=bool); masks[1, 8:12, 8:12] = True
    >>> maps = np.abs(np.random.default_rng(0).normal(size=(2, 32, 32))) + 3 * masks
    >>> figure = show_maps(images, maps, masks=masks, titles=["good", "defect"], threshold=2.5)
    >>> [ax.get_title() for ax in figure.axes[:4]]
    ['image', 'anomaly map', 'ground truth', 'map > 2.5']
    """
    images = _as_images(images)
    maps = np.asarray(maps, dtype=np.float32)
    if maps.shape != (len(images), *images.shape[-2:]):
        raise ValueError(f"maps has shape {maps.shape} but images {images.shape}; expected maps of shape "
                         f"{(len(images), *images.shape[-2:])}, one per image at image resolution")
    _check_length("masks", masks, len(images))
    _check_length("titles", titles, len(images))
    columns = ["image", "anomaly map"] + ["ground truth"] * (masks is not None)
    columns += [] if threshold is None else [f"map > {threshold:.3g}"]
    low, high = np.percentile(maps, SCALE_PERCENTILES)
    norm = Normalize(vmin=float(low) if vmin is None else vmin, vmax=float(high) if vmax is None else vmax)
    binary = None if threshold is None else metrics.binarize(maps, threshold)
    figure, axes = _image_grid(len(images), len(columns), extra_width=0.8)
    for index, row in enumerate(axes):
        mask = None if masks is None else masks[index]
        overlay_mask(row[0], images[index], None)
        row[1].imshow(_to_hwc(images[index]).mean(axis=-1), cmap="gray", vmin=0.0, vmax=1.0)
        row[1].imshow(maps[index], cmap=ANOMALY_CMAP, norm=norm, alpha=HEATMAP_ALPHA)
        outline(row[1], mask)
        if masks is not None:
            overlay_mask(row[2], images[index], mask)
        if binary is not None:
            row[-1].imshow(binary[index], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            outline(row[-1], mask)
        if titles is not None:
            row[0].set_ylabel(textwrap.fill(titles[index], ROW_LABEL_WIDTH))
    for ax, name in zip(axes[0], columns):
        ax.set_title(name)
    below, above = maps.min() < norm.vmin, maps.max() > norm.vmax
    figure.colorbar(ScalarMappable(norm=norm, cmap=ANOMALY_CMAP), ax=axes[:, -1],
                    label="anomaly score (higher = more anomalous)",
                    extend={(False, False): "neither", (True, False): "min", (False, True): "max"}.get((below, above),
                                                                                                    "both"))
    figure.suptitle(f"Anomaly maps {_caption(images.shape, outlined=masks is not None)}")
    return figure


# ----------------------------------------------------------------------------- curves
def plot_roc(labels_or_masks: Any, scores_or_maps: Any, *, ax: Axes | None = None,
             label: str | None = None, log_scale: bool = False) -> Figure:
    """Plot an image-level or pixel-level ROC curve, with its area in the legend.

    Parameters
    ----------
    labels_or_masks : array of shape (N,) int (1 = defective) or (N, H, W) bool
        Image labels give the image-level curve, masks the pixel-level one (all pixels pooled).
    scores_or_maps : array of shape (N,) or (N, H, W), float; higher = more anomalous.
    ax : Axes, optional
        Draw into this Axes (e.g. several methods in one plot); default a new Figure.
    label : str, optional
        Legend name of the curve, e.g. the method; the AUROC is appended.
    log_scale : bool, default=False
        Logarithmic FPR axis from one false positive to all, where useful operating points lie.

    Returns
    -------
    Figure
        The figure holding the Axes, with the curve and a dashed chance diagonal.

    Notes
    -----
    The area comes from :func:`mvtec_tutorial.metrics.image_auroc` or
    :func:`~mvtec_tutorial.metrics.pixel_auroc` (which also validate the inputs); the
    curve's points from scikit-learn's ``roc_curve``, thinned like :func:`plot_pro`'s.
    """
    truth, values = np.asarray(labels_or_masks), np.asarray(scores_or_maps)
    if truth.ndim == 1:
        level, auroc = "image", metrics.image_auroc(truth, values)
    elif truth.ndim == 3:
        level, auroc = "pixel", metrics.pixel_auroc(truth, values)
    else:
        raise ValueError(f"expected labels (N,) with scores (N,), or masks (N, H, W) with maps (N, H, W); "
                         f"got shapes {truth.shape} and {values.shape}")
    unit = "images" if level == "image" else "pixels"
    n_negatives = int(np.sum(truth == 0))
    fprs, tprs, _ = roc_curve(truth.ravel().astype(bool), values.ravel())
    fprs, tprs = _thin(fprs, tprs, n_negatives)
    ax = _curve_axes(ax)
    if not any(line.get_gid() == "chance" for line in ax.lines):
        ax.plot(CHANCE_POINTS, CHANCE_POINTS, linestyle="--", color="grey", linewidth=1, label="chance",
                gid="chance")
    ax.plot(fprs, tprs, label=f"{label or level} (AUROC {auroc:.3f})")
    return _finish_fpr_plot(ax, n_negatives=n_negatives, log_scale=log_scale,
                            title=f"{level.capitalize()}-level ROC curve",
                            xlabel=f"false positive rate (fraction of good {unit})",
                            ylabel=f"true positive rate (fraction of defective {unit})")


def plot_pro(masks: Any, maps: Any, *, fpr_limit: float = metrics.DEFAULT_FPR_LIMIT, ax: Axes | None = None,
             label: str | None = None, log_scale: bool = False) -> Figure:
    """Plot the per-region overlap (PRO) curve, shading the area that AU-PRO integrates.

    Parameters
    ----------
    masks : array of shape (N, H, W), bool
    maps : array of shape (N, H, W), float; higher = more anomalous.
    fpr_limit : float in (0, 1], default=0.3
        Upper FPR bound of the shaded (integrated) region, as in :func:`mvtec_tutorial.metrics.au_pro`.
    ax : Axes, optional
        Draw into this Axes; default a new Figure.
    label : str, optional
        Legend name of the curve; the AU-PRO is appended.
    log_scale : bool, default=False
        Logarithmic FPR axis from one false positive pixel to all; the AU-PRO region is then not
        shaded, since an area on a log axis is not the area AU-PRO integrates.

    Returns
    -------
    Figure
        The figure holding the Axes. The curve is :func:`mvtec_tutorial.metrics.pro_curve`
        ``(masks, maps)``, thinned to its first and last point at each of :data:`CURVE_STEPS` linear
        and as many logarithmic FPR steps, so it looks the same on either scale; a dashed line
        marks ``fpr_limit``. The shaded polygon is the area AU-PRO integrates (before dividing by
        ``fpr_limit``): the curve up to ``fpr_limit``, closed there by the linearly interpolated
        PRO, as :func:`mvtec_tutorial.metrics.au_pro` closes it.

    Examples
    --------
    >>> masks = np.zeros((2, 16, 16), dtype=bool); masks[1, 4:8, 4:8] = True
    >>> maps = np.random.default_rng(0).random((2, 16, 16)) + masks
    >>> ax = plot_pro(masks, maps, label="planted").axes[0]
    >>> ax.get_legend().get_texts()[0].get_text()
    'planted (AU-PRO 1.000)'
    """
    fprs, pros = metrics.pro_curve(masks, maps)
    score = metrics.au_pro(masks, maps, fpr_limit=fpr_limit)
    pro_at_limit = np.interp(fpr_limit, fprs, pros)
    n_defect_free = int(np.sum(~np.asarray(masks, dtype=bool)))
    fprs, pros = _thin(fprs, pros, n_defect_free)
    ax = _curve_axes(ax)
    (curve,) = ax.plot(fprs, pros, label=f"{label or 'PRO'} (AU-PRO {score:.3f})")
    # AU-PRO integrates over a linear FPR axis: on a log axis a shaded area would misstate it (the
    # decade below 0.001 would look as large as the one below 0.1), so only the linear plot shades.
    # The shade ends at fpr_limit by construction, not by a clip rectangle: one from x = 0 is
    # unbounded on a log axis set afterwards, and a clip rectangle replaces the clipping to the Axes.
    if not log_scale:
        inside = fprs <= fpr_limit
        ax.fill_between(np.r_[fprs[inside], fpr_limit], np.r_[pros[inside], pro_at_limit],
                        color=curve.get_color(), alpha=0.2, linewidth=0)
    if not any(line.get_gid() == "fpr_limit" for line in ax.lines):
        ax.axvline(fpr_limit, linestyle="--", color="grey", linewidth=1, gid="fpr_limit")
    return _finish_fpr_plot(ax, n_negatives=n_defect_free, log_scale=log_scale,
                            title=(f"PRO curve (AU-PRO: area up to FPR {fpr_limit:g} on a linear axis)" if log_scale
                                   else f"PRO curve (shaded: AU-PRO region, FPR up to {fpr_limit:g})"),
                            xlabel="false positive rate (fraction of defect-free pixels)",
                            ylabel="per-region overlap (mean fraction of\neach defect region detected)")


def plot_accuracy_vs_threshold(labels: Any, maps: Any, thresholds: Any, *, min_defect_areas: Sequence[int] = (1,),
                               marks: dict[str, float] | None = None, log_scale: bool = False) -> Figure:
    """Good and defective accuracy of :func:`mvtec_tutorial.metrics.classify` over a threshold sweep.

    Parameters
    ----------
    labels : array of shape (N,), int; 1 = defective, 0 = good.
    maps : array of shape (N, H, W), float; higher = more anomalous.
    thresholds : array of shape (T,), float, ascending, T >= 2
        Thresholds to classify at.
    min_defect_areas : sequence of int, default=(1,)
        One pair of curves per area, at most four (solid, dashed, dotted, dash-dotted); 1 means any
        pixel above the threshold makes an image defective.
    marks : dict of str to float, optional
        At most four named thresholds (e.g. one per rule), drawn as dotted vertical lines.
    log_scale : bool, default=False
        Logarithmic threshold axis, for positive maps whose large values spread far.

    Returns
    -------
    Figure
        Good accuracy in :data:`GOOD_COLOUR`, defective accuracy in :data:`DEFECTIVE_COLOUR`, both
        from :func:`mvtec_tutorial.metrics.classification_accuracy`.
    """
    maps, thresholds = metrics.check_maps(maps), np.asarray(thresholds, dtype=np.float64)
    labels = _as_labels(labels, len(maps))
    if thresholds.ndim != 1 or len(thresholds) < 2 or np.any(np.diff(thresholds) <= 0):
        raise ValueError(f"thresholds must be a 1-D ascending array of at least two values, e.g. "
                         f"np.linspace(...); got {thresholds}")
    marks = marks or {}
    if not 1 <= len(min_defect_areas) <= len(AREA_STYLES) or len(marks) > len(MARK_COLOURS):
        raise ValueError(f"pass 1 to {len(AREA_STYLES)} min_defect_areas and at most {len(MARK_COLOURS)} marks "
                         f"(one line style or colour each); got {len(min_defect_areas)} and {len(marks)}")
    ax = _new_figure((10.0, 4.2)).subplots()
    for area, style in zip(min_defect_areas, AREA_STYLES):
        accuracies = np.array([
            metrics.classification_accuracy(labels, metrics.classify(maps, threshold, min_defect_area=area))
            for threshold in thresholds])
        for column, (name, colour) in enumerate((("good", GOOD_COLOUR), ("defective", DEFECTIVE_COLOUR))):
            ax.plot(thresholds, accuracies[:, column], style, color=colour,
                    label=f"{name} accuracy, area >= {area} px")
    for (name, value), colour in zip(marks.items(), MARK_COLOURS):
        ax.axvline(value, color=colour, linestyle=":", label=name)
    if log_scale:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter("{x:g}")  # plain numbers: a threshold reads as the map value it is
        ax.xaxis.set_minor_formatter("{x:g}")
    ax.set(title="Accuracies against the threshold", ylim=(-0.02, 1.02),
           xlabel="threshold on the anomaly map" + (" (log scale)" if log_scale else ""),
           ylabel="fraction of images classified correctly")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    return ax.figure


class ThresholdExplorer:
    """One figure for exploring one threshold; made by :func:`threshold_explorer`, which documents it.

    Calling it, ``explorer(threshold, min_defect_area=1)``, redraws the figure and returns it;
    :meth:`show_with_sliders` shows it once with two sliders that redraw it when moved.
    """

    def __init__(self, figure: Figure, redraw: Callable[[float, int], None]) -> None:
        self.figure = figure
        self._redraw = redraw

    def __call__(self, threshold: float, min_defect_area: int = 1) -> Figure:
        self._redraw(threshold, min_defect_area)
        return self.figure

    def show_with_sliders(self, threshold: float, min_defect_area: int = 1, *,
                          threshold_range: tuple[float, float], max_min_defect_area: int | None = None) -> None:
        """Show the figure at one operating point, with sliders that redraw it in place when released.

        The figure is drawn once here and shown with a display id; a slider's release redraws it
        and updates that display (no ``ipywidgets.interact``, no output widget), so executing the
        cell without a browser costs exactly one draw, and a running notebook redraws only when a
        slider is moved.

        Parameters
        ----------
        threshold : float
            Where the threshold slider starts, e.g. the rule's threshold.
        min_defect_area : int, default=1
            Where the area slider starts (pixels).
        threshold_range : (float, float), keyword-only
            Slider range; a logarithmic slider when both ends are positive.
        max_min_defect_area : int, optional, keyword-only
            Largest area on its slider; default ten times ``min_defect_area``.
        """
        import ipywidgets as widgets  # the course extra; only this method needs it
        from IPython.display import display

        low, high = (float(value) for value in threshold_range)
        if not low < high:
            raise ValueError(f"threshold_range must be (low, high) with low < high, got {threshold_range}")
        layout = widgets.Layout(width="70%")
        if low > 0:
            threshold_slider = widgets.FloatLogSlider(
                value=threshold, min=np.log10(low), max=np.log10(high), step=np.log10(high / low) / SLIDER_STEPS,
                description="threshold", readout_format=".3g", continuous_update=False, layout=layout)
        else:
            threshold_slider = widgets.FloatSlider(
                value=threshold, min=low, max=high, step=(high - low) / SLIDER_STEPS, description="threshold",
                readout_format=".3g", continuous_update=False, layout=layout)
        area_slider = widgets.IntSlider(value=min_defect_area, min=1, description="min. area",
                                        max=max_min_defect_area or 10 * min_defect_area,
                                        continuous_update=False, layout=layout)
        handle = display(self(threshold, min_defect_area), display_id=True)

        def redraw(_change: dict) -> None:
            handle.update(self(threshold_slider.value, area_slider.value))

        for slider in (threshold_slider, area_slider):
            slider.observe(redraw, names="value")
        display(widgets.VBox([threshold_slider, area_slider]))


def threshold_explorer(masks: Any, maps: Any, labels: Any, *, scores: Any = None, examples: Sequence[int] = (),
                       titles: Sequence[str] | None = None, fpr_limit: float = metrics.DEFAULT_FPR_LIMIT,
                       label: str | None = None,
                       warning: Callable[[dict[str, float]], str | None] | None = None) -> ThresholdExplorer:
    """A figure for exploring one threshold: binarised example maps and the operating point on the curves.

    The curves are drawn once, here; calling the returned explorer only re-binarises and moves
    the operating point. ``explorer.show_with_sliders(...)`` adds sliders that redraw it when
    released (:meth:`ThresholdExplorer.show_with_sliders`).

    Parameters
    ----------
    masks : array of shape (N, H, W), bool
    maps : array of shape (N, H, W), float; higher = more anomalous.
    labels : array of shape (N,), int; 1 = defective, 0 = good.
    scores : array of shape (N,), float, optional
        Image scores, for the image ROC AUC ``warning`` reads; default the maximum of each map.
    examples : sequence of int, default=()
        Indices of the images shown binarised in the top row, with ground-truth outlines.
    titles : sequence of str, optional
        One per example, e.g. its defect type.
    fpr_limit : float in (0, 1], default=0.3
        AU-PRO's integration limit, as in :func:`plot_pro`.
    label : str, optional
        Legend name of the curves, e.g. the method.
    warning : callable, optional
        Called at every redraw with ``{"image_auroc", "good_accuracy", "defective_accuracy"}`` of
        the operating point; a sentence it returns is printed in red under the figure, e.g.
        :func:`mvtec_tutorial.benchmark.threshold_warning` (a threshold above nearly every defect).

    Returns
    -------
    ThresholdExplorer
        ``explorer(threshold, min_defect_area=1) -> Figure`` redraws the figure for pixels
        ``map > threshold`` (:func:`mvtec_tutorial.metrics.binarize`) and images classified by
        :func:`mvtec_tutorial.metrics.classify` at ``min_defect_area``, and returns it: top row the
        examples (a wrongly classified image gets a red title), bottom :func:`plot_roc` (pixel
        level) and :func:`plot_pro` on a logarithmic FPR axis, each with the operating point; the
        figure title gives both accuracies.

    Examples
    --------
    >>> masks = np.zeros((2, 16, 16), dtype=bool); masks[1, 4:8, 4:8] = True
    >>> maps = np.random.default_rng(0).random((2, 16, 16)) + masks
    >>> explorer = threshold_explorer(masks, maps, [0, 1], examples=[0, 1], titles=["good", "defect"])
    >>> explorer(1.0).get_suptitle().partition(": ")[2]
    'good accuracy 1.00, defective accuracy 1.00 (red title: wrongly classified)'
    """
    maps, masks = metrics.check_maps(maps), np.asarray(masks, dtype=bool)
    labels, examples = _as_labels(labels, len(maps)), list(examples)
    scores = metrics.image_scores(maps) if scores is None else np.asarray(scores, dtype=np.float64)
    _check_length("scores", scores, len(maps))
    if titles is not None and len(titles) != len(examples):
        raise ValueError(f"got {len(titles)} titles for {len(examples)} examples; pass one per example")
    figure = _new_figure((max(10.0, 2.0 * len(examples)), 7.5 if examples else 4.5))
    if examples:
        top, bottom = figure.subfigures(2, 1, height_ratios=[1, 1.7])
        example_axes = top.subplots(1, len(examples), squeeze=False)[0]
    else:
        bottom, example_axes = figure, []
    roc_ax, pro_ax = bottom.subplots(1, 2)
    plot_roc(masks, maps, ax=roc_ax, label=label, log_scale=True)  # also checks masks against maps
    plot_pro(masks, maps, ax=pro_ax, fpr_limit=fpr_limit, label=label, log_scale=True)
    roc_point, pro_point = (ax.plot([], [], "o", color="black", label="operating point")[0]
                            for ax in (roc_ax, pro_ax))
    for ax in (roc_ax, pro_ax):
        ax.legend(loc="upper left", fontsize="small")  # again, to list the operating point
    smallest_fpr = 1 / np.sum(~masks)  # the log axes start at one false positive pixel
    image_auroc = metrics.image_auroc(labels, scores) if 0 < labels.sum() < len(labels) else float("nan")
    warning_text = figure.supxlabel("", color=DEFECTIVE_COLOUR, wrap=True)
    example_images = []
    for ax, index in zip(example_axes, examples):
        example_images.append(ax.imshow(np.zeros_like(masks[index]), cmap="gray", vmin=0, vmax=1,
                                        interpolation="nearest"))
        outline(ax, masks[index])
        ax.set(xticks=[], yticks=[])

    def redraw(threshold: float, min_defect_area: int) -> None:
        binary = metrics.binarize(maps, threshold)
        predicted = metrics.classify(maps, threshold, min_defect_area=min_defect_area)
        good_accuracy, defective_accuracy = metrics.classification_accuracy(labels, predicted)
        for position, (image, ax, index) in enumerate(zip(example_images, example_axes, examples)):
            image.set_data(binary[index])
            name = "" if titles is None else f"{titles[position]}\n"
            ax.set_title(f"{name}called {'defective' if predicted[index] else 'good'}", fontsize="small",
                         color="black" if predicted[index] == labels[index] else DEFECTIVE_COLOUR)
        fpr = max(binary[~masks].mean(), smallest_fpr)  # a zero FPR is drawn at the axis's left end
        roc_point.set_data([fpr], [binary[masks].mean()])
        pro_point.set_data([fpr], [metrics.region_overlap(masks, maps, threshold)])
        figure.suptitle(f"threshold {threshold:.3g}, min. defect area {min_defect_area} px: good accuracy "
                        f"{good_accuracy:.2f}, defective accuracy {defective_accuracy:.2f}"
                        + (" (red title: wrongly classified)" if examples else ""))
        message = warning and warning({"image_auroc": image_auroc, "good_accuracy": good_accuracy,
                                       "defective_accuracy": defective_accuracy})
        warning_text.set_text(f"Warning: {message}" if message else "")

    return ThresholdExplorer(figure, redraw)


# ----------------------------------------------------------------------------- histograms
def score_histogram(scores: Any, labels: Any, *, threshold: float | None = None, bins: int = 20) -> Figure:
    """Histograms of image anomaly scores, good and defective images over shared bins.

    Parameters
    ----------
    scores : array of shape (N,), float; higher = more anomalous.
    labels : array of shape (N,), int; 1 = defective, 0 = good.
    threshold : float, optional
        Drawn as a dashed vertical line: images to its right are called defective.
    bins : int, default=20
        Number of equal-width bins between the lowest and the highest score.

    Returns
    -------
    Figure
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"expected scores of shape (N,), one per image, got {scores.shape}")
    labels = _as_labels(labels, len(scores))
    edges = np.histogram_bin_edges(scores, bins=bins)  # one set of bins so the two classes compare
    ax = _curve_axes(None)
    for value, name, colour in ((0, GOOD, GOOD_COLOUR), (1, "defective", DEFECTIVE_COLOUR)):
        ax.hist(scores[labels == value], bins=edges, color=colour, alpha=0.6,
                label=f"{name} ({int(np.sum(labels == value))} images)")
    if threshold is not None:
        ax.axvline(threshold, linestyle="--", color="black", label=f"threshold {threshold:.3g}")
    ax.set(title="Image anomaly scores: good vs defective", xlabel="image anomaly score (higher = more anomalous)",
           ylabel="number of images")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    return ax.figure


def defect_size_histogram(masks: Any, defect_types: Sequence[str]) -> Figure:
    """Distribution of defect region areas, as % of the image, stacked by defect type.

    Parameters
    ----------
    masks : array of shape (N, H, W), bool
        Ground-truth masks; good images (empty masks) add nothing.
    defect_types : sequence of N str
        Defect type of each image.

    Returns
    -------
    Figure
        A stacked histogram over log-spaced bins; each count is one 8-connected defect region
        (:func:`mvtec_tutorial.metrics.label_regions`), the unit Table 1 of the paper counts.
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"expected masks of shape (N, H, W), got {masks.shape}")
    _check_length("defect_types", defect_types, len(masks))
    labelled, n_regions = metrics.label_regions(masks)
    if n_regions == 0:
        raise ValueError("masks contain no defect region; pass the masks of a test set with defective images")
    image_of_region = np.zeros(n_regions + 1, dtype=np.int64)
    image_index, rows, cols = np.nonzero(labelled)
    image_of_region[labelled[image_index, rows, cols]] = image_index
    percent = 100.0 * np.bincount(labelled.ravel())[1:] / masks[0].size
    region_types = np.asarray(defect_types)[image_of_region[1:]]
    names = sorted(set(region_types.tolist()))
    low = np.floor(np.log10(percent.min()))  # whole decades, at least one, so the log axis reads well
    bins = np.logspace(low, max(np.ceil(np.log10(percent.max())), low + 1), 25)
    ax = _curve_axes(None)
    ax.hist([percent[region_types == name] for name in names], bins=bins, stacked=True, label=names)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))  # 0.1, 1, 10 read faster than 10^-1, 10^0, 10^1
    ax.set(title=f"Defect sizes: {n_regions} regions in {len(np.unique(image_index))} images",
           xlabel="area of a defect region (% of image area, log scale)", ylabel="number of defect regions")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(title="defect type")
    return ax.figure


# ----------------------------------------------------------------------------- tables
def benchmark_heatmaps(results: pd.DataFrame, metric_names: Sequence[str], *, title: str | None = None,
                       ncols: int = 2) -> Figure:
    """One annotated heatmap per category of tidy benchmark rows: methods as rows, metrics as columns.

    Parameters
    ----------
    results : DataFrame with columns category, method, metric, value
        Tidy rows as :func:`mvtec_tutorial.benchmark.run` returns them (other columns and other
        metrics are ignored), at most one per (category, method, metric); values of the shown
        metrics in [0, 1], higher = better.
    metric_names : sequence of str
        Metrics to show, in this column order.
    title : str, optional
        Figure title.
    ncols : int, default=2
        Category panels per row.

    Returns
    -------
    Figure
        Panels in order of the categories' first appearance; every panel has the same rows (all
        methods in order of first appearance), so a method without a value shows a blank cell.
        One shared colour bar in :data:`SCORE_CMAP` from 0 to 1.

    Examples
    --------
    >>> rows = pd.DataFrame({"category": ["bottle", "bottle", "carpet"], "method": ["a", "b", "a"],
    ...                      "metric": "au_pro", "value": [0.9, 0.5, 0.7]})
    >>> figure = benchmark_heatmaps(rows, ["au_pro"])
    >>> [[text.get_text() for text in ax.texts] for ax in figure.axes[:2]]
    [['0.90', '0.50'], ['0.70']]
    """
    missing = {"category", "method", "metric", "value"} - set(results.columns)
    if missing:
        raise ValueError(f"results lacks columns {sorted(missing)}; pass the tidy rows of benchmark.run")
    rows = results[results["metric"].isin(metric_names)].astype({"value": np.float64})
    if rows.empty:
        raise ValueError(f"no rows for metrics {list(metric_names)}; present: {sorted(set(results['metric']))}")
    repeated = rows[rows.duplicated(["category", "method", "metric"])]
    if not repeated.empty:
        raise ValueError(f"{len(repeated)} rows repeat a (category, method, metric), first "
                         f"{tuple(repeated.iloc[0][['category', 'method', 'metric']])}; pass one value per cell")
    categories, methods = list(dict.fromkeys(rows["category"])), list(dict.fromkeys(rows["method"]))
    ncols = min(ncols, len(categories))
    nrows = -(-len(categories) // ncols)
    height = nrows * (0.45 * max(len(methods), 3) + 2.4)  # three method rows at least: room for the colour bar
    figure = _new_figure((ncols * (0.8 * len(metric_names) + 2.5), height))
    axes = figure.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, category in zip(axes, categories):
        table = (rows[rows["category"] == category].pivot(index="method", columns="metric", values="value")
                 .reindex(index=methods, columns=list(metric_names)))
        sns.heatmap(table, ax=ax, vmin=0, vmax=1, cmap=SCORE_CMAP, annot=True, fmt=".2f", cbar=False,
                    linewidths=0.5, linecolor="white")
        ax.set(title=category, xlabel="metric", ylabel="method")
        ax.tick_params(axis="x", labelrotation=30)
    for ax in axes[len(categories):]:
        ax.set_axis_off()
    figure.colorbar(ScalarMappable(norm=Normalize(vmin=0, vmax=1), cmap=SCORE_CMAP), ax=axes[:len(categories)],
                    label="score (1 = perfect)\nblank: no value")
    if title:
        figure.suptitle(title)
    return figure


# ----------------------------------------------------------------------------- diagrams
def pipeline_diagram(stages: Sequence[str | tuple[str, str]], *, title: str,
                     branch: Sequence[str | tuple[str, str]] = (), branch_from: int | None = None) -> Figure:
    """A method's pipeline as boxes joined by arrows, left to right, for the notebooks.

    Parameters
    ----------
    stages : sequence of str or (str, str)
        One box per step: a name, or (name, detail) with the detail on a second line, e.g.
        ``("encoder", "9 conv layers")``. Text may hold ``$...$`` math.
    title : str, keyword-only
    branch : sequence of str or (str, str), default=(), keyword-only
        A second row of boxes, e.g. what happens at test time, drawn below the main row.
    branch_from : int, optional, keyword-only
        Index of the main-row box the branch starts from (an arrow down to its first box);
        default: the branch stands alone.

    Returns
    -------
    Figure

    Examples
    --------
    >>> figure = pipeline_diagram(["normal images", ("encoder", "conv"), "code"], title="An autoencoder")
    >>> [text.get_text() for text in figure.axes[0].texts if text.get_bbox_patch()], figure.axes[0].get_title()
    (['normal images', 'encoder\\nconv', 'code'], 'An autoencoder')
    """
    if not stages:
        raise ValueError("stages is empty; give at least one step")
    rows = [list(stages)] + ([list(branch)] if branch else [])
    if branch_from is not None and not (branch and 0 <= branch_from < len(stages)):
        raise ValueError(f"branch_from must index one of the {len(stages)} stages and needs a branch, got {branch_from}")
    n_columns = max(len(row) + (branch_from or 0) * (row is rows[-1] and len(rows) > 1) for row in rows)
    figure = _new_figure((2.3 * n_columns, 1.1 * len(rows) + 0.4))
    ax = figure.subplots()
    ax.set(xlim=(0, n_columns), ylim=(0.4 - len(rows) + 0.45, 0.9), title=title)
    ax.set_axis_off()
    box = dict(boxstyle="round,pad=0.4", facecolor="whitesmoke", edgecolor="dimgray")
    arrow = dict(arrowstyle="-|>", color="dimgray", lw=1.5)
    half_box = 0.3  # arrows run between box edges, in data units (a column is one unit)
    for y, row in zip((0.4, -0.6), rows):
        offset = (branch_from or 0) if y < 0 else 0
        for column, stage in enumerate(row):
            text = stage if isinstance(stage, str) else "\n".join(stage)
            x = offset + column + 0.5
            ax.text(x, y, text, ha="center", va="center", bbox=box, fontsize="small", linespacing=1.3)
            if column:
                ax.annotate("", xy=(x - half_box, y), xytext=(x - 1 + half_box, y), arrowprops=arrow)
        if y < 0 and branch_from is not None:
            ax.annotate("", xy=(offset + 0.5, y + 0.25), xytext=(branch_from + 0.5, 0.4 - 0.25), arrowprops=arrow)
    return figure


def source(obj: Any) -> str:
    """The source of a package function or class without its docstrings, for printing in a notebook.

    A notebook that teaches an algorithm prints the package's own code rather than a copy; the
    docstrings (parameters, shapes, examples) are the reference, not the lesson, and would double
    the listing.

    Parameters
    ----------
    obj : function, method or class

    Returns
    -------
    str
        ``inspect.getsource(obj)``, dedented, with the docstring of every function and class in it removed.

    Examples
    --------
    >>> def scaled(x):
    ...     '''Twice x.'''
    ...     return 2 * x
    >>> print(source(scaled))
    def scaled(x):
        return 2 * x
    <BLANKLINE>
    """
    code = textwrap.dedent(inspect.getsource(obj))
    lines = code.splitlines(keepends=True)
    docstrings = [node.body[0] for node in ast.walk(ast.parse(code))
                  if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and ast.get_docstring(node, clean=False) is not None]
    skip = {line for doc in docstrings for line in range(doc.lineno - 1, doc.end_lineno)}
    return "".join(line for number, line in enumerate(lines) if number not in skip)

