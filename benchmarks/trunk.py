"""The mLSTM backends and the ViL-S trunk, side by side with timm's ViT-S/16, in one run.

    python benchmarks/trunk.py            # full run (under 10 minutes on 2 CPU cores)
    python benchmarks/trunk.py --quick    # small sizes only, a smoke run
    python benchmarks/trunk.py --goals    # the performance goals: 512-2048, training step, 2048 SegLSTM tile,
                                          # and where the time goes at 512x512 (matrix products replayed)
    python benchmarks/trunk.py --breakdown  # only that last part: forward and training step
    python benchmarks/trunk.py --goals --malloc tuned   # the same with glibc's malloc tuned (see below)

Every measurement runs in a fresh subprocess, so that one configuration's allocations cannot flatter or
hurt the next. ``--malloc tuned`` starts those subprocesses with ``MALLOC_MMAP_THRESHOLD_=33554432
MALLOC_TRIM_THRESHOLD_=1073741824`` (what ``vil-seg``'s CLI sets with mallopt), for ViL and ViT alike.

Time is the minimum over up to 3 calls after one warm-up call; memory is the growth of the
process's peak resident set size over its value just before the measured calls (inputs and model already
built), so it counts the activations and temporaries of the call, not the weights.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time

from vil_seg.malloc import MMAP_THRESHOLD, TRIM_THRESHOLD

MLSTM_HEADS, MLSTM_HEAD_DIM = 4, 192  # ViL-S: inner width 768 in 4 heads
MLSTM_LIMITS = {"chunkwise": 16384, "parallel": 4096, "recurrent": 1024}
# column -> (largest input side, model settings); vil_small runs inference over segments of 512 tokens
TRUNK_COLUMNS = {
    "vil_small": (1024, dict(model="vil_small", backend="chunkwise")),
    "vil_small whole": (1024, dict(model="vil_small", backend="chunkwise", segment_len=0)),
    "vil_small parallel": (512, dict(model="vil_small", backend="parallel")),
    "vit_small": (1024, dict(model="vit_small")),
}
# the environment-variable form of vil_seg.malloc.tune_glibc_malloc, read by glibc when a process starts
MALLOC_TUNED = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}
MATMUL_OPS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::baddbmm_", "aten::addbmm")
REPEATS, TIME_BUDGET_S = 3, 10.0  # timed calls per measurement: up to 3, fewer once 10 s are spent


# ---- child: one measurement ----------------------------------------------------------------------------


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _build(spec: dict):
    import timm
    import torch

    import vil_seg
    from vil_seg.mlstm import mlstm

    torch.manual_seed(0)
    if spec["kind"] == "mlstm":
        seq_len = spec["size"]
        shape = (1, MLSTM_HEADS, seq_len, MLSTM_HEAD_DIM)
        grad = spec["backward"]
        q, k, v = (torch.randn(shape, requires_grad=grad) for _ in range(3))
        igate = torch.randn(1, MLSTM_HEADS, seq_len, requires_grad=grad)
        fgate = (torch.randn(1, MLSTM_HEADS, seq_len) + 3).requires_grad_(grad)

        def run():
            h = mlstm(q, k, v, igate, fgate, backend=spec["backend"])
            if grad:
                h.sum().backward()

        return run

    size = spec["size"]
    if spec["kind"] == "seglstm":  # the paper's UPerNet model, one whole tile
        model = vil_seg.SegLSTM(decoder="upernet", encoder_name="vil_small", classes=6, aux_head=False).eval()
        image = torch.randn(1, 3, size, size)

        def run():
            with torch.inference_mode():
                model(image)

        return run
    if spec["model"] == "vit_small":
        model = timm.create_model("vit_small_patch16_224", dynamic_img_size=True, num_classes=0)
    else:
        settings = {"segment_len": spec["segment_len"]} if "segment_len" in spec else {}
        model = timm.create_model("vil_small", num_classes=0, mlstm_backend=spec["backend"], **settings)
    image = torch.randn(spec.get("batch", 1), 3, size, size)
    if spec["kind"] == "train":  # one training step's forward + backward (no optimizer)
        model.train()

        def run():
            model.forward_features(image).mean().backward()

        return run
    model.eval()

    def run():
        with torch.inference_mode():
            model.forward_features(image)

    return run


def _matrix_products(run) -> dict:
    """The matrix products of one call, found with torch.profiler, then each replayed alone.

    The profiler only names the products and their shapes (its per-op times run long, it costs time per
    op); each distinct product is then timed by itself with fresh contiguous operands, hot in cache, the
    best case for that kernel. Returns their FLOPs and that replayed time, summed over the call.
    """
    import torch
    from torch.profiler import profile

    with profile(record_shapes=True) as prof:
        run()
    gflop = replay_s = 0.0
    for event in prof.key_averages(group_by_input_shape=True):
        if event.key not in MATMUL_OPS:
            continue
        name = event.key.removeprefix("aten::").rstrip("_")
        # mm / bmm: (a, b); addmm / baddbmm / addbmm: (input, a, b); an out= tensor may follow
        shapes = event.input_shapes[: 2 if name in ("mm", "bmm") else 3]
        a, b = shapes[-2:]
        product = getattr(torch, name)
        operands = [torch.randn(shape) for shape in shapes]
        product(*operands)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            product(*operands)
            times.append(time.perf_counter() - start)
        gflop += event.count * 2 * math.prod(a) * b[-1] / 1e9  # batch x M x K x N multiply-adds
        replay_s += event.count * min(times)
    return {"gflop": gflop, "replay_s": replay_s}


def _child(spec: dict) -> None:
    import torch

    torch.set_num_threads(spec["threads"])
    run = _build(spec)
    if spec.get("profile"):
        run()
        print(json.dumps(_matrix_products(run)))
        return
    before = _peak_rss_mb()
    run()  # warm-up: first-touch page faults and one-time library set-up are not the steady state
    times: list[float] = []
    while len(times) < REPEATS and (not times or sum(times) < TIME_BUDGET_S):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    print(json.dumps({"time_s": min(times), "peak_mb": _peak_rss_mb() - before}))


# ---- parent: plan, run, report -------------------------------------------------------------------------


def _measure(spec: dict) -> dict:
    env = {**os.environ, **(MALLOC_TUNED if spec.get("malloc") == "tuned" else {})}
    result = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if result.returncode != 0:
        raise RuntimeError(f"measurement {spec} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _machine(threads: int, malloc: str) -> str:
    import torch

    malloc_text = "default"
    if malloc == "tuned":
        malloc_text = "tuned (" + " ".join(f"{k}={v}" for k, v in MALLOC_TUNED.items()) + ")"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical cores, {threads} torch threads, torch {torch.__version__}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}, malloc: {malloc_text}"
    )


def _cell(result: dict | None) -> str:
    if result is None:
        return "-"
    return f"{result['time_s']:.3f} s / {result['peak_mb']:.0f} MB"


def bench_mlstm(sizes: list[int], common: dict) -> None:
    print("\n## mLSTM cell (B=1, NH=4, DH=192, float32): time / peak memory growth\n")
    backends = list(MLSTM_LIMITS)
    header = ["S", "mode", *backends, "parallel / chunkwise time", "chunkwise time exponent"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for backward in (False, True):
        previous = None
        for size in sizes:
            row = {}
            for backend in backends:
                if size > MLSTM_LIMITS[backend]:
                    row[backend] = None
                    continue
                spec = dict(kind="mlstm", backend=backend, size=size, backward=backward, **common)
                row[backend] = _measure(spec)
            chunk, par = row["chunkwise"], row["parallel"]
            ratio = f"{par['time_s'] / chunk['time_s']:.1f}x" if par else "-"
            exponent = "-"
            if previous is not None:
                exponent = f"{math.log(chunk['time_s'] / previous[1]) / math.log(size / previous[0]):.2f}"
            previous = (size, chunk["time_s"])
            mode = "fwd+bwd" if backward else "fwd"
            cells = [str(size), mode, *(_cell(row[b]) for b in backends), ratio, exponent]
            print("| " + " | ".join(cells) + " |", flush=True)


def bench_trunk(sizes: list[int], common: dict) -> None:
    print("\n## Encoder forward (batch 1, float32, inference mode): time / peak memory growth\n")
    print(
        "vil_small: chunkwise mLSTM, blocks run over segments of 512 tokens (the default); vil_small whole: "
        "the same over whole sequences; vil_small parallel: the original's quadratic form.\n"
    )
    columns = list(TRUNK_COLUMNS)
    header = [
        "input",
        *columns,
        "vil_small / ViT-S time",
        "whole / segmented time",
        "parallel / vil_small time",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    times = {}
    for size in sizes:
        row = {}
        for column, (limit, settings) in TRUNK_COLUMNS.items():
            row[column] = (
                _measure(dict(kind="trunk", size=size, **settings, **common)) if size <= limit else None
            )
        ours = row["vil_small"]
        times[size] = ours["time_s"]

        def ratio(a, b):
            return f"{a['time_s'] / b['time_s']:.2f}x" if a and b else "-"

        cells = [
            f"{size}x{size}",
            *(_cell(row[c]) for c in columns),
            ratio(ours, row["vit_small"]),
            ratio(row["vil_small whole"], ours),
            ratio(row["vil_small parallel"], ours),
        ]
        print("| " + " | ".join(cells) + " |", flush=True)
    for small, large in itertools.pairwise(sizes):
        growth = times[large] / times[small]
        print(
            f"\nvil_small time({large}^2) / time({small}^2) = {growth:.2f} "
            f"for {(large / small) ** 2:.0f}x pixels"
        )


def bench_goals(common: dict) -> None:
    """The performance issue's remaining measurements: training step, one 2048x2048 SegLSTM tile, and
    where the forward's time goes."""
    print("\n## Training step (forward + backward, batch 2, 512x512, float32)\n")
    vil, vit = (
        _measure(dict(kind="train", size=512, batch=2, **TRUNK_COLUMNS[name][1], **common))
        for name in ("vil_small", "vit_small")
    )
    print("| vil_small | ViT-S/16 | ViL / ViT-S |\n|---|---|---|")
    print(f"| {_cell(vil)} | {_cell(vit)} | {vil['time_s'] / vit['time_s']:.2f}x |")
    print("\n## SegLSTM (UPerNet, vil_small) inference on one 2048x2048 tile\n")
    tile = _measure(dict(kind="seglstm", size=2048, **common))
    print(f"{_cell(tile)}", flush=True)
    bench_breakdown(common)


