"""Draw the course's architecture diagrams (assets/*.svg) from the package's own networks.

Every shape written on a figure is read from the code: a dummy batch runs through the networks
with forward hooks (the autoencoder, the DCGAN) or through the frozen backbone and the feature
helpers the detectors call (feature dictionary, PaDiM, PatchCore; STFPM's teacher and student,
FastFlow's flows), and the constants (layers, channel counts, coreset ratio, ...) are the
detectors' defaults. ``tests/test_assets.py`` computes :func:`shape_labels` again and checks that
every label is a line of text in the committed SVG, so a network that changes without a redraw
fails the tests.

Redraw with ``make assets`` (or ``python assets/draw.py``, or ``python assets/draw.py stfpm`` for
some figures only); the output is byte-for-byte the same on every run (no date, no creator, fixed
ids). ``python assets/draw.py --png folder`` also writes PNG copies to look at. The figures are
ours, MIT-licensed like the code (assets/LICENSE.md).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse, FancyArrowPatch, FancyBboxPatch, Rectangle
from torch import nn

from mvtec_tutorial import backbones
from mvtec_tutorial.models import (anogan, anogan_networks, autoencoder_networks, fastflow, feature_dictionary, padim,
                                   patchcore, stfpm)

ASSETS = Path(__file__).resolve().parent
FIGURES = ("cae", "anogan", "feature_dictionary", "padim", "patchcore", "stfpm", "fastflow")
#: Side of the images the feature methods are drawn at: the benchmark's image_size.
IMAGE_SIDE = 256
#: Text as text (small, searchable files), fixed ids and no date: a redraw gives identical bytes.
STYLE = {"svg.fonttype": "none", "svg.hashsalt": "mvtec-tutorial-assets", "font.family": "DejaVu Sans",
         "font.size": 8, "path.simplify": False}
COLOURS = {"image": "#d9d9d9", "encode": "#9ecae1", "decode": "#fdae6b", "code": "#a1d99b",
           "feature": "#c6dbef", "model": "#dadaeb", "score": "#fcbba1"}
TIMES = "\u00d7"  # the multiplication sign in every shape


def shape_text(shape) -> str:
    """``(32, 64, 64)`` -> ``'32×64×64'``."""
    return TIMES.join(str(int(size)) for size in shape)


# ----------------------------------------------------------------------------------- shapes
def _operation(layer: nn.Module) -> str:
    kind = "convT" if isinstance(layer, nn.ConvTranspose2d) else "conv"
    kernel, stride = layer.kernel_size[0], layer.stride[0]
    return f"{kind} {kernel}{TIMES}{kernel}/{stride}"


_AFTER = {nn.BatchNorm2d: "BN", nn.LeakyReLU: "LReLU", nn.ReLU: "ReLU", nn.Sigmoid: "sigmoid"}


def layer_table(network: nn.Module, inputs: torch.Tensor) -> list[dict]:
    """One row per convolution of ``network`` run on ``inputs``, in execution order.

    Each row holds ``op`` (e.g. 'conv 4×4/2'), ``after`` (the batch norm and activation that
    follow it, e.g. 'BN, ReLU') and ``shape`` (its output without the batch axis, '32×64×64').
    """
    rows: list[dict] = []

    def hook(module, _, output):
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            rows.append({"op": _operation(module), "after": [], "shape": shape_text(output.shape[1:])})
        elif rows:
            rows[-1]["after"].append(next(name for kind, name in _AFTER.items() if isinstance(module, kind)))

    kinds = (nn.Conv2d, nn.ConvTranspose2d, *_AFTER)
    handles = [module.register_forward_hook(hook) for module in network.modules() if isinstance(module, kinds)]
    try:
        with torch.no_grad():
            network.eval()(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return [{**row, "after": ", ".join(row["after"])} for row in rows]


def _cae() -> dict:
    network = autoencoder_networks.bergmann_network(1, autoencoder_networks.BERGMANN_SIDE)
    side = autoencoder_networks.BERGMANN_SIDE
    inputs = torch.zeros(1, 1, side, side)
    with torch.no_grad():
        code = network.encoder(inputs)
    return {"input": shape_text(inputs.shape[1:]), "encoder": layer_table(network.encoder, inputs),
            "decoder": layer_table(network.decoder, code)}


def _anogan() -> dict:
    detector = anogan.AnoGAN()
    generator = anogan_networks.Generator(latent_dim=detector.latent_dim, work_size=detector.work_size,
                                          base_channels=detector.base_channels)
    discriminator = anogan_networks.Discriminator(work_size=detector.work_size, base_channels=detector.base_channels)
    codes = torch.zeros(2, detector.latent_dim)
    images = generator.eval()(codes)
    return {"code": str(detector.latent_dim), "generator": layer_table(generator, codes),
            "image": shape_text(images.shape[1:]), "discriminator": layer_table(discriminator, images),
            "lambda": f"\u03bb = {detector.feature_weight:g}",
            "search": f"\u2207z L, Adam: {detector.search_steps} steps, step size {detector.search_learning_rate:g}"}


def _feature_dictionary() -> dict:
    detector = feature_dictionary.FeatureDictionary()
    layer = feature_dictionary.DENSE_LAYER[detector.backbone]
    extractor = backbones.FeatureExtractor(detector.backbone, layers=(layer,), device="cpu")
    images = torch.zeros(1, 3, IMAGE_SIDE, IMAGE_SIDE)
    stride, patch = detector.stride, detector.patch_size
    features = feature_dictionary.patch_features(images, extractor, patch_size=patch, stride=stride)
    scores = np.zeros(features.shape[:1] + features.shape[2:], dtype=np.float32)
    maps = feature_dictionary.patch_map(scores, patch_size=patch, stride=stride)
    geometry = {"corner": 2 * patch, "stride": stride, "patch": patch, "feature_stride": extractor.strides[layer]}
    return {"geometry": geometry, "image": shape_text(images.shape[1:]),
            "layer": f"{detector.backbone} {layer} (stride {extractor.strides[layer]})",
            "map": shape_text(extractor(images)[layer].shape[1:]),
            "cells": shape_text((extractor.channels[layer], IMAGE_SIDE // stride, IMAGE_SIDE // stride)),
            "patch": f"{patch}{TIMES}{patch} px patch, stride {stride}",
            "average": f"mean of {patch // stride}{TIMES}{patch // stride} cells",
            "descriptors": shape_text(features.shape[1:]), "grid": shape_text(scores.shape[1:]),
            "vector": f"f_p \u2208 R^{features.shape[1]}", "pca": f"{detector.n_components:.0%} of the variance",
            "atoms": f"k = {detector.n_clusters} atoms", "output": shape_text(maps.shape[1:])}


def _feature_grid(backbone: str, layers, size: int) -> tuple[dict, torch.Tensor]:
    """The chosen layers' maps of a dummy image and the aligned, concatenated grid (as the detectors)."""
    extractor = backbones.FeatureExtractor(backbone, layers=layers, device="cpu")
    maps = extractor(torch.zeros(1, 3, IMAGE_SIDE, IMAGE_SIDE))
    averaged = [backbones.local_average(maps[layer], size) for layer in extractor.layers]
    shapes = {layer: shape_text(maps[layer].shape[1:]) for layer in extractor.layers}
    return shapes, backbones.align_and_concatenate(averaged)


