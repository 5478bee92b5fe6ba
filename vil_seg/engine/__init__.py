"""Training, evaluation and inference loops. Models are any (B, C, H, W) -> (B, K, H, W) module."""

from .evaluate import evaluate
from .inference import predict_raster, predict_sliding, predict_whole
from .trainer import TrainConfig, build_model, train

__all__ = [
    "TrainConfig",
    "build_model",
    "evaluate",
    "predict_raster",
    "predict_sliding",
    "predict_whole",
    "train",
]
