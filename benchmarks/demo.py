"""Time `vil-seg demo` from process start to exit, with its peak memory and its validation mIoU.

    python benchmarks/demo.py [--out runs/demo-benchmark]

Runs the command as a user would, in a child process: wall-clock time, the child's peak resident set
size (getrusage RUSAGE_CHILDREN) and the mIoU from the run's metrics.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/demo-benchmark")
    args = parser.parse_args()
    vil_seg = shutil.which("vil-seg") or f"{sys.executable} -m vil_seg.cli"
    start = time.perf_counter()
    result = subprocess.run([*vil_seg.split(), "demo", "--out", args.out], capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"vil-seg demo failed:\n{result.stderr[-3000:]}")
    seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    metrics = json.loads((Path(args.out) / "metrics.json").read_text())
    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    minutes, rest = divmod(round(seconds), 60)
    print(f"vil-seg demo: {minutes} min {rest} s from start to exit, peak RSS {peak_gb:.2f} GB")
    print("| class | " + " | ".join(metrics["class_names"]) + " | mIoU |")
    print("|---|" + "---|" * (len(metrics["class_names"]) + 1))
    print("| IoU | " + " | ".join(f"{v:.1f}" for v in metrics["IoU"]) + f" | **{metrics['mIoU']:.1f}** |")


if __name__ == "__main__":
    main()
