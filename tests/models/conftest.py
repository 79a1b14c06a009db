"""Fixtures shared by the model tests."""
import numpy as np
import pytest
import torch

STRIPES_SIZE = 64
PLANTED_SQUARE = (slice(20, 36), slice(24, 40))  # rows, columns


def stripes(n_images, seed):
    """Normal images (n, 3, 64, 64): the same diagonal stripes with a little noise."""
    generator = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(STRIPES_SIZE), torch.arange(STRIPES_SIZE), indexing="ij")
    pattern = 0.5 + 0.2 * torch.sin((yy + xx) / 4.0)
    return (pattern + 0.03 * torch.randn(n_images, 3, STRIPES_SIZE, STRIPES_SIZE, generator=generator)).clamp(0, 1)


@pytest.fixture(scope="module")
def data():
    """(train (8, 3, 64, 64), test (4, 3, 64, 64) whose image 0 has a bright square, masks (4, 64, 64))."""
    train = stripes(8, seed=0)
    test = stripes(4, seed=1)
    test[0, :, PLANTED_SQUARE[0], PLANTED_SQUARE[1]] = 1.0
    masks = np.zeros((4, STRIPES_SIZE, STRIPES_SIZE), dtype=bool)
    masks[0, PLANTED_SQUARE[0], PLANTED_SQUARE[1]] = True
    return train, test, masks
