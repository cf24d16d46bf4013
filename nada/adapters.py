"""NADA adapters: a domain shift stored as a few learned tensors that apply to a base generator.

Three parameterisations of the change made by `nada.adapt`:

- ``full``: every trained tensor is replaced (the paper). An adapter of kind ``delta`` stores the
  difference to the base, so old full checkpoints can be turned into adapters too.
- ``lora``: each trained convolution weight W [out, in, k, k] becomes W + B @ A with B [out, r],
  A [r, in*k*k] (rank r). B starts at zero, so training starts from the base generator exactly.
- ``modulation``: each trained layer's style vector is scaled per channel, s' = s * (1 + d), the
  "domain modulation" idea of HyperDomainNet. The scaling is folded into the style affine's weight and
  bias rows, so applying it is a change of two small tensors per layer.

Applying several adapters with strengths: additive updates (lora, delta) are summed, each times its
strength; modulation factors combine as 1 + sum(strength_i * d_i). Strength 1 reproduces the adapted
generator exactly and strength 0 the base exactly; negative strengths and strengths above 1 extrapolate.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import NadaError
from .stylegan2 import Generator

log = logging.getLogger(__name__)

KINDS = ("lora", "modulation", "delta")
FORMAT = "nada.adapter"
FORMAT_VERSION = 1


class AdapterError(NadaError):
    """An adapter file is invalid or does not fit the generator it is applied to."""


@dataclasses.dataclass
class Adapter:
    """The learned tensors of one domain shift, plus where they came from.

    `tensors` keys: for lora ``<param>.lora_A`` / ``<param>.lora_B`` (param = a conv weight name); for
    modulation ``<layer>.style_scale`` (layer = a synthesis layer name, d of length in_channels); for
    delta ``<param>`` (difference to the base tensor).
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

    def num_parameters(self) -> int:
        return sum(t.numel() for t in self.tensors.values())

    def updates(self, G: Generator) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(additive updates by parameter name, per-channel modulation d by layer name) for G."""
        params = dict(G.named_parameters())
        add: dict[str, torch.Tensor] = {}
        mod: dict[str, torch.Tensor] = {}
        if self.kind == "lora":
            names = sorted({k.rsplit(".lora_", 1)[0] for k in self.tensors})
            for name in names:
                a, b = self.tensors.get(f"{name}.lora_A"), self.tensors.get(f"{name}.lora_B")
                if a is None or b is None or name not in params:
                    raise AdapterError(f"lora adapter entry {name!r} is incomplete or not in this generator")
                w = params[name]
                if a.ndim != 2 or b.ndim != 2 or b.shape[0] != w.shape[0] or a.shape[1] != w[0].numel() or a.shape[0] != b.shape[1]:
                    raise AdapterError(f"lora tensors for {name} do not fit its shape {list(w.shape)}")
                add[name] = lora_delta(a, b, w.shape)
        elif self.kind == "delta":
            for name, d in self.tensors.items():
                if name not in params or params[name].shape != d.shape:
                    raise AdapterError(f"delta entry {name!r} is not a tensor of this shape in the generator")
                add[name] = d
        else:
            for key, d in self.tensors.items():
                layer = key.removesuffix(".style_scale")
                wname = f"{layer}.affine.weight"
                if not key.endswith(".style_scale") or wname not in params:
                    raise AdapterError(f"modulation entry {key!r} does not name a styled layer of this generator")
                if d.shape != (params[wname].shape[0],):
                    raise AdapterError(f"modulation entry {key!r} has shape {list(d.shape)}, expected "
                                       f"[{params[wname].shape[0]}]")
                mod[layer] = d
        return add, mod


def lora_delta(a: torch.Tensor, b: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """B @ A reshaped to the weight's shape."""
    return (b @ a).reshape(shape)


