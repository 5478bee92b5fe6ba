"""Hugging Face Hub: convert original ViL checkpoints to Hub folders, write model cards, push folders.

A converted folder holds ``model.safetensors`` (timm layout), ``config.json`` (timm's layout with
``architecture`` and ``pretrained_cfg``, plus the top-level ``mean`` / ``std`` / ``input_space`` /
``input_range`` that smp reads for preprocessing: one file serves both) and ``README.md`` (the model card).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import timm
import torch
from huggingface_hub import HfApi, get_token
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from timm.models import get_pretrained_cfg
from timm.models._hub import save_config_for_hf

from .vision_lstm import VisionLSTM, checkpoint_filter_fn, default_cfgs, remap_checkpoint

__all__ = ["convert_checkpoint", "load_checkpoint_file", "push_folder", "write_run_model_card"]

_CITATIONS = """\
```bibtex
@article{alkin2024visionlstm,
  title   = {Vision-LSTM: xLSTM as Generic Vision Backbone},
  author  = {Benedikt Alkin and Maximilian Beck and Korbinian P{\\"o}ppel and Sepp Hochreiter and
             Johannes Brandstetter},
  journal = {arXiv preprint arXiv:2406.04303},
  year    = {2024}
}
@article{zhu2024seglstm,
  title   = {Seg-LSTM: Performance of xLSTM for Semantic Segmentation of Remotely Sensed Images},
  author  = {Qinfeng Zhu and Yuanzhi Cai and Lei Fan},
  journal = {arXiv preprint arXiv:2406.14086},
  year    = {2024}
}
```"""


def load_checkpoint_file(path: str | Path) -> dict:
    """Read a checkpoint without unpickling code: safetensors, or ``torch.load(weights_only=True)``.

    Raises ``ValueError`` naming the file when it is missing, corrupt or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError) as err:
            raise ValueError(
                f"{path} is not a readable safetensors file (corrupt or truncated?): {err}"
            ) from err
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for bad files (pickle, zip, EOF, unsafe globals)
        raise ValueError(
            f"{path} is not a readable PyTorch checkpoint (corrupt, truncated, or holding more than tensors "
            f"and plain containers): {err}"
        ) from err


def _model_for(state_dict: dict, model_name: str) -> tuple[VisionLSTM, bool]:
    """Build ``model_name`` at the checkpoint's resolution and class count, with its weights loaded.

    Also returns whether the checkpoint is a backbone only (no post-block norm, head norm or classifier).
    """
    remapped, layout = remap_checkpoint(state_dict)
    pos_embed, patch, head = (
        remapped.get(k) for k in ("pos_embed", "patch_embed.proj.weight", "head.weight")
    )
    if pos_embed is None or pos_embed.ndim != 4 or patch is None:
        raise ValueError(f"checkpoint ({layout} layout) has no ViL stem (patch and position embedding)")
    patch_size = patch.shape[-1]
    model = timm.create_model(
        model_name,
        num_classes=0 if head is None else head.shape[0],
        img_size=(pos_embed.shape[1] * patch_size, pos_embed.shape[2] * patch_size),
        patch_size=patch_size,
    ).eval()
    if pos_embed.shape[-1] != model.embed_dim:
        raise ValueError(
            f"checkpoint is {pos_embed.shape[-1]} wide but {model_name} is {model.embed_dim} wide: "
            "pick the --model that matches it"
        )
    converted = checkpoint_filter_fn(state_dict, model)  # raises listing missing / unknown keys
    backbone_only = not any(k.startswith(("norm.", "fc_norm.", "head.")) for k in converted)
    try:
        model.load_state_dict(converted, strict=not backbone_only)
    except RuntimeError as err:
        raise ValueError(f"checkpoint does not fit {model_name}: {err}") from err
    return model, backbone_only


def convert_checkpoint(src: str | Path, model_name: str, out_dir: str | Path) -> Path:
    """Convert an original ViL checkpoint (or one of ours) into a Hub folder for ``model_name``.

    ``src``: NX-AI's raw ``.th``, a ``vision_lstm`` package state_dict, a Seg-LSTM mmseg checkpoint
    (backbone only), or a vil_seg / timm state_dict (``.safetensors`` or ``.pt``). Writes
    ``out_dir/{model.safetensors,config.json,README.md}`` and returns ``out_dir``.
    """
    if model_name not in default_cfgs:
        raise ValueError(f"unknown model {model_name!r}; expected one of {sorted(default_cfgs)}")
    src, out_dir = Path(src), Path(out_dir)
    model, backbone_only = _model_for(load_checkpoint_file(src), model_name)
    state_dict = model.state_dict()
    if backbone_only:  # a Seg-LSTM backbone: keep only what it held
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(("norm.", "fc_norm.", "head."))}
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state_dict.items()}, out_dir / "model.safetensors")
    _write_config(model, out_dir / "config.json")
    (out_dir / "README.md").write_text(_model_card(model, model_name, src.name))
    return out_dir


