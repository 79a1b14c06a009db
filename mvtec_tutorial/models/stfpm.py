"""STFPM (Wang et al., BMVC 2021): a student network learns to imitate a pretrained teacher on normal images.

The teacher is a frozen ImageNet network; the student has the same architecture, starts from
random weights and is trained, on defect-free images only, to reproduce the teacher's features at
several levels of the feature pyramid. On normal patches it has learnt to agree with the teacher;
on a defect it never saw, the two disagree, and the disagreement is the anomaly map.

Why not the other students and teachers: Reverse Distillation (Deng and Li, CVPR 2022) trains a
decoder "student" from a one-class bottleneck of a Wide ResNet-50 teacher; it is stronger on
anomalib's tables but its teacher/bottleneck pair is three times the size of a pyramid student, too
much to train on two CPU cores within five minutes. EfficientAD (Batzner et al., WACV 2024)
needs its own teacher, a small patch description network distilled from a Wide ResNet-50 on
ImageNet; no such weights can be had offline (the package ships only EfficientNet-Lite0's), and
distilling one ourselves needs ImageNet. STFPM needs only the pretrained backbone we already have.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mvtec_tutorial import training
from mvtec_tutorial.backbones import (LAYERS, FeatureExtractor, _check_choice, _stages, efficientnet_lite0,
                                      input_normalization)
from mvtec_tutorial.metrics import check_top_k_fraction
from mvtec_tutorial.models.base import AnomalyDetector, same_for_kinds

#: The pyramid: the paper's conv2_x, conv3_x, conv4_x of ResNet-18 (strides 4, 8, 16); on Lite0 the
#: blocks that end the stages of the same strides (those PaDiM uses).
STFPM_LAYERS = ("block2", "block4", "block10")
#: The paper's training (Wang et al., Sec. 4.1): SGD, learning rate 0.4, momentum 0.9, weight
#: decay 1e-4, 100 epochs, batch 32, images of 256 x 256.
PAPER_SCHEDULE = dict(epochs=100, batch_size=32, learning_rate=0.4)
MOMENTUM, WEIGHT_DECAY = 0.9, 1e-4
#: The course's CPU schedule: the paper's optimiser and images, 4 epochs instead of 100 so a fit takes
#: about five minutes on two CPU cores (real bottle, 167 training images at 256 px: an epoch of the
#: student took 60 to 95 s under a load of 4 to 6; chosen by that time alone, before any test metric).
CPU_SCHEDULE = dict(epochs=4, batch_size=32, learning_rate=0.4)
#: A smoke test for tests and the fast notebooks: numbers mean nothing.
QUICK_SCHEDULE = dict(epochs=1, batch_size=8, learning_rate=0.4)


def normalized_distance(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """Half the squared distance between channel-wise L2-normalised features, per position.

    Parameters
    ----------
    teacher, student : torch.Tensor of shape (N, C, h, w)

    Returns
    -------
    torch.Tensor of shape (N, h, w)
        ``1/2 || F_t / ||F_t|| - F_s / ||F_s|| ||^2`` at every position (Wang et al., eq. 1 and 3);
        between 0 (same direction) and 2 (opposite).

    Examples
    --------
    >>> normalized_distance(torch.tensor([[[[3.0]], [[4.0]]]]), torch.tensor([[[[-6.0]], [[-8.0]]]]))
    tensor([[[2.]]])
    """
    return 0.5 * (F.normalize(teacher, dim=1) - F.normalize(student, dim=1)).pow(2).sum(dim=1)


def distillation_loss(teacher: Iterable[torch.Tensor], student: Iterable[torch.Tensor]) -> torch.Tensor:
    """STFPM's training loss: the normalised distance averaged over positions, summed over levels.

    Parameters
    ----------
    teacher, student : sequences of torch.Tensor of shape (N, C_l, h_l, w_l)
        The two networks' features at each pyramid level ``l``.

    Returns
    -------
    torch.Tensor, scalar
        ``sum_l 1/(h_l w_l) sum_ij 1/2 ||F_t^l(ij)/||F_t^l(ij)|| - F_s^l(ij)/||F_s^l(ij)||||^2``,
        averaged over the images (Wang et al., eq. 2 and 3, with equal level weights).
    """
    return sum(normalized_distance(t, s).mean() for t, s in zip(teacher, student, strict=True))


def anomaly_maps(teacher: Iterable[torch.Tensor], student: Iterable[torch.Tensor],
                 image_size: tuple[int, int]) -> torch.Tensor:
    """STFPM's anomaly map: per-level distances upsampled to the image and multiplied.

    Parameters
    ----------
    teacher, student : sequences of torch.Tensor of shape (N, C_l, h_l, w_l)
    image_size : (H, W)

    Returns
    -------
    torch.Tensor of shape (N, H, W)
        ``prod_l upsample(1/2 ||F_t^l/||F_t^l|| - F_s^l/||F_s^l||||^2)`` (Wang et al., eq. 4 and 5;
        bilinear upsampling). A product is high only where every level disagrees.
    """
    result = None
    for t, s in zip(teacher, student, strict=True):
        level = F.interpolate(normalized_distance(t, s)[:, None], size=tuple(image_size), mode="bilinear",
                              align_corners=False)[:, 0]
        result = level if result is None else result * level
    return result


def _recompute_batch_norm_statistics(network: nn.Module, images: torch.Tensor, *, batch_size: int,
                                     device: torch.device) -> None:
    """Set every batch norm's running mean and variance to their average over ``images`` (no weight changes).

    The Lite0 batch norms keep the TensorFlow checkpoint's momentum 0.01 (``backbones._LITE0_BATCH_NORM``),
    made to fine-tune pretrained statistics: from random weights, in a few epochs at a high learning
    rate, the running statistics lag far behind the weights, and the student would predict with other
    statistics than it trained with. One pass over the training images with the final weights gives
    the statistics it has now ("precise batch norm").
    """
    norms = [module for module in network.modules() if isinstance(module, nn.BatchNorm2d)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches of this pass
    network.train()
    with torch.no_grad():
        for batch in images.split(batch_size):
            network(batch.to(device).contiguous(memory_format=torch.channels_last))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    network.eval()


class Student(nn.Module):
    """The student: EfficientNet-Lite0 with random weights, cut after the deepest pyramid level.

    Parameters
    ----------
    layers : sequence of str
        Lite0 layer names (:data:`mvtec_tutorial.backbones.LAYERS`) whose maps it returns.

    Notes
    -----
    Inputs are normalised as the teacher's (:func:`mvtec_tutorial.backbones.input_normalization`),
    so both see the same numbers. The random initial weights come from torch's global generator:
    seed it (the detector does, inside a forked state) for a reproducible student.
    """

    def __init__(self, layers: Iterable[str]) -> None:
        super().__init__()
        self.layers = tuple(layers)
        self.config = dict(layers=self.layers)  # what loading needs to rebuild it
        for layer in self.layers:
            _check_choice("efficientnet_lite0 layer", layer, [name for name, (_, stride) in
                                                              LAYERS["efficientnet_lite0"].items() if stride])
        model = efficientnet_lite0(pretrained=False)
        names = [name for name, _ in _stages(model)]
        self.stages = nn.Sequential(*[stage for _, stage in _stages(model)[:max(map(names.index, self.layers)) + 1]])
        self._names = names[:len(self.stages)]
        mean, std = input_normalization(model)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at :attr:`layers`, in that order, of images (N, 3, H, W) in [0, 1]."""
        x, found = (images - self.mean) / self.std, {}
        for name, stage in zip(self._names, self.stages):
            x = stage(x)
            found[name] = x
        return [found[layer] for layer in self.layers]


