"""Training with the paper's recipe: AdamW, linear warm-up then poly decay, CE + 0.4 x aux CE.

One process, or several under ``torchrun`` (DDP: gloo on CPU, nccl on GPU). The run directory is a
``save_pretrained`` folder (``config.json``, ``model.safetensors``: ``vil_seg.from_pretrained(run)`` loads
it) plus ``trainer_state.pt`` (optimiser, scheduler, RNG states, iteration), ``train_config.json``,
``log.csv``, ``metrics.json`` and pictures. Checkpoints are written atomically, and ``resume`` continues a
run so that it ends with the weights the uninterrupted run would have had (with ``workers=0``).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from ..data import IGNORE_INDEX, dataset_info, eval_transforms, get_dataset, train_transforms
from ..metrics import metrics_json
from ..models import DECODERS, SegLSTM
from ..recipes import DATASET_RECIPES, PAPER_RECIPE
from .evaluate import dataset_metrics, evaluate
from .plots import plot_curves, plot_predictions

__all__ = ["TrainConfig", "build_model", "train"]

STATE_FILE = "trainer_state.pt"
CONFIG_FILE = "train_config.json"
LOG_COLUMNS = ("iter", "loss", "loss_aux", "lr", "seconds", "mIoU")
# Settings that do not change what a run computes: they may differ on --resume.
_RESUMABLE_CHANGES = ("out", "resume", "workers", "val_interval", "ckpt_interval", "progress")


@dataclass
class TrainConfig:
    """Every knob of ``vil-seg train``; defaults are the paper's (Table I)."""

    dataset: str = "synthetic"
    data_root: str | None = None
    encoder: str = "vil_small"
    decoder: str = "upernet"
    smp_arch: str | None = None
    depths: tuple[int, ...] = (6, 6, 6, 6)
    encoder_weights: str | None = None
    encoder_kwargs: dict = field(default_factory=dict)
    decoder_channels: int = 512
    aux_channels: int = 256
    iters: int = PAPER_RECIPE.iters
    batch_size: int = PAPER_RECIPE.batch_size
    micro_batch: int | None = None
    crop: int = PAPER_RECIPE.crop
    lr: float = PAPER_RECIPE.lr
    weight_decay: float = PAPER_RECIPE.weight_decay
    warmup: int = PAPER_RECIPE.warmup
    aux_weight: float = PAPER_RECIPE.aux_weight
    loss_avg_non_ignore: bool = False
    amp: str = "none"
    val_interval: int = PAPER_RECIPE.val_interval
    ckpt_interval: int = PAPER_RECIPE.ckpt_interval
    eval_mode: str = "whole"
    seed: int = 0
    workers: int = 2
    out: str = "runs/seglstm"
    resume: bool = False
    progress: bool = True
    dataset_kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        dataset_info(self.dataset)  # unknown names fail here
        if self.smp_arch is None and self.decoder not in DECODERS:
            raise ValueError(f"unknown decoder {self.decoder!r}; expected one of {sorted(DECODERS)}")
        if self.amp not in ("none", "bf16"):
            raise ValueError(f"amp must be 'none' or 'bf16', got {self.amp!r}")
        if self.eval_mode not in ("whole", "slide"):
            raise ValueError(f"eval_mode must be 'whole' or 'slide', got {self.eval_mode!r}")
        if self.iters < 1 or self.batch_size < 1:
            raise ValueError("iters and batch_size must be positive")
        self.depths = tuple(self.depths)
        if self.smp_arch is not None:
            defaults = TrainConfig.__dataclass_fields__
            seglstm_only = ("depths", "encoder_kwargs", "decoder_channels", "aux_channels")
            changed = sorted(k for k in seglstm_only if getattr(self, k) != _default(defaults[k]))
            if changed:
                raise ValueError(
                    f"{', '.join(changed)} configure SegLSTM, not --smp-arch {self.smp_arch}: smp builds the "
                    "registered encoder as is (register a variant with vil_seg.register_smp_encoder)"
                )

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def _default(field_: dataclasses.Field):
    """A dataclass field's default value."""
    if field_.default_factory is not dataclasses.MISSING:
        return field_.default_factory()
    return field_.default