def _padim() -> dict:
    detector = padim.PaDiM()
    layers, stacked = _feature_grid(detector.backbone, padim.PADIM_LAYERS[detector.backbone],
                                    detector.neighborhood_size)
    d, (h, w) = detector.n_features, stacked.shape[-2:]
    return {"image": shape_text((3, IMAGE_SIDE, IMAGE_SIDE)), "layers": layers,
            "stacked": shape_text(stacked.shape[1:]), "embedding": shape_text((d, h, w)),
            "choice": f"{d} of {stacked.shape[1]} channels at random", "mean": f"\u03bc: {shape_text((h * w, d))}",
            "covariance": f"\u03a3\u207b\u00b9: {shape_text((h * w, d, d))}",
            "epsilon": f"\u03a3 + {detector.regularization:g} I", "distances": shape_text((h, w)),
            "output": shape_text((IMAGE_SIDE, IMAGE_SIDE)),
            "sigma": f"Gaussian \u03c3 = {detector.smoothing_sigma:g} px",
            "score": f"score: mean of the top {detector.top_k_fraction:.0%}"}


def _patchcore() -> dict:
    detector = patchcore.PatchCore()
    size = detector.neighborhood_size
    layers, stacked = _feature_grid(detector.backbone, backbones.DEFAULT_LAYERS[detector.backbone], size)
    depth, (h, w) = stacked.shape[1], stacked.shape[-2:]
    return {"image": shape_text((3, IMAGE_SIDE, IMAGE_SIDE)), "layers": layers,
            "average": f"{size}{TIMES}{size} average", "stacked": shape_text(stacked.shape[1:]),
            "bank": f"M: N\u00b7{h * w}{TIMES}{depth}",
            "projection": f"random projection to {detector.projection_dim} dims",
            "coreset": f"greedy coreset: {detector.coreset_ratio:.0%} of M",
            "queries": f"{h * w}{TIMES}{depth} test patches",
            "distances": shape_text((h, w)), "output": shape_text((IMAGE_SIDE, IMAGE_SIDE)),
            "sigma": f"Gaussian \u03c3 = {detector.smoothing_sigma:g} px",
            "score": f"score: mean of the top {detector.top_k_fraction:.0%}"}


