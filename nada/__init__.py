"""comfyui-nada's engine: StyleGAN-NADA in plain PyTorch, usable from Python, the CLI and ComfyUI.

This package never imports ComfyUI and uses only relative imports, so it works both as the top-level
package `nada` and as a subpackage of the ComfyUI node pack.
"""

from .clip import ClipEnsemble, ClipModel, ClipSpec, as_ensemble, clip_ensemble, load_clip, load_ensemble
from .directions import Direction, combine_directions, image_direction, text_direction
from .errors import ClipError, ConfigError, DirectionError, NadaError
from .stylegan2 import Generator, GeneratorConfig

__version__ = "0.1.0"

__all__ = [
    "ClipEnsemble", "ClipError", "ClipModel", "ClipSpec", "ConfigError", "Direction", "DirectionError", "Generator",
    "GeneratorConfig", "NadaError", "__version__", "as_ensemble", "clip_ensemble", "combine_directions",
    "image_direction", "load_clip", "load_ensemble", "text_direction",
]  # fmt: skip
