"""Shared fixtures: one tiny synthetic MVTec AD tree, built once per test run."""
from __future__ import annotations

import matplotlib
import pytest

matplotlib.use("Agg")  # tests draw figures without a display

TINY = dict(image_size=64, n_train=8, n_test_good=3, n_test_per_defect=2, progress=False)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """Root of a tiny synthetic dataset (all categories, 64 x 64 px)."""
    from mvtec_tutorial.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("synthetic"), seed=0, **TINY)
