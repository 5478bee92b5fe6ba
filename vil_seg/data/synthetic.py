"""Procedural aerial scenes with LoveDA's 7 classes, for trying everything without downloading data.

Classes are told apart by texture, shape and context, not by colour: three pairs share a mean colour
(background and barren: tan; road and building: grey; forest and agricultural: green), each
scene has its own illumination, and every pixel gets noise. So a per-pixel colour classifier does poorly
(tests check it stays at or below 35 mIoU), and a model that scores well has learned the textures (speckle,
canopy, crop rows, calm water), the shapes (rectangular roofs with a ridge and a shadow, roads as long bands
with a dashed centre line) and the context.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

__all__ = ["SCENE_CLASSES", "generate_scene"]

SCENE_CLASSES = ("background", "building", "road", "water", "barren", "forest", "agricultural")
BACKGROUND, BUILDING, ROAD, WATER, BARREN, FOREST, AGRICULTURAL = range(7)

_TAN = (150.0, 135.0, 110.0)
_GREEN = (85.0, 110.0, 70.0)
_GREY = (125.0, 125.0, 130.0)
_WATER_GREEN = (72.0, 100.0, 84.0)
_BASE = {
    BACKGROUND: _TAN,
    BARREN: _TAN,
    ROAD: _GREY,
    BUILDING: _GREY,
    WATER: _WATER_GREEN,
    FOREST: _GREEN,
    AGRICULTURAL: _GREEN,
}


class _Painter:
    """Random draws from one seeded generator, on an (H, W) pixel grid."""

    def __init__(self, seed: int, size: int):
        self.gen = torch.Generator().manual_seed(seed)
        self.size = size
        coords = torch.arange(size, dtype=torch.float32)
        self.y, self.x = torch.meshgrid(coords, coords, indexing="ij")

    def uniform(self, low: float, high: float, *shape: int) -> torch.Tensor:
        return (
            low + (high - low) * torch.rand(*shape, generator=self.gen)
            if shape
            else self.uniform(low, high, 1)[0]
        )

    def integer(self, low: int, high: int) -> int:
        return int(torch.randint(low, high + 1, (1,), generator=self.gen))

    def normal(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=self.gen)

    def smooth(self, cells: int) -> torch.Tensor:
        """Zero-mean, unit-std noise varying over about ``size / cells`` pixels."""
        coarse = self.normal(1, 1, cells + 1, cells + 1)
        field = F.interpolate(coarse, size=(self.size, self.size), mode="bicubic", align_corners=True)[0, 0]
        return (field - field.mean()) / field.std().clamp_min(1e-6)

    def blob(self, cells: int, area: float) -> torch.Tensor:
        """A boolean mask of smooth blobs covering about ``area`` of the scene."""
        field = self.smooth(cells)
        return field > torch.quantile(field.flatten(), 1 - area)


def _parcels(p: _Painter, labels: torch.Tensor, texture: torch.Tensor) -> None:
    """Fields: a jittered grid of parcels, some cropped, each with rows at its own angle and spacing."""
    cuts = p.integer(2, 4)
    edges = [0, *sorted(p.uniform(0.15, 0.85, cuts - 1).mul(p.size).long().tolist()), p.size]
    for top, bottom in itertools.pairwise(edges):
        for left, right in itertools.pairwise(edges):
            if p.uniform(0, 1) > 0.5:
                continue
            angle, period, phase = p.uniform(0, math.pi), p.uniform(5, 9), p.uniform(0, 2 * math.pi)
            rows = torch.sin(2 * math.pi * (p.x * math.cos(angle) + p.y * math.sin(angle)) / period + phase)
            inside = torch.zeros_like(labels, dtype=torch.bool)
            inside[top + 2 : bottom - 2, left + 2 : right - 2] = True
            labels[inside] = AGRICULTURAL
            texture[inside] = 22 * rows[inside]


def _roads(p: _Painter, labels: torch.Tensor, texture: torch.Tensor) -> None:
    """Roads: straight bands 12-20 px wide from edge to edge, crossing each other, dashed centre lines."""
    for direction in range(p.integer(2, 3)):
        horizontal = direction % 2 == 0
        slope = p.uniform(-0.35, 0.35)
        offset = p.uniform(0.2, 0.8) * p.size
        width = p.uniform(12, 20)
        along, across = (p.x, p.y) if horizontal else (p.y, p.x)
        distance = (across - offset - slope * (along - p.size / 2)).abs() / math.sqrt(1 + slope**2)
        road = distance < width / 2
        labels[road] = ROAD
        texture[road] = 5 * p.normal(int(road.sum()))
        dashes = road & (distance < 1.2) & ((along // 8) % 2 == 0)
        texture[dashes] = 95


def _buildings(p: _Painter, labels: torch.Tensor, texture: torch.Tensor, shade: torch.Tensor) -> None:
    """Buildings: rectangles with a two-sided roof (a ridge along the long side), an edge and a shadow."""
    shadow_dy, shadow_dx = p.integer(3, 6), p.integer(3, 6)
    for _ in range(p.integer(6, 16)):
        height, width = p.integer(16, 40), p.integer(16, 40)
        top, left = p.integer(0, p.size - height - 8), p.integer(0, p.size - width - 8)
        footprint = labels[top : top + height + shadow_dy, left : left + width + shadow_dx]
        if ((footprint == ROAD) | (footprint == WATER) | (footprint == BUILDING)).any():
            continue
        shadow = torch.zeros_like(labels, dtype=torch.bool)
        shadow[top + shadow_dy : top + height + shadow_dy, left + shadow_dx : left + width + shadow_dx] = True
        roof = torch.zeros_like(shadow)
        roof[top : top + height, left : left + width] = True
        shadow &= ~roof
        labels[shadow] = BACKGROUND
        texture[shadow] = 0
        shade[shadow] = 0.55
        ridge_along_x = width >= height
        half = (p.y < top + height / 2) if ridge_along_x else (p.x < left + width / 2)
        tint = p.uniform(-10, 10)
        texture[roof] = torch.where(half[roof], 20.0, -20.0) + tint
        edge = roof.clone()
        edge[top + 2 : top + height - 2, left + 2 : left + width - 2] = False
        texture[edge] = -25.0
        labels[roof] = BUILDING


def generate_scene(seed: int, size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """One scene, the same for the same ``seed``: image uint8 (3, size, size) and mask int64 (size, size)."""
    if size < 64:
        raise ValueError(f"scenes need at least 64x64 pixels, got {size}")
    p = _Painter(seed, size)
    labels = torch.full((size, size), BACKGROUND, dtype=torch.int64)
    texture = 8 * p.smooth(6)  # background: gentle low-frequency variation
    shade = torch.ones(size, size)

    _parcels(p, labels, texture)
    barren = p.blob(5, p.uniform(0.08, 0.22))
    labels[barren] = BARREN
    grains = 30 * p.smooth(p.size // 3) + 12 * p.normal(p.size, p.size)  # coarse gravel plus speckle
    texture[barren] = grains[barren]
    forest = p.blob(4, p.uniform(0.08, 0.25))
    labels[forest] = FOREST
    canopy = p.smooth(size // 4)
    texture[forest] = 30 * canopy[forest]
    water = p.blob(3, p.uniform(0.0, 0.15))
    labels[water] = WATER
    texture[water] = 4 * p.smooth(3)[water]
    _roads(p, labels, texture)
    _buildings(p, labels, texture, shade)

    base = torch.tensor([_BASE[c] for c in range(len(SCENE_CLASSES))]).T  # (3, K)
    image = base[:, labels] + texture  # (3, H, W)
    image = image * shade
    gain = p.uniform(0.8, 1.2) * p.uniform(0.92, 1.08, 3)
    image = image * gain[:, None, None] + p.uniform(-12, 12, 3)[:, None, None] + 5 * p.normal(3, size, size)
    return image.round().clamp(0, 255).to(torch.uint8), labels