def _stfpm() -> dict:
    detector = stfpm.STFPM()
    images = torch.zeros(1, 3, IMAGE_SIDE, IMAGE_SIDE)
    teacher = backbones.FeatureExtractor("efficientnet_lite0", layers=tuple(detector.layers), device="cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(detector.seed)
        student = stfpm.Student(detector.layers).eval()
    with torch.no_grad():
        found = teacher(images)
        features = [found[layer] for layer in teacher.layers]
        students = student(images)
        maps = stfpm.anomaly_maps(features, students, images.shape[-2:])
    assert [f.shape for f in features] == [f.shape for f in students], "student and teacher must agree in shape"
    return {"image": shape_text(images.shape[1:]),
            "layers": {f"{layer} (stride {teacher.strides[layer]})": shape_text(f.shape[1:])
                       for layer, f in zip(teacher.layers, features)},
            "distances": [shape_text(f.shape[2:]) for f in features], "output": shape_text(maps.shape[1:]),
            "schedule": f"SGD, lr {detector.learning_rate:g}, momentum {stfpm.MOMENTUM:g}, "
                        f"{detector.epochs} epochs (paper: {stfpm.PAPER_SCHEDULE['epochs']})"}


def _fastflow() -> dict:
    detector = fastflow.FastFlow()
    images = torch.zeros(1, 3, IMAGE_SIDE, IMAGE_SIDE)
    extractor = backbones.FeatureExtractor("efficientnet_lite0", layers=tuple(detector.layers), device="cpu")
    with torch.no_grad():
        found = extractor(images)
        features = [fastflow.normalize_features(found[layer]) for layer in extractor.layers]
        flow = fastflow.PyramidFlow([f.shape[1] for f in features], n_steps=detector.n_steps,
                                    hidden_ratio=detector.hidden_ratio, clamp=detector.clamp).eval()
        outputs = flow(features)
        maps = fastflow.anomaly_maps(outputs, images.shape[-2:])
    step = flow.levels[0].steps[0]
    channels = features[0].shape[1]
    first, last = step.subnet[0], step.subnet[-1]
    kernels = [f"{s.subnet[0].kernel_size[0]}{TIMES}{s.subnet[0].kernel_size[0]}" for s in flow.levels[0].steps]
    return {"image": shape_text(images.shape[1:]),
            "layers": {f"{layer} (stride {extractor.strides[layer]})": shape_text(f.shape[1:])
                       for layer, f in zip(extractor.layers, features)},
            "z": [shape_text(z.shape[1:]) for z, _ in outputs], "output": shape_text(maps.shape[1:]),
            "steps": f"{detector.n_steps} coupling steps per level",
            "kernels": "subnet kernels: " + ", ".join(kernels[:4]) + ", ...",
            "split": f"x_a: {step.split} ch, x_b: {channels - step.split} ch (level 1, C = {channels})",
            "subnet": f"conv {first.kernel_size[0]}{TIMES}{first.kernel_size[0]}: {first.in_channels}\u2192"
                      f"{first.out_channels}, ReLU, conv: \u2192{last.out_channels}",
            "clamp": f"s = {detector.clamp:g} tanh(s / {detector.clamp:g})"}


def figure_data() -> dict[str, dict]:
    """What each figure shows, computed from the package: shapes, layers and defaults."""
    return {"cae": _cae(), "anogan": _anogan(), "feature_dictionary": _feature_dictionary(),
            "padim": _padim(), "patchcore": _patchcore(), "stfpm": _stfpm(), "fastflow": _fastflow()}


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, int):  # geometry the drawing uses, not text
        return []
    items = value.values() if isinstance(value, dict) else value
    return [text for item in items for text in _strings(item)]


def shape_labels(data: dict[str, dict] | None = None) -> dict[str, list[str]]:
    """Every text a figure must show, per figure: each is one line of text in its SVG."""
    data = figure_data() if data is None else data
    return {name: _strings(values) for name, values in data.items()}


# ----------------------------------------------------------------------------------- drawing
def _canvas(width: float, height: float, title: str):
    """A figure whose data units are inches, so sizes below read as inches on the page."""
    figure = Figure(figsize=(width, height))
    ax = figure.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    ax.text(0.15, height - 0.2, title, fontsize=10, fontweight="bold", va="top")
    return figure, ax


def _side_height(side: int, largest: int) -> float:
    return 0.3 + 1.2 * math.sqrt(side / largest)


def _channel_width(channels: int) -> float:
    return 0.06 + 0.06 * math.log2(channels)


def _tensor(ax, x: float, y: float, shape: str, largest: int, colour: str, lines=(), *, right: bool = False) -> tuple:
    """A feature map as a bar: height grows with its side, width with its channels; text below it
    (or to its right)."""
    sizes = [int(size) for size in shape.split(TIMES)]
    channels, side = (sizes[0], sizes[-1]) if len(sizes) == 3 else (1, sizes[-1])
    width, height = _channel_width(channels), _side_height(side, largest)
    ax.add_patch(Rectangle((x - width / 2, y - height / 2), width, height, facecolor=colour, edgecolor="#333333",
                           lw=0.6))
    texts = [shape, *lines]
    for i, text in enumerate(texts):
        position = ((x + width / 2 + 0.08, y + (len(texts) - 1) * 0.07 - i * 0.14) if right
                    else (x, y - height / 2 - 0.06 - i * 0.14))
        ax.text(*position, text, ha="left" if right else "center", va="center" if right else "top",
                fontweight="bold" if i == 0 else "normal", color="#222222" if i == 0 else "#555555",
                fontsize=7.5 if i == 0 else 7)
    return x - width / 2, y - height / 2, x + width / 2, y + height / 2


def _box(ax, x: float, y: float, lines, colour: str, *, width: float = 1.3, height: float | None = None) -> tuple:
    """A rounded box centred on (x, y) holding lines of text; returns (left, bottom, right, top)."""
    lines = [lines] if isinstance(lines, str) else list(lines)
    height = height or 0.12 + 0.15 * len(lines)
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, facecolor=colour, edgecolor="#333333",
                                lw=0.6, boxstyle="round,pad=0.02,rounding_size=0.06"))
    for i, line in enumerate(lines):
        ax.text(x, y + (len(lines) - 1) * 0.075 - i * 0.15, line, ha="center", va="center",
                fontweight="bold" if i == 0 else "normal", fontsize=7.5 if i == 0 else 7)
    return x - width / 2, y - height / 2, x + width / 2, y + height / 2


