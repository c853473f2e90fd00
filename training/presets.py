"""The input pipeline after decoding, as small modules that run on whole batches.

Images travel as uint8 (N, 3, 256, 256) tensors (four times smaller than float) and are
normalized, cropped and augmented on the device that runs the network. The same modules
serve training, evaluation and the ONNX export, so the three cannot disagree.

    train:    Normalize -> RandomCropFlip -> + PCALighting
    eval:     Normalize -> CenterCrop
    ten-crop: Normalize -> TenCrop (four corners, centre, and their mirrors)
"""

from __future__ import annotations

import torch
from torch import nn

from core import constants as C


class Normalize(nn.Module):
    """(x - mean) / std on 0..255 pixel values of the 256x256 image.

    Args:
        mean: (3, 256, 256) mean image (the paper) or (3,) per-channel mean, in 0..255 units.
        std: (3,) per-channel std in 0..255 units, or None for 1 (the paper divides by nothing).
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor | None = None) -> None:
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.float32)
        if mean.dim() == 1:
            mean = mean.view(3, 1, 1)
        if mean.shape not in ((3, 1, 1), (3, C.IMAGE_SIZE, C.IMAGE_SIZE)):
            raise ValueError(f"mean must be (3,) or (3, 256, 256), got {tuple(mean.shape)}")
        std = torch.ones(3) if std is None else torch.as_tensor(std, dtype=torch.float32)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std.reshape(3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std  # (N, 3, 256, 256)


class CenterCrop(nn.Module):
    """The central crop_size x crop_size patch, at floor((256 - c) / 2) like the contract."""

    def __init__(self, crop_size: int) -> None:
        super().__init__()
        self.crop_size = crop_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, m = self.crop_size, (x.shape[-1] - self.crop_size) // 2
        return x[..., m : m + c, m : m + c]


class TenCrop(nn.Module):
    """The paper's ten test patches: four corners and the centre, then their mirrors.

    Order as Caffe's `oversample` (and torchvision's `five_crop` followed by `hflip` of
    each patch): TL, TR, BL, BR, centre, mirrored TL, TR, BL, BR, centre. The mirrored
    patches are reflections of the same five patches; when 256 - c is odd (227) the
    mirrored centre is therefore not the centre crop of the mirrored image at the same
    offset, which is why the mirror's patches are cut at mirrored offsets.

    (N, 3, S, S) -> (N, 10, 3, c, c)
    """

    def __init__(self, crop_size: int) -> None:
        super().__init__()
        self.crop_size = crop_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, s = self.crop_size, x.shape[-1]
        m, e = (s - c) // 2, s - c
        corners = [(0, 0), (0, e), (e, 0), (e, e), (m, m)]  # (top, left): TL, TR, BL, BR, centre
        # The mirror of the patch at columns left .. left + c - 1 is the patch of the mirrored
        # image at columns e - left .. s - left - 1: the image is mirrored once (4.4x fewer
        # pixels than five patches), and all ten patches are cut and stacked in one step.
        mirror = x.flip(-1)
        patches = [x[..., t : t + c, left : left + c] for t, left in corners]
        patches += [mirror[..., t : t + c, e - left : s - left] for t, left in corners]
        return torch.stack(patches, dim=1)  # (N, 10, 3, c, c)


class RandomCropFlip(nn.Module):
    """A random crop_size crop of each image, mirrored with probability 1/2 (paper, 4.1).

    Each image of the batch gets its own offsets and flip, drawn from `generator`, and
    all of them are taken with one gather.
    """

    def __init__(self, crop_size: int) -> None:
        super().__init__()
        self.crop_size = crop_size

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n, _, s, _ = x.shape
        c, dev = self.crop_size, x.device
        top = torch.randint(0, s - c + 1, (n,), generator=generator, device=dev)
        left = torch.randint(0, s - c + 1, (n,), generator=generator, device=dev)
        flip = torch.rand(n, generator=generator, device=dev) < 0.5
        steps = torch.arange(c, device=dev)
        rows = top[:, None] + steps  # (N, c)
        cols = left[:, None] + torch.where(flip[:, None], c - 1 - steps, steps)  # (N, c)
        batch = torch.arange(n, device=dev)[:, None, None, None]
        chan = torch.arange(x.shape[1], device=dev)[None, :, None, None]
        return x[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]  # (N, 3, c, c)


class PCALighting(nn.Module):
    """The paper's colour augmentation (section 4.1).

    To every pixel of an image add [p1, p2, p3] [a1 s1, a2 s2, a3 s3]^T, with p_i the
    eigenvectors of the 3x3 covariance of RGB pixel values over the training set, s_i the
    standard deviation along p_i and a_i ~ N(0, alpha_std) drawn once per image.

    The paper writes the eigenvalue l_i where s_i = sqrt(l_i) stands here: Krizhevsky's own
    cuda-convnet2 scales the noise by `color_stdevs`, and with variances in 0..255 units
    the literal formula would shift pixels by hundreds of levels. The offset is divided by
    `std` because it is added to normalized images.

    Args:
        eigval: (3,) eigenvalues (variances) of the RGB covariance, in 0..255 units squared.
        eigvec: (3, 3) eigenvectors as columns.
        std: (3,) the normalization's per-channel std (None for 1).
        alpha_std: standard deviation of the a_i.
    """

    def __init__(
        self,
        eigval: torch.Tensor,
        eigvec: torch.Tensor,
        std: torch.Tensor | None = None,
        alpha_std: float = C.PCA_ALPHA_STD,
    ) -> None:
        super().__init__()
        self.alpha_std = alpha_std
        self.register_buffer("eigval", torch.as_tensor(eigval, dtype=torch.float32).reshape(3))
        self.register_buffer("eigvec", torch.as_tensor(eigvec, dtype=torch.float32).reshape(3, 3))
        std = torch.ones(3) if std is None else torch.as_tensor(std, dtype=torch.float32)
        self.register_buffer("std", std.reshape(3))

    def offsets(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, 3) RGB offsets, in normalized units, one row per image."""
        alpha = torch.randn(n, 3, generator=generator, device=self.eigval.device) * self.alpha_std
        # sum_i p_i * (a_i * s_i): eigvec columns are the p_i.
        return (alpha * self.eigval.sqrt()) @ self.eigvec.T / self.std

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.alpha_std == 0:
            return x
        return x + self.offsets(x.shape[0], generator)[:, :, None, None]


class TrainAugment(nn.Module):
    """uint8 (N, 3, 256, 256) -> normalized, randomly cropped, flipped and recoloured crops."""

    def __init__(self, normalize: Normalize, crop_size: int, lighting: PCALighting | None) -> None:
        super().__init__()
        self.normalize = normalize
        self.crop = RandomCropFlip(crop_size)
        self.lighting = lighting

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = self.crop(self.normalize(x), generator)  # (N, 3, c, c)
        return x if self.lighting is None else self.lighting(x, generator)


def normalize_from(normalization: dict) -> Normalize:
    """Build `Normalize` from a checkpoint's `normalization` entry ({"mean", "std"})."""
    return Normalize(torch.as_tensor(normalization["mean"]), _maybe(normalization.get("std")))


def _maybe(value) -> torch.Tensor | None:
    return None if value is None else torch.as_tensor(value)
