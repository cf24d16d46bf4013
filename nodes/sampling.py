"""Sampling nodes: seeds -> latents -> IMAGE batches, latent interpolation, weight blending.

A NADA_LATENT is a dict {"ws": [B, num_ws, w_dim] float32 on the CPU, "seeds": list[int] | None}:
the W+ latents plus the seeds they came from (so that noise_mode "random" draws each seed's own
noise). A plain W+ tensor [B, num_ws, w_dim] or [num_ws, w_dim] (another pack's latent) is accepted
wherever a latent goes in: its shape says what it is. Rendering one latent with the original and
with the adapted generator gives a before/after pair of the same face.
"""

from __future__ import annotations

import torch

from nada import devices as nada_devices
from nada import images as nada_images
from nada import sampling as nada_sampling
from nada.adaptation import memory as nada_memory

from . import comfy_bridge as bridge
from .types import GENERATOR, LATENT

CATEGORY = "StyleGAN-NADA/sampling"
NOISE_MODES = ["const", "random", "none"]
SEEDS_TOOLTIP = "Seeds to render, e.g. '0-7' or '1,5,9'. Seed N is the same image everywhere (nodes, CLI, Python)."
NOISE_TOOLTIP = (
    "Per-pixel noise: 'const' uses the checkpoint's stored noise (deterministic), 'random' draws each "
    "seed's own noise, 'none' turns it off."
)
PSI_TOOLTIP = "Truncation: 1 = the full variety, lower = closer to the average image (0.7 is the usual preview)."
RENDER_ADVICE = "unload other models (ComfyUI's Unload Models button), or start ComfyUI with --cpu"
CLASS_TOOLTIP = "Class for conditional generators (0..classes-1); -1 for unconditional ones."


def _class_index(value: int) -> int | None:
    return None if value < 0 else value


def _to_image(x: torch.Tensor) -> torch.Tensor:
    return nada_images.to_hwc(x).to(bridge.intermediate_device())


def _latent_ws(latent) -> torch.Tensor:
    """The W+ tensor of a STYLEGAN_LATENT dict or of a plain tensor ([num_ws, w_dim] gets a batch axis)."""
    ws = latent.get("ws") if isinstance(latent, dict) else latent
    if not isinstance(ws, torch.Tensor):
        raise bridge.NodeError(
            f"expected a StyleGAN latent (W+ tensor [batch, num_ws, w_dim]), got {type(ws).__name__}"
        )
    return ws[None] if ws.ndim == 2 else ws


def _latent_seeds(latent) -> list[int] | None:
    return latent.get("seeds") if isinstance(latent, dict) else None


def _render_setup(generator):
    """(generator on the run device, images per chunk): room is freed for a full chunk; when less is free
    the chunks get smaller instead of running out of memory (a warning when not even one image fits)."""
    device = bridge.torch_device()
    largest = nada_sampling.RENDER_BATCH
    free = bridge.make_room(nada_memory.render_bytes(generator, largest), device,
                            minimum=nada_memory.render_bytes(generator, 1), advice=RENDER_ADVICE)  # fmt: skip
    return nada_devices.on_device(generator, device), nada_memory.render_batch(generator, free, largest)


def _render(fn, *args, **kwargs) -> torch.Tensor:
    """Run a render with progress and cancel between chunks, and name the fix when memory runs out."""
    try:
        return fn(*args, progress=bridge.chunk_progress(), **kwargs)
    except RuntimeError as e:
        if not nada_devices.is_out_of_memory(e):
            raise
        raise bridge.NodeError(f"out of memory while rendering: {RENDER_ADVICE}") from None


def _check_latent(generator, latent) -> torch.Tensor:
    ws = _latent_ws(latent)
    num_ws, w_dim = generator.config.num_ws, generator.config.w_dim
    if ws.ndim != 3 or ws.shape[1:] != (num_ws, w_dim):
        raise bridge.NodeError(
            f"this latent has shape {list(ws.shape)} but the generator expects [batch, {num_ws}, {w_dim}]: "
            f"make the latent with Latent from Seed from the same generator (or the one it was adapted from)"
        )
    return ws


class LatentFromSeed:
    NODE_ID = "NADA_LatentFromSeed"
    DISPLAY_NAME = "Latent from Seed (StyleGAN)"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Maps seeds to W+ latents with the generator's mapping network and truncation. Render the same "
        "latents with the original and the adapted generator to compare them side by side."
    )
    SEARCH_ALIASES = ["stylegan latent", "seed to w", "w plus", "truncation"]
    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("W+ latents, one per seed, with their seeds.",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": (GENERATOR, {"tooltip": "The generator whose mapping network makes the latents."}),
                "seeds": ("STRING", {"default": "0-3", "tooltip": SEEDS_TOOLTIP}),
                "truncation_psi": (
                    "FLOAT",
                    {"default": 0.7, "min": -2.0, "max": 2.0, "step": 0.05, "tooltip": PSI_TOOLTIP},
                ),
            },
            "optional": {
                "class_index": ("INT", {"default": -1, "min": -1, "max": 100000, "step": 1, "tooltip": CLASS_TOOLTIP}),
            },
        }

    def make(self, generator, seeds, truncation_psi, class_index=-1):
        seed_list = nada_sampling.parse_seeds(seeds)
        z = nada_sampling.seeds_to_z(seed_list, generator.config.z_dim)
        ws = nada_sampling.z_to_w(generator, z, truncation_psi, class_index=_class_index(class_index))
        return ({"ws": ws.float().cpu(), "seeds": seed_list},)


