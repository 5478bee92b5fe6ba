"""Training, evaluation and inference loops. Models are any (B, C, H, W) -> (B, K, H, W) module."""

from .inference import predict_raster, predict_sliding, predict_whole

__all__ = ["predict_raster", "predict_sliding", "predict_whole"]
