"""Train Seg-LSTM (ViL-S + UPerNet) on LoveDA with the paper's recipe (Table I).

    vil-seg prepare loveda RAW_DIR data/loveda            # Train.zip, Val.zip, Test.zip from zenodo 5706578
    python examples/train_loveda.py --data-root data/loveda --out runs/loveda-upernet
    torchrun --nproc_per_node=2 examples/train_loveda.py --data-root data/loveda   # 2 GPUs x 8, as the paper

The same as `vil-seg train --dataset loveda --data-root data/loveda --decoder upernet`, written as a script
to show the library calls. LoveDA is scored on its val split (its test labels are hidden).
"""

import argparse

from vil_seg.engine import TrainConfig, train
from vil_seg.metrics import format_metrics


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--decoder", default="upernet")
    parser.add_argument("--out", default="runs/loveda-upernet")
    parser.add_argument("--amp", default="none", choices=("none", "bf16"))
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    config = TrainConfig(  # everything else is Table I: 15k iterations, batch 16, AdamW 6e-4, wd 0.01, ...
        dataset="loveda",
        data_root=args.data_root,
        encoder="vil_small",
        decoder=args.decoder,
        depths=(6, 6, 6, 6),
        amp=args.amp,
        out=args.out,
        resume=args.resume,
    )
    print(format_metrics(train(config)))


if __name__ == "__main__":
    main()
