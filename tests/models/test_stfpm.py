"""Tests for mvtec_tutorial.models.stfpm: loss and map against a plain recomputation, and the method."""
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from mvtec_tutorial.models.stfpm import STFPM, Student, anomaly_maps, distillation_loss, normalized_distance


def _features(seed):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 5, 4, 4, generator=generator), torch.randn(2, 7, 2, 2, generator=generator)]


def test_normalized_distance_matches_a_plain_recomputation_at_a_few_positions():
    teacher, student = _features(0)[0], _features(1)[0]
    got = normalized_distance(teacher, student)
    for n, i, j in [(0, 0, 0), (1, 3, 2), (0, 2, 1)]:
        t, s = teacher[n, :, i, j].numpy(), student[n, :, i, j].numpy()
        expected = 0.5 * np.sum((t / np.linalg.norm(t) - s / np.linalg.norm(s)) ** 2)
        assert got[n, i, j].item() == pytest.approx(expected, rel=1e-5)


def test_distillation_loss_is_the_sum_over_levels_of_the_mean_over_images_and_positions():
    teacher, student = _features(0), _features(1)
    expected = 0.0
    for t, s in zip(teacher, student):
        t, s = t.numpy().astype(np.float64), s.numpy().astype(np.float64)
        t = t / np.linalg.norm(t, axis=1, keepdims=True)
        s = s / np.linalg.norm(s, axis=1, keepdims=True)
        expected += (0.5 * ((t - s) ** 2).sum(axis=1)).mean()
    assert distillation_loss(teacher, student).item() == pytest.approx(expected, rel=1e-5)


def test_identical_features_give_zero_loss_and_zero_map():
    teacher = _features(0)
    assert distillation_loss(teacher, [2 * t for t in teacher]).item() == pytest.approx(0, abs=1e-6)
    assert anomaly_maps(teacher, teacher, (8, 8)).abs().max().item() == pytest.approx(0, abs=1e-6)


def test_anomaly_map_is_the_product_of_the_upsampled_levels():
    teacher, student = _features(0), _features(1)
    maps = anomaly_maps(teacher, student, (4, 4))
    upsampled = torch.nn.functional.interpolate(normalized_distance(teacher[1], student[1])[:, None], size=(4, 4),
                                                mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(maps, normalized_distance(teacher[0], student[0]) * upsampled)


def test_student_has_the_teachers_shapes_and_random_weights():
    torch.manual_seed(0)
    student = Student(("block2", "block4"))
    features = student(torch.rand(1, 3, 32, 32))
    assert [tuple(f.shape) for f in features] == [(1, 24, 8, 8), (1, 40, 4, 4)]
    with pytest.raises(ValueError, match="unknown efficientnet_lite0 layer 'layer9'"):
        Student(("layer9",))


@pytest.fixture(scope="module")
def fitted(data):
    return STFPM(epochs=5, batch_size=4, layers=("block2", "block4"), device="cpu").fit(data[0], progress=False)


def test_planted_square_scores_highest(fitted, data):
    _, test, masks = data
    maps, scores = fitted.predict(test, progress=False)
    assert scores.argmax() == 0
    assert roc_auc_score(masks[0].ravel(), maps[0].ravel()) > 0.9
    assert fitted.history_["loss"][-1] < fitted.history_["loss"][0]


def test_same_seed_same_output(fitted, data):
    again = STFPM(epochs=5, batch_size=4, layers=("block2", "block4"), device="cpu").fit(data[0], progress=False)
    np.testing.assert_array_equal(again.predict(data[1], progress=False)[0], fitted.predict(data[1], progress=False)[0])


def test_bad_batch_size_is_refused_before_training(data):
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        STFPM(batch_size=0, device="cpu").fit(data[0], progress=False)


def test_recomputed_batch_norm_statistics_are_those_of_the_training_images():
    from mvtec_tutorial.models.stfpm import _recompute_batch_norm_statistics
    network = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.BatchNorm2d(2, momentum=0.01))
    images = torch.rand(8, 3, 4, 4)
    _recompute_batch_norm_statistics(network, images, batch_size=4, device=torch.device("cpu"))
    with torch.no_grad():
        outputs = network[0](images)
    torch.testing.assert_close(network[1].running_mean, outputs.mean(dim=(0, 2, 3)))
    assert network[1].momentum == 0.01 and not network.training
