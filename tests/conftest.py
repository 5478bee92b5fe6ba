"""Shared test helpers: the reference fixtures of the original implementations."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import vil_seg  # noqa: F401  (registers the timm models)

FIXTURES = Path(
    os.environ.get(
        "VIL_SEG_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "vil_reference"
    )
)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"reference fixtures not found at {FIXTURES}; set VIL_SEG_FIXTURES to their folder")
    return FIXTURES


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max|ours - ref| / max|ref| in float64 (the absolute error where the reference is all zeros)."""
    ours, ref = ours.detach().double(), ref.detach().double()
    assert ours.shape == ref.shape, f"shape {tuple(ours.shape)} != reference {tuple(ref.shape)}"
    scale = ref.abs().max().item()
    return (ours - ref).abs().max().item() / (scale if scale > 0 else 1.0)
