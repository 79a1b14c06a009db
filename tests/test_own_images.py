"""Tests for mvtec_tutorial.own_images: geometry, tiles, the ignore mask, labels, streaming memory."""
import tracemalloc

import numpy as np
import pytest
import torch
from PIL import Image

from mvtec_tutorial import models, own_images, thresholds
from mvtec_tutorial.report import ReportWriter

RED, BLUE = (255, 0, 0), (0, 0, 255)


def halves(path, width, height):
    """An image red on its left half, blue on its right."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2], pixels[:, width // 2:] = RED, BLUE
    Image.fromarray(pixels).save(path)
    return path


def noise_images(folder, n, *, size=32, seed=0, shape=None):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        pixels = (0.5 + 0.05 * rng.standard_normal(shape or (size, size, 3))).clip(0, 1)
        Image.fromarray((pixels * 255).astype(np.uint8)).save(folder / f"{i:04d}.png")
    return own_images.find_images([folder])


def test_pad_keeps_the_whole_image_and_marks_the_border(tmp_path):
    image, inside = own_images.load_image(halves(tmp_path / "wide.png", 40, 20), own_images.Geometry(20, "pad"))
    assert image.shape == (3, 20, 20) and inside[5:15].all() and not inside[:5].any() and not inside[15:].any()
    np.testing.assert_array_equal(image[:, :5], 0)  # black padding above
    np.testing.assert_allclose(image[:, 10, :8].T, np.tile([1.0, 0, 0], (8, 1)))  # left half red, right blue
    np.testing.assert_allclose(image[:, 10, 12:].T, np.tile([0, 0, 1.0], (8, 1)))


def test_crop_keeps_the_centre_square(tmp_path):
    image, inside = own_images.load_image(halves(tmp_path / "wide.png", 40, 20), own_images.Geometry(20, "crop"))
    assert inside.all()
    # The centre 20 of 40 columns: 10 red, 10 blue, no stretching.
    np.testing.assert_allclose(image[0, :, :9], 1.0)
    np.testing.assert_allclose(image[2, :, 11:], 1.0)


def test_stretch_is_the_plain_resize(tmp_path):
    path = halves(tmp_path / "wide.png", 40, 20)
    image, inside = own_images.load_image(path, own_images.Geometry(16, "stretch"))
    expected = np.asarray(Image.open(path).resize((16, 16), Image.BILINEAR), np.float32).transpose(2, 0, 1) / 255
    np.testing.assert_allclose(image, expected) and inside.all()


@pytest.mark.parametrize(("kwargs", "match"), [(dict(fit="squash"), "unknown fit"),
                                               (dict(image_size=100, tile=30), "does not divide"),
                                               (dict(image_size=0), "image_size")])
def test_bad_geometry_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        own_images.Geometry(**kwargs)


def test_tiles_are_the_slices_and_predict_stitches_them(tmp_path):
    paths = noise_images(tmp_path / "normal", 6, size=32)
    geometry = own_images.Geometry(32, "pad", tile=16)
    images = torch.from_numpy(np.stack([own_images.load_image(p, geometry)[0] for p in paths]))
    tiles = own_images._tiles(images, 16)
    torch.testing.assert_close(tiles[1], images[0, :, :16, 16:])  # row by row: the second tile is top right
    detector = models.MeanImage().fit(tiles[4:])
    maps, scores = own_images.predict(detector, images[:1], np.ones((1, 32, 32), bool), geometry)
    for row in range(2):
        for column in range(2):
            part = images[:1, :, 16 * row:16 * row + 16, 16 * column:16 * column + 16]
            np.testing.assert_allclose(maps[0, 16 * row:16 * row + 16, 16 * column:16 * column + 16],
                                       detector.predict(part)[0][0], rtol=1e-6)
    assert scores[0] == maps[0].max()


def test_ignored_pixels_neither_score_nor_flag(tmp_path):
    paths = noise_images(tmp_path / "normal", 10, size=32)
    ignore = np.zeros((32, 32), np.uint8)
    ignore[:12, :12] = 255  # wider than the defect: MeanImage smooths its maps
    Image.fromarray(ignore).save(tmp_path / "ignore.png")
    geometry = own_images.Geometry(32)
    ignored = own_images.load_ignore_mask(tmp_path / "ignore.png")
    detector, inspection = own_images.fit_folder(models.MeanImage(), paths, geometry, ignored=ignored, progress=False)
    new = tmp_path / "new"
    new.mkdir()
    for name, corner in (("in_ignored.png", (2, 2)), ("outside.png", (20, 20))):
        pixels = np.full((32, 32, 3), 128, np.uint8)
        pixels[corner[0]:corner[0] + 4, corner[1]:corner[1] + 4] = 255
        Image.fromarray(pixels).save(new / name)
    (scored,) = own_images.score_images(detector, own_images.find_images([new]), inspection, progress=False)
    assert [p.name for p in scored.paths] == ["in_ignored.png", "outside.png"]
    assert scored.flagged.tolist() == [False, True]
    assert scored.maps[0][ignored].max() <= scored.maps[0][~ignored].min()
    Image.new("RGB", (40, 32)).save(new / "wider.png")
    with pytest.raises(ValueError, match="wider.png is 40 x 32 px but the ignore mask is 32 x 32 px"):
        next(own_images.score_images(detector, [new / "wider.png"], inspection, progress=False))


def test_an_ignore_mask_that_ignores_everything_is_refused(tmp_path):
    Image.new("L", (8, 8), 255).save(tmp_path / "all.png")
    with pytest.raises(ValueError, match="ignores every pixel"):
        own_images.load_ignore_mask(tmp_path / "all.png")


def test_an_ignore_mask_may_cover_most_of_the_image_and_its_border(tmp_path):
    frame = np.full((8, 8), 255, np.uint8)
    frame[3:5, 3:5] = 0  # inspect only the centre: a defect mask this bright would be refused as inverted
    Image.fromarray(frame).save(tmp_path / "frame.png")
    assert own_images.load_ignore_mask(tmp_path / "frame.png").sum() == 60


def test_labels_come_from_the_first_sub_folder(tmp_path):
    names = ["GOOD/a.png", "ok/day1/b.png", "Normal/c.png", "scratch/d.png", "bad/good/e.png"]
    paths = [tmp_path / name for name in names]
    np.testing.assert_array_equal(own_images.folder_labels(paths, tmp_path), [0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match="loose.png is not in a sub-folder"):
        own_images.folder_labels([tmp_path / "loose.png"], tmp_path)


def test_find_images_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing_here does not exist"):
        own_images.find_images([tmp_path / "nothing_here"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image file under"):
        own_images.find_images([tmp_path / "empty"])


def test_false_reject_rule_takes_the_rank_of_the_validation_scores(tmp_path):
    paths = noise_images(tmp_path / "normal", 25, size=16)
    detector, inspection = own_images.fit_folder(models.MeanImage(), paths, own_images.Geometry(16), rule="false-reject",
                                                 target_rate=0.2, progress=False)
    expected = thresholds.false_reject_threshold(inspection.validation_scores, target_rate=0.2)
    assert inspection.n_validation == 5 and inspection.min_defect_area == 1
    assert (inspection.threshold, inspection.n_rejected) == (expected.threshold, 1)
    assert inspection.false_reject_bound == pytest.approx(thresholds.false_reject_bound(5, 1))


def peak_bytes(detector, paths, inspection, out):
    """Peak traced memory while scoring ``paths`` into a report (the page itself is written afterwards)."""
    writer = ReportWriter(out, inspection, source="test", max_images=4)
    tracemalloc.start()
    for batch in own_images.score_images(detector, paths, inspection, batch_size=4, progress=False):
        writer.add(batch)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    writer.close()
    return peak


def test_scoring_memory_does_not_grow_with_the_number_of_images(tmp_path):
    paths = noise_images(tmp_path / "images", 120, size=24)
    detector, inspection = own_images.fit_folder(models.MeanImage(), paths[:10], own_images.Geometry(24),
                                                 progress=False)
    peak_bytes(detector, paths[:12], inspection, tmp_path / "warm-up")  # first-use imports and caches
    small = peak_bytes(detector, paths[:12], inspection, tmp_path / "small")
    large = peak_bytes(detector, paths, inspection, tmp_path / "large")
    # Ten times the images: holding them all would add 108 * 3 * 24 * 24 * 4 bytes (750 kB), their maps 250 kB.
    assert large - small < 150_000, (small, large)
    assert (tmp_path / "large" / "scores.csv").read_text().count("\n") == 121
