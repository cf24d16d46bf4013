"""CLIP nodes: load a CLIP model, combine models into an ensemble, and make CLIP-space directions."""

from __future__ import annotations

from nada import clip as nada_clip
from nada import devices as nada_devices
from nada import directions as nada_directions
from nada import errors as nada_errors
from nada import images as nada_images
from nada.adaptation import memory as nada_memory

from . import comfy_bridge as bridge
from .types import CLIP, DIRECTION, GENERATOR

CATEGORY = "StyleGAN-NADA/clip"
PRETRAINED_CHOICE = "(pretrained tag)"
TEMPLATE_CHOICES = ["imagenet", "none", "custom"]


def _engine_images(images):
    """ComfyUI IMAGE [B, H, W, C] in 0..1 -> [B, 3, H, W] in [-1, 1] (the engine's image layout)."""
    try:
        return nada_images.from_hwc(images)
    except nada_errors.NadaError as e:
        raise bridge.NodeError(str(e)) from None


def clip_on_run_device(clip, extra_bytes: int = 0):
    """The CLIP (ensemble) on the run device in the precision the policy gives there (fp16 on CUDA for
    auto, `ClipModel.on`), after freeing room for its weights plus `extra_bytes`: directions are made
    where and how the training later runs, as on the command line."""
    device = bridge.torch_device()
    weights = sum(w for w, _ in nada_memory.clip_bytes(clip, device))  # in the precision it runs in there
    bridge.make_room(weights + extra_bytes, device)
    return nada_clip.as_ensemble(clip).on(device)


def weighted_inputs(name: str, type_name: str, tips: tuple[str, str, str], lowest: float, weight_tip: str) -> dict:
    """INPUT_TYPES of a node that mixes two required and one optional weighted input (name_1, weight_1, ...)."""

    def weight(n: int):
        return ("FLOAT", {"default": 1.0, "min": lowest, "max": 10.0, "step": 0.05, "tooltip": weight_tip.format(n)})

    return {
        "required": {
            f"{name}_1": (type_name, {"tooltip": tips[0]}),
            "weight_1": weight(1),
            f"{name}_2": (type_name, {"tooltip": tips[1]}),
            "weight_2": weight(2),
        },
        "optional": {f"{name}_3": (type_name, {"tooltip": tips[2]}), "weight_3": weight(3)},
    }


class LoadCLIP:
    NODE_ID = "NADA_LoadCLIP"
    DISPLAY_NAME = "Load CLIP (NADA)"
    CATEGORY = "StyleGAN-NADA/loaders"
    DESCRIPTION = (
        "Loads an open_clip model for the NADA losses: an architecture name plus either a pretrained tag "
        "(downloaded once, needs internet) or a weights file from models/open_clip. A weights file with a "
        "JSON file of the same name next to it is loaded with that model config."
    )
    SEARCH_ALIASES = ["open_clip", "clip loader", "vit-b-32", "nada clip"]
    RETURN_TYPES = (CLIP,)
    RETURN_NAMES = ("clip",)
    OUTPUT_TOOLTIPS = ("The CLIP model, frozen; plug into Encode Prompt Pair, Image Direction and NADA Adapt.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "architecture": (
                    "STRING",
                    {
                        "default": "ViT-B-32",
                        "tooltip": (
                            "open_clip architecture, e.g. ViT-B-32 or ViT-B-16 (the paper uses both together)."
                        ),
                    },
                ),
                "weights": (
                    [PRETRAINED_CHOICE, *bridge.list_files(bridge.OPEN_CLIP_FOLDER)],
                    {
                        "default": PRETRAINED_CHOICE,
                        "tooltip": "A weights file in models/open_clip, or the pretrained tag below.",
                    },
                ),
                "pretrained": (
                    "STRING",
                    {
                        "default": "openai",
                        "tooltip": (
                            "open_clip pretrained tag used when weights is '(pretrained tag)', e.g. openai or "
                            "laion2b_s34b_b79k."
                        ),
                    },
                ),
            },
            "optional": {
                "precision": (
                    list(nada_clip.PRECISIONS),
                    {
                        "default": "auto",
                        "tooltip": (
                            "auto: fp16 on a CUDA GPU (LayerNorm in fp32, as open_clip and the paper's code), fp32 on "
                            "the CPU; decided where the model runs, the same as the command line. fp32/fp16/bf16 force "
                            "one everywhere."
                        ),
                    },
                ),
            },
        }

    def load(self, architecture, weights, pretrained, precision="auto"):
        # The model rests on the offload device; `ClipModel.on` casts it to `precision`'s choice for the
        # device it runs on (fp16 on CUDA for auto), the same function the CLI's models go through.
        if weights == PRETRAINED_CHOICE:
            clip = nada_clip.load_clip(
                architecture.strip(), pretrained.strip() or None, device=bridge.offload_device(), precision=precision
            )
        else:
            path = bridge.full_path(bridge.OPEN_CLIP_FOLDER, weights)
            clip = nada_clip.load_clip(
                architecture.strip(),
                weights=path,
                config=bridge.sibling_json(path),
                device=bridge.offload_device(),
                precision=precision,
            )
        return (clip,)