def _arrow(ax, start, end, label: str = "", *, colour: str = "#333333", offset=(0.0, 0.08), rad: float = 0.0,
           style: str = "-") -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=8, lw=0.8, color=colour,
                                 connectionstyle=f"arc3,rad={rad}", linestyle=style, shrinkA=1, shrinkB=1))
    if label:
        ax.text((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1], label, ha="center",
                va="bottom" if offset[1] >= 0 else "top", fontsize=7, color=colour)


def _row(ax, x0: float, step: float, y: float, rows, first: str, largest: int, colour: str, *,
         first_colour=COLOURS["image"], last_colour=None) -> list[tuple]:
    """A network as a row of bars: the input, then every layer's output, joined by arrows."""
    shapes = [(first, (), first_colour)] + [
        (row["shape"], (row["op"], row["after"]), last_colour if last_colour and i == len(rows) - 1 else colour)
        for i, row in enumerate(rows)]
    boxes = []
    for i, (shape, lines, fill) in enumerate(shapes):
        boxes.append(_tensor(ax, x0 + i * step, y, shape, largest, fill, lines))
        if i:
            _arrow(ax, (boxes[-2][2], y), (boxes[-1][0], y))
    return boxes


def draw_cae(data: dict) -> Figure:
    largest = int(data["input"].split(TIMES)[-1])
    figure, ax = _canvas(10.3, 5.4, "Convolutional autoencoder (Bergmann et al. 2019, Table 1): "
                                    f"bergmann_network(1, {largest}), the SSIM variant")
    n, step, x0 = len(data["encoder"]), 1.05, 0.55
    top = _row(ax, x0, step, 4.0, data["encoder"][:-1], data["input"], largest, COLOURS["encode"])
    code = data["encoder"][-1]
    centre = x0 + (n - 1) * step + 0.45
    box = _tensor(ax, centre, 2.8, code["shape"], largest, COLOURS["code"], (code["op"], "code z"), right=True)
    _arrow(ax, (top[-1][2], 4.0), ((box[0] + box[2]) / 2, box[3]), rad=-0.3)
    # The decoder runs right to left under the encoder: each layer sits below the one it mirrors.
    bottom = []
    for i, row in enumerate(data["decoder"]):
        x = x0 + (n - 1 - i) * step
        fill = COLOURS["image"] if i == len(data["decoder"]) - 1 else COLOURS["decode"]
        bottom.append(_tensor(ax, x, 1.6, row["shape"], largest, fill, (row["op"], row["after"])))
        start = ((box[0] + box[2]) / 2, box[1]) if i == 0 else (bottom[-2][0], 1.6)
        _arrow(ax, start, (bottom[-1][2], 1.6) if i else ((bottom[-1][0] + bottom[-1][2]) / 2, bottom[-1][3]))
    ax.text(0.15, 4.95, "encoder E: stride-2 convolutions halve the side; the last, unpadded one "
                        f"({code['op']}) gives the code",
            fontsize=7.5, color="#555555")
    ax.text(0.15, 0.05, "decoder D: the mirror image, transposed convolutions; shapes are channels \u00d7 height "
                        "\u00d7 width, bar height ~ side, width ~ channels. L2 variant: 3 input and output channels.",
            fontsize=7.5, color="#555555")
    return figure


def draw_anogan(data: dict) -> Figure:
    figure, ax = _canvas(11, 7.0, "DCGAN of AnoGAN (anogan_networks, AnoGAN's defaults) and the latent search")
    largest = int(data["image"].split(TIMES)[-1])
    ax.text(0.15, 6.45, "generator G", fontsize=8.5, fontweight="bold")
    generator = _row(ax, 1.2, 1.25, 5.65, data["generator"], data["code"], largest, COLOURS["decode"],
                     first_colour=COLOURS["code"], last_colour=COLOURS["image"])
    ax.text(generator[0][0] - 0.05, generator[0][3] + 0.06, "code z", fontsize=7, ha="left", va="bottom")
    ax.text(0.15, 4.1, "discriminator D (spectral norm)", fontsize=8.5, fontweight="bold")
    discriminator = _row(ax, 1.2, 1.25, 3.25, data["discriminator"], data["image"], largest, COLOURS["encode"],
                         last_colour=COLOURS["score"])
    ax.text(discriminator[-2][2] + 0.05, discriminator[-2][3] + 0.04, "features f", fontsize=7, ha="left", va="bottom")
    ax.text(discriminator[-1][2] + 0.05, discriminator[-1][3] + 0.04, "real / fake", fontsize=7, ha="left", va="bottom")
    # The search: fixed G and D, gradient steps on the code only.
    ax.text(0.15, 1.95, "latent search for a test image x (G and D fixed)", fontsize=8.5, fontweight="bold")
    code = _box(ax, 1.0, 1.2, ["z\u2080 ~ N(0, I)", f"{data['code']} numbers"], COLOURS["code"], width=1.3)
    drawn = _box(ax, 3.1, 1.2, ["G(z)", data["image"]], COLOURS["image"], width=1.3)
    test = _box(ax, 3.1, 0.35, ["test image x", data["image"]], COLOURS["image"], width=1.3)
    residual = _box(ax, 5.5, 1.2, ["residual loss", "L_R = mean |x \u2212 G(z)|"], COLOURS["score"], width=1.9)
    features = _box(ax, 5.5, 0.35, ["discrimination loss", "L_D = mean |f(x) \u2212 f(G(z))|"], COLOURS["score"],
                    width=2.1)
    loss = _box(ax, 8.4, 0.8, ["L(z) = (1 \u2212 \u03bb) L_R + \u03bb L_D", data["lambda"]], COLOURS["model"],
                width=2.3)
    _arrow(ax, (code[2], 1.2), (drawn[0], 1.2), "G")
    _arrow(ax, (drawn[2], 1.2), (residual[0], 1.2))
    _arrow(ax, (test[2], 0.35), (features[0], 0.35), "D")
    _arrow(ax, (test[2], 0.45), (residual[0], 1.1))
    _arrow(ax, (drawn[2], 1.1), (features[0], 0.45))
    _arrow(ax, (residual[2], 1.2), (loss[0], 0.9))
    _arrow(ax, (features[2], 0.35), (loss[0], 0.7))
    _arrow(ax, (loss[0] + 0.6, loss[3]), (code[0] + 0.5, code[3]), data["search"],
           colour="#b2182b", rad=0.18, offset=(0.0, 0.4), style="--")
    ax.text(10.85, 0.15, "score A(x) = L(z*), map |x \u2212 G(z*)|; f-AnoGAN replaces the search by an encoder",
            fontsize=7, ha="right", color="#555555")
    return figure


