"""The paper's training and test pipelines, on samples ``{"image": float (C, H, W) 0..255, "mask": int64}``.

Training (mmseg's as the Seg-LSTM configs set it): random resize to ``scale * U(0.5, 2.0)`` keeping the
aspect ratio -> random crop (at most ``cat_max_ratio`` of one class, up to 10 retries) -> horizontal flip
-> photometric distortion in uint8 semantics -> normalise -> pad bottom/right to the crop (image 0, mask
255). Test: resize the image (not the mask) to ``scale`` keeping the aspect ratio -> normalise.
Randomness comes from torch's global generator, so seeds and DataLoader workers govern it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from .classes import IGNORE_INDEX

__all__ = [
    "MEAN",
    "STD",
    "Compose",
    "Normalize",
    "PadTo",
    "PhotoMetricDistortion",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomResize",
    "Resize",
    "eval_transforms",
    "train_transforms",
]

Sample = dict[str, torch.Tensor]
MEAN = (123.675, 116.28, 103.53)  # ImageNet statistics on the 0..255 scale (mmseg's data preprocessor)
STD = (58.395, 57.12, 57.375)


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * torch.rand(()).item()


def _coin(prob: float) -> bool:
    return torch.rand(()).item() < prob


def _rescaled(height: int, width: int, scale: Sequence[int]) -> tuple[int, int]:
    """mmcv's keep-ratio rescale: fit the long side in max(scale) and the short side in min(scale)."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def _resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(image.shape[-2:]) == size:
        return image
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]


class Compose:
    def __init__(self, transforms: Sequence[Callable[[Sample], Sample]]):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for transform in self.transforms:
            sample = transform(sample)
        return sample


class RandomResize:
    """Resize to ``scale * r``, r ~ U(ratio_range), keeping the aspect ratio (the mask: nearest)."""

    def __init__(self, scale: Sequence[int], ratio_range: tuple[float, float] = (0.5, 2.0)):
        self.scale, self.ratio_range = tuple(scale), ratio_range

    def __call__(self, sample: Sample) -> Sample:
        ratio = _uniform(*self.ratio_range)
        target = [int(s * ratio) for s in self.scale]
        size = _rescaled(*sample["image"].shape[-2:], target)
        out = dict(sample, image=_resize_image(sample["image"], size))
        if "mask" in sample:
            out["mask"] = F.interpolate(sample["mask"][None, None].float(), size=size, mode="nearest")[
                0, 0
            ].long()
        return out


class RandomCrop:
    """A random ``crop_size`` window; redrawn (up to 10 times) while one class covers >= ``cat_max_ratio``."""

    def __init__(
        self, crop_size: int | Sequence[int], cat_max_ratio: float = 0.75, ignore_index: int = IGNORE_INDEX
    ):
        self.crop_size = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
        self.cat_max_ratio, self.ignore_index = cat_max_ratio, ignore_index

    def _box(self, height: int, width: int) -> tuple[int, int, int, int]:
        crop_h, crop_w = min(self.crop_size[0], height), min(self.crop_size[1], width)
        top = int(torch.randint(0, height - crop_h + 1, ()).item())
        left = int(torch.randint(0, width - crop_w + 1, ()).item())
        return top, left, crop_h, crop_w

    def __call__(self, sample: Sample) -> Sample:
        height, width = sample["image"].shape[-2:]
        box = self._box(height, width)
        if self.cat_max_ratio < 1 and "mask" in sample:
            for _ in range(10):
                top, left, h, w = box
                labels = sample["mask"][top : top + h, left : left + w]
                counts = torch.bincount(labels[labels != self.ignore_index].flatten())
                counts = counts[counts > 0]
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                box = self._box(height, width)
        top, left, h, w = box
        return {key: value[..., top : top + h, left : left + w] for key, value in sample.items()}


class RandomHorizontalFlip:
    def __init__(self, prob: float = 0.5):
        self.prob = prob

    def __call__(self, sample: Sample) -> Sample:
        if not _coin(self.prob):
            return sample
        return {key: value.flip(-1) for key, value in sample.items()}


