"""Evaluation loop: predictions over a dataset into one confusion matrix (mmseg's protocol)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from ..data.classes import DatasetInfo
from ..metrics import ConfusionMatrix
from .inference import predict_sliding, predict_whole

__all__ = ["dataset_metrics", "evaluate", "evaluate_checkpoint", "load_checkpoint_model"]


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    num_classes: int,
    mode: str = "whole",
    tile: int = 512,
    overlap: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> ConfusionMatrix:
    """Score ``model`` on ``dataset`` (items with a normalised ``image`` and a native-size ``mask``).

    ``mode``: ``"whole"`` (one pass per image, the paper's) or ``"slide"`` (``tile`` windows overlapping by
    ``overlap``, default tile // 4). Logits are resized to the mask's size before the argmax. Under
    torch.distributed each process scores its share and the counts are summed.
    """
    if mode not in ("whole", "slide"):
        raise ValueError(f"mode must be 'whole' or 'slide', got {mode!r}")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(num_classes)
    for index in tqdm(range(rank, len(dataset), world), desc="eval", unit="img", disable=not progress):
        sample = dataset[index]
        image = sample["image"][None].to(device)
        if mode == "whole":
            logits = predict_whole(model, image)
        else:
            logits = predict_sliding(model, image, tile, tile // 4 if overlap is None else overlap)
        mask = sample["mask"]
        logits = F.interpolate(logits.float(), size=mask.shape[-2:], mode="bilinear", align_corners=False)
        matrix.update(logits.argmax(1)[0].cpu(), mask)
    matrix.all_reduce()
    model.train(was_training)
    return matrix


def dataset_metrics(matrix: ConfusionMatrix, info: DatasetInfo, **extra) -> dict:
    """``matrix.compute()`` plus ``class_names``, the clutter-excluded ``mIoU_excl_clutter`` for ISPRS (the
    paper's headline) and ``extra`` (dataset, split, iteration, ...)."""
    metrics = matrix.compute()
    if info.clutter is not None:
        metrics["mIoU_excl_clutter"] = matrix.compute(exclude=(info.clutter,))["mIoU"]
    return dict(metrics, class_names=list(info.classes), **extra)


def load_checkpoint_model(checkpoint: str | Path, num_classes: int | None = None) -> nn.Module:
    """A run directory or Hub repo saved with ``save_pretrained``, in eval mode; checks the class count."""
    from ..models import from_pretrained

    path = Path(checkpoint)
    if path.exists() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} holds no config.json: expected a run directory or a saved model")
    model = from_pretrained(checkpoint).eval()
    classes = model.config.get("classes")
    if num_classes is not None and classes is not None and classes != num_classes:
        raise ValueError(
            f"{checkpoint} predicts {classes} classes but the dataset has {num_classes}: "
            "evaluate it on the dataset it was trained for"
        )
    return model


def evaluate_checkpoint(
    checkpoint: str | Path,
    dataset: str,
    data_root: str | Path | None = None,
    split: str = "val",
    mode: str = "whole",
    tile: int = 512,
) -> dict:
    """Score a saved model on ``dataset``: the metrics dict plus ``class_names`` (and, for ISPRS, the
    clutter-excluded ``mIoU_excl_clutter`` the paper reports)."""
    from ..data import dataset_info, eval_transforms, get_dataset
    from ..recipes import DATASET_RECIPES

    info = dataset_info(dataset)
    model = load_checkpoint_model(checkpoint, info.num_classes)
    data = get_dataset(dataset, data_root, split, eval_transforms(DATASET_RECIPES[dataset].test_scale))
    matrix = evaluate(model, data, info.num_classes, mode=mode, tile=tile, progress=True)
    return dataset_metrics(matrix, info, dataset=dataset, split=split, mode=mode)
