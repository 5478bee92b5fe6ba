"""Segmentation metrics with mmseg's protocol: one confusion matrix summed over the whole dataset.

``compute()`` gives, in percent, per class (a list indexed by class id)
``IoU = I / (P + L - I)``, ``Acc = I / L`` and ``F1 = 2 I / (P + L)`` (NaN where the denominator is 0),
their nan-means ``mIoU``, ``mAcc``, ``mF1`` over the classes not excluded, and ``aAcc = sum I / sum L``,
with I, P, L the intersection, prediction and label areas over the whole dataset.

mmseg computes its F-score as ``2 * precision * recall / (precision + recall)``; that equals ``F1`` here
except for a class with I = 0 but P + L > 0, where mmseg gets NaN (0 / 0) and this gets 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

__all__ = ["ConfusionMatrix", "format_metrics", "metrics_json"]


class ConfusionMatrix:
    """A ``(num_classes, num_classes)`` int64 count matrix: rows are labels, columns predictions."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def reset(self) -> None:
        self.matrix.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Count one batch. ``pred`` and ``target``: integer tensors of the same shape (class ids)."""
        if pred.shape != target.shape:
            raise ValueError(
                f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape"
            )
        if pred.is_floating_point() or target.is_floating_point():
            raise ValueError("pred and target must be integer class ids (take argmax of the logits first)")
        pred, target = pred.reshape(-1).long().cpu(), target.reshape(-1).long().cpu()
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        k = self.num_classes
        for name, values in (("target", target), ("pred", pred)):
            if values.numel() and (values.min() < 0 or values.max() >= k):
                raise ValueError(
                    f"{name} holds ids outside 0..{k - 1} (and {self.ignore_index} = ignore in target): "
                    f"{sorted(set(values[(values < 0) | (values >= k)].unique().tolist()))[:10]}"
                )
        self.matrix += torch.bincount(target * k + pred, minlength=k * k).view(k, k)

    def all_reduce(self) -> None:
        """Sum the counts of all processes (no-op outside torch.distributed)."""
        if dist.is_available() and dist.is_initialized():
            matrix = self.matrix.to("cuda" if dist.get_backend() == "nccl" else "cpu")
            dist.all_reduce(matrix)
            self.matrix = matrix.cpu()

    def compute(self, exclude: Sequence[int] = ()) -> dict:
        """The metrics in percent (see the module docstring); ``exclude``: class ids left out of the means."""
        counts = self.matrix.double()
        intersection = counts.diag()
        label_area, pred_area = counts.sum(1), counts.sum(0)
        iou = _percent(intersection, label_area + pred_area - intersection)
        acc = _percent(intersection, label_area)
        f1 = _percent(2 * intersection, label_area + pred_area)
        kept = [i for i in range(self.num_classes) if i not in set(exclude)]
        return {
            "IoU": iou.tolist(),
            "Acc": acc.tolist(),
            "F1": f1.tolist(),
            "mIoU": _nanmean(iou[kept]),
            "mAcc": _nanmean(acc[kept]),
            "mF1": _nanmean(f1[kept]),
            "aAcc": (100 * intersection.sum() / label_area.sum()).item()
            if label_area.sum() > 0
            else math.nan,
        }

    def plot(self, path: str | Path, class_names: Sequence[str], title: str = "confusion matrix") -> Path:
        """Write a row-normalised confusion matrix PNG (rows: labels, columns: predictions)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.matrix.double()
        normalised = (rows / rows.sum(1, keepdim=True).clamp_min(1)).numpy()
        size = 1.0 + 0.6 * self.num_classes
        fig, ax = plt.subplots(figsize=(size + 1.5, size))
        image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(self.num_classes), class_names, rotation=45, ha="right")
        ax.set_yticks(range(self.num_classes), class_names)
        ax.set_xlabel("prediction")
        ax.set_ylabel("label")
        ax.set_title(title)
        for i in range(self.num_classes):
            for j in range(self.num_classes):
                value = normalised[i, j]
                ax.text(
                    j, i, f"{value:.2f}", ha="center", va="center", color="white" if value > 0.5 else "black"
                )
        fig.colorbar(image, ax=ax, fraction=0.046)
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def _percent(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    return torch.where(denominator > 0, 100 * numerator / denominator.clamp_min(1e-300), math.nan)


def _nanmean(values: torch.Tensor) -> float:
    values = values[~values.isnan()]
    return values.mean().item() if values.numel() else math.nan


def format_metrics(metrics: dict) -> str:
    """A per-class table and the means of a metrics dict (``compute()`` plus ``class_names``)."""
    names = metrics.get("class_names") or [str(i) for i in range(len(metrics["IoU"]))]
    width = max(len(n) for n in [*names, "class"])

    def cell(value) -> str:
        return (
            "   nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:6.2f}"
        )

    lines = [f"{'class':<{width}}    IoU    Acc     F1"]
    for i, name in enumerate(names):
        lines.append(
            f"{name:<{width}} {cell(metrics['IoU'][i])} {cell(metrics['Acc'][i])} {cell(metrics['F1'][i])}"
        )
    means = "   ".join(f"{key} {cell(metrics[key])}" for key in ("mIoU", "mAcc", "mF1", "aAcc"))
    lines.append(means)
    if "mIoU_excl_clutter" in metrics:
        lines.append(f"mIoU without clutter (the paper's ISPRS figure) {cell(metrics['mIoU_excl_clutter'])}")
    return "\n".join(lines)


def metrics_json(metrics: dict) -> str:
    """A metrics dict as JSON text, NaN written as null (plain ``json.dumps`` writes invalid ``NaN``)."""

    def finite(value):
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, list):
            return [finite(v) for v in value]
        if isinstance(value, dict):
            return {k: finite(v) for k, v in value.items()}
        return value

    return json.dumps(finite(metrics), indent=2) + "\n"
