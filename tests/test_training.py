import copy

import pytest
import torch
from torch import nn

from mvtec_tutorial import training


def regression_problem(seed=0):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(64, 4, generator=generator)
    targets = inputs @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1
    dataset = torch.utils.data.TensorDataset(inputs, targets)
    return torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(seed))


def mse(model, batch):
    inputs, targets = batch
    return nn.functional.mse_loss(model(inputs).squeeze(-1), targets)


def test_training_lowers_the_loss_and_is_reproducible():
    histories, weights = [], []
    for _ in range(2):
        torch.manual_seed(123)  # same initial weights
        model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.1), nn.Linear(8, 1))
        histories.append(training.train(model, regression_problem(), mse, epochs=5, learning_rate=0.05,
                                        seed=1, device="cpu", progress=False))
        weights.append(model[0].weight.detach().clone())
    assert histories[0]["loss"][-1] < 0.5 * histories[0]["loss"][0]
    assert histories[0] == histories[1]
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)
    assert not model.training  # returned in eval mode


def test_training_does_not_touch_the_callers_random_state():
    model, loader = nn.Linear(4, 1), regression_problem()
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    training.train(model, loader, mse, epochs=1, device="cpu", progress=False)
    torch.testing.assert_close(torch.rand(3), expected)


def test_early_stopping_restores_the_best_weights():
    model = nn.Linear(4, 1)
    calls = {"n": 0}

    def worsening_validation(model, batch):
        calls["n"] += 1
        return mse(model, batch) if model.training else torch.tensor(float(calls["n"]))

    history = training.train(model, regression_problem(), worsening_validation, epochs=20, patience=2,
                             validation_loader=[next(iter(regression_problem()))], device="cpu", progress=False)
    assert len(history["loss"]) == 3  # best after epoch 1, then two stale epochs
    assert history["val_loss"] == sorted(history["val_loss"])


def test_non_finite_loss_is_an_error():
    def explode(model, batch):
        return model(batch[0]).sum() * float("nan")

    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        training.train(nn.Linear(4, 1), regression_problem(), explode, epochs=1, device="cpu", progress=False)


# ----------------------------------------------------------------------------- the adversarial step
class Critic(nn.Module):
    """A discriminator returning (logits, features), as AnoGAN's does."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 1)

    def forward(self, images):
        return self.layer(images).squeeze(-1), images


def gan_problem(seed=0):
    torch.manual_seed(seed)
    generator, critic = nn.Linear(2, 3), Critic()
    real = [torch.randn(4, 3, generator=torch.Generator().manual_seed(seed + i)) + 2 for i in range(3)]
    codes = [torch.randn(4, 2, generator=torch.Generator().manual_seed(100 + i)) for i in range(3)]
    return generator, critic, real, codes


def test_adversarial_step_matches_the_hand_written_gan_update():
    generator, critic, real, codes = gan_problem()
    ours_g, ours_d = copy.deepcopy(generator), copy.deepcopy(critic)
    draws = iter(codes)
    history = training.train_adversarial(ours_g, ours_d, real, lambda n: next(draws), epochs=1, learning_rate=0.01,
                                         device="cpu", progress=False)
    # Goodfellow et al. (2014), Alg. 1 with the non-saturating generator loss, written out directly.
    adam_g = torch.optim.Adam(generator.parameters(), lr=0.01, betas=(0.5, 0.999))
    adam_d = torch.optim.Adam(critic.parameters(), lr=0.01, betas=(0.5, 0.999))
    d_losses, g_losses = [], []
    for x, z in zip(real, codes):
        fake = generator(z)
        d_loss = -(torch.log(torch.sigmoid(critic(x)[0])).mean() + torch.log(1 - torch.sigmoid(critic(fake.detach())[0])).mean())
        adam_d.zero_grad()
        d_loss.backward()
        adam_d.step()
        g_loss = -torch.log(torch.sigmoid(critic(fake)[0])).mean()
        adam_g.zero_grad()
        g_loss.backward()
        adam_g.step()
        d_losses.append(d_loss.item()), g_losses.append(g_loss.item())
    for ours, reference in [(ours_g, generator), (ours_d, critic)]:
        for a, b in zip(ours.parameters(), reference.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert history["d_loss"] == pytest.approx([sum(d_losses) / 3], rel=1e-5)
    assert history["g_loss"] == pytest.approx([sum(g_losses) / 3], rel=1e-5)
    assert not ours_g.training and not ours_d.training


def test_adversarial_training_reports_every_epoch_and_keeps_the_callers_random_state():
    generator, critic, real, _ = gan_problem()
    seen = []
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    history = training.train_adversarial(generator, critic, real, lambda n: torch.randn(n, 2), epochs=3,
                                         device="cpu", progress=False,
                                         end_of_epoch=lambda epoch, history: seen.append((epoch, len(history["d_loss"]))))
    torch.testing.assert_close(torch.rand(3), expected)
    assert seen == [(1, 1), (2, 2), (3, 3)]
    assert all(0 < p < 1 for p in history["d_real"])


def test_non_finite_adversarial_loss_is_an_error():
    generator, critic, real, _ = gan_problem()
    broken = [batch * float("nan") for batch in real]
    with pytest.raises(FloatingPointError, match="discriminator loss became nan; lower the learning rate .epoch 1"):
        training.train_adversarial(generator, critic, broken, lambda n: torch.randn(n, 2), epochs=1, device="cpu",
                                   progress=False)
