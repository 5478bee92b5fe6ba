"""ViL as a segmentation_models_pytorch encoder: ``smp.create_model(arch, encoder_name="vil_small")``.

smp decoders expect a feature pyramid ``[x, s2, s4, s8, s16, s32]``. ViL is isotropic: every block works
at stride 16. The encoder taps the trunk at the ends of four equal stages and turns those maps into the
pyramid (a simple feature pyramid, as in ViTDet / BEiT):

* ``neck="simple"`` (default): parameter-free. Stage 1 -> bilinear x4 (s4), stage 2 -> bilinear x2 (s8),
  stage 3 -> identity (s16), stage 4 -> 2x2 max-pool (s32). Decoders that read only some levels
  (DeepLabV3, PSPNet) leave no parameter without a gradient, so DDP needs no ``find_unused_parameters``.
* ``neck="deconv"``: learnable transposed convs for s4 (two, with BN + GELU between) and s8 (one), as in
  the ViL authors' UperNet. With decoders that skip levels, those parameters get no gradient: DDP then
  needs ``find_unused_parameters=True``.
* ``neck="none"``: the four stage outputs as they are, all at stride 16 (Seg-LSTM's encoder).

The stride-2 level is a 0-channel placeholder (as smp's ``mit_b*`` encoders do), or with
``stride2="interpolate"`` a real level (stage 1 upsampled x8), which smp's FPN needs at ``encoder_depth``
below 5. Trunk blocks after the last stage a given ``depth`` uses are pruned.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import segmentation_models_pytorch as smp
import timm
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.encoders._base import EncoderMixin
from torch import nn

from .vision_lstm import checkpoint_filter_fn, hub_repo_id

__all__ = ["VIL_ENCODER_NAMES", "ViLEncoder", "register_smp_encoder", "register_smp_encoders"]

VIL_ENCODER_NAMES = ("vil_tiny", "vil_small", "vil_base", "vil2_tiny", "vil2_small", "vil2_base")
NECKS = ("simple", "deconv", "none")
STRIDE2_LEVELS = ("empty", "interpolate")


class _EmptyStride2Level(torch.Tensor):
    """The (B, 0, H/2, W/2) placeholder at ``encoder_depth < 5``.

    Decoders may concatenate it (smp's U-Net does). A decoder that convolves it has taken it for a real
    level (smp's FPN at ``encoder_depth < 5``, which otherwise fails with a tensor-size mismatch), so that
    raises an error saying what to do instead.
    """

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.conv2d:
            raise ValueError(
                "this decoder convolves the 0-channel stride-2 placeholder of a ViL encoder as if it were "
                "a real feature level (smp's FPN does at encoder_depth < 5). Use encoder_depth=5, or an "
                "encoder with a real stride-2 level: vil_seg.register_smp_encoder('vil_small_s2', "
                "model_name='vil_small', stride2='interpolate') (smp's FPN then needs upsampling=2 at "
                "depth 4, as for any encoder)"
            )
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **(kwargs or {}))


class ViLEncoder(nn.Module, EncoderMixin):
    """smp encoder around a timm ViL trunk.

    (B, C, H, W) with H, W divisible by 16 -> ``depth + 1`` maps: the input, a 0-channel stride-2
    placeholder, then ``embed_dim`` channels at strides 4, 8, 16, 32 (capped by ``output_stride``).
    """

    _is_torch_scriptable = False
    _is_torch_exportable = True
    _is_torch_compilable = True

    def __init__(
        self,
        model_name: str = "vil_small",
        depth: int = 5,
        output_stride: int = 32,
        neck: str = "simple",
        stride2: str = "empty",
        out_indices: Sequence[int] | None = None,
        model_kwargs: dict | None = None,
    ):
        """
        Args:
            model_name: a registered ViL timm model (``vil_small``, ``vil2_tiny``, ...).
            depth: pyramid levels after the input, 3 to 5 (smp's ``encoder_depth``).
            output_stride: 32, 16 or 8: the stride of the coarsest level.
            neck: ``"simple"`` (parameter-free), ``"deconv"`` (learnable transposed convs) or ``"none"``
                (every level is the stage output at stride 16).
            stride2: ``"empty"`` (0-channel placeholder) or ``"interpolate"`` (stage 1 upsampled x8).
            out_indices: trunk blocks tapped for the strides 4, 8, 16, 32 levels; default the ends of four
                equal stages, ``(5, 11, 17, 23)`` for 24 blocks.
            model_kwargs: for ``timm.create_model`` (``depth``, ``img_size``, ``drop_path_rate``, ``scan``).
        """
        super().__init__()
        if depth not in (3, 4, 5):
            raise ValueError(
                f"encoder depth must be 3, 4 or 5 for ViL (the levels at strides 4 to 32), got {depth}"
            )
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        if neck not in NECKS:
            raise ValueError(f"unknown neck {neck!r}; expected one of {NECKS}")
        if stride2 not in STRIDE2_LEVELS:
            raise ValueError(f"unknown stride2 level {stride2!r}; expected one of {STRIDE2_LEVELS}")
        known = timm.list_models(module="vision_lstm")
        if model_name not in known:
            raise ValueError(f"unknown ViL encoder {model_name!r}; expected one of {known}")
        self.model_name = model_name
        self.model = timm.create_model(model_name, pretrained=False, num_classes=0, **(model_kwargs or {}))
        num_blocks = len(self.model.blocks)
        if out_indices is None:
            out_indices = [num_blocks * (i + 1) // 4 - 1 for i in range(4)]
        if len(out_indices) != 4:
            raise ValueError(f"out_indices must name 4 blocks (strides 4, 8, 16, 32), got {out_indices}")
        self._taps = self.model.prune_intermediate_layers(list(out_indices)[: depth - 1], prune_norm=True)

        dim = self.model.embed_dim
        self._depth = depth
        self._in_channels = 3
        self._out_channels = [3, dim if stride2 == "interpolate" else 0, dim, dim, dim, dim]
        self._output_stride = 16 if neck == "none" else output_stride
        self.neck = neck
        self.stride2 = stride2
        if neck == "deconv":
            self.fpn1 = nn.Sequential(
                nn.ConvTranspose2d(dim, dim, 2, stride=2),
                nn.BatchNorm2d(dim),
                nn.GELU(),
                nn.ConvTranspose2d(dim, dim, 2, stride=2),
            )
            self.fpn2 = nn.ConvTranspose2d(dim, dim, 2, stride=2)

    # ---- smp API ----------------------------------------------------------------------------------------

    def make_dilated(self, output_stride: int) -> None:
        """Cap the pyramid at ``output_stride`` (16: level s32 stays at stride 16; 8: s16 and s32 at 8)."""
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 16 or 8, got {output_stride}")
        if self.neck == "none" and output_stride != 16:
            raise ValueError(
                f"neck='none' keeps every level at stride 16; output_stride {output_stride} is not possible"
            )
        self._output_stride = output_stride

    def load_state_dict(self, state_dict: dict, strict: bool = True, assign: bool = False):
        """Load an encoder state_dict, or any ViL trunk checkpoint (timm, NX-AI, Seg-LSTM) into the trunk.

        A trunk checkpoint leaves the neck as it is; it is converted with the timm family's
        ``checkpoint_filter_fn`` (position embedding resized, pruned blocks and the classifier dropped,
        missing or unknown weights refused).
        """
        own_prefixes = ("model.", "fpn1.", "fpn2.")
        if all(key.startswith(own_prefixes) for key in state_dict):
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        return self.model.load_state_dict(
            checkpoint_filter_fn(state_dict, self.model), strict=True, assign=assign
        )

    # ---- forward ----------------------------------------------------------------------------------------

    def _level(self, feature: torch.Tensor, index: int) -> torch.Tensor:
        """Stage ``index``'s stride-16 map (B, D, H/16, W/16) -> pyramid level ``index``.

        The levels are at strides 4, 8, 16, 32, each capped by the output stride.
        """
        if self.neck == "none":
            return feature
        if self.neck == "deconv" and index < 2:
            return (self.fpn1, self.fpn2)[index](feature)
        stride = min((4, 8, 16, 32)[index], self._output_stride)
        if stride == 16:
            return feature
        if stride == 32:
            return F.max_pool2d(feature, kernel_size=2, stride=2)
        return F.interpolate(feature, scale_factor=16 // stride, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = self.model.forward_intermediates(x, indices=self._taps, intermediates_only=True)
        if self.stride2 == "interpolate":
            stride2 = F.interpolate(taps[0], scale_factor=8, mode="bilinear", align_corners=False)
        else:
            stride2 = x.new_empty(x.shape[0], 0, x.shape[2] // 2, x.shape[3] // 2)
            if self._depth < 5:
                stride2 = stride2.as_subclass(_EmptyStride2Level)
        levels = [self._level(tap, index) for index, tap in enumerate(taps)]
        return [x, stride2, *levels]


def register_smp_encoder(
    name: str,
    model_name: str | None = None,
    *,
    neck: str = "simple",
    stride2: str = "empty",
    out_indices: Sequence[int] | None = None,
    **model_kwargs,
) -> None:
    """Register a ViL encoder under ``name`` in smp, e.g. with a drop-path rate or another neck.

    ``register_smp_encoder("vil_small_dp", model_name="vil_small", drop_path_rate=0.1)`` then
    ``smp.create_model("upernet", encoder_name="vil_small_dp", encoder_weights=None)``. smp passes no
    keyword of ``create_model`` to a registered encoder, so variants are registered names.
    """
    model_name = model_name or name
    smp.encoders.encoders[name] = {
        "encoder": ViLEncoder,
        "pretrained_settings": {"imagenet": {"repo_id": hub_repo_id(model_name), "revision": None}},
        "params": {
            "model_name": model_name,
            "neck": neck,
            "stride2": stride2,
            "out_indices": out_indices,
            "model_kwargs": copy.deepcopy(model_kwargs),
        },
    }


def register_smp_encoders() -> None:
    """Register every ViL variant under its timm name (idempotent)."""
    for name in VIL_ENCODER_NAMES:
        register_smp_encoder(name)
