"""Print the parameter counts of the Seg-LSTM paper's 10 configurations (5 decoders x 2 stage splits).

    python examples/paper_models.py

ViL-S encoder at 512x512, 6 classes. "params" excludes the auxiliary FCN head (mmseg's get_flops.py
removes it before counting, as the paper's Table III does); "with aux" includes it.
"""

import vil_seg


def main() -> None:
    print("| decoder | depths | params | with aux |")
    print("|---|---|---|---|")
    for decoder in vil_seg.models.DECODERS:
        for depths in ((6, 6, 6, 6), (4, 4, 12, 4)):
            model = vil_seg.SegLSTM(decoder=decoder, encoder_name="vil_small", depths=depths, classes=6)
            total = sum(p.numel() for p in model.parameters())
            aux = sum(p.numel() for p in model.aux_head.parameters())
            depths_text = "(" + ",".join(map(str, depths)) + ")"
            print(f"| `{decoder}` | `{depths_text}` | {total - aux:,} | {total:,} |")


if __name__ == "__main__":
    main()
