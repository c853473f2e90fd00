"""Normalization, crops and augmentation against torchvision's reference functions."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from training.presets import CenterCrop, Normalize, PCALighting, RandomCropFlip, TenCrop


def _images(n: int = 2) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 3, 256, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )


@pytest.mark.parametrize("crop", [224, 227])
def test_ten_crop_is_five_crop_plus_the_mirror_of_each_patch(crop: int) -> None:
    images = _images()
    got = TenCrop(crop)(images)  # (N, 10, 3, c, c)
    assert got.shape == (2, 10, 3, crop, crop)
    for i, image in enumerate(images):
        five = TF.five_crop(image, [crop, crop])  # TL, TR, BL, BR, centre
        expected = torch.stack([*five, *(TF.horizontal_flip(p) for p in five)])
        assert torch.equal(got[i], expected)


@pytest.mark.parametrize("crop", [224, 227])
def test_ten_crop_offsets_follow_the_contract(crop: int) -> None:
    """Corners at 0 and 256-c, centre at floor((256-c)/2), mirrors of the same patches."""
    image = _images(1)
    got = TenCrop(crop)(image)[0]
    e, m = 256 - crop, (256 - crop) // 2
    for j, (top, left) in enumerate([(0, 0), (0, e), (e, 0), (e, e), (m, m)]):
        patch = image[0, :, top : top + crop, left : left + crop]
        assert torch.equal(got[j], patch)
        assert torch.equal(got[j + 5], patch.flip(-1))


@pytest.mark.parametrize("crop", [224, 227])
def test_center_crop_matches_torchvision(crop: int) -> None:
    images = _images()
    assert torch.equal(CenterCrop(crop)(images), TF.center_crop(images, [crop, crop]))


def test_normalize_subtracts_a_mean_image_or_channel_means() -> None:
    images = _images()
    mean_image = torch.rand(3, 256, 256) * 255
    assert torch.equal(Normalize(mean_image)(images), images.float() - mean_image)
    mean, std = torch.tensor([10.0, 20.0, 30.0]), torch.tensor([2.0, 4.0, 8.0])
    expected = TF.normalize(images.float(), mean.tolist(), std.tolist())
    torch.testing.assert_close(Normalize(mean, std)(images), expected)
    with pytest.raises(ValueError, match="mean must be"):
        Normalize(torch.zeros(3, 224, 224))


def test_random_crop_flip_takes_real_crops_and_mirrors_half_of_them() -> None:
    images = _images(64).float()
    crop = 227
    out = RandomCropFlip(crop)(images, torch.Generator().manual_seed(1))
    assert out.shape == (64, 3, crop, crop)
    flips, offsets = 0, set()
    for i in range(64):
        found = []
        for top in range(30):
            for left in range(30):
                patch = images[i, :, top : top + crop, left : left + crop]
                found += [(top, left, False)] if torch.equal(out[i], patch) else []
                found += [(top, left, True)] if torch.equal(out[i], patch.flip(-1)) else []
        assert len(found) == 1, f"output {i} is not a crop of its input"
        flips += found[0][2]
        offsets.add(found[0][:2])
    assert 16 <= flips <= 48  # p = 1/2: 64 draws land here with probability > 0.9999
    assert len(offsets) > 40  # offsets vary per image


def test_random_crop_flip_is_reproducible_from_its_generator() -> None:
    images = _images(8)
    a = RandomCropFlip(224)(images, torch.Generator().manual_seed(5))
    b = RandomCropFlip(224)(images, torch.Generator().manual_seed(5))
    c = RandomCropFlip(224)(images, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_pca_lighting_noise_has_the_papers_covariance() -> None:
    """Offsets sum_i p_i a_i sqrt(l_i), a_i ~ N(0, 0.1), have covariance P diag(0.01 l) P^T."""
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    eigval = torch.tensor([900.0, 80.0, 20.0], dtype=torch.float64)
    lighting = PCALighting(eigval, q, alpha_std=0.1)
    offsets = lighting.offsets(200_000, torch.Generator().manual_seed(0)).double()
    expected = q @ torch.diag(0.01 * eigval) @ q.T
    torch.testing.assert_close(torch.cov(offsets.T), expected, rtol=0.03, atol=0.02)
    # The same offset is added to every pixel of an image.
    x = torch.zeros(4, 3, 8, 8)
    y = lighting(x, torch.Generator().manual_seed(1))
    assert torch.all(y == y[:, :, :1, :1])
    assert torch.equal(PCALighting(eigval, q, alpha_std=0.0)(x), x)


def test_pca_lighting_is_scaled_by_the_normalization_std() -> None:
    eigval, eigvec = torch.tensor([100.0, 10.0, 1.0]), torch.eye(3)
    plain = PCALighting(eigval, eigvec).offsets(5, torch.Generator().manual_seed(2))
    std = torch.tensor([2.0, 4.0, 8.0])
    scaled = PCALighting(eigval, eigvec, std=std).offsets(5, torch.Generator().manual_seed(2))
    torch.testing.assert_close(scaled, plain / std)
