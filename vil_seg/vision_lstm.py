"""Vision-LSTM (ViL) as a timm model family.

Vision-LSTM: xLSTM as Generic Vision Backbone (Alkin et al., 2024, arXiv:2406.04303), as used by
Seg-LSTM (Zhu, Cai, Fan, 2024, arXiv:2406.14086). The image is cut into 16x16 patches; a stack of mLSTM
blocks scans the patch tokens, alternating direction from block to block.

* v1 (``vil_*``, the Seg-LSTM backbone): causal conv1d (k=4) along the scan, no biases,
  classifier on the mean of the first and last token.
* v2 (``vil2_*``): 3x3 conv2d on the patch grid, biases everywhere, classifier on the concatenation of
  the first and last token.

``depth`` always counts single-direction blocks (NX-AI's v2 ``depth=12`` pairs is ``depth=24`` here).
Tokens are kept in row-major order from the top-left patch between calls; each block reads them in its
own scan order (row or column major, forward or reversed), so any H x W works, square or not.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from typing import NamedTuple

import huggingface_hub
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import (
    DropPath,
    PatchEmbed,
    resample_abs_pos_embed_nhwc,
    resample_patch_embed,
    trunc_normal_,
)
from timm.models import build_model_with_cfg, checkpoint, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import nn
from torch.autograd.function import once_differentiable

from .mlstm import BACKENDS, MLSTMState, chunk_size_for, mlstm

__all__ = [
    "SCANS",
    "ViLBlock",
    "ViLLayer",
    "VisionLSTM",
    "checkpoint_filter_fn",
    "hub_repo_id",
    "remap_checkpoint",
    "stage_out_indices",
]

SCANS: tuple[str, ...] = ("row", "column", "quad")
_SCAN_CYCLES = {
    "row": ("row", "row_reversed"),
    "column": ("column", "column_reversed"),
    "quad": ("row", "row_reversed", "column", "column_reversed"),
}
_GLOBAL_POOLS = ("bilateral_avg", "bilateral_flatten", "avg", "")


def stage_out_indices(depths: Sequence[int]) -> tuple[int, ...]:
    """Block indices at the end of each stage, e.g. ``(6, 6, 6, 6) -> (5, 11, 17, 23)``."""
    ends, total = [], 0
    for depth in depths:
        if depth < 1:
            raise ValueError(f"stage depths must be positive, got {tuple(depths)}")
        total += depth
        ends.append(total - 1)
    return tuple(ends)


# --------------------------------------------------------------------------------------------------------
# Token orders
# --------------------------------------------------------------------------------------------------------


def _scan_positions(order: str, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
    """Row-major token index at each position of ``order`` over a ``grid = (H, W)`` patch grid."""
    height, width = grid
    index = torch.arange(height * width, device=device)
    if order.startswith("column"):
        index = index.view(height, width).t().reshape(-1)
    if order.endswith("_reversed"):
        index = index.flip(0)
    return index


def _reorder(x: torch.Tensor, grid: tuple[int, int], src: str, dst: str) -> torch.Tensor:
    """Re-sequence tokens ``x`` (B, S, D) from scan order ``src`` to scan order ``dst``."""
    if src == dst:
        return x
    if src.split("_")[0] == dst.split("_")[0]:  # same traversal, opposite direction
        return x.flip(1)
    src_pos = _scan_positions(src, grid, x.device)
    dst_pos = _scan_positions(dst, grid, x.device)
    return x.index_select(1, torch.argsort(src_pos)[dst_pos])


def _scan_grid(order: str, grid: tuple[int, int]) -> tuple[int, int]:
    """The (rows, cols) grid that a sequence in ``order`` lays out as (transposed for column scans)."""
    return (grid[1], grid[0]) if order.startswith("column") else grid


# --------------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------------


class HeadwiseLinear(nn.Module):
    """Block-diagonal linear map of ``dim // block_size`` independent ``block_size x block_size`` blocks.

    ``weight`` is ``(dim // block_size, block_size, block_size)``, each block in nn.Linear's
    ``(out, in)`` orientation. (..., dim) -> (..., dim); :meth:`to_heads` gives the mLSTM's head layout.
    """

    def __init__(self, dim: int, block_size: int = 4, bias: bool = False):
        super().__init__()
        if dim % block_size:
            raise ValueError(f"dim {dim} is not divisible by block_size {block_size}")
        self.block_size = block_size
        self.weight = nn.Parameter(torch.empty(dim // block_size, block_size, block_size))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = x.unflatten(-1, (-1, self.block_size))
        y = torch.einsum("...hi,hoi->...ho", blocks, self.weight).flatten(-2)
        return y if self.bias is None else y + self.bias

    def head_pieces(self, head_dim: int) -> torch.Tensor | None:
        """The weight as dense diagonal pieces of 32 channels (8 blocks of 4), ``x @ W`` oriented:
        (dim // group, group, group). None where ``head_dim`` is not a multiple of the block size."""
        size = self.block_size
        if head_dim % size:
            return None
        group = size * math.gcd(head_dim // size, 8)
        blocks = self.weight.view(-1, group // size, size, size)  # (groups, blocks per group, out, in)
        eye = torch.eye(group // size, dtype=blocks.dtype, device=blocks.device)
        return torch.einsum("gjoi,jk->gjiko", blocks, eye).reshape(-1, group, group)

    def to_heads(self, x: torch.Tensor, num_heads: int, pieces: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S, dim) -> contiguous (B, num_heads, S, dim // num_heads).

        Computed as matmuls over groups of 32 channels with their block-diagonal piece of the weight
        (8x the multiply-adds of the 4x4 blocks, but one efficient matmul instead of a batch of 4x4 ones and
        its layout copies), then written once in the head layout. ``pieces``: :meth:`head_pieces`, when
        the caller reuses them over several calls.
        """
        batch, seq_len, dim = x.shape
        head_dim = dim // num_heads
        pieces = self.head_pieces(head_dim) if pieces is None else pieces
        if pieces is None:
            return self(x).unflatten(-1, (num_heads, head_dim)).transpose(1, 2).contiguous()
        group = pieces.shape[-1]
        y = x.unflatten(-1, (dim // group, group)).transpose(1, 2) @ pieces
        y = y.view(batch, num_heads, head_dim // group, seq_len, group).transpose(2, 3)
        y = y.reshape(batch, num_heads, seq_len, head_dim)
        return y if self.bias is None else y + self.bias.view(num_heads, 1, head_dim)

    def fold_into(self, weight: torch.Tensor) -> torch.Tensor:
        """``weight @ W`` for an (out, dim) ``weight``: the map that applies this one, then ``weight``."""
        size = self.block_size
        return torch.einsum("gbo,boi->gbi", weight.unflatten(-1, (-1, size)), self.weight).flatten(-2)


class _ShiftedMultiplyAdd(torch.autograd.Function):
    """Depthwise causal conv along dim 1 of (B, S, C) ``x``: ``out[:, t] = bias + sum_j taps[:, j] *
    x[:, t - (K - 1) + j]`` (zero before the start), taps (C, K), bias (C,). -> contiguous (B, S, C).

    Computed as K shifted multiply-adds in place; the backward is the same shifted form, written out (autograd
    would copy the gradient of each in-place slice update).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        last = taps.shape[1] - 1
        out = torch.addcmul(bias, x, taps[:, last])
        for j in range(last):
            shift = last - j
            if shift < x.shape[1]:
                out[:, shift:].addcmul_(x[:, :-shift], taps[:, j])
        ctx.save_for_backward(x, taps)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, taps = ctx.saved_tensors
        last = taps.shape[1] - 1
        grad_x = grad * taps[:, last]
        grad_taps = torch.zeros_like(taps)
        grad_taps[:, last] = torch.linalg.vecdot(grad, x, dim=1).sum(0)
        for j in range(last):
            shift = last - j
            if shift < x.shape[1]:
                grad_x[:, :-shift].addcmul_(grad[:, shift:], taps[:, j])
                grad_taps[:, j] = torch.linalg.vecdot(grad[:, shift:], x[:, :-shift], dim=1).sum(0)
        return grad_x, grad_taps, grad.sum((0, 1))


class CausalSequenceConv(nn.Conv1d):
    """Depthwise causal conv along the sequence (ViL v1). (B, S, C) -> contiguous (B, S, C).

    Computed as ``kernel_size`` shifted multiply-adds in the token-major layout: no transposes, and the
    output is row-major for the projections that follow.
    """

    def __init__(self, channels: int, kernel_size: int = 4):
        super().__init__(channels, channels, kernel_size, groups=channels, bias=True)

    def context(self, cols: int) -> tuple[int, int]:
        """Tokens before and after a segment that its outputs depend on."""
        return self.kernel_size[0] - 1, 0

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return _ShiftedMultiplyAdd.apply(x, self.weight[:, 0, :], self.bias)


class GridSequenceConv(nn.Conv2d):
    """Depthwise 'same' conv on the sequence laid out as its (rows, cols) grid (ViL v2).

    (B, S, C) with ``S = rows * cols`` -> (B, S, C).
    """

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__(
            channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=True
        )

    def context(self, cols: int) -> tuple[int, int]:
        """Tokens before and after a segment of whole rows that its outputs depend on: whole rows."""
        return self.padding[0] * cols, self.padding[0] * cols

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        batch, seq_len, channels = x.shape
        # NCHW views of the token-major layout (channels_last strides): no transposing copies
        x = x.reshape(batch, *grid, channels).permute(0, 3, 1, 2)
        x = F.conv2d(x, self.weight, self.bias, padding=self.padding, groups=self.groups)
        return x.permute(0, 2, 3, 1).reshape(batch, seq_len, channels)


_CONVS = {"causal1d": CausalSequenceConv, "2d": GridSequenceConv}


class MultiHeadLayerNorm(nn.Module):
    """Per-head LayerNorm of the mLSTM output with one affine over all heads, plus a (B, S, NH * DH) addend.

    (B, NH, S, DH) head-major (as the mLSTM returns it) -> (B, S, NH * DH) token-major. The norm runs on the
    head-major layout; the affine and the addend are one multiply-add that writes token-major, so the
    layout change costs no pass of its own.
    """

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = False):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
        normed = F.layer_norm(x, x.shape[-1:], eps=self.eps).transpose(1, 2)  # (B, S, NH, DH) view
        heads = normed.shape[-2:]
        base = (add if self.bias is None else add + self.bias).unflatten(-1, heads)
        # the token-major addend comes first, so the output is written token-major
        return torch.addcmul(base, normed, self.weight.view(heads)).flatten(2)


class MixingWeights(NamedTuple):
    """Weights of a ViL layer's mLSTM mixing in the form they are applied (see ViLLayer.mixing_weights)."""

    q: torch.Tensor | None  # HeadwiseLinear.head_pieces of q_proj, k_proj, v_proj
    k: torch.Tensor | None
    v: torch.Tensor | None
    gates_conv: torch.Tensor  # (2 NH, E): input and forget gates from x_conv
    gates_inner: torch.Tensor  # (2 NH, E): ... and from x_inner
    gates_bias: torch.Tensor  # (2 NH,)


class ViLLayer(nn.Module):
    """The mLSTM layer of a ViL block: causal over the token sequence it is given.

    (B, S, D) tokens in scan order, with the (rows, cols) grid they lay out as -> (B, S, D).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 4,
        expansion: int = 2,
        qkv_block_size: int = 4,
        conv_kind: str = "causal1d",
        conv_kernel_size: int = 4,
        bias: bool = False,
        mlstm_backend: str = "chunkwise",
        chunk_size: int = 64,
    ):
        super().__init__()
        if conv_kind not in _CONVS:
            raise ValueError(f"unknown conv_kind {conv_kind!r}; expected one of {tuple(_CONVS)}")
        if mlstm_backend not in BACKENDS:
            raise ValueError(f"unknown mlstm_backend {mlstm_backend!r}; expected one of {BACKENDS}")
        inner = expansion * dim
        if inner % num_heads:
            raise ValueError(f"inner width {inner} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.mlstm_backend = mlstm_backend
        self.chunk_size = chunk_size
        self.proj_up = nn.Linear(dim, 2 * inner, bias=bias)
        self.conv = _CONVS[conv_kind](inner, conv_kernel_size)
        self.q_proj = HeadwiseLinear(inner, qkv_block_size, bias=bias)
        self.k_proj = HeadwiseLinear(inner, qkv_block_size, bias=bias)
        self.v_proj = HeadwiseLinear(inner, qkv_block_size, bias=bias)
        self.igate = nn.Linear(3 * inner, num_heads)
        self.fgate = nn.Linear(3 * inner, num_heads)
        self.outnorm = MultiHeadLayerNorm(inner, bias=bias)
        self.learnable_skip = nn.Parameter(torch.ones(inner))
        self.proj_down = nn.Linear(inner, dim, bias=bias)

    def init_weights(self, proj_down_std: float) -> None:
        """The original initialisation (spec 1.4): small init in, 'wang' init out, forget-gate bias 3..6."""
        small_std = math.sqrt(2 / (5 * self.proj_up.in_features))
        for module in (self.proj_up, self.q_proj, self.k_proj, self.v_proj):
            nn.init.normal_(module.weight, std=small_std)
        nn.init.normal_(self.proj_down.weight, std=proj_down_std)
        for module in (self.proj_up, self.q_proj, self.k_proj, self.v_proj, self.proj_down):
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        nn.init.zeros_(self.fgate.weight)
        with torch.no_grad():
            self.fgate.bias.copy_(torch.linspace(3.0, 6.0, self.num_heads))
        nn.init.zeros_(self.igate.weight)
        nn.init.normal_(self.igate.bias, std=0.1)

    def mixing_weights(self) -> MixingWeights:
        """The weights of the mLSTM mixing as they are applied, derived once per call of the layer (or once
        for all segments of a sequence): the q / k / v maps as dense pieces, and the gates, which read the
        concatenation [q, k, v], with their weights folded through those maps, so that q, k and v are never
        concatenated or needed in the token-major layout."""
        head_dim = self.proj_down.in_features // self.num_heads
        weight = torch.cat([self.igate.weight, self.fgate.weight])  # (2 NH, 3E)
        bias = torch.cat([self.igate.bias, self.fgate.bias])
        w_q, w_k, w_v = weight.chunk(3, dim=1)
        for w, proj in ((w_q, self.q_proj), (w_k, self.k_proj), (w_v, self.v_proj)):
            if proj.bias is not None:
                bias = bias + w @ proj.bias
        return MixingWeights(
            q=self.q_proj.head_pieces(head_dim),
            k=self.k_proj.head_pieces(head_dim),
            v=self.v_proj.head_pieces(head_dim),
            gates_conv=self.q_proj.fold_into(w_q) + self.k_proj.fold_into(w_k),
            gates_inner=self.v_proj.fold_into(w_v),
            gates_bias=bias,
        )

    def _expand(
        self, x: torch.Tensor, grid: tuple[int, int], context: tuple[int, int] = (0, 0)
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Up-projection and conv: (B, S, D) -> x_inner, z, x_conv, each (B, S - sum(context), E).

        The first ``context[0]`` and last ``context[1]`` tokens only feed the conv of the others.
        """
        x_inner, z = self.proj_up(x).chunk(2, dim=-1)
        x_conv = F.silu(self.conv(x_inner, grid))
        if context != (0, 0):
            keep = slice(context[0], x.shape[1] - context[1])
            x_inner, z, x_conv = x_inner[:, keep], z[:, keep], x_conv[:, keep]
        return x_inner, z, x_conv

    def _mix(
        self,
        x_inner: torch.Tensor,
        z: torch.Tensor,
        x_conv: torch.Tensor,
        weights: MixingWeights,
        state: MLSTMState | None = None,
        return_state: bool = False,
    ) -> tuple[torch.Tensor, MLSTMState | None]:
        """The mLSTM cell, output gate and down-projection: three (B, S, E) -> (B, S, D), and the state."""
        gates = F.linear(x_conv, weights.gates_conv, weights.gates_bias) + F.linear(
            x_inner, weights.gates_inner
        )
        igate, fgate = gates.transpose(1, 2).split(self.num_heads, dim=1)  # (B, S, 2NH) -> 2x (B, NH, S)
        chunk_size = chunk_size_for(x_conv.shape[1], x_conv.shape[2] // self.num_heads, self.chunk_size)
        h = mlstm(
            self.q_proj.to_heads(x_conv, self.num_heads, weights.q),
            self.k_proj.to_heads(x_conv, self.num_heads, weights.k),
            self.v_proj.to_heads(x_inner, self.num_heads, weights.v),
            igate,
            fgate,
            backend=self.mlstm_backend,
            chunk_size=chunk_size,
            initial_state=state,
            return_state=return_state,
        )
        if return_state:
            h, state = h
        h = self.outnorm(h, add=self.learnable_skip * x_conv)
        return self.proj_down(h * F.silu(z)), state

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return self._mix(*self._expand(x, grid), self.mixing_weights())[0]

    def forward_segment(
        self,
        x: torch.Tensor,
        cols: int,
        context: tuple[int, int] = (0, 0),
        state: MLSTMState | None = None,
        weights: MixingWeights | None = None,
    ) -> tuple[torch.Tensor, MLSTMState]:
        """One segment of a longer sequence, continuing from the mLSTM ``state`` of the segments before it.

        Args:
            x: (B, S, D) tokens: the segment with ``context = (before, after)`` tokens around it, as
                ``conv.context(cols)`` asks for (fewer at the ends of the sequence).
            cols: tokens per row of the scan grid; for a 2d conv the segment and its context are whole rows.
            weights: :meth:`mixing_weights`, derived once for all segments (derived here if None).

        Returns:
            (B, S - before - after, D) outputs and the state after the segment.
        """
        grid = (x.shape[1] // cols, cols)
        weights = self.mixing_weights() if weights is None else weights
        return self._mix(*self._expand(x, grid, context), weights, state, return_state=True)


class ViLBlock(nn.Module):
    """Pre-norm residual mLSTM block. ``scan`` names the token order it reads (set by the model).

    (B, S, D) tokens in ``scan`` order -> (B, S, D).

    Without autograd (inference), a sequence longer than ``segment_len`` tokens is run segment by segment
    (whole scan rows, at least one), each continuing from the mLSTM state of the one before: the same
    function, computed with a working set of one segment whatever the image size.
    """

    def __init__(
        self,
        dim: int,
        scan: str = "row",
        drop_path: float = 0.0,
        bias: bool = False,
        norm_eps: float = 1e-5,
        segment_len: int = 512,
        **layer_kwargs,
    ):
        super().__init__()
        self.scan = scan
        self.segment_len = segment_len
        self.norm = nn.LayerNorm(dim, eps=norm_eps, bias=bias)
        self.layer = ViLLayer(dim, bias=bias, **layer_kwargs)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _runs_in_segments(self, x: torch.Tensor) -> bool:
        return (
            0 < self.segment_len < x.shape[1]
            and not torch.is_grad_enabled()
            and self.layer.mlstm_backend != "parallel"
            and not (self.training and isinstance(self.drop_path, DropPath))  # one draw per sample
        )

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        if self._runs_in_segments(x):
            return self._forward_segments(x, grid[1])
        return x + self.drop_path(self.layer(self.norm(x), grid))

    def _forward_segments(self, x: torch.Tensor, cols: int) -> torch.Tensor:
        seq_len = x.shape[1]
        step = max(1, self.segment_len // cols) * cols
        before, after = self.layer.conv.context(cols)
        out = torch.empty_like(x)
        state, weights = None, self.layer.mixing_weights()
        for start in range(0, seq_len, step):
            end = min(seq_len, start + step)
            lo, hi = max(0, start - before), min(seq_len, end + after)
            context = (start - lo, hi - end)
            y, state = self.layer.forward_segment(self.norm(x[:, lo:hi]), cols, context, state, weights)
            torch.add(x[:, start:end], y, out=out[:, start:end])
        return out


# --------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------


class VisionLSTM(nn.Module):
    """Vision-LSTM: patch embedding, learnable position embedding, mLSTM blocks, classifier head.

    Input (B, in_chans, H, W) with H and W divisible by ``patch_size`` (or ``dynamic_img_pad=True``).
    ``forward_features`` gives normed tokens (B, H/p * W/p, embed_dim) in row-major order;
    ``forward`` gives logits (B, num_classes).
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "bilateral_avg",
        embed_dim: int = 384,
        depth: int = 24,
        num_heads: int = 4,
        conv_kind: str = "causal1d",
        conv_kernel_size: int = 4,
        bias: bool = False,
        norm_eps: float = 1e-5,
        fc_norm_eps: float = 1e-6,
        scan: str = "row",
        mlstm_backend: str = "chunkwise",
        chunk_size: int = 64,
        segment_len: int = 512,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        dynamic_img_pad: bool = False,
    ):
        """
        Args:
            img_size: the training resolution; the position embedding is stored at its patch grid and
                resized to the grid of each input.
            global_pool: ``"bilateral_avg"`` (v1: mean of first and last token), ``"bilateral_flatten"``
                (v2: their concatenation), ``"avg"`` or ``""`` (no pooling).
            depth: number of single-direction blocks.
            num_heads: mLSTM cell heads.
            conv_kind: ``"causal1d"`` (v1) or ``"2d"`` (v2), with ``conv_kernel_size``.
            bias: biases in projections and norms (v2).
            norm_eps, fc_norm_eps: eps of the post-block norm and of the head norm.
            scan: ``"row"`` (alternate forward / backward over row-major tokens, the paper), ``"column"``
                (the same over column-major tokens) or ``"quad"`` (cycle through all four).
            mlstm_backend, chunk_size: see :func:`vil_seg.mlstm.mlstm`.
            segment_len: without autograd, blocks run over segments of about this many tokens (whole
                scan rows) carrying the mLSTM state: the same function (up to float rounding) with a
                per-block working set that does not grow with the image. ``0`` runs whole sequences
                (timm's create_model drops ``None`` arguments).
            dynamic_img_pad: pad inputs bottom/right to a multiple of the patch size instead of raising.
        """
        super().__init__()
        if not isinstance(segment_len, int) or segment_len < 0:
            raise ValueError(
                f"segment_len must be a non-negative int (0: whole sequences), got {segment_len!r}"
            )
        if scan not in SCANS:
            raise ValueError(f"unknown scan {scan!r}; expected one of {SCANS}")
        if global_pool not in _GLOBAL_POOLS:
            raise ValueError(f"unknown global_pool {global_pool!r}; expected one of {_GLOBAL_POOLS}")
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.full_depth = depth  # blocks of the architecture, also after prune_intermediate_layers
        self.embed_dim = self.num_features = embed_dim
        self.head_hidden_size = self._pooled_dim(global_pool)
        self.num_prefix_tokens = 0
        self.dynamic_img_size = True
        self.dynamic_img_pad = dynamic_img_pad
        self.grad_checkpointing = False

        self.patch_embed = PatchEmbed(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            output_fmt="NHWC",
            strict_img_size=False,
            dynamic_img_pad=dynamic_img_pad,
        )
        self.pos_embed = nn.Parameter(torch.zeros(1, *self.patch_embed.grid_size, embed_dim))

        cycle = _SCAN_CYCLES[scan]
        drop_path_rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            ViLBlock(
                embed_dim,
                scan=cycle[i % len(cycle)],
                drop_path=drop_path_rates[i],
                bias=bias,
                num_heads=num_heads,
                conv_kind=conv_kind,
                conv_kernel_size=conv_kernel_size,
                mlstm_backend=mlstm_backend,
                chunk_size=chunk_size,
                segment_len=segment_len,
            )
            for i in range(depth)
        )
        self.feature_info = [
            dict(module=f"blocks.{i}", num_chs=embed_dim, reduction=patch_size) for i in range(depth)
        ]
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps, bias=bias)
        self.fc_norm = nn.LayerNorm(self.head_hidden_size, eps=fc_norm_eps)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights(proj_down_std=2 / ((depth if conv_kind == "2d" else 1) * math.sqrt(embed_dim)))

    def _pooled_dim(self, global_pool: str) -> int:
        return 2 * self.embed_dim if global_pool == "bilateral_flatten" else self.embed_dim

    def init_weights(self, proj_down_std: float) -> None:
        """The original initialisation (spec 1.4)."""
        weight = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        trunc_normal_(self.pos_embed, std=0.02)
        for block in self.blocks:
            block.layer.init_weights(proj_down_std)
        if isinstance(self.head, nn.Linear):
            trunc_normal_(self.head.weight, std=2e-5)
            nn.init.zeros_(self.head.bias)

    # ---- timm API ---------------------------------------------------------------------------------------

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^pos_embed|patch_embed", blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            if global_pool not in _GLOBAL_POOLS:
                raise ValueError(f"unknown global_pool {global_pool!r}; expected one of {_GLOBAL_POOLS}")
            hidden = self._pooled_dim(global_pool)
            if hidden != self.head_hidden_size and isinstance(self.fc_norm, nn.LayerNorm):
                self.fc_norm = nn.LayerNorm(hidden, eps=self.fc_norm.eps)
            self.global_pool, self.head_hidden_size = global_pool, hidden
        self.num_classes = num_classes
        self.head = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    # ---- forward ----------------------------------------------------------------------------------------

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, C, H, W) image -> (B, S, D) row-major tokens with position embedding, and the grid."""
        if x.ndim != 4:
            raise ValueError(f"expected a (B, C, H, W) image batch, got shape {tuple(x.shape)}")
        in_chans = self.patch_embed.proj.in_channels
        if x.shape[1] != in_chans:
            raise ValueError(
                f"expected {in_chans} input channels, got {x.shape[1]} (input shape {tuple(x.shape)}); "
                f"create the model with in_chans={x.shape[1]} to accept such inputs"
            )
        patch_h, patch_w = self.patch_embed.patch_size
        if not self.dynamic_img_pad and (x.shape[2] % patch_h or x.shape[3] % patch_w):
            raise ValueError(
                f"input size {x.shape[2]}x{x.shape[3]} is not divisible by the patch size "
                f"{patch_h}x{patch_w}; pad or crop the input, or create the model with dynamic_img_pad=True"
            )
        x = self.patch_embed(x)  # (B, H, W, D)
        grid = (x.shape[1], x.shape[2])
        pos_embed = resample_abs_pos_embed_nhwc(
            self.pos_embed, grid, interpolation="bicubic", antialias=False
        )
        return (x + pos_embed).flatten(1, 2), grid

    def _run_blocks(
        self,
        x: torch.Tensor,
        grid: tuple[int, int],
        take_indices: Sequence[int] = (),
        last_index: int | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run blocks ``0..last_index`` on row-major tokens; return row-major output and taken outputs."""
        blocks = self.blocks if last_index is None else self.blocks[: last_index + 1]
        order, intermediates = "row", []
        for i, block in enumerate(blocks):
            x = _reorder(x, grid, order, block.scan)
            order = block.scan
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(block, x, _scan_grid(order, grid))
            else:
                x = block(x, _scan_grid(order, grid))
            if i in take_indices:
                intermediates.append(_reorder(x, grid, order, "row"))
        return _reorder(x, grid, order, "row"), intermediates

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> normed tokens (B, H/p * W/p, embed_dim), row-major from the top-left patch."""
        x, grid = self._embed(x)
        x, _ = self._run_blocks(x, grid)
        return self.norm(x)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_pool == "bilateral_avg":
            return (x[:, 0] + x[:, -1]) / 2
        if self.global_pool == "bilateral_flatten":
            return torch.cat([x[:, 0], x[:, -1]], dim=-1)
        if self.global_pool == "avg":
            return x.mean(dim=1)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, S, D) -> logits (B, num_classes), or the pooled, normed features if ``pre_logits``."""
        x = self.head_drop(self.fc_norm(self._pool(x)))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Block outputs as features.

        Args:
            indices: last n blocks if int, all if None, else the block indices to take.
            norm: apply the post-block norm to each intermediate.
            stop_early: stop after the last block taken.
            output_fmt: ``"NCHW"`` (B, D, H/p, W/p) or ``"NLC"`` (B, H/p * W/p, D), row-major.
            intermediates_only: return only the list of intermediates.

        Returns:
            the intermediates, or ``(final normed tokens, intermediates)``.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        batch = x.shape[0]
        x, grid = self._embed(x)
        last_index = max_index if (stop_early or intermediates_only) else None
        x, intermediates = self._run_blocks(x, grid, take_indices, last_index)
        if norm:
            intermediates = [self.norm(y) for y in intermediates]
        if output_fmt == "NCHW":
            intermediates = [
                y.reshape(batch, *grid, -1).permute(0, 3, 1, 2).contiguous() for y in intermediates
            ]
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(
        self,
        indices: int | list[int] | tuple[int, ...] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop the blocks after the last index taken (and the norm / head); return the kept indices."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: max_index + 1]
        self.feature_info = self.feature_info[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.fc_norm = nn.Identity()
            self.reset_classifier(0)
        return take_indices


# --------------------------------------------------------------------------------------------------------
# Checkpoint conversion
# --------------------------------------------------------------------------------------------------------

# Renames inside a block's layer, shared by every original layout.
_LAYER_RENAMES = ((r"\.mlstm_cell\.", "."), (r"\.conv1d\.conv\.", ".conv."), (r"\.conv1d\.", ".conv."))

# Per layout: (pattern, replacement) applied to every key, first match wins; unmatched keys are kept.
_LAYOUT_RENAMES = {
    # NX-AI downloadable .th files (training-code names)
    "nx-ai raw": (
        (r"^xlstm\.blocks\.(\d+)\.xlstm_norm\.", r"blocks.\1.norm."),
        (r"^xlstm\.blocks\.(\d+)\.xlstm\.", r"blocks.\1.layer."),
        (r"^(xlstm\.)?post_blocks_norm\.", "norm."),
        (r"^head\.0\.", "fc_norm."),
        (r"^head\.1\.", "head."),
        (r"^pos_embed\.embed$", "pos_embed"),
    ),
    # vision_lstm package, VisionLSTM (v1): legacy_norm = post-block norm, norm = head norm
    "nx-ai package v1": (
        (r"^legacy_norm\.", "norm."),
        (r"^norm\.", "fc_norm."),
        (r"^pos_embed\.embed$", "pos_embed"),
    ),
    # vision_lstm package, VisionLSTM2 (v2): norm = post-block norm, legacy_norm = head norm
    "nx-ai package v2": (
        (r"^legacy_norm\.", "fc_norm."),
        (r"^pos_embed\.embed$", "pos_embed"),
    ),
    # Seg-LSTM mmsegmentation backbone (stage-local block names are mapped before these)
    "seg-lstm mmseg": ((r"^pos_embed\.embed$", "pos_embed"),),
    "vil_seg": (),
}

# Custom LayerNorms of the originals store their scale zero-centred (effective scale = 1 + weight).
_ZERO_CENTRED = re.compile(r"^(blocks\.\d+\.norm\.weight|blocks\.\d+\.layer\.outnorm\.weight|norm\.weight)$")
_HEAD_PREFIXES = ("norm.", "fc_norm.", "head.")


def _unwrap_state_dict(state_dict: dict) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "state_dict_ema"):
        if key in state_dict and isinstance(state_dict[key], dict):
            state_dict = state_dict[key]
            break
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def _detect_layout(state_dict: dict[str, torch.Tensor]) -> str:
    keys = list(state_dict)
    if any(k.startswith(("xlstm.", "head.0.", "post_blocks_norm.")) for k in keys):
        return "nx-ai raw"
    if any(k.startswith(("backbone.", "decode_head.", "auxiliary_head.")) for k in keys):
        return "seg-lstm mmseg"
    if any(".rowwise_from_" in k for k in keys):
        return "nx-ai package v2"
    if "pos_embed.embed" in state_dict or "legacy_norm.weight" in state_dict:
        return "nx-ai package v1"
    return "vil_seg"


def _pair_blocks_to_single(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """NX-AI v2 pairs ``blocks.P.rowwise_from_{top_left,bot_right}`` -> blocks ``2P`` and ``2P + 1``."""
    out = {}
    for key, value in state_dict.items():
        match = re.match(r"^blocks\.(\d+)\.rowwise_from_(top_left|bot_right)\.(.*)$", key)
        if match:
            index = 2 * int(match[1]) + (match[2] == "bot_right")
            key = f"blocks.{index}.{match[3]}"
        out[key] = value
    return out


def _stage_blocks_to_global(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Seg-LSTM ``backbone.blocksK.j`` (stage K from 1, local j) -> ``blocks.N`` with N counted globally."""
    backbone = {k.removeprefix("backbone."): v for k, v in state_dict.items() if k.startswith("backbone.")}
    stage_depths: dict[int, int] = {}
    for key in backbone:
        match = re.match(r"^blocks(\d+)\.(\d+)\.", key)
        if match:
            stage, index = int(match[1]), int(match[2])
            stage_depths[stage] = max(stage_depths.get(stage, 0), index + 1)
    offsets, total = {}, 0
    for stage in sorted(stage_depths):
        offsets[stage], total = total, total + stage_depths[stage]
    out = {}
    for key, value in backbone.items():
        match = re.match(r"^blocks(\d+)\.(\d+)\.(.*)$", key)
        if match:
            key = f"blocks.{offsets[int(match[1])] + int(match[2])}.{match[3]}"
        out[key] = value
    return out


def _rename(key: str, renames: Sequence[tuple[str, str]]) -> str:
    for pattern, replacement in renames:
        new_key, count = re.subn(pattern, replacement, key)
        if count:
            key = new_key
            break
    if key.startswith("blocks."):
        for pattern, replacement in _LAYER_RENAMES:
            key = re.sub(pattern, replacement, key)
    return key


def _block_index(key: str) -> int | None:
    match = re.match(r"^blocks\.(\d+)\.", key)
    return int(match[1]) if match else None


def _format_keys(keys: Sequence[str], limit: int = 20) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def remap_checkpoint(state_dict: dict) -> tuple[dict[str, torch.Tensor], str]:
    """Rename any ViL checkpoint's keys to vil_seg's, without a model: no resizing, no key checks.

    Returns the renamed state_dict (norm scales no longer zero-centred) and the layout it came in
    (``"nx-ai raw"``, ``"nx-ai package v1"``, ``"nx-ai package v2"``, ``"seg-lstm mmseg"``, ``"vil_seg"``).
    """
    state_dict = _unwrap_state_dict(state_dict)
    layout = _detect_layout(state_dict)
    if layout == "nx-ai package v2":
        state_dict = _pair_blocks_to_single(state_dict)
    elif layout == "seg-lstm mmseg":
        state_dict = _stage_blocks_to_global(state_dict)
    renames = _LAYOUT_RENAMES[layout]
    out = {}
    for key, value in state_dict.items():
        key = _rename(key, renames)
        if layout != "vil_seg" and _ZERO_CENTRED.match(key):
            value = value + 1
        out[key] = value
    return out, layout


def checkpoint_filter_fn(state_dict: dict, model: VisionLSTM) -> dict[str, torch.Tensor]:
    """Convert any ViL checkpoint to this model's keys, resizing the position embedding to its grid.

    Accepts NX-AI's downloadable ``.th`` files (``{"state_dict": ...}`` with training-code names), the
    ``vision_lstm`` package's v1 and v2 state_dicts, Seg-LSTM mmsegmentation checkpoints (backbone only,
    stage-local block names) and vil_seg's own. Raises ``ValueError`` listing the keys when blocks or stem
    weights are missing, or when the checkpoint holds keys this model does not know. A checkpoint without
    any of the post-block norm / head norm / classifier (a backbone checkpoint) is accepted; timm then
    loads it non-strictly, which is what ``features_only`` needs.
    """
    out, layout = remap_checkpoint(state_dict)
    if "pos_embed" in out and out["pos_embed"].shape[1:3] != model.pos_embed.shape[1:3]:
        out["pos_embed"] = resample_abs_pos_embed_nhwc(
            out["pos_embed"], model.pos_embed.shape[1:3], interpolation="bicubic", antialias=False
        )
    patch_weight = out.get("patch_embed.proj.weight")
    if patch_weight is not None and patch_weight.shape[-2:] != model.patch_embed.proj.weight.shape[-2:]:
        out["patch_embed.proj.weight"] = resample_patch_embed(
            patch_weight,
            list(model.patch_embed.proj.weight.shape[-2:]),
            interpolation="bicubic",
            antialias=True,
        )

    expected = set(model.state_dict())
    # Parts this model lacks (pruned blocks, norm or head; num_classes=0) are dropped from the checkpoint.
    pruned_blocks = range(len(model.blocks), model.full_depth)
    out = {k: v for k, v in out.items() if _block_index(k) not in pruned_blocks}
    for prefix in _HEAD_PREFIXES:
        if not any(k.startswith(prefix) for k in expected):
            out = {k: v for k, v in out.items() if not k.startswith(prefix)}
    missing = expected - set(out)
    backbone_only = not any(k.startswith(_HEAD_PREFIXES) for k in out)
    tolerated = _HEAD_PREFIXES if backbone_only else ("head.",)
    missing = {k for k in missing if not k.startswith(tolerated)}
    if missing:
        raise ValueError(
            f"checkpoint ({layout} layout) lacks {len(missing)} weights the model needs: "
            f"{_format_keys(missing)}"
        )
    unexpected = set(out) - expected
    if unexpected:
        raise ValueError(
            f"checkpoint ({layout} layout) has {len(unexpected)} weights this model does not know: "
            f"{_format_keys(unexpected)}"
        )
    return out


# --------------------------------------------------------------------------------------------------------
# Configs and entrypoints
# --------------------------------------------------------------------------------------------------------

HUB_ORG = os.environ.get("VIL_SEG_HUB_ORG", "vil-seg")


def hub_repo_id(model_name: str, tag: str = "in1k") -> str:
    """The Hugging Face Hub repo of a variant's converted weights, ``{HUB_ORG}/{model_name}.{tag}``.

    The organisation is ``vil-seg`` unless the environment variable ``VIL_SEG_HUB_ORG`` names another.
    """
    return f"{HUB_ORG}/{model_name}.{tag}"


_HUB_ERRORS = (
    huggingface_hub.errors.RepositoryNotFoundError,
    huggingface_hub.errors.RevisionNotFoundError,
    huggingface_hub.errors.EntryNotFoundError,
    huggingface_hub.errors.LocalEntryNotFoundError,
    huggingface_hub.errors.HfHubHTTPError,
)


def _create_vision_lstm(variant: str, pretrained: bool, model_args: dict, **kwargs) -> VisionLSTM:
    kwargs = {**model_args, **kwargs}
    depth = kwargs["depth"]
    out_indices = tuple(depth * (i + 1) // 4 - 1 for i in range(4))
    try:
        return build_model_with_cfg(
            VisionLSTM,
            variant,
            pretrained,
            pretrained_filter_fn=checkpoint_filter_fn,
            feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
            **kwargs,
        )
    except _HUB_ERRORS as err:
        raise RuntimeError(_download_help(variant, kwargs.get("pretrained_cfg"), err)) from err


def _download_help(variant: str, tag: object, err: Exception) -> str:
    """What to do when the Hub holds no weights for ``variant`` (yet)."""
    tag = tag if isinstance(tag, str) and tag else default_cfgs[variant].tags[0]
    cfg = default_cfgs[variant].cfgs[tag]
    original = cfg.origin_url.rsplit("/", 1)[-1] if cfg.origin_url else "the original checkpoint"
    return (
        f"could not fetch the pretrained weights of {variant}.{tag} from the Hugging Face Hub repo "
        f"{cfg.hf_hub_id!r} ({type(err).__name__}). If that repo is not published (yet), convert the "
        f"original checkpoint locally: download {cfg.origin_url or original}, run "
        f"`vil-seg convert {original} --model {variant} --out DIR`, then load it with "
        f"timm.create_model({variant!r}, pretrained=True, "
        "pretrained_cfg_overlay=dict(file='DIR/model.safetensors'))"
    )


_NXAI_DOWNLOAD = "https://ml.jku.at/research/vision_lstm/download/{}.th"


def _cfg(**kwargs) -> dict:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bicubic",
        "fixed_input_size": False,
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "license": "apache-2.0",
        "paper_ids": "arXiv:2406.04303",
        "paper_name": "Vision-LSTM: xLSTM as Generic Vision Backbone",
        **kwargs,
    }


def _in1k(model_name: str, tag: str, original: str, top1: float | None = None) -> tuple[str, dict]:
    """The cfg of ImageNet-1k weights converted from NX-AI's ``original``.th, on the Hub at hub_repo_id."""
    notes = f"converted from NX-AI's {original}.th"
    if top1 is not None:
        notes += f"; ImageNet-1k top-1 {top1}% as NX-AI's README reports it"
    cfg = _cfg(
        hf_hub_id=hub_repo_id(model_name, tag),
        hf_hub_filename="model.safetensors",
        origin_url=_NXAI_DOWNLOAD.format(original),
        notes=notes,
    )
    return f"{model_name}.{tag}", cfg


default_cfgs = generate_default_cfgs(
    dict(
        [
            _in1k("vil_tiny", "in1k", "vil_tiny16_e800_in1k", 77.3),
            _in1k("vil_tiny", "in1k_e400", "vil_tiny16_e400_in1k"),
            _in1k("vil_tiny_plus", "in1k", "vil_tinyplus16_e800_in1k"),
            _in1k("vil_small", "in1k", "vil_small16_e400_in1k", 80.7),
            _in1k("vil_small_plus", "in1k", "vil_smallplus16_e400_in1k"),
            _in1k("vil_base", "in1k", "vil_base16_e400_in1k", 81.6),
            _in1k("vil2_tiny", "in1k", "vil2_tiny16_e800_in1k", 78.3),
            _in1k("vil2_tiny", "in1k_e400", "vil2_tiny16_e400_in1k"),
            _in1k("vil2_small", "in1k", "vil2_small16_e400_in1k", 81.5),
            _in1k("vil2_base", "in1k", "vil2_base16_e400_in1k", 82.4),
        ]
    )
)

_V2_ARGS = dict(
    conv_kind="2d",
    conv_kernel_size=3,
    bias=True,
    global_pool="bilateral_flatten",
    norm_eps=1e-6,
    fc_norm_eps=1e-5,
)


@register_model
def vil_tiny(pretrained: bool = False, **kwargs) -> VisionLSTM:
    """ViL-T (v1), 192 wide, 24 blocks."""
    return _create_vision_lstm("vil_tiny", pretrained, dict(embed_dim=192, depth=24), **kwargs)


@register_model
def vil_tiny_plus(pretrained: bool = False, **kwargs) -> VisionLSTM:
    """ViL-T+ (v1), 192 wide, 29 blocks."""
    return _create_vision_lstm("vil_tiny_plus", pretrained, dict(embed_dim=192, depth=29), **kwargs)


@register_model
def vil_small(pretrained: bool = False, **kwargs) -> VisionLSTM:
    """ViL-S (v1), 384 wide, 24 blocks: the Seg-LSTM backbone."""
    return _create_vision_lstm("vil_small", pretrained, dict(embed_dim=384, depth=24), **kwargs)


@register_model
def vil_small_plus(pretrained: bool = False, **kwargs) -> VisionLSTM:
    """ViL-S+ (v1), 384 wide, 26 blocks."""
    return _create_vision_lstm("vil_small_plus", pretrained, dict(embed_dim=384, depth=26), **kwargs)


@register_model
def vil_base(pretrained: bool = False, **kwargs) -> VisionLSTM:
    """ViL-B (v1), 768 wide, 24 blocks."""
    return _create_vision_lstm("vil_base", pretrained, dict(embed_dim=768, depth=24), **kwargs)


@register_model
def vil2_tiny(pretrained: bool = False, **kwargs) -> VisionLSTM:
    """ViL-T v2, 192 wide, 24 blocks (NX-AI's 12 pairs)."""
    return _create_vision_lstm("vil2_tiny", pretrained, dict(_V2_ARGS, embed_dim=192, depth=24), **kwargs)


@register_model
def vil2_small(pretrained: bool = False, **kwargs) -> VisionLSTM:
    """ViL-S v2, 384 wide, 24 blocks (NX-AI's 12 pairs)."""
    return _create_vision_lstm("vil2_small", pretrained, dict(_V2_ARGS, embed_dim=384, depth=24), **kwargs)


@register_model
def vil2_base(pretrained: bool = False, **kwargs) -> VisionLSTM:
    """ViL-B v2, 768 wide, 24 blocks (NX-AI's 12 pairs)."""
    return _create_vision_lstm("vil2_base", pretrained, dict(_V2_ARGS, embed_dim=768, depth=24), **kwargs)
