"""Adapter nodes: domains as small files applied to a base generator with a strength, like LoRAs.

An adapter (`nada.adapters.Adapter`) holds only the learned tensors of a lora or modulation
adaptation (or the differences of a full one). Files live in models/stylegan_adapters and
output/stylegan_adapters.
"""

from __future__ import annotations

import os

from nada import adapters as nada_adapters
from nada.adaptation import adapter_of

from . import comfy_bridge as bridge
from .types import ADAPTER, GENERATOR

CATEGORY = "StyleGAN-NADA/adapters"
STRENGTH = {"default": 1.0, "min": -4.0, "max": 4.0, "step": 0.05}


class LoadAdapter:
    NODE_ID = "NADA_LoadAdapter"
    DISPLAY_NAME = "Load NADA Adapter"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loads a NADA adapter (.safetensors) from models/stylegan_adapters or output/stylegan_adapters: "
        "the few learned tensors of a domain, to apply to the generator they were trained on."
    )
    SEARCH_ALIASES = ["nada lora", "stylegan lora", "domain adapter", "load adapter"]
    RETURN_TYPES = (ADAPTER,)
    RETURN_NAMES = ("adapter",)
    OUTPUT_TOOLTIPS = ("The adapter; connect it to Apply NADA Adapters.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "adapter_name": (
                    bridge.list_files(bridge.ADAPTER_FOLDER),
                    {"tooltip": "An adapter file in models/stylegan_adapters or output/stylegan_adapters."},
                ),
            }
        }

    @classmethod
    def IS_CHANGED(cls, adapter_name):
        return bridge.file_signature(bridge.ADAPTER_FOLDER, adapter_name)

    def load(self, adapter_name):
        try:
            adapter = nada_adapters.load_adapter(bridge.full_path(bridge.ADAPTER_FOLDER, adapter_name))
        except nada_adapters.AdapterError as e:
            raise bridge.NodeError(str(e)) from None
        bridge.send_text(describe(adapter))
        return (adapter,)


def describe(adapter) -> str:
    """One line for the node: the adapter's name, what it holds and the base it fits."""
    rank = adapter.metadata.get("rank")
    what = f"{adapter.kind} rank {rank}" if adapter.kind == "lora" and rank else adapter.kind
    base = adapter.base_fingerprint
    fits = f"; base {base[:12]}..." if isinstance(base, str) and base else ""
    return f"adapter {adapter.name!r}: {what}, {adapter.num_parameters():,} numbers{fits}"


