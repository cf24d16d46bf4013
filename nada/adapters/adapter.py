"""The adapter object: what its tensors mean and how they apply to a generator, with strengths."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import NadaError
from ..stylegan2 import Generator

KINDS = ("lora", "modulation", "delta")
LORA_A, LORA_B, DELTA = ".lora_A", ".lora_B", ".delta"


class AdapterError(NadaError):
    """An adapter file is invalid or does not fit the generator it is applied to."""


@dataclasses.dataclass
class Adapter:
    """The learned tensors of one domain shift, plus where they came from.

    `tensors` keys: for lora ``<param>.lora_A`` [r, in*k*k] / ``<param>.lora_B`` [out, r] (param = a
    weight name), and, in adapters extracted from a full run, ``<tensor>.delta`` (the exact change of a
    tensor not worth factoring: biases, the constant input, noise strengths, any buffer); for modulation
    ``<layer>.style_scale`` (layer = a synthesis layer name, d of length in_channels); for delta
    ``<tensor>`` (difference to the base tensor).
    """

    kind: str
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise AdapterError(f"unknown adapter kind {self.kind!r}; expected one of {KINDS}")

    @property
    def base_fingerprint(self) -> str | None:
        return self.metadata.get("base_fingerprint")

    @property
    def name(self) -> str:
        """What messages and the loader call it: the stored name, else the target prompt, else ''."""
        name = self.metadata.get("name")
        if isinstance(name, str) and name:
            return name
        direction = self.metadata.get("direction")
        target = direction.get("target") if isinstance(direction, dict) else self.metadata.get("target")
        return target if isinstance(target, str) and target != "images" else ""

    def num_parameters(self) -> int:
        return sum(t.numel() for t in self.tensors.values())

    def updates(self, G: Generator) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(additive updates by tensor name, per-channel modulation d by layer name) for G."""
        own = G.state_dict()
        params = dict(G.named_parameters())
        add: dict[str, torch.Tensor] = {}
        mod: dict[str, torch.Tensor] = {}
        if self.kind == "lora":
            for key, d in self.tensors.items():
                if key.endswith(DELTA):
                    add[key.removesuffix(DELTA)] = _delta(own, key.removesuffix(DELTA), d)
            factored = {k.removesuffix(LORA_A).removesuffix(LORA_B) for k in self.tensors if not k.endswith(DELTA)}
            for name in sorted(factored):
                a, b = self.tensors.get(name + LORA_A), self.tensors.get(name + LORA_B)
                if a is None or b is None or name not in params or name in add:
                    raise AdapterError(f"lora adapter entry {name!r} is incomplete or not in this generator")
                w = params[name]
                if (
                    a.ndim != 2
                    or b.ndim != 2
                    or b.shape[0] != w.shape[0]
                    or a.shape[1] != w[0].numel()
                    or a.shape[0] != b.shape[1]
                ):
                    raise AdapterError(f"lora tensors for {name} do not fit its shape {list(w.shape)}")
                add[name] = lora_delta(a, b, w.shape)
        elif self.kind == "delta":
            for name, d in self.tensors.items():
                add[name] = _delta(own, name, d)
        else:
            for key, d in self.tensors.items():
                layer = key.removesuffix(".style_scale")
                wname = f"{layer}.affine.weight"
                if not key.endswith(".style_scale") or wname not in params:
                    raise AdapterError(f"modulation entry {key!r} does not name a styled layer of this generator")
                if d.shape != (params[wname].shape[0],):
                    raise AdapterError(
                        f"modulation entry {key!r} has shape {list(d.shape)}, expected [{params[wname].shape[0]}]"
                    )
                mod[layer] = d
        return add, mod


def _delta(own: dict[str, torch.Tensor], name: str, d: torch.Tensor) -> torch.Tensor:
    t = own.get(name)
    if t is None or not t.is_floating_point() or t.shape != d.shape:
        raise AdapterError(f"delta entry {name!r} is not a tensor of this shape in the generator")
    return d


def is_conv_weight(name: str) -> bool:
    """Whether a generator parameter is a convolution weight (what lora adapts). StyleGAN2 convolutions are
    conv0/conv1/torgb; StyleGAN3 layers are L{i}_{size}_{channels}."""
    parts = name.split(".")
    return (
        len(parts) >= 2
        and parts[-1] == "weight"
        and (parts[-2] in ("conv0", "conv1", "torgb") or re.fullmatch(r"L\d+_\d+_\d+", parts[-2]) is not None)
    )


def lora_delta(a: torch.Tensor, b: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """B @ A reshaped to the weight's shape."""
    return (b @ a).reshape(shape)


def modulated_affine(weight: torch.Tensor, bias: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The affine rows scaled by (1 + d): styles become styles * (1 + d)."""
    factor = 1 + d
    return weight * factor[:, None], bias * factor


def apply_adapters(G: Generator, adapters: Sequence[tuple[Adapter, float]], check_base: bool = True) -> Generator:
    """A new generator: `G` with every (adapter, strength) applied; `G` itself is not changed.

    Only the tensors the adapters touch are new; all others are shared with `G`.
    """
    if not adapters:
        return G.with_tensors()
    own = {n: t.detach() for n, t in G.state_dict().items()}
    fp = G.fingerprint() if check_base else None
    add: dict[str, torch.Tensor] = {}
    mod: dict[str, torch.Tensor] = {}
    for adapter, strength in adapters:
        if not math.isfinite(strength):
            raise AdapterError(f"adapter strength must be a finite number, got {strength}")
        if check_base and adapter.base_fingerprint and adapter.base_fingerprint != fp:
            raise AdapterError(
                f"adapter {adapter.name!r} was trained on a different base generator "
                f"(fingerprint {adapter.base_fingerprint[:12]}..., this one is {fp[:12]}...); "
                "load the generator it was made for, or pass check_base=False to apply it anyway"
            )
        a, m = adapter.updates(G)
        for n, t in a.items():
            t = t.to(own[n].device, own[n].dtype)
            add[n] = t * strength if n not in add else add[n] + t * strength
        for layer, d in m.items():
            d = d.to(own[f"{layer}.affine.weight"].device) * strength
            mod[layer] = d if layer not in mod else mod[layer] + d
    replacements = {n: own[n] + t for n, t in add.items()}
    for layer, d in mod.items():
        wn, bn = f"{layer}.affine.weight", f"{layer}.affine.bias"
        w = replacements.get(wn, own[wn])
        b = replacements.get(bn, own[bn])
        replacements[wn], replacements[bn] = modulated_affine(w, b, d)
    out = G.with_tensors(replacements)
    out.metadata = {**G.metadata, "adapters": [[a.name or a.kind, float(s)] for a, s in adapters]}
    return out
