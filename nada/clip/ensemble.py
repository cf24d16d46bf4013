"""Weighted sets of CLIP models: a member of weight 0 is neither loaded nor run, and every consumer
treats a single `ClipModel` as an ensemble of one (`as_ensemble`)."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch

from ..errors import ClipError
from .load import load_clip
from .model import ClipModel

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ClipMember:
    """One model of an ensemble with its loss weight (> 0)."""

    name: str
    weight: float
    model: ClipModel


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """What `load_ensemble` loads: the arguments of `load_clip` plus the member's weight."""

    model: str
    pretrained: str | None = None
    weights: str | None = None
    config: str | None = None
    weight: float = 1.0
    name: str | None = None


class ClipEnsemble:
    """A weighted set of CLIP models (members with weight 0 never get here). Iterate for the members."""

    def __init__(self, members: Iterable[ClipMember]):
        self.members: tuple[ClipMember, ...] = tuple(members)
        if not self.members:
            raise ClipError("the CLIP ensemble is empty: every weight is 0 or nothing was given")
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise ClipError(f"CLIP ensemble member names must be unique, got {names}")

    def __iter__(self) -> Iterator[ClipMember]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)

    def __repr__(self) -> str:
        return "ClipEnsemble(" + ", ".join(f"{m.name}: {m.weight:g}" for m in self.members) + ")"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.members)

    def member_weights(self) -> dict[str, float]:
        return {m.name: m.weight for m in self.members}

    def on(self, device: torch.device | str) -> ClipEnsemble:
        """The ensemble with every model on `device` (copies where needed; this one is not moved)."""
        return ClipEnsemble(dataclasses.replace(m, model=m.model.on(device)) for m in self.members)

    def describe(self) -> list[dict[str, Any]]:
        return [{**m.model.describe(), "name": m.name, "weight": m.weight} for m in self.members]


def _check_weight(weight: Any, what: str) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise ClipError(f"the weight of {what} must be a finite number >= 0, got {weight!r}")
    return float(weight)


def _unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    k = 2
    while f"{name}#{k}" in taken:
        k += 1
    return f"{name}#{k}"


def as_ensemble(clip: ClipModel | ClipEnsemble) -> ClipEnsemble:
    """A `ClipEnsemble` for either a single model (weight 1) or an ensemble (unchanged)."""
    if isinstance(clip, ClipEnsemble):
        return clip
    if isinstance(clip, ClipModel):
        return ClipEnsemble([ClipMember(clip.name, 1.0, clip)])
    raise ClipError(f"expected a CLIP model or ensemble (nada.load_clip), got {type(clip).__name__}")


def encode_images(clip: ClipModel | ClipEnsemble, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """{member name: [B, D] unit embeddings} of images in [-1, 1] (differentiable)."""
    return {m.name: m.model.encode_images(images) for m in as_ensemble(clip)}


def encode_texts(clip: ClipModel | ClipEnsemble, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    """{member name: [N, D] unit embeddings} of texts."""
    return {m.name: m.model.encode_text(texts) for m in as_ensemble(clip)}


def clip_ensemble(items: Sequence[tuple[ClipModel | ClipEnsemble, float]]) -> ClipEnsemble:
    """Weighted ensemble of loaded models or ensembles: [(clip, weight), ...].

    Items of weight 0 are dropped (never run); nested ensembles are flattened with their weights
    multiplied; the same model given twice is one member with the summed weight; clashing names
    get a "#2" suffix.
    """
    members: list[ClipMember] = []
    for i, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ClipError(f"ensemble item {i + 1} must be a (clip, weight) pair")
        clip, weight = item
        weight = _check_weight(weight, f"ensemble item {i + 1}")
        if weight == 0:
            continue
        for m in as_ensemble(clip):
            w = m.weight * weight
            same = next((j for j, o in enumerate(members) if o.model is m.model), None)
            if same is not None:
                members[same] = dataclasses.replace(members[same], weight=members[same].weight + w)
            else:
                members.append(ClipMember(_unique(m.name, {o.name for o in members}), w, m.model))
    return ClipEnsemble(members)


def load_ensemble(
    specs: Sequence[ClipSpec | Mapping[str, Any]],
    device: torch.device | str | None = None,
    precision: str = "auto",
    cache_dir: str | os.PathLike | None = None,
) -> ClipEnsemble:
    """Load the members of an ensemble; a spec with weight 0 is skipped before anything is read."""
    members: list[ClipMember] = []
    for i, spec in enumerate(specs):
        if isinstance(spec, Mapping):
            unknown = set(spec) - {f.name for f in dataclasses.fields(ClipSpec)}
            if unknown:
                raise ClipError(f"unknown keys {sorted(unknown)} in CLIP spec {i + 1}")
            if "model" not in spec:
                raise ClipError(f"CLIP spec {i + 1} needs 'model' (an architecture name or a config JSON)")
            spec = ClipSpec(**spec)
        weight = _check_weight(spec.weight, f"CLIP {spec.model!r}")
        if weight == 0:
            log.info("CLIP %s has weight 0: not loaded", spec.model)
            continue
        clip = load_clip(
            spec.model, spec.pretrained, weights=spec.weights, config=spec.config, device=device,
            precision=precision, name=spec.name, cache_dir=cache_dir,
        )  # fmt: skip
        members.append(ClipMember(_unique(clip.name, {m.name for m in members}), weight, clip))
    return ClipEnsemble(members)
