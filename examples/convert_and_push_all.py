"""Convert every original NX-AI ImageNet checkpoint in a folder and publish each to the Hugging Face Hub.

For maintainers with network access and a write token (``hf auth login``):

    # download the .th files listed by `--list` into ORIGINALS first
    python examples/convert_and_push_all.py ORIGINALS --out converted --dry-run
    VIL_SEG_HUB_ORG=vil-seg python examples/convert_and_push_all.py ORIGINALS --out converted

Each ``{original}.th`` becomes ``converted/{model}.{tag}/`` and the Hub repo ``{org}/{model}.{tag}``
(the organisation is ``vil-seg`` unless ``VIL_SEG_HUB_ORG`` names another), which is where
``timm.create_model("{model}.{tag}", pretrained=True)`` and smp's ``encoder_weights="imagenet"`` look.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vil_seg.hub import convert_checkpoint, known_originals, push_folder
from vil_seg.vision_lstm import default_cfgs, hub_repo_id


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("originals", type=Path, nargs="?", help="folder holding the downloaded .th files")
    parser.add_argument("--out", type=Path, default=Path("converted"), help="where to write the Hub folders")
    parser.add_argument("--dry-run", action="store_true", help="convert, but only list what would be pushed")
    parser.add_argument("--list", action="store_true", help="print the original download URLs and exit")
    args = parser.parse_args()
    if args.list or args.originals is None:
        for _, name in known_originals():
            model_name, tag = name.split(".", 1)
            print(f"{default_cfgs[model_name].cfgs[tag].origin_url}  ->  {hub_repo_id(model_name, tag)}")
        return
    for stem, name in known_originals():
        source = args.originals / f"{stem}.th"
        if not source.is_file():
            print(f"skip {name}: {source} not found")
            continue
        model_name, tag = name.split(".", 1)
        folder = convert_checkpoint(source, model_name, args.out / name)
        repo_id = hub_repo_id(model_name, tag)
        files = push_folder(folder, repo_id, dry_run=args.dry_run)
        print(f"{'would push' if args.dry_run else 'pushed'} {name} -> {repo_id}: {', '.join(files)}")


if __name__ == "__main__":
    main()
