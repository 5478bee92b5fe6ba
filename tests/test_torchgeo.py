"""torchgeo interop: its SemanticSegmentationTask picks smp encoders by name, so ViL works once imported."""

from __future__ import annotations

import lightning
import pytest
import torch
from torchgeo import trainers

import vil_seg  # noqa: F401  (registers the ViL encoders)


class _Scenes(torch.utils.data.Dataset):
    """Four random 64x96 scenes with 3 classes, as torchgeo's samples: dicts of image and mask."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(index)
        return {
            "image": torch.rand(3, 64, 96, generator=gen),
            "mask": torch.randint(0, 3, (64, 96), generator=gen),
        }


@pytest.mark.parametrize("model", ["upernet", "deeplabv3+", "unet"])
def test_semantic_segmentation_task_fits_one_batch(model, tmp_path):
    task = trainers.SemanticSegmentationTask(model=model, backbone="vil_tiny", num_classes=3, lr=1e-3)
    before = {n: p.detach().clone() for n, p in task.model.encoder.named_parameters()}
    loader = torch.utils.data.DataLoader(_Scenes(), batch_size=2)
    trainer = lightning.Trainer(
        fast_dev_run=True,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(task, train_dataloaders=loader, val_dataloaders=loader)
    assert trainer.state.finished
    changed = [n for n, p in task.model.encoder.named_parameters() if not torch.equal(p, before[n])]
    assert changed, "the ViL encoder was not trained"