class RenderLatent:
    NODE_ID = "NADA_RenderLatent"
    DISPLAY_NAME = "Render Latent (StyleGAN)"
    CATEGORY = CATEGORY
    DESCRIPTION = "Renders W+ latents with a generator into an IMAGE batch that any ComfyUI node accepts."
    SEARCH_ALIASES = ["stylegan render", "synthesis", "decode latent", "w to image"]
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The images, [batch, height, width, 3] in 0..1.",)
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": (GENERATOR, {"tooltip": "The generator to render with (original or adapted)."}),
                "latent": (LATENT, {"tooltip": "W+ latents from Latent from Seed or Interpolate Latents."}),
                "noise_mode": (NOISE_MODES, {"default": "const", "tooltip": NOISE_TOOLTIP}),
            }
        }

    def render(self, generator, latent, noise_mode):
        ws = _check_latent(generator, latent)
        G, chunk = _render_setup(generator)
        seeds = _latent_seeds(latent)
        seeds = seeds if seeds is not None and len(seeds) == ws.shape[0] else None
        return (_to_image(_render(nada_sampling.render, G, ws, noise_mode=noise_mode, seeds=seeds, batch_size=chunk)),)


class Sample:
    NODE_ID = "NADA_Sample"
    DISPLAY_NAME = "Sample (StyleGAN)"
    CATEGORY = CATEGORY
    DESCRIPTION = "Renders the given seeds with a generator in one step (Latent from Seed + Render Latent)."
    SEARCH_ALIASES = ["stylegan sample", "generate faces", "stylegan generate"]
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The images, [batch, height, width, 3] in 0..1.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        spec = LatentFromSeed.INPUT_TYPES()
        spec["required"]["generator"] = (GENERATOR, {"tooltip": "The generator to sample from."})
        spec["required"]["noise_mode"] = (NOISE_MODES, {"default": "const", "tooltip": NOISE_TOOLTIP})
        return spec

    def sample(self, generator, seeds, truncation_psi, noise_mode, class_index=-1):
        G, chunk = _render_setup(generator)
        x = _render(nada_sampling.sample, G, seeds, truncation_psi=truncation_psi, noise_mode=noise_mode,
                    class_index=_class_index(class_index), batch_size=chunk)  # fmt: skip
        return (_to_image(x),)


class InterpolateLatents:
    NODE_ID = "NADA_InterpolateLatents"
    DISPLAY_NAME = "Interpolate Latents (StyleGAN)"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Makes a smooth path through the latents (in batch order) with the given number of frames, for "
        "video nodes: render the result and feed the IMAGE batch to a video combine / save node."
    )
    SEARCH_ALIASES = ["latent walk", "interpolation", "stylegan video", "morph"]
    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("One latent per frame.",)
    FUNCTION = "interpolate"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "latent": (LATENT, {"tooltip": "Keyframe latents (at least two), visited in batch order."}),
                "frames": (
                    "INT",
                    {
                        "default": 24,
                        "min": 2,
                        "max": 10000,
                        "step": 1,
                        "tooltip": "Number of frames in the output, ends included.",
                    },
                ),
                "mode": (
                    ["lerp", "slerp"],
                    {"default": "lerp", "tooltip": "lerp: straight lines in W+ (usual); slerp: along the sphere."},
                ),
                "loop": (
                    "BOOLEAN",
                    {"default": False, "tooltip": "Also go from the last keyframe back to the first (seamless loop)."},
                ),
            }
        }

    def interpolate(self, latent, frames, mode, loop):
        ws = nada_sampling.interpolate(_latent_ws(latent), frames, mode=mode, loop=loop)
        # Interpolated frames are between seeds: they use const noise, so they have no seeds of their own.
        return ({"ws": ws, "seeds": None},)


class BlendGenerators:
    NODE_ID = "NADA_BlendGenerators"
    DISPLAY_NAME = "Blend Generators (StyleGAN)"
    CATEGORY = "StyleGAN-NADA/models"
    DESCRIPTION = (
        "Interpolates the weights of two generators of the same architecture, usually the original and "
        "its adaptation: 0 = original, 1 = adapted, values in between tone the new style down, above 1 "
        "exaggerate it."
    )
    SEARCH_ALIASES = ["weight interpolation", "model merge", "stylegan blend", "style strength"]
    RETURN_TYPES = (GENERATOR,)
    RETURN_NAMES = ("generator",)
    OUTPUT_TOOLTIPS = ("A new generator; neither input is changed.",)
    FUNCTION = "blend"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator_a": (GENERATOR, {"tooltip": "The generator at alpha 0 (usually the original)."}),
                "generator_b": (GENERATOR, {"tooltip": "The generator at alpha 1 (usually the adapted one)."}),
                "alpha": (
                    "FLOAT",
                    {
                        "default": 0.5,
                        "min": -1.0,
                        "max": 2.0,
                        "step": 0.05,
                        "tooltip": "How far from A toward B; outside 0..1 extrapolates.",
                    },
                ),
            }
        }

    def blend(self, generator_a, generator_b, alpha):
        return (nada_sampling.blend_generators(generator_a, generator_b, alpha),)


NADA_NODES = [LatentFromSeed, Sample, RenderLatent, InterpolateLatents, BlendGenerators]
