import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from mvtec_tutorial import backbones, data
from mvtec_tutorial.models import supervised
from mvtec_tutorial.models.base import NotFittedError
from mvtec_tutorial.models.supervised import ConvNet, SupervisedClassifier, labelled_split

SMALL = 32  # px; enough for ResNet-18 and Lite0, far below the ConvNet's minimum
# ResNet-18 at 32 px is far cheaper than the ConvNet at its minimum of 200 px.
TINY_RESNET = dict(architecture="resnet18", image_size=SMALL, batch_size=8, device="cpu")


def separable_batch(n=8, side=SMALL, seed=0):
    """Good images dark, defective ones with a bright square: any working classifier separates them."""
    generator = torch.Generator().manual_seed(seed)
    images = 0.2 + 0.1 * torch.rand(n, 3, side, side, generator=generator)
    labels = np.arange(n) % 2
    images[labels == 1, :, side // 4: side // 2, side // 4: side // 2] = 0.9
    return images, labels


# ----------------------------------------------------------------------------- networks
def test_convnet_flatten_size_follows_the_input_size():
    # The deck hard-coded 32 * 9 * 9: what 1024 px inputs (MVTec AD's full resolution) give.
    assert ConvNet(image_size=1024).fc1.in_features == 32 * 9 * 9
    assert ConvNet(image_size=224).fc1.in_features == 32 * 1 * 1  # 220/4 = 55, 51/5 = 10, 6/5 = 1
    assert ConvNet(image_size=300).fc1.in_features == 32 * 2 * 2  # 296/4 = 74, 70/5 = 14, 10/5 = 2
    assert ConvNet(image_size=200)(torch.zeros(2, 3, 200, 200)).shape == (2, 2)
    with pytest.raises(ValueError, match="at least 200 px, got image_size=199"):
        ConvNet(image_size=199)


@pytest.mark.parametrize("architecture", supervised.ARCHITECTURES)
def test_networks_have_a_two_class_head(architecture):
    network, mean, std = supervised.build_network(architecture, image_size=200)
    assert network.fc.out_features == 2 and len(mean) == len(std) == 3


def test_no_silent_fallback_when_resnet18_weights_are_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(backbones, "resnet18_weights_path", lambda: tmp_path / "resnet18-f37072fd.pth")
    with pytest.raises(FileNotFoundError, match="ResNet-18 ImageNet weights not found"):
        supervised.build_network("resnet18", pretrained=True)
    with pytest.raises(ValueError, match="ConvNet has no pretrained weights"):
        supervised.build_network("convnet", pretrained=True)
    with pytest.raises(ValueError, match="unknown architecture 'vgg16'"):
        supervised.build_network("vgg16")


# ----------------------------------------------------------------------------- training
def test_training_decreases_the_loss_and_separates_a_tiny_batch():
    images, labels = separable_batch()
    model = SupervisedClassifier(architecture="convnet", image_size=supervised.CONVNET_MIN_IMAGE_SIZE, epochs=5,
                                 batch_size=8, learning_rate=1e-2, device="cpu").fit(images, labels, progress=False)
    loss = model.history_["loss"]  # one step per epoch: loss[k] is measured before step k
    assert loss[0] == pytest.approx(np.log(2), abs=0.05)  # balanced classes, untrained: chance
    assert loss[-1] < 0.6 * loss[0]
    np.testing.assert_array_equal(model.predict(images), labels)


def test_batch_norm_statistics_are_those_of_the_final_weights():
    images, labels = separable_batch()  # one batch of 8: the recomputed mean is the plain mean
    model = SupervisedClassifier(**TINY_RESNET, epochs=2).fit(images, labels, progress=False)
    network = model.network_
    with torch.no_grad():
        first_conv = network.conv1(model._normalize(images))  # what bn1 normalises
    np.testing.assert_allclose(network.bn1.running_mean, first_conv.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(network.bn1.running_var, first_conv.var(dim=(0, 2, 3)), rtol=1e-3, atol=1e-5)


def test_predict_proba_is_a_distribution_and_predict_its_argmax():
    images, labels = separable_batch()
    model = SupervisedClassifier(**TINY_RESNET, epochs=1).fit(images, labels, progress=False)
    probabilities = model.predict_proba(images)
    assert probabilities.shape == (8, 2) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(model.predict(images), probabilities.argmax(axis=1))


def test_same_seed_same_result_with_augmentation():
    images, labels = separable_batch()

    def probabilities(seed):
        model = SupervisedClassifier(**TINY_RESNET, epochs=1, augmentation=supervised.default_augmentation(),
                                     seed=seed)
        return model.fit(images, labels, progress=False).predict_proba(images)

    first = probabilities(0)
    np.testing.assert_array_equal(first, probabilities(0))
    assert not np.array_equal(first, probabilities(1))


def test_frozen_backbone_trains_only_the_head():
    images, labels = separable_batch(n=4)
    frozen = dict(architecture="efficientnet_lite0", pretrained=True, freeze_backbone=True, image_size=SMALL,
                  epochs=3, batch_size=2, device="cpu")
    # Without augmentation the head trains on features computed once; with it (here the identity)
    # every batch passes through the frozen network. Both must leave the backbone as loaded.
    cached = SupervisedClassifier(**frozen).fit(images, labels, progress=False)
    through_network = SupervisedClassifier(**frozen, augmentation=lambda image: image).fit(images, labels,
                                                                                         progress=False)
    reference = backbones.efficientnet_lite0().state_dict()  # includes batch-norm running statistics
    for model in (cached, through_network):
        changed = [name for name, value in model.network_.state_dict().items()
                   if not name.startswith("fc.") and not torch.equal(value, reference[name])]
        assert changed == []
    np.testing.assert_allclose(through_network.predict_proba(images), cached.predict_proba(images), atol=1e-5)
    with pytest.raises(ValueError, match="pass pretrained=True or freeze_backbone=False"):
        SupervisedClassifier(freeze_backbone=True).fit(images, labels, progress=False)


def test_fit_and_predict_errors():
    images, labels = separable_batch(n=4)
    with pytest.raises(NotFittedError, match="call fit first"):
        SupervisedClassifier().predict_proba(images)
    with pytest.raises(ValueError, match="both present.*labelled_split"):
        SupervisedClassifier().fit(images, np.zeros(4, dtype=int), progress=False)
    with pytest.raises(ValueError, match="got \\(3,\\) labels for 4 images"):
        SupervisedClassifier().fit(images, labels[:3], progress=False)
    with pytest.raises(ValueError, match="class_weight must be"):
        SupervisedClassifier(**TINY_RESNET, class_weight="auto").fit(images, labels, progress=False)


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip(tmp_path):
    images, labels = separable_batch()
    model = SupervisedClassifier(**TINY_RESNET, epochs=2).fit(images, labels, progress=False)
    path = model.save(tmp_path / "resnet18.pt")
    restored = SupervisedClassifier(**TINY_RESNET, seed=1).load(path)
    np.testing.assert_array_equal(restored.predict_proba(images), model.predict_proba(images))
    assert restored.history_["loss"] == pytest.approx(model.history_["loss"])


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    images, labels = separable_batch()
    path = SupervisedClassifier(**TINY_RESNET, epochs=1).fit(images, labels, progress=False).save(
        tmp_path / "resnet18.pt")
    with pytest.raises(ValueError, match="holds a ResNet but the model is a ConvNet"):
        SupervisedClassifier(architecture="convnet", device="cpu").load(path)
    with pytest.raises(ValueError, match="holds a ResNet but the model is a EfficientNetLite0"):
        SupervisedClassifier(architecture="efficientnet_lite0", pretrained=True, device="cpu").load(path)


# ----------------------------------------------------------------------------- labelled split
def split_paths(synthetic_root, **options):
    train, evaluation = labelled_split(synthetic_root, "bottle", image_size=None, **options)
    paths = [[subset.dataset[i]["path"] for i in subset.indices] for subset in (train, evaluation)]
    types = [[subset.dataset[i]["defect_type"] for i in subset.indices] for subset in (train, evaluation)]
    return train, evaluation, paths, types


def test_labelled_split_has_no_leakage_and_covers_every_image(synthetic_root):
    train, evaluation, (train_paths, evaluation_paths), (train_types, evaluation_types) = split_paths(synthetic_root)
    every_image = sorted(str(p) for split in data.SPLITS for p, _, _ in data.MVTecAD(
        synthetic_root, "bottle", split, image_size=None).samples)
    assert set(train.indices).isdisjoint(evaluation.indices)
    assert set(train_paths).isdisjoint(evaluation_paths)
    assert sorted(train_paths + evaluation_paths) == every_image
    assert set(train_types) == set(evaluation_types) == {"good", "broken_large", "broken_small", "contamination"}


def test_labelled_split_is_seeded(synthetic_root):
    first = [s.indices for s in labelled_split(synthetic_root, "bottle", seed=0)]
    assert first == [s.indices for s in labelled_split(synthetic_root, "bottle", seed=0)]
    assert first != [s.indices for s in labelled_split(synthetic_root, "bottle", seed=1)]


def test_held_out_defect_type_is_absent_from_training(synthetic_root):
    _, _, (_, evaluation_paths), (train_types, evaluation_types) = split_paths(
        synthetic_root, held_out_defect_type="contamination")
    n_contamination = len(data.MVTecAD(synthetic_root, "bottle", "test", defect_types=["contamination"]))
    assert "contamination" not in train_types
    assert evaluation_types.count("contamination") == n_contamination
    assert {"broken_large", "broken_small", "good"} <= set(train_types)


def test_labelled_split_errors(synthetic_root):
    with pytest.raises(ValueError, match="'scratch' is not a defect type of bottle; use one of broken_large"):
        labelled_split(synthetic_root, "bottle", held_out_defect_type="scratch")
    with pytest.raises(ValueError, match="evaluation_fraction must be in"):
        labelled_split(synthetic_root, "bottle", evaluation_fraction=1.0)
    with pytest.raises(ValueError, match="too few to split"):
        labelled_split(synthetic_root, "bottle", evaluation_fraction=0.9)


# ----------------------------------------------------------------------------- report
def test_classification_report_matches_hand_counts_and_sklearn():
    labels = np.array([0, 0, 0, 1, 1, 1])
    p_defective = np.array([0.1, 0.7, 0.2, 0.9, 0.4, 0.8])
    types = ["good", "good", "good", "crack", "crack", "hole"]
    report = supervised.classification_report(labels, np.stack([1 - p_defective, p_defective], axis=1), types)
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["good_recall"] == pytest.approx(2 / 3) and report["defective_recall"] == pytest.approx(2 / 3)
    assert report["recall_by_type"] == {"crack": 0.5, "good": pytest.approx(2 / 3), "hole": 1.0}
    np.testing.assert_array_equal(report["confusion_matrix"], [[2, 1], [1, 2]])
    assert report["image_auroc"] == pytest.approx(roc_auc_score(labels, p_defective))
    with pytest.raises(ValueError, match="one of each per image"):
        supervised.classification_report(labels, p_defective, types[:5])


def test_command_line_prints_one_row_per_run(synthetic_root, capsys, monkeypatch):
    monkeypatch.setitem(supervised.MODELS, "tiny", dict(architecture="resnet18", image_size=SMALL, epochs=1))
    supervised.main(["--root", str(synthetic_root), "--category", "bottle", "--models", "tiny", "--augmented-models",
                     "--held-out-models", "tiny", "--image-size", str(SMALL), "--device", "cpu"])
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0].startswith("| model | augmented | held_out | accuracy | image_auroc |")
    assert [line.split(" | ")[2] for line in table[2:]] == ["-", "broken_large", "broken_small", "contamination"]
