"""prepare + readers on generated archives in the official layouts; synthetic scenes; transforms."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from vil_seg import cli
from vil_seg.data import eval_transforms, get_dataset, prepare_dataset, train_transforms
from vil_seg.data.classes import ISPRS_COLOURS
from vil_seg.data.synthetic import generate_scene
from vil_seg.data.transforms import PadTo, RandomCrop
from vil_seg.metrics import ConfusionMatrix

UNKNOWN_COLOUR = (10, 20, 30)
rng = np.random.default_rng(0)


def _png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def _isprs_label(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A colour label with every class, black boundaries and one unknown colour; and its train ids."""
    ids = rng.integers(0, 6, (height, width))
    colours = np.array(list(ISPRS_COLOURS), dtype=np.uint8)
    rgb = colours[ids]
    rgb[::7] = 0  # eroded boundaries
    rgb[3, 5] = UNKNOWN_COLOUR
    ids[::7] = 255
    ids[3, 5] = 255
    return rgb, ids.astype(np.uint8)


def _mmseg_boxes(height: int, width: int, clip: int, stride: int) -> set:
    """The boxes of mmseg's ISPRS converter, simulated from its code (num + 1 origins k * clip, clamped)."""

    def count(length):
        n = -(-(length - clip) // stride)
        return n if n * stride + clip >= length else n + 1

    boxes = set()
    for row in range(count(height) + 1):
        for col in range(count(width) + 1):
            y_end, x_end = min(row * clip + clip, height), min(col * clip + clip, width)
            boxes.add((max(x_end - clip, 0), max(y_end - clip, 0), x_end, y_end))
    return boxes


@pytest.fixture
def vaihingen_raw(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    sizes = {1: (150, 200), 2: (130, 140), 3: (64, 64)}  # areas 1, 3 train; 2 val
    truth = {}
    with (
        zipfile.ZipFile(raw / "ISPRS_semantic_labeling_Vaihingen.zip", "w") as images,
        zipfile.ZipFile(
            raw / "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip", "w"
        ) as labels,
    ):
        for area, (h, w) in sizes.items():
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            rgb, ids = _isprs_label(h, w)
            images.writestr(f"top/top_mosaic_09cm_area{area}.tif", _png_bytes(image, "TIFF"))
            labels.writestr(f"top_mosaic_09cm_area{area}_noBoundary.tif", _png_bytes(rgb, "TIFF"))
            truth[area] = (image, ids)
    return raw, sizes, truth


def test_prepare_vaihingen_tiles_labels_and_manifest(vaihingen_raw, tmp_path, capsys):
    raw, sizes, truth = vaihingen_raw
    out = tmp_path / "prepared"
    assert cli.main(["prepare", "vaihingen", str(raw), str(out), "--tile", "64"]) == 0
    report = capsys.readouterr().out
    assert "colour not in the ISPRS table: 3" in report and "eroded boundary" in report
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset"] == "vaihingen" and manifest["tile_size"] == 64 and manifest["bands"] == "IRRG"
    expected = {"train": set(), "val": set()}
    for area, (h, w) in sizes.items():
        split = "train" if area in (1, 3) else "val"
        expected[split] |= {
            f"area{area}_{x1}_{y1}_{x2}_{y2}.png" for x1, y1, x2, y2 in _mmseg_boxes(h, w, 64, 32)
        }
    for split in ("train", "val"):
        assert {p.name for p in (out / "img_dir" / split).iterdir()} == expected[split]
        assert {p.name for p in (out / "ann_dir" / split).iterdir()} == expected[split]
    assert manifest["counts"] == {"train": len(expected["train"]), "val": len(expected["val"])}
    image, ids = truth[1]
    tile = np.asarray(Image.open(out / "ann_dir" / "train" / "area1_136_86_200_150.png"))
    assert (tile == ids[86:150, 136:200]).all()
    assert (
        np.asarray(Image.open(out / "img_dir" / "train" / "area1_0_0_64_64.png")) == image[:64, :64]
    ).all()

    dataset = get_dataset("vaihingen", out, "val")
    sample = dataset[0]
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, 64, 64)
    assert sample["mask"].dtype == torch.int64 and set(sample["mask"].unique().tolist()) <= {
        0,
        1,
        2,
        3,
        4,
        5,
        255,
    }


def test_prepare_potsdam_from_extracted_folders(tmp_path):
    raw = tmp_path / "raw"
    (raw / "2_Ortho_RGB" / "2_Ortho_RGB").mkdir(parents=True)
    (raw / "5_Labels_all_noBoundary").mkdir(parents=True)
    for tile_id in ("2_10", "2_13", "2_9"):  # train, val, and one in neither list (skipped)
        image = rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)
        Image.fromarray(image).save(raw / "2_Ortho_RGB" / "2_Ortho_RGB" / f"top_potsdam_{tile_id}_RGB.tif")
        Image.fromarray(_isprs_label(100, 120)[0]).save(
            raw / "5_Labels_all_noBoundary" / f"top_potsdam_{tile_id}_label_noBoundary.tif"
        )
    summary = prepare_dataset("potsdam", raw, tmp_path / "out", tile=64)
    assert summary.tiles == {"train": 4, "val": 4}
    assert (tmp_path / "out" / "img_dir" / "train" / "2_10_56_36_120_100.png").is_file()


