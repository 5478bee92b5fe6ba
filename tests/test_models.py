"""Seg-LSTM models, the paper's heads, APCNet / ANN on smp encoders, and save / reload."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import vil_seg
from vil_seg import ANN, APCNet, SegLSTM

from .conftest import rel_err
from .test_smp_encoders import offline_hub  # noqa: F401  (fixture)

DECODERS = ["upernet", "deeplabv3", "deeplabv3plus", "apcnet", "ann"]


def _count(module):
    return sum(p.numel() for p in module.parameters())


def _input(shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_seglstm_upernet_matches_original_parameter_count():
    model = SegLSTM(
        decoder="upernet", encoder_name="vil_small", depths=(6, 6, 6, 6), classes=6, aux_head=False
    )
    assert _count(model) == 51_837_510
    assert _count(model.encoder) == 22_724_160
    head = model.decoder
    parts = {
        "PSP": _count(head.psp),
        "bottleneck": _count(head.bottleneck),
        "laterals": _count(head.lateral_convs),
        "FPN convs": _count(head.fpn_convs),
        "fpn_bottleneck": _count(head.fpn_bottleneck),
        "cls": _count(model.segmentation_head),
    }
    assert parts == {
        "PSP": 790_528,
        "bottleneck": 11_207_680,
        "laterals": 592_896,
        "FPN convs": 7_080_960,
        "fpn_bottleneck": 9_438_208,
        "cls": 3_078,
    }
    with_aux = SegLSTM(decoder="upernet", classes=6, aux_head=True)
    assert _count(with_aux.aux_head) == 886_790


def _readme_param_table():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = {}
    for line in readme.splitlines():
        cells = [c.strip(" `") for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] in DECODERS and cells[1].startswith("("):
            rows[(cells[0], cells[1])] = (int(cells[2].replace(",", "")), int(cells[3].replace(",", "")))
    return rows


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("depths", [(6, 6, 6, 6), (4, 4, 12, 4)])
def test_paper_configuration_trains_one_step_and_matches_readme(decoder, depths):
    model = SegLSTM(
        decoder=decoder, encoder_name="vil_small", depths=depths, classes=6, aux_head=True
    ).train()
    table = _readme_param_table()
    key = (decoder, str(depths).replace(" ", ""))
    without_aux = _count(model) - _count(model.aux_head)
    assert table[key] == (without_aux, _count(model)), "README's parameter table is out of date"
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-4, weight_decay=0.01)
    x, target = _input((2, 3, 64, 96)), torch.randint(0, 6, (2, 64, 96))
    logits, aux = model.forward_with_aux(x)
    assert logits.shape == aux.shape == (2, 6, 64, 96)
    loss = F.cross_entropy(logits, target) + 0.4 * F.cross_entropy(aux, target)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss.backward()
    optimizer.step()
    assert all(p.grad is not None for p in model.parameters())
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    if decoder == "ann":
        # the zero-initialised output projections pass no gradient into the attention's projections at
        # the first step (as in mmseg); their zero biases therefore stay zero
        unchanged = [n for n in unchanged if "_attention." not in n or ".out_proj." in n]
    assert not unchanged, f"parameters not updated by the step: {unchanged[:5]}"
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.forward_with_aux(x)[0])


def test_seglstm_loads_mmseg_checkpoint_and_reproduces_stages(fixtures_dir):
    from safetensors.torch import load_file as load

    ref = load(fixtures_dir / "tiny_seglstm_io.safetensors")
    model = SegLSTM(
        decoder="upernet",
        encoder_name="vil_tiny",
        depths=(2, 2, 2, 2),
        classes=3,
        img_size=64,
        encoder_kwargs=dict(embed_dim=64),
    ).eval()
    checkpoint = torch.load(fixtures_dir / "tiny_seglstm_mmseg_checkpoint.pth", weights_only=True)
    model.encoder.load_state_dict(checkpoint)
    with torch.no_grad():
        stages = model.encoder(ref["input"])[2:]
        assert model(ref["input"]).shape == (2, 3, 64, 64)
    for i, stage in enumerate(stages):
        assert rel_err(stage, ref[f"stage{i}"]) <= 1e-4


def test_seglstm_non_square_and_bad_arguments():
    model = SegLSTM(decoder="ann", encoder_name="vil_tiny", classes=4, aux_head=False).eval()
    with torch.no_grad():
        assert model(_input((1, 3, 96, 160))).shape == (1, 4, 96, 160)
    logits, aux = model.forward_with_aux(_input((2, 3, 32, 32)))
    assert aux is None and logits.shape == (2, 4, 32, 32)
    with pytest.raises(ValueError, match="unknown decoder"):
        SegLSTM(decoder="segformer")
    with pytest.raises(ValueError, match="four stage lengths"):
        SegLSTM(depths=(12, 12))
    with pytest.raises(ValueError, match="pass depth through SegLSTM's own arguments"):
        SegLSTM(encoder_name="vil_tiny", encoder_kwargs=dict(depth=8))


@pytest.mark.parametrize("model_cls", [APCNet, ANN])
def test_apcnet_and_ann_on_smp_resnet(model_cls):
    model = model_cls(encoder_name="resnet18", encoder_weights=None, classes=3).train()
    logits = model(_input((2, 3, 64, 96)))
    assert logits.shape == (2, 3, 64, 96)
    logits.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_ann_output_projections_start_at_zero():
    head = vil_seg.heads.ANNHead([64, 64], channels=32)
    for attention in (head.fusion_attention, head.context_attention):
        assert attention.out_proj.weight.abs().sum() == 0 and attention.out_proj.bias.abs().sum() == 0
    assert head.context_attention.key_proj is head.context_attention.query_proj


def _reload_in_fresh_process(path, x_path, out_path):
    script = textwrap.dedent(
        f"""
        import torch, vil_seg
        from safetensors.torch import load_file, save_file
        model = vil_seg.from_pretrained({str(path)!r}).eval()
        with torch.no_grad():
            save_file({{"y": model(load_file({str(x_path)!r})["x"])}}, {str(out_path)!r})
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    subprocess.run([sys.executable, "-c", script], check=True, env=env, capture_output=True, text=True)
    return load_file(out_path)["y"]


