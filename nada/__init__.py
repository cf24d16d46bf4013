"""comfyui-nada's engine: StyleGAN-NADA in plain PyTorch, usable from Python, the CLI and ComfyUI.

    import nada
    G = nada.load_generator("ffhq.pt")
    clip = nada.load_clip("ViT-B-32", pretrained="openai")
    d = nada.text_direction(clip, "photo", "pencil sketch")
    G2 = nada.adapt(G, clip, d, nada.AdaptConfig(steps=300))
    nada.save_generator(G2, "sketch.safetensors")

This package never imports ComfyUI and uses only relative imports, so it works both as the top-level
package `nada` and as a subpackage of the ComfyUI node pack.
"""

from .adapt import AdaptConfig, AdaptError, AdaptProgress, adapt
from .adapters import Adapter, AdapterError, apply_adapters, extract_adapter, load_adapter, save_adapter
from .clip import ClipEnsemble, ClipModel, clip_ensemble, load_clip
from .directions import Direction, combine_directions, image_direction, text_direction
from .errors import ConfigError, FormatError, NadaError
from .sample import blend_generators, interpolate, sample, seed_to_z
from .stylegan2 import Generator, GeneratorConfig
from .stylegan2.formats import export_rosinality, load_generator, save_generator

__version__ = "0.1.0"

__all__ = [
    "AdaptConfig",
    "AdaptError",
    "AdaptProgress",
    "Adapter",
    "AdapterError",
    "ClipEnsemble",
    "ClipModel",
    "ConfigError",
    "FormatError",
    "Direction",
    "Generator",
    "GeneratorConfig",
    "NadaError",
    "__version__",
    "adapt",
    "apply_adapters",
    "blend_generators",
    "clip_ensemble",
    "combine_directions",
    "export_rosinality",
    "extract_adapter",
    "image_direction",
    "interpolate",
    "load_adapter",
    "load_clip",
    "load_generator",
    "save_adapter",
    "sample",
    "save_generator",
    "seed_to_z",
    "text_direction",
]
