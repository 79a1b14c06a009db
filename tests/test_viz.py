"""Tests for mvtec_tutorial.viz.

Each figure is checked for what it shows, not only that it draws: the pixels of each panel
against a transpose done here, curves against their areas from scikit-learn or against
metrics.pro_curve, accuracies and operating points against a recomputation with
scipy.ndimage, histogram bars and heatmap cells against counts and tables worked out by hand.
"""
import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from scipy import ndimage
from sklearn.metrics import roc_auc_score, roc_curve

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


@pytest.fixture
def planted():
    """Six 32 x 32 maps in [0, 1), three of them with one square defect raised by 2."""
    rng = np.random.default_rng(0)
    masks = np.zeros((6, 32, 32), dtype=bool)
    masks[3, 4:12, 4:12] = True
    masks[4, 20:23, 20:23] = True
    masks[5, 1:4, 28:31] = True
    maps = rng.random((6, 32, 32)).astype(np.float32) + 2 * masks
    return masks, maps, masks.any(axis=(1, 2)).astype(int)


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


def polygon_area(vertices):
    """Shoelace formula: the area enclosed by a closed polygon's (K, 2) vertices."""
    x, y = vertices.T
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def assert_on_polyline(points, vertices):
    """Every one of the (K, 2) points lies on a segment between consecutive (M, 2) vertices."""
    start, end = vertices[:-1], vertices[1:]
    for point in points:
        in_box = np.all((np.minimum(start, end) <= point) & (point <= np.maximum(start, end)), axis=1)
        along, off = end - start, point - start
        cross = along[:, 0] * off[:, 1] - along[:, 1] * off[:, 0]  # zero when the point is on the segment's line
        assert np.any(in_box & (np.abs(cross) < 1e-12)), f"{point} is not on the drawn curve"


def largest_components(maps, threshold):
    """Reference for metrics.classify: pixels in each map's largest 8-connected component above threshold."""
    return np.array([np.bincount(ndimage.label(image > threshold, structure=np.ones((3, 3)))[0].ravel())[1:].max(
        initial=0) for image in maps])


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
        assert (heat.norm.vmin, heat.norm.vmax) == pytest.approx(  # one scale for all rows
            (maps.min(), np.percentile(maps, viz.SCALE_PERCENTILES[1])))
        np.testing.assert_array_equal(heat.get_array(), image_map)
        np.testing.assert_array_equal(row[3].images[0].get_array(), image_map > 1.5)
    assert [n_outlines(ax) for ax in grid[:, 1]] == [0, 1, 1]


def test_show_maps_scale_is_not_set_by_a_few_extreme_pixels_and_labels_wrap():
    images = np.full((2, 3, 32, 32), 0.5, dtype=np.float32)
    maps = np.random.default_rng(0).random((2, 32, 32)).astype(np.float32)
    spiked = maps.copy()
    spiked[0, 0, 0] = 1000.0  # one squared residual far above the rest
    figure = viz.show_maps(images, spiked, titles=["a label much longer than one row is tall, with a score"] * 2)
    heat = figure.axes[1].images[1]
    assert heat.norm.vmax < 2 * maps.max()
    assert figure.axes[-1].get_label() == "<colorbar>" and figure.axes[-1]._colorbar.extend == "max"
    assert all(len(line) <= viz.ROW_LABEL_WIDTH for line in figure.axes[0].get_ylabel().splitlines())


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


