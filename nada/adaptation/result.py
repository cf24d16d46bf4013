"""What an adaptation returns: `AdaptResult` (the generator, its adapter, how far it got, the histories).

What is persisted travels in `generator.metadata["adaptation"]` (written into saved files); the
adapter of a lora/modulation run rides in the result, and `adapter_of(G)` finds it again for a
generator that came out of `adapt` or was reloaded with its adapter (the Save Adapter node).
"""

from __future__ import annotations

import copy
import dataclasses
import weakref
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .. import layers as layer_groups
from ..adapters import Adapter
from ..devices import same_device
from .config import OFFICIAL_BETAS, AdaptConfig
from .step import Run

_ADAPTERS: weakref.WeakKeyDictionary[nn.Module, Adapter] = weakref.WeakKeyDictionary()


def adapter_of(G: nn.Module) -> Adapter | None:
    """The adapter a lora/modulation adaptation learned for the generator `G` (None for others)."""
    return _ADAPTERS.get(G)


def attach_adapter(G: nn.Module, adapter: Adapter | None) -> None:
    """Record `adapter` as the one learned for `G` (e.g. after loading both from an autosave)."""
    if adapter is not None:
        _ADAPTERS[G] = adapter


@dataclasses.dataclass
class AdaptResult:
    """The outcome of `nada.adapt`.

    generator: the adapted generator (eval mode, no gradients, on the input generator's device), with
    `metadata["adaptation"]`. adapter: the learned tensors of a lora/modulation run (None for full).
    steps: steps completed; interrupted: stopped by `should_stop` before `config.steps`.
    state: the run's state for resuming (`nada.runs`), only when asked for (it holds Adam's moments).
    """

    generator: nn.Module
    adapter: Adapter | None
    config: AdaptConfig
    steps: int
    interrupted: bool
    loss_history: list[float]
    selection_history: list[dict[str, Any]]
    state: dict[str, Any] | None = None
    # {term: [value per step]}, unweighted as in AdaptProgress.terms; None for steps whose terms are unknown
    term_history: dict[str, list[float | None]] = dataclasses.field(default_factory=dict)

    @property
    def metadata(self) -> dict[str, Any]:
        return self.generator.metadata["adaptation"]


@dataclasses.dataclass(frozen=True)
class Provenance:
    """What a result records about the run's inputs, gathered once when the run starts."""

    base_metadata: dict[str, Any]  # the input generator's metadata (carried over)
    base_config: dict[str, Any]
    base_fingerprint: str
    base_device: torch.device  # where the result is returned
    clip: list[dict[str, Any]]  # the CLIP members' descriptions
    direction: dict[str, Any]

    @classmethod
    def of(cls, G: nn.Module, clip_description: list[dict[str, Any]], direction: Any) -> Provenance:
        described = direction.describe() if hasattr(direction, "describe") else {"kind": type(direction).__name__}
        return cls(
            dict(getattr(G, "metadata", {}) or {}), G.config.to_dict(), G.fingerprint(), G.device,
            clip_description, described,
        )  # fmt: skip


def build_result(
    run: Run, inputs: Provenance, interrupted: bool, snapshot: bool = False, with_state: bool = False
) -> AdaptResult:
    """The result as of `run.done` steps. With `snapshot` the run can go on (its generator is copied);
    without, the run's trainable generator becomes the result and the run is over."""
    cfg = run.cfg
    state = run.state_dict() if with_state else None
    out = copy.deepcopy(run.G_train) if snapshot else run.G_train
    with torch.inference_mode(False):
        run.parameterization.bake(out)
    adapter = run.parameterization.to_adapter()
    out.synthesis.gradient_checkpointing = False
    if hasattr(out.synthesis, "fused_modconv"):
        out.synthesis.fused_modconv = True  # the inference form
    out.eval().requires_grad_(False)
    for p in out.parameters():
        p.grad = None
    if not same_device(out.device, inputs.base_device):
        out = out.to(inputs.base_device)
    if not snapshot:
        run.optim.state.clear()
    used = {u for h in run.selection_history for u in _units_of(run, h["w_indices"])}
    trained = [u for u in run.candidates if u in used] if cfg.auto else list(run.candidates)
    meta = dict(inputs.base_metadata)
    meta["adaptation"] = {
        "method": "stylegan-nada",
        "direction": inputs.direction,
        "clip": inputs.clip,
        "steps": run.done,
        "steps_planned": cfg.steps,
        "interrupted": interrupted,
        "config": cfg.to_dict(),
        "effective_lr": cfg.effective_lr,
        "betas": list(OFFICIAL_BETAS),
        "trained_units": trained,
        "selection_history": [dict(h) for h in run.selection_history],
        "loss_history": [round(v, 6) for v in run.loss_history],
        "loss_terms": {k: [None if v is None else round(v, 6) for v in vs] for k, vs in run.term_history.items()},
        "base_fingerprint": inputs.base_fingerprint,
        "parameterization": cfg.parameterization,
    }
    out.metadata = meta
    if adapter is not None:
        adapter.metadata.update(
            base_fingerprint=inputs.base_fingerprint,
            base_config=inputs.base_config,
            parameterization=cfg.parameterization,
            rank=cfg.rank if cfg.parameterization == "lora" else None,
            steps=run.done,
            direction=inputs.direction,
            clip=inputs.clip,
        )
        attach_adapter(out, adapter)
    return AdaptResult(
        generator=out,
        adapter=adapter,
        config=cfg,
        steps=run.done,
        interrupted=interrupted,
        loss_history=list(run.loss_history),
        term_history={k: list(v) for k, v in run.term_history.items()},
        selection_history=[dict(h) for h in run.selection_history],
        state=state,
    )


def _units_of(run: Run, indices: Sequence[int]) -> list[str]:
    mapping = layer_groups.w_index_units(run.G_train, run.candidates)
    return [u for i in indices for u in mapping[i]]
