"""The decode heads of the Seg-LSTM configurations, for feature maps of any strides.

Each head takes a list of feature maps (finest first) with their channel counts, and returns a
``channels``-wide map (B, channels, h, w) for a classifier (:class:`Classifier`): at the resolution of the
finest map it reads for UPerHead and DepthwiseSeparableASPPHead, of the last map for the others.

| head | reads | as in the paper's configs |
|---|---|---|
| UPerHead | all maps (PPM on the last) | UPerNet |
| ASPPHead | the last map | DeepLabV3 |
| DepthwiseSeparableASPPHead | the first (48-channel low-level branch) and the last | DeepLabV3+ |
| APCHead | the last map | APCNet |
| ANNHead | the last two (low, high) | ANN |
| FCNHead | one map | the auxiliary head on the third stage |

Conventions of the configs: conv (no bias) + BatchNorm + ReLU blocks, 512 channels, bilinear resizes
(align_corners=False), classifier = Dropout2d(0.1) + 1x1 conv.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import ConvNormAct
from torch import nn

__all__ = [
    "ANNHead",
    "APCHead",
    "ASPPHead",
    "Classifier",
    "DepthwiseSeparableASPPHead",
    "FCNHead",
    "UPerHead",
    "init_head_weights",
]


def _cbr(in_channels: int, out_channels: int, kernel_size: int = 1, **kwargs) -> ConvNormAct:
    """conv (no bias) + BatchNorm + ReLU, 'same' padding (dilation included)."""
    return ConvNormAct(in_channels, out_channels, kernel_size, act_layer=nn.ReLU, **kwargs)


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def init_head_weights(module: nn.Module) -> None:
    """As mmseg's ConvModule: conv-BN-ReLU blocks get Kaiming-normal convs (fan_out) and BatchNorm 1 / 0.

    Plain convs (APCNet's affinity conv, ANN's value and output projections) keep PyTorch's default init,
    as in mmseg: a Kaiming init with fan_out = 1 would saturate APCNet's scale-1 sigmoid.
    """
    for m in module.modules():
        if isinstance(m, ConvNormAct):
            nn.init.kaiming_normal_(m.conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.ones_(m.bn.weight)
            nn.init.zeros_(m.bn.bias)


class Classifier(nn.Sequential):
    """Dropout2d + 1x1 conv: (B, channels, h, w) -> (B, num_classes, h, w)."""

    def __init__(self, channels: int, num_classes: int, dropout: float = 0.1):
        conv = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(conv.weight, std=0.01)
        nn.init.zeros_(conv.bias)
        super().__init__(nn.Dropout2d(dropout), conv)


class PyramidPooling(nn.Module):
    """Average-pool to each scale, 1x1 conv-BN-ReLU, resize back.

    (B, C, h, w) -> list of (B, channels, h, w), one per scale.
    """

    def __init__(self, in_channels: int, channels: int, pool_scales: Sequence[int] = (1, 2, 3, 6)):
        super().__init__()
        self.pool_scales = tuple(pool_scales)
        self.convs = nn.ModuleList(_cbr(in_channels, channels) for _ in self.pool_scales)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [
            _resize(conv(F.adaptive_avg_pool2d(x, scale)), x.shape[-2:])
            for scale, conv in zip(self.pool_scales, self.convs, strict=True)
        ]


class UPerHead(nn.Module):
    """UPerNet: pyramid pooling on the last map, FPN over all, fused at the finest map's size."""

    def __init__(
        self, in_channels: Sequence[int], channels: int = 512, pool_scales: Sequence[int] = (1, 2, 3, 6)
    ):
        super().__init__()
        *lateral_channels, last_channels = in_channels
        self.psp = PyramidPooling(last_channels, channels, pool_scales)
        self.bottleneck = _cbr(last_channels + len(pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(_cbr(c, channels) for c in lateral_channels)
        self.fpn_convs = nn.ModuleList(_cbr(channels, channels, 3) for _ in lateral_channels)
        self.fpn_bottleneck = _cbr(len(in_channels) * channels, channels, 3)
        init_head_weights(self)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        top = self.bottleneck(torch.cat([features[-1], *self.psp(features[-1])], dim=1))
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, features, strict=False)] + [top]
        for i in range(len(laterals) - 1, 0, -1):  # top-down
            laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[-2:])
        outs = [conv(lateral) for conv, lateral in zip(self.fpn_convs, laterals, strict=False)] + [
            laterals[-1]
        ]
        size = outs[0].shape[-2:]
        return self.fpn_bottleneck(torch.cat([_resize(out, size) for out in outs], dim=1))