class CLIPEnsemble:
    NODE_ID = "NADA_CLIPEnsemble"
    DISPLAY_NAME = "CLIP Ensemble (NADA)"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Combines CLIP models into a weighted ensemble; each model's loss counts with its weight. The "
        "paper pairs ViT-B/32 and ViT-B/16 with weight 1 each. A model with weight 0 is left out."
    )
    SEARCH_ALIASES = ["multiple clip", "clip combine", "clip weights"]
    RETURN_TYPES = (CLIP,)
    RETURN_NAMES = ("clip",)
    OUTPUT_TOOLTIPS = ("The ensemble; use it for the direction and for NADA Adapt.",)
    FUNCTION = "combine"

    @classmethod
    def INPUT_TYPES(cls):
        return weighted_inputs(
            "clip",
            CLIP,
            ("First CLIP model (or ensemble).", "Second CLIP model (or ensemble).", "Optional third CLIP model."),
            0.0,
            "Weight of CLIP {} in the loss (0 = leave it out).",
        )

    def combine(self, clip_1, weight_1, clip_2, weight_2, clip_3=None, weight_3=1.0):
        parts = [(clip_1, weight_1), (clip_2, weight_2)]
        if clip_3 is not None:
            parts.append((clip_3, weight_3))
        return (nada_clip.clip_ensemble(parts),)


class EncodePromptPair:
    NODE_ID = "NADA_EncodePromptPair"
    DISPLAY_NAME = "Encode Prompt Pair (NADA)"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Makes the CLIP direction from a source text to a target text, e.g. 'photo' -> 'pencil sketch'. "
        "Describe the domain, not a change: 'photo' / 'sketch', not 'make it a sketch'."
    )
    SEARCH_ALIASES = ["text direction", "prompt pair", "source target text", "nada prompt"]
    RETURN_TYPES = (DIRECTION,)
    RETURN_NAMES = ("direction",)
    OUTPUT_TOOLTIPS = ("The normalised text direction for every CLIP model of the ensemble.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": (CLIP, {"tooltip": "The CLIP model or ensemble (the same one NADA Adapt uses)."}),
                "source": ("STRING", {"default": "photo", "tooltip": "What the generator makes now, e.g. 'photo'."}),
                "target": (
                    "STRING",
                    {"default": "pencil sketch", "tooltip": "What it should make, e.g. 'pencil sketch'."},
                ),
                "templates": (
                    TEMPLATE_CHOICES,
                    {
                        "default": "imagenet",
                        "tooltip": (
                            "imagenet: average over CLIP's 79 ImageNet prompt templates (the paper); none: the "
                            "texts as typed; custom: your templates below."
                        ),
                    },
                ),
            },
            "optional": {
                "custom_templates": (
                    "STRING",
                    {
                        "default": "a photo of a {}.\na drawing of a {}.",
                        "multiline": True,
                        "tooltip": "One template per line with {} for the text (used when templates is 'custom').",
                    },
                ),
            },
        }

    def encode(self, clip, source, target, templates, custom_templates=""):
        if templates == "custom":
            chosen = [t.strip() for t in custom_templates.splitlines() if t.strip()]
            if not chosen or any("{}" not in t for t in chosen):
                raise bridge.NodeError("custom templates: write one per line, each with {} where the text goes")
        else:
            chosen = templates
        return (nada_directions.text_direction(clip_on_run_device(clip), source, target, templates=chosen),)


