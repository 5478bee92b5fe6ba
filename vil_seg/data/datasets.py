"""Dataset readers.

Items are dicts ``{"image": float32 (C, H, W) with raw values 0..255, "mask": int64 (H, W)}`` (torchgeo's
convention; normalisation belongs to the transforms). Masks hold train ids, 255 = ignore.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .classes import DatasetInfo, dataset_info
from .prepare import FORMAT_VERSION
from .synthetic import generate_scene

__all__ = ["PreparedDataset", "SyntheticScenes", "get_dataset"]

Sample = dict[str, torch.Tensor]
Transform = Callable[[Sample], Sample]


def _read_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read {path}: {err}") from err


class PreparedDataset(Dataset):
    """A folder written by ``vil-seg prepare``: ``img_dir/<split>/*.png``, ``ann_dir/<split>/*.png``."""

    def __init__(
        self, name: str, root: str | Path, split: str = "train", transforms: Transform | None = None
    ):
        self.info: DatasetInfo = dataset_info(name)
        self.root, self.split, self.transforms = Path(root), split, transforms
        manifest_path = self.root / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(
                f"{self.root} has no manifest.json: it was not written by `vil-seg prepare {name} RAW_DIR "
                f"{self.root}` (an mmseg-converted folder holds other label values; prepare the official "
                "archives instead)"
            )
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("dataset") != name or manifest.get("format_version") != FORMAT_VERSION:
            found = f"{manifest.get('dataset')!r} (format {manifest.get('format_version')})"
            raise ValueError(
                f"{manifest_path} describes {found}, not {name!r} (format {FORMAT_VERSION}): "
                f"run `vil-seg prepare {name}` again"
            )
        self.images = sorted((self.root / "img_dir" / split).glob("*.png"))
        if not self.images:
            available = sorted(p.name for p in (self.root / "img_dir").iterdir() if p.is_dir())
            raise FileNotFoundError(f"{self.root} holds no {split!r} images; its splits: {available}")
        self.has_masks = (self.root / "ann_dir" / split).is_dir()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Sample:
        path = self.images[index]
        image = _read_png(path)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{path}: expected a 3-band image, got shape {image.shape}")
        sample = {"image": torch.from_numpy(image.copy()).permute(2, 0, 1).float()}
        if self.has_masks:
            mask = _read_png(self.root / "ann_dir" / self.split / path.name)
            sample["mask"] = torch.from_numpy(mask.astype(np.int64))
        return self.transforms(sample) if self.transforms else sample


class SyntheticScenes(Dataset):
    """Seeded procedural aerial scenes with LoveDA's 7 classes (see :mod:`vil_seg.data.synthetic`).

    The same ``seed`` gives the same scenes; ``train``, ``val`` and ``test`` never share one. Generated
    scenes are kept in memory (``cache``), so epochs after the first cost only the transforms.
    """

    _SPLIT_OFFSETS: ClassVar[dict[str, int]] = {"train": 0, "val": 1_000_000, "test": 2_000_000}
    _DEFAULT_SIZES: ClassVar[dict[str, int]] = {"train": 96, "val": 24, "test": 24}

    def __init__(
        self,
        split: str = "train",
        transforms: Transform | None = None,
        num_scenes: int | None = None,
        size: int = 256,
        seed: int = 0,
        cache: bool = True,
    ):
        if split not in self._SPLIT_OFFSETS:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(self._SPLIT_OFFSETS)}")
        self.info = dataset_info("synthetic")
        self.split, self.transforms, self.size, self.seed = split, transforms, size, seed
        self.num_scenes = self._DEFAULT_SIZES[split] if num_scenes is None else num_scenes
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = {} if cache else None

    def __len__(self) -> int:
        return self.num_scenes

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.num_scenes:
            raise IndexError(index)
        scene = self._cache.get(index) if self._cache is not None else None
        if scene is None:
            scene = generate_scene(
                self.seed * 10_000_000 + self._SPLIT_OFFSETS[self.split] + index, self.size
            )
            if self._cache is not None:
                self._cache[index] = scene
        sample = {"image": scene[0].float(), "mask": scene[1].clone()}
        return self.transforms(sample) if self.transforms else sample


def get_dataset(
    name: str,
    root: str | Path | None = None,
    split: str = "train",
    transforms: Transform | None = None,
    **kwargs,
) -> Dataset:
    """``loveda``, ``vaihingen`` or ``potsdam`` from a ``vil-seg prepare`` folder ``root``, or ``synthetic``.

    ``kwargs`` go to :class:`SyntheticScenes` (``num_scenes``, ``size``, ``seed``).
    """
    dataset_info(name)  # unknown names fail here, with the list of known ones
    if name == "synthetic":
        return SyntheticScenes(split, transforms, **kwargs)
    if root is None:
        raise ValueError(f"{name} needs root: a folder written by `vil-seg prepare {name} RAW_DIR OUT_DIR`")
    if kwargs:
        raise TypeError(f"unexpected arguments for {name}: {sorted(kwargs)}")
    return PreparedDataset(name, root, split, transforms)
