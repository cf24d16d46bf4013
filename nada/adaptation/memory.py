"""How much device memory a run or a render needs: weights, optimiser state and activations.

A front end frees that much before it starts (the ComfyUI nodes ask ComfyUI to unload other models).
The activation terms are fitted to measurements (`bench/bench_memory.py`: bytes autograd saves for the
backward pass, one step, config-f generators at 64/128/256 px, batch 1 and 2, ViT-B-32; the fit is
within 2 % of all six): they scale with the activation volume of one image, S = sum over blocks of
channels * side^2. Above 256 px they are an extrapolation along the same law (each block has the
same layers; only S grows), not a measurement, so the estimate carries a 25 % margin; the GPU
self-check (`bench/gpu_selfcheck.py`) prints it next to the measured CUDA peak at 512 and 1024 px.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .config import AdaptConfig

# Fitted by bench/bench_memory.py (see bench/README.md for the run): saved bytes = A * batch * S + B * batch + C.
BYTES_PER_VOLUME = 30.68  # A: trainable generator activations per unit of S (float32)
CLIP_BYTES_PER_IMAGE = 13.4 * 2**20  # B: ViT-B-32's activations per image with gradients (fp32, 224 px input)
VIT_B32_SIZE = 50 * 12 * 768  # tokens * layers * width of ViT-B-32, what B was measured with
STEP_BYTES = 95.8 * 2**20  # C: per-step constant (frozen pass, latents, losses)
# Generator activations kept with gradient checkpointing / without. Measured at 256 px, batch 2, the
# step's peak drops by about the whole generator part (CPU RSS 1389 -> 775 MB), but the backward pass
# recomputes one block at a time, and the last block holds about half of S at 256-1024 px: 0.5.
CHECKPOINTING_FACTOR = 0.5
MARGIN = 1.25  # for transient buffers the saved-tensor count does not see, and for extrapolation
# Rendering without gradients, float32 values per unit of S per image: bench_adapt.py's sampling case
# (256 px, batch 8) peaks at 1.2-1.3 GB over the loaded model on the CPU, about 2.5 values per unit.
RENDER_BYTES_PER_VOLUME = 2.5
# Autocast keeps the convolutions' saved inputs in 16 bits: assumed half, not measured (no GPU here).
AUTOCAST_FACTOR = {"off": 1.0, "bf16": 0.5, "fp16": 0.5}


def activation_volume(config: Any) -> int:
    """S: sum over the generator's blocks (4, 8, ..., resolution) of channels * side^2.

    StyleGAN3 has layers, not blocks: each layer's filtered leaky ReLU works on its output upsampled
    twice in each direction, so a layer counts channels * (2 * side)^2. That is reasoned from the
    architecture, not measured like the StyleGAN2 fit."""
    if hasattr(config, "channels"):
        return sum(c * r * r for c, r in zip(config.channels, config.resolutions))
    from ..stylegan3.config import layer_specs

    return sum(spec.out_channels * (2 * spec.out_size) ** 2 for spec in layer_specs(config))


def clip_image_bytes(net: nn.Module, precision: str) -> float:
    """One CLIP network's activations per image with gradients, running in `precision`: B scaled by
    tokens * layers * width of its vision transformer (ViT-B-16 has 4x the tokens of ViT-B-32), halved
    in fp16/bf16. A network without that geometry (e.g. a ResNet CLIP) counts as ViT-B-32."""
    visual = getattr(net, "visual", None)
    blocks, grid = getattr(visual, "transformer", None), getattr(visual, "grid_size", None)
    scale = 1.0
    if blocks is not None and grid is not None and hasattr(blocks, "layers") and hasattr(blocks, "width"):
        scale = (grid[0] * grid[1] + 1) * blocks.layers * blocks.width / VIT_B32_SIZE
    return CLIP_BYTES_PER_IMAGE * scale * (1.0 if precision == "fp32" else 0.5)


def module_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def clip_bytes(clip: Any, device: torch.device | str) -> list[tuple[int, float]]:
    """(weight bytes, activation bytes per image) of each CLIP member in the precision it will run in on
    `device` (`ClipModel.on`: an fp32 model resting on the CPU runs in fp16 on CUDA for auto)."""
    from ..clip import as_ensemble
    from ..clip.precision import resolve_precision

    out = []
    for m in as_ensemble(clip):
        precision = resolve_precision(m.model.requested_precision, device)
        shrink = 0.5 if precision != "fp32" and m.model.precision == "fp32" else 1.0
        out.append((int(module_bytes(m.model.model) * shrink), clip_image_bytes(m.model.model, precision)))
    return out


def training_bytes(G: nn.Module, clip: Any, cfg: AdaptConfig, device: torch.device | str, checkpointing: bool) -> int:
    """Device bytes one adaptation step needs on `device`: the frozen and trainable generator, gradients
    and Adam's two moments (5 generator copies in all), the CLIP weights, and the step's activations."""
    # adaptive selection runs its select_batch latents in chunks of `batch`: no more than the step
    act = BYTES_PER_VOLUME * cfg.batch * activation_volume(G.config) * AUTOCAST_FACTOR[cfg.autocast]
    if checkpointing:
        act *= CHECKPOINTING_FACTOR
    patches = cfg.patch_count if cfg.lambda_patch > 0 else 0
    members = clip_bytes(clip, device)
    act += sum(per_image for _, per_image in members) * cfg.batch * (1 + patches) + STEP_BYTES
    weights = 5 * module_bytes(G) + sum(w for w, _ in members)
    return int(weights + MARGIN * act)


def render_bytes(G: nn.Module, batch: int) -> int:
    """Device bytes rendering `batch` images at once needs: the generator and its feature maps."""
    return int(module_bytes(G) + MARGIN * RENDER_BYTES_PER_VOLUME * 4 * batch * activation_volume(G.config))


def projection_bytes(G: nn.Module, batch: int, clip: Any = None, device: torch.device | str = "cpu") -> int:
    """Device bytes projecting `batch` images needs: the generator, its activations with gradients (the
    trainable pass of a training step: the projection differentiates the same synthesis, for W+
    instead of the weights) and, when CLIP joins the loss, its weights and activations. VGG16's
    features for LPIPS (15 M weights) are small next to them and not counted."""
    members = clip_bytes(clip, device) if clip is not None else []
    act = BYTES_PER_VOLUME * batch * activation_volume(G.config) + sum(per for _, per in members) * batch
    return int(module_bytes(G) + sum(w for w, _ in members) + MARGIN * (act + STEP_BYTES))


def inversion_bytes(encoder: nn.Module, G: nn.Module, batch: int) -> int:
    """Device bytes an encoder inversion of `batch` images needs: the encoder's weights and a render
    of `batch` images (the encoder's own feature maps, without gradients, are small next to them)."""
    return module_bytes(encoder) + render_bytes(G, batch)


def render_batch(G: nn.Module, free: int | None, largest: int) -> int:
    """Images per chunk (1..`largest`) that fit in `free` bytes by `render_bytes`; `largest` when unknown."""
    if free is None:
        return largest
    per_image = render_bytes(G, 1) - module_bytes(G)
    return max(1, min(largest, (free - module_bytes(G)) // max(1, per_image)))
