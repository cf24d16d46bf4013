"""Devices: which one a run uses by default, whether two name the same one, and moving without mutating.

One meaning everywhere (engine, CLI, nodes): a device without an index ("cuda") is the *current*
device of its type, so "cuda" and "cuda:1" are the same device while CUDA's current device is 1, and
cuda:0 is never the same as cuda:1.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn


def default_device() -> torch.device:
    """Where training and rendering run when nobody says: CUDA when available, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def parse_device(name: str | torch.device | None) -> torch.device:
    """ "auto" or None -> `default_device()`; anything else as torch spells it ("cpu", "cuda:1")."""
    if name is None or name == "auto":
        return default_device()
    return torch.device(name)


def _current_index(device_type: str) -> int:
    if device_type == "cuda":
        return torch.cuda.current_device()
    return 0  # cpu and mps have one device; other accelerators: their index 0 until asked otherwise


def same_device(
    a: torch.device | str,
    b: torch.device | str,
    current_index: Callable[[str], int] = _current_index,
) -> bool:
    """Whether `a` and `b` are one device. An index-less device is the current one of its type;
    `current_index(type)` says which that is (injectable so the logic is testable without a GPU)."""
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.type == "cpu" or a.index == b.index:
        return True
    cur = current_index(a.type)
    return (a.index if a.index is not None else cur) == (b.index if b.index is not None else cur)


# What allocators say when memory runs out: CUDA raises torch.OutOfMemoryError; the CPU allocator
# ("DefaultCPUAllocator: can't allocate memory") and MPS ("MPS backend out of memory") a RuntimeError.
_OUT_OF_MEMORY_TEXTS = ("can't allocate memory", "out of memory")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is a device running out of memory (on any device type)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and any(t in str(error) for t in _OUT_OF_MEMORY_TEXTS)


def module_device(module: nn.Module) -> torch.device | None:
    """The device of a module's first parameter (or buffer); None for a module without tensors."""
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return None


def on_device(module: nn.Module, device: torch.device | str) -> nn.Module:
    """`module` itself if it already lives on `device`, else a deep copy there: the input is never moved
    (ComfyUI caches node outputs, so moving a model would change another node's output).

    The copy is made outside inference mode, so autograd can use its tensors even when the caller runs
    inside `torch.inference_mode()` (as ComfyUI runs nodes).
    """
    current = module_device(module)
    if current is None or same_device(current, device):
        return module
    with torch.inference_mode(False), torch.no_grad():
        return copy.deepcopy(module).to(device)


def trainable_copy(module: nn.Module, device: torch.device | str) -> nn.Module:
    """A deep copy on `device` whose tensors are ordinary (not inference) tensors, always a new object.

    deepcopy clones every parameter, buffer and tensor attribute; clones made outside inference mode
    are ordinary tensors that autograd can use.
    """
    with torch.inference_mode(False), torch.no_grad():
        out = copy.deepcopy(module).to(device)
        for t in (*out.parameters(), *out.buffers()):
            if t.is_inference():
                t.data = t.data.clone()
    return out