def test_plot_pro_traces_metrics_pro_curve_and_shades_au_pro(batch):
    _, masks, maps = batch
    figure = viz.plot_pro(masks, maps, fpr_limit=0.2, label="method")
    (ax,) = figure.axes
    curve = next(line for line in ax.lines if line.get_label().startswith("method"))
    fprs, pros = metrics.pro_curve(masks, maps)
    assert_on_polyline(np.c_[fprs, pros], curve.get_xydata())  # thinning drops only points on the line
    assert curve.get_label() == f"method (AU-PRO {metrics.au_pro(masks, maps, fpr_limit=0.2):.3f})"
    limit = next(line for line in ax.lines if line.get_gid() == "fpr_limit")
    assert list(limit.get_xdata()) == [0.2, 0.2]
    shade = ax.collections[0].get_paths()[0].vertices
    assert shade[:, 0].min() == 0.0 and shade[:, 0].max() == pytest.approx(0.2)  # ends at fpr_limit
    assert polygon_area(shade) == pytest.approx(0.2 * metrics.au_pro(masks, maps, fpr_limit=0.2))


def test_plot_pro_thins_a_long_curve_to_its_points():
    """A long curve is drawn through some of its own points, and still shades the area AU-PRO integrates."""
    rng = np.random.default_rng(1)
    masks = np.zeros((4, 64, 64), dtype=bool)
    masks[1:, 10:30, 10:30] = True
    maps = rng.random((4, 64, 64)).astype(np.float32) + 0.5 * masks
    ax = viz.plot_pro(masks, maps, fpr_limit=0.25).axes[0]
    fprs, pros = metrics.pro_curve(masks, maps)
    drawn = ax.lines[0].get_xydata()
    assert len(fprs) > 10_000 and len(drawn) < 4 * viz.CURVE_STEPS + 2
    assert set(map(tuple, drawn)) <= set(zip(fprs, pros))
    np.testing.assert_array_equal(drawn[[0, -1]], [[0.0, 0.0], [1.0, 1.0]])
    vertices = ax.collections[0].get_paths()[0].vertices
    edge = vertices[vertices[:, 1] > 0]  # the rest is the baseline pro = 0
    closing = (0.25, np.interp(0.25, fprs, pros))  # au_pro's linearly interpolated last point
    assert closing in set(map(tuple, edge)) and set(map(tuple, edge)) <= set(map(tuple, drawn)) | {closing}
    assert polygon_area(vertices) == pytest.approx(0.25 * metrics.au_pro(masks, maps, fpr_limit=0.25), rel=1e-3)


def test_plot_roc_thins_a_long_curve_to_its_points():
    rng = np.random.default_rng(1)
    masks = np.zeros((4, 96, 96), dtype=bool)
    masks[:, :, :48] = True
    maps = rng.random((4, 96, 96)) + 0.1 * masks  # classes overlap: a ROC curve of thousands of corners
    fprs, tprs, _ = roc_curve(masks.ravel(), maps.ravel())
    drawn = viz.plot_roc(masks, maps).axes[0].lines[1].get_xydata()  # lines[0] is the chance diagonal
    assert len(drawn) < 4 * viz.CURVE_STEPS + 2 < len(fprs)
    assert set(map(tuple, drawn)) <= set(zip(fprs, tprs))
    assert np.trapezoid(drawn[:, 1], drawn[:, 0]) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), rel=1e-3)


def test_plot_pro_stays_inside_the_figure_on_a_log_axis(batch):
    """A shade clipped by a rectangle from x = 0 reached to minus infinity once a log FPR axis was set."""
    _, masks, maps = batch
    (ax,) = viz.plot_pro(masks, maps).axes
    ax.set(xscale="log", xlim=(1e-4, 1.0))  # set afterwards, as a reader might
    assert ax.collections[0].get_tightbbox().width <= ax.bbox.width  # the shade, in display pixels


def test_plot_pro_shades_the_au_pro_region_on_a_linear_axis_only(batch):
    _, masks, maps = batch
    assert len(viz.plot_pro(masks, maps).axes[0].collections) == 1
    log_axes = viz.plot_pro(masks, maps, log_scale=True).axes[0]
    assert not log_axes.collections and "linear axis" in log_axes.get_title()


@pytest.mark.parametrize("plot", [viz.plot_pro, viz.plot_roc])
def test_log_scale_fpr_axis_starts_at_one_false_positive(planted, plot):
    masks, maps, _ = planted
    ax = plot(masks, maps, log_scale=True).axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlim() == pytest.approx((1 / (~masks).sum(), 1.0))
    assert ax.get_xlabel().endswith(", log scale")