class PhotoMetricDistortion:
    """mmseg's photometric distortion with uint8 semantics (clip to 0..255 and truncate after every step).

    Brightness + U(-32, 32), contrast x U(0.5, 1.5) (before or after the colour steps), saturation
    x U(0.5, 1.5) and hue + U(-18, 18) / 180 of a turn, each with probability 0.5. Saturation and hue use
    torchvision's operators (saturation blends with the greyscale image, as OpenCV's HSV scaling nearly does).
    """

    def __init__(
        self,
        brightness_delta: float = 32,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: float = 18,
    ):
        self.brightness_delta, self.contrast_range = brightness_delta, contrast_range
        self.saturation_range, self.hue_delta = saturation_range, hue_delta

    @staticmethod
    def _uint8(image: torch.Tensor) -> torch.Tensor:
        return image.clamp(0, 255).floor()

    def _contrast(self, image: torch.Tensor) -> torch.Tensor:
        return self._uint8(image * _uniform(*self.contrast_range)) if _coin(0.5) else image

    def __call__(self, sample: Sample) -> Sample:
        image = sample["image"]
        if _coin(0.5):
            image = self._uint8(image + _uniform(-self.brightness_delta, self.brightness_delta))
        contrast_first = _coin(0.5)
        if contrast_first:
            image = self._contrast(image)
        if _coin(0.5):
            image = self._uint8(TF.adjust_saturation(image / 255, _uniform(*self.saturation_range)) * 255)
        if _coin(0.5):
            hue = _uniform(-self.hue_delta, self.hue_delta) / 180
            image = self._uint8(TF.adjust_hue(image / 255, hue) * 255)
        if not contrast_first:
            image = self._contrast(image)
        return dict(sample, image=image)


class Normalize:
    def __init__(self, mean: Sequence[float] = MEAN, std: Sequence[float] = STD):
        self.mean, self.std = list(mean), list(std)

    def __call__(self, sample: Sample) -> Sample:
        return dict(sample, image=TF.normalize(sample["image"], self.mean, self.std))


class PadTo:
    """Pad bottom / right to at least ``size``: the image with 0, the mask with ``ignore_index``."""

    def __init__(self, size: int | Sequence[int], ignore_index: int = IGNORE_INDEX):
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.ignore_index = ignore_index

    def __call__(self, sample: Sample) -> Sample:
        height, width = sample["image"].shape[-2:]
        pad = (0, max(self.size[1] - width, 0), 0, max(self.size[0] - height, 0))
        if not any(pad):
            return sample
        out = dict(sample, image=F.pad(sample["image"], pad, value=0.0))
        if "mask" in sample:
            out["mask"] = F.pad(sample["mask"], pad, value=self.ignore_index)
        return out


class Resize:
    """Test-time keep-ratio resize of the image only (the mask stays at its native size for scoring)."""

    def __init__(self, scale: Sequence[int]):
        self.scale = tuple(scale)

    def __call__(self, sample: Sample) -> Sample:
        size = _rescaled(*sample["image"].shape[-2:], self.scale)
        return dict(sample, image=_resize_image(sample["image"], size))


def train_transforms(
    scale: Sequence[int] = (512, 512),
    crop_size: int = 512,
    ratio_range: tuple[float, float] = (0.5, 2.0),
    cat_max_ratio: float = 0.75,
    flip_prob: float = 0.5,
    photometric: bool = True,
    mean: Sequence[float] = MEAN,
    std: Sequence[float] = STD,
) -> Compose:
    """The paper's training pipeline (defaults: Table I / the Seg-LSTM configs)."""
    steps: list[Callable[[Sample], Sample]] = [
        RandomResize(scale, ratio_range),
        RandomCrop(crop_size, cat_max_ratio),
        RandomHorizontalFlip(flip_prob),
    ]
    if photometric:
        steps.append(PhotoMetricDistortion())
    steps += [Normalize(mean, std), PadTo(crop_size)]
    return Compose(steps)


def eval_transforms(
    scale: Sequence[int] | None = None, mean: Sequence[float] = MEAN, std: Sequence[float] = STD
) -> Compose:
    """The paper's test pipeline: optional keep-ratio resize of the image, then normalisation."""
    return Compose(([Resize(scale)] if scale else []) + [Normalize(mean, std)])
