import numpy as np
import pytest
import torch

from mvtec_tutorial import backbones
from mvtec_tutorial.models import supervised
from mvtec_tutorial.models.base import AnomalyDetector, NotFittedError
from mvtec_tutorial.models.supervised import ConvNet, SupervisedClassifier

SMALL = 32  # px; enough for ResNet-18 and Lite0, far below the ConvNet's minimum
# ResNet-18 at 32 px is far cheaper than the ConvNet at its minimum of 200 px.
TINY_RESNET = dict(architecture="resnet18", work_size=SMALL, batch_size=8, device="cpu")


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
    assert ConvNet(work_size=1024).fc1.in_features == 32 * 9 * 9
    assert ConvNet(work_size=224).fc1.in_features == 32 * 1 * 1  # 220/4 = 55, 51/5 = 10, 6/5 = 1
    assert ConvNet(work_size=300).fc1.in_features == 32 * 2 * 2  # 296/4 = 74, 70/5 = 14, 10/5 = 2
    assert ConvNet(work_size=200)(torch.zeros(2, 3, 200, 200)).shape == (2, 2)
    with pytest.raises(ValueError, match="at least 200 px, got work_size=199"):
        ConvNet(work_size=199)


# VGG16 (138 M weights) takes seconds to build: it is built and trained once, in the fixture below.
@pytest.mark.parametrize("architecture", [name for name in supervised.ARCHITECTURES if name != "vgg16"])
def test_networks_give_two_logits(architecture):
    side = supervised.CONVNET_MIN_WORK_SIZE if architecture == "convnet" else SMALL
    network, mean, std = supervised.build_network(architecture, work_size=side)
    assert network.eval()(torch.zeros(2, 3, side, side)).shape == (2, 2) and len(mean) == len(std) == 3


@pytest.fixture(scope="module")
def vgg16_one_step():
    """VGG16 after one SGD step on 4 tiny images, and those images."""
    images, labels = separable_batch(n=4)
    model = SupervisedClassifier(architecture="vgg16", work_size=SMALL, epochs=1, batch_size=4, optimizer="sgd",
                                 learning_rate=1e-2, momentum=0.9, device="cpu")
    return model.fit(images, labels, progress=False), images


def test_vgg16_is_torchvisions_configuration_d(vgg16_one_step):
    network = vgg16_one_step[0].network_
    convolutions = [m for m in network.features if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in network.classifier if isinstance(m, torch.nn.Linear)]
    # Simonyan & Zisserman (ICLR 2015), configuration D: 13 3x3 convolutions, 3 linear layers.
    assert [c.out_channels for c in convolutions] == [64, 64, 128, 128, 256, 256, 256] + [512] * 6
    assert {c.kernel_size for c in convolutions} == {(3, 3)}
    assert [(l.in_features, l.out_features) for l in linears] == [(512 * 7 * 7, 4096), (4096, 4096), (4096, 2)]
    assert sum(p.numel() for p in network.parameters()) == 134_268_738  # torchvision's 138,357,544 with 1000 classes


def test_vgg16_trains_one_step_from_chance(vgg16_one_step):
    model, images = vgg16_one_step
    # torchvision draws the last layer from N(0, 0.01) with zero bias: logits start near 0, so the
    # first (and only) batch loss is that of a coin, log 2.
    assert model.history_["loss"] == [pytest.approx(np.log(2), abs=0.05)]
    probabilities = model.predict_proba(images)
    assert probabilities.shape == (4, 2) and np.isfinite(probabilities).all()


def test_vgg16_has_no_offline_weights_and_needs_32_px():
    with pytest.raises(ValueError, match="VGG16 runs from scratch only.*pass pretrained=False"):
        supervised.build_network("vgg16", pretrained=True)
    with pytest.raises(ValueError, match="at least 32 px, got work_size=16"):
        supervised.build_network("vgg16", work_size=16)


def test_no_silent_fallback_when_resnet18_weights_are_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(backbones, "resnet18_weights_path", lambda: tmp_path / "resnet18-f37072fd.pth")
    with pytest.raises(FileNotFoundError, match="ResNet-18 ImageNet weights not found"):
        supervised.build_network("resnet18", pretrained=True)
    with pytest.raises(ValueError, match="ConvNet has no pretrained weights"):
        supervised.build_network("convnet", pretrained=True)
    with pytest.raises(ValueError, match="unknown architecture 'vgg19'"):
        supervised.build_network("vgg19")


# ----------------------------------------------------------------------------- training
def test_training_decreases_the_loss_and_separates_a_tiny_batch():
    images, labels = separable_batch()
    model = SupervisedClassifier(architecture="convnet", work_size=supervised.CONVNET_MIN_WORK_SIZE, epochs=5,
                                 batch_size=8, learning_rate=1e-2, device="cpu").fit(images, labels, progress=False)
    loss = model.history_["loss"]  # one step per epoch: loss[k] is measured before step k
    assert loss[0] == pytest.approx(np.log(2), abs=0.05)  # balanced classes, untrained: chance
    assert loss[-1] < 0.6 * loss[0]
    np.testing.assert_array_equal(model.predict(images), labels)