def test_plot_roc_chance_line_is_the_diagonal_on_either_scale(planted):
    masks, maps, _ = planted
    ax = viz.plot_roc(masks, maps, log_scale=True).axes[0]
    chance = next(line for line in ax.lines if line.get_gid() == "chance")
    np.testing.assert_array_equal(chance.get_xdata(), chance.get_ydata())
    assert chance.get_xdata()[1] <= 1 / (~masks).sum()  # straight y = x down to the axis's left end


def test_plot_pro_reports_metric_errors():
    with pytest.raises(ValueError, match="masks contain no defect region"):
        viz.plot_pro(np.zeros((1, 4, 4), dtype=bool), np.zeros((1, 4, 4)))


def test_plot_accuracy_vs_threshold_matches_a_recomputation(planted):
    masks, maps, labels = planted
    sweep = np.linspace(0.5, 3.0, 6)
    figure = viz.plot_accuracy_vs_threshold(labels, maps, sweep, min_defect_areas=(1, 5), marks={"rule": 1.0})
    (ax,) = figure.axes
    curves = {line.get_label(): line.get_ydata() for line in ax.lines if line.get_label() != "rule"}
    for area in (1, 5):
        predicted = np.array([largest_components(maps, t) >= area for t in sweep])  # (T, N)
        good, defective = (~predicted[:, labels == 0]).mean(axis=1), predicted[:, labels == 1].mean(axis=1)
        np.testing.assert_allclose(curves[f"good accuracy, area >= {area} px"], good)
        np.testing.assert_allclose(curves[f"defective accuracy, area >= {area} px"], defective)
    assert curves["good accuracy, area >= 1 px"][0] == 0.0  # a random map has a pixel above 0.5
    assert next(line for line in ax.lines if line.get_label() == "rule").get_xdata()[0] == 1.0
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), sweep)


def test_plot_accuracy_vs_threshold_errors(planted):
    masks, maps, labels = planted
    with pytest.raises(ValueError, match="1-D ascending array"):
        viz.plot_accuracy_vs_threshold(labels, maps, [2.0, 1.0])
    with pytest.raises(ValueError, match=r"pass 1 to 4 min_defect_areas .* got 5 and 0"):
        viz.plot_accuracy_vs_threshold(labels, maps, [1.0, 2.0], min_defect_areas=range(1, 6))
    with pytest.raises(ValueError, match=r"expected labels of shape \(6,\)"):
        viz.plot_accuracy_vs_threshold(labels[:5], maps, [1.0, 2.0])


