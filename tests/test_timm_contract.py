"""What timm's own test_models.py checks for every model, checked for the ViL family."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.optim import create_optimizer_v2

MODEL_NAMES = ["vil_tiny", "vil_small", "vil_base", "vil2_tiny", "vil2_small", "vil2_base"]
SMALL_NAMES = ["vil_tiny", "vil2_tiny"]
INPUT = (2, 3, 64, 96)


def _input(shape=INPUT, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_models_registered():
    assert set(MODEL_NAMES) <= set(timm.list_models("vil*"))
    assert "vision_lstm" in timm.list_modules()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_and_grad_checkpointing(name):
    model = timm.create_model(name).eval()
    x = _input()
    with torch.no_grad():
        out = model(x)
        model.set_grad_checkpointing()
        out_ckpt = model(x)
    assert out.shape == (2, 1000)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out_ckpt, out, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_backward_reaches_every_parameter(name):
    model = timm.create_model(name, num_classes=42).train()
    out = model(_input((2, 3, 32, 48)))
    assert out.shape == (2, 42)
    out.mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, f"parameters without a (finite) gradient: {no_grad}"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_default_cfg_and_head_contract(name):
    model = timm.create_model(name).eval()
    cfg = model.pretrained_cfg
    for key in ("input_size", "mean", "std", "interpolation", "num_classes", "first_conv", "classifier"):
        assert key in cfg, key
    assert cfg["input_size"] == (3, 224, 224) and cfg["fixed_input_size"] is False
    state_dict = model.state_dict()
    assert cfg["classifier"] + ".weight" in state_dict
    assert cfg["first_conv"] + ".weight" in state_dict
    assert model.num_classes == cfg["num_classes"] == 1000
    assert model.num_features == model.embed_dim > 0
    expected_hidden = 2 * model.embed_dim if name.startswith("vil2") else model.embed_dim
    assert model.head_hidden_size == expected_hidden

    x = _input((1, 3, 32, 32))
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (1, 4, model.num_features)
        pre_logits = model.forward_head(features, pre_logits=True)
        assert pre_logits.shape == (1, model.head_hidden_size)
        model.reset_classifier(0)
        assert model.num_classes == 0
        torch.testing.assert_close(model(x), pre_logits, rtol=0, atol=0)
    headless = timm.create_model(name, num_classes=0)
    assert not any(k.startswith("head.") for k in headless.state_dict())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_intermediates_match_features_only(name):
    model = timm.create_model(name).eval()
    features = timm.create_model(name, features_only=True).eval()
    backbone = {
        k: v for k, v in model.state_dict().items() if not k.startswith(("norm.", "fc_norm.", "head."))
    }
    features.model.load_state_dict(backbone)
    assert len(model.feature_info) == 24
    assert features.feature_info.out_indices == (5, 11, 17, 23)
    x = _input()
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x, indices=(5, 11, 17, 23))
        feats = features(x)
        torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=1e-6)
        model.set_grad_checkpointing()
        final_ckpt, _ = model.forward_intermediates(x, indices=(5, 11, 17, 23))
        torch.testing.assert_close(final_ckpt, final, rtol=0, atol=1e-5)
    assert len(feats) == 4
    for feat, inter, chans, red in zip(
        feats, intermediates, features.feature_info.channels(), features.feature_info.reduction(), strict=True
    ):
        assert feat.shape == (2, chans, 64 // red, 96 // red)
        torch.testing.assert_close(feat, inter, rtol=0, atol=1e-6)


def test_forward_intermediates_options():
    model = timm.create_model("vil_tiny", depth=6).eval()
    x = _input()
    with torch.no_grad():
        all_blocks = model.forward_intermediates(x, intermediates_only=True)
        last_two = model.forward_intermediates(x, indices=2, output_fmt="NLC", intermediates_only=True)
        normed = model.forward_intermediates(
            x, indices=[-1], norm=True, stop_early=True, intermediates_only=True
        )
        final, first = model.forward_intermediates(x, indices=[0], stop_early=True, output_fmt="NLC")
    assert len(all_blocks) == 6 and all_blocks[0].shape == (2, 192, 4, 6)
    torch.testing.assert_close(last_two[1], all_blocks[5].flatten(2).transpose(1, 2), rtol=0, atol=0)
    expected = model.norm(all_blocks[5].flatten(2).transpose(1, 2))
    torch.testing.assert_close(normed[0].flatten(2).transpose(1, 2), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(final, model.norm(first[0]), rtol=0, atol=1e-6)  # stopped after block 0
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NHWC")


def test_features_only_out_indices_follow_depth_and_stages():
    assert timm.create_model("vil_tiny", features_only=True).feature_info.out_indices == (5, 11, 17, 23)
    assert timm.create_model("vil_tiny", depth=8, features_only=True).feature_info.out_indices == (1, 3, 5, 7)
    from vil_seg import stage_out_indices

    assert stage_out_indices((4, 4, 12, 4)) == (3, 7, 19, 23)
    model = timm.create_model("vil_tiny", features_only=True, out_indices=stage_out_indices((4, 4, 12, 4)))
    assert model.feature_info.out_indices == (3, 7, 19, 23)


def test_prune_intermediate_layers_keeps_outputs():
    model = timm.create_model("vil_tiny", depth=6).eval()
    x = _input()
    with torch.no_grad():
        ref = model.forward_intermediates(x, indices=[1, 3], intermediates_only=True)
        kept = model.prune_intermediate_layers([1, 3], prune_norm=True)
        pruned = model.forward_intermediates(x, indices=[1, 3], intermediates_only=True)
    assert kept == [1, 3]
    assert len(model.blocks) == 4 and isinstance(model.norm, torch.nn.Identity)
    assert model.num_classes == 0
    for a, b in zip(pruned, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_layer_decay_and_weight_decay_groups():
    model = timm.create_model("vil_tiny", depth=4)
    assert model.no_weight_decay() == {"pos_embed"}
    optimizer = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.65)
    scales = {round(g["lr_scale"], 6) for g in optimizer.param_groups}
    assert len(scales) == 6  # stem, 4 blocks, head
    pos_group = next(g for g in optimizer.param_groups if any(p is model.pos_embed for p in g["params"]))
    assert pos_group["weight_decay"] == 0.0
    assert pos_group["lr_scale"] == pytest.approx(0.65**5)


@pytest.mark.parametrize("name", SMALL_NAMES)
def test_any_size_without_rebuilding(name):
    model = timm.create_model(name, features_only=True, depth=4).eval()
    first = _input((1, 3, 32, 32))
    with torch.no_grad():
        before = model(first)[-1]
        for height, width in [(48, 128), (224, 64)]:
            feats = model(_input((1, 3, height, width)))
            assert feats[-1].shape == (1, 192, height // 16, width // 16)
        after = model(first)[-1]
    torch.testing.assert_close(after, before, rtol=0, atol=0)  # nothing of another size is kept


def test_dynamic_img_pad_pads_bottom_right():
    model = timm.create_model("vil_tiny", depth=2, dynamic_img_pad=True).eval()
    x = _input((1, 3, 70, 90))
    padded = torch.nn.functional.pad(x, (0, 6, 0, 10))
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), model.forward_features(padded), rtol=0, atol=0)
        assert model.forward_intermediates(x, intermediates_only=True)[0].shape == (1, 192, 5, 6)


def test_in_chans_adapts_pretrained_stem(fixtures_dir):
    overlay = dict(file=str(fixtures_dir / "tiny_v1_raw_checkpoint.th"), num_classes=10)
    source, four = (
        timm.create_model(
            "vil_tiny", pretrained=True, pretrained_cfg_overlay=overlay, embed_dim=64, depth=4, in_chans=c
        )
        for c in (3, 4)
    )
    w3, w4 = source.patch_embed.proj.weight, four.patch_embed.proj.weight
    assert w4.shape == (64, 4, 16, 16)
    torch.testing.assert_close(w4[:, :3], w3 * 0.75)
    torch.testing.assert_close(w4[:, 3], w3[:, 0] * 0.75)
    torch.testing.assert_close(four.blocks[0].layer.proj_up.weight, source.blocks[0].layer.proj_up.weight)
    assert four(_input((1, 4, 32, 32))).shape == (1, 10)


def test_trunk_imports_without_smp():
    """The timm family needs only timm: a bare GPU image without smp can still build and run it."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['segmentation_models_pytorch'] = None\n"
        "import timm, torch, vil_seg\n"
        "model = timm.create_model('vil_tiny', depth=2)\n"
        "print(model(torch.randn(1, 3, 32, 32)).shape[-1], hasattr(vil_seg, 'SegLSTM'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1000", "False"]
