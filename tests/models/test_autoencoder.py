import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import structural_similarity

from mvtec_tutorial import data, ssim
from mvtec_tutorial.data import Augmentation
from mvtec_tutorial.models import autoencoder, autoencoder_networks
from mvtec_tutorial.models.autoencoder import ConvAutoencoder
from mvtec_tutorial.models.base import NotFittedError


def random_pair(seed, shape=(40, 37)):
    rng = np.random.default_rng(seed)
    image = rng.random(shape)
    return image, np.clip(image + 0.2 * rng.standard_normal(shape), 0, 1)


def as_tensor(*arrays):
    return [torch.from_numpy(array).reshape(1, 1, *array.shape) for array in arrays]


# ----------------------------------------------------------------------------- SSIM
@pytest.mark.parametrize("seed", range(3))
def test_ssim_map_matches_scikit_image_everywhere(seed):
    image, reference = random_pair(seed)
    expected_mean, expected_map = structural_similarity(image, reference, win_size=11, gaussian_weights=False,
                                                        data_range=1.0, full=True)
    ours = ssim.ssim_map(*as_tensor(image, reference))[0].numpy()
    np.testing.assert_allclose(ours, expected_map, rtol=0, atol=1e-12)  # borders included
    assert ours[5:-5, 5:-5].mean() == pytest.approx(expected_mean, abs=1e-12)  # skimage's mean skips borders
    ours32 = ssim.ssim_map(*[t.float() for t in as_tensor(image, reference)])[0].numpy()
    np.testing.assert_allclose(ours32, expected_map, rtol=0, atol=2e-5)


def test_ssim_map_averages_channels_like_scikit_image():
    rng = np.random.default_rng(3)
    image, reference = rng.random((3, 24, 24)), rng.random((3, 24, 24))
    _, expected = structural_similarity(image, reference, win_size=11, data_range=1.0, channel_axis=0, full=True)
    ours = ssim.ssim_map(torch.from_numpy(image)[None], torch.from_numpy(reference)[None])[0].numpy()
    np.testing.assert_allclose(ours, expected.mean(axis=0), rtol=0, atol=1e-12)


def test_ssim_gradient_is_correct():
    image, reference = as_tensor(*random_pair(4, shape=(7, 6)))
    image.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: ssim.ssim_map(x, reference, window_size=5).mean(), (image,))


def test_grayscale_matches_pil():
    rgb = np.random.default_rng(5).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float64)
    ours = data.to_grayscale(torch.from_numpy(rgb).permute(2, 0, 1)[None].double())[0, 0].numpy()
    np.testing.assert_allclose(ours, expected, atol=0.5 + 1e-9)  # PIL rounds to whole grey levels


def test_ssim_errors():
    with pytest.raises(ValueError, match="same shape"):
        ssim.ssim_map(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 15))
    with pytest.raises(ValueError, match="smaller than the SSIM window"):
        ssim.ssim_map(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))


def test_anomaly_maps_are_the_residuals():
    image, reference = random_pair(6, shape=(20, 20))
    tensors = [torch.from_numpy(np.stack([a, a ** 2, 1 - a]))[None] for a in (image, reference)]
    np.testing.assert_allclose(autoencoder.anomaly_maps(*tensors, loss="l2")[0].numpy(),
                               ((tensors[0] - tensors[1]) ** 2).numpy()[0].mean(axis=0), atol=1e-12)
    _, ssim_full = structural_similarity(image, reference, win_size=11, data_range=1.0, full=True)
    np.testing.assert_allclose(autoencoder.anomaly_maps(*as_tensor(image, reference), loss="ssim")[0].numpy(),
                               1 - ssim_full, atol=1e-12)


