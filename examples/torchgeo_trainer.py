"""A ViL encoder inside torchgeo's SemanticSegmentationTask (Lightning), on the synthetic scenes.

pip install "vil-seg[dev]"   # torchgeo and lightning
python examples/torchgeo_trainer.py --max-epochs 2
"""

import argparse

import lightning
import torch
from torchgeo.trainers import SemanticSegmentationTask

import vil_seg  # noqa: F401  (registers the ViL encoders that torchgeo picks by name)
from vil_seg.data import eval_transforms, get_dataset, train_transforms


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="upernet", choices=("upernet", "unet", "deeplabv3+"))
    parser.add_argument("--backbone", default="vil_tiny")
    parser.add_argument("--max-epochs", type=int, default=2)
    args = parser.parse_args()
    train = get_dataset(
        "synthetic", split="train", transforms=train_transforms(scale=(256, 256), crop_size=128)
    )
    val = get_dataset("synthetic", split="val", transforms=eval_transforms())
    task = SemanticSegmentationTask(model=args.model, backbone=args.backbone, num_classes=7, lr=1e-3)
    trainer = lightning.Trainer(max_epochs=args.max_epochs, accelerator="auto", log_every_n_steps=5)
    trainer.fit(
        task,
        train_dataloaders=torch.utils.data.DataLoader(train, batch_size=8, shuffle=True),
        val_dataloaders=torch.utils.data.DataLoader(val, batch_size=4),
    )


if __name__ == "__main__":
    main()
