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

import sys as _sys
import types as _types

from . import adapt, sample
from .adapt import AdaptConfig, AdaptError, AdaptProgress
from .adapters import Adapter, AdapterError, apply_adapters, extract_adapter, load_adapter, save_adapter
from .clip import ClipEnsemble, ClipModel, ClipSpec, as_ensemble, clip_ensemble, load_clip, load_ensemble
from .directions import Direction, combine_directions, image_direction, text_direction
from .errors import ConfigError, FormatError, NadaError
from .sample import blend_generators, interpolate, seed_to_z
from .stylegan2 import Generator, GeneratorConfig
from .stylegan2.formats import export_rosinality, load_generator, save_generator
from .stylegan3 import StyleGAN3Config, StyleGAN3Generator

__version__ = "0.1.0"


class _CallableModule(_types.ModuleType):
    """`nada.adapt(...)` and `nada.sample(...)` call the function of the same name in the module,
    while `nada.adapt.AdaptConfig`, `from nada.adapt import ...` keep working: one name, no shadowing."""

    def __call__(self, *args, **kwargs):
        return getattr(self, self.__name__.rsplit(".", 1)[1])(*args, **kwargs)


for _module in (adapt, sample):
    _sys.modules[_module.__name__].__class__ = _CallableModule

__all__ = [
    "AdaptConfig",
    "AdaptError",
    "AdaptProgress",
    "Adapter",
    "AdapterError",
    "ClipEnsemble",
    "ClipModel",
    "ClipSpec",
    "ConfigError",
    "FormatError",
    "Direction",
    "Generator",
    "GeneratorConfig",
    "NadaError",
    "StyleGAN3Config",
    "StyleGAN3Generator",
    "__version__",
    "adapt",
    "apply_adapters",
    "as_ensemble",
    "blend_generators",
    "clip_ensemble",
    "combine_directions",
    "export_rosinality",
    "extract_adapter",
    "image_direction",
    "interpolate",
    "load_adapter",
    "load_clip",
    "load_ensemble",
    "load_generator",
    "save_adapter",
    "sample",
    "save_generator",
    "seed_to_z",
    "text_direction",
]
