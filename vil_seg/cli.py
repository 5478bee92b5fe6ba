"""The ``vil-seg`` command line.

vil-seg convert SRC --model NAME --out DIR      original checkpoint -> Hub folder
vil-seg push DIR --repo-id ORG/NAME [--private] [--revision REV] [--dry-run]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


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
    try:
        args.run(args)
    except (ValueError, RuntimeError, KeyError, FileNotFoundError) as err:
        print(f"vil-seg {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