class _ImagePool(nn.Sequential):
    """Global average pool + 1x1 conv-BN-ReLU, broadcast back: (B, C, h, w) -> (B, channels, h, w)."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), _cbr(in_channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _resize(super().forward(x), x.shape[-2:])


def _separable_cbr(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Sequential:
    """Depthwise 3x3 conv-BN-ReLU, then pointwise 1x1 conv-BN-ReLU."""
    return nn.Sequential(
        _cbr(in_channels, in_channels, 3, dilation=dilation, groups=in_channels),
        _cbr(in_channels, out_channels),
    )


class ASPPHead(nn.Module):
    """DeepLabV3's ASPP on the last map: image pooling, 1x1, and dilated 3x3 branches, fused by a 3x3."""

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int = 512,
        dilations: Sequence[int] = (1, 12, 24, 36),
        separable: bool = False,
    ):
        super().__init__()
        last = in_channels[-1]
        self.image_pool = _ImagePool(last, channels)
        self.aspp = nn.ModuleList(
            _cbr(last, channels)
            if d == 1
            else (_separable_cbr(last, channels, d) if separable else _cbr(last, channels, 3, dilation=d))
            for d in dilations
        )
        self.bottleneck = _cbr((len(dilations) + 1) * channels, channels, 3)
        init_head_weights(self)

    def _aspp(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(torch.cat([self.image_pool(x), *(branch(x) for branch in self.aspp)], dim=1))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self._aspp(features[-1])


class DepthwiseSeparableASPPHead(ASPPHead):
    """DeepLabV3+: separable ASPP on the last map, fused with a 48-channel projection of the first map."""

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int = 512,
        dilations: Sequence[int] = (1, 12, 24, 36),
        low_level_channels: int = 48,
    ):
        super().__init__(in_channels, channels, dilations, separable=True)
        self.low_level = _cbr(in_channels[0], low_level_channels)
        self.fuse = nn.Sequential(
            _separable_cbr(channels + low_level_channels, channels),
            _separable_cbr(channels, channels),
        )
        for part in (self.low_level, self.fuse):  # the ASPP was initialised by ASPPHead
            init_head_weights(part)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        low = self.low_level(features[0])
        high = _resize(self._aspp(features[-1]), low.shape[-2:])
        return self.fuse(torch.cat([high, low], dim=1))


class AdaptiveContextModule(nn.Module):
    """APCNet's ACM at one pool scale: each position attends (sigmoid) to the s x s pooled map.

    (B, C, h, w) -> (B, channels, h, w).
    """

    def __init__(self, pool_scale: int, in_channels: int, channels: int, fusion: bool = True):
        super().__init__()
        self.pool_scale = pool_scale
        self.pooled_proj = _cbr(in_channels, channels)
        self.input_proj = _cbr(in_channels, channels)
        self.global_info = _cbr(channels, channels)
        self.affinity = nn.Conv2d(channels, pool_scale**2, 1)
        self.residual = _cbr(channels, channels)
        self.fusion = _cbr(channels, channels) if fusion else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pooled_proj(F.adaptive_avg_pool2d(x, self.pool_scale)).flatten(2)  # (B, ch, s^2)
        x = self.input_proj(x)
        context = x + _resize(self.global_info(F.adaptive_avg_pool2d(x, 1)), x.shape[-2:])
        affinity = torch.sigmoid(self.affinity(context)).flatten(2)  # (B, s^2, hw)
        z = (pooled @ affinity).view_as(x)  # (B, ch, h, w)
        return self.fusion(F.relu(self.residual(z) + x))


