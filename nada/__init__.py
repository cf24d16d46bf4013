"""comfyui-nada's engine: StyleGAN-NADA in plain PyTorch, usable from Python, the CLI and ComfyUI.

    import nada
    G = nada.load_generator("ffhq.pt")
    clip = nada.load_clip("ViT-B-32", pretrained="openai")
    d = nada.text_direction(clip, "photo", "pencil sketch")
    result = nada.adapt(G, clip, d, nada.AdaptConfig(steps=300))
    nada.save_generator(result.generator, "sketch.safetensors")

This package never imports ComfyUI and uses only relative imports. It has one import identity, the
top-level package `nada`: the node pack loads it under that name too (see `nodes/engine.py`), so a
generator made by a node is a `nada.Generator` for tests and scripts as well.

No public function shares its name with a module of this package (the run lives in `nada.adaptation`,
the sampling helpers in `nada.sampling`), so `nada.adapt` and `nada.sample` are always the functions.
"""

from . import runs
from .adaptation import AdaptConfig, AdaptError, AdaptProgress, AdaptResult, adapt, adapter_of
from .adapters import Adapter, AdapterError, apply_adapters, extract_adapter, load_adapter, save_adapter
from .clip import ClipEnsemble, ClipModel, ClipSpec, as_ensemble, clip_ensemble, load_clip, load_ensemble
from .directions import Direction, combine_directions, image_direction, text_direction
from .errors import ConfigError, FormatError, InversionError, NadaError
from .inversion import Encoder, InversionResult, invert, load_encoder
from .inversion.project import project
from .sampling import blend_generators, interpolate, render, sample, seed_to_z
from .stylegan2 import Generator, GeneratorConfig
from .stylegan2.formats import export_rosinality, load_generator, save_generator
from .stylegan3 import StyleGAN3Config, StyleGAN3Generator
from .version import __version__

__all__ = [
    "AdaptConfig",
    "AdaptError",
    "AdaptProgress",
    "AdaptResult",
    "Adapter",
    "AdapterError",
    "ClipEnsemble",
    "ClipModel",
    "ClipSpec",
    "ConfigError",
    "Direction",
    "FormatError",
    "Generator",
    "GeneratorConfig",
    "Encoder",
    "InversionError",
    "InversionResult",
    "NadaError",
    "StyleGAN3Config",
    "StyleGAN3Generator",
    "__version__",
    "adapt",
    "adapter_of",
    "apply_adapters",
    "as_ensemble",
    "blend_generators",
    "clip_ensemble",
    "combine_directions",
    "export_rosinality",
    "extract_adapter",
    "image_direction",
    "interpolate",
    "invert",
    "load_adapter",
    "load_clip",
    "load_encoder",
    "load_ensemble",
    "load_generator",
    "project",
    "render",
    "runs",
    "sample",
    "save_adapter",
    "save_generator",
    "seed_to_z",
    "text_direction",
]