def bench_breakdown(common: dict) -> None:
    """Where the time goes at 512x512: each model's matrix products, replayed alone, against its time."""
    print("\n## Where the time goes (512x512): the matrix products, each replayed alone\n")
    print(
        "Each call's matrix products (mm, bmm, addmm, baddbmm, found with torch.profiler) timed one by one "
        "with fresh contiguous operands, hot in cache: the time the call would take with every product at "
        "its best and nothing else.\n"
    )
    print("| model | call | time | products | products replayed alone | share of the time |")
    print("|---|---|---|---|---|---|")
    floors = []
    for call, kind, batch in (("forward, batch 1", "trunk", 1), ("training step, batch 2", "train", 2)):
        results = {}
        for name in ("vil_small", "vit_small"):
            spec = dict(kind=kind, size=512, batch=batch, **TRUNK_COLUMNS[name][1], **common)
            timed, products = _measure(spec), _measure(dict(spec, profile=True))
            results[name] = (timed, products)
            print(
                f"| {name} | {call} | {timed['time_s']:.3f} s | {products['gflop']:.0f} GFLOP "
                f"| {products['replay_s']:.3f} s ({products['gflop'] / products['replay_s']:.0f} GFLOP/s) "
                f"| {products['replay_s'] / timed['time_s']:.0%} |"
            )
        floors.append((call, results["vil_small"][1]["replay_s"] / results["vit_small"][0]["time_s"]))
    for call, floor in floors:
        print(f"\n{call}: vil_small's products replayed alone / ViT-S's whole call = {floor:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    parser.add_argument("--goals", action="store_true", help="also 2048x2048, training step, SegLSTM tile")
    parser.add_argument("--breakdown", action="store_true", help="only where the time goes at 512x512")
    parser.add_argument(
        "--malloc", choices=("default", "tuned"), default="default", help="glibc malloc settings of the runs"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(json.loads(args.child))
        return
    print(f"# vil-seg trunk benchmark\n\nmachine: {_machine(args.threads, args.malloc)}")
    common = dict(threads=args.threads, malloc=args.malloc)
    if args.breakdown:
        bench_breakdown(common)
        return
    if args.goals:
        for column in ("vil_small", "vil_small whole", "vit_small"):
            TRUNK_COLUMNS[column] = (2048, TRUNK_COLUMNS[column][1])
        bench_trunk([512, 1024, 2048], common)
        bench_goals(common)
        return
    bench_mlstm([256, 1024] if args.quick else [256, 1024, 4096, 16384], common)
    bench_trunk([224] if args.quick else [224, 512, 1024], common)


if __name__ == "__main__":
    main()
