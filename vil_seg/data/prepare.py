"""``vil-seg prepare``: the official LoveDA / ISPRS archives -> tiles with train-id labels and a manifest.

Output (mmseg's layout): ``OUT/img_dir/{train,val[,test]}/*.png``, ``OUT/ann_dir/{train,val}/*.png`` with
labels as train ids (0..K-1, 255 = ignore) and ``OUT/manifest.json``. ISPRS tiles use the boxes of mmseg's
converter: non-overlapping ``tile`` squares, the last row and column shifted to end at the border, each
box once, named ``area{N}_{x1}_{y1}_{x2}_{y2}.png`` (Vaihingen) or ``{i}_{j}_{x1}_{y1}_{x2}_{y2}.png``
(Potsdam). LoveDA's 1024x1024 images are copied untiled, as mmseg does.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from .classes import IGNORE_INDEX, ISPRS_COLOURS, dataset_info

__all__ = ["FORMAT_VERSION", "PrepareSummary", "prepare_dataset", "tile_starts"]

FORMAT_VERSION = 1

Image.MAX_IMAGE_PIXELS = 200_000_000  # Potsdam tiles are 6000x6000; PIL warns above 89M pixels

VAIHINGEN_TRAIN_AREAS = (1, 3, 5, 7, 11, 13, 15, 17, 21, 23, 26, 28, 30, 32, 34, 37)
POTSDAM_TRAIN = tuple(f"{i}_{j}" for i in (2, 3, 4, 5) for j in (10, 11, 12)) + tuple(
    f"{i}_{j}" for i in (6, 7) for j in range(7, 13)
)
POTSDAM_VAL = ("2_13", "2_14", "3_13", "3_14", *(f"{i}_{j}" for i in (4, 5, 6) for j in (13, 14, 15)), "7_13")

ARCHIVES = {
    "loveda": ("Train.zip", "Val.zip", "Test.zip"),
    "vaihingen": (
        "ISPRS_semantic_labeling_Vaihingen.zip",
        "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip",
    ),
    "potsdam": ("2_Ortho_RGB.zip", "5_Labels_all_noBoundary.zip"),
}


@dataclass
class PrepareSummary:
    """What ``prepare`` wrote: tiles per split and the ignored label pixels by cause."""

    dataset: str
    tiles: Counter = field(default_factory=Counter)
    pixels: int = 0
    ignored: Counter = field(default_factory=Counter)

    def __str__(self) -> str:
        tiles = ", ".join(f"{split} {n}" for split, n in sorted(self.tiles.items()))
        lines = [f"{self.dataset}: {tiles} tiles"]
        for cause, n in sorted(self.ignored.items()):
            lines.append(
                f"  ignored (255) label pixels, {cause}: {n:,} ({100 * n / max(self.pixels, 1):.2f}%)"
            )
        return "\n".join(lines)


def tile_starts(length: int, tile: int) -> list[int]:
    """Tile origins along one axis, as mmseg's converter: multiples of ``tile``, the last at the border."""
    if length <= tile:
        return [0]
    return sorted({min(k * tile, length - tile) for k in range(-(-length // tile))})


# ---- reading archives or folders ----------------------------------------------------------------------


class _Source:
    """The files of one official archive, read from the zip or from its extracted folder."""

    def __init__(self, raw_dir: Path, archive: str):
        self.zip_path = raw_dir / archive
        folder = raw_dir / archive.removesuffix(".zip")
        if self.zip_path.is_file():
            self.zip = zipfile.ZipFile(self.zip_path)
            self.names = {name: name for name in self.zip.namelist() if not name.endswith("/")}
        elif folder.is_dir():
            self.zip = None
            self.names = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
        else:
            raise FileNotFoundError(archive)
        self.archive = archive

    def find(self, pattern: str) -> Iterator[tuple[str, re.Match]]:
        """Members whose file name (not path) matches ``pattern``, sorted."""
        for name in sorted(self.names):
            match = re.fullmatch(pattern, name.rsplit("/", 1)[-1])
            if match:
                yield name, match

    def read_image(self, name: str) -> np.ndarray:
        """(H, W) or (H, W, C) uint8 array of a member; corrupt files raise ValueError naming them."""
        try:
            if self.zip is not None:
                with Image.open(io.BytesIO(self.zip.read(name))) as image:
                    return np.asarray(image)
            with Image.open(self.names[name]) as image:
                return np.asarray(image)
        except (UnidentifiedImageError, OSError, zipfile.BadZipFile) as err:
            raise ValueError(f"cannot read {name} in {self.archive}: {err}") from err


def _open_sources(dataset: str, raw_dir: Path, names: tuple[str, ...], required: int) -> list[_Source]:
    sources, missing = [], []
    for archive in names:
        try:
            sources.append(_Source(raw_dir, archive))
        except FileNotFoundError:
            missing.append(archive)
    if len(missing) > len(names) - required:
        raise FileNotFoundError(
            f"{dataset}: {raw_dir} lacks {', '.join(missing)} (the official archives, or folders of the same "
            f"names without .zip); expected: {', '.join(names)}"
        )
    return sources


# ---- labels -------------------------------------------------------------------------------------------


def _isprs_labels(rgb: np.ndarray, summary: PrepareSummary) -> np.ndarray:
    """ISPRS colour label (H, W, 3) -> train ids; black (eroded boundary) and unknown colours -> 255."""
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"an ISPRS label must be an RGB colour image, got shape {rgb.shape}")
    code = rgb[..., 0].astype(np.int64) << 16 | rgb[..., 1].astype(np.int64) << 8 | rgb[..., 2]
    lut_keys = np.array([r << 16 | g << 8 | b for (r, g, b) in ISPRS_COLOURS], dtype=np.int64)
    lut_values = np.array(list(ISPRS_COLOURS.values()), dtype=np.uint8)
    labels = np.full(code.shape, IGNORE_INDEX, dtype=np.uint8)
    for key, value in zip(lut_keys, lut_values, strict=True):
        labels[code == key] = value
    summary.pixels += labels.size
    black = code == 0
    summary.ignored["eroded boundary (black)"] += int(black.sum())
    unknown = (labels == IGNORE_INDEX) & ~black
    if unknown.any():
        summary.ignored["colour not in the ISPRS table"] += int(unknown.sum())
    return labels


def _loveda_labels(values: np.ndarray, summary: PrepareSummary) -> np.ndarray:
    """LoveDA grey labels: 0 = no-data -> 255, v -> v - 1; values above 7 -> 255 (counted)."""
    if values.ndim != 2:
        raise ValueError(f"a LoveDA label must be a single-band image, got shape {values.shape}")
    labels = values.astype(np.int64) - 1
    summary.pixels += labels.size
    summary.ignored["no-data (0)"] += int((values == 0).sum())
    unknown = values > 7
    if unknown.any():
        summary.ignored["value above 7 (not a LoveDA class)"] += int(unknown.sum())
    labels[(values == 0) | unknown] = IGNORE_INDEX
    return labels.astype(np.uint8)


def _check_bands(image: np.ndarray, name: str) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        bands = 1 if image.ndim == 2 else image.shape[2]
        raise ValueError(f"{name}: expected a 3-band uint8 image, got {bands} band(s) of {image.dtype}")
    return image


# ---- writers ------------------------------------------------------------------------------------------


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _write_tiles(
    image: np.ndarray,
    labels: np.ndarray,
    out: Path,
    split: str,
    stem: str,
    tile: int,
    summary: PrepareSummary,
) -> None:
    height, width = labels.shape
    for y in tile_starts(height, tile):
        for x in tile_starts(width, tile):
            y2, x2 = min(y + tile, height), min(x + tile, width)
            name = f"{stem}_{x}_{y}_{x2}_{y2}.png"
            _save(image[y:y2, x:x2], out / "img_dir" / split / name)
            _save(labels[y:y2, x:x2], out / "ann_dir" / split / name)
            summary.tiles[split] += 1


def _prepare_loveda(raw_dir: Path, out: Path, tile: int, summary: PrepareSummary) -> None:
    sources = _open_sources("loveda", raw_dir, ARCHIVES["loveda"], required=1)
    for source in sources:
        split = source.archive.removesuffix(".zip").lower()
        images = list(source.find(r"(\d+)\.png"))
        images = [(name, m) for name, m in images if "/images_png/" in f"/{name}"]
        for name, match in tqdm(images, desc=f"loveda {split}", unit="image"):
            image = _check_bands(source.read_image(name), name)
            _save(image, out / "img_dir" / split / f"{match[1]}.png")
            mask_name = name.replace("images_png", "masks_png")
            if mask_name in source.names:
                labels = _loveda_labels(source.read_image(mask_name), summary)
                _save(labels, out / "ann_dir" / split / f"{match[1]}.png")
            summary.tiles[split] += 1


def _prepare_vaihingen(raw_dir: Path, out: Path, tile: int, summary: PrepareSummary) -> None:
    images, labels = _open_sources("vaihingen", raw_dir, ARCHIVES["vaihingen"], required=2)
    members = [(n, m) for n, m in images.find(r"top_mosaic_09cm_area(\d+)\.tif") if "top/" in f"/{n}"]
    if not members:
        raise FileNotFoundError(f"{images.archive} holds no top/top_mosaic_09cm_area{{N}}.tif images")
    for name, match in tqdm(members, desc="vaihingen", unit="area"):
        area = int(match[1])
        label_name = next((n for n, _ in labels.find(rf"top_mosaic_09cm_area{area}_noBoundary\.tif")), None)
        if label_name is None:
            raise FileNotFoundError(f"{labels.archive} lacks top_mosaic_09cm_area{area}_noBoundary.tif")
        image = _check_bands(images.read_image(name), name)
        label = _isprs_labels(labels.read_image(label_name), summary)
        split = "train" if area in VAIHINGEN_TRAIN_AREAS else "val"
        _write_tiles(image, label, out, split, f"area{area}", tile, summary)


def _prepare_potsdam(raw_dir: Path, out: Path, tile: int, summary: PrepareSummary) -> None:
    images, labels = _open_sources("potsdam", raw_dir, ARCHIVES["potsdam"], required=2)
    members = list(images.find(r"top_potsdam_(\d+)_(\d+)_RGB\.tif"))
    if not members:
        raise FileNotFoundError(f"{images.archive} holds no top_potsdam_{{i}}_{{j}}_RGB.tif images")
    for name, match in tqdm(members, desc="potsdam", unit="tile"):
        tile_id = f"{match[1]}_{match[2]}"
        split = "train" if tile_id in POTSDAM_TRAIN else "val" if tile_id in POTSDAM_VAL else None
        if split is None:
            continue
        label_name = next((n for n, _ in labels.find(rf"top_potsdam_{tile_id}_label_noBoundary\.tif")), None)
        if label_name is None:
            raise FileNotFoundError(f"{labels.archive} lacks top_potsdam_{tile_id}_label_noBoundary.tif")
        image = _check_bands(images.read_image(name), name)
        label = _isprs_labels(labels.read_image(label_name), summary)
        _write_tiles(image, label, out, split, tile_id, tile, summary)


_PREPARERS = {"loveda": _prepare_loveda, "vaihingen": _prepare_vaihingen, "potsdam": _prepare_potsdam}


def prepare_dataset(name: str, raw_dir: str | Path, out_dir: str | Path, tile: int = 512) -> PrepareSummary:
    """Convert the official archives of ``name`` in ``raw_dir`` into tiles and a manifest in ``out_dir``."""
    if name not in _PREPARERS:
        raise ValueError(f"unknown dataset {name!r} to prepare; expected one of {sorted(_PREPARERS)}")
    if tile < 16:
        raise ValueError(f"tile must be at least 16 pixels, got {tile}")
    raw_dir, out = Path(raw_dir), Path(out_dir)
    if not raw_dir.is_dir():
        raise FileNotFoundError(
            f"{raw_dir} is not a folder; expected one holding {', '.join(ARCHIVES[name])}"
        )
    summary = PrepareSummary(name)
    _PREPARERS[name](raw_dir, out, tile, summary)
    info = dataset_info(name)
    manifest = {
        "format_version": FORMAT_VERSION,
        "dataset": name,
        "classes": list(info.classes),
        "palette": [list(c) for c in info.palette],
        "bands": info.bands,
        "label_encoding": f"train ids 0..{info.num_classes - 1}; {IGNORE_INDEX} = ignore",
        "ignore_index": IGNORE_INDEX,
        "tile_size": None if name == "loveda" else tile,
        "counts": dict(sorted(summary.tiles.items())),
        "ignored_pixels": dict(sorted(summary.ignored.items())),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return summary