@pytest.mark.parametrize(
    "build",
    [
        lambda: smp.create_model("upernet", encoder_name="vil_tiny", encoder_weights=None, classes=3),
        lambda: SegLSTM(decoder="deeplabv3plus", encoder_name="vil_tiny", classes=3, img_size=64),
    ],
    ids=["smp-upernet-vil_tiny", "seglstm-deeplabv3plus"],
)
def test_save_and_reload_in_fresh_process(tmp_path, build):
    from safetensors.torch import save_file

    model = build().eval()
    model.save_pretrained(tmp_path / "saved")
    x = _input((1, 3, 64, 96))
    save_file({"x": x}, tmp_path / "x.safetensors")
    with torch.no_grad():
        expected = model(x)
    reloaded = _reload_in_fresh_process(
        tmp_path / "saved", tmp_path / "x.safetensors", tmp_path / "y.safetensors"
    )
    torch.testing.assert_close(reloaded, expected, rtol=0, atol=0)


def test_model_card_says_import_vil_seg(tmp_path):
    SegLSTM(decoder="apcnet", encoder_name="vil_tiny", classes=2).save_pretrained(tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert "import vil_seg" in card and "vil_seg.from_pretrained" in card


def test_seglstm_imagenet_encoder_weights_from_offline_cache(offline_hub):  # noqa: F811
    model = SegLSTM(decoder="upernet", encoder_name="vil_tiny", classes=2, encoder_weights="imagenet")
    expected = offline_hub.state_dict()
    for name in (
        "blocks.0.layer.proj_up.weight",
        "blocks.23.layer.proj_down.weight",
        "patch_embed.proj.weight",
    ):
        torch.testing.assert_close(model.encoder.model.state_dict()[name], expected[name], rtol=0, atol=0)
    # stored at 224 (14x14), resized to the model's 512 grid (32x32)
    assert model.encoder.model.pos_embed.shape == (1, 32, 32, 192)
    with pytest.raises(KeyError, match="unknown weights 'in22k'"):
        SegLSTM(encoder_name="vil_tiny", encoder_weights="in22k")