def test_prepare_loveda(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    masks = {}
    for split, names in (("Train", (3, 7)), ("Val", (11,))):
        with zipfile.ZipFile(raw / f"{split}.zip", "w") as archive:
            for scene, name in zip(("Urban", "Rural", "Urban"), names, strict=False):
                mask = rng.integers(0, 8, (64, 64), dtype=np.uint8)
                mask[0, 0] = 9  # not a LoveDA value
                archive.writestr(
                    f"{split}/{scene}/images_png/{name}.png",
                    _png_bytes(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)),
                )
                archive.writestr(f"{split}/{scene}/masks_png/{name}.png", _png_bytes(mask))
                masks[name] = mask
    summary = prepare_dataset("loveda", raw, tmp_path / "out")
    assert summary.tiles == {"train": 2, "val": 1}
    assert summary.ignored["value above 7 (not a LoveDA class)"] == 3
    label = np.asarray(Image.open(tmp_path / "out" / "ann_dir" / "train" / "7.png"))
    expected = masks[7].astype(np.int64) - 1
    expected[(masks[7] == 0) | (masks[7] > 7)] = 255
    assert (label == expected).all()
    assert len(get_dataset("loveda", tmp_path / "out", "val")) == 1


def test_bad_input(vaihingen_raw, tmp_path):
    raw, _, _ = vaihingen_raw
    with pytest.raises(ValueError, match="unknown dataset 'isaid'"):
        get_dataset("isaid", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"lacks 2_Ortho_RGB\.zip, 5_Labels_all_noBoundary\.zip"):
        prepare_dataset("potsdam", raw, tmp_path / "p")
    with pytest.raises(FileNotFoundError, match="vil-seg prepare vaihingen"):
        get_dataset("vaihingen", raw, "train")
    with zipfile.ZipFile(raw / "ISPRS_semantic_labeling_Vaihingen.zip", "a") as images:
        images.writestr("top/top_mosaic_09cm_area5.tif", b"II*\x00 definitely not a tiff")
    with zipfile.ZipFile(
        raw / "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip", "a"
    ) as labels:
        labels.writestr("top_mosaic_09cm_area5_noBoundary.tif", _png_bytes(_isprs_label(8, 8)[0], "TIFF"))
    with pytest.raises(ValueError, match=r"cannot read top/top_mosaic_09cm_area5\.tif"):
        prepare_dataset("vaihingen", raw, tmp_path / "v")


def test_four_band_image_is_refused(tmp_path):
    raw = tmp_path / "raw"
    (raw / "2_Ortho_RGB").mkdir(parents=True)
    (raw / "5_Labels_all_noBoundary").mkdir()
    Image.fromarray(rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)).save(
        raw / "2_Ortho_RGB" / "top_potsdam_2_10_RGB.tif"
    )
    Image.fromarray(_isprs_label(32, 32)[0]).save(
        raw / "5_Labels_all_noBoundary" / "top_potsdam_2_10_label_noBoundary.tif"
    )
    with pytest.raises(ValueError, match="expected a 3-band uint8 image, got 4 band"):
        prepare_dataset("potsdam", raw, tmp_path / "out", tile=16)


def test_synthetic_scenes_are_deterministic_and_complete():
    a, b = generate_scene(5), generate_scene(5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(generate_scene(6)[0], a[0])
    train, val = get_dataset("synthetic", split="train"), get_dataset("synthetic", split="val")
    assert len(train) == 96 and len(val) == 24
    assert not torch.equal(train[0]["mask"], val[0]["mask"])
    present = torch.zeros(7, dtype=torch.bool)
    for i in range(8):
        present[train[i]["mask"].unique()] = True
    assert present.all(), "every class appears in the first scenes"


def test_synthetic_scenes_defeat_a_colour_only_classifier():
    """Nearest class-mean RGB, fit on training scenes, must stay <= 35 mIoU on validation scenes."""
    train = get_dataset("synthetic", split="train", num_scenes=24)
    pixels = torch.cat([s["image"].reshape(3, -1).T for s in train])
    labels = torch.cat([s["mask"].reshape(-1) for s in train])
    means = torch.stack([pixels[labels == c].mean(0) for c in range(7)])
    cm = ConfusionMatrix(7)
    for sample in get_dataset("synthetic", split="val", num_scenes=12):
        distance = torch.cdist(sample["image"].reshape(3, -1).T, means)
        cm.update(distance.argmin(1).view(sample["mask"].shape), sample["mask"])
    assert cm.compute()["mIoU"] <= 35


def test_train_transforms_shapes_and_semantics():
    torch.manual_seed(0)
    sample = get_dataset("synthetic", split="train", num_scenes=1)[0]
    out = train_transforms(scale=(256, 256), crop_size=128)(sample)
    assert out["image"].shape == (3, 128, 128) and out["mask"].shape == (128, 128)
    assert out["image"].abs().max() < 3  # normalised
    small = {"image": torch.full((3, 20, 30), 100.0), "mask": torch.zeros(20, 30, dtype=torch.int64)}
    padded = PadTo(32)(small)
    assert (
        padded["image"].shape == (3, 32, 32)
        and (padded["mask"][20:] == 255).all()
        and (padded["image"][:, :, 30:] == 0).all()
    )
    test = eval_transforms(scale=(128, 128))(sample)
    assert test["image"].shape == (3, 128, 128) and test["mask"].shape == (256, 256)  # mask stays native


def test_random_crop_avoids_single_class_windows():
    torch.manual_seed(0)
    mask = torch.zeros(64, 64, dtype=torch.int64)
    mask[:, 56:] = 1  # a crop of 16 mostly sees class 0 alone
    crop = RandomCrop(16, cat_max_ratio=0.75)
    mixed = sum(
        len(crop({"image": torch.zeros(3, 64, 64), "mask": mask})["mask"].unique()) > 1 for _ in range(50)
    )
    unchecked = RandomCrop(16, cat_max_ratio=1.0)
    plain = sum(
        len(unchecked({"image": torch.zeros(3, 64, 64), "mask": mask})["mask"].unique()) > 1
        for _ in range(50)
    )
    assert mixed > plain