def build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """SegLSTM with one of the paper's decoders, or an smp architecture with a ViL encoder."""
    if config.smp_arch is not None:
        return smp.create_model(
            config.smp_arch,
            encoder_name=config.encoder,
            encoder_weights=config.encoder_weights,
            classes=num_classes,
        )
    return SegLSTM(
        decoder=config.decoder,
        encoder_name=config.encoder,
        depths=config.depths,
        classes=num_classes,
        aux_head=config.aux_weight > 0,
        encoder_weights=config.encoder_weights,
        img_size=config.crop,
        encoder_kwargs=config.encoder_kwargs,
        decoder_channels=config.decoder_channels,
        aux_channels=config.aux_channels,
    )


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """mmseg's rule: no weight decay for parameters whose name contains pos_embed, cls_token or norm."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            no = any(s in name for s in PAPER_RECIPE.no_decay_substrings)
            (no_decay if no else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(iteration: int, iters: int, warmup: int) -> float:
    """Linear warm-up from 1e-6 over ``warmup`` iterations, then poly (power 1) decay to 0 at ``iters``."""
    if iteration < warmup:
        start = PAPER_RECIPE.warmup_start_factor
        return start + (1 - start) * iteration / warmup
    remaining = max(iters - warmup, 1)
    return max(1 - (iteration - warmup) / remaining, 0.0) ** PAPER_RECIPE.poly_power


class IterationSampler(Sampler[int]):
    """Dataset indices for iterations ``start..iters-1``: a function of the iteration alone.

    The global batch of iteration ``i`` is positions ``i * batch .. (i + 1) * batch - 1`` of a stream of
    seeded permutations (one per epoch); each process takes its contiguous share. Resuming at any
    iteration therefore reads exactly the samples the uninterrupted run would have read.
    """

    def __init__(
        self, size: int, batch: int, start: int, iters: int, seed: int, rank: int = 0, world: int = 1
    ):
        self.size, self.batch, self.start, self.iters = size, batch, start, iters
        self.seed, self.rank, self.world = seed, rank, world
        self.per_rank = batch // world
        self._epoch, self._perm = -1, None

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self.size)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.size, generator=gen)
        return int(self._perm[offset])

    def __iter__(self) -> Iterator[int]:
        for iteration in range(self.start, self.iters):
            first = iteration * self.batch + self.rank * self.per_rank
            for k in range(self.per_rank):
                yield self._index(first + k)

    def __len__(self) -> int:
        return (self.iters - self.start) * self.per_rank


def _loss(logits: torch.Tensor, target: torch.Tensor, avg_non_ignore: bool) -> torch.Tensor:
    """Pixel CE at label size; mmseg divides by every pixel (ignored ones too) unless avg_non_ignore."""
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    if avg_non_ignore:
        return F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX)
    total = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / target.numel()


# ---- run directory ------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _rng_state() -> dict:
    """RNG states in types ``torch.load(weights_only=True)`` accepts."""
    _, keys, position, has_gauss, gauss = np.random.get_state()
    numpy_state = {
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "position": position,
        "gauss": [has_gauss, gauss],
    }
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    keys = numpy_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, numpy_state["position"], *numpy_state["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _all_rng_states() -> list[dict]:
    """Every process's RNG states (rank order); all processes must call it."""
    state = _rng_state()
    if not (dist.is_available() and dist.is_initialized()):
        return [state]
    states: list = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


