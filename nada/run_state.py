"""A run's resumable state as a file: `.state` next to a saved generator (safetensors + JSON metadata).

The state (`nada.adaptation.step.Run.state_dict()`): the trained tensors, Adam's moments, the RNG
streams, the step and the selection state. Reading it never executes code (safetensors) and checks
that it belongs to the run that asks for it (the run's family key).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import NadaError
from .io import atomic_write_bytes

FORMAT = "nada.run_state"
VERSION = 1
_JSON_KEYS = ("step", "requires_grad", "units", "w_indices", "selection_history", "loss_history")
_OPTIONAL_JSON_KEYS = ("term_history",)  # absent from states saved before per-term losses were kept


class RunStateError(NadaError):
    """A saved run state cannot be read or does not belong to this run."""


def save_state(state: dict[str, Any], path: str | Path, family: str, overwrite: bool = False) -> Path:
    from safetensors.torch import save

    tensors = {f"tensors/{k}": v.contiguous() for k, v in state["tensors"].items()}
    tensors |= {f"moments/{k}": v.contiguous() for k, v in state["moments"].items()}
    tensors |= {f"rng/{k}": v.contiguous() for k, v in state["rng"].items()}
    meta = {k: state[k] for k in _JSON_KEYS} | {k: state[k] for k in _OPTIONAL_JSON_KEYS if k in state}
    header = {"format": FORMAT, "version": str(VERSION), "family": family, "state": json.dumps(meta)}
    return atomic_write_bytes(Path(path), save(tensors, metadata=header), overwrite=overwrite)


def load_state(path: str | Path, family: str) -> dict[str, Any]:
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as e:  # safetensors raises its own error types
        raise RunStateError(f"{path.name} is not a readable run state ({e}); delete it to start afresh") from None
    if header.get("format") != FORMAT or header.get("version") != str(VERSION):
        raise RunStateError(f"{path.name} is not a run state of this comfyui-nada (format {header.get('format')!r})")
    if header.get("family") != family:
        raise RunStateError(f"{path.name} belongs to another run; it cannot continue this one")
    try:
        meta = json.loads(header["state"])
    except (KeyError, ValueError) as e:
        raise RunStateError(f"{path.name}: the run state's header is damaged ({e}); delete it") from None
    state: dict[str, Any] = {k: meta[k] for k in _JSON_KEYS} | {k: meta[k] for k in _OPTIONAL_JSON_KEYS if k in meta}
    for group in ("tensors", "moments", "rng"):
        state[group] = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith(group + "/")}
    return state