def test_one_sgd_step_follows_the_gradient_of_the_weighted_cross_entropy():
    images, labels = separable_batch(n=8, side=supervised.CONVNET_MIN_WORK_SIZE)
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1])  # imbalanced: the class weights matter
    learning_rate = 0.1
    model = SupervisedClassifier(architecture="convnet", work_size=supervised.CONVNET_MIN_WORK_SIZE, epochs=1,
                                 batch_size=8, optimizer="sgd", learning_rate=learning_rate, device="cpu")
    model.fit(images, labels, progress=False)
    with torch.random.fork_rng(devices=[]):  # the classifier's seeded initial weights, rebuilt
        torch.manual_seed(model.seed)
        reference, mean, std = supervised.build_network("convnet", work_size=supervised.CONVNET_MIN_WORK_SIZE)
    logits = reference((images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    # The loss written out: log-softmax, then the weighted mean with w_c = n / (2 n_c) = 8/12 and 8/4.
    log_p = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    weights = torch.tensor([8 / 12, 8 / 4])[labels]
    loss = -(weights * log_p[torch.arange(8), labels]).sum() / weights.sum()
    loss.backward()
    assert model.history_["loss"][0] == pytest.approx(loss.item(), rel=1e-5)
    expected = reference.fc.weight - learning_rate * reference.fc.weight.grad  # plain SGD, no momentum
    np.testing.assert_allclose(model.network_.fc.weight.detach(), expected.detach(), rtol=1e-4, atol=1e-6)


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
    frozen = dict(architecture="efficientnet_lite0", pretrained=True, freeze_backbone=True, work_size=SMALL,
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
    with pytest.raises(ValueError, match="both present.*data.labelled_split"):
        SupervisedClassifier().fit(images, np.zeros(4, dtype=int), progress=False)
    with pytest.raises(ValueError, match="got \\(3,\\) labels for 4 images"):
        SupervisedClassifier().fit(images, labels[:3], progress=False)
    with pytest.raises(ValueError, match="class_weight must be"):
        SupervisedClassifier(**TINY_RESNET, class_weight="auto").fit(images, labels, progress=False)
    with pytest.raises(ValueError, match="optimizer must be one of adam, sgd, got 'rmsprop'"):
        SupervisedClassifier(**TINY_RESNET, optimizer="rmsprop").fit(images, labels, progress=False)


# ----------------------------------------------------------------------------- saving (the detectors' format)
def test_saved_classifier_round_trip(tmp_path):
    images, labels = separable_batch()
    model = SupervisedClassifier(**TINY_RESNET, epochs=2, augmentation="default").fit(images, labels, progress=False)
    path = model.save(tmp_path / "resnet18.pt", note="kept")
    restored = SupervisedClassifier.load(path)
    assert restored.get_params() == model.get_params() and restored.metadata_ == {"note": "kept"}
    np.testing.assert_array_equal(restored.predict_proba(images), model.predict_proba(images))
    assert restored.history_["loss"] == pytest.approx(model.history_["loss"])
    with pytest.raises(ValueError, match="holds a SupervisedClassifier, not a AnomalyDetector"):
        AnomalyDetector.load(path)


def test_classifier_before_fit_and_with_its_own_augmentation(tmp_path):
    images, labels = separable_batch()
    with pytest.raises(NotFittedError, match="call fit first"):
        SupervisedClassifier(**TINY_RESNET).save(tmp_path / "never.pt")
    own = SupervisedClassifier(**TINY_RESNET, epochs=1, augmentation=lambda image: image).fit(images, labels,
                                                                                             progress=False)
    with pytest.raises(TypeError, match="cannot save SupervisedClassifier parameters\\['augmentation'\\]"):
        own.save(tmp_path / "own.pt")
    with pytest.raises(ValueError, match="augmentation must be a callable, 'default' or None, got 'flips'"):
        SupervisedClassifier(**TINY_RESNET, augmentation="flips").fit(images, labels, progress=False)


def test_bad_saved_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SupervisedClassifier.load(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt is damaged or not a saved estimator"):
        SupervisedClassifier.load(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save(torch.nn.Linear(2, 1).state_dict(), foreign)
    with pytest.raises(ValueError, match="not written by the package's save"):
        SupervisedClassifier.load(foreign)


def test_fits_through_the_cache_like_the_detectors(tmp_path):
    from mvtec_tutorial import cache

    images, labels = separable_batch()
    first = SupervisedClassifier(**TINY_RESNET, epochs=1)
    computed = cache.fit(first, images, labels, directory=tmp_path, progress=False)
    second = SupervisedClassifier(**TINY_RESNET, epochs=1)
    loaded = cache.fit(second, images, labels, directory=tmp_path, progress=False)
    assert (computed.hit, loaded.hit) == (False, True) and loaded.fit_seconds == computed.fit_seconds
    np.testing.assert_array_equal(second.predict_proba(images), first.predict_proba(images))
    other_labels = cache.fit(SupervisedClassifier(**TINY_RESNET, epochs=1), images, 1 - labels, directory=tmp_path,
                             progress=False)
    assert not other_labels.hit  # the labels are part of the key
