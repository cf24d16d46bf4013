"""The project's own small demo world and models: a synthetic shapes world and a tiny CLIP trained on it."""

from __future__ import annotations

from pathlib import Path

# The bundled models sit in ComfyUI-style model folders, <folder>/nada-demo/<file>: the node pack adds
# ASSETS_DIR/<folder> as a search path of each folder, and the loaders list "nada-demo/<file>".
ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
DEMO_SUBFOLDER = "nada-demo"
DEMO_GENERATOR_DIR = ASSETS_DIR / "stylegan" / DEMO_SUBFOLDER
DEMO_GENERATOR = DEMO_GENERATOR_DIR / "shapes-32px.safetensors"
TINY_CLIP_DIR = ASSETS_DIR / "open_clip" / DEMO_SUBFOLDER


def tiny_clip_files(folder: Path = TINY_CLIP_DIR) -> tuple[Path, Path]:
    """(model config JSON, weights) of the tiny CLIP in `folder` (default: the bundled one); load them with
    `nada.load_clip(config, weights=weights)`. The config is named after the weights, as the Load CLIP
    node finds a model config next to its weights file."""
    return folder / "tiny-clip.json", folder / "tiny-clip.safetensors"


def load_tiny_clip(device: str = "cpu"):
    """The bundled tiny CLIP, loaded as `nada.load_clip` does (named "tiny-clip")."""
    from ..clip import load_clip

    config, weights = tiny_clip_files()
    return load_clip(config, weights=weights, name="tiny-clip", device=device)