class ImageDirection:
    NODE_ID = "NADA_ImageDirection"
    DISPLAY_NAME = "Image Direction (NADA)"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Makes the CLIP direction toward a few target images (a style or a domain), from source images or, "
        "without them, from samples of the generator."
    )
    SEARCH_ALIASES = ["image guided", "one shot", "few shot", "style images", "reference image"]
    RETURN_TYPES = (DIRECTION,)
    RETURN_NAMES = ("direction",)
    OUTPUT_TOOLTIPS = ("The direction from the source domain to the target images.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": (CLIP, {"tooltip": "The CLIP model or ensemble (the same one NADA Adapt uses)."}),
                "target_images": ("IMAGE", {"tooltip": "One or more images of the target domain or style."}),
            },
            "optional": {
                "source_images": (
                    "IMAGE",
                    {"tooltip": "Images of the source domain; if absent, generator samples are used."},
                ),
                "generator": (GENERATOR, {"tooltip": "Source of samples when no source images are given."}),
                "source_samples": (
                    "INT",
                    {
                        "default": 16,
                        "min": 1,
                        "max": 1024,
                        "step": 1,
                        "tooltip": "How many generator samples (seeds 0..N-1) stand for the source domain.",
                    },
                ),
            },
        }

    def encode(self, clip, target_images, source_images=None, generator=None, source_samples=16):
        if source_images is not None:
            source = _engine_images(source_images)
        elif generator is None:
            raise bridge.NodeError("connect source_images or a generator (its samples stand for the source domain)")
        clip = clip_on_run_device(clip, nada_memory.render_bytes(generator, 8) if source_images is None else 0)
        if source_images is None:
            source = nada_devices.on_device(generator, bridge.torch_device())
        direction = nada_directions.image_direction(
            clip,
            _engine_images(target_images),
            source,
            source_samples=source_samples,
            progress=bridge.chunk_progress(),
        )
        return (direction,)


class CombineDirections:
    NODE_ID = "NADA_CombineDirections"
    DISPLAY_NAME = "Combine Directions (NADA)"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Weighted sum of CLIP directions made with the same CLIP models, e.g. a text direction plus an image "
        "direction, or two styles at once."
    )
    SEARCH_ALIASES = ["mix directions", "direction blend", "multiple prompts"]
    RETURN_TYPES = (DIRECTION,)
    RETURN_NAMES = ("direction",)
    OUTPUT_TOOLTIPS = ("The combined (renormalised) direction.",)
    FUNCTION = "combine"

    @classmethod
    def INPUT_TYPES(cls):
        return weighted_inputs(
            "direction",
            DIRECTION,
            ("First direction.", "Second direction.", "Optional third direction."),
            -10.0,
            "Weight of direction {} (negative moves away from it).",
        )

    def combine(self, direction_1, weight_1, direction_2, weight_2, direction_3=None, weight_3=1.0):
        parts = [(direction_1, weight_1), (direction_2, weight_2)]
        if direction_3 is not None:
            parts.append((direction_3, weight_3))
        return (nada_directions.combine_directions(parts),)


NADA_NODES = [LoadCLIP, CLIPEnsemble, EncodePromptPair, ImageDirection, CombineDirections]
