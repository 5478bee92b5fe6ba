"""vil-seg: Vision-LSTM (ViL) semantic segmentation.

``import vil_seg`` registers the ViL family with timm (``timm.create_model("vil_small")``). Neither timm
nor smp discovers plugins by entry points, so import this package before creating a model by name.
"""

from . import vision_lstm
from .vision_lstm import VisionLSTM, checkpoint_filter_fn, stage_out_indices

__version__ = "0.1.0"

__all__ = ["VisionLSTM", "__version__", "checkpoint_filter_fn", "stage_out_indices", "vision_lstm"]
