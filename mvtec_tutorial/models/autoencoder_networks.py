"""The autoencoder networks of notebook 03, and how a network reconstructs images larger than its input.

Every network is one mirrored encoder-decoder template (:class:`MirroredAutoencoder`): the
convolutional autoencoder of Bergmann et al. (VISAPP 2019, Table 1; the AE baselines of MVTec AD,
CVPR 2019), :func:`bergmann_network`, and the small five-layer CAE of the course's source deck,
:func:`tutorial_network`. Weights start from He et al.'s initialisation (``_he_initialise``).
Textures are reconstructed window by window (:func:`reconstruct_patchwise`).

The detector that trains and scores them is :class:`mvtec_tutorial.models.autoencoder.ConvAutoencoder`.
"""
from __future__ import annotations

import math

import torch
from torch import nn

#: Encoder of Bergmann et al. (2019), Table 1, for 128 x 128 inputs: (out_channels, kernel, stride).
#: Every layer pads by 1, so stride 2 halves the side and stride 1 keeps it: 128 -> 8.
BERGMANN_ENCODER = ((32, 4, 2), (32, 4, 2), (32, 3, 1), (64, 4, 2), (64, 3, 1),
                    (128, 4, 2), (64, 3, 1), (32, 3, 1))
BERGMANN_SIDE = 128
#: Encoder of the deck's 224 x 224 CAE: four halvings, then a 4 x 4 valid convolution to 256 channels.
TUTORIAL_ENCODER = ((16, 4, 2), (32, 4, 2), (64, 4, 2), (128, 4, 2))
TUTORIAL_CODE_CHANNELS = 256
#: The decoder's last activation: a sigmoid keeps reconstructions in [0, 1] like the images; "linear"
#: lets them take any value (needed when inputs are normalised to negative values).
OUTPUTS = ("sigmoid", "linear")


