"""The ``vil-seg`` command line.

vil-seg convert SRC --model NAME --out DIR      original checkpoint -> Hub folder
vil-seg push DIR --repo-id ORG/NAME [--private] [--revision REV] [--dry-run]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .malloc import tune_glibc_malloc
from .recipes import PAPER_RECIPE

__all__ = ["main"]


def _depths(text: str) -> tuple[int, ...]:
    try:
        depths = tuple(int(part) for part in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"--depths takes four comma-separated integers, got {text!r}"
        ) from err
    if len(depths) != 4:
        raise argparse.ArgumentTypeError(f"--depths takes four comma-separated integers, got {text!r}")
    return depths


def _train_config(args: argparse.Namespace):
    """The TrainConfig of `vil-seg train`: every flag is the field of the same name."""
    import dataclasses

    from .engine.trainer import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values["encoder_weights"] = None if args.encoder_weights == "none" else args.encoder_weights
    return TrainConfig(**values)


def _train(args: argparse.Namespace) -> None:
    from .engine.trainer import train
    from .metrics import format_metrics

    metrics = train(_train_config(args))
    if metrics:
        print(format_metrics(metrics))


def _eval(args: argparse.Namespace) -> None:
    from .engine.evaluate import evaluate_checkpoint
    from .metrics import format_metrics, metrics_json

    metrics = evaluate_checkpoint(
        args.checkpoint, args.dataset, args.data_root, args.split, args.mode, args.tile
    )
    print(format_metrics(metrics))
    if args.json:
        Path(args.json).write_text(metrics_json(metrics))


def _predict(args: argparse.Namespace) -> None:
    from .engine.inference import predict_files

    for path in predict_files(args.checkpoint, args.inputs, args.out, args.tile, args.overlap, args.dataset):
        print(f"wrote {path}")


def _demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(args.out, iters=args.iters)


def _prepare(args: argparse.Namespace) -> None:
    from .data.prepare import prepare_dataset

    summary = prepare_dataset(args.dataset, args.raw_dir, args.out_dir, tile=args.tile)
    print(summary)
    print(f"wrote {args.out_dir} (manifest.json, img_dir/, ann_dir/)")


def _convert(args: argparse.Namespace) -> None:
    from .hub import convert_checkpoint

    out = convert_checkpoint(args.src, args.model, args.out)
    print(f"wrote {out}/model.safetensors, config.json, README.md ({args.model} from {args.src})")


def _push(args: argparse.Namespace) -> None:
    from .hub import push_folder

    files = push_folder(
        args.folder, args.repo_id, private=args.private, revision=args.revision, dry_run=args.dry_run
    )
    verb = "would upload" if args.dry_run else "uploaded"
    target = args.repo_id + (f"@{args.revision}" if args.revision else "")
    print(f"{verb} {len(files)} files to {target}:")
    for name in files:
        print(f"  {name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vil-seg", description="Vision-LSTM semantic segmentation")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="train and evaluate a small Seg-LSTM on synthetic scenes (CPU)")
    demo.add_argument("--out", default="runs/demo", help="the run directory to write")
    demo.add_argument("--iters", type=int, default=None, help="training iterations (default: the demo's)")
    demo.set_defaults(run=_demo)

    recipe = PAPER_RECIPE
    train = commands.add_parser(
        "train", help="train with the paper's recipe (torchrun for several processes)"
    )
    train.add_argument(
        "--dataset", default="synthetic", choices=("synthetic", "loveda", "vaihingen", "potsdam")
    )
    train.add_argument("--data-root", help="a `vil-seg prepare` folder (not needed for synthetic)")
    train.add_argument("--encoder", default="vil_small", help="ViL variant")
    train.add_argument(
        "--decoder", default="upernet", help="upernet, deeplabv3, deeplabv3plus, apcnet or ann"
    )
    train.add_argument("--smp-arch", help="an smp architecture with the ViL encoder instead of --decoder")
    train.add_argument("--depths", type=_depths, default=(6, 6, 6, 6), help="stage lengths, e.g. 4,4,12,4")
    train.add_argument("--iters", type=int, default=recipe.iters)
    train.add_argument("--batch-size", type=int, default=recipe.batch_size, help="global, over all processes")
    train.add_argument("--micro-batch", type=int, help="per process and step; accumulation makes up the rest")
    train.add_argument("--crop", type=int, default=recipe.crop)
    train.add_argument("--lr", type=float, default=recipe.lr)
    train.add_argument("--weight-decay", type=float, default=recipe.weight_decay)
    train.add_argument("--warmup", type=int, default=recipe.warmup)
    train.add_argument(
        "--loss-avg-non-ignore", action="store_true", help="average the loss over labelled pixels only"
    )
    train.add_argument("--amp", default="none", choices=("none", "bf16"))
    train.add_argument("--val-interval", type=int, default=recipe.val_interval)
    train.add_argument("--ckpt-interval", type=int, default=recipe.ckpt_interval)
    train.add_argument("--eval-mode", default="whole", choices=("whole", "slide"))
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--workers", type=int, default=2, help="data loader processes")
    train.add_argument("--encoder-weights", default="none", choices=("none", "imagenet"))
    train.add_argument("--out", default="runs/seglstm", help="the run directory")
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("eval", help="score a checkpoint on a dataset (mmseg's protocol)")
    evaluate.add_argument("--checkpoint", required=True, help="a run directory or a Hub repo id")
    evaluate.add_argument("--dataset", required=True, choices=("synthetic", "loveda", "vaihingen", "potsdam"))
    evaluate.add_argument("--data-root")
    evaluate.add_argument("--split", default="val")
    evaluate.add_argument("--mode", default="whole", choices=("whole", "slide"))
    evaluate.add_argument("--tile", type=int, default=512, help="window size for --mode slide")
    evaluate.add_argument("--json", help="also write the metrics to this file")
    evaluate.set_defaults(run=_eval)

    predict = commands.add_parser("predict", help="segment image files of any size")
    predict.add_argument("--checkpoint", required=True, help="a run directory or a Hub repo id")
    predict.add_argument("inputs", nargs="+", help="PNG / JPEG / TIFF / GeoTIFF files")
    predict.add_argument("--out", required=True, help="folder for <name>.png / .tif and <name>_color.png")
    predict.add_argument("--tile", type=int, default=512)
    predict.add_argument("--overlap", type=int, default=128)
    predict.add_argument("--dataset", help="whose palette to draw with (default: the run's dataset)")
    predict.set_defaults(run=_predict)

    prepare = commands.add_parser(
        "prepare",
        help="tile the official LoveDA / ISPRS archives into train-id labels",
        description="Read the official archives (zips or their extracted folders) and write mmseg-style "
        "tiles with train-id labels (255 = ignore) and a manifest.",
    )
    prepare.add_argument("dataset", choices=("loveda", "vaihingen", "potsdam"))
    prepare.add_argument("raw_dir", help="folder holding the official archives")
    prepare.add_argument("out_dir", help="folder to write")
    prepare.add_argument("--tile", type=int, default=512, help="ISPRS tile size (LoveDA is not tiled)")
    prepare.set_defaults(run=_prepare)

    convert = commands.add_parser(
        "convert",
        help="convert an original ViL checkpoint into a Hugging Face Hub folder",
        description="Convert NX-AI's .th files, vision_lstm package state_dicts, Seg-LSTM mmseg checkpoints "
        "or vil-seg checkpoints into model.safetensors + config.json + README.md.",
    )
    convert.add_argument("src", help="the checkpoint file")
    convert.add_argument(
        "--model", required=True, help="the vil-seg model it holds, e.g. vil_small or vil2_tiny"
    )
    convert.add_argument("--out", required=True, help="the folder to write")
    convert.set_defaults(run=_convert)

    push = commands.add_parser("push", help="upload a converted folder or a training run to the Hub")
    push.add_argument("folder", help="a `vil-seg convert` folder or a training run folder")
    push.add_argument("--repo-id", required=True, help="ORG/NAME on the Hugging Face Hub")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--revision", help="branch to upload to (created if needed)")
    push.add_argument("--dry-run", action="store_true", help="list what would be uploaded, upload nothing")
    push.set_defaults(run=_push)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tune_glibc_malloc()  # page faults on every reused temporary otherwise; see malloc.py
    try:
        args.run(args)
    except (ValueError, RuntimeError, KeyError, FileNotFoundError, FileExistsError) as err:
        print(f"vil-seg {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
