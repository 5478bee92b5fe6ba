"""Segmentation models: Seg-LSTM (ViL encoder + the paper's heads) and smp-style APCNet / ANN.

All are smp ``SegmentationModel`` subclasses, so ``save_pretrained``, ``push_to_hub`` and
``from_pretrained`` work; :func:`from_pretrained` reloads any of them (and any smp model) after
``import vil_seg``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard, ModelCardData, hf_hub_download
from safetensors.torch import load_file
from segmentation_models_pytorch.base import SegmentationModel
from segmentation_models_pytorch.base.hub_mixin import supports_config_loading
from segmentation_models_pytorch.encoders import get_encoder
from torch import nn

from .encoders import ViLEncoder
from .heads import ANNHead, APCHead, ASPPHead, Classifier, DepthwiseSeparableASPPHead, FCNHead, UPerHead
from .vision_lstm import _HUB_ERRORS, _download_help, stage_out_indices

__all__ = ["ANN", "DECODERS", "APCNet", "SegLSTM", "from_pretrained"]

DECODERS = {
    "upernet": UPerHead,
    "deeplabv3": ASPPHead,
    "deeplabv3plus": DepthwiseSeparableASPPHead,
    "apcnet": APCHead,
    "ann": ANNHead,
}

_MODEL_CARD = """
---
{{ card_data }}
---
# {{ model_name }}

