"""vil-seg: Vision-LSTM (ViL) semantic segmentation.

``import vil_seg`` registers the ViL family with timm (``timm.create_model("vil_small")``) and as smp
encoders (``smp.create_model("upernet", encoder_name="vil_small")``). Neither library discovers plugins
by entry points, so import this package before creating a model by name.
"""

from . import vision_lstm
from .vision_lstm import VisionLSTM, checkpoint_filter_fn, stage_out_indices

__version__ = "0.1.0"

__all__ = ["VisionLSTM", "__version__", "checkpoint_filter_fn", "stage_out_indices", "vision_lstm"]

try:  # smp is a dependency; the timm trunk alone also works without it (e.g. on a bare GPU image)
    import segmentation_models_pytorch as _smp  # noqa: F401
except ImportError:
    pass
else:
    from .encoders import ViLEncoder, register_smp_encoder, register_smp_encoders
    from .engine import predict_raster
    from .models import ANN, APCNet, SegLSTM, from_pretrained

    register_smp_encoders()
    __all__ += [
        "ANN",
        "APCNet",
        "SegLSTM",
        "ViLEncoder",
        "from_pretrained",
        "predict_raster",
        "register_smp_encoder",
        "register_smp_encoders",
    ]
