"""comfyui-nada's engine: StyleGAN-NADA in plain PyTorch, usable from Python, the CLI and ComfyUI.

This package never imports ComfyUI and uses only relative imports, so it works both as the top-level
package `nada` and as a subpackage of the ComfyUI node pack.
"""

from .errors import ConfigError, NadaError
from .stylegan2 import Generator, GeneratorConfig

__version__ = "0.1.0"

__all__ = ["ConfigError", "Generator", "GeneratorConfig", "NadaError", "__version__"]