@pytest.mark.parametrize("threshold, min_defect_area", [(0.9, 1), (0.9, 20), (2.5, 1)])
def test_threshold_explorer_operating_point_and_examples(planted, threshold, min_defect_area):
    masks, maps, labels = planted
    update = viz.threshold_explorer(masks, maps, labels, examples=[0, 3], titles=["good", "square"], label="m")
    figure = update(1.5)
    assert update(threshold, min_defect_area) is figure  # one figure, redrawn
    roc_ax = next(ax for ax in figure.axes if ax.get_title() == "Pixel-level ROC curve")
    pro_ax = next(ax for ax in figure.axes if ax.get_title().startswith("PRO curve"))
    assert roc_ax.get_xscale() == pro_ax.get_xscale() == "log"
    # the curves are plot_roc's and plot_pro's, reused
    roc_line = next(line for line in roc_ax.lines if line.get_label().startswith("m (AUROC"))
    assert_on_polyline(np.c_[roc_curve(masks.ravel(), maps.ravel())[:2]], roc_line.get_xydata())
    pro_alone = viz.plot_pro(masks, maps).axes[0].lines[0]
    np.testing.assert_array_equal(pro_ax.lines[0].get_xydata(), pro_alone.get_xydata())
    # the operating point, recomputed: one square region per defective image
    above = maps > threshold
    fpr = max(above[~masks].mean(), 1 / (~masks).sum())
    region_overlap = np.mean([above[i][masks[i]].mean() for i in (3, 4, 5)])
    for ax, expected in ((roc_ax, [[fpr, above[masks].mean()]]), (pro_ax, [[fpr, region_overlap]])):
        point = next(line for line in ax.lines if line.get_label() == "operating point")
        np.testing.assert_allclose(point.get_xydata(), expected)
    # the examples: binarised maps, titled with the decision, red when it is wrong
    predicted = largest_components(maps, threshold) >= min_defect_area
    for ax, index, name in zip(figure.axes[:2], [0, 3], ["good", "square"]):
        np.testing.assert_array_equal(ax.images[0].get_array(), above[index])
        assert ax.get_title() == f"{name}\ncalled {'defective' if predicted[index] else 'good'}"
        wrong = predicted[index] != labels[index]
        assert ax.title.get_color() == (viz.DEFECTIVE_COLOUR if wrong else "black")
    good, defective = (~predicted[labels == 0]).mean(), predicted[labels == 1].mean()
    assert f"good accuracy {good:.2f}, defective accuracy {defective:.2f}" in figure.get_suptitle()


def test_threshold_explorer_without_examples_and_errors(planted):
    masks, maps, labels = planted
    figure = viz.threshold_explorer(masks, maps, labels)(2.0)
    assert len(figure.axes) == 2 and "red title" not in figure.get_suptitle()
    with pytest.raises(ValueError, match="got 1 titles for 2 examples"):
        viz.threshold_explorer(masks, maps, labels, examples=[0, 1], titles=["a"])


def test_threshold_explorer_shows_the_warning_only_while_it_holds(planted):
    masks, maps, labels = planted
    seen = []

    def warning(values):
        seen.append(values)
        return "missed" if values["defective_accuracy"] < 0.5 else None

    explorer = viz.threshold_explorer(masks, maps, labels, scores=maps.max(axis=(1, 2)), warning=warning)
    assert explorer(5.0).get_supxlabel() == "Warning: missed"  # above every map: no defect found
    assert explorer(1.5).get_supxlabel() == ""
    assert seen[-1] == {"image_auroc": roc_auc_score(labels, maps.max(axis=(1, 2))), "good_accuracy": 1.0,
                        "defective_accuracy": 1.0}
    with pytest.raises(ValueError, match="got 1 scores for 6 images"):
        viz.threshold_explorer(masks, maps, labels, scores=[0.0])


def test_threshold_explorer_sliders_draw_once_then_only_when_moved(planted, monkeypatch):
    """Executing the cell headless costs one draw; a released slider redraws and updates the display."""
    import IPython.display
    import ipywidgets

    masks, maps, labels = planted
    explorer = viz.threshold_explorer(masks, maps, labels, examples=[3])
    draws, shown, updates = [], [], []
    classify = metrics.classify  # called once per redraw: the spy counts draws

    def counting_classify(maps, threshold, *, min_defect_area=1):
        draws.append((threshold, min_defect_area))
        return classify(maps, threshold, min_defect_area=min_defect_area)

    monkeypatch.setattr(metrics, "classify", counting_classify)

    class Handle:
        def update(self, value):
            updates.append(value)

    def display(value, display_id=False):
        shown.append(value)
        return Handle() if display_id else None

    monkeypatch.setattr(IPython.display, "display", display)
    explorer.show_with_sliders(1.5, 2, threshold_range=(0.5, 3.0))
    figure, box = shown
    assert figure is explorer.figure and draws == [(1.5, 2)] and updates == []
    threshold_slider, area_slider = box.children
    assert isinstance(threshold_slider, ipywidgets.FloatLogSlider) and area_slider.max == 20
    assert not threshold_slider.continuous_update and not area_slider.continuous_update  # redraw on release
    area_slider.value = 5
    assert draws[-1] == (pytest.approx(1.5), 5) and updates == [figure]
    assert "min. defect area 5 px" in figure.get_suptitle()
    with pytest.raises(ValueError, match="low < high"):
        explorer.show_with_sliders(1.0, threshold_range=(2.0, 1.0))


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


