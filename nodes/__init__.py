"""The ComfyUI nodes of comfyui-nada: thin wrappers over the `nada` engine, one module per family.

Node ids carry the `NADA_` prefix and never change once released; display names may.
"""

from __future__ import annotations

from . import comfy_bridge
from .directions import NADA_NODES as _DIRECTIONS
from .loaders import NADA_NODES as _LOADERS
from .sampling import NADA_NODES as _SAMPLING

comfy_bridge.register_folders()

_ALL = (*_LOADERS, *_DIRECTIONS, *_SAMPLING)

NODE_CLASS_MAPPINGS = {cls.NODE_ID: cls for cls in _ALL}
NODE_DISPLAY_NAME_MAPPINGS = {cls.NODE_ID: cls.DISPLAY_NAME for cls in _ALL}