def _write_config(model: VisionLSTM, path: Path) -> None:
    """timm's config.json plus smp's top-level preprocessing keys."""
    save_config_for_hf(model, str(path))
    config = json.loads(path.read_text())
    pretrained_cfg = config["pretrained_cfg"]
    config.update(
        mean=list(pretrained_cfg["mean"]),
        std=list(pretrained_cfg["std"]),
        input_space="RGB",
        input_range=[0, 1],
    )
    path.write_text(json.dumps(config, indent=2) + "\n")


def _model_card(model: VisionLSTM, model_name: str, source_name: str) -> str:
    cfg = get_pretrained_cfg(model_name)
    grid = model.pos_embed.shape[1:3]
    size = f"{grid[0] * 16}x{grid[1] * 16}"
    head = f"a {model.num_classes}-class classifier" if model.num_classes else "no classifier (a backbone)"
    return f"""---
license: apache-2.0
library_name: timm
tags: [vil-seg, vision-lstm, xlstm, image-classification, semantic-segmentation]
---
# {model_name}

Vision-LSTM ({model_name}, {model.embed_dim} wide, {len(model.blocks)} blocks) converted with
[vil-seg](https://pypi.org/project/vil-seg/) from `{source_name}` (NX-AI's release:
{cfg.origin_url or "see https://github.com/NX-AI/vision-lstm"}). Weights in timm's layout, trained at {size},
with {head}. {cfg.notes or ""}.

License: Apache-2.0, as NX-AI's ViL model code.

## Use

```python
import timm
import vil_seg  # registers the ViL models with timm and smp: import it first

model = timm.create_model("{model_name}", pretrained=True)  # or features_only=True, in_chans=4, num_classes=7

import segmentation_models_pytorch as smp

seg = smp.create_model("upernet", encoder_name="{model_name}", encoder_weights="imagenet", classes=6)
```

Preprocessing: RGB in [0, 1], mean {list(cfg.mean)}, std {list(cfg.std)}, bicubic resize.

## Citation

{_CITATIONS}
"""


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def write_run_model_card(folder: str | Path) -> Path:
    """(Re)write ``README.md`` of a training run folder from ``config.json``, ``train_config.json`` (the
    recipe) and ``metrics.json`` (per-class IoU)."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    metrics_path = folder / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    parameters = {k: v for k, v in config.items() if not k.startswith("_")}
    lines = [
        "---",
        "license: apache-2.0",
        "library_name: vil-seg",
        "tags: [vil-seg, vision-lstm, semantic-segmentation, remote-sensing]",
        "---",
        f"# {config.get('_model_class', 'Segmentation model')} ({config.get('encoder_name', 'ViL')})",
        "",
        "Trained with [vil-seg](https://pypi.org/project/vil-seg/).",
        "",
        "```python",
        "import vil_seg  # registers the ViL models with timm and smp: import it first",
        "",
        'model = vil_seg.from_pretrained("<this folder or Hub repo id>")',
        "```",
        "",
        "## Configuration",
        "",
        "```json",
        json.dumps(parameters, indent=2),
        "```",
    ]
    train_config_path = folder / "train_config.json"
    if train_config_path.is_file():
        recipe = json.loads(train_config_path.read_text())
        lines += [
            "",
            "## Training",
            "",
            f"Dataset: {recipe.get('dataset')}. Recipe (`vil-seg train` settings):",
        ]
        lines += ["", "```json", json.dumps(recipe, indent=2), "```"]
    if "IoU" in metrics:
        names = metrics.get("class_names") or [str(i) for i in range(len(metrics["IoU"]))]
        where = f"{metrics.get('dataset', 'validation')}, iteration {metrics.get('iteration', '?')}"
        lines += ["", f"## Metrics ({where})", "", "| class | IoU |", "|---|---|"]
        lines += [f"| {name} | {_percent(iou)} |" for name, iou in zip(names, metrics["IoU"], strict=True)]
        for key in ("mIoU", "mIoU_excl_clutter", "mF1", "aAcc"):
            if key in metrics:
                lines.append(f"| **{key}** | {_percent(metrics[key])} |")
    path = folder / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    dry_run: bool = False,
    api: HfApi | None = None,
) -> list[str]:
    """Upload every file of ``folder`` to the Hub model repo ``repo_id`` (created if needed).

    A training run folder (``config.json`` naming a ``_model_class``) gets its model card rewritten from its
    metrics first. Returns the relative paths uploaded (or, with ``dry_run``, that would be).
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"{folder} holds no config.json: push a `vil-seg convert` folder or a training run folder"
        )
    if "_model_class" in json.loads((folder / "config.json").read_text()) and not dry_run:
        write_run_model_card(folder)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    if dry_run:
        return files
    api = api or HfApi()
    if not api.token and not get_token():
        raise RuntimeError(
            "no Hugging Face token found: run `hf auth login` or set HF_TOKEN to a token with write access"
        )
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type="model",
        revision=revision,
        commit_message=f"Upload {folder.name} with vil-seg",
    )
    return files


def known_originals() -> Sequence[tuple[str, str]]:
    """(original file stem, ``model.tag``) for every NX-AI checkpoint with a cfg here."""
    pairs = []
    for model_name, default_cfg in default_cfgs.items():
        for tag, cfg in default_cfg.cfgs.items():
            if cfg.origin_url:
                pairs.append((Path(cfg.origin_url).stem, f"{model_name}.{tag}"))
    return pairs
