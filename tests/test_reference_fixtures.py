"""The original implementations' outputs, reproduced through timm's own pretrained-loading path."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import load_file

from .conftest import rel_err

# The fixture's logits depend only weakly on the input, so they are checked far tighter than the
# block outputs: a bilinear instead of bicubic position-embedding resize already gives 6e-6 there.
BLOCK_TOL, LOGIT_TOL = 1e-4, 1e-6
TINY = dict(embed_dim=64, depth=4, img_size=(64, 96))


def _load(name, path, **kwargs):
    overlay = dict(file=str(path), num_classes=kwargs.pop("num_classes", 10))
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs).eval()


@pytest.mark.parametrize("checkpoint", ["tiny_v1_raw_checkpoint.th", "tiny_v1_package_state_dict.pt"])
def test_v1_blocks_and_logits(fixtures_dir, checkpoint):
    ref = load_file(fixtures_dir / "tiny_v1_io.safetensors")
    model = _load("vil_tiny", fixtures_dir / checkpoint, **TINY)
    with torch.no_grad():
        blocks = model.forward_intermediates(ref["input"], output_fmt="NLC", intermediates_only=True)
        logits = model(ref["input"])
        logits_resized = model(ref["input_resized"])
    assert len(blocks) == 4
    for i, block in enumerate(blocks):
        assert rel_err(block, ref[f"block{i}"]) <= BLOCK_TOL, f"block {i}"
    assert rel_err(logits, ref["logits"]) <= LOGIT_TOL
    assert ref["input_resized"].shape[-2:] == (96, 112)
    assert rel_err(logits_resized, ref["logits_resized"]) <= LOGIT_TOL


def test_v2_pairs_and_logits(fixtures_dir):
    ref = load_file(fixtures_dir / "tiny_v2_io.safetensors")
    model = _load("vil2_tiny", fixtures_dir / "tiny_v2_package_state_dict.pt", **TINY)
    with torch.no_grad():
        pairs = model.forward_intermediates(
            ref["input"], indices=[1, 3], output_fmt="NLC", intermediates_only=True
        )
        logits = model(ref["input"])
    assert rel_err(pairs[0], ref["block0"]) <= BLOCK_TOL
    assert rel_err(pairs[1], ref["block1"]) <= BLOCK_TOL
    assert rel_err(logits, ref["logits"]) <= LOGIT_TOL


def test_seglstm_stage_outputs_features_only(fixtures_dir):
    ref = load_file(fixtures_dir / "tiny_seglstm_io.safetensors")
    model = timm.create_model(
        "vil_tiny",
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(fixtures_dir / "tiny_seglstm_mmseg_checkpoint.pth")),
        embed_dim=64,
        depth=8,
        img_size=64,
        features_only=True,
        out_indices=(1, 3, 5, 7),
    ).eval()
    assert model.feature_info.channels() == [64] * 4
    assert model.feature_info.reduction() == [16] * 4
    with torch.no_grad():
        stages = model(ref["input"])
    for i, stage in enumerate(stages):
        assert rel_err(stage, ref[f"stage{i}"]) <= BLOCK_TOL, f"stage {i}"


def test_position_embedding_resized_when_grid_differs(fixtures_dir):
    """A checkpoint stored at a 4x6 grid loads into a model built for another size, resized bicubically."""
    model = _load(
        "vil_tiny", fixtures_dir / "tiny_v1_raw_checkpoint.th", embed_dim=64, depth=4, img_size=(96, 112)
    )
    ref = load_file(fixtures_dir / "tiny_v1_io.safetensors")
    assert model.pos_embed.shape == (1, 6, 7, 64)
    with torch.no_grad():
        logits = model(ref["input_resized"])
    assert rel_err(logits, ref["logits_resized"]) <= LOGIT_TOL