def _grid_panel(ax, left: float, bottom: float, size: float, n_cells: int, colour: str, patch: int = 0) -> None:
    """A square split into ``n_cells`` x ``n_cells`` cells; ``patch`` > 0 outlines the first patch of
    ``patch`` x ``patch`` cells (solid) and the next one, one cell to the right (dashed)."""
    ax.add_patch(Rectangle((left, bottom), size, size, facecolor=colour, edgecolor="#333333", lw=0.6))
    cell = size / n_cells
    for i in range(1, n_cells):
        ax.plot([left + i * cell] * 2, [bottom, bottom + size], color="#777777", lw=0.3)
        ax.plot([left, left + size], [bottom + i * cell] * 2, color="#777777", lw=0.3)
    for shift, style in ((0, "-"), (1, "--")) if patch else ():
        ax.add_patch(Rectangle((left + shift * cell, bottom + size - patch * cell), patch * cell, patch * cell,
                               facecolor="none", edgecolor="#b2182b", lw=1.2, linestyle=style))


def _caption(ax, x: float, top: float, lines) -> None:
    for i, line in enumerate(lines):
        ax.text(x, top - i * 0.14, line, ha="center", va="top", fontsize=7.5 if i == 0 else 7,
                fontweight="bold" if i == 0 else "normal", color="#222222" if i == 0 else "#555555")


def draw_feature_dictionary(data: dict) -> Figure:
    figure, ax = _canvas(11, 4.3, "CNN feature dictionary (Napoletano et al. 2018): FeatureDictionary's defaults, "
                                  f"a {IMAGE_SIDE}-pixel image")
    geometry, size, bottom, y = data["geometry"], 1.2, 2.0, 2.6
    corner, stride = geometry["corner"], geometry["stride"]
    ax.text(2.8, 3.45, f"each square: the top-left {corner}{TIMES}{corner} pixels of the image", ha="center",
            fontsize=7.5, color="#555555")
    panels = [(0.3, corner // stride, COLOURS["image"], geometry["patch"] // stride,
               [data["image"], "image", data["patch"]]),
              (2.2, corner // geometry["feature_stride"], COLOURS["feature"], 0,
               [data["map"], "feature map", data["layer"]]),
              (4.1, corner // stride, COLOURS["feature"], geometry["patch"] // stride,
               [data["cells"], "resampled bilinearly:", f"one value per {stride} px cell"])]
    for left, n_cells, colour, patch, lines in panels:
        _grid_panel(ax, left, bottom, size, n_cells, colour, patch)
        _caption(ax, left + size / 2, bottom - 0.06, lines)
    _arrow(ax, (1.52, y), (2.18, y), "frozen CNN")
    _arrow(ax, (3.42, y), (4.08, y))
    vector = _box(ax, 7.1, y, ["patch descriptor f_p", data["vector"]], COLOURS["feature"], width=1.4)
    _arrow(ax, (5.32, y), (vector[0], y), data["average"])
    _caption(ax, 7.1, vector[1] - 0.08, [data["descriptors"], "one per patch position"])
    fit = _box(ax, 9.9, y, ["fit: L1 norm, PCA", data["pca"], "then k-means:", data["atoms"]], COLOURS["model"],
               width=1.5)
    _arrow(ax, (vector[2], y), (fit[0], y), "training patches")
    score = _box(ax, 9.9, 0.6, ["patch score s_p", "distance to the nearest", "atom, per position", data["grid"]],
                 COLOURS["score"], width=1.5)
    _arrow(ax, (9.9, fit[1]), (9.9, score[3]))
    _arrow(ax, (7.1, vector[1] - 0.4), (score[0], 0.75), "test patches", offset=(0.3, 0.05))
    output = _box(ax, 5.45, 0.6, ["anomaly map", data["output"], "each pixel: mean over", "the patches covering it"],
                  COLOURS["score"], width=1.8)
    _arrow(ax, (score[0], 0.5), (output[2], 0.5))
    return figure


