"""Inference: whole-image, sliding-window (blended overlapping tiles) and raster prediction.

Models are any ``nn.Module`` mapping normalised (B, C, H, W) images to logits (B, K, H, W).
``predict_raster`` streams a raster through the model one row of windows at a time, so a 6000x6000 Potsdam
tile never has to fit in memory as logits; GeoTIFFs keep their CRS and transform (rasterio, extra ``geo``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import nn

from ..data.classes import colourise
from ..data.transforms import MEAN, STD

__all__ = [
    "blend_weights",
    "predict_files",
    "predict_raster",
    "predict_sliding",
    "predict_whole",
    "window_starts",
]


def window_starts(length: int, tile: int, stride: int) -> list[int]:
    """Window origins along one axis: every ``stride``, the last window ending at the border."""
    if length <= tile:
        return [0]
    return sorted({min(k * stride, length - tile) for k in range(-(-(length - tile) // stride) + 1)})


def blend_weights(tile: int, overlap: int, device: torch.device | None = None) -> torch.Tensor:
    """(tile, tile) weights that fall off linearly over ``overlap`` pixels towards each edge (never 0)."""
    ramp_length = max(overlap, 1)
    index = torch.arange(tile, device=device, dtype=torch.float32)
    ramp = (torch.minimum(index + 1, tile - index) / ramp_length).clamp(max=1.0)
    return ramp[:, None] * ramp[None, :]


@torch.inference_mode()
def predict_whole(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Normalised (B, C, H, W) -> logits (B, K, H, W) in one pass."""
    logits = model(image)
    if logits.shape[-2:] != image.shape[-2:]:
        logits = F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
    return logits


def _windows(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    stride = tile - overlap
    return [(y, x) for y in window_starts(height, tile, stride) for x in window_starts(width, tile, stride)]


def _check_tiling(tile: int, overlap: int) -> None:
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got overlap={overlap} for tile={tile}")


@torch.inference_mode()
def predict_sliding(
    model: nn.Module, image: torch.Tensor, tile: int = 512, overlap: int = 128, batch_size: int = 4
) -> torch.Tensor:
    """Normalised (B, C, H, W), any size -> logits (B, K, H, W) from overlapping ``tile`` windows.

    Overlapping logits are blended with :func:`blend_weights`; images smaller than a tile are padded
    bottom/right with zeros (the mean colour after normalisation) and cropped back.
    """
    _check_tiling(tile, overlap)
    batch, _, height, width = image.shape
    padded = F.pad(image, (0, max(tile - width, 0), 0, max(tile - height, 0)))
    full_h, full_w = padded.shape[-2:]
    weights = blend_weights(tile, overlap, image.device)
    windows = _windows(full_h, full_w, tile, overlap)
    logits = norm = None
    for start in range(0, len(windows), batch_size):
        group = windows[start : start + batch_size]
        crops = torch.cat([padded[..., y : y + tile, x : x + tile] for y, x in group])
        out = predict_whole(model, crops).float()
        if logits is None:
            logits = image.new_zeros(batch, out.shape[1], full_h, full_w, dtype=torch.float32)
            norm = image.new_zeros(1, 1, full_h, full_w, dtype=torch.float32)
        for i, (y, x) in enumerate(group):
            logits[..., y : y + tile, x : x + tile] += out[i * batch : (i + 1) * batch] * weights
            norm[..., y : y + tile, x : x + tile] += weights
    return (logits / norm)[..., :height, :width]


# ---- rasters ------------------------------------------------------------------------------------------


class _Raster:
    """Row strips of an image file: GeoTIFFs through rasterio when installed, other files through PIL."""

    def __init__(self, path: Path):
        self.path, self.dataset, self.array = path, None, None
        if path.suffix.lower() in (".tif", ".tiff"):
            try:
                import rasterio
            except ImportError:
                rasterio = None
            if rasterio is not None:
                self.dataset = rasterio.open(path)
                self.bands, self.height, self.width = (
                    self.dataset.count,
                    self.dataset.height,
                    self.dataset.width,
                )
                return
        try:
            with Image.open(path) as image:
                array = np.asarray(image)
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"cannot read {path}: {err}") from err
        self.array = array[..., None] if array.ndim == 2 else array
        self.height, self.width, self.bands = self.array.shape

    def rows(self, top: int, bottom: int) -> np.ndarray:
        """(bands, bottom - top, width) array of rows top..bottom."""
        if self.dataset is not None:
            from rasterio.windows import Window

            return self.dataset.read(window=Window(0, top, self.width, bottom - top))
        return np.ascontiguousarray(self.array[top:bottom].transpose(2, 0, 1))

    def close(self) -> None:
        if self.dataset is not None:
            self.dataset.close()


