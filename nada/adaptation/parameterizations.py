"""What an adaptation trains: the generator's own weights (full, the paper), low-rank updates of the
conv weights (lora) or per-channel style scales (modulation).

A parameterisation owns the tensors Adam updates (`tensors`), says which of them belong to a set of
trained units (`tensors_for`, for adaptive layer selection), renders with them (`synthesize`), and at
the end writes them into the trained generator (`bake`) and, for lora/modulation, hands them out as a
`nada.adapters.Adapter`. The run never branches on the kind.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from .. import layers as layer_groups
from ..adapters import Adapter, AdapterError, is_conv_weight, lora_delta, modulated_affine


class Parameterization(nn.Module):
    """Learned tensors over the trainable generator `G` (a copy the run owns)."""

    kind = ""

    def tensors(self) -> dict[str, nn.Parameter]:
        """The tensors Adam updates, by stable name (an adapter's keys for lora/modulation)."""
        raise NotImplementedError

    def tensors_for(self, units: Sequence[str]) -> set[str]:
        """Names (keys of `tensors()`) of the tensors inside the given units."""
        return {k for k in self.tensors() if any(k.startswith(u + ".") for u in units)}

    def synthesize(self, G: nn.Module, ws: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        """G's synthesis of `ws` [B, num_ws, w_dim] with `noise`, using the learned tensors."""
        overrides = {k.removeprefix("synthesis."): v for k, v in self.overrides(G).items()}
        return functional_call(G.synthesis, overrides, (ws,), {"noise": noise})

    def overrides(self, G: nn.Module) -> dict[str, torch.Tensor]:
        """{generator parameter name: effective tensor} (differentiable w.r.t. the learned tensors)."""
        raise NotImplementedError

    @torch.no_grad()
    def bake(self, G: nn.Module) -> None:
        """Write the effective tensors into G's weights, so the result is an ordinary generator."""
        baked = {k: v.detach().clone() for k, v in self.overrides(G).items()}
        params = dict(G.named_parameters())
        for name, t in baked.items():
            params[name].copy_(t)

    def to_adapter(self, metadata: dict[str, Any] | None = None) -> Adapter | None:
        """The learned tensors as an adapter file's content (None for full: the weights are the result)."""
        tensors = {k: t.detach().clone() for k, t in self.tensors().items()}
        return Adapter(self.kind, tensors, dict(metadata or {}))


class FullParameterization(Parameterization):
    """The paper: the generator's own parameters of the trained units are the learned tensors."""

    kind = "full"

    def __init__(self, G: nn.Module, units: Sequence[str]):
        super().__init__()
        # Held by name only: registering G's parameters here would make them this module's too.
        self._params = layer_groups.unit_parameters(G, units)

    def tensors(self) -> dict[str, nn.Parameter]:
        return self._params

    def tensors_for(self, units: Sequence[str]) -> set[str]:
        return {k for k in self._params if any(k == u or k.startswith(u + ".") for u in units)}

    def synthesize(self, G: nn.Module, ws: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        return G.synthesis(ws, noise=noise)

    def overrides(self, G: nn.Module) -> dict[str, torch.Tensor]:
        return {}

    def bake(self, G: nn.Module) -> None:
        pass  # trained in place

    def to_adapter(self, metadata: dict[str, Any] | None = None) -> Adapter | None:
        return None


def _key(name: str) -> str:
    return name.replace(".", "__")


class LoraParameterization(Parameterization):
    kind = "lora"

    def __init__(self, G: nn.Module, weight_names: Sequence[str], rank: int, generator: torch.Generator):
        super().__init__()
        if rank < 1:
            raise AdapterError(f"lora rank must be at least 1, got {rank}")
        params = dict(G.named_parameters())
        self.names = list(weight_names)
        self.a = nn.ParameterDict()
        self.b = nn.ParameterDict()
        for name in self.names:
            w = params[name]
            r = min(rank, w.shape[0], w[0].numel())
            fan = w[0].numel()
            # A ~ N(0, 1/r) so an Adam step on B moves W by about lr per element, as in full training.
            a = torch.randn(r, fan, generator=generator) / math.sqrt(r)
            self.a[_key(name)] = nn.Parameter(a.to(w.device, w.dtype))
            self.b[_key(name)] = nn.Parameter(torch.zeros(w.shape[0], r, device=w.device, dtype=w.dtype))

    def overrides(self, G: nn.Module) -> dict[str, torch.Tensor]:
        params = dict(G.named_parameters())
        return {n: params[n] + lora_delta(self.a[_key(n)], self.b[_key(n)], params[n].shape) for n in self.names}

    def tensors(self) -> dict[str, nn.Parameter]:
        out = {}
        for n in self.names:
            out[f"{n}.lora_A"], out[f"{n}.lora_B"] = self.a[_key(n)], self.b[_key(n)]
        return out


class ModulationParameterization(Parameterization):
    kind = "modulation"

    def __init__(self, G: nn.Module, layer_names: Sequence[str]):
        super().__init__()
        params = dict(G.named_parameters())
        self.layers = list(layer_names)
        self.d = nn.ParameterDict()
        for layer in self.layers:
            w = params[f"{layer}.affine.weight"]
            self.d[_key(layer)] = nn.Parameter(torch.zeros(w.shape[0], device=w.device, dtype=w.dtype))

    def overrides(self, G: nn.Module) -> dict[str, torch.Tensor]:
        params = dict(G.named_parameters())
        out = {}
        for layer in self.layers:
            w, b = modulated_affine(
                params[f"{layer}.affine.weight"], params[f"{layer}.affine.bias"], self.d[_key(layer)]
            )
            out[f"{layer}.affine.weight"], out[f"{layer}.affine.bias"] = w, b
        return out

    def tensors(self) -> dict[str, nn.Parameter]:
        return {f"{layer}.style_scale": self.d[_key(layer)] for layer in self.layers}


def make_parameterization(
    kind: str, G: nn.Module, units: Sequence[str], rank: int = 4, seed: int = 0
) -> Parameterization:
    """The parameterisation of `kind` over the trainable units `units` of G.

    lora adapts the conv weights among them; modulation adapts the style of every layer among them.
    """
    names = list(layer_groups.unit_parameters(G, units))
    if kind == "full":
        return FullParameterization(G, units)
    if kind == "lora":
        weights = [n for n in names if is_conv_weight(n)]
        if not weights:
            raise AdapterError("lora needs at least one convolution weight among the trained layers")
        return LoraParameterization(G, weights, rank, torch.Generator().manual_seed(seed))
    if kind == "modulation":
        # StyleGAN3's input affine makes a rotation/translation, not a style: it is not modulated
        layers = sorted({n.removesuffix(".affine.weight") for n in names
                         if n.endswith(".affine.weight") and n != "synthesis.input.affine.weight"})  # fmt: skip
        if not layers:
            raise AdapterError("modulation needs at least one styled layer among the trained layers")
        return ModulationParameterization(G, layers)
    raise AdapterError(f"unknown parameterization {kind!r}; expected 'full', 'lora' or 'modulation'")