# ----------------------------------------------------------------------------- networks
@pytest.mark.parametrize("side, n_halvings", [(128, 4), (256, 5)])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_bergmann_network_shapes(side, n_halvings, in_channels):
    network = autoencoder.bergmann_network(in_channels, side, latent_dim=100)
    images = torch.rand(2, in_channels, side, side)
    assert network.encoder(images).shape == (2, 100, 1, 1)
    assert network(images).shape == images.shape
    strides = [layer.stride[0] for layer in network.encoder if isinstance(layer, torch.nn.Conv2d)]
    assert strides.count(2) == n_halvings  # 256 px: one more stride-2 stage than the paper's 128 px patch
    assert len(strides) == 9 + n_halvings - 4


@pytest.mark.parametrize("build, channels, side", [(autoencoder.bergmann_network, 1, 256),
                                                    (autoencoder.tutorial_network, 3, 224)])
def test_untrained_reconstruction_depends_on_the_input(build, channels, side):
    # With PyTorch's default initialisation the signal died out on its way through the layers:
    # every input gave the same output (spread 6e-10) and training stalled on that flat image.
    torch.manual_seed(0)
    with torch.no_grad():
        spread = build(channels, side)(torch.rand(4, channels, side, side)).std(dim=0).mean()
    assert spread > 1e-3


def test_tutorial_network_shapes():
    network = autoencoder.tutorial_network(3, 224)
    images = torch.rand(1, 3, 224, 224)
    assert network.encoder(images).shape == (1, 256, 11, 11)
    assert network(images).shape == images.shape
    assert 0 <= network(images).min() and network(images).max() <= 1  # sigmoid output


def test_network_side_errors():
    with pytest.raises(ValueError, match=r"128 \* 2\*\*k"):
        autoencoder.bergmann_network(3, 200)
    with pytest.raises(ValueError, match="multiple of 16 and at least 64"):
        autoencoder.tutorial_network(3, 48)


# ----------------------------------------------------------------------------- sliding window
def test_window_starts_cover_the_border():
    assert autoencoder.window_starts(256, 128, 30) == [0, 30, 60, 90, 120, 128]
    assert autoencoder.window_starts(128, 128, 30) == [0]
    assert autoencoder.window_starts(150, 128, 11) == [0, 11, 22]
    with pytest.raises(ValueError, match="larger than the image side"):
        autoencoder.window_starts(100, 128, 30)


def test_stitching_reproduces_an_identity_reconstruction_exactly():
    images = torch.rand(2, 3, 70, 67)  # 30 divides neither 70 - 32 nor 67 - 32: border windows overlap
    stitched = autoencoder.reconstruct_patchwise(lambda patches: patches, images, patch_size=32, stride=30,
                                                 batch_size=5)
    assert torch.equal(stitched, images)


def test_stitching_averages_overlapping_windows():
    images = torch.rand(1, 1, 40, 40)
    stitched = autoencoder.reconstruct_patchwise(lambda p: p.mean(dim=(1, 2, 3), keepdim=True).expand_as(p),
                                                 images, patch_size=16, stride=10)[0, 0].numpy()
    total, count = np.zeros((40, 40)), np.zeros((40, 40))
    for top in (0, 10, 20, 24):
        for left in (0, 10, 20, 24):
            total[top:top + 16, left:left + 16] += images[0, 0, top:top + 16, left:left + 16].double().mean().item()
            count[top:top + 16, left:left + 16] += 1
    np.testing.assert_allclose(stitched, total / count, rtol=1e-6)


# ----------------------------------------------------------------------------- augmentation
def test_plain_crops_copy_pixels():
    images = torch.rand(3, 1, 48, 48)
    views = autoencoder.random_views(images, 6, size=20, augmentation=Augmentation(),
                                     generator=torch.Generator().manual_seed(0))
    windows = images.unfold(2, 20, 1).unfold(3, 20, 1)  # (3, 1, 29, 29, 20, 20): every possible crop
    for view in views:
        assert ((windows - view[:, None, None]).abs().amax(dim=(-1, -2)) < 1e-5).any()


def test_flips_only_mirror():
    images = torch.rand(2, 3, 32, 32)
    views = autoencoder.random_views(images, 12, size=32, augmentation=Augmentation(hflip=True),
                                     generator=torch.Generator().manual_seed(1))
    candidates = torch.cat([images, images.flip(-1)])
    distances = (views[:, None] - candidates[None]).abs().amax(dim=(2, 3, 4))
    assert (distances.min(dim=1).values < 1e-5).all()
    assert (distances[:, 2:].min(dim=1).values < 1e-5).any()  # some are mirrored