class APCHead(nn.Module):
    """APCNet: adaptive context modules at several scales on the last map, fused with it by a 3x3."""

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int = 512,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        fusion: bool = True,
    ):
        super().__init__()
        last = in_channels[-1]
        self.acms = nn.ModuleList(AdaptiveContextModule(s, last, channels, fusion) for s in pool_scales)
        self.bottleneck = _cbr(last + len(pool_scales) * channels, channels, 3)
        init_head_weights(self)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        return self.bottleneck(torch.cat([x, *(acm(x) for acm in self.acms)], dim=1))


class PyramidKeyAttention(nn.Module):
    """ANN's attention block: every query position attends to keys/values pyramid-pooled from another map.

    query (B, Cq, h, w), key (B, Ck, h', w') -> (B, out_channels, h, w). Keys and values are average-pooled
    at ``key_pool_scales`` (1 + 9 + 36 + 64 = 110 tokens for (1, 3, 6, 8)). The output projection starts at
    zero, so the block starts as a no-op inside its residual fusion.
    """

    def __init__(
        self,
        query_channels: int,
        key_channels: int,
        channels: int,
        out_channels: int,
        key_pool_scales: Sequence[int] = (1, 3, 6, 8),
        share_key_query: bool = False,
    ):
        super().__init__()
        self.key_pool_scales = tuple(key_pool_scales)
        self.query_proj = _cbr(query_channels, channels)
        self.key_proj = self.query_proj if share_key_query else _cbr(key_channels, channels)
        self.value_proj = nn.Conv2d(key_channels, channels, 1)
        self.out_proj = nn.Conv2d(channels, out_channels, 1)
        self.scale = channels**-0.5

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, C, sum of scale^2)."""
        return torch.cat([F.adaptive_avg_pool2d(x, s).flatten(2) for s in self.key_pool_scales], dim=2)

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        q = self.query_proj(query).flatten(2).transpose(1, 2)  # (B, hw, ch)
        k = self._pool(self.key_proj(key))  # (B, ch, n)
        v = self._pool(self.value_proj(key)).transpose(1, 2)  # (B, n, ch)
        attention = torch.softmax((q @ k) * self.scale, dim=-1)
        context = (attention @ v).transpose(1, 2).reshape(query.shape[0], -1, *query.shape[-2:])
        return self.out_proj(context)

    def zero_init_output(self) -> None:
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)


class ANNHead(nn.Module):
    """ANN: asymmetric fusion (high map attends to the low map), then asymmetric pyramid self-attention."""

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int = 512,
        project_channels: int = 256,
        key_pool_scales: Sequence[int] = (1, 3, 6, 8),
        dropout: float = 0.1,
    ):
        super().__init__()
        low, high = in_channels[-2], in_channels[-1]
        # AFNB: query = high, keys / values = low; fused with the high map by 1x1 conv + BN (no ReLU)
        self.fusion_attention = PyramidKeyAttention(high, low, project_channels, high, key_pool_scales)
        self.fusion = ConvNormAct(2 * high, high, 1, apply_act=False)
        self.dropout = nn.Dropout2d(dropout)
        self.bottleneck = _cbr(high, channels, 3)
        # APNB: self-attention with a shared key / query projection, fused by 1x1 conv-BN-ReLU
        self.context_attention = PyramidKeyAttention(
            channels, channels, project_channels, channels, key_pool_scales, share_key_query=True
        )
        self.context = _cbr(2 * channels, channels)
        init_head_weights(self)
        self.fusion_attention.zero_init_output()
        self.context_attention.zero_init_output()

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        low, high = features[-2], features[-1]
        x = self.fusion(torch.cat([self.fusion_attention(high, low), high], dim=1))
        x = self.bottleneck(self.dropout(x))
        return self.context(torch.cat([self.context_attention(x, x), x], dim=1))


class FCNHead(nn.Sequential):
    """The auxiliary head: 3x3 conv-BN-ReLU on one map. (B, C, h, w) -> (B, channels, h, w)."""

    def __init__(self, in_channels: int, channels: int = 256):
        super().__init__(_cbr(in_channels, channels, 3))
        init_head_weights(self)