class STFPM(AnomalyDetector):
    """Student-Teacher Feature Pyramid Matching: where a student stops imitating its teacher, a defect.

    Parameters
    ----------
    layers : sequence of str, default=("block2", "block4", "block10")
        The pyramid levels (Lite0 blocks of strides 4, 8, 16, :data:`STFPM_LAYERS`).
    epochs : int, default=4
        Passes over the training images (:data:`CPU_SCHEDULE`; the paper's 100 in :data:`PAPER_SCHEDULE`).
    batch_size : int, default=32
    learning_rate : float, default=0.4
        SGD with momentum 0.9 and weight decay 1e-4, as the paper.
    top_k_fraction : float in (0, 1] or None, default=None
        Image score (:func:`mvtec_tutorial.metrics.image_scores`): None the map's maximum (the paper's).
    seed : int, default=0
        Seeds the student's initial weights and the batch order.
    device : str or torch.device, optional
        None means CUDA when available, else CPU.

    Attributes
    ----------
    teacher_ : FeatureExtractor
        The frozen pretrained EfficientNet-Lite0, loaded explicitly
        (:func:`mvtec_tutorial.backbones.efficientnet_lite0`).
    student_ : Student
        The trained student, in eval mode.
    history_ : dict
        ``"loss"``: the distillation loss per epoch.

    Notes
    -----
    Wang, Wu, Cui and Zhao, "Student-Teacher Feature Pyramid Matching for Anomaly Detection", BMVC
    2021. Loss (:func:`distillation_loss`), map (:func:`anomaly_maps`) and optimiser follow the paper.
    Deviations: the teacher and student are EfficientNet-Lite0 instead of ResNet-18 (the only weights
    available offline), with the Lite0 blocks of the paper's strides; the CPU schedule trains 4
    epochs instead of 100 to fit in five minutes on two CPU cores. The student runs in PyTorch's
    channels-last memory layout, where the CPU's backward pass through Lite0's depthwise
    convolutions is about three times faster (the numbers are the same up to rounding). After
    training, the student's batch-norm statistics are recomputed in one pass over the training images
    (:func:`_recompute_batch_norm_statistics`): Lite0's batch norms keep the TensorFlow momentum of
    0.01, with which four epochs leave the running statistics near their initial values. This was
    found after a first benchmark run scored below chance, and checked on normal images only: on the
    synthetic bottle's validation images the eval-mode loss was 1.61 with the lagging statistics and
    1.28 with the recomputed ones (last training epoch: 1.48). The teacher's features of the
    training images are computed once per fit (the paper gives no augmentation, so they never change).

    Examples
    --------
    >>> normal = torch.rand(8, 3, 64, 64) * 0.1 + 0.45
    >>> model = STFPM(epochs=1, batch_size=4, device="cpu").fit(normal, progress=False)
    >>> maps, scores = model.predict(normal[:2])
    >>> maps.shape, scores.shape
    ((2, 64, 64), (2,))
    """

    benchmark_names = {"stfpm": {}}
    after_2019 = True  # Wang et al. 2021
    schedules = same_for_kinds(quick=QUICK_SCHEDULE, cpu=CPU_SCHEDULE, paper=PAPER_SCHEDULE)

    def __init__(self, *, layers: Iterable[str] = STFPM_LAYERS, epochs: int = CPU_SCHEDULE["epochs"],
                 batch_size: int = CPU_SCHEDULE["batch_size"], learning_rate: float = CPU_SCHEDULE["learning_rate"],
                 top_k_fraction: float | None = None, seed: int = 0,
                 device: str | torch.device | None = None) -> None:
        super().__init__(seed=seed, device=device)
        self.layers = layers
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.top_k_fraction = top_k_fraction

    def _fit(self, images: torch.Tensor) -> None:
        check_top_k_fraction(self.top_k_fraction)
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        device = self.device_
        self.teacher_ = FeatureExtractor("efficientnet_lite0", layers=tuple(self.layers), device=device)
        teacher = self.teacher_.extract(images, batch_size=self.batch_size, progress=self._progress)
        with torch.random.fork_rng(devices=[]):  # seeded initial weights without touching global state
            torch.manual_seed(self.seed)
            student = Student(self.layers)
        dataset = torch.utils.data.TensorDataset(images, *(teacher[layer] for layer in self.teacher_.layers))
        loader = torch.utils.data.DataLoader(dataset, batch_size=self.batch_size, shuffle=True,
                                             generator=torch.Generator().manual_seed(self.seed))
        student.to(device, memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(student.parameters(), lr=self.learning_rate, momentum=MOMENTUM,
                                    weight_decay=WEIGHT_DECAY)
        def loss_fn(model: Student, batch: list[torch.Tensor]) -> torch.Tensor:
            return distillation_loss(batch[1:], model(batch[0].contiguous(memory_format=torch.channels_last)))

        self.history_ = training.train(
            student, loader, loss_fn,
            epochs=self.epochs, optimizer=optimizer, seed=self.seed, device=device,
            desc="training the STFPM student", progress=self._progress)
        _recompute_batch_norm_statistics(student, images, batch_size=self.batch_size, device=device)
        # Predict in the usual layout, the one a loaded student has, so both give the same numbers.
        self.student_ = student.to(memory_format=torch.contiguous_format)

    def _predict(self, images: torch.Tensor) -> tuple[torch.Tensor, None]:
        maps = []
        self.student_.eval()
        with torch.inference_mode():
            for batch in tqdm(images.split(self.batch_size), desc="STFPM maps", leave=False,
                              disable=not self._progress):
                batch = batch.to(self.device_)
                teacher = self.teacher_(batch)
                maps.append(anomaly_maps([teacher[layer] for layer in self.teacher_.layers],
                                         self.student_(batch), batch.shape[-2:]).float().cpu())
        return torch.cat(maps), None