def _gaussian_grid(ax, left: float, bottom: float, side: float, n: int) -> None:
    """A few grid positions, each with its own Gaussian: an ellipse of another size and angle."""
    rng = np.random.default_rng(0)
    cell = side / n
    for row in range(n):
        for column in range(n):
            x, y = left + (column + 0.5) * cell, bottom + (row + 0.5) * cell
            ax.add_patch(Rectangle((x - cell / 2, y - cell / 2), cell, cell, facecolor="white", edgecolor="#999999",
                                   lw=0.4))
            width, height = cell * rng.uniform(0.45, 0.85), cell * rng.uniform(0.2, 0.5)
            ax.add_patch(Ellipse((x, y), width, height, angle=float(rng.uniform(0, 180)), facecolor=COLOURS["model"],
                                 edgecolor="#54278f", lw=0.5))


def draw_padim(data: dict) -> Figure:
    figure, ax = _canvas(11, 4.4, "PaDiM (Defard et al. 2020): PaDiM's defaults, a "
                                  f"{IMAGE_SIDE}-pixel image; one Gaussian per grid position")
    largest = IMAGE_SIDE
    image = _tensor(ax, 0.7, 2.8, data["image"], largest, COLOURS["image"], ("image",))
    bars = []
    for i, (layer, shape) in enumerate(data["layers"].items()):
        bars.append(_box(ax, 2.6, 3.5 - i * 0.7, [layer, shape], COLOURS["feature"], width=1.3))
        _arrow(ax, (image[2], 2.8), (bars[-1][0], 3.5 - i * 0.7))
    ax.text(2.6, 3.85, "frozen CNN layers", ha="center", fontsize=7, color="#555555")
    stacked = _tensor(ax, 4.6, 2.8, data["stacked"], largest, COLOURS["feature"], ("upsampled, stacked",))
    for bar in bars:
        _arrow(ax, (bar[2], (bar[1] + bar[3]) / 2), (stacked[0], 2.8))
    embedding = _tensor(ax, 6.5, 2.8, data["embedding"], largest, COLOURS["feature"],
                        ("embeddings x_ij", data["choice"]))
    _arrow(ax, (stacked[2], 2.8), (embedding[0], 2.8))
    _gaussian_grid(ax, 7.8, 2.15, 1.3, 4)
    ax.text(8.45, 3.55, "fit: at every position (i, j)", ha="center", fontsize=7.5, fontweight="bold")
    ax.text(8.45, 2.0, "N(\u03bc_ij, \u03a3_ij) of the normal x_ij", ha="center", va="top", fontsize=7)
    model = _box(ax, 10.1, 2.8, ["model", data["mean"], data["covariance"], data["epsilon"]], COLOURS["model"],
                 width=1.5)
    _arrow(ax, (embedding[2], 2.8), (7.78, 2.8))
    _arrow(ax, (9.12, 2.8), (model[0], 2.8))
    distance = _box(ax, 8.45, 0.75, ["Mahalanobis distance", "M(x_ij) per position", data["distances"]],
                    COLOURS["score"], width=1.8)
    _arrow(ax, (6.5, embedding[1] - 0.55), (distance[0], 0.75), "test image: same path", offset=(0.75, 0.0))
    _arrow(ax, (10.1, model[1]), (distance[2], 0.9))
    output = _box(ax, 5.2, 0.75, ["anomaly map", data["output"], data["sigma"], data["score"]], COLOURS["score"],
                  width=1.9)
    _arrow(ax, (distance[0], 0.6), (output[2], 0.6), "upsample, smooth", offset=(0.0, -0.08))
    return figure


