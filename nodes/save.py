"""Save Generator: write a generator to output/stylegan/ (where the loader also looks)."""

from __future__ import annotations

import os

from nada.stylegan2 import formats as nada_formats

from . import comfy_bridge as bridge
from .types import GENERATOR

FORMATS = {
    "safetensors": ".safetensors",
    "rosinality .pt": ".pt",
}


class SaveGenerator:
    NODE_ID = "NADA_SaveGenerator"
    DISPLAY_NAME = "Save Generator (StyleGAN)"
    CATEGORY = "StyleGAN-NADA/models"
    DESCRIPTION = (
        "Saves a generator to output/stylegan/<prefix>_00001.safetensors with its architecture and "
        "provenance (base model, prompts, steps, trained layers) in the metadata; the file shows up in "
        "Load StyleGAN2 at once. 'rosinality .pt' exports a plain state dict for other StyleGAN2 tools."
    )
    SEARCH_ALIASES = ["export stylegan", "save gan", "save adapted model", "export rosinality"]
    OUTPUT_NODE = True
    RETURN_TYPES = ()
    RETURN_NAMES = ()
    OUTPUT_TOOLTIPS = ()
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": (GENERATOR, {"tooltip": "The generator to save (e.g. from NADA Adapt)."}),
                "filename_prefix": (
                    "STRING",
                    {
                        "default": "nada/adapted",
                        "tooltip": (
                            "Name under output/stylegan/; a counter is appended so nothing is overwritten. "
                            "Subfolders are allowed."
                        ),
                    },
                ),
                "format": (
                    list(FORMATS),
                    {
                        "default": "safetensors",
                        "tooltip": (
                            "safetensors: our format, loads back with all metadata. rosinality .pt: a g_ema state "
                            "dict for rosinality's stylegan2-pytorch and tools built on it."
                        ),
                    },
                ),
            }
        }

    def save(self, generator, filename_prefix, format):
        folder = bridge.stylegan_output_directory()
        path = bridge.next_free_path(folder, filename_prefix, FORMATS[format])
        if format == "safetensors":
            nada_formats.save_generator(generator, path)
        else:
            nada_formats.export_rosinality(generator, path)
        rel = os.path.relpath(path, folder).replace(os.sep, "/")
        bridge.send_text(f"saved output/stylegan/{rel}")
        return {"ui": {"nada_saved": [rel]}, "result": ()}


NADA_NODES = [SaveGenerator]
