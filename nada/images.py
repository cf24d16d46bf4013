"""Converting generator output ([B, C, H, W] in [-1, 1]) to viewable images and grids."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .errors import NadaError
from .io import atomic_write


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped (generator output is unclamped and slightly overshoots)."""
    return ((images.detach().float() + 1.0) * 0.5).clamp(0.0, 1.0)


def to_hwc(images: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] in [-1, 1] -> [B, H, W, 3] in [0, 1] on the CPU (ComfyUI's IMAGE layout).

    One-channel generators are repeated to RGB; extra channels beyond three are dropped.
    """
    x = to_unit_range(images).cpu()
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return x[:, :3].permute(0, 2, 3, 1).contiguous()


def from_hwc(images: torch.Tensor) -> torch.Tensor:
    """ComfyUI's IMAGE layout [B, H, W, C] in [0, 1] -> [B, C, H, W] float32 in [-1, 1] (the inverse
    of `to_hwc` for RGB)."""
    if images.ndim != 4:
        raise NadaError(f"expected images [batch, height, width, channels], got shape {list(images.shape)}")
    return images.detach().float().permute(0, 3, 1, 2) * 2.0 - 1.0


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """[B, C, H, W] in [-1, 1] -> list of RGB PIL images."""
    arr = (to_hwc(images).numpy() * 255.0 + 0.5).astype(np.uint8)
    return [Image.fromarray(a, "RGB") for a in arr]


def image_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> Image.Image:
    """A grid of the batch ([B, C, H, W] in [-1, 1]); `nrow` images per row (default ~sqrt(B))."""
    b = images.shape[0]
    if b == 0:
        raise NadaError("cannot make a grid of zero images")
    nrow = nrow or max(1, math.ceil(math.sqrt(b)))
    ncol = math.ceil(b / nrow)
    tiles = to_pil(images)
    w, h = tiles[0].size
    grid = Image.new("RGB", (nrow * w + (nrow - 1) * padding, ncol * h + (ncol - 1) * padding), "white")
    for i, tile in enumerate(tiles):
        grid.paste(tile, ((i % nrow) * (w + padding), (i // nrow) * (h + padding)))
    return grid


def labelled_grid(
    rows: Sequence[tuple[str, torch.Tensor]], header: Sequence[str] | None = None, scale: int = 1
) -> Image.Image:
    """A grid with one labelled row per (label, images [N, C, H, W] in [-1, 1]) pair, every row the
    same N, and optional column labels above; `scale` enlarges tiles without smoothing (small
    images stay honest)."""
    if not rows or len({imgs.shape[0] for _, imgs in rows}) != 1:
        raise NadaError("labelled_grid needs at least one row, and the same number of images in every row")
    n = rows[0][1].shape[0]
    grid = image_grid(torch.cat([imgs for _, imgs in rows]), nrow=n, padding=1)
    grid = grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)
    tile = (rows[0][1].shape[-1] + 1) * scale
    left, top = 8 + 7 * max(len(label) for label, _ in rows), (22 if header else 0)
    out = Image.new("RGB", (left + grid.width, top + grid.height), "white")
    out.paste(grid, (left, top))
    draw = ImageDraw.Draw(out)
    for r, (label, _) in enumerate(rows):
        draw.text((4, top + r * tile + tile // 2 - 6), label, fill="black")
    for c, text in enumerate(header or []):
        draw.text((left + c * tile + tile // 2 - 3 * len(text), 5), text, fill="black")
    return out


def save_image(image: Image.Image, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a PNG atomically; refuses to replace an existing file unless `overwrite`."""
    return atomic_write(path, lambda f: image.save(f, format="PNG"), overwrite=overwrite)
