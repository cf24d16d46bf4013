"""The ComfyUI nodes of comfyui-nada: thin wrappers over the `nada` engine, one module per family.

Node ids carry the `NADA_` prefix and never change once released; display names may.
"""

from __future__ import annotations

from . import engine  # noqa: F401  (first: makes the engine importable as `nada`, see engine.py)

# isort: split
from . import comfy_bridge
from .adapt import NADA_NODES as _ADAPT
from .adapters import NADA_NODES as _ADAPTERS
from .directions import NADA_NODES as _DIRECTIONS
from .inversion import NADA_NODES as _INVERSION
from .loaders import NADA_NODES as _LOADERS
from .projection import NADA_NODES as _PROJECTION
from .sampling import NADA_NODES as _SAMPLING
from .save import NADA_NODES as _SAVE

comfy_bridge.register_folders()

_ALL = (*_LOADERS, *_DIRECTIONS, *_ADAPT, *_SAMPLING, *_SAVE, *_ADAPTERS, *_INVERSION, *_PROJECTION)

NODE_CLASS_MAPPINGS = {cls.NODE_ID: cls for cls in _ALL}
NODE_DISPLAY_NAME_MAPPINGS = {cls.NODE_ID: cls.DISPLAY_NAME for cls in _ALL}
