"""Tests for mvtec_tutorial.viz.

Each figure is checked for what it shows, not only that it draws: the pixels of each panel
against a transpose done here, curves against their areas from scikit-learn or against
metrics.pro_curve, histogram bars against counts worked out by hand.
"""
import matplotlib
import numpy as np
import pytest
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score

from mvtec_tutorial import data, metrics, viz

matplotlib.use("Agg")  # no display needed (conftest sets it too; this keeps the file self-contained)


@pytest.fixture
def batch():
    """Three 8 x 8 RGB images, maps and masks: one good image, two with a defect."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0.0, 1.0, (3, 3, 8, 8)).astype(np.float32)
    masks = np.zeros((3, 8, 8), dtype=bool)
    masks[1, 2:5, 2:5] = True
    masks[2, 6:, :2] = True
    maps = (rng.normal(0.0, 1.0, (3, 8, 8)) + 2.0 * masks).astype(np.float32)
    return images, masks, maps


@pytest.fixture(autouse=True)
def no_figure_left_open():
    """viz detaches its figures from pyplot, so a notebook shows each once and none pile up."""
    plt.close("all")
    yield
    assert plt.get_fignums() == []


def n_outlines(ax):
    """Number of contour sets drawn on an Axes (the ground-truth outlines)."""
    return sum(type(artist).__name__ == "QuadContourSet" for artist in ax.collections)


def legend_texts(ax):
    return [text.get_text() for text in ax.get_legend().get_texts()]


# ----------------------------------------------------------------------------- images
def test_overlay_mask_draws_channels_last_image_and_outline(batch):
    images, masks, _ = batch
    ax = Figure().subplots()
    assert viz.overlay_mask(ax, images[1], masks[1]) is ax
    np.testing.assert_array_equal(ax.images[0].get_array(), np.transpose(images[1], (1, 2, 0)))
    assert n_outlines(ax) == 1
    viz.overlay_mask(ax, images[0], masks[0])  # an empty mask draws no outline (and no warning)
    assert n_outlines(ax) == 1


def test_overlay_mask_copies_grayscale_to_three_channels():
    image = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    ax = viz.overlay_mask(Figure().subplots(), image, None)
    np.testing.assert_array_equal(ax.images[0].get_array(), np.repeat(image[..., None], 3, axis=2))


def test_show_images_grid_titles_and_outlines(batch):
    images, masks, _ = batch
    figure = viz.show_images(images, ["a", "b", "c"], ncols=2, masks=masks)
    assert isinstance(figure, Figure)
    axes = figure.axes
    assert len(axes) == 4 and not axes[3].axison  # 2 x 2 grid, the spare panel blank
    assert [ax.get_title() for ax in axes[:3]] == ["a", "b", "c"]
    assert [n_outlines(ax) for ax in axes[:3]] == [0, 1, 1]
    for ax, image in zip(axes, images):
        np.testing.assert_array_equal(ax.images[0].get_array(), np.transpose(image, (1, 2, 0)))
    assert "3 images (8 x 8 px" in figure.get_suptitle()


def test_show_images_accepts_tensors_and_rejects_bad_input(batch):
    torch = pytest.importorskip("torch")
    images, _, _ = batch
    assert len(viz.show_images(torch.from_numpy(images)).axes) == 3
    with pytest.raises(ValueError, match=r"got 2 titles for 3 images"):
        viz.show_images(images, ["a", "b"])
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 3, H, W\)"):
        viz.show_images(images[0, 0])


def test_category_gallery_rows_are_defect_types(synthetic_root):
    dataset = data.MVTecAD(synthetic_root, "bottle", "test", image_size=64)
    figure = viz.category_gallery(dataset, per_type=3, seed=0)
    types = sorted(set(dataset.defect_types) - {"good"})
    n_per_type = {name: dataset.defect_types.count(name) for name in ["good", *types]}
    axes = np.array(figure.axes).reshape(len(n_per_type), 3)
    assert [ax.get_ylabel() for ax in axes[:, 0]] == [f"{name}\n({n} images)" for name, n in n_per_type.items()]
    for row, n in zip(axes, n_per_type.values()):
        assert sum(ax.axison for ax in row) == min(3, n)  # spare panels blank
    assert all(n_outlines(ax) == 0 for ax in axes[0])  # good images have no defect to outline
    assert all(n_outlines(ax) == 1 for ax in axes[1:].flat if ax.axison)
    assert figure.get_suptitle().startswith("bottle:")


def test_category_gallery_draws_the_same_images_for_the_same_seed(synthetic_root):
    dataset = data.MVTecAD(synthetic_root, "bottle", "test", image_size=64)

    def shown(seed):
        return np.stack([ax.images[0].get_array() for ax in viz.category_gallery(dataset, per_type=1, seed=seed).axes])

    first = shown(0)
    np.testing.assert_array_equal(shown(0), first)
    assert not np.array_equal(shown(1), first)


def test_category_gallery_needs_defect_types(batch):
    with pytest.raises(TypeError, match=r"defect_types list such as data.MVTecAD"):
        viz.category_gallery([{"image": batch[0][0]}])


def test_show_maps_columns_shared_scale_and_binarised_map(batch):
    images, masks, maps = batch
    figure = viz.show_maps(images, maps, masks=masks, titles=["x", "y", "z"], threshold=1.5)
    *panels, colorbar = figure.axes
    assert len(panels) == 3 * 4 and colorbar.get_ylabel() == "anomaly score (higher = more anomalous)"
    grid = np.array(panels).reshape(3, 4)
    assert [ax.get_title() for ax in grid[0]] == ["image", "anomaly map", "ground truth", "map > 1.5"]
    assert [ax.get_ylabel() for ax in grid[:, 0]] == ["x", "y", "z"]
    for row, image_map in zip(grid, maps):
        heat = row[1].images[1]
        assert heat.get_cmap().name == viz.ANOMALY_CMAP
        assert (heat.norm.vmin, heat.norm.vmax) == (maps.min(), maps.max())  # one scale for all rows
        np.testing.assert_array_equal(heat.get_array(), image_map)
        np.testing.assert_array_equal(row[3].images[0].get_array(), image_map > 1.5)
    assert [n_outlines(ax) for ax in grid[:, 1]] == [0, 1, 1]


def test_show_maps_without_masks_and_with_fixed_scale(batch):
    images, _, maps = batch
    figure = viz.show_maps(images[:1], maps[:1], vmin=-5.0, vmax=5.0)
    image_ax, map_ax, colorbar = figure.axes
    assert map_ax.get_title() == "anomaly map"
    assert (map_ax.images[1].norm.vmin, map_ax.images[1].norm.vmax) == (-5.0, 5.0)
    with pytest.raises(ValueError, match=r"maps has shape \(1, 4, 4\) but images"):
        viz.show_maps(images[:1], maps[:1, :4, :4])


# ----------------------------------------------------------------------------- curves
def test_plot_roc_image_level_curve_has_the_auroc_as_area():
    labels = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.3, 0.9, 0.5, 0.5])
    figure = viz.plot_roc(labels, scores, label="method")
    (ax,) = figure.axes
    chance, curve = ax.lines
    fprs, tprs = curve.get_xydata().T
    assert np.trapezoid(tprs, fprs) == pytest.approx(roc_auc_score(labels, scores))
    assert legend_texts(ax) == ["chance", f"method (AUROC {metrics.image_auroc(labels, scores):.3f})"]
    assert ax.get_xlabel() == "false positive rate (fraction of good images)"


def test_plot_roc_pixel_level_into_a_given_axes(batch):
    _, masks, maps = batch
    ax = Figure().subplots()
    figure = viz.plot_roc(masks, maps, ax=ax, label="one")
    assert viz.plot_roc(masks, -maps, ax=ax, label="two") is figure
    assert sum(line.get_gid() == "chance" for line in ax.lines) == 1  # the diagonal drawn once
    fprs, tprs = ax.lines[1].get_xydata().T
    assert np.trapezoid(tprs, fprs) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
    assert ax.get_title() == "Pixel-level ROC curve"
    with pytest.raises(ValueError, match=r"expected labels \(N,\) with scores"):
        viz.plot_roc(masks[0], maps[0])


def test_plot_pro_draws_exactly_metrics_pro_curve(batch):
    _, masks, maps = batch
    figure = viz.plot_pro(masks, maps, fpr_limit=0.2, label="method")
    (ax,) = figure.axes
    curve = next(line for line in ax.lines if line.get_label().startswith("method"))
    fprs, pros = metrics.pro_curve(masks, maps)
    np.testing.assert_array_equal(curve.get_xdata(), fprs)
    np.testing.assert_array_equal(curve.get_ydata(), pros)
    assert curve.get_label() == f"method (AU-PRO {metrics.au_pro(masks, maps, fpr_limit=0.2):.3f})"
    limit = next(line for line in ax.lines if line.get_gid() == "fpr_limit")
    assert list(limit.get_xdata()) == [0.2, 0.2]
    clip = ax.collections[0].get_clip_box().transformed(ax.transData.inverted())  # the shade, in data units
    assert (clip.x0, clip.x1) == (pytest.approx(0.0), pytest.approx(0.2))


def test_plot_pro_shade_is_thinned_to_points_of_the_curve():
    """Thinning the shaded polygon keeps only curve points, over the whole FPR range."""
    rng = np.random.default_rng(1)
    masks = np.zeros((4, 64, 64), dtype=bool)
    masks[1:, 10:30, 10:30] = True
    maps = rng.random((4, 64, 64)).astype(np.float32) + 0.5 * masks
    ax = viz.plot_pro(masks, maps).axes[0]
    fprs, pros = metrics.pro_curve(masks, maps)
    vertices = ax.collections[0].get_paths()[0].vertices
    edge = vertices[vertices[:, 1] > 0]  # the rest is the baseline pro = 0
    assert len(fprs) > 10_000 and len(edge) < 2 * viz.SHADE_STEPS + 2
    assert set(map(tuple, edge)) <= set(zip(fprs, pros))
    assert edge[:, 0].max() == 1.0  # reaches past fpr_limit, so the clip decides where it ends


def test_plot_pro_reports_metric_errors():
    with pytest.raises(ValueError, match="masks contain no defect region"):
        viz.plot_pro(np.zeros((1, 4, 4), dtype=bool), np.zeros((1, 4, 4)))


# ----------------------------------------------------------------------------- histograms
def test_score_histogram_counts_each_class_on_shared_bins():
    scores = np.array([0.1, 0.2, 0.25, 0.9, 0.7, 0.3])
    labels = np.array([0, 0, 0, 1, 1, 1])
    figure = viz.score_histogram(scores, labels, threshold=0.5)
    (ax,) = figure.axes
    good, defective = ax.containers
    edges = [bar.get_x() for bar in good] + [good[-1].get_x() + good[-1].get_width()]
    assert [bar.get_x() for bar in defective] == edges[:-1]  # shared bins
    for bars, expected in ((good, scores[:3]), (defective, scores[3:])):
        assert [bar.get_height() for bar in bars] == np.histogram(expected, bins=edges)[0].tolist()
    assert legend_texts(ax) == ["good (3 images)", "defective (3 images)", "threshold 0.5"]
    with pytest.raises(ValueError, match=r"label values \[0, 2\]"):
        viz.score_histogram(scores, np.array([0, 2, 0, 2, 0, 2]))


def test_defect_size_histogram_counts_regions_per_type():
    masks = np.zeros((3, 10, 10), dtype=bool)
    masks[1, :2, :2] = True            # hole: a 4-pixel region (4 % of the image) ...
    masks[1, 8, 8] = True              # ... and a 1-pixel region (1 %)
    masks[2, [3, 4, 5], [3, 4, 5]] = True  # scratch: a diagonal is one 8-connected region (3 %)
    figure = viz.defect_size_histogram(masks, ["good", "hole", "scratch"])
    (ax,) = figure.axes
    assert ax.get_title() == "Defect sizes: 3 regions in 2 images"
    assert ax.get_xscale() == "log"

    def areas(container):
        return sorted(bar.get_x() for bar in container for _ in range(int(bar.get_height())))

    hole, scratch = ax.containers
    # each region falls in the bin whose left edge is the largest edge not above its area
    edges = np.array(sorted({bar.get_x() for bar in hole}))
    bin_of = lambda area: edges[np.searchsorted(edges, area, side="right") - 1]  # noqa: E731
    assert areas(hole) == [bin_of(1.0), bin_of(4.0)] and areas(scratch) == [bin_of(3.0)]
    assert legend_texts(ax) == ["hole", "scratch"]


def test_defect_size_histogram_errors():
    with pytest.raises(ValueError, match="masks contain no defect region"):
        viz.defect_size_histogram(np.zeros((2, 4, 4), dtype=bool), ["good", "good"])
    with pytest.raises(ValueError, match="got 1 defect_types for 2 images"):
        viz.defect_size_histogram(np.ones((2, 4, 4), dtype=bool), ["hole"])