class ApplyAdapters:
    NODE_ID = "NADA_ApplyAdapters"
    DISPLAY_NAME = "Apply NADA Adapters"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Applies up to three adapters to a base generator, each with a strength: 1 gives the adapted "
        "domain, 0 the base, values in between blend, negative values or values above 1 extrapolate. "
        "The base generator is not changed; only the tensors the adapters touch are new."
    )
    SEARCH_ALIASES = ["apply lora", "stack adapters", "domain strength", "nada adapter"]
    RETURN_TYPES = (GENERATOR,)
    RETURN_NAMES = ("generator",)
    OUTPUT_TOOLTIPS = ("The generator with the adapters applied.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        optional = {}
        for i in (1, 2, 3):
            optional[f"adapter_{i}"] = (ADAPTER, {"tooltip": f"Adapter {i} (optional)."})
            optional[f"strength_{i}"] = ("FLOAT", {**STRENGTH, "tooltip": f"Strength of adapter {i}."})
        return {
            "required": {
                "generator": (GENERATOR, {"tooltip": "The base generator the adapters were trained on."}),
                "check_base": (
                    "BOOLEAN",
                    {"default": True, "tooltip": "Refuse adapters trained on a different base generator."},
                ),
            },
            "optional": optional,
        }

    def apply(self, generator, check_base=True, **kw):
        pairs = [
            (kw[f"adapter_{i}"], float(kw.get(f"strength_{i}", 1.0)))
            for i in (1, 2, 3)
            if kw.get(f"adapter_{i}") is not None
        ]
        try:
            return (nada_adapters.apply_adapters(generator, pairs, check_base=check_base),)
        except nada_adapters.AdapterError as e:
            raise bridge.NodeError(str(e)) from None


class SaveAdapter:
    NODE_ID = "NADA_SaveAdapter"
    DISPLAY_NAME = "Save NADA Adapter"
    CATEGORY = CATEGORY
    OUTPUT_NODE = True
    DESCRIPTION = (
        "Saves the adapter of a generator adapted with parameterization lora or modulation (kilobytes "
        "instead of the full generator) to output/stylegan_adapters. With a base generator connected, "
        "it extracts an adapter from any full adaptation (also a published StyleGAN-NADA checkpoint): "
        "the exact differences, a rank-N adapter, or the smallest rank within max_error. Never "
        "overwrites a file."
    )
    SEARCH_ALIASES = ["save lora", "export adapter", "extract adapter"]
    RETURN_TYPES = (ADAPTER,)
    RETURN_NAMES = ("adapter",)
    OUTPUT_TOOLTIPS = ("The saved adapter.",)
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": (
                    GENERATOR,
                    {"tooltip": "An adapted generator (from NADA Adapt or a loaded full checkpoint)."},
                ),
                "filename_prefix": (
                    "STRING",
                    {"default": "nada_adapter", "tooltip": "File name prefix; a counter is added."},
                ),
                "half_precision": (
                    "BOOLEAN",
                    {"default": True, "tooltip": "Store fp16 (half the size; loads as fp32)."},
                ),
            },
            "optional": {
                "base_generator": (
                    GENERATOR,
                    {
                        "tooltip": "The generator it was adapted from, to extract an adapter "
                        "when the generator carries none."
                    },
                ),
                "rank": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 512,
                        "step": 1,
                        "tooltip": "Extraction only: 0 = exact differences (or the rank max_error picks), "
                        "N = weight factors of rank N plus the exact change of every other tensor.",
                    },
                ),
                "max_error": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.001,
                        "tooltip": "Extraction only: > 0 picks the smallest rank (up to rank, if set) "
                        "whose image error, the mean |pixel difference| in [-1, 1] over "
                        "seeds 0-3 at truncation 0.7, is at most this. 0.01 = 1.3/255.",
                    },
                ),
                "name": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "Adapter name shown in messages and the loader "
                        "(default: the target prompt, else filename_prefix).",
                    },
                ),
            },
        }

    def save(self, generator, filename_prefix, half_precision, base_generator=None, rank=0, max_error=0.0, name=""):
        import torch

        adapter = adapter_of(generator)
        extracted = adapter is None
        try:
            if extracted:
                if base_generator is None:
                    raise bridge.NodeError(
                        "this generator carries no adapter (it was adapted with parameterization 'full' or "
                        "loaded from a file): connect base_generator to extract one, or adapt with lora/modulation"
                    )
                adapter = nada_adapters.extract_adapter(base_generator, generator, rank=rank or None,
                                                        max_error=max_error or None)  # fmt: skip
            else:  # the node's outputs are cached: name a copy, never the run's own adapter
                adapter = nada_adapters.Adapter(adapter.kind, adapter.tensors, dict(adapter.metadata))
        except nada_adapters.AdapterError as e:
            raise bridge.NodeError(str(e)) from None
        if name.strip() or not adapter.name:
            adapter.metadata["name"] = name.strip() or filename_prefix
        folder = os.path.join(bridge.output_directory(), bridge.ADAPTER_FOLDER)
        path = bridge.next_free_path(folder, filename_prefix, ".safetensors")
        nada_adapters.save_adapter(adapter, path, dtype=torch.float16 if half_precision else None)
        rel = os.path.relpath(path, bridge.output_directory())
        text = f"saved {rel} ({os.path.getsize(path) / 1024:.1f} KB): {describe(adapter)}"
        if extracted:
            reference = nada_adapters.render_seeds(generator)
            error = nada_adapters.image_error(base_generator, nada_adapters.load_adapter(path), reference)
            text += f"; image error {error:.5f} (mean |pixel difference| in [-1, 1], seeds 0-3)"
        return {"ui": {"text": [text]}, "result": (adapter,)}


NADA_NODES = [LoadAdapter, ApplyAdapters, SaveAdapter]