def _strips(
    model: nn.Module, raster: _Raster, tile: int, overlap: int, batch_size: int, mean, std, device
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(top, class ids (rows, width) uint8)`` strips, top to bottom, each final once yielded."""
    height, width = raster.height, raster.width
    full_h, full_w = max(height, tile), max(width, tile)
    stride = tile - overlap
    ys, xs = window_starts(full_h, tile, stride), window_starts(full_w, tile, stride)
    weights = blend_weights(tile, overlap, device)
    mean_t = torch.tensor(mean, device=device).view(-1, 1, 1)
    std_t = torch.tensor(std, device=device).view(-1, 1, 1)
    acc = norm = None
    acc_top = 0  # the image row that acc's row 0 stands for
    for i, y in enumerate(ys):
        rows = torch.from_numpy(raster.rows(y, min(y + tile, height)).astype(np.float32)).to(device)
        strip = F.pad((rows - mean_t) / std_t, (0, full_w - width, 0, tile - rows.shape[1]))
        crops = [strip[:, :, x : x + tile] for x in xs]
        outs = [
            predict_whole(model, torch.stack(crops[j : j + batch_size]))
            for j in range(0, len(xs), batch_size)
        ]
        logits = torch.cat(outs).float()
        if acc is None:
            acc = logits.new_zeros(logits.shape[1], tile, full_w)
            norm = logits.new_zeros(tile, full_w)
        grow = y + tile - (acc_top + acc.shape[1])
        if grow > 0:
            acc = torch.cat([acc, acc.new_zeros(acc.shape[0], grow, full_w)], dim=1)
            norm = torch.cat([norm, norm.new_zeros(grow, full_w)], dim=0)
        for out, x in zip(logits, xs, strict=True):
            acc[:, y - acc_top : y - acc_top + tile, x : x + tile] += out * weights
            norm[y - acc_top : y - acc_top + tile, x : x + tile] += weights
        done = ys[i + 1] if i + 1 < len(ys) else full_h  # rows above the next window are final
        ready = min(done, height) - acc_top
        if ready > 0:
            classes = (acc[:, :ready, :width] / norm[:ready, :width]).argmax(0).to(torch.uint8)
            yield acc_top, classes.cpu().numpy()
        acc, norm = acc[:, done - acc_top :], norm[done - acc_top :]
        acc_top = done


@torch.inference_mode()
def predict_raster(
    model: nn.Module,
    src: str | Path,
    dst: str | Path,
    tile: int = 512,
    overlap: int = 128,
    batch_size: int = 4,
    mean: Sequence[float] = MEAN,
    std: Sequence[float] = STD,
    palette: Sequence[Sequence[int]] | None = None,
    device: str | torch.device | None = None,
) -> list[Path]:
    """Segment an image file of any size window by window; write class ids (and colours) to ``dst``.

    ``src``: PNG / JPEG / TIFF, or a GeoTIFF (read window by window with rasterio). ``dst``: ``.tif``
    gives a single-band GeoTIFF with the source's CRS and transform (and ``palette`` as its colour map),
    written strip by strip; ``.png`` gives a class-id PNG plus ``<stem>_color.png`` when ``palette`` is
    given. Returns the paths written. ``mean`` / ``std`` normalise the raw 0..255 values, one per band.
    """
    _check_tiling(tile, overlap)
    src, dst = Path(src), Path(dst)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    raster = _Raster(src)
    try:
        if raster.bands != len(mean):
            raise ValueError(
                f"{src} has {raster.bands} band(s) but the model takes {len(mean)} (one mean / std per band)"
            )
        strips = _strips(model, raster, tile, overlap, batch_size, mean, std, device)
        if dst.suffix.lower() in (".tif", ".tiff"):
            return _write_geotiff(strips, raster, dst, palette)
        classes = np.zeros((raster.height, raster.width), dtype=np.uint8)
        for top, rows in strips:
            classes[top : top + rows.shape[0]] = rows
    finally:
        raster.close()
    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(classes).save(dst)
    written = [dst]
    if palette is not None:
        colour = dst.with_name(f"{dst.stem}_color.png")
        Image.fromarray(colourise(classes, palette)).save(colour)
        written.append(colour)
    return written


def _write_geotiff(strips, raster: _Raster, dst: Path, palette) -> list[Path]:
    try:
        import rasterio
        from rasterio.windows import Window
    except ImportError as err:
        raise ImportError("writing GeoTIFFs needs rasterio: pip install 'vil-seg[geo]'") from err
    profile = dict(
        driver="GTiff", width=raster.width, height=raster.height, count=1, dtype="uint8", compress="lzw"
    )
    if raster.dataset is not None:
        profile.update(crs=raster.dataset.crs, transform=raster.dataset.transform)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(dst, "w", **profile) as out:
        for top, rows in strips:
            out.write(rows[None], window=Window(0, top, raster.width, rows.shape[0]))
        if palette is not None:
            out.write_colormap(1, {i: (*colour, 255) for i, colour in enumerate(palette)})
    return [dst]


def predict_files(
    checkpoint: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    tile: int = 512,
    overlap: int = 128,
    dataset: str | None = None,
) -> list[Path]:
    """Segment each input file with a saved model into ``out_dir`` (``.tif`` inputs give GeoTIFFs).

    The palette is the dataset's: ``dataset``, or the one the run in ``checkpoint`` was trained on.
    """
    import json

    from ..data import dataset_info
    from .evaluate import load_checkpoint_model

    run_config = Path(checkpoint) / "train_config.json"
    if dataset is None and run_config.is_file():
        dataset = json.loads(run_config.read_text())["dataset"]
    palette = dataset_info(dataset).palette if dataset else None
    model = load_checkpoint_model(checkpoint, dataset_info(dataset).num_classes if dataset else None)
    written = []
    for source in map(Path, inputs):
        suffix = ".tif" if source.suffix.lower() in (".tif", ".tiff") else ".png"
        target = Path(out_dir) / f"{source.stem}{suffix}"
        written += predict_raster(model, source, target, tile=tile, overlap=overlap, palette=palette)
    return written