def test_every_category_has_legal_augmentations():
    metal_nut, transistor = (data.category_info(name).augmentation for name in ("metal_nut", "transistor"))
    assert not (metal_nut.hflip or metal_nut.vflip)  # "flip" is one of metal_nut's defect types
    assert transistor == Augmentation()  # "misplaced" transistors are defects


# ----------------------------------------------------------------------------- the detector
def tiny(**overrides):
    return ConvAutoencoder(**{**dict(epochs=1, n_views=8, batch_size=8, device="cpu"), **overrides})


@pytest.fixture(scope="module")
def bottle_images(synthetic_root):
    return data.stack(data.MVTecAD(synthetic_root, "bottle", "train", image_size=64), progress=False)[0]


@pytest.mark.parametrize("loss", autoencoder.LOSSES)
def test_a_few_training_steps_lower_the_loss(bottle_images, loss):
    model = tiny(loss=loss, epochs=5, n_views=16, batch_size=4, learning_rate=1e-3, augmentation="bottle")
    history = model.fit(bottle_images, progress=False).history_["loss"]
    assert history[-1] < 0.9 * history[0]


@pytest.mark.parametrize("settings", [dict(loss="l2"), dict(loss="ssim", patch_size=32, stride=30),
                                      dict(architecture="tutorial", work_size=64)])
def test_interface_contract(bottle_images, settings):
    images = bottle_images[:3]
    runs = [tiny(**settings).fit(bottle_images, progress=False).predict(images) for _ in range(2)]
    maps, scores = runs[0]
    assert maps.shape == (3, 64, 64) and scores.shape == (3,)
    assert maps.dtype == np.float32 and scores.dtype == np.float32
    assert np.isfinite(maps).all() and (maps >= 0).all()
    np.testing.assert_array_equal(scores, maps.max(axis=(1, 2)))
    np.testing.assert_array_equal(maps, runs[1][0])  # same seed, same numbers


def test_work_size_returns_maps_at_input_size(bottle_images):
    model = tiny(work_size=32).fit(bottle_images, progress=False)
    assert model.predict(bottle_images[:2])[0].shape == (2, 64, 64)
    inputs, reconstructions = model.reconstruct(bottle_images[:2])
    assert inputs.shape == reconstructions.shape == (2, 1, 32, 32)  # SSIM: grayscale


def test_whole_image_model_refuses_another_size(bottle_images):
    model = tiny().fit(bottle_images, progress=False)
    with pytest.raises(ValueError, match="fitted on \\(64, 64\\) px images; load test images at the training"):
        model.predict(bottle_images[:1, :, :32, :32])
    with pytest.raises(ValueError, match="the network works on 64 x 64 px but got \\(32, 32\\)"):
        model.reconstruct(bottle_images[:1, :, :32, :32])


def test_predict_and_reconstruct_need_fit(bottle_images):
    with pytest.raises(NotFittedError, match="call fit first"):
        tiny().predict(bottle_images)
    with pytest.raises(NotFittedError, match="call fit first"):
        tiny().reconstruct(bottle_images)


@pytest.mark.parametrize("settings, message", [
    (dict(loss="l1"), "unknown loss 'l1'"),
    (dict(architecture="unet"), "unknown architecture"),
    (dict(augmentation="botle"), "no augmentation recorded for 'botle'"),
    (dict(patch_size=128), "patch_size 128 exceeds the image side 64"),
    (dict(n_views=0), "n_views must be a positive integer"),
])
def test_bad_settings_raise(bottle_images, settings, message):
    with pytest.raises(ValueError, match=message):
        tiny(**settings).fit(bottle_images, progress=False)


