"""How much memory an adaptation needs, for front ends that must make room first (ComfyUI unloads its
other models). An estimate from the tensors' sizes; activations are not measured yet, so a fixed
headroom stands in for them (they dominate at 512-1024 px and with adaptive selection)."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..clip import as_ensemble

ACTIVATION_HEADROOM = 1 << 30  # bytes; a placeholder until activations are measured per resolution


def module_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def training_bytes(G: nn.Module, clip: Any) -> int:
    """The generator six times (frozen, trainable, gradients, two Adam moments, one copy in flight),
    every CLIP member's weights, and the activation headroom."""
    return module_bytes(G) * 6 + sum(module_bytes(m.model.model) for m in as_ensemble(clip)) + ACTIVATION_HEADROOM
