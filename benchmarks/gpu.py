"""GPU check and timings for a lent accelerator (run through benchmarks/gpu.sh; installs nothing).

1. Correctness on the GPU: the mLSTM backends' values and gradients against a float64 CPU reference, and
   vil_small's features on the GPU (float32) against the same model on the CPU.
2. Timings (bfloat16 autocast, batch 1): vil_small forward and forward + backward at 512 / 1024 / 2048
   for mlstm_backend chunkwise and parallel, timm's ViT-S/16 (dynamic_img_size), and, if the package
   mlstm_kernels is importable, its Triton chunkwise kernel in place of vil-seg's mLSTM (its licence is
   not open-source, and its backward leaves out the normaliser's gradient: timed only, never a default).
   Time = median of CUDA-event timings after warm-up; memory = peak allocated.
"""

from __future__ import annotations

import statistics
import sys

import timm
import torch

import vil_seg
import vil_seg.vision_lstm as vision_lstm
from vil_seg.mlstm import mlstm

SIZES = (512, 1024, 2048)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).abs().max() / b.abs().max()).item()


def check_correctness(device: torch.device) -> list[str]:
    lines = []
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 1000, 64, generator=gen, dtype=torch.float64) for _ in range(3))
    i = torch.randn(2, 4, 1000, generator=gen, dtype=torch.float64)
    f = torch.randn(2, 4, 1000, generator=gen, dtype=torch.float64) + 3
    ref = mlstm(q, k, v, i, f, backend="parallel")
    for backend in ("chunkwise", "parallel"):
        for dtype in (torch.float32, torch.bfloat16):
            args = [t.to(device, dtype) for t in (q, k, v, i, f)]
            err = _rel(mlstm(*args, backend=backend), ref)
            lines.append(f"mLSTM {backend} {str(dtype)[6:]} on GPU vs float64 CPU: rel err {err:.2e}")
    # gradients (the chunkwise backward is written out by hand) against autograd through the float64 form
    inputs = [t.clone().requires_grad_() for t in (q, k, v, i, f)]
    weights = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    ref_grads = torch.autograd.grad((mlstm(*inputs, backend="parallel") * weights).sum(), inputs)
    for backend in ("chunkwise", "parallel"):
        args = [t.detach().to(device, torch.float32).requires_grad_() for t in inputs]
        out = mlstm(*args, backend=backend)
        grads = torch.autograd.grad((out * weights.to(device, torch.float32)).sum(), args)
        err = max(_rel(grad, ref_grad) for grad, ref_grad in zip(grads, ref_grads, strict=True))
        lines.append(f"mLSTM {backend} float32 gradients on GPU vs float64 CPU: max rel err {err:.2e}")
    model = timm.create_model("vil_small", features_only=True).eval()
    x = torch.randn(1, 3, 512, 768, generator=gen)
    with torch.no_grad():
        cpu = model(x)[-1]
        gpu = model.to(device)(x.to(device))[-1]
    lines.append(f"vil_small features 512x768, float32 GPU vs CPU: rel err {_rel(gpu, cpu):.2e}")
    return lines


def _time(fn, device: torch.device, repeats: int = 5) -> tuple[float, float]:
    fn()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times), torch.cuda.max_memory_allocated(device) / 2**30


def _triton_mlstm():
    """mlstm_kernels' Triton chunkwise kernel with vil-seg's call signature, or None."""
    try:
        from mlstm_kernels.torch import get_mlstm_kernel
    except ImportError:
        return None
    kernel = get_mlstm_kernel("chunkwise--triton_xl_chunk")

    def call(q, k, v, igate, fgate, *, backend="chunkwise", chunk_size=64, eps=1e-6, **state_args):
        if state_args.get("initial_state") is not None or state_args.get("return_state"):
            raise ValueError("the Triton kernel wrapper keeps no state: run the model with segment_len=0")
        seq_len = q.shape[2]
        pad = -seq_len % 64
        if pad:  # the kernel needs a multiple of its chunk; appended tokens do not change earlier outputs
            q, k, v = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
            igate, fgate = (torch.nn.functional.pad(t, (0, pad)) for t in (igate, fgate))
        return kernel(q=q, k=k, v=v, i=igate, f=fgate, chunk_size=64)[:, :, :seq_len]

    return call


def time_models(device: torch.device) -> list[str]:
    rows = ["| model | input | forward s / GiB | forward + backward s / GiB |", "|---|---|---|---|"]
    variants = [  # inference runs over segments of 512 tokens unless segment_len=0
        ("vil_small chunkwise", dict(mlstm_backend="chunkwise")),
        ("vil_small chunkwise whole", dict(mlstm_backend="chunkwise", segment_len=0)),
        ("vil_small parallel", dict(mlstm_backend="parallel")),
    ]
    triton = _triton_mlstm()
    if triton is not None:
        variants.append(
            ("vil_small mlstm_kernels triton", dict(mlstm_backend="chunkwise", segment_len=0, triton=True))
        )
    variants.append(("vit_small_patch16_224", dict()))
    for name, options in variants:
        for size in SIZES:
            if name.startswith("vit"):
                model = timm.create_model("vit_small_patch16_224", dynamic_img_size=True, num_classes=0)
            else:
                model = timm.create_model(
                    "vil_small",
                    num_classes=0,
                    mlstm_backend=options["mlstm_backend"],
                    segment_len=options.get("segment_len", 512),
                )
            model = model.to(device)
            if options.get("triton"):
                vision_lstm.mlstm = triton
            x = torch.randn(1, 3, size, size, device=device)
            cells = []
            for backward in (False, True):

                def step(backward=backward, model=model, x=x):
                    with torch.autocast("cuda", dtype=torch.bfloat16):
                        out = model.forward_features(x)
                    if backward:
                        out.float().mean().backward()

                try:
                    if backward:
                        model.train()
                        seconds, gib = _time(step, device)
                    else:
                        model.eval()
                        with torch.no_grad():
                            seconds, gib = _time(step, device)
                    cells.append(f"{seconds:.4f} / {gib:.2f}")
                except torch.OutOfMemoryError:
                    cells.append("out of memory")
                    torch.cuda.empty_cache()
            vision_lstm.mlstm = mlstm
            rows.append(f"| {name} | {size}x{size} | {cells[0]} | {cells[1]} |")
            print(rows[-1], flush=True)
            del model
            torch.cuda.empty_cache()
    return rows


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: this script is for a lent GPU machine")
        return 1
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    print(f"# vil-seg GPU check: {name}, torch {torch.__version__}, vil-seg {vil_seg.__version__}")
    for line in check_correctness(device):
        print(line, flush=True)
    print()
    time_models(device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