def modulated_affine(weight: torch.Tensor, bias: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The affine rows scaled by (1 + d): styles become styles * (1 + d)."""
    factor = 1 + d
    return weight * factor[:, None], bias * factor


# ---------------------------------------------------------------------------------------------
# Training-side parameterisations


class Parameterization(nn.Module):
    """Learned tensors over a frozen generator: `overrides()` gives the effective tensors to run with.

    `nada.adapt` calls the trainable generator through `torch.func.functional_call(G, overrides)`.
    """

    kind = "full"

    def overrides(self, G: Generator) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def parameters_for(self, names: Iterable[str]) -> list[nn.Parameter]:
        """The learned tensors that belong to the given generator parameter names."""
        raise NotImplementedError

    def named_tensors(self) -> dict[str, nn.Parameter]:
        """The learned tensors keyed as in the adapter file (`<param>.lora_A`, `<layer>.style_scale`)."""
        raise NotImplementedError

    def to_adapter(self, metadata: dict[str, Any] | None = None) -> Adapter:
        raise NotImplementedError


def _key(name: str) -> str:
    return name.replace(".", "__")


class LoraParameterization(Parameterization):
    kind = "lora"

    def __init__(self, G: Generator, weight_names: Sequence[str], rank: int, generator: torch.Generator):
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

    def overrides(self, G: Generator) -> dict[str, torch.Tensor]:
        params = dict(G.named_parameters())
        return {
            n: params[n] + lora_delta(self.a[_key(n)], self.b[_key(n)], params[n].shape) for n in self.names
        }

    def parameters_for(self, names: Iterable[str]) -> list[nn.Parameter]:
        wanted = set(names)
        return [p for n in self.names if n in wanted for p in (self.a[_key(n)], self.b[_key(n)])]

    def named_tensors(self) -> dict[str, nn.Parameter]:
        out = {}
        for n in self.names:
            out[f"{n}.lora_A"], out[f"{n}.lora_B"] = self.a[_key(n)], self.b[_key(n)]
        return out

    def to_adapter(self, metadata: dict[str, Any] | None = None) -> Adapter:
        tensors = {k: t.detach().clone() for k, t in self.named_tensors().items()}
        return Adapter("lora", tensors, dict(metadata or {}))


class ModulationParameterization(Parameterization):
    kind = "modulation"

    def __init__(self, G: Generator, layer_names: Sequence[str]):
        super().__init__()
        params = dict(G.named_parameters())
        self.layers = list(layer_names)
        self.d = nn.ParameterDict()
        for layer in self.layers:
            w = params[f"{layer}.affine.weight"]
            self.d[_key(layer)] = nn.Parameter(torch.zeros(w.shape[0], device=w.device, dtype=w.dtype))

    def overrides(self, G: Generator) -> dict[str, torch.Tensor]:
        params = dict(G.named_parameters())
        out = {}
        for layer in self.layers:
            w, b = modulated_affine(
                params[f"{layer}.affine.weight"], params[f"{layer}.affine.bias"], self.d[_key(layer)]
            )
            out[f"{layer}.affine.weight"], out[f"{layer}.affine.bias"] = w, b
        return out

    def parameters_for(self, names: Iterable[str]) -> list[nn.Parameter]:
        names = list(names)
        return [self.d[_key(layer)] for layer in self.layers if any(n.startswith(f"{layer}.") for n in names)]

    def named_tensors(self) -> dict[str, nn.Parameter]:
        return {f"{layer}.style_scale": self.d[_key(layer)] for layer in self.layers}

    def to_adapter(self, metadata: dict[str, Any] | None = None) -> Adapter:
        tensors = {k: t.detach().clone() for k, t in self.named_tensors().items()}
        return Adapter("modulation", tensors, dict(metadata or {}))


def make_parameterization(
    kind: str, G: Generator, trainable_names: Sequence[str], rank: int = 4, seed: int = 0
) -> Parameterization | None:
    """The parameterisation of `kind` over the generator parameters `trainable_names` (None for full).

    lora adapts the conv weights among them; modulation adapts the style of every layer among them.
    """
    if kind == "full":
        return None
    if kind == "lora":
        names = [n for n in trainable_names if _is_conv_weight(n)]
        if not names:
            raise AdapterError("lora needs at least one convolution weight among the trained layers")
        return LoraParameterization(G, names, rank, torch.Generator().manual_seed(seed))
    if kind == "modulation":
        # StyleGAN3's input affine makes a rotation/translation, not a style: it is not modulated
        layers = sorted({n.removesuffix(".affine.weight") for n in trainable_names
                         if n.endswith(".affine.weight") and n != "synthesis.input.affine.weight"})  # fmt: skip
        if not layers:
            raise AdapterError("modulation needs at least one styled layer among the trained layers")
        return ModulationParameterization(G, layers)
    raise AdapterError(f"unknown parameterization {kind!r}; expected 'full', 'lora' or 'modulation'")


def _is_conv_weight(name: str) -> bool:
    # StyleGAN2 convs are conv0/conv1/torgb; StyleGAN3 layers are L{i}_{size}_{channels}
    parts = name.split(".")
    return len(parts) >= 2 and parts[-1] == "weight" and (
        parts[-2] in ("conv0", "conv1", "torgb") or re.fullmatch(r"L\d+_\d+_\d+", parts[-2]) is not None
    )


# ---------------------------------------------------------------------------------------------
# Apply, extract, save, load


def apply_adapters(
    G: Generator, adapters: Sequence[tuple[Adapter, float]], check_base: bool = True
) -> Generator:
    """A new generator: `G` with every (adapter, strength) applied; `G` itself is not changed.

    Only the tensors the adapters touch are new; all others are shared with `G`.
    """
    if not adapters:
        return G.with_tensors()
    params = {n: p.detach() for n, p in G.named_parameters()}
    fp = G.fingerprint() if check_base else None
    add: dict[str, torch.Tensor] = {}
    mod: dict[str, torch.Tensor] = {}
    names = []
    for adapter, strength in adapters:
        if not math.isfinite(strength):
            raise AdapterError(f"adapter strength must be a finite number, got {strength}")
        if check_base and adapter.base_fingerprint and adapter.base_fingerprint != fp:
            raise AdapterError(
                f"adapter {adapter.metadata.get('name', '')!r} was trained on a different base generator "
                f"(fingerprint {adapter.base_fingerprint[:12]}..., this one is {fp[:12]}...); "
                "load the generator it was made for, or pass check_base=False to apply it anyway"
            )
        a, m = adapter.updates(G)
        for n, t in a.items():
            t = t.to(params[n].device, params[n].dtype)
            add[n] = t * strength if n not in add else add[n] + t * strength
        for layer, d in m.items():
            d = d.to(params[f"{layer}.affine.weight"].device) * strength
            mod[layer] = d if layer not in mod else mod[layer] + d
        names.append(adapter.metadata.get("name", adapter.kind))
    replacements = {n: params[n] + t for n, t in add.items()}
    for layer, d in mod.items():
        wn, bn = f"{layer}.affine.weight", f"{layer}.affine.bias"
        w = replacements.get(wn, params[wn])
        b = replacements.get(bn, params[bn])
        replacements[wn], replacements[bn] = modulated_affine(w, b, d)
    out = G.with_tensors(replacements)
    out.metadata = {**G.metadata, "adapters": [[n, float(s)] for n, (_, s) in zip(names, adapters)]}
    return out


def extract_adapter(
    base: Generator, adapted: Generator, rank: int | None = None, atol: float = 0.0
) -> Adapter:
    """An adapter that turns `base` into `adapted`: exact differences (kind delta), or, with `rank`,
    a rank-`rank` approximation of each changed conv weight (kind lora; other changes are dropped
    with a warning)."""
    if base.config != adapted.config:
        raise AdapterError("the two generators have different architectures; an adapter cannot map one to the other")
    pb = {n: p.detach() for n, p in base.named_parameters()}
    pa = {n: p.detach() for n, p in adapted.named_parameters()}
    changed = {n: pa[n] - pb[n] for n in pb if not torch.allclose(pa[n], pb[n], rtol=0, atol=atol)}
    meta = {"base_fingerprint": base.fingerprint(), "extracted_from": adapted.metadata.get("source", "")}
    for k in ("prompts", "source", "target", "steps", "clip_models"):
        if k in adapted.metadata:
            meta[k] = adapted.metadata[k]
    if rank is None:
        return Adapter("delta", {n: d.clone() for n, d in changed.items()}, meta)
    tensors = {}
    dropped = []
    for n, d in changed.items():
        if not _is_conv_weight(n):
            dropped.append(n)
            continue
        m = d.reshape(d.shape[0], -1).float()
        u, s, vh = torch.linalg.svd(m, full_matrices=False)
        r = min(rank, s.numel())
        root = s[:r].sqrt()
        tensors[f"{n}.lora_B"] = (u[:, :r] * root).to(d.dtype)
        tensors[f"{n}.lora_A"] = (root[:, None] * vh[:r]).to(d.dtype)
    if dropped:
        log.warning("lora extraction keeps conv weights only; dropped changes to %d tensors (%s...)",
                    len(dropped), ", ".join(dropped[:3]))
    meta["rank"] = rank
    return Adapter("lora", tensors, meta)


def save_adapter(adapter: Adapter, path: str | Path, overwrite: bool = False, dtype: torch.dtype | None = None) -> Path:
    """Write the adapter as .safetensors (tensors + JSON metadata), atomically."""
    from safetensors.torch import save as st_save

    from .io import atomic_write_bytes

    tensors = {k: (v.to(dtype) if dtype is not None else v).detach().cpu().contiguous()
               for k, v in adapter.tensors.items()}
    header = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "kind": adapter.kind,
        "metadata": json.dumps(adapter.metadata, default=str),
    }
    return atomic_write_bytes(Path(path), st_save(tensors, metadata=header), overwrite=overwrite)


def load_adapter(path: str | Path) -> Adapter:
    """Read an adapter written by `save_adapter`, with a clear error for anything else."""
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
        raise AdapterError(f"{path.name} is not a readable .safetensors adapter ({e}); re-save or re-download it") from e
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
        raise AdapterError(f"{path.name} was written by a newer comfyui-nada (adapter format {version}); update comfyui-nada")
    if not isinstance(meta, dict) or not isinstance(meta.get("base_fingerprint"), (str, type(None))):
        raise AdapterError(f"{path.name}: the adapter's metadata is damaged (not a JSON object with a text "
                           "base_fingerprint); re-save or re-download it")
    for k, t in tensors.items():
        if not t.is_floating_point():
            raise AdapterError(f"{path.name}: tensor {k} has dtype {t.dtype}; adapter tensors are floating point")
        if not torch.isfinite(t).all():
            raise AdapterError(f"{path.name}: tensor {k} contains NaN or Inf; the adapter is corrupt")
    return Adapter(header.get("kind", ""), {k: t.float() for k, t in tensors.items()}, meta)


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    if len(data) < 8:
        raise ValueError("file too short")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise ValueError("header length beyond end of file")
    return json.loads(data[8 : 8 + n]).get("__metadata__", {}) or {}
