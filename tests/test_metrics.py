"""The metric against hand-computed confusion matrices (mmseg protocol)."""

from __future__ import annotations

import math

import pytest
import torch

from vil_seg.metrics import ConfusionMatrix


def test_hand_computed_example_with_ignore_nan_and_exclusion(tmp_path):
    # 4 classes; class 3 never appears in labels nor predictions -> NaN everywhere
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 0]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 3 - 3, 0]])  # the ignored pixel's prediction does not count
    cm = ConfusionMatrix(4)
    cm.update(pred[:1], target[:1])
    cm.update(pred[1:], target[1:])  # summed over batches, as over a dataset
    # labels:      0 0 1 1 2 2 0   predictions: 0 1 1 1 2 0 0
    expected = torch.tensor([[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    assert torch.equal(cm.matrix, expected)
    m = cm.compute()
    # class 0: I=2, L=3, P=3 -> IoU 2/4, Acc 2/3, F1 4/6;  class 1: I=2, L=2, P=3 -> 2/3, 1, 4/5
    # class 2: I=1, L=2, P=1 -> 1/2, 1/2, 2/3
    assert m["IoU"][:3] == pytest.approx([50.0, 200 / 3, 50.0])
    assert m["Acc"][:3] == pytest.approx([200 / 3, 100.0, 50.0])
    assert m["F1"][:3] == pytest.approx([200 / 3, 80.0, 200 / 3])
    assert all(math.isnan(m[key][3]) for key in ("IoU", "Acc", "F1"))
    assert m["mIoU"] == pytest.approx((50 + 200 / 3 + 50) / 3)
    assert m["aAcc"] == pytest.approx(100 * 5 / 7)
    excluded = cm.compute(exclude=(1,))
    assert excluded["mIoU"] == pytest.approx(50.0)
    assert excluded["aAcc"] == m["aAcc"]  # aAcc is over all classes
    assert cm.plot(tmp_path / "cm.png", ["a", "b", "c", "d"]).stat().st_size > 1000


def test_predicted_but_absent_class_scores_zero_not_nan():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([1, 1]), torch.tensor([0, 0]))
    m = cm.compute()
    assert m["IoU"] == [0.0, 0.0] and m["F1"] == [0.0, 0.0]
    assert math.isnan(m["Acc"][1])


def test_random_agreement_with_a_direct_count():
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (3, 17, 23), generator=gen)
    target[0, :4] = 255
    pred = torch.randint(0, 5, (3, 17, 23), generator=gen)
    cm = ConfusionMatrix(5)
    cm.update(pred, target)
    keep = target != 255
    for c in range(5):
        inter = ((pred == c) & (target == c) & keep).sum().item()
        union = (((pred == c) | (target == c)) & keep).sum().item()
        assert cm.compute()["IoU"][c] == pytest.approx(100 * inter / union)


def test_bad_input():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="same shape"):
        cm.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer class ids"):
        cm.update(torch.zeros(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"target holds ids outside 0\.\.2.*\[7\]"):
        cm.update(torch.zeros(2, dtype=torch.long), torch.tensor([1, 7]))


def _rank_counts(rank: int, world: int, init_file: str, out_file: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([rank, 2]), torch.tensor([rank, 1]))
    cm.all_reduce()
    if rank == 0:
        torch.save(cm.matrix, out_file)
    dist.destroy_process_group()


def test_all_reduce_sums_over_processes(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_rank_counts, args=(2, str(tmp_path / "init"), str(tmp_path / "m.pt")), nprocs=2)
    expected = torch.tensor([[1, 0, 0], [0, 1, 2], [0, 0, 0]])
    assert torch.equal(torch.load(tmp_path / "m.pt", weights_only=True), expected)


def test_metrics_json_writes_nan_as_null():
    import json

    from vil_seg.metrics import metrics_json

    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 0]), torch.tensor([0, 0]))
    text = metrics_json(cm.compute())
    assert "NaN" not in text
    parsed = json.loads(text)
    assert parsed["IoU"] == [100.0, None] and parsed["mIoU"] == 100.0
