"""CLIP for the NADA losses: open_clip models, differentiable preprocessing, text encoding, ensembles.

    clip = load_clip("ViT-B-32", pretrained="openai")                  # a pretrained tag (downloads once)
    clip = load_clip("ViT-B-32", weights="models/open_clip/vit-b-32.safetensors")   # a local file
    clip = load_clip("my_clip.json", weights="my_clip.safetensors")    # custom open_clip config + weights
    both = clip_ensemble([(clip_b32, 1.0), (clip_b16, 1.0)])           # weighted ensemble
    both = load_ensemble([ClipSpec("ViT-B-32", "openai"), ClipSpec("ViT-B-16", "openai", weight=0.0)])
    emb = clip.encode_images(images)        # [B, 3, H, W] in [-1, 1] -> [B, D] unit vectors, differentiable
    txt = clip.encode_text(["a photo of a dog."])                       # [N, D] unit vectors

`preprocess` (the differentiable input pipeline), `model` (one frozen model), `load` (config and
weights resolved separately, then built) and `ensemble` (weighted sets). A loaded model is in eval
mode with gradients off, and is never modified afterwards (`ClipModel.on` copies).
"""

from .ensemble import (
    ClipEnsemble,
    ClipMember,
    ClipSpec,
    as_ensemble,
    clip_ensemble,
    encode_images,
    encode_texts,
    load_ensemble,
)
from .load import WEIGHT_SUFFIXES, ResolvedConfig, load_clip, read_state_dict, resolve_config, resolve_weights
from .model import ClipModel
from .precision import PRECISIONS, cast_network, resolve_precision
from .preprocess import OPENAI_MEAN, OPENAI_STD, clip_preprocess

__all__ = [
    "OPENAI_MEAN",
    "OPENAI_STD",
    "PRECISIONS",
    "WEIGHT_SUFFIXES",
    "ClipEnsemble",
    "ClipMember",
    "ClipModel",
    "ClipSpec",
    "ResolvedConfig",
    "as_ensemble",
    "cast_network",
    "clip_ensemble",
    "clip_preprocess",
    "encode_images",
    "encode_texts",
    "load_clip",
    "load_ensemble",
    "read_state_dict",
    "resolve_config",
    "resolve_precision",
    "resolve_weights",
]
