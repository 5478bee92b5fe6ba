"""Converting original checkpoints to Hub folders, loading them through timm and smp, pushing folders."""

from __future__ import annotations

import json
import re
import shutil

import huggingface_hub
import pytest
import segmentation_models_pytorch as smp
import timm
import torch

import vil_seg
from vil_seg import cli
from vil_seg.hub import convert_checkpoint, push_folder
from vil_seg.vision_lstm import hub_repo_id


def to_nxai_raw(state_dict: dict) -> dict:
    """vil_seg v1 keys -> NX-AI's downloadable .th layout (the inverse of the converter, for tests)."""
    raw = {}
    for key, value in state_dict.items():
        match = re.match(r"^blocks\.(\d+)\.(norm|layer)\.(.*)$", key)
        if key == "pos_embed":
            raw["pos_embed.embed"] = value
        elif key == "norm.weight":
            raw["xlstm.post_blocks_norm.weight"] = value - 1
        elif key.startswith("fc_norm."):
            raw["head.0." + key.removeprefix("fc_norm.")] = value
        elif key.startswith("head."):
            raw["head.1." + key.removeprefix("head.")] = value
        elif match and match[2] == "norm":
            raw[f"xlstm.blocks.{match[1]}.xlstm_norm.{match[3]}"] = value - 1
        elif match:
            name = re.sub(r"^conv\.", "conv1d.conv.", match[3])
            name = re.sub(r"^(igate|fgate|outnorm)\.", r"mlstm_cell.\1.", name)
            raw[f"xlstm.blocks.{match[1]}.xlstm.{name}"] = (
                value - 1 if name == "mlstm_cell.outnorm.weight" else value
            )
        else:
            raw[key] = value
    return raw


def test_raw_layout_helper_matches_the_shared_fixture(fixtures_dir):
    fixture = torch.load(fixtures_dir / "tiny_v1_raw_checkpoint.th", weights_only=True)["state_dict"]
    model = timm.create_model("vil_tiny", embed_dim=64, depth=4, num_classes=10, img_size=(64, 96))
    ours = to_nxai_raw(model.state_dict())
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in fixture.items()}


@pytest.fixture(scope="module")
def raw_vil_tiny(tmp_path_factory):
    """A full-size vil_tiny with perturbed weights, saved in NX-AI's raw layout."""
    torch.manual_seed(0)
    model = timm.create_model("vil_tiny").eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    path = tmp_path_factory.mktemp("raw") / "vil_tiny16_e800_in1k.th"
    torch.save({"state_dict": to_nxai_raw(model.state_dict())}, path)
    return model, path


def _hub_cache(tmp_path, monkeypatch, repo_id, folder):
    """Lay ``folder``'s files out as a Hugging Face cache entry of ``repo_id`` and take the Hub offline."""
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    repo = tmp_path / "hub" / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_convert_then_load_through_timm_and_smp(raw_vil_tiny, tmp_path, monkeypatch):
    source, raw_path = raw_vil_tiny
    assert cli.main(["convert", str(raw_path), "--model", "vil_tiny", "--out", str(tmp_path / "out")]) == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architecture"] == "vil_tiny" and config["num_classes"] == 1000
    assert config["mean"] == [0.485, 0.456, 0.406] and config["input_range"] == [0, 1]
    assert config["pretrained_cfg"]["input_size"] == [3, 224, 224]
    card = (tmp_path / "out" / "README.md").read_text()
    assert (
        "import vil_seg" in card
        and "vil_tiny16_e800_in1k.th" in card
        and "77.3" in card
        and "2406.14086" in card
    )

    _hub_cache(tmp_path, monkeypatch, hub_repo_id("vil_tiny"), tmp_path / "out")
    loaded = timm.create_model("vil_tiny.in1k", pretrained=True).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=1e-6)

    adapted = timm.create_model("vil_tiny.in1k", pretrained=True, in_chans=4, num_classes=7)
    w3 = source.patch_embed.proj.weight
    torch.testing.assert_close(adapted.patch_embed.proj.weight[:, :3], w3 * 0.75)
    assert adapted.head.weight.shape == (7, 192) and not torch.equal(
        adapted.head.weight[:7], source.head.weight[:7]
    )
    torch.testing.assert_close(adapted.blocks[5].layer.q_proj.weight, source.blocks[5].layer.q_proj.weight)

    seg = smp.create_model("upernet", encoder_name="vil_tiny", encoder_weights="imagenet", classes=3)
    torch.testing.assert_close(
        seg.encoder.model.blocks[11].layer.proj_down.weight, source.blocks[11].layer.proj_down.weight
    )


