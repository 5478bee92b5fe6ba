"""Datasets (LoveDA, ISPRS Vaihingen / Potsdam, synthetic scenes), their preparation, and transforms."""

from .classes import IGNORE_INDEX, DatasetInfo, dataset_info
from .datasets import PreparedDataset, SyntheticScenes, get_dataset
from .prepare import prepare_dataset
from .transforms import eval_transforms, train_transforms

__all__ = [
    "IGNORE_INDEX",
    "DatasetInfo",
    "PreparedDataset",
    "SyntheticScenes",
    "dataset_info",
    "eval_transforms",
    "get_dataset",
    "prepare_dataset",
    "train_transforms",
]
