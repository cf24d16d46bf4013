"""Loader nodes: StyleGAN2 / StyleGAN3 generators from models/stylegan (and output/stylegan), CLIP models."""

from __future__ import annotations

from nada.demo import DEMO_SUBFOLDER
from nada.stylegan2 import formats as nada_formats

from . import comfy_bridge as bridge
from .adapt import AUTOSAVE_DIR
from .types import GENERATOR

CATEGORY = "StyleGAN-NADA/loaders"


def users_files_first(names: list[str]) -> list[str]:
    """The user's own files, then the pack's demo models, then the automatic saves of NADA Adapt (there
    can be many of those)."""
    return sorted(names, key=lambda n: (n.startswith(DEMO_SUBFOLDER + "/") + 2 * n.startswith(AUTOSAVE_DIR + "/"), n))


class LoadStyleGAN2:
    NODE_ID = "NADA_LoadStyleGAN2"
    DISPLAY_NAME = "Load StyleGAN (2 / 3)"  # the id keeps its StyleGAN2 name so saved workflows load
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loads a StyleGAN2 or StyleGAN3 (-T / -R) generator from models/stylegan or output/stylegan: "
        "rosinality .pt, NVIDIA .pkl (StyleGAN2, StyleGAN2-ADA, StyleGAN3, TensorFlow; read without running "
        "any code from the file) or our .safetensors. The architecture is inferred from the file."
    )
    SEARCH_ALIASES = ["stylegan", "load gan", "stylegan2 loader", "stylegan3 loader", "ffhq", "afhq", "metfaces"]
    RETURN_TYPES = (GENERATOR,)
    RETURN_NAMES = ("generator",)
    OUTPUT_TOOLTIPS = ("The generator, on the CPU in eval mode; downstream nodes never modify it.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_name": (
                    users_files_first(bridge.list_files(bridge.STYLEGAN_FOLDER)),
                    {"tooltip": "A file in models/stylegan or output/stylegan (.pt, .pkl, .safetensors)."},
                ),
            }
        }

    @classmethod
    def IS_CHANGED(cls, model_name):
        return bridge.file_signature(bridge.STYLEGAN_FOLDER, model_name)

    def load(self, model_name):
        path = bridge.full_path(bridge.STYLEGAN_FOLDER, model_name)
        return (nada_formats.load_generator(path),)


NADA_NODES = [LoadStyleGAN2]