def draw_patchcore(data: dict) -> Figure:
    figure, ax = _canvas(11, 4.6, "PatchCore (Roth et al. 2022): PatchCore's defaults, a "
                                  f"{IMAGE_SIDE}-pixel image; coreset and nearest-neighbour score")
    largest = IMAGE_SIDE
    image = _tensor(ax, 0.7, 3.0, data["image"], largest, COLOURS["image"], ("image",))
    bars = []
    for i, (layer, shape) in enumerate(data["layers"].items()):
        bars.append(_box(ax, 2.5, 3.4 - i * 0.75, [layer, shape], COLOURS["feature"], width=1.3))
        _arrow(ax, (image[2], 3.0), (bars[-1][0], 3.4 - i * 0.75))
    ax.text(2.5, 3.9, "frozen CNN layers", ha="center", fontsize=7, color="#555555")
    stacked = _tensor(ax, 4.4, 3.0, data["stacked"], largest, COLOURS["feature"],
                      ("patch features", data["average"], "upsampled, stacked"))
    for bar in bars:
        _arrow(ax, (bar[2], (bar[1] + bar[3]) / 2), (stacked[0], 3.0))
    bank = _box(ax, 6.3, 3.0, ["memory bank", data["bank"], "all N training images"], COLOURS["model"], width=1.5)
    _arrow(ax, (stacked[2], 3.0), (bank[0], 3.0))
    coreset = _box(ax, 6.3, 1.75, ["coreset M_C", data["coreset"], data["projection"]], COLOURS["model"], width=2.0)
    _arrow(ax, (6.3, bank[1]), (6.3, coreset[3]))
    # The greedy coreset of a toy bank, chosen by the package's own function.
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(0, 1, (150, 2)), rng.normal(0, 0.3, (12, 2)) + (4.0, 3.0)])
    chosen = patchcore.greedy_coreset(torch.tensor(points, dtype=torch.float32), 12, projection_dim=None).numpy()
    inset = figure.add_axes((0.745, 0.3, 0.23, 0.5))
    inset.scatter(*points.T, s=4, color="#bdbdbd", label="bank M", linewidths=0)
    inset.scatter(*points[chosen].T, s=14, color="#54278f", label="coreset M_C", linewidths=0)
    test = np.array([2.2, 1.6])
    nearest = chosen[np.argmin(np.linalg.norm(points[chosen] - test, axis=1))]
    inset.scatter(*test, s=22, marker="x", color="#b2182b", label="test patch")
    inset.plot(*np.stack([test, points[nearest]]).T, color="#b2182b", lw=0.8)
    inset.set_xticks([])
    inset.set_yticks([])
    inset.set_title("greedy coreset of a 2-D toy bank", fontsize=7.5)
    inset.legend(fontsize=6.5, loc="lower right", frameon=False)
    _arrow(ax, (coreset[2], 1.75), (8.15, 1.75))
    distance = _box(ax, 6.3, 0.5, ["nearest-neighbour distance", data["queries"], data["distances"]],
                    COLOURS["score"], width=1.9)
    _arrow(ax, (4.4, stacked[1] - 0.6), (distance[0], 0.6), "test image: same path", offset=(-0.85, 0.0))
    _arrow(ax, (6.3, coreset[1]), (6.3, distance[3]))
    output = _box(ax, 2.2, 0.5, ["anomaly map", data["output"], data["sigma"], data["score"]], COLOURS["score"],
                  width=1.9)
    _arrow(ax, (distance[0], 0.45), (output[2], 0.45), "upsample, smooth", offset=(0.0, -0.08))
    return figure


def draw_stfpm(data: dict) -> Figure:
    figure, ax = _canvas(11, 4.6, "STFPM (Wang et al. 2021): STFPM's defaults, a "
                                  f"{IMAGE_SIDE}-pixel image; a student learns to imitate its teacher's pyramid")
    largest = IMAGE_SIDE
    image = _tensor(ax, 0.7, 2.3, data["image"], largest, COLOURS["image"], ("image",))
    levels = list(data["layers"].items())
    teacher, student = [], []
    for i, (layer, shape) in enumerate(levels):
        teacher.append(_box(ax, 2.7, 3.75 - i * 0.5, [layer, shape], COLOURS["feature"], width=1.5))
        student.append(_box(ax, 2.7, 1.75 - i * 0.5, [layer, shape], COLOURS["encode"], width=1.5))
        _arrow(ax, (image[2], 2.4), (teacher[-1][0], 3.75 - i * 0.5))
        _arrow(ax, (image[2], 2.2), (student[-1][0], 1.75 - i * 0.5))
    ax.text(2.7, 4.1, "teacher: pretrained Lite0, frozen", ha="center", fontsize=7, color="#555555")
    ax.text(2.7, 0.28, "student: the same network, random weights", ha="center", va="top", fontsize=7,
            color="#555555")
    distances = []
    for i, shape in enumerate(data["distances"]):
        y = 3.05 - i * 0.7
        distances.append(_box(ax, 5.3, y, [f"level {i + 1}: d_{i + 1}", shape], COLOURS["score"], width=1.5))
        _arrow(ax, (teacher[i][2], 3.75 - i * 0.5), (distances[-1][0], y + 0.08))
        _arrow(ax, (student[i][2], 1.75 - i * 0.5), (distances[-1][0], y - 0.08))
    ax.text(5.3, 3.45, "d = \u00bd \u2016t/\u2016t\u2016 \u2212 s/\u2016s\u2016\u2016\u00b2 per position",
            ha="center", fontsize=7, color="#555555")
    loss = _box(ax, 8.5, 3.3, ["training: distillation loss", "L = \u03a3_l mean_ij d_l(i, j)", data["schedule"],
                               "only the student learns"], COLOURS["model"], width=3.0)
    output = _box(ax, 8.5, 1.3, ["anomaly map", "\u03a0_l upsample(d_l)", data["output"],
                                 "score: its maximum"], COLOURS["score"], width=2.2)
    for box in distances:
        middle = (box[1] + box[3]) / 2
        _arrow(ax, (box[2], middle), (loss[0], 3.3), colour="#777777")
        _arrow(ax, (box[2], middle), (output[0], 1.3))
    ax.text(8.5, 2.35, "test image: a product is high only where every level disagrees", ha="center",
            fontsize=7, color="#555555")
    return figure