# ----------------------------------------------------------------------------- tables
def test_benchmark_heatmaps_cells_match_the_rows():
    rows = pd.DataFrame({"category": ["a", "a", "a", "b", "b"], "method": ["m1", "m2", "m1", "m1", "m1"],
                         "metric": ["x", "x", "y", "x", "seconds"], "value": [0.5, 0.25, 0.125, 1.0, 30.0]})
    figure = viz.benchmark_heatmaps(rows.astype({"value": object}), ["y", "x"], title="t")
    panels = [ax for ax in figure.axes if ax.get_title() in ("a", "b")]
    assert [ax.get_title() for ax in panels] == ["a", "b"] and figure.get_suptitle() == "t"
    expected = {"a": [[0.125, 0.5], [np.nan, 0.25]], "b": [[np.nan, 1.0], [np.nan, np.nan]]}  # rows m1, m2
    for ax in panels:
        cells = ax.collections[0].get_array()
        cells = np.ma.filled(cells.astype(float), np.nan).reshape(2, 2)  # blank (masked) cells as nan
        np.testing.assert_array_equal(cells, expected[ax.get_title()])
        assert [text.get_text() for text in ax.get_yticklabels()] == ["m1", "m2"]  # same rows in every panel
        assert [text.get_text() for text in ax.get_xticklabels()] == ["y", "x"]
        shown = [value for value in np.ravel(expected[ax.get_title()]) if not np.isnan(value)]
        assert [text.get_text() for text in ax.texts] == [f"{value:.2f}" for value in shown]  # blanks unlabelled
    assert figure.axes[-1].get_ylabel().startswith("score (1 = perfect")


def test_benchmark_heatmaps_errors():
    rows = pd.DataFrame({"category": ["a"], "method": ["m"], "metric": ["x"], "value": [0.5]})
    with pytest.raises(ValueError, match=r"results lacks columns \['value'\]"):
        viz.benchmark_heatmaps(rows.drop(columns="value"), ["x"])
    with pytest.raises(ValueError, match=r"no rows for metrics \['y'\]; present: \['x'\]"):
        viz.benchmark_heatmaps(rows, ["y"])
    with pytest.raises(ValueError, match=r"1 rows repeat a \(category, method, metric\)"):
        viz.benchmark_heatmaps(pd.concat([rows, rows]), ["x"])


def test_pipeline_diagram_draws_one_box_per_stage_and_checks_the_branch():
    figure = viz.pipeline_diagram(["images", ("features", "CNN"), "map"], title="pipeline",
                                  branch=["test image", "score"], branch_from=0)
    ax = figure.axes[0]
    boxes = [text.get_text() for text in ax.texts if text.get_bbox_patch() is not None]
    assert boxes == ["images", "features\nCNN", "map", "test image", "score"]
    assert len([text for text in ax.texts if text.get_bbox_patch() is None]) == 2 + 1 + 1  # the arrows
    with pytest.raises(ValueError, match="branch_from must index one of the 3 stages"):
        viz.pipeline_diagram(["a", "b", "c"], title="t", branch=["x"], branch_from=3)
    with pytest.raises(ValueError, match="stages is empty"):
        viz.pipeline_diagram([], title="t")


def test_source_drops_every_docstring_and_keeps_the_code():
    from mvtec_tutorial.models import supervised
    listing = viz.source(supervised.ConvNet)
    assert '"""' not in listing and listing.startswith("class ConvNet")
    assert "def forward" in listing
    compile(listing, "<listing>", "exec")  # still valid Python: only whole docstrings were removed
