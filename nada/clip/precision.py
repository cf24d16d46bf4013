"""The precision CLIP runs in: decided by the device it runs on, applied by one function.

Policy (the same in ComfyUI, the CLI and Python): "auto" is float16 on CUDA (as the official code's
OpenAI CLIP ran) and float32 everywhere else; "fp32", "fp16" and "bf16" force one. A model keeps
what was *asked* ("auto" or a forced precision), so a CLIP loaded on the CPU (ComfyUI keeps models
on the offload device) becomes fp16 when a run moves it to CUDA, exactly as one loaded there.

Half precision follows open_clip's recipe (`cast_dtype` at build time): linear, convolution and
attention weights and the projections in half, every LayerNorm computed in float32 (its weights stay
float32 and its input is upcast, `open_clip.transformer.LayerNormFp32`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ClipError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The concrete precision ("fp32", "fp16", "bf16") that `precision` means on `device`."""
    if precision not in PRECISIONS:
        raise ClipError(f"precision {precision!r} is unknown; use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "fp16" if torch.device(device).type == "cuda" else "fp32"
    return precision


def cast_network(net: nn.Module, precision: str) -> nn.Module:
    """Cast an open_clip network (in place; pass a copy) to a concrete precision, open_clip's way.

    To half: LayerNorms are replaced by float32-computing ones with the same parameters, then
    open_clip's `convert_weights_to_lp` casts the weights. To fp32: every floating tensor is upcast
    (a LayerNormFp32 in float32 computes exactly as a plain LayerNorm).
    """
    from open_clip.model import convert_weights_to_lp
    from open_clip.transformer import LayerNormFp32

    if precision == "fp32":
        return net.float()
    for parent in list(net.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.LayerNorm) and not isinstance(child, LayerNormFp32):
                ln = LayerNormFp32(child.normalized_shape, eps=child.eps, elementwise_affine=child.elementwise_affine)
                if child.elementwise_affine:
                    ln.weight, ln.bias = child.weight, child.bias
                setattr(parent, child_name, ln)
    net.float()  # from another half type: every weight back to float32 first, then the one cast
    convert_weights_to_lp(net, dtype=DTYPES[precision])
    return net
