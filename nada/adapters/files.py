"""Adapter files: .safetensors with the tensors and a JSON header (format, version, kind, metadata).

Format version 2 added ``.delta`` entries to lora adapters (extracted adapters keep the exact change
of every small tensor); a file is written with the lowest version that can hold it, so lora and
modulation adapters without such entries still load in version-1 readers.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .adapter import DELTA, Adapter, AdapterError

FORMAT = "nada.adapter"
FORMAT_VERSION = 2
# No trained adapter tensor comes near this (generator weights and style scales are O(1)); a file holding
# more is damaged, and applying it would overflow float32 in the render (NaN images, not an error).
MAX_ABS_VALUE = 1e4


def save_adapter(adapter: Adapter, path: str | Path, overwrite: bool = False, dtype: torch.dtype | None = None) -> Path:
    """Write the adapter as .safetensors (tensors + JSON metadata), atomically."""
    from safetensors.torch import save as st_save

    from ..io import atomic_write_bytes

    tensors = {
        k: (v.to(dtype) if dtype is not None else v).detach().cpu().contiguous() for k, v in adapter.tensors.items()
    }
    header = {
        "format": FORMAT,
        "format_version": str(2 if any(k.endswith(DELTA) for k in tensors) and adapter.kind == "lora" else 1),
        "kind": adapter.kind,
        "metadata": json.dumps(adapter.metadata, default=str),
    }
    return atomic_write_bytes(Path(path), st_save(tensors, metadata=header), overwrite=overwrite)


def load_adapter(path: str | Path) -> Adapter:
    """Read an adapter written by `save_adapter`, with a clear error for anything else.

    An adapter stored without a name (older files, runs without a text prompt) is named after its file."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise AdapterError(f"cannot read adapter {path}: {e.strerror}") from e
    try:
        tensors = st_load(data)
        header = _safetensors_metadata(data)
    except (SafetensorError, ValueError) as e:
        raise AdapterError(
            f"{path.name} is not a readable .safetensors adapter ({e}); re-save or re-download it"
        ) from e
    if header.get("format") != FORMAT:
        raise AdapterError(
            f"{path.name} is not a NADA adapter (format {header.get('format')!r}); "
            "generators load with Load StyleGAN2 / nada.load_generator"
        )
    try:
        version = int(header.get("format_version", "0"))
        meta = json.loads(header.get("metadata", "{}"))
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        raise AdapterError(f"{path.name}: the adapter's header is damaged ({e}); re-save or re-download it") from e
    if version > FORMAT_VERSION:
        raise AdapterError(
            f"{path.name} was written by a newer comfyui-nada (adapter format {version}); update comfyui-nada"
        )
    if not isinstance(meta, dict) or not isinstance(meta.get("base_fingerprint"), (str, type(None))):
        raise AdapterError(
            f"{path.name}: the adapter's metadata is damaged (not a JSON object with a text "
            "base_fingerprint); re-save or re-download it"
        )
    for k, t in tensors.items():
        if not t.is_floating_point():
            raise AdapterError(f"{path.name}: tensor {k} has dtype {t.dtype}; adapter tensors are floating point")
        if not torch.isfinite(t).all():
            raise AdapterError(f"{path.name}: tensor {k} contains NaN or Inf; the adapter is corrupt")
        if t.numel() and t.abs().max() > MAX_ABS_VALUE:
            raise AdapterError(
                f"{path.name}: tensor {k} holds values up to {t.abs().max().item():.3g}, far beyond "
                f"what training makes (|x| <= {MAX_ABS_VALUE:g}); the adapter is corrupt"
            )
    adapter = Adapter(header.get("kind", ""), {k: t.float() for k, t in tensors.items()}, meta)
    if not adapter.name:
        adapter.metadata["name"] = path.stem
    return adapter


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    if len(data) < 8:
        raise ValueError("file too short")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise ValueError("header length beyond end of file")
    return json.loads(data[8 : 8 + n]).get("__metadata__", {}) or {}
