"""Figures from arrays: image grids with defect outlines, anomaly maps over images, ROC and PRO
curves, score and defect-size histograms.

Every function takes numpy arrays (CPU tensors work too) and returns a
:class:`matplotlib.figure.Figure`; none knows a model. Anomaly maps always use
:data:`ANOMALY_CMAP` and ground-truth outlines :data:`MASK_COLOUR`, so every notebook reads the same.

Each figure is made with ``pyplot`` and closed at once: pyplot keeps no
reference to it, so nothing accumulates over a long notebook or test run, and Jupyter shows it
exactly once, as the value of the cell's last line (``viz.show_maps(...)``); a figure bound to a
name is shown with ``display(figure)`` or saved with ``figure.savefig(path)``.
Curve functions accept ``ax=`` to draw several methods into one plot; they return ``ax.figure``.
"""
from __future__ import annotations

from itertools import zip_longest
from typing import Any, Sequence

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
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
#: Side of one image panel in inches.
PANEL_INCHES = 2.0
#: FPR steps of the shaded area under a PRO curve (about one per pixel of a 5-inch plot).
SHADE_STEPS = 2000


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


def _new_figure(nrows: int, ncols: int, figsize: tuple[float, float]) -> tuple[Figure, np.ndarray]:
    """A constrained-layout Figure and its (nrows, ncols) array of Axes, already closed in pyplot.

    Jupyter's inline backend shows every open pyplot figure when a cell ends, and again the
    figure a cell returns; closing it here leaves only the second, and frees pyplot's reference.
    """
    figure, axes = plt.subplots(nrows, ncols, squeeze=False, layout="constrained", figsize=figsize)
    plt.close(figure)
    return figure, axes


def _image_grid(nrows: int, ncols: int, *, extra_width: float = 0.0) -> tuple[Figure, np.ndarray]:
    """A Figure with an (nrows, ncols) array of tickless image Axes."""
    figure, axes = _new_figure(nrows, ncols, (ncols * PANEL_INCHES + extra_width, nrows * PANEL_INCHES))
    for ax in axes.flat:
        ax.set_xticks([])  # ticks off but the Axes kept on, so set_ylabel still labels a row
        ax.set_yticks([])
    return figure, axes


def _curve_axes(ax: Axes | None) -> Axes:
    """The caller's Axes, or one on a new Figure sized for a single plot."""
    return ax if ax is not None else _new_figure(1, 1, (5.0, 4.2))[1][0, 0]


def _outline(ax: Axes, mask: Any) -> None:
    """Draw the boundary of a boolean (H, W) mask; nothing when it is empty or full."""
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
    _outline(ax, mask)
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
        Row labels, e.g. defect type and image score.
    vmin, vmax : float, optional
        Ends of the shared colour scale; default the minimum and maximum over all ``maps``.
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
    norm = Normalize(vmin=float(maps.min()) if vmin is None else vmin,
                     vmax=float(maps.max()) if vmax is None else vmax)
    binary = None if threshold is None else metrics.binarize(maps, threshold)
    figure, axes = _image_grid(len(images), len(columns), extra_width=0.8)
    for index, row in enumerate(axes):
        mask = None if masks is None else masks[index]
        overlay_mask(row[0], images[index], None)
        row[1].imshow(_to_hwc(images[index]).mean(axis=-1), cmap="gray", vmin=0.0, vmax=1.0)
        row[1].imshow(maps[index], cmap=ANOMALY_CMAP, norm=norm, alpha=HEATMAP_ALPHA)
        _outline(row[1], mask)
        if masks is not None:
            overlay_mask(row[2], images[index], mask)
        if binary is not None:
            row[-1].imshow(binary[index], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            _outline(row[-1], mask)
        if titles is not None:
            row[0].set_ylabel(titles[index])
    for ax, name in zip(axes[0], columns):
        ax.set_title(name)
    figure.colorbar(ScalarMappable(norm=norm, cmap=ANOMALY_CMAP), ax=axes[:, -1],
                    label="anomaly score (higher = more anomalous)")
    figure.suptitle(f"Anomaly maps {_caption(images.shape, outlined=masks is not None)}")
    return figure


# ----------------------------------------------------------------------------- curves
def plot_roc(labels_or_masks: Any, scores_or_maps: Any, *, ax: Axes | None = None,
             label: str | None = None) -> Figure:
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

    Returns
    -------
    Figure
        The figure holding the Axes, with the curve and a dashed chance diagonal.

    Notes
    -----
    The area comes from :func:`mvtec_tutorial.metrics.image_auroc` or
    :func:`~mvtec_tutorial.metrics.pixel_auroc` (which also validate the inputs); the
    curve's points from scikit-learn's ``roc_curve``.
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
    fprs, tprs, _ = roc_curve(truth.ravel().astype(bool), values.ravel())
    ax = _curve_axes(ax)
    if not any(line.get_gid() == "chance" for line in ax.lines):
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance", gid="chance")
    ax.plot(fprs, tprs, label=f"{label or level} (AUROC {auroc:.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), title=f"{level.capitalize()}-level ROC curve",
           xlabel=f"false positive rate (fraction of good {unit})",
           ylabel=f"true positive rate (fraction of defective {unit})")
    ax.legend(loc="lower right")
    return ax.figure


def plot_pro(masks: Any, maps: Any, *, fpr_limit: float = metrics.DEFAULT_FPR_LIMIT, ax: Axes | None = None,
             label: str | None = None) -> Figure:
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

    Returns
    -------
    Figure
        The figure holding the Axes. The curve's points are exactly
        :func:`mvtec_tutorial.metrics.pro_curve` ``(masks, maps)``; a dashed line marks ``fpr_limit``.

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
    ax = _curve_axes(ax)
    (curve,) = ax.plot(fprs, pros, label=f"{label or 'PRO'} (AU-PRO {score:.3f})")
    # On real data the curve has millions of points, which Agg fills slowly. Both coordinates only
    # grow, so the first and last point at each of SHADE_STEPS FPR steps trace the same edge to
    # within a pixel. Clipping the shade at fpr_limit avoids a second interpolation to keep in
    # step with metrics.au_pro.
    steps = np.linspace(0.0, 1.0, SHADE_STEPS + 1)
    keep = np.unique(np.r_[np.searchsorted(fprs, steps, "left"), np.searchsorted(fprs, steps, "right") - 1])
    keep = keep[(keep >= 0) & (keep < len(fprs))]
    shade = ax.fill_between(fprs[keep], pros[keep], color=curve.get_color(), alpha=0.2, linewidth=0)
    shade.set_clip_path(Rectangle((0, 0), fpr_limit, 1, transform=ax.transData))
    if not any(line.get_gid() == "fpr_limit" for line in ax.lines):
        ax.axvline(fpr_limit, linestyle="--", color="grey", linewidth=1, gid="fpr_limit")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), title=f"PRO curve (shaded: AU-PRO region, FPR up to {fpr_limit:g})",
           xlabel="false positive rate (fraction of defect-free pixels)",
           ylabel="per-region overlap (mean fraction of\neach defect region detected)")
    ax.legend(loc="lower right")
    return ax.figure


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
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    if scores.ndim != 1 or labels.shape != scores.shape or not np.isin(labels, (0, 1)).all():
        raise ValueError(f"expected scores (N,) and labels (N,) of 0 (good) / 1 (defective); got shapes "
                         f"{scores.shape} and {labels.shape}, label values {np.unique(labels).tolist()}")
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
