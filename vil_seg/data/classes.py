"""Class names, palettes and label encodings of the datasets: the one place they are written down.

Every prepared dataset stores train ids 0..K-1, with 255 for pixels to ignore.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["IGNORE_INDEX", "ISPRS", "ISPRS_COLOURS", "LOVEDA", "DatasetInfo", "colourise", "dataset_info"]

IGNORE_INDEX = 255


@dataclass(frozen=True)
class DatasetInfo:
    """Classes and palette (RGB per train id) of a dataset, and what its images hold."""

    name: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    bands: str
    clutter: int | None = None  # the class the paper's ISPRS headline excludes

    @property
    def num_classes(self) -> int:
        return len(self.classes)


LOVEDA = DatasetInfo(
    name="loveda",
    classes=("background", "building", "road", "water", "barren", "forest", "agricultural"),
    palette=(
        (255, 255, 255),
        (255, 0, 0),
        (255, 255, 0),
        (0, 0, 255),
        (159, 129, 183),
        (0, 255, 0),
        (255, 195, 128),
    ),
    bands="RGB",
)

_ISPRS_CLASSES = ("impervious_surface", "building", "low_vegetation", "tree", "car", "clutter")
_ISPRS_PALETTE = ((255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0))
ISPRS = DatasetInfo(name="isprs", classes=_ISPRS_CLASSES, palette=_ISPRS_PALETTE, bands="", clutter=5)

# ISPRS label colours (RGB) -> train id. Black (eroded boundaries) and any other colour -> IGNORE_INDEX.
ISPRS_COLOURS: dict[tuple[int, int, int], int] = {colour: i for i, colour in enumerate(_ISPRS_PALETTE)}

_DATASETS = {
    "loveda": LOVEDA,
    "vaihingen": DatasetInfo("vaihingen", _ISPRS_CLASSES, _ISPRS_PALETTE, bands="IRRG", clutter=5),
    "potsdam": DatasetInfo("potsdam", _ISPRS_CLASSES, _ISPRS_PALETTE, bands="RGB", clutter=5),
    "synthetic": DatasetInfo("synthetic", LOVEDA.classes, LOVEDA.palette, bands="RGB"),
}


def dataset_info(name: str) -> DatasetInfo:
    """The classes and palette of ``name`` (``loveda``, ``vaihingen``, ``potsdam`` or ``synthetic``)."""
    if name not in _DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(_DATASETS)}")
    return _DATASETS[name]


def colourise(classes: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """Class ids (H, W) uint8 -> RGB (H, W, 3) uint8 with ``palette``; ids without a colour are black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    return lut[classes]