class MirroredAutoencoder(nn.Module):
    """Convolutional encoder, a linear bottleneck convolution, and its mirror image as decoder.

    Parameters
    ----------
    in_channels : int
        1 (grayscale) or 3 (RGB).
    encoder : sequence of (out_channels, kernel, stride)
        Hidden convolutions, each padded by 1 and followed by the (Leaky)ReLU.
    code_channels, code_kernel : int
        The bottleneck: an unpadded ``code_kernel`` x ``code_kernel`` convolution to
        ``code_channels`` with no activation (the latent code).
    negative_slope : float, default=0.0
        Slope of the LeakyReLU after every hidden layer; 0 means ReLU.
    output : {"sigmoid", "linear"}, default="sigmoid"
        The last layer's activation (see the Notes).

    Notes
    -----
    The decoder repeats the encoder backwards with transposed convolutions of the same kernel,
    stride and padding, so every layer restores the shape its mirror consumed, and ends in a
    sigmoid so reconstructions lie in [0, 1] like the images (SSIM's data range is 1). Inputs
    normalised to zero mean need ``output="linear"``: a sigmoid cannot reproduce their negative
    values (the mismatch of the course deck's CAE, notebook 03).
    """

    def __init__(self, in_channels: int, encoder: tuple[tuple[int, int, int], ...], *, code_channels: int,
                 code_kernel: int, negative_slope: float = 0.0, output: str = "sigmoid") -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r}; use one of {OUTPUTS}")
        self.config = dict(in_channels=in_channels, encoder=encoder, code_channels=code_channels,
                           code_kernel=code_kernel, negative_slope=negative_slope, output=output)
        activation = nn.LeakyReLU(negative_slope) if negative_slope else nn.ReLU()
        widths = [in_channels] + [out for out, _, _ in encoder]
        encoding: list[nn.Module] = []
        decoding: list[nn.Module] = []
        for (n_in, (n_out, kernel, stride)) in zip(widths, encoder):
            encoding += [nn.Conv2d(n_in, n_out, kernel, stride, padding=1), activation]
            # decoder layers are built in reverse: the mirror of this layer comes last
            decoding = [nn.ConvTranspose2d(n_out, n_in, kernel, stride, padding=1), activation] + decoding
        encoding.append(nn.Conv2d(widths[-1], code_channels, code_kernel))
        decoding = [nn.ConvTranspose2d(code_channels, widths[-1], code_kernel), activation] + decoding
        # the output layer: [0, 1] (or any value) instead of a hidden activation
        decoding[-1] = nn.Sigmoid() if output == "sigmoid" else nn.Identity()
        self.encoder = nn.Sequential(*encoding)
        self.decoder = nn.Sequential(*decoding)
        for layer in self.modules():
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                _he_initialise(layer, negative_slope)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstruct ``images`` (B, C, H, W) in [0, 1]; returns the same shape."""
        return self.decoder(self.encoder(images))


def _he_initialise(layer: nn.Conv2d | nn.ConvTranspose2d, negative_slope: float) -> None:
    """He et al. (2015) initialisation: each layer keeps the variance of the signal it passes on.

    PyTorch's default draws weights of variance ``1 / (3 fan_in)``, which shrinks the signal about
    sixfold per layer behind a LeakyReLU. Through the 20 layers of the Bergmann network the
    reconstruction then no longer depends on the input at all (its spread over different inputs
    was 6e-10 on synthetic wood), and SSIM training sat on that flat output for 30,000 views before
    it learnt anything; with this initialisation it leaves it within the first 2,000.
    """
    kernel_area = layer.kernel_size[0] * layer.kernel_size[1]
    # An output pixel of a transposed convolution sums only kernel_area / stride**2 taps per channel.
    taps = kernel_area / (layer.stride[0] * layer.stride[1]) if isinstance(layer, nn.ConvTranspose2d) else kernel_area
    fan_in = layer.in_channels * taps
    nn.init.normal_(layer.weight, std=math.sqrt(2.0 / ((1.0 + negative_slope ** 2) * fan_in)))
    nn.init.zeros_(layer.bias)


def bergmann_network(in_channels: int, side: int, *, latent_dim: int = 100,
                     output: str = "sigmoid") -> MirroredAutoencoder:
    """The autoencoder of Bergmann et al. (2019) for square inputs of ``side`` pixels.

    Parameters
    ----------
    in_channels : int
        1 (SSIM, grayscale) or 3 (L2, RGB).
    side : int
        Input side: 128 is the paper's texture patch; every doubling adds one more
        Conv32 k4s2 stage in front (and its mirror at the end), so 256 is the object variant.
        Sides below 128 (quick tests) keep the layers and shrink the bottleneck kernel to ``side / 16``.
    latent_dim : int, default=100, keyword-only
        Size of the latent code (the paper uses 100 on MVTec AD).
    output : {"sigmoid", "linear"}, default="sigmoid", keyword-only
        The last activation (:class:`MirroredAutoencoder`).

    Raises
    ------
    ValueError
        If ``side`` is not ``128 * 2**k`` or a multiple of 16 below 128.

    Examples
    --------
    >>> network = bergmann_network(1, 256)
    >>> tuple(network.encoder(torch.zeros(2, 1, 256, 256)).shape)
    (2, 100, 1, 1)
    """
    reduced, n_extra = side, 0
    while reduced > BERGMANN_SIDE and reduced % 2 == 0:
        reduced, n_extra = reduced // 2, n_extra + 1
    if reduced > BERGMANN_SIDE or reduced % 16 != 0:
        raise ValueError(f"the Bergmann autoencoder needs a side of 128 * 2**k (128, 256, 512) or a multiple "
                         f"of 16 below 128, got {side}; load images at 256 px or pass work_size=128")
    encoder = ((32, 4, 2),) * n_extra + BERGMANN_ENCODER
    return MirroredAutoencoder(in_channels, encoder, code_channels=latent_dim, code_kernel=reduced // 16,
                               negative_slope=0.2)


def tutorial_network(in_channels: int, side: int, *, output: str = "sigmoid") -> MirroredAutoencoder:
    """The course deck's first CAE: Conv 16/32/64/128 k4s2p1, Conv256 k4, ReLU, mirrored, sigmoid.

    Built for 224 x 224 inputs, where the code is 256 x 11 x 11 (31,000 numbers, a tenth of the
    input): a wide bottleneck, but the four plain stride-2 stages lose fine detail. The deck ends
    it in a sigmoid (``output="sigmoid"``); ``output="linear"`` is the fix for normalised inputs.

    Raises
    ------
    ValueError
        If ``side`` is not a multiple of 16 of at least 64.
    """
    if side % 16 != 0 or side < 64:
        raise ValueError(f"the tutorial autoencoder needs a side that is a multiple of 16 and at least 64, got {side}")
    return MirroredAutoencoder(in_channels, TUTORIAL_ENCODER, code_channels=TUTORIAL_CODE_CHANNELS,
                               code_kernel=4, output=output)


# ------------------------------------------------------------------------------- sliding window
def window_starts(length: int, patch_size: int, stride: int) -> list[int]:
    """Start offsets of windows of ``patch_size`` every ``stride`` pixels that cover ``length``.

    A last window flush with the far edge is added when the stride does not land there, so the
    border is covered too (e.g. 0, 30, ..., 120, 128 for 256 px, patch 128, stride 30).
    """
    if patch_size > length:
        raise ValueError(f"patch_size {patch_size} is larger than the image side {length}")
    starts = list(range(0, length - patch_size + 1, stride))
    if starts[-1] != length - patch_size:
        starts.append(length - patch_size)
    return starts


def reconstruct_patchwise(network: nn.Module, images: torch.Tensor, *, patch_size: int, stride: int,
                          batch_size: int = 64) -> torch.Tensor:
    """Reconstruct images larger than the network's input by a sliding window, averaging overlaps.

    Parameters
    ----------
    network : callable
        Maps (B, C, patch_size, patch_size) to the same shape.
    images : torch.Tensor of shape (N, C, H, W)
    patch_size, stride : int, keyword-only
        Window side and step (Bergmann et al. 2019: 128 and 30); see :func:`window_starts`.
    batch_size : int, keyword-only
        Windows per network call.

    Returns
    -------
    torch.Tensor of shape (N, C, H, W), dtype and device of ``images``
        Every pixel is the mean of all window reconstructions that cover it.

    Notes
    -----
    Sums are accumulated in float64: a float32 value added k times is exact in float64 and
    dividing by k gives it back, so an identity network returns ``images`` bit for bit.
    """
    n_images, _, height, width = images.shape
    windows = [(i, top, left) for i in range(n_images) for top in window_starts(height, patch_size, stride)
               for left in window_starts(width, patch_size, stride)]
    total = torch.zeros(images.shape, dtype=torch.float64, device=images.device)
    count = torch.zeros((n_images, 1, height, width), dtype=torch.float64, device=images.device)
    for first in range(0, len(windows), batch_size):
        chunk = windows[first:first + batch_size]
        patches = torch.stack([images[i, :, top:top + patch_size, left:left + patch_size] for i, top, left in chunk])
        for (i, top, left), patch in zip(chunk, network(patches)):
            total[i, :, top:top + patch_size, left:left + patch_size] += patch
            count[i, :, top:top + patch_size, left:left + patch_size] += 1
    return (total / count).to(images.dtype)