def draw_fastflow(data: dict) -> Figure:
    figure, ax = _canvas(11, 5.0, "FastFlow (Yu et al. 2021): FastFlow's defaults, a "
                                  f"{IMAGE_SIDE}-pixel image; a normalizing flow per pyramid level")
    largest = IMAGE_SIDE
    image = _tensor(ax, 0.6, 3.65, data["image"], largest, COLOURS["image"], ("image",))
    ys = [4.2 - i * 0.55 for i in range(len(data["layers"]))]
    ax.text(2.4, 4.5, "frozen Lite0, then LayerNorm", ha="center", fontsize=7, color="#555555")
    ax.text(4.55, 4.5, data["steps"], ha="center", fontsize=7, color="#555555")
    ax.text(4.55, ys[-1] - 0.3, data["kernels"], ha="center", va="top", fontsize=7, color="#555555")
    zs = []
    for i, ((layer, shape), z, y) in enumerate(zip(data["layers"].items(), data["z"], ys)):
        feature = _box(ax, 2.4, y, [layer, shape], COLOURS["feature"], width=1.5)
        flow = _box(ax, 4.55, y, f"flow f_{i + 1}", COLOURS["model"], width=1.1, height=0.3)
        zs.append(_box(ax, 6.6, y, [f"z_{i + 1} ~ N(0, I)", z], COLOURS["code"], width=1.5))
        _arrow(ax, (image[2], 3.65), (feature[0], y))
        _arrow(ax, (feature[2], y), (flow[0], y))
        _arrow(ax, (flow[2], y), (zs[-1][0], y))
    loss = _box(ax, 9.4, 4.15, ["training loss", "\u03a3_l \u00bd\u2016z_l\u2016\u00b2 \u2212 log |det J_l|"],
                COLOURS["model"], width=2.3)
    output = _box(ax, 9.4, 3.15, ["anomaly map", "per level \u2212exp(\u2212\u00bd mean_c z\u00b2),",
                                  "upsampled, averaged", data["output"]], COLOURS["score"], width=2.3)
    for box in zs:
        middle = (box[1] + box[3]) / 2
        _arrow(ax, (box[2], middle), (loss[0], 4.15), colour="#777777")
        _arrow(ax, (box[2], middle), (output[0], 3.15))
    # One coupling step, drawn with the first level's numbers.
    ax.plot([0.15, 10.85], [2.45, 2.45], color="#bbbbbb", lw=0.6)
    ax.text(0.15, 2.3, "one coupling step of f_1 (affine coupling, then a fixed channel permutation)",
            fontsize=8.5, fontweight="bold", va="top")
    x = _box(ax, 0.9, 1.15, ["x", data["z"][0]], COLOURS["feature"], width=1.1)
    x_a = _box(ax, 2.9, 1.7, "x_a (first half)", COLOURS["feature"], width=1.4, height=0.3)
    x_b = _box(ax, 2.9, 0.6, "x_b (second half)", COLOURS["feature"], width=1.4, height=0.3)
    _arrow(ax, (x[2], 1.2), (x_a[0], 1.7), "split")
    _arrow(ax, (x[2], 1.1), (x_b[0], 0.6))
    ax.text(2.9, 1.15, data["split"], ha="center", va="center", fontsize=7, color="#555555")
    subnet = _box(ax, 5.1, 1.7, ["subnet", data["subnet"]], COLOURS["encode"], width=2.2)
    _arrow(ax, (x_a[2], 1.7), (subnet[0], 1.7))
    scale = _box(ax, 7.5, 1.7, ["log-scale s, shift t", data["clamp"]], COLOURS["code"], width=1.7)
    _arrow(ax, (subnet[2], 1.7), (scale[0], 1.7))
    affine = _box(ax, 7.5, 0.6, ["y_b = x_b \u00b7 exp(s) + t"], COLOURS["decode"], width=1.7)
    _arrow(ax, (x_b[2], 0.6), (affine[0], 0.6))
    _arrow(ax, (7.5, scale[1]), (7.5, affine[3]))
    log_det = _box(ax, 9.8, 1.7, ["log-det", "log |det J| = \u03a3 s"], COLOURS["model"], width=1.6)
    _arrow(ax, (scale[2], 1.7), (log_det[0], 1.7))
    y = _box(ax, 9.8, 0.6, ["y = permute(x_a, y_b)"], COLOURS["feature"], width=1.6)
    _arrow(ax, (affine[2], 0.6), (y[0], 0.6))
    ax.text(5.1, 0.2, "x_a passes unchanged, so the step inverts exactly: x_b = (y_b \u2212 t) \u00b7 exp(\u2212s)",
            ha="center", fontsize=7, color="#555555")
    return figure


DRAW = {"cae": draw_cae, "anogan": draw_anogan, "feature_dictionary": draw_feature_dictionary,
        "padim": draw_padim, "patchcore": draw_patchcore, "stfpm": draw_stfpm, "fastflow": draw_fastflow}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", choices=[[], *FIGURES], metavar="NAME",
                        help=f"the figures to draw (default: all of {', '.join(FIGURES)})")
    parser.add_argument("--png", type=Path, help="also write PNG copies into this folder (to look at)")
    arguments = parser.parse_args(argv)
    data = figure_data()
    for name in arguments.names or FIGURES:
        with matplotlib.rc_context(STYLE):
            figure = DRAW[name](data[name])
            figure.savefig(ASSETS / f"{name}.svg", format="svg", metadata={"Date": None, "Creator": None})
            if arguments.png:
                arguments.png.mkdir(parents=True, exist_ok=True)
                figure.savefig(arguments.png / f"{name}.png", dpi=110)
        print(f"assets/{name}.svg: {(ASSETS / f'{name}.svg').stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
