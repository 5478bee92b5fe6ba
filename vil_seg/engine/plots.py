"""Pictures of a run: training curves, and image | ground truth | prediction mosaics."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..data import DatasetInfo
from ..data.classes import colourise
from ..data.transforms import MEAN, STD

__all__ = ["plot_curves", "plot_predictions"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(log_csv: str | Path, path: str | Path) -> Path:
    """Loss, aux loss and learning rate per iteration, and validation mIoU, from a run's log.csv."""
    with Path(log_csv).open() as f:
        rows = list(csv.DictReader(f))
    plt = _pyplot()
    iters = [int(r["iter"]) for r in rows]
    fig, (ax_loss, ax_lr, ax_miou) = plt.subplots(1, 3, figsize=(14, 3.8))
    ax_loss.plot(iters, [float(r["loss"]) for r in rows], label="loss")
    ax_loss.plot(iters, [float(r["loss_aux"]) for r in rows], label="aux loss", alpha=0.7)
    ax_loss.set_xlabel("iteration")
    ax_loss.legend()
    ax_loss.set_title("training loss")
    ax_lr.plot(iters, [float(r["lr"]) for r in rows])
    ax_lr.set_xlabel("iteration")
    ax_lr.set_title("learning rate")
    val = [(int(r["iter"]), float(r["mIoU"])) for r in rows if r["mIoU"]]
    if val:
        ax_miou.plot(*zip(*val, strict=True), marker="o")
    ax_miou.set_xlabel("iteration")
    ax_miou.set_title("validation mIoU (%)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@torch.inference_mode()
def plot_predictions(
    model: nn.Module,
    dataset: Dataset,
    info: DatasetInfo,
    path: str | Path,
    count: int = 4,
    device: torch.device | str = "cpu",
) -> Path:
    """A mosaic of ``count`` samples: image | ground truth | prediction, with the class palette."""
    plt = _pyplot()
    was_training = model.training
    model.eval()
    count = min(count, len(dataset))
    fig, axes = plt.subplots(count, 3, figsize=(9, 3 * count), squeeze=False)
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    for row in range(count):
        sample = dataset[row]
        logits = model(sample["image"][None].to(device)).float().cpu()
        logits = torch.nn.functional.interpolate(logits, size=sample["mask"].shape, mode="bilinear")
        image = (sample["image"] * std + mean).clamp(0, 255).byte().permute(1, 2, 0).numpy()
        panels = (
            image,
            colourise(sample["mask"].numpy().astype(np.uint8), info.palette),
            colourise(logits.argmax(1)[0].numpy().astype(np.uint8), info.palette),
        )
        for ax, panel, title in zip(axes[row], panels, ("image", "ground truth", "prediction"), strict=True):
            ax.imshow(panel)
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title)
    handles = [plt.Rectangle((0, 0), 1, 1, color=np.asarray(c) / 255) for c in info.palette]
    fig.legend(handles, info.classes, loc="lower center", ncol=min(len(info.classes), 7), fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    model.train(was_training)
    return path
