"""The identity of a model's weights: SHA-256 over every tensor's name, dtype, shape and bytes.

Hashing a 1024 px generator reads ~120 MB, so the result is cached per module object and reused while
no tensor has changed: the cache key is each tensor's storage pointer and torch's in-place version
counter, which every in-place write (optimizer steps, `copy_`, `load_state_dict`) increments.
"""

from __future__ import annotations

import hashlib
import weakref

import torch
from torch import nn

_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, str]] = weakref.WeakKeyDictionary()


def _signature(state: dict[str, torch.Tensor]) -> tuple:
    return tuple((name, t.data_ptr(), t._version, t.dtype, tuple(t.shape)) for name, t in state.items())


def fingerprint(module: nn.Module) -> str:
    """The hex SHA-256 of `module.state_dict()` (independent of the file format it was loaded from)."""
    state = dict(sorted(module.state_dict().items()))
    sig = _signature(state)
    cached = _CACHE.get(module)
    if cached is not None and cached[0] == sig:
        return cached[1]
    h = hashlib.sha256()
    for name, t in state.items():
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    digest = h.hexdigest()
    _CACHE[module] = (sig, digest)
    return digest
