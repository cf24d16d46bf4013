"""NVIDIA stylegan3 network pickles (StyleGAN3-T / -R), read as data (see safe_pickle).

The pickle is the training loop's snapshot dict {G, D, G_ema, augment_pipe, training_set_kwargs}; its
`G_ema` is a persistent `training.networks_stylegan3.Generator` whose state already uses our tensor
names (we keep NVIDIA's layout), including the designed filters and the magnitude EMAs as buffers.
The config comes from the constructor's `_init_kwargs` (synthesis settings are passed flat there)
and from the tensors, which must agree: the built network's shapes are checked against the file.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from ...errors import ConfigError, FormatError
from ...stylegan3.config import StyleGAN3Config, layer_specs

_LAYER_RE = re.compile(r"^synthesis\.(L(\d+)_(\d+)_(\d+))\.weight$")

# init kwarg -> config field, for the synthesis settings NVIDIA passes through **synthesis_kwargs
_SYNTHESIS_KWARGS = (
    "channel_base", "channel_max", "num_layers", "num_critical", "first_cutoff", "first_stopband",
    "last_stopband_rel", "margin_size", "output_scale", "conv_kernel", "filter_size", "lrelu_upsampling",
    "use_radial_filters", "conv_clamp",
)  # fmt: skip


def is_stylegan3(sd: dict[str, torch.Tensor]) -> bool:
    return "synthesis.input.freqs" in sd or any(_LAYER_RE.match(k) for k in sd)


def _layers(sd: dict[str, torch.Tensor]) -> list[tuple[int, str, int, int]]:
    """(index, name, size, channels) of every synthesis layer, in order; checked to be 0..N."""
    found = sorted((int(m.group(2)), m.group(1), int(m.group(3)), int(m.group(4)))
                   for k in sd if (m := _LAYER_RE.match(k)))  # fmt: skip
    if not found or [i for i, *_ in found] != list(range(len(found))):
        raise FormatError("the StyleGAN3 synthesis layers are not L0, L1, ... in order; the network is damaged")
    return found


def _channel_rule(layers: list[tuple[int, str, int, int]], cfg: dict[str, Any]) -> tuple[int, int]:
    """channel_base / channel_max reproducing the layers' channel counts (for files without init kwargs)."""
    cmax = max(ch for _, _, _, ch in layers[:-1])
    for base in (2**e for e in range(8, 21)):
        try:
            specs = layer_specs(StyleGAN3Config(**{**cfg, "channel_base": base, "channel_max": cmax}))
        except ConfigError:
            continue
        if [s.name for s in specs] == [name for _, name, _, _ in layers]:
            return base, cmax
    raise FormatError("cannot find the channel_base / channel_max that give this StyleGAN3 network's channels")


def config_from_stylegan3(sd: dict[str, torch.Tensor], kwargs: dict[str, Any] | None = None) -> StyleGAN3Config:
    """Infer a StyleGAN3Config from NVIDIA-named tensors and (optionally) the Generator's init kwargs."""
    kwargs = kwargs or {}
    layers = _layers(sd)
    fcs = sorted(int(m.group(1)) for k in sd if (m := re.match(r"^mapping\.fc(\d+)\.weight$", k)))
    if not fcs or fcs != list(range(len(fcs))):
        raise FormatError("no mapping layers (mapping.fc0 ...) found; not a StyleGAN3 generator")
    for key in ("synthesis.input.weight", "synthesis.input.affine.weight"):
        if key not in sd:
            raise FormatError(f"{key} is missing; the StyleGAN3 generator is incomplete")
    mk = kwargs.get("mapping_kwargs") or {}
    w_dim = int(sd[f"mapping.fc{fcs[-1]}.weight"].shape[0])
    c_dim = int(sd["mapping.embed.weight"].shape[1]) if "mapping.embed.weight" in sd else 0
    last, first = layers[-1], sd[f"synthesis.{layers[0][1]}.weight"]
    radial = any(sd.get(f"synthesis.{name}.down_filter", torch.zeros(1)).ndim == 2 for _, name, _, _ in layers)
    cfg: dict[str, Any] = dict(
        img_resolution=last[2],
        z_dim=int(sd["mapping.fc0.weight"].shape[1]) - (w_dim if c_dim else 0),
        w_dim=w_dim,
        c_dim=c_dim,
        img_channels=last[3],
        mapping_layers=len(fcs),
        mapping_lr_mul=float(mk.get("lr_multiplier", 0.01)),
        num_layers=len(layers) - 1,
        conv_kernel=int(first.shape[-1]),
        use_radial_filters=radial,
    )
    for key in _SYNTHESIS_KWARGS:
        # The tensors decide what they show; the kwargs the rest (NVIDIA's defaults where absent).
        if key in kwargs and key not in ("num_layers", "conv_kernel", "use_radial_filters"):
            v = kwargs[key]
            cfg[key] = float(v) if isinstance(v, float) or key == "conv_clamp" and v is not None else v
    if "channel_base" not in cfg or "channel_max" not in cfg:
        cfg["channel_base"], cfg["channel_max"] = _channel_rule(layers, cfg)
    try:
        return StyleGAN3Config(**cfg)
    except (TypeError, ValueError) as e:
        raise FormatError(f"the StyleGAN3 generator's settings cannot be used: {e}") from None
