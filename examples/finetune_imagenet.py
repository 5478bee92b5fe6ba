"""Fine-tune Seg-LSTM from converted ImageNet ViL weights instead of training from scratch (the paper's
future work: pretrained transfer).

    # once the Hub repos are published, --encoder-weights imagenet downloads them; until then convert locally:
    vil-seg convert vil_small16_e400_in1k.th --model vil_small --out weights/vil_small.in1k
    python examples/finetune_imagenet.py --weights weights/vil_small.in1k/model.safetensors \\
        --dataset vaihingen --data-root data/vaihingen --out runs/vaihingen-ft
"""

import argparse

import torch
from safetensors.torch import load_file

from vil_seg import SegLSTM
from vil_seg.data import dataset_info, eval_transforms, get_dataset, train_transforms
from vil_seg.engine import evaluate
from vil_seg.engine.trainer import lr_factor, parameter_groups
from vil_seg.metrics import format_metrics
from vil_seg.recipes import DATASET_RECIPES


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", required=True, help="a converted model.safetensors (timm layout)")
    parser.add_argument("--dataset", default="vaihingen")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--iters", type=int, default=8000)
    parser.add_argument(
        "--lr", type=float, default=1e-4, help="lower than from scratch: the encoder is trained"
    )
    parser.add_argument("--out", default="runs/finetune")
    args = parser.parse_args()

    info, recipe = dataset_info(args.dataset), DATASET_RECIPES[args.dataset]
    model = SegLSTM(decoder="upernet", encoder_name="vil_small", classes=info.num_classes)
    model.encoder.load_state_dict(load_file(args.weights))  # any ViL checkpoint; pos_embed resized 14 -> 32
    train_set = get_dataset(args.dataset, args.data_root, "train", train_transforms(scale=recipe.train_scale))
    loader = torch.utils.data.DataLoader(train_set, batch_size=8, shuffle=True, num_workers=4, drop_last=True)
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.01), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: lr_factor(i, args.iters, args.iters // 10)
    )
    model.train()
    iteration = 0
    while iteration < args.iters:
        for batch in loader:
            logits, aux = model.forward_with_aux(batch["image"])
            loss = torch.nn.functional.cross_entropy(logits, batch["mask"], ignore_index=255)
            loss = loss + 0.4 * torch.nn.functional.cross_entropy(aux, batch["mask"], ignore_index=255)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            iteration += 1
            if iteration % 100 == 0:
                print(f"iter {iteration}: loss {loss.item():.4f}")
            if iteration == args.iters:
                break
    model.save_pretrained(args.out)
    val = get_dataset(args.dataset, args.data_root, "val", eval_transforms(recipe.test_scale))
    matrix = evaluate(model, val, info.num_classes, progress=True)
    metrics = dict(matrix.compute(), class_names=list(info.classes))
    if info.clutter is not None:
        metrics["mIoU_excl_clutter"] = matrix.compute(exclude=(info.clutter,))["mIoU"]
    print(format_metrics(metrics))


if __name__ == "__main__":
    main()
