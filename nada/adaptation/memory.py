"""How much device memory a run or a render needs: weights, optimiser state and activations.

A front end frees that much before it starts (the ComfyUI nodes ask ComfyUI to unload other models).
The activation terms are fitted to measurements (`bench/bench_memory.py`: bytes autograd saves for the
backward pass, one step, config-f generators at 64/128/256 px, batch 1 and 2, ViT-B-32): they scale
with the activation volume of one image, S = sum over blocks of channels * side^2, which the fit
covers exactly in that range. Above 256 px they are an extrapolation along the same law (the
generator's layers are the same per block; only S grows), so the estimate carries a 25 % margin.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .config import AdaptConfig

# Fitted by bench/bench_memory.py (see bench/README.md for the run): saved bytes = A * batch * S + B * batch + C.
BYTES_PER_VOLUME = 0.0  # A: generator activations per unit of S (float32, both synthesis passes)
CLIP_BYTES_PER_IMAGE = 0  # B: one ViT-B CLIP's activations per image, with gradients (224 px input)
STEP_BYTES = 0  # C: per-step constant (latents, losses)
CHECKPOINTING_FACTOR = 1.0  # saved bytes with gradient checkpointing / without (256 px, batch 2)
MARGIN = 1.25  # for transient buffers the saved-tensor count does not see, and for extrapolation
# Rendering without gradients keeps about two feature maps of the largest block alive per image.
RENDER_BYTES_PER_VOLUME = 2.0
AUTOCAST_FACTOR = {"off": 1.0, "bf16": 0.5, "fp16": 0.5}


def activation_volume(config: Any) -> int:
    """S: sum over the generator's blocks (4, 8, ..., resolution) of channels * side^2."""
    return sum(c * r * r for c, r in zip(config.channels, config.resolutions))


def module_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def training_bytes(G: nn.Module, clip_networks: list[nn.Module], cfg: AdaptConfig, checkpointing: bool) -> int:
    """Device bytes one adaptation step needs: the frozen and trainable generator, gradients and Adam's
    two moments (5 generator copies in all), the CLIP weights, and the step's activations."""
    members = max(1, len(clip_networks))
    batch = max(cfg.batch, cfg.select_batch if cfg.auto else 0)  # selection runs a batch of select_batch
    act = BYTES_PER_VOLUME * batch * activation_volume(G.config) * AUTOCAST_FACTOR[cfg.autocast]
    if checkpointing:
        act *= CHECKPOINTING_FACTOR
    patches = cfg.patch_count if cfg.lambda_patch > 0 else 0
    act += CLIP_BYTES_PER_IMAGE * batch * members * (1 + patches) + STEP_BYTES
    weights = 5 * module_bytes(G) + sum(module_bytes(n) for n in clip_networks)
    return int(weights + MARGIN * act)


def render_bytes(G: nn.Module, batch: int) -> int:
    """Device bytes rendering `batch` images at once needs: the generator and its feature maps."""
    return int(module_bytes(G) + MARGIN * RENDER_BYTES_PER_VOLUME * 4 * batch * activation_volume(G.config))
