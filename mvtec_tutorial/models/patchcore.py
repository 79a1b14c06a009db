"""PatchCore (Roth et al., CVPR 2022): nearest-neighbour distance to a coreset of normal patches.

Fitting collects the locally aware patch features of all normal images into a memory bank and
keeps a small subset that covers it (greedy coreset); predicting scores each test patch by its
distance to the nearest bank entry. Three functions carry the algorithm and are tested on their
own: :func:`greedy_coreset`, :func:`nearest_neighbors` and :func:`reweighted_image_scores`.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from mvtec_tutorial.backbones import (DEFAULT_LAYERS, SMOOTHING_SIGMA, FeatureExtractor, align_and_concatenate,
                                      local_average, to_anomaly_maps)
from mvtec_tutorial.checks import check_scalar
from mvtec_tutorial.metrics import check_top_k_fraction
from mvtec_tutorial.models.base import AnomalyDetector, same_for_kinds

#: Fraction of the memory bank kept by the coreset. The paper reports 25%, 10% and 1%
#: (Roth et al., Table 1). The selection study (results/selection_study: 6 categories x 3 seeds;
#: the rule is the best mean over categories of the mean of image AUROC, pixel AUROC and AU-PRO)
#: chose a greedy 10 % coreset (with the top-5 % image score and a 32-dimensional projection): rule
#: score 0.9786 against 0.9775 for 1 %, ahead on pixel ROC AUC and AU-PRO on both real categories
#: (bottle AU-PRO 0.932 against 0.929, transistor pixel ROC AUC 0.976 against 0.970); a random 10 %
#: subset was the lowest on transistor. Fit + predict on bottle: 31 s on an idle 2-core CPU (1 %: 15 s).
CORESET_RATIO = 0.1
#: How the coreset is chosen: "greedy" (farthest-point selection, Sec. 3.2) or "random" (a uniform
#: random subset, the baseline the paper compares the greedy coreset with, Fig. 5).
CORESET_METHODS = ("greedy", "random")
CORESET_METHOD = "greedy"
#: Dimension of the random projection used only to choose the coreset. The paper's d* = 128 (Sec. 3.2)
#: gave the same metrics on bottle (seed 0) at 49 s of fitting instead of 22 s, so 32.
PROJECTION_DIM = 32
#: Neighbourhood size p of the local patch aggregation (Sec. 3.1: p = 3).
NEIGHBORHOOD_SIZE = 3
#: Image score: the mean of the top 5 % of the anomaly map's pixels. The selection study compared it
#: with the paper's reweighted largest patch distance (eq. 7), the plain maximum and the top 0.1 to
#: 10 % on the same maps (results/selection_study/image_scores.csv, 6 categories x 3 seeds): 5 % had
#: the best mean image AUROC over categories (0.997, against 0.983 for eq. 7) and the best worst
#: category (transistor 0.993, against 0.916), and lowered no category by more than 0.005. Large,
#: logical defects (a missing or misplaced part) raise many patches a little; a maximum misses them.
TOP_K_FRACTION = 0.05
#: b, the number of memory-bank neighbours in the paper's image-score reweighting (Sec. 3.3, eq. 7),
#: used when ``top_k_fraction=None``. The paper gives no value; 9 as in anomalib (the authors'
#: released code scores by the plain maximum).
N_REWEIGHT_NEIGHBORS = 9
#: Query rows per torch.cdist call: 1024 x 10^4 bank entries is 40 MB of distances at a time.
CHUNK_SIZE = 1024


def greedy_coreset(features: torch.Tensor, n_select: int, *, projection_dim: int | None = PROJECTION_DIM,
                   seed: int = 0, progress: bool = False) -> torch.Tensor:
    """Choose ``n_select`` rows by greedy farthest-point selection (minimax facility location).

    Parameters
    ----------
    features : torch.Tensor of shape (M, D), float
        The memory bank.
    n_select : int
        Rows to keep, 1 <= n_select <= M.
    projection_dim : int or None, default=32, keyword-only
        Distances are measured after a random Gaussian projection to this many dimensions (only
        when it is smaller than D); None measures them in the original space.
    seed : int, default=0, keyword-only
        Seeds the projection and the first row (own generator).
    progress : bool, default=False, keyword-only
        Show a progress bar over the selections.

    Returns
    -------
    torch.Tensor of shape (n_select,), int64
        Row indices in selection order; each is the row farthest from all rows chosen before it.
        Every prefix is itself the greedy coreset of that size.

    Notes
    -----
    Roth et al., Sec. 3.2, Algorithm 1 (after Sener & Savarese 2018). The distance of every row
    to its nearest chosen row is kept in one preallocated vector and lowered in place after each
    choice, with one fused matrix-vector product per step (``|x - c|^2 = |x|^2 - 2 x.c + |c|^2``).
    No tensor grows inside the loop (a growing list or ``torch.cat`` there spends most of the
    time allocating memory), and few large operations run per step, because each one waits for
    every CPU thread, which is slow on a busy machine.

    Examples
    --------
    >>> points = torch.tensor([[0.0], [1.0], [10.0], [4.0]])
    >>> greedy_coreset(points, 3, projection_dim=None, seed=0).tolist()  # seed 0 starts at row 0
    [0, 2, 3]
    """
    n_rows, n_dims = features.shape
    if not 1 <= n_select <= n_rows:
        raise ValueError(f"n_select must be between 1 and the {n_rows} rows of features, got {n_select}")
    generator = torch.Generator().manual_seed(seed)
    if projection_dim is not None and projection_dim < n_dims:
        # Johnson-Lindenstrauss: a Gaussian matrix scaled by 1/sqrt(k) keeps distances in expectation.
        projection = torch.randn(n_dims, projection_dim, generator=generator, dtype=features.dtype)
        features = features @ (projection / math.sqrt(projection_dim)).to(features.device)
    squared_norms = (features * features).sum(dim=1)
    # With rows [x, 1] and the vector [-2c, |c|^2], one addmv gives |x|^2 - 2 x.c + |c|^2 = |x - c|^2.
    augmented = torch.cat([features, torch.ones_like(squared_norms)[:, None]], dim=1)
    min_distances = torch.full((n_rows,), math.inf, dtype=features.dtype, device=features.device)
    distances = torch.empty_like(min_distances)
    selected = torch.empty(n_select, dtype=torch.int64)
    selected[0] = int(torch.randint(n_rows, (1,), generator=generator))
    for step in tqdm(range(n_select), desc="greedy coreset", disable=not progress, leave=False):
        index = int(selected[step])
        centre = torch.cat([-2 * features[index], squared_norms[index:index + 1]])
        torch.addmv(squared_norms, augmented, centre, out=distances)
        torch.minimum(min_distances, distances, out=min_distances)
        if step + 1 < n_select:
            selected[step + 1] = int(torch.argmax(min_distances))
    return selected


def nearest_neighbors(queries: torch.Tensor, bank: torch.Tensor, *, k: int = 1,
                      chunk_size: int = CHUNK_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean distances and indices of the ``k`` nearest bank rows of every query.

    Parameters
    ----------
    queries : torch.Tensor of shape (Q, D)
    bank : torch.Tensor of shape (M, D)
    k : int, default=1, keyword-only
        Neighbours per query, 1 <= k <= M.
    chunk_size : int, default=1024, keyword-only
        Queries per :func:`torch.cdist` call, which bounds memory to ``chunk_size * M`` floats;
        the result does not depend on it.

    Returns
    -------
    distances : torch.Tensor of shape (Q, k)
        Ascending along each row.
    indices : torch.Tensor of shape (Q, k), int64
        Bank rows of those distances.

    Examples
    --------
    >>> d, i = nearest_neighbors(torch.tensor([[0.0], [9.0]]), torch.tensor([[1.0], [5.0], [10.0]]))
    >>> d.ravel().tolist(), i.ravel().tolist()
    ([1.0, 1.0], [0, 2])
    """
    if not 1 <= k <= len(bank):
        raise ValueError(f"k must be between 1 and the {len(bank)} rows of the bank, got {k}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    distances = torch.empty(len(queries), k, dtype=bank.dtype, device=bank.device)
    indices = torch.empty(len(queries), k, dtype=torch.int64, device=bank.device)
    for start in range(0, len(queries), chunk_size):
        stop = start + chunk_size
        distances[start:stop], indices[start:stop] = torch.topk(
            torch.cdist(queries[start:stop], bank), k, dim=1, largest=False)
    return distances, indices


def reweighted_image_scores(patch_features: torch.Tensor, patch_scores: torch.Tensor,
                            nearest: torch.Tensor, bank: torch.Tensor, *,
                            n_neighbors: int = N_REWEIGHT_NEIGHBORS) -> torch.Tensor:
    """Image scores: the largest patch score, down-weighted where the bank is dense (eq. 7).

    Parameters
    ----------
    patch_features : torch.Tensor of shape (N, P, D)
        Patch features of N images.
    patch_scores : torch.Tensor of shape (N, P)
        Distance of each patch to its nearest bank row.
    nearest : torch.Tensor of shape (N, P), int64
        Index of that nearest bank row.
    bank : torch.Tensor of shape (M, D)
        The memory bank.
    n_neighbors : int, default=9, keyword-only
        ``b``: the bank neighbours of ``m*`` (``m*`` itself included) in the softmax, 2 <= b <= M.

    Returns
    -------
    torch.Tensor of shape (N,)
        ``s = (1 - exp|m_test - m*| / sum_{m in N_b(m*)} exp|m_test - m|) * s*``, where ``m_test``
        is the patch with the largest score ``s*`` and ``m*`` its nearest bank row.

    Notes
    -----
    Roth et al., Sec. 3.3, eq. 7. ``m*`` is the bank row nearest to ``m_test``, so its term is the
    smallest in the sum and the weight lies in ``[1 - 1/b, 1)``: near ``1 - 1/b`` when the other
    neighbours of ``m*`` are about as close (a dense, frequent normal pattern), near 1 when they
    are much farther (``m*`` is a rare pattern, so the distance to it counts in full).
    ``N_b(m*)`` holds ``m*`` itself (its own nearest neighbour), as in anomalib.
    """
    if not 2 <= n_neighbors <= len(bank):
        raise ValueError(f"n_neighbors must be between 2 and the {len(bank)} rows of the bank, got {n_neighbors}")
    rows = torch.arange(len(patch_scores), device=patch_scores.device)
    worst = patch_scores.argmax(dim=1)
    worst_features = patch_features[rows, worst]                               # m_test, (N, D)
    _, support = nearest_neighbors(bank[nearest[rows, worst]], bank, k=n_neighbors)  # N_b(m*), (N, b)
    distances = torch.linalg.vector_norm(bank[support] - worst_features[:, None], dim=-1)  # (N, b)
    # Column 0 is m* itself (distance 0 to m*), so its distance to m_test is s*.
    weights = 1 - torch.softmax(distances, dim=1)[:, 0]
    return weights * patch_scores[rows, worst]


class PatchCore(AnomalyDetector):
    """PatchCore: a coreset memory bank of normal patch features and nearest-neighbour scoring.

    Parameters
    ----------
    backbone : {'efficientnet_lite0', 'resnet18'}, default='efficientnet_lite0'
        Frozen ImageNet network (:class:`mvtec_tutorial.backbones.FeatureExtractor`); the paper
        used Wide-ResNet-50. Lite0's weights work offline.
    layers : sequence of str, optional
        Two middle layers, default :data:`mvtec_tutorial.backbones.DEFAULT_LAYERS` (strides 8 and
        16: Lite0 'block4' + 'block10', ResNet-18 'layer2' + 'layer3'); the deeper map is upsampled
        to the finer grid.
    coreset_ratio : float in (0, 1], default=0.1
        Fraction of all training patches kept in the memory bank; 1 keeps them all.
    coreset_method : {'greedy', 'random'}, default='greedy'
        'greedy': :func:`greedy_coreset` (the paper's); 'random': a uniform random subset.
    projection_dim : int or None, default=32
        Random projection used while choosing the coreset (the paper: 128); None chooses in the full space.
    neighborhood_size : int, default=3
        ``p``: each feature is averaged over its p x p neighbourhood (odd; 1 disables it).
    top_k_fraction : float in (0, 1] or None, default=0.05
        Image score: the mean of the top f pixels of the anomaly map
        (:func:`mvtec_tutorial.metrics.image_scores`; the selection study's choice,
        :data:`TOP_K_FRACTION`); None scores by the largest patch distance, as the paper does,
        reweighted by ``n_reweight_neighbors``.
    n_reweight_neighbors : int or None, default=9
        ``b`` of the paper's image-score reweighting (eq. 7), at least 2 and capped at the
        memory-bank size; None uses the plain largest patch distance. Only with ``top_k_fraction=None``.
    smoothing_sigma : float, default=4.0
        Gaussian smoothing of the upsampled map in pixels; 0 disables it.
    batch_size : int, default=32
        Images per forward pass of the backbone.
    chunk_size : int, default=1024
        Query patches per distance computation (memory bound, not a result change).
    allow_offline_fallback : bool, default=False
        For 'resnet18' without cached weights, use Lite0 layers of equal stride (printed).
    seed : int, default=0
        Seeds the coreset's projection and first choice (or the random subset).
    device : str or torch.device, optional
        None means CUDA when available, else CPU.

    Attributes
    ----------
    extractor_ : FeatureExtractor
    grid_size_ : tuple of int
        ``(h, w)``: the feature grid (input size / 8 with the default layers).
    n_patches_ : int
        Patches of all training images before subsampling.
    memory_bank_ : torch.Tensor of shape (M, D), float32
        The coreset, M = max(1, round(coreset_ratio * n_patches_)); D = 152 for the Lite0 default.

    Notes
    -----
    Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022: locally aware
    patch features (Sec. 3.1, eq. 2), coreset subsampling (Sec. 3.2, Algorithm 1), nearest-neighbour
    patch scores and the reweighted image score (Sec. 3.3, eqs. 6-7; here ``top_k_fraction=None``,
    since the default scores an image by the top 5 % of its map). The paper also pools each layer's
    channels down to 1024; Lite0's 40 + 112 channels need no such reduction.

    Examples
    --------
    >>> normal = torch.rand(4, 3, 64, 64) * 0.1 + 0.45
    >>> model = PatchCore(coreset_ratio=0.5, device="cpu").fit(normal, progress=False)
    >>> test = normal[:2].clone(); test[1, :, 20:40, 20:40] = 1.0
    >>> maps, scores = model.predict(test)
    >>> maps.shape, bool(scores[1] > scores[0])
    ((2, 64, 64), True)
    """

    after_2019 = True  # Roth et al. 2022
    benchmark_names = {"patchcore": {}}
    schedules = same_for_kinds(quick={}, cpu={}, paper={})  # no training: the defaults everywhere

    def __init__(self, *, backbone: str = "efficientnet_lite0", layers: Iterable[str] | None = None,
                 coreset_ratio: float = CORESET_RATIO, coreset_method: str = CORESET_METHOD,
                 projection_dim: int | None = PROJECTION_DIM,
                 neighborhood_size: int = NEIGHBORHOOD_SIZE, top_k_fraction: float | None = TOP_K_FRACTION,
                 n_reweight_neighbors: int | None = N_REWEIGHT_NEIGHBORS,
                 smoothing_sigma: float = SMOOTHING_SIGMA, batch_size: int = 32, chunk_size: int = CHUNK_SIZE,
                 allow_offline_fallback: bool = False, seed: int = 0,
                 device: str | torch.device | None = None) -> None:
        super().__init__(seed=seed, device=device)
        self.backbone = backbone
        self.layers = layers
        self.coreset_ratio = coreset_ratio
        self.coreset_method = coreset_method
        self.projection_dim = projection_dim
        self.neighborhood_size = neighborhood_size
        self.top_k_fraction = top_k_fraction
        self.n_reweight_neighbors = n_reweight_neighbors
        self.smoothing_sigma = smoothing_sigma
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.allow_offline_fallback = allow_offline_fallback

    def _fit(self, images: torch.Tensor) -> None:
        if not 0 < self.coreset_ratio <= 1:
            raise ValueError(f"coreset_ratio must lie in (0, 1], got {self.coreset_ratio}; "
                             "the paper uses 0.01 to 0.25")
        if self.coreset_method not in CORESET_METHODS:
            raise ValueError(f"coreset_method must be one of {', '.join(CORESET_METHODS)}, got {self.coreset_method!r}")
        if self.neighborhood_size < 1 or self.neighborhood_size % 2 == 0:
            raise ValueError(f"neighborhood_size must be a positive odd number, got {self.neighborhood_size}")
        check_top_k_fraction(self.top_k_fraction)
        if self.projection_dim is not None:
            check_scalar(self.projection_dim, "projection_dim", low=1, integer=True,
                         hint=f"dimensions of the random projection the greedy coreset compares patches in "
                              f"(default {PROJECTION_DIM}); None compares the full features")
        check_scalar(self.smoothing_sigma, "smoothing_sigma", low=0, hint="pixels of Gaussian smoothing; 0 turns it off")
        check_scalar(self.batch_size, "batch_size", low=1, integer=True)
        check_scalar(self.chunk_size, "chunk_size", low=1, integer=True)
        if self.n_reweight_neighbors is not None and self.n_reweight_neighbors < 2:
            raise ValueError(f"n_reweight_neighbors must be at least 2 (m* and one neighbour), got "
                             f"{self.n_reweight_neighbors}; pass None for the plain largest patch score")
        layers = DEFAULT_LAYERS.get(self.backbone) if self.layers is None else self.layers
        self.extractor_ = FeatureExtractor(self.backbone, layers=layers, device=self.device_,
                                           allow_offline_fallback=self.allow_offline_fallback)
        with torch.inference_mode():
            patches = self._patch_features(images)
            self.grid_size_ = tuple(patches.shape[-2:])
            bank = patches.permute(0, 2, 3, 1).reshape(-1, patches.shape[1])
            self.n_patches_ = len(bank)
            n_select = max(1, round(self.coreset_ratio * len(bank)))
            if self.top_k_fraction is None and self.n_reweight_neighbors is not None and n_select < 2:
                raise ValueError(f"the coreset keeps {n_select} of {len(bank)} patches but the image-score "
                                 "reweighting needs at least 2; raise coreset_ratio or pass n_reweight_neighbors=None")
            if self.coreset_method == "greedy":
                chosen = greedy_coreset(bank, n_select, projection_dim=self.projection_dim, seed=self.seed,
                                        progress=self._progress)
            else:
                chosen = torch.randperm(len(bank), generator=torch.Generator().manual_seed(self.seed))[:n_select]
            self.memory_bank_ = bank[chosen.to(bank.device)]  # a copy: the full bank is freed on return

    def _patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """Locally aware patch features (N, D, h, w) on ``device_`` (Sec. 3.1, eq. 2)."""
        features = self.extractor_.extract(images, batch_size=self.batch_size, progress=self._progress)
        return align_and_concatenate([local_average(features[layer].to(self.device_), self.neighborhood_size)
                                      for layer in self.extractor_.layers])

    def _predict(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        with torch.inference_mode():
            patches = self._patch_features(images)
            queries = patches.permute(0, 2, 3, 1).reshape(len(images), -1, patches.shape[1])  # (N, P, D)
            distances, nearest = nearest_neighbors(queries.reshape(-1, queries.shape[-1]), self.memory_bank_,
                                                   chunk_size=self.chunk_size)
            patch_scores = distances.reshape(len(images), -1)
            maps = to_anomaly_maps(patch_scores.reshape(len(images), *self.grid_size_), images.shape[-2:],
                                   sigma=self.smoothing_sigma)
            if self.top_k_fraction is not None:
                return maps, None  # the base class's top-k mean of the maps
            if self.n_reweight_neighbors is None:
                scores = patch_scores.max(dim=1).values
            else:
                scores = reweighted_image_scores(queries, patch_scores, nearest.reshape(len(images), -1),
                                                 self.memory_bank_,
                                                 n_neighbors=min(self.n_reweight_neighbors, len(self.memory_bank_)))
        return maps, scores.cpu().numpy()
