"""ViL as an smp encoder: every smp architecture, pyramid contract, pretrained weights from a Hub cache."""

from __future__ import annotations

import json

import huggingface_hub
import pytest
import segmentation_models_pytorch as smp
import timm
import torch
from safetensors.torch import save_file

import vil_seg
from vil_seg.encoders import ViLEncoder
from vil_seg.vision_lstm import hub_repo_id

ARCHS = [
    "unet",
    "unetplusplus",
    "manet",
    "linknet",
    "fpn",
    "pspnet",
    "deeplabv3",
    "deeplabv3plus",
    "pan",
    "upernet",
    "segformer",
]
# timm's final norm and classifier head: smp's ViT adapter (DPT) reads only block outputs
DPT_UNUSED = {"norm.weight", "fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}


def _input(shape=(2, 3, 128, 160), seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _params_without_grad(model):
    return {n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()}


@pytest.mark.parametrize("arch", ARCHS)
def test_every_smp_architecture_trains_on_non_square_input(arch):
    model = smp.create_model(arch, encoder_name="vil_tiny", encoder_weights=None, classes=5).train()
    logits = model(_input())
    assert logits.shape == (2, 5, 128, 160)
    logits.square().mean().backward()
    assert not _params_without_grad(model)


def test_dpt_through_timm_path():
    model = smp.create_model(
        "dpt", encoder_name="tu-vil_tiny", encoder_weights=None, classes=5, decoder_readout="ignore"
    ).train()
    logits = model(_input())
    assert logits.shape == (2, 5, 128, 160)
    logits.square().mean().backward()
    assert _params_without_grad(model) == {f"encoder.model.{n}" for n in DPT_UNUSED}


@pytest.mark.parametrize(
    ("arch", "kwargs", "in_channels"),
    [
        ("unet", dict(in_channels=4), 4),
        ("unet", dict(encoder_depth=4, decoder_channels=(128, 64, 32, 16)), 3),
        ("unet", dict(encoder_depth=3, decoder_channels=(64, 32, 16)), 3),
        ("deeplabv3plus", dict(encoder_output_stride=16), 3),
        ("deeplabv3", dict(encoder_output_stride=16), 3),
        ("pan", dict(encoder_output_stride=16), 3),
    ],
)
def test_smp_options(arch, kwargs, in_channels):
    model = smp.create_model(arch, encoder_name="vil_tiny", encoder_weights=None, classes=3, **kwargs).train()
    logits = model(_input((2, in_channels, 128, 160)))
    assert logits.shape == (2, 3, 128, 160)
    logits.mean().backward()
    assert not _params_without_grad(model)


def test_fpn_below_depth_5_explains_itself():
    model = smp.create_model("fpn", encoder_name="vil_tiny", encoder_weights=None, classes=3, encoder_depth=4)
    with pytest.raises(ValueError, match=r"stride-2 placeholder.*encoder_depth=5.*stride2='interpolate'"):
        model(_input())


def test_fpn_below_depth_5_with_a_real_stride2_level():
    vil_seg.register_smp_encoder("vil_tiny_s2_test", model_name="vil_tiny", stride2="interpolate")
    try:
        model = smp.create_model(
            "fpn",
            encoder_name="vil_tiny_s2_test",
            encoder_weights=None,
            classes=3,
            encoder_depth=4,
            upsampling=2,
        )
        x = _input()
        assert model(x).shape == (2, 3, 128, 160)
        encoder = model.encoder.eval()
        with torch.no_grad():
            stride2 = encoder(x)[1]
            tap = encoder.model.forward_intermediates(x, indices=[5], intermediates_only=True)[0]
        up8 = torch.nn.functional.interpolate(tap, scale_factor=8, mode="bilinear", align_corners=False)
        torch.testing.assert_close(stride2, up8)  # the first stage's map, brought to stride 2
    finally:
        del smp.encoders.encoders["vil_tiny_s2_test"]


def test_pyramid_strides_and_values():
    encoder = ViLEncoder("vil_tiny").eval()
    x = _input()
    with torch.no_grad():
        features = encoder(x)
        taps = encoder.model.forward_intermediates(x, indices=[5, 11, 17, 23], intermediates_only=True)
    assert encoder.out_channels == [3, 0, 192, 192, 192, 192]
    assert [f.shape[1] for f in features] == encoder.out_channels
    assert [128 // f.shape[2] for f in features] == [1, 2, 4, 8, 16, 32]
    assert [160 // f.shape[3] for f in features] == [1, 2, 4, 8, 16, 32]
    assert features[0] is x
    up4 = torch.nn.functional.interpolate(taps[0], scale_factor=4, mode="bilinear", align_corners=False)
    torch.testing.assert_close(features[2], up4)
    torch.testing.assert_close(features[4], taps[2])
    torch.testing.assert_close(features[5], torch.nn.functional.max_pool2d(taps[3], 2))


@pytest.mark.parametrize(("output_stride", "strides"), [(16, [4, 8, 16, 16]), (8, [4, 8, 8, 8])])
def test_output_stride(output_stride, strides):
    encoder = smp.encoders.get_encoder("vil_tiny", weights=None, output_stride=output_stride)
    assert encoder.output_stride == output_stride
    with torch.no_grad():
        features = encoder(_input((1, 3, 64, 64)))
    assert [64 // f.shape[-1] for f in features[2:]] == strides


@pytest.mark.parametrize("depth", [3, 4, 5])
def test_depth_prunes_unused_blocks(depth):
    """A shallower encoder keeps only the blocks it taps, and its levels equal the full encoder's."""
    encoder = smp.encoders.get_encoder("vil_tiny", weights=None, depth=depth).eval()
    assert len(encoder.model.blocks) == 6 * (depth - 1)
    assert isinstance(encoder.model.norm, torch.nn.Identity)
    full = smp.encoders.get_encoder("vil_tiny", weights=None, depth=5).eval()
    kept = encoder.model.state_dict()
    full.model.load_state_dict({**full.model.state_dict(), **kept})  # the same weights in the shared blocks
    x = _input((1, 3, 64, 64))
    with torch.no_grad():
        features, full_features = encoder(x), full(x)
    assert len(features) == depth + 1
    for ours, reference in zip(features[2:], full_features[2 : depth + 1], strict=True):
        torch.testing.assert_close(ours, reference)


def test_invalid_options():
    with pytest.raises(ValueError, match="encoder depth must be 3, 4 or 5"):
        smp.encoders.get_encoder("vil_tiny", weights=None, depth=6)
    with pytest.raises(ValueError, match="unknown neck"):
        ViLEncoder("vil_tiny", neck="fpn")
    with pytest.raises(KeyError, match="Wrong encoder name"):
        smp.create_model("unet", encoder_name="vil_huge", encoder_weights=None)


def test_deconv_neck_trains_and_documents_unused_params():
    vil_seg.register_smp_encoder("vil_tiny_deconv_test", model_name="vil_tiny", neck="deconv")
    try:
        model = smp.create_model(
            "upernet", encoder_name="vil_tiny_deconv_test", encoder_weights=None, classes=3
        )
        model(_input()).mean().backward()
        assert not _params_without_grad(model)
        deeplab = smp.create_model(
            "deeplabv3", encoder_name="vil_tiny_deconv_test", encoder_weights=None, classes=3
        )
        deeplab(_input()).mean().backward()
        assert {n.split(".")[1] for n in _params_without_grad(deeplab)} == {"fpn1", "fpn2"}
    finally:
        del smp.encoders.encoders["vil_tiny_deconv_test"]


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """A Hugging Face cache holding ``vil_tiny``'s 'imagenet' weights, with the Hub offline."""
    source = timm.create_model("vil_tiny").eval()
    repo = tmp_path / f"models--{hub_repo_id('vil_tiny').replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    save_file(source.state_dict(), snapshot / "model.safetensors")
    config = {"architecture": "vil_tiny", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    (snapshot / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return source


def test_imagenet_weights_from_offline_cache(offline_hub):
    model = smp.create_model("unet", encoder_name="vil_tiny", encoder_weights="imagenet", classes=2)
    trunk = model.encoder.model
    for name, value in trunk.state_dict().items():
        torch.testing.assert_close(value, offline_hub.state_dict()[name], rtol=0, atol=0, msg=name)
    params = smp.encoders.get_preprocessing_params("vil_tiny")
    assert params["mean"] == [0.485, 0.456, 0.406]


def test_unknown_weights_name_is_refused():
    with pytest.raises(KeyError, match=r"Wrong pretrained weights `in22k`.*imagenet"):
        smp.create_model("unet", encoder_name="vil_tiny", encoder_weights="in22k")