def test_recommended_settings_follow_the_paper_per_kind():
    texture, obj = ConvAutoencoder.recommended_settings("texture"), ConvAutoencoder.recommended_settings("object")
    assert (texture["patch_size"], texture["stride"]) == (128, 30) and "work_size" not in texture
    assert obj["work_size"] == 128 and "patch_size" not in obj
    assert obj["n_views"] * obj["epochs"] == 30_000
    assert ConvAutoencoder.recommended_settings("object", schedule="quick")["epochs"] == 1
    assert ConvAutoencoder.recommended_settings("object", schedule="paper")["work_size"] == 256
    with pytest.raises(ValueError, match="unknown kind 'textile'"):
        ConvAutoencoder.recommended_settings("textile")


# ----------------------------------------------------------------------------- the deck's normalisation
def test_a_linear_output_reaches_negative_values_a_sigmoid_cannot():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    sigmoid, linear = (autoencoder_networks.tutorial_network(3, 64, output=output) for output in ("sigmoid", "linear"))
    with torch.no_grad():
        assert 0 <= sigmoid(images).min() and sigmoid(images).max() <= 1
        assert linear(images).min() < 0


def test_sigmoid_after_imagenet_normalisation_cannot_be_darker_than_the_mean(bottle_images):
    # The deck's mismatch: normalised targets reach about -2, a sigmoid only (0, 1), so in image
    # units no reconstructed pixel can be darker than ImageNet's mean colour.
    model = tiny(loss="l2", normalisation="imagenet", work_size=64).fit(bottle_images, progress=False)
    _, reconstructions = model.reconstruct(bottle_images[:2])
    floor = np.array(autoencoder.IMAGENET_MEAN)[None, :, None, None]
    assert (reconstructions >= floor - 1e-6).all()
    assert model.input_std_ == autoencoder.IMAGENET_STD


def test_images_as_targets_let_a_sigmoid_reach_below_the_mean(bottle_images):
    # The fix that keeps the normalised inputs: de-normalise before the loss. Dark images (every
    # value below ImageNet's mean) can then be rebuilt, which the deck's mismatch cannot do.
    dark = bottle_images * 0.3
    settings = dict(loss="l2", normalisation="imagenet", epochs=8, n_views=8, learning_rate=1e-2)
    floor = np.array(autoencoder.IMAGENET_MEAN)[None, :, None, None]
    fixed = tiny(targets="images", **settings).fit(dark, progress=False)
    mismatched = tiny(**settings).fit(dark, progress=False)
    inputs, rebuilt = fixed.reconstruct(dark[:2])
    assert (rebuilt < floor).mean() > 0.5 and (mismatched.reconstruct(dark[:2])[1] >= floor - 1e-6).all()
    maps, _ = fixed.predict(dark[:2])
    np.testing.assert_allclose(maps, ((inputs - rebuilt) ** 2).mean(axis=1), rtol=1e-5, atol=1e-7)


def test_train_normalisation_uses_the_training_images_statistics(bottle_images):
    model = tiny(loss="l2", normalisation="train", output="linear").fit(bottle_images, progress=False)
    np.testing.assert_allclose(model.input_mean_, bottle_images.mean(dim=(0, 2, 3)).numpy(), rtol=1e-5)
    np.testing.assert_allclose(model.input_std_, bottle_images.std(dim=(0, 2, 3)).numpy(), rtol=1e-5)
    maps, _ = model.predict(bottle_images[:2])
    inputs, reconstructions = model.reconstruct(bottle_images[:2])
    np.testing.assert_allclose(maps, ((inputs - reconstructions) ** 2).mean(axis=1), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("settings, message", [
    (dict(normalisation="imagenet", loss="ssim"), "works with loss='l2' only"),
    (dict(normalisation="zscore", loss="l2"), "unknown normalisation 'zscore'"),
    (dict(output="tanh"), "unknown output 'tanh'"),
    (dict(targets="residuals"), "unknown targets 'residuals'"),
])
def test_bad_normalisation_settings_raise(bottle_images, settings, message):
    with pytest.raises(ValueError, match=message):
        tiny(**settings).fit(bottle_images, progress=False)