A {{ model_name }} semantic segmentation model saved with [vil-seg](https://pypi.org/project/vil-seg/).

## Load it

```python
import vil_seg  # registers the ViL models with timm and smp; import it before loading

model = vil_seg.from_pretrained("<this folder or Hub repo id>")
```

## Init parameters

```json
{{ model_parameters }}
```

## Metrics

{{ metrics | default("Not reported.", true) }}

## Dataset

{{ dataset | default("Not reported.", true) }}
"""


class _HeadModel(SegmentationModel):
    """An smp SegmentationModel whose decoder is one of vil_seg's heads and whose model card says
    ``import vil_seg`` first. Subclasses set ``encoder``, ``decoder``, ``segmentation_head``."""

    classification_head = None

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The maps the head reads (the encoder's levels without the input and the stride-2 level),
        after smp's input-size check."""
        if not (torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling()):
            self.check_input_shape(x)
        return self.encoder(x)[2:]

    @staticmethod
    def _at_input_size(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> logits (B, classes, H, W)."""
        return self._at_input_size(self.segmentation_head(self.decoder(self._features(x))), x)

    def generate_model_card(self, *args, **kwargs) -> ModelCard:
        metrics = kwargs.get("metrics")
        parameters = {k: v for k, v in self.config.items() if not k.startswith("_")}
        return ModelCard.from_template(
            card_data=ModelCardData(
                library_name="vil-seg",
                license="apache-2.0",
                tags=["vil-seg", "vision-lstm", "semantic-segmentation", "remote-sensing", "pytorch"],
                pipeline_tag="image-segmentation",
            ),
            template_str=_MODEL_CARD,
            model_name=self.__class__.__name__,
            model_parameters=json.dumps(parameters, indent=4),
            metrics=f"```json\n{json.dumps(metrics, indent=4)}\n```" if metrics is not None else None,
            dataset=kwargs.get("dataset"),
        )


def _load_encoder_weights(encoder: nn.Module, encoder_name: str, weights: str) -> None:
    """Load the named weights of a registered smp encoder from the Hugging Face Hub (as smp does)."""
    available = smp.encoders.encoders[encoder_name]["pretrained_settings"]
    if weights not in available:
        raise KeyError(
            f"unknown weights {weights!r} for encoder {encoder_name!r}; "
            f"available: {sorted(available)} or None"
        )
    settings = available[weights]
    try:
        path = hf_hub_download(
            settings["repo_id"], filename="model.safetensors", revision=settings["revision"]
        )
    except _HUB_ERRORS as err:
        raise RuntimeError(_download_help(encoder.model_name, None, err)) from err
    encoder.load_state_dict(load_file(path, device="cpu"))


class SegLSTM(_HeadModel):
    """Seg-LSTM: a ViL encoder in four stages at stride 16, a paper head and an optional FCN aux head.

    ``forward(x)``: (B, in_channels, H, W) with H, W divisible by 16 -> logits (B, classes, H, W).
    ``forward_with_aux(x)``: ``(logits, aux_logits or None)``, both at input resolution; the auxiliary head
    reads the third stage output (mmseg's ``in_index=2``; loss weight 0.4 in the paper's recipe).
    """

    requires_divisible_input_shape = True

    @supports_config_loading
    def __init__(
        self,
        decoder: str = "upernet",
        encoder_name: str = "vil_small",
        depths: Sequence[int] = (6, 6, 6, 6),
        classes: int = 6,
        aux_head: bool = True,
        encoder_weights: str | None = None,
        img_size: int | Sequence[int] = 512,
        in_channels: int = 3,
        encoder_kwargs: dict | None = None,
        decoder_channels: int = 512,
        aux_channels: int = 256,
        dropout: float = 0.1,
    ):
        """
        Args:
            decoder: ``"upernet"``, ``"deeplabv3"``, ``"deeplabv3plus"``, ``"apcnet"`` or ``"ann"``.
            encoder_name: a ViL variant (``vil_small`` is the paper's).
            depths: the four stage lengths; their sum is the trunk depth.
            classes: number of classes.
            aux_head: add the auxiliary FCN head on the third stage.
            encoder_weights: ``None`` or ``"imagenet"`` (the converted ImageNet weights on the Hub).
            img_size: the training size; the position embedding is stored at its patch grid.
            encoder_kwargs: passed to the timm trunk (``embed_dim``, ``drop_path_rate``, ``scan``, ...).
        """
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; expected one of {sorted(DECODERS)}")
        if len(depths) != 4:
            raise ValueError(f"depths must give four stage lengths, got {tuple(depths)}")
        model_kwargs = dict(encoder_kwargs or {})
        for key in ("depth", "img_size"):
            if key in model_kwargs:
                raise ValueError(
                    f"pass {key} through SegLSTM's own arguments (depths, img_size), not encoder_kwargs"
                )
        self.encoder = ViLEncoder(
            encoder_name,
            neck="none",
            out_indices=stage_out_indices(depths),
            model_kwargs=dict(model_kwargs, depth=sum(depths), img_size=img_size),
        )
        if encoder_weights is not None:
            _load_encoder_weights(self.encoder, encoder_name, encoder_weights)
        self.encoder.set_in_channels(in_channels, pretrained=encoder_weights is not None)
        stage_channels = self.encoder.out_channels[2:]
        self.decoder = DECODERS[decoder](stage_channels, decoder_channels)
        self.segmentation_head = Classifier(decoder_channels, classes, dropout)
        self.aux_head = (
            nn.Sequential(
                FCNHead(stage_channels[2], aux_channels), Classifier(aux_channels, classes, dropout)
            )
            if aux_head
            else None
        )

    def forward(self, x: torch.Tensor, with_aux: bool = False):
        """(B, C, H, W) -> logits (B, classes, H, W); with ``with_aux``: ``forward_with_aux(x)``."""
        return self.forward_with_aux(x) if with_aux else super().forward(x)

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, C, H, W) -> (logits, aux logits or None), both (B, classes, H, W)."""
        features = self._features(x)
        logits = self._at_input_size(self.segmentation_head(self.decoder(features)), x)
        aux = None if self.aux_head is None else self._at_input_size(self.aux_head(features[2]), x)
        return logits, aux


class _SmpEncoderHeadModel(_HeadModel):
    """One of vil_seg's heads (``head_cls``) on any smp encoder, with smp-style arguments.

    (B, in_channels, H, W) -> logits (B, classes, H, W).
    """

    head_cls: type[nn.Module]

    @supports_config_loading
    def __init__(
        self,
        encoder_name: str = "resnet34",
        encoder_depth: int = 5,
        encoder_weights: str | None = "imagenet",
        encoder_output_stride: int = 8,
        decoder_channels: int = 512,
        in_channels: int = 3,
        classes: int = 1,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.encoder = get_encoder(
            encoder_name,
            in_channels=in_channels,
            depth=encoder_depth,
            weights=encoder_weights,
            output_stride=encoder_output_stride,
        )
        self.decoder = self.head_cls(self.encoder.out_channels[2:], decoder_channels)
        self.segmentation_head = Classifier(decoder_channels, classes, dropout)


class APCNet(_SmpEncoderHeadModel):
    """APCNet (Adaptive Pyramid Context Network): its head on the last feature of any smp encoder.

    (B, in_channels, H, W) -> logits (B, classes, H, W).
    """

    head_cls = APCHead


class ANN(_SmpEncoderHeadModel):
    """ANN (Asymmetric Non-local Network): its head on the last two features of any smp encoder.

    (B, in_channels, H, W) -> logits (B, classes, H, W).
    """

    head_cls = ANNHead


_MODEL_CLASSES = {cls.__name__: cls for cls in (SegLSTM, APCNet, ANN)}


def from_pretrained(path_or_repo_id: str | Path, **kwargs) -> SegmentationModel:
    """Reload a model saved with ``save_pretrained`` / ``push_to_hub``: vil_seg's or any smp architecture.

    The encoder's own pretrained weights are not fetched again (``encoder_weights=None`` unless given):
    the saved weights replace them anyway. Other keyword arguments go to the class's ``from_pretrained``.
    """
    config_path = Path(path_or_repo_id) / "config.json"
    if not config_path.is_file():
        config_path = Path(
            hf_hub_download(str(path_or_repo_id), "config.json", revision=kwargs.get("revision"))
        )
    config = json.loads(config_path.read_text())
    class_name = config.get("_model_class")
    if class_name is None:
        raise ValueError(f"{config_path} names no _model_class: it was not written by save_pretrained")
    model_cls = _MODEL_CLASSES.get(class_name) or getattr(smp, class_name, None)
    if model_cls is None:
        raise ValueError(f"unknown model class {class_name!r} in {config_path}")
    if "encoder_weights" in config:
        kwargs.setdefault("encoder_weights", None)
    return model_cls.from_pretrained(path_or_repo_id, **kwargs)