def save_checkpoint(
    run: Path,
    model: nn.Module,
    optimizer,
    scheduler,
    iteration: int,
    config: TrainConfig,
    rng_states: list[dict] | None = None,
) -> None:
    """Write the weights (save_pretrained) and the trainer state, each file by temp file + rename.

    The trainer state comes last and records the checksum of the weights it belongs to, and the RNG
    states of every process (``rng_states``, default this process's).
    """
    staging = run / ".checkpoint-tmp"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    for item in staging.iterdir():
        os.replace(item, run / item.name)
    state = {
        "iteration": iteration,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_states or [_rng_state()],
        "weights_sha256": _sha256(run / "model.safetensors"),
        "config": config.to_dict(),
    }
    torch.save(state, staging / STATE_FILE)
    os.replace(staging / STATE_FILE, run / STATE_FILE)
    staging.rmdir()


def _check_resumable(run: Path, config: TrainConfig) -> dict:
    state_path = run / STATE_FILE
    if not state_path.is_file():
        raise FileNotFoundError(
            f"cannot resume: {run} holds no {STATE_FILE} (no checkpoint was written there)"
        )
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    saved = {k: v for k, v in state["config"].items() if k not in _RESUMABLE_CHANGES}
    current = {k: v for k, v in config.to_dict().items() if k not in _RESUMABLE_CHANGES}
    if saved != current:
        changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise ValueError(f"cannot resume {run}: it was trained with another configuration ({details})")
    if state["weights_sha256"] != _sha256(run / "model.safetensors"):
        raise ValueError(
            f"cannot resume {run}: model.safetensors does not belong to {STATE_FILE} (interrupted write?)"
        )
    return state


def _truncate_log(path: Path, iteration: int) -> None:
    if not path.is_file():
        return
    with path.open() as f:
        rows = [row for row in csv.DictReader(f) if int(row["iter"]) <= iteration]
    _write_log(path, rows)


def _write_log(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _append_log(path: Path, row: dict) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)


# ---- distributed --------------------------------------------------------------------------------------


def _setup_distributed() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


# ---- the loop -----------------------------------------------------------------------------------------


