"""ViL model behaviour beyond the timm contract: scans, backends, bad input, checkpoint conversion."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vil_seg.vision_lstm import CausalSequenceConv, HeadwiseLinear, _ShiftedMultiplyAdd, checkpoint_filter_fn

from .conftest import rel_err


def _input(shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _transposed_twin(model, **kwargs):
    """A row-scan model whose weights see the transposed image exactly as ``model`` sees the image."""
    twin = timm.create_model(kwargs.pop("name"), scan="row", **kwargs).eval()
    state = model.state_dict()
    state["patch_embed.proj.weight"] = state["patch_embed.proj.weight"].transpose(-1, -2)
    state["pos_embed"] = state["pos_embed"].transpose(1, 2)
    twin.load_state_dict(state)
    return twin


@pytest.mark.parametrize("name", ["vil_tiny", "vil2_tiny"])
def test_column_scan_is_row_scan_of_transposed_image(name):
    model = timm.create_model(name, scan="column", depth=4, embed_dim=64, img_size=(48, 80)).eval()
    twin = _transposed_twin(model, name=name, depth=4, embed_dim=64, img_size=(80, 48))
    x = _input((2, 3, 48, 80))
    with torch.no_grad():
        feats = model.forward_intermediates(x, intermediates_only=True)
        twin_feats = twin.forward_intermediates(x.transpose(-1, -2), intermediates_only=True)
    for a, b in zip(feats, twin_feats, strict=True):
        assert rel_err(a, b.transpose(-1, -2)) <= 1e-5


def _manual_scan_reference(model, x):
    """Each block run by hand on its own token order, built from explicit grid transposes and flips."""
    tokens, (height, width) = model._embed(x)
    batch, dim = tokens.shape[0], tokens.shape[-1]
    orders = ["row", "row_reversed", "column", "column_reversed"]
    outputs = []
    for i, block in enumerate(model.blocks):
        order = orders[i % 4]
        grid = tokens.view(batch, height, width, dim)
        if order.startswith("column"):
            seq, seq_grid = grid.transpose(1, 2).reshape(batch, -1, dim), (width, height)
        else:
            seq, seq_grid = grid.reshape(batch, -1, dim), (height, width)
        if order.endswith("reversed"):
            seq = seq.flip(1)
        out = block(seq, seq_grid)
        if order.endswith("reversed"):
            out = out.flip(1)
        if order.startswith("column"):
            out = out.view(batch, width, height, dim).transpose(1, 2)
        tokens = out.reshape(batch, -1, dim)
        outputs.append(tokens)
    return outputs


@pytest.mark.parametrize("name", ["vil_tiny", "vil2_tiny"])
def test_quad_scan_cycles_four_directions(name):
    model = timm.create_model(name, scan="quad", depth=6, embed_dim=64).eval()
    assert [b.scan for b in model.blocks] == [
        "row",
        "row_reversed",
        "column",
        "column_reversed",
        "row",
        "row_reversed",
    ]
    x = _input((2, 3, 48, 64))
    with torch.no_grad():
        ours = model.forward_intermediates(x, output_fmt="NLC", intermediates_only=True)
        ref = _manual_scan_reference(model, x)
    for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
        assert rel_err(a, b) <= 1e-6, f"block {i}"


@pytest.mark.parametrize("name", ["vil_tiny", "vil2_tiny"])
def test_mlstm_backends_give_the_same_model(name):
    models = {
        backend: timm.create_model(name, depth=2, mlstm_backend=backend, chunk_size=16).eval()
        for backend in ("chunkwise", "parallel", "recurrent")
    }
    state = models["chunkwise"].state_dict()
    for model in models.values():
        model.load_state_dict(state)
    x = _input((1, 3, 176, 192))  # 132 tokens: 9 chunks of 16, the last one padded
    with torch.no_grad():
        outs = {backend: model.forward_features(x) for backend, model in models.items()}
    assert rel_err(outs["chunkwise"], outs["parallel"]) <= 1e-5
    assert rel_err(outs["recurrent"], outs["parallel"]) <= 1e-5


@pytest.mark.parametrize("name", ["vil_tiny", "vil2_tiny"])
@pytest.mark.parametrize(("segment_len", "segments_per_forward"), [(20, 8 + 8 + 9 + 9), (3, 15 + 15 + 9 + 9)])
def test_segmented_inference_equals_whole_sequences(name, segment_len, segments_per_forward, monkeypatch):
    """Inference over segments of whole scan rows (with the conv's context rows for v2) gives the blocks'
    whole-sequence outputs, in every scan direction."""
    model = timm.create_model(
        name, scan="quad", depth=4, embed_dim=64, chunk_size=8, segment_len=segment_len
    ).eval()
    # a 15 x 9 patch grid: row scans of 15 rows of 9, column scans of 9 rows of 15; whole sequences of 135
    # tokens run in 17 chunks of 8 (above DH + L = 40 tokens), segments of 18 or fewer in one chunk each
    x = _input((2, 3, 240, 144))
    calls = []
    segment = type(model.blocks[0].layer).forward_segment
    monkeypatch.setattr(
        type(model.blocks[0].layer), "forward_segment", lambda *a, **k: calls.append(1) or segment(*a, **k)
    )
    with torch.no_grad():
        segmented = model.forward_intermediates(x, output_fmt="NLC", intermediates_only=True)
    assert len(calls) == segments_per_forward
    with torch.enable_grad():  # autograd on: whole sequences
        whole = model.forward_intermediates(x, output_fmt="NLC", intermediates_only=True)
    assert len(calls) == segments_per_forward
    for i, (a, b) in enumerate(zip(segmented, whole, strict=True)):
        assert rel_err(a, b.detach()) <= 1e-6, f"block {i}"
    unsegmented = timm.create_model(name, scan="quad", depth=4, embed_dim=64, chunk_size=8, segment_len=0)
    with torch.no_grad():
        unsegmented.eval().forward_features(x)
    assert len(calls) == segments_per_forward


@pytest.mark.parametrize(("dim", "num_heads", "bias"), [(768, 4, False), (128, 4, True), (24, 4, False)])
def test_headwise_head_layout_and_folding_equal_the_block_product(dim, num_heads, bias):
    """to_heads (grouped dense matmuls; dim 24 / 4 heads takes the fallback) and fold_into give the
    block-diagonal product, in values and gradients (float64)."""
    torch.manual_seed(0)
    proj = HeadwiseLinear(dim, 4, bias=bias).double()
    torch.nn.init.normal_(proj.weight)
    if bias:
        torch.nn.init.normal_(proj.bias)
    x = torch.randn(2, 7, dim, dtype=torch.float64, requires_grad=True)
    blocks = torch.block_diag(*proj.weight)  # (dim, dim) in (out, in)
    expected = x @ blocks.T + (proj.bias if bias else 0)
    head_dim = dim // num_heads
    heads = proj.to_heads(x, num_heads)
    assert heads.shape == (2, num_heads, 7, head_dim) and heads.is_contiguous()
    torch.testing.assert_close(heads, expected.view(2, 7, num_heads, head_dim).transpose(1, 2))
    upstream = torch.randn(2, num_heads, 7, head_dim, dtype=torch.float64)
    grads = torch.autograd.grad((heads * upstream).sum(), (x, proj.weight))
    ref_grads = torch.autograd.grad(
        (expected.view(2, 7, num_heads, head_dim).transpose(1, 2) * upstream).sum(), (x, proj.weight)
    )
    for grad, ref in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(grad, ref)
    after = torch.randn(3, dim, dtype=torch.float64)
    torch.testing.assert_close(proj.fold_into(after), after @ blocks)


def test_short_sequences_run_as_one_chunk(monkeypatch):
    """Up to DH + chunk_size tokens the layer asks for one chunk (the parallel form), beyond that chunks."""
    from vil_seg import vision_lstm

    chunk_sizes = []
    real_mlstm = vision_lstm.mlstm
    monkeypatch.setattr(
        vision_lstm, "mlstm", lambda *a, **k: chunk_sizes.append(k["chunk_size"]) or real_mlstm(*a, **k)
    )
    model = timm.create_model("vil_tiny", depth=1, embed_dim=64, chunk_size=8, segment_len=0).eval()  # DH 32
    with torch.no_grad():
        model.forward_features(_input((1, 3, 80, 128)))  # 5 x 8 = 40 tokens
        model.forward_features(_input((1, 3, 80, 144)))  # 5 x 9 = 45 tokens
    assert chunk_sizes == [40, 8]


def test_wrong_channel_count_is_named():
    model = timm.create_model("vil_tiny", depth=1)
    with pytest.raises(ValueError, match=r"expected 3 input channels, got 4"):
        model(_input((1, 4, 32, 32)))
    features = timm.create_model("vil_tiny", depth=1, features_only=True, out_indices=(0,))
    with pytest.raises(ValueError, match=r"expected 3 input channels, got 1"):
        features(_input((1, 1, 32, 32)))


def test_size_not_divisible_names_patch_size():
    model = timm.create_model("vil_tiny", depth=1)
    with pytest.raises(ValueError, match=r"not divisible by the patch size 16x16.*dynamic_img_pad=True"):
        model(_input((1, 3, 40, 32)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(scan="diagonal"), "unknown scan"),
        (dict(global_pool="max"), "unknown global_pool"),
        (dict(mlstm_backend="triton-ish"), "unknown mlstm_backend"),
        (dict(conv_kind="3d"), "unknown conv_kind"),
        (dict(segment_len=-1), "segment_len must be a non-negative int"),
    ],
)
def test_bad_constructor_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        timm.create_model("vil_tiny", depth=1, **kwargs)


def _raw_checkpoint(fixtures_dir):
    return torch.load(fixtures_dir / "tiny_v1_raw_checkpoint.th", weights_only=True)


def _create_from(path, name="vil_tiny", depth=4):
    overlay = dict(file=str(path), num_classes=10)
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, embed_dim=64, depth=depth)


def test_checkpoint_missing_a_block_lists_the_keys(fixtures_dir, tmp_path):
    checkpoint = _raw_checkpoint(fixtures_dir)
    checkpoint["state_dict"] = {
        k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("xlstm.blocks.2.")
    }
    torch.save(checkpoint, tmp_path / "broken.th")
    with pytest.raises(ValueError, match=r"lacks 14 weights.*blocks\.2\.layer\.fgate\.bias") as info:
        _create_from(tmp_path / "broken.th")
    assert "nx-ai raw" in str(info.value)
    assert "blocks.2.norm.weight" in str(info.value)


def test_checkpoint_with_unknown_keys_is_refused(fixtures_dir, tmp_path):
    checkpoint = _raw_checkpoint(fixtures_dir)
    checkpoint["state_dict"]["xlstm.blocks.9.xlstm.proj_up.weight"] = torch.zeros(256, 64)
    torch.save(checkpoint, tmp_path / "deeper.th")
    with pytest.raises(ValueError, match=r"does not know: blocks\.9\.layer\.proj_up\.weight"):
        _create_from(tmp_path / "deeper.th")


def test_deeper_model_than_checkpoint_is_refused(fixtures_dir):
    with pytest.raises(ValueError, match=r"blocks\.4\."):
        _create_from(fixtures_dir / "tiny_v1_raw_checkpoint.th", depth=6)


def test_own_checkpoint_round_trip_safetensors(tmp_path):
    model = timm.create_model("vil2_tiny", depth=2, embed_dim=64, num_classes=10).eval()
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    loaded = _create_from(tmp_path / "model.safetensors", name="vil2_tiny", depth=2).eval()
    x = _input((1, 3, 32, 48))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_zero_centred_norms_converted(fixtures_dir):
    """Original custom LayerNorms store scale - 1; our plain LayerNorms hold the scale itself."""
    raw = _raw_checkpoint(fixtures_dir)["state_dict"]
    model = timm.create_model("vil_tiny", embed_dim=64, depth=4, num_classes=10, img_size=(64, 96))
    converted = checkpoint_filter_fn(raw, model)
    torch.testing.assert_close(converted["blocks.1.norm.weight"], raw["xlstm.blocks.1.xlstm_norm.weight"] + 1)
    outnorm = raw["xlstm.blocks.3.xlstm.mlstm_cell.outnorm.weight"] + 1
    torch.testing.assert_close(converted["blocks.3.layer.outnorm.weight"], outnorm)
    torch.testing.assert_close(converted["norm.weight"], raw["xlstm.post_blocks_norm.weight"] + 1)
    torch.testing.assert_close(converted["fc_norm.weight"], raw["head.0.weight"])  # nn.LayerNorm: unchanged


def test_raw_post_blocks_norm_without_prefix_accepted(fixtures_dir):
    raw = _raw_checkpoint(fixtures_dir)["state_dict"]
    raw["post_blocks_norm.weight"] = raw.pop("xlstm.post_blocks_norm.weight")
    model = timm.create_model("vil_tiny", embed_dim=64, depth=4, num_classes=10, img_size=(64, 96))
    converted = checkpoint_filter_fn({"state_dict": raw}, model)
    torch.testing.assert_close(converted["norm.weight"], raw["post_blocks_norm.weight"] + 1)


@pytest.mark.parametrize("seq_len", [1, 2, 9])
def test_causal_conv_equals_conv1d_in_values_and_gradients(seq_len):
    """The shifted multiply-add conv (and its written-out backward) is F.conv1d with K - 1 zeros in front,
    also for sequences shorter than the kernel; its backward passes gradcheck (float64)."""
    torch.manual_seed(seq_len)
    conv = CausalSequenceConv(5, kernel_size=4).double()
    x = torch.randn(2, seq_len, 5, dtype=torch.float64, requires_grad=True)
    out = conv(x, (1, seq_len))
    expected = F.conv1d(F.pad(x.transpose(1, 2), (3, 0)), conv.weight, conv.bias, groups=5).transpose(1, 2)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    weights = torch.randn_like(out)
    grads = torch.autograd.grad((out * weights).sum(), (x, conv.weight, conv.bias))
    expected_grads = torch.autograd.grad((expected * weights).sum(), (x, conv.weight, conv.bias))
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad, rtol=0, atol=1e-12)
    taps, bias = conv.weight[:, 0, :].detach().requires_grad_(), conv.bias.detach().requires_grad_()
    assert torch.autograd.gradcheck(_ShiftedMultiplyAdd.apply, (x, taps, bias))
