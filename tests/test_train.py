"""Training: the recipe's schedule, kill-and-resume, DDP under torchrun, the demo, eval and predict."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from PIL import Image
from safetensors.torch import load_file

import vil_seg.engine.trainer as train_module
from vil_seg import cli
from vil_seg.demo import run_demo
from vil_seg.engine.trainer import IterationSampler, TrainConfig, lr_factor, parameter_groups, train

from .conftest import rel_err

TINY = dict(
    dataset="synthetic",
    encoder="vil_tiny",
    depths=(1, 1, 1, 1),
    encoder_kwargs=dict(embed_dim=32, patch_size=16),
    decoder_channels=32,
    aux_channels=16,
    batch_size=4,
    crop=64,
    lr=2e-3,
    warmup=2,
    workers=0,
    progress=False,
    dataset_kwargs=dict(size=64, num_scenes=8),
)


def _log(run):
    with (run / "log.csv").open() as f:
        return list(csv.DictReader(f))


def test_schedule_is_linear_warmup_then_poly():
    assert lr_factor(0, 100, 10) == pytest.approx(1e-6)
    assert lr_factor(5, 100, 10) == pytest.approx(0.5, abs=1e-6)
    assert lr_factor(10, 100, 10) == 1.0
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10) == 0.0


def test_no_weight_decay_on_pos_embed_and_norms():
    from vil_seg import SegLSTM

    model = SegLSTM(
        encoder_name="vil_tiny", depths=(1, 1, 1, 1), classes=3, decoder_channels=16, aux_channels=8
    )
    decay, no_decay = parameter_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert "encoder.model.pos_embed" in no_decay_names
    assert all("norm" in n or "pos_embed" in n for n in no_decay_names)
    assert any(".bn." in names[id(p)] for p in decay["params"])  # head BatchNorms keep decay, as in mmseg


def test_sampler_depends_only_on_the_iteration():
    full = list(IterationSampler(10, 4, 0, 6, seed=3))
    resumed = list(IterationSampler(10, 4, 3, 6, seed=3))
    assert resumed == full[12:]
    ranks = [list(IterationSampler(10, 4, 0, 6, seed=3, rank=r, world=2)) for r in (0, 1)]
    assert sorted(ranks[0][:2] + ranks[1][:2]) == sorted(full[:4])


def test_kill_and_resume_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    config = dict(TINY, iters=6, ckpt_interval=3, val_interval=6)
    train(TrainConfig(**config, out=str(tmp_path / "straight")))

    original = train_module._append_log

    def killed_after_iteration_4(path, row):
        original(path, row)
        if row["iter"] == 4:
            raise KeyboardInterrupt  # the process dies after logging iteration 4; the checkpoint is at 3

    monkeypatch.setattr(train_module, "_append_log", killed_after_iteration_4)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**config, out=str(tmp_path / "killed")))
    monkeypatch.setattr(train_module, "_append_log", original)
    train(TrainConfig(**config, out=str(tmp_path / "killed"), resume=True))

    straight = load_file(tmp_path / "straight" / "model.safetensors")
    resumed = load_file(tmp_path / "killed" / "model.safetensors")
    for name, value in straight.items():
        assert rel_err(resumed[name], value) <= 1e-5, name
    assert [int(r["iter"]) for r in _log(tmp_path / "killed")] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in _log(tmp_path / "killed")] == [r["loss"] for r in _log(tmp_path / "straight")]


def test_resume_errors_and_finished_runs(tmp_path, capsys):
    run = tmp_path / "run"
    train(TrainConfig(**dict(TINY, iters=2, ckpt_interval=1, val_interval=2), out=str(run)))
    train(TrainConfig(**dict(TINY, iters=2, ckpt_interval=1, val_interval=2), out=str(run), resume=True))
    assert "already finished (2/2 iterations): nothing to do" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"another configuration \(lr: 0\.002 -> 0\.001\)"):
        train(TrainConfig(**dict(TINY, iters=2, lr=1e-3), out=str(run), resume=True))
    with pytest.raises(FileExistsError, match="pass --resume"):
        train(TrainConfig(**dict(TINY, iters=2), out=str(run)))
    with pytest.raises(FileNotFoundError, match=r"no trainer_state\.pt"):
        train(TrainConfig(**dict(TINY, iters=2), out=str(tmp_path / "new"), resume=True))


def test_loss_decreases_on_synthetic_scenes(tmp_path):
    config = dict(
        TINY,
        encoder_kwargs=dict(embed_dim=48, patch_size=8),
        iters=80,
        val_interval=80,
        ckpt_interval=80,
        dataset_kwargs=dict(size=64, num_scenes=32),
    )
    train(TrainConfig(**config, out=str(tmp_path / "run")))
    losses = [float(r["loss"]) for r in _log(tmp_path / "run")]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.8 * first, (first, last)  # a model that does not learn stays near ln(7) = 1.95


def test_bad_training_input(tmp_path):
    with pytest.raises(ValueError, match="unknown decoder 'segformer'"):
        TrainConfig(decoder="segformer")
    with pytest.raises(ValueError, match="unknown dataset 'cityscapes'"):
        TrainConfig(dataset="cityscapes")
    with pytest.raises(ValueError, match=r"unknown ViL encoder 'resnet50'.*vil_small"):
        train(TrainConfig(**dict(TINY, encoder="resnet50"), out=str(tmp_path / "a")))
    with pytest.raises(FileNotFoundError, match="vil-seg prepare vaihingen"):
        train(
            TrainConfig(
                **dict(TINY, dataset="vaihingen", dataset_kwargs={}),
                data_root=str(tmp_path),
                out=str(tmp_path / "b"),
            )
        )
    with pytest.raises(SystemExit):  # argparse: "--depths takes four comma-separated integers"
        cli.main(["train", "--depths", "6,6", "--out", str(tmp_path / "c")])


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    run_demo(out, iters=4, progress=False)  # the full demo is a slow test
    return out


def test_demo_writes_a_complete_run_directory(demo_run):
    expected = ["config.json", "model.safetensors", "metrics.json", "log.csv", "curves.png"]
    expected += ["confusion_matrix.png", "predictions.png", "trainer_state.pt", "train_config.json"]
    for name in expected:
        assert (demo_run / name).is_file(), name
    metrics = json.loads((demo_run / "metrics.json").read_text())
    assert (
        0 <= metrics["mIoU"] <= 100 and len(metrics["IoU"]) == 7 and metrics["class_names"][1] == "building"
    )


def test_eval_and_predict_on_the_demo_run(demo_run, tmp_path, capsys):
    report = tmp_path / "eval.json"
    assert (
        cli.main(["eval", "--checkpoint", str(demo_run), "--dataset", "synthetic", "--json", str(report)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "agricultural" in printed and "mIoU" in printed
    evaluated = json.loads(report.read_text())
    assert evaluated["mIoU"] == pytest.approx(
        json.loads((demo_run / "metrics.json").read_text())["mIoU"], abs=1e-6
    )

    from vil_seg.data.synthetic import generate_scene

    image, _ = generate_scene(123, 160)
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / "scene.png")
    predict = [
        "predict",
        "--checkpoint",
        str(demo_run),
        str(tmp_path / "scene.png"),
        "--out",
        str(tmp_path / "pred"),
    ]
    assert cli.main([*predict, "--tile", "128", "--overlap", "32"]) == 0
    classes = Image.open(tmp_path / "pred" / "scene.png")
    assert classes.size == (160, 160) and (tmp_path / "pred" / "scene_color.png").is_file()

    assert (
        cli.main(
            ["eval", "--checkpoint", str(demo_run), "--dataset", "potsdam", "--data-root", str(tmp_path)]
        )
        == 2
    )
    assert "predicts 7 classes but the dataset has 6" in capsys.readouterr().err


def test_torchrun_two_processes(tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    options = {
        "--dataset": "synthetic", "--encoder": "vil_tiny", "--depths": "1,1,1,1", "--decoder": "deeplabv3",
        "--iters": "3", "--batch-size": "8", "--micro-batch": "2", "--crop": "64", "--val-interval": "3",
        "--ckpt-interval": "3", "--warmup": "1", "--workers": "0", "--out": str(tmp_path / "ddp"),
    }  # fmt: skip
    command = [*launcher, "-m", "vil_seg.cli", "train", *(item for pair in options.items() for item in pair)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [int(r["iter"]) for r in _log(tmp_path / "ddp")] == [1, 2, 3]
    assert (tmp_path / "ddp" / "model.safetensors").is_file()


@pytest.mark.slow
def test_full_demo_reaches_60_miou(tmp_path):
    assert run_demo(tmp_path / "demo", progress=False)["mIoU"] >= 60


def test_smp_architecture_trains_and_reloads(tmp_path):
    import vil_seg

    config = dict(TINY, smp_arch="upernet", iters=2, val_interval=2, ckpt_interval=2)
    with pytest.raises(
        ValueError, match=r"aux_channels, decoder_channels, depths, encoder_kwargs configure SegLSTM"
    ):
        TrainConfig(**config)
    for key in ("depths", "encoder_kwargs", "decoder_channels", "aux_channels"):
        config.pop(key)
    metrics = train(TrainConfig(**config, out=str(tmp_path / "run")))
    assert len(metrics["IoU"]) == 7
    model = vil_seg.from_pretrained(tmp_path / "run")
    assert type(model).__name__ == "UPerNet" and model.config["encoder_name"] == "vil_tiny"


def test_every_train_flag_reaches_the_config():
    import dataclasses

    args = cli.build_parser().parse_args(
        ["train", "--depths", "4,4,12,4", "--micro-batch", "2", "--lr", "1e-3"]
    )
    flags = set(vars(args)) - {"command", "run"}
    assert flags <= {f.name for f in dataclasses.fields(TrainConfig)}, flags
    config = cli._train_config(args)
    assert (config.depths, config.micro_batch, config.lr, config.encoder_weights) == (
        (4, 4, 12, 4),
        2,
        1e-3,
        None,
    )
