"""Tests for mvtec_tutorial.models.fastflow: the coupling's inverse and log-determinant, loss, map, method."""
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from mvtec_tutorial.models.fastflow import (AffineCoupling, FastFlow, Flow, anomaly_maps, negative_log_likelihood,
                                            normalize_features)


def _randomised(module, seed):
    """The module with every weight random (the last convolutions start at zero: the identity)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
    return module.double()


@pytest.mark.parametrize("kernel_size", [1, 3])
def test_coupling_is_invertible_and_its_log_det_matches_the_numerical_jacobian(kernel_size):
    step = _randomised(AffineCoupling(4, kernel_size=kernel_size, permutation_seed=1), seed=kernel_size)
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y, log_det = step(x)
    torch.testing.assert_close(step.inverse(y), x)
    jacobian = torch.autograd.functional.jacobian(lambda v: step(v)[0], x).reshape(x.numel(), x.numel())
    assert log_det.item() == pytest.approx(torch.linalg.slogdet(jacobian).logabsdet.item(), rel=1e-8)
    assert log_det.item() != pytest.approx(0.0)  # the test would be vacuous for the identity


def test_flow_of_eight_steps_is_invertible_with_the_summed_log_det():
    flow = _randomised(Flow(6, n_steps=8, seed=3), seed=4)
    x = torch.randn(1, 6, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    z, log_det = flow(x)
    torch.testing.assert_close(flow.inverse(z), x)
    jacobian = torch.autograd.functional.jacobian(lambda v: flow(v)[0], x).reshape(x.numel(), x.numel())
    assert log_det.item() == pytest.approx(torch.linalg.slogdet(jacobian).logabsdet.item(), rel=1e-8)
    assert [step.config["kernel_size"] for step in flow.steps] == [3, 1] * 4


def test_log_scales_are_clamped():
    step = AffineCoupling(2, kernel_size=1, clamp=2.0)
    with torch.no_grad():
        step.subnet[-1].bias.fill_(1e3)
    _, log_det = step(torch.ones(1, 2, 1, 1))
    assert log_det.item() == pytest.approx(2.0, rel=1e-6)


def test_negative_log_likelihood_matches_a_plain_recomputation():
    generator = torch.Generator().manual_seed(0)
    outputs = [(torch.randn(3, 4, 2, 2, generator=generator), torch.randn(3, generator=generator)),
               (torch.randn(3, 2, 1, 1, generator=generator), torch.randn(3, generator=generator))]
    expected = sum(np.mean([0.5 * np.sum(z[n].numpy() ** 2) - log_det[n].item() for n in range(3)])
                   for z, log_det in outputs)
    assert negative_log_likelihood(outputs).item() == pytest.approx(expected, rel=1e-5)


def test_anomaly_map_is_minus_the_mean_of_per_position_likelihoods():
    z1 = torch.zeros(1, 3, 2, 2)
    z1[0, :, 0, 0] = 2.0
    z2 = torch.ones(1, 5, 2, 2)
    maps = anomaly_maps([(z1, None), (z2, None)], (2, 2))
    expected = -(np.exp(-0.5 * np.where(np.arange(4).reshape(2, 2) == 0, 4.0, 0.0)) + np.exp(-0.5)) / 2
    np.testing.assert_allclose(maps[0].numpy(), expected, rtol=1e-6)


def test_normalize_features_gives_each_image_zero_mean_and_unit_variance():
    features = normalize_features(3 + 2 * torch.randn(2, 4, 5, 5))
    torch.testing.assert_close(features.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(features.var(dim=(1, 2, 3), unbiased=False), torch.ones(2), atol=1e-3, rtol=0)


@pytest.fixture(scope="module")
def fitted(data):
    return FastFlow(epochs=5, batch_size=4, n_steps=4, layers=("block2", "block4"), device="cpu").fit(
        data[0], progress=False)


def test_planted_square_scores_highest(fitted, data):
    _, test, masks = data
    maps, scores = fitted.predict(test, progress=False)
    assert scores.argmax() == 0
    assert roc_auc_score(masks[0].ravel(), maps[0].ravel()) > 0.9
    assert fitted.history_["loss"][-1] < fitted.history_["loss"][0]


def test_same_seed_same_output(fitted, data):
    again = FastFlow(epochs=5, batch_size=4, n_steps=4, layers=("block2", "block4"), device="cpu").fit(
        data[0], progress=False)
    np.testing.assert_array_equal(again.predict(data[1], progress=False)[0], fitted.predict(data[1], progress=False)[0])
