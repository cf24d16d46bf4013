"""The project's own small demo world and models: a synthetic shapes world and a tiny CLIP trained on it."""

from __future__ import annotations

from pathlib import Path

TINY_CLIP_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny_clip"


def tiny_clip_files() -> tuple[Path, Path]:
    """(model config JSON, weights) of the bundled tiny CLIP; load them with
    `nada.load_clip(config, weights=weights)`."""
    return TINY_CLIP_DIR / "config.json", TINY_CLIP_DIR / "weights.safetensors"


def load_tiny_clip(device: str = "cpu"):
    """The bundled tiny CLIP, loaded as `nada.load_clip` does (named "tiny-clip")."""
    from ..clip import load_clip

    config, weights = tiny_clip_files()
    return load_clip(config, weights=weights, name="tiny-clip", device=device)