def train(config: TrainConfig) -> dict:
    """Train (or resume) the run ``config.out``; return the final metrics dict."""
    rank, world, device = _setup_distributed()
    run = Path(config.out)
    info = dataset_info(config.dataset)
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} does not split over {world} processes")
    per_rank = config.batch_size // world
    micro = config.micro_batch or per_rank
    if per_rank % micro:
        raise ValueError(f"micro_batch {micro} does not divide the per-process batch {per_rank}")
    accumulation = per_rank // micro

    state = _check_resumable(run, config) if config.resume else None
    start = state["iteration"] if state else 0
    if state and start >= config.iters:
        if rank == 0:
            print(f"{run} already finished ({start}/{config.iters} iterations): nothing to do")
        return json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
    if not config.resume and (run / STATE_FILE).is_file():
        raise FileExistsError(
            f"{run} already holds a run: pass --resume to continue it, or pick another --out"
        )

    torch.manual_seed(config.seed + rank)
    np.random.seed(config.seed + rank)
    random.seed(config.seed + rank)
    recipe = DATASET_RECIPES[config.dataset]
    train_set = get_dataset(
        config.dataset,
        config.data_root,
        "train",
        train_transforms(scale=recipe.train_scale, crop_size=config.crop),
        **config.dataset_kwargs,
    )
    val_set = get_dataset(
        config.dataset, config.data_root, "val", eval_transforms(recipe.test_scale), **config.dataset_kwargs
    )

    model = build_model(config, info.num_classes).to(device)
    optimizer = torch.optim.AdamW(
        parameter_groups(model, config.weight_decay), lr=config.lr, betas=PAPER_RECIPE.betas
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: lr_factor(i, config.iters, config.warmup)
    )
    if state:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(run / "model.safetensors"))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if len(state["rng"]) != world:
            raise ValueError(
                f"cannot resume {run} on {world} process(es): it was trained on {len(state['rng'])}; "
                "resume with the same number of processes"
            )
        _set_rng_state(state["rng"][rank])
        if rank == 0:
            _truncate_log(run / "log.csv", start)
    elif rank == 0:
        run.mkdir(parents=True, exist_ok=True)
        (run / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        (run / "log.csv").unlink(missing_ok=True)

    if world > 1 and device.type == "cuda":  # the paper's SyncBN (PyTorch has it on GPUs only)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ddp = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    sampler = IterationSampler(
        len(train_set), config.batch_size, start, config.iters, config.seed, rank, world
    )
    loader = DataLoader(
        train_set,
        batch_size=micro,
        sampler=sampler,
        num_workers=config.workers,
        generator=torch.Generator().manual_seed(config.seed),  # keeps the global RNG out of the loader
        persistent_workers=config.workers > 0,
    )
    batches = iter(loader)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp == "bf16")
    progress = tqdm(
        total=config.iters, initial=start, desc="train", unit="it", disable=rank != 0 or not config.progress
    )
    metrics: dict = {}
    for iteration in range(start, config.iters):
        began = time.perf_counter()
        model.train()
        optimizer.zero_grad(set_to_none=True)
        losses = torch.zeros(2)
        for step in range(accumulation):
            batch = next(batches)
            image, target = batch["image"].to(device), batch["mask"].to(device)
            sync = step == accumulation - 1 or world == 1
            with ddp.no_sync() if not sync else contextlib.nullcontext(), autocast:
                if isinstance(model, SegLSTM):
                    logits, aux = ddp(image, with_aux=True)
                else:
                    logits, aux = ddp(image), None
                loss = _loss(logits, target, config.loss_avg_non_ignore)
                aux_loss = (
                    _loss(aux, target, config.loss_avg_non_ignore) if aux is not None else loss.new_zeros(())
                )
                total = (loss + config.aux_weight * aux_loss) / accumulation
            total.backward()
            losses += (
                torch.stack([loss.detach().float().cpu(), aux_loss.detach().float().cpu()]) / accumulation
            )
        optimizer.step()
        scheduler.step()
        done = iteration + 1
        if world > 1:
            dist.all_reduce(losses)
            losses /= world
        row = {
            "iter": done,
            "loss": f"{losses[0].item():.6f}",
            "loss_aux": f"{losses[1].item():.6f}",
            "lr": f"{optimizer.param_groups[0]['lr']:.8g}",
            "seconds": f"{time.perf_counter() - began:.4f}",
            "mIoU": "",
        }
        if done % config.val_interval == 0 or done == config.iters:
            metrics = _validate(model, val_set, info, config, device, done, run, rank)
            row["mIoU"] = f"{metrics['mIoU']:.4f}"
        checkpoint_now = done % config.ckpt_interval == 0 or done == config.iters
        rng_states = _all_rng_states() if checkpoint_now else None
        if rank == 0:
            _append_log(run / "log.csv", row)
            if checkpoint_now:
                save_checkpoint(run, model, optimizer, scheduler, done, config, rng_states)
        progress.set_postfix(loss=f"{losses[0].item():.3f}", lr=row["lr"])
        progress.update()
    progress.close()
    if rank == 0:
        plot_curves(run / "log.csv", run / "curves.png")
    if world > 1:
        dist.barrier()
    return metrics


def _validate(
    model, val_set, info, config: TrainConfig, device, iteration: int, run: Path, rank: int
) -> dict:
    matrix = evaluate(
        model, val_set, info.num_classes, mode=config.eval_mode, tile=config.crop, device=device
    )
    metrics = dataset_metrics(matrix, info, iteration=iteration, dataset=config.dataset)
    if rank == 0:
        (run / "metrics.json").write_text(metrics_json(metrics))
        matrix.plot(
            run / "confusion_matrix.png", info.classes, title=f"{config.dataset}, iteration {iteration}"
        )
        plot_predictions(model, val_set, info, run / "predictions.png", device=device)
    return metrics
