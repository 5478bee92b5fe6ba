"""Sliding-window and raster prediction against a direct tile-by-tile reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from vil_seg import predict_raster
from vil_seg.engine.inference import blend_weights, predict_sliding, window_starts


class ToyModel(nn.Module):
    """A small conv net whose output depends on the window's borders (zero padding), like a real one."""

    def __init__(self, in_chans: int = 3, classes: int = 4):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(in_chans, 8, 5, padding=2), nn.Tanh(), nn.Conv2d(8, classes, 5, padding=2)
        )

    def forward(self, x):
        return self.net(x) + x.mean((1, 2, 3), keepdim=True)  # a global term: windows really differ


def _reference(model, image, tile, overlap):
    """Each window on its own, blended with explicit loops over windows and pixels' weights."""
    _, _, height, width = image.shape
    stride = tile - overlap
    ys = [*range(0, height - tile, stride), height - tile]
    xs = [*range(0, width - tile, stride), width - tile]
    total = torch.zeros(image.shape[0], 4, height, width)
    norm = torch.zeros(height, width)
    ramp = [min(i + 1, tile - i, overlap) / overlap for i in range(tile)]
    weight = torch.tensor([[a * b for b in ramp] for a in ramp])
    with torch.no_grad():
        for y in ys:
            for x in xs:
                total[..., y : y + tile, x : x + tile] += (
                    model(image[..., y : y + tile, x : x + tile]) * weight
                )
                norm[y : y + tile, x : x + tile] += weight
    return total / norm


def test_sliding_window_matches_tile_by_tile_reference():
    model = ToyModel().eval()
    image = torch.randn(2, 3, 150, 230, generator=torch.Generator().manual_seed(1))
    ours = predict_sliding(model, image, tile=64, overlap=16, batch_size=3)
    ref = _reference(model, image, 64, 16)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    whole = model(image)
    assert not torch.allclose(ours, whole, atol=1e-3)  # the windows matter: this test can fail


def test_window_layout_and_weights():
    assert window_starts(150, 64, 48) == [0, 48, 86]
    assert window_starts(40, 64, 48) == [0]
    weights = blend_weights(8, 4)
    assert weights.min() > 0 and weights.max() == 1 and torch.equal(weights, weights.T)


def test_small_image_is_padded_and_cropped_back():
    """One window: the model on the zero-padded image (the blend weights cancel), cropped back."""
    model = ToyModel().eval()
    image = torch.randn(1, 3, 40, 50, generator=torch.Generator().manual_seed(2))
    ours = predict_sliding(model, image, tile=64, overlap=16)
    with torch.no_grad():
        ref = model(torch.nn.functional.pad(image, (0, 14, 0, 24)))[..., :40, :50]
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)


def _raw_image(height=150, width=230, bands=3):
    gen = np.random.default_rng(3)
    return gen.integers(0, 256, (height, width, bands), dtype=np.uint8)


def test_raster_streaming_equals_in_memory_sliding(tmp_path):
    model = ToyModel().eval()
    raw = _raw_image()
    Image.fromarray(raw).save(tmp_path / "scene.png")
    palette = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    written = predict_raster(
        model, tmp_path / "scene.png", tmp_path / "out.png", tile=64, overlap=16, palette=palette
    )
    assert [p.name for p in written] == ["out.png", "out_color.png"]
    mean, std = torch.tensor([123.675, 116.28, 103.53]), torch.tensor([58.395, 57.12, 57.375])
    image = (torch.from_numpy(raw).permute(2, 0, 1).float() - mean[:, None, None]) / std[:, None, None]
    expected = predict_sliding(model, image[None], tile=64, overlap=16).argmax(1)[0].numpy()
    classes = np.asarray(Image.open(written[0]))
    assert (classes == expected).mean() > 0.999  # equal up to float ties
    colours = np.asarray(Image.open(written[1]))
    assert (colours == np.asarray(palette, dtype=np.uint8)[classes]).all()


def test_geotiff_keeps_crs_and_transform(tmp_path):
    import rasterio  # the `geo` extra (part of `dev`)
    from rasterio.transform import from_origin

    raw = _raw_image(130, 170).transpose(2, 0, 1)
    transform = from_origin(366_000.0, 5_810_000.0, 0.05, 0.05)
    profile = dict(
        driver="GTiff", width=170, height=130, count=3, dtype="uint8", crs="EPSG:32633", transform=transform
    )
    with rasterio.open(tmp_path / "ortho.tif", "w", **profile) as out:
        out.write(raw)
    model = ToyModel().eval()
    predict_raster(
        model, tmp_path / "ortho.tif", tmp_path / "pred.tif", tile=64, overlap=16, palette=[(0, 0, 0)] * 4
    )
    with rasterio.open(tmp_path / "pred.tif") as pred:
        assert pred.crs.to_epsg() == 32633 and pred.transform == transform
        assert pred.count == 1 and pred.shape == (130, 170)
        classes = pred.read(1)
    Image.fromarray(raw.transpose(1, 2, 0)).save(tmp_path / "same.png")
    predict_raster(model, tmp_path / "same.png", tmp_path / "same_pred.png", tile=64, overlap=16)
    assert (classes == np.asarray(Image.open(tmp_path / "same_pred.png"))).all()


def test_bad_raster_input(tmp_path):
    model = ToyModel().eval()
    Image.fromarray(_raw_image(bands=4)).save(tmp_path / "rgba.png")
    with pytest.raises(ValueError, match=r"has 4 band\(s\) but the model takes 3"):
        predict_raster(model, tmp_path / "rgba.png", tmp_path / "x.png", tile=64, overlap=16)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(ValueError, match="cannot read"):
        predict_raster(model, tmp_path / "broken.png", tmp_path / "x.png", tile=64, overlap=16)
    with pytest.raises(ValueError, match="overlap must be"):
        predict_sliding(model, torch.zeros(1, 3, 64, 64), tile=64, overlap=64)