def test_seglstm_backbone_checkpoint_converts(fixtures_dir, tmp_path):
    """Seg-LSTM's backbone has no classifier: the converted folder holds the backbone only."""
    from safetensors.torch import load_file

    # the shared fixture is 64 wide, which no registered variant is: it gets a clear error, and a
    # vil_tiny-sized checkpoint in the same mmseg layout is made here
    with pytest.raises(ValueError, match="64 wide but vil_tiny is 192 wide"):
        convert_checkpoint(fixtures_dir / "tiny_seglstm_mmseg_checkpoint.pth", "vil_tiny", tmp_path / "x")
    model = timm.create_model("vil_tiny", img_size=512)
    backbone = {
        k: v for k, v in model.state_dict().items() if not k.startswith(("norm.", "fc_norm.", "head."))
    }
    mmseg = {}
    for key, value in backbone.items():
        match = re.match(r"^blocks\.(\d+)\.(.*)$", key)
        if match:
            stage, index = divmod(int(match[1]), 6)
            name = re.sub(r"^layer\.conv\.", "layer.conv1d.conv.", match[2])
            name = re.sub(r"^layer\.(igate|fgate|outnorm)\.", r"layer.mlstm_cell.\1.", name)
            key = f"blocks{stage + 1}.{index}.{name}"
            if name in ("norm.weight", "layer.mlstm_cell.outnorm.weight"):  # stored zero-centred
                value = value - 1
        elif key == "pos_embed":
            key = "pos_embed.embed"
        mmseg[f"backbone.{key}"] = value
    torch.save({"meta": {}, "state_dict": mmseg}, tmp_path / "seglstm.pth")
    out = convert_checkpoint(tmp_path / "seglstm.pth", "vil_tiny", tmp_path / "seg")
    converted = load_file(out / "model.safetensors")
    assert set(converted) == set(backbone)
    for key, value in backbone.items():
        torch.testing.assert_close(converted[key], value, rtol=0, atol=1e-7, msg=key)
    assert converted["pos_embed"].shape == (1, 32, 32, 192)
    assert json.loads((out / "config.json").read_text())["num_classes"] == 0


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_files_get_clear_errors(raw_vil_tiny, tmp_path, damage):
    source, raw_path = raw_vil_tiny
    from safetensors.torch import save_file

    save_file(source.state_dict(), tmp_path / "model.safetensors")
    for path in (tmp_path / "model.safetensors", raw_path):
        broken = tmp_path / f"broken{path.suffix}"
        data = path.read_bytes()
        broken.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a checkpoint" * 10)
        with pytest.raises(
            ValueError, match=r"(not a readable safetensors file|not a readable PyTorch checkpoint)"
        ):
            convert_checkpoint(broken, "vil_tiny", tmp_path / "out")


def test_checkpoint_of_another_architecture(raw_vil_tiny, tmp_path, capsys):
    _, raw_path = raw_vil_tiny
    assert cli.main(["convert", str(raw_path), "--model", "vil_small", "--out", str(tmp_path / "o")]) == 2
    assert "192 wide but vil_small is 384 wide" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"lacks 70 weights.*blocks\.24\."):  # vil_tiny_plus has 29 blocks
        convert_checkpoint(raw_path, "vil_tiny_plus", tmp_path / "o")
    with pytest.raises(ValueError, match=r"lacks 169 weights.*blocks\.0\.layer\.k_proj\.bias"):  # v1 into v2
        convert_checkpoint(raw_path, "vil2_tiny", tmp_path / "o")
    with pytest.raises(ValueError, match="unknown model"):
        convert_checkpoint(raw_path, "vit_small_patch16_224", tmp_path / "o")


class FakeHfApi:
    """Stands in for huggingface_hub.HfApi: records calls, sends nothing."""

    def __init__(self, token="hf_test"):
        self.token = token
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, folder_path, repo_id, **kwargs):
        from pathlib import Path

        files = {p.relative_to(folder_path).as_posix(): p.read_bytes() for p in Path(folder_path).rglob("*")}
        self.calls.append(("upload_folder", repo_id, dict(kwargs, files=files)))


def _run_folder(tmp_path):
    """A training-run-like folder: a saved smp model plus metrics.json."""
    import vil_seg

    run = tmp_path / "run"
    vil_seg.SegLSTM(decoder="apcnet", encoder_name="vil_tiny", classes=3, img_size=64).save_pretrained(run)
    metrics = {
        "IoU": [80.5, 60.25, 41.0],
        "mIoU": 60.58,
        "class_names": ["water", "road", "field"],
        "dataset": "synthetic",
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "train_config.json").write_text(json.dumps({"dataset": "synthetic", "iters": 480, "lr": 0.002}))
    return run


def test_push_uploads_exactly_the_folder_with_metrics_card(tmp_path):
    run = _run_folder(tmp_path)
    api = FakeHfApi()
    files = push_folder(run, "someone/vil-run", private=True, revision="v1", api=api)
    names = [c[0] for c in api.calls]
    assert names == ["create_repo", "create_branch", "upload_folder"]
    assert api.calls[0][2]["private"] is True
    uploaded = api.calls[2][2]["files"]
    assert sorted(uploaded) == files == sorted(p.name for p in run.iterdir())
    assert api.calls[2][2]["revision"] == "v1"
    card = uploaded["README.md"].decode()
    assert "| road | 60.25 |" in card and "| **mIoU** | 60.58 |" in card and "import vil_seg" in card
    assert "Dataset: synthetic" in card and '"lr": 0.002' in card


def test_push_dry_run_lists_and_sends_nothing(tmp_path, capsys):
    run = _run_folder(tmp_path)
    assert cli.main(["push", str(run), "--repo-id", "someone/x", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would upload 5 files to someone/x" in out and "model.safetensors" in out and "metrics.json" in out


def test_push_without_token_says_how_to_log_in(tmp_path, monkeypatch):
    monkeypatch.setattr("vil_seg.hub.get_token", lambda: None)
    with pytest.raises(RuntimeError, match="hf auth login"):
        push_folder(_run_folder(tmp_path), "someone/x", api=FakeHfApi(token=None))
    with pytest.raises(ValueError, match=r"holds no config\.json"):
        push_folder(tmp_path / "empty", "someone/x", api=FakeHfApi())


def test_missing_hub_weights_explain_local_conversion(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        RuntimeError, match=r"'vil-seg/vil_small\.in1k'.*vil-seg convert vil_small16_e400_in1k\.th"
    ):
        timm.create_model("vil_small", pretrained=True)
    with pytest.raises(
        RuntimeError, match=r"'vil-seg/vil_tiny\.in1k'.*vil-seg convert vil_tiny16_e800_in1k\.th"
    ):
        vil_seg.SegLSTM(encoder_name="vil_tiny", encoder_weights="imagenet")
