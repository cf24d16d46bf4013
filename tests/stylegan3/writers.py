"""StyleGAN3 test generators and network pickles written the way NVIDIA's stylegan3 training loop writes them.

Read from NVIDIA's code (never copied): `torch_utils.persistence` pickles each network as
`_reconstruct_persistent_obj(meta)` with meta = {type: 'class', version: 6, module_src, class_name,
state}, where state is the module's `__dict__` (nn.Module internals, every attribute the class's
__init__ set, numpy values included, plus `_init_args` / `_init_kwargs`). The training loop dumps
{G, D, G_ema, augment_pipe, training_set_kwargs} with the default protocol (4 on Python 3.8).
Our own modules stand in for NVIDIA's classes; the writer adds the attributes NVIDIA's classes set.
"""

from __future__ import annotations

import collections
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nada.stylegan2.networks import FullyConnected, MappingNetwork
from nada.stylegan3 import StyleGAN3Config, StyleGAN3Generator
from nada.stylegan3.networks import SynthesisInput, SynthesisLayer, SynthesisNetwork
from tests.stylegan2.checkpoint_writers import (
    EasyDict,
    _Persistent,
    _reconstruct_persistent_obj,
    fake_modules,
    marker_source,
)


def make_stylegan3(seed: int = 0, variant: str = "t", **overrides) -> StyleGAN3Generator:
    """A tiny StyleGAN3 with non-trivial values everywhere (biases, magnitude EMAs, w_avg, input affine)."""
    kw = dict(img_resolution=16, z_dim=16, w_dim=16, channel_base=512, channel_max=16, num_layers=6)
    if variant == "r":
        kw.update(conv_kernel=1, use_radial_filters=True, channel_base=1024, channel_max=32)
    kw.update(overrides)
    torch.manual_seed(seed)
    G = StyleGAN3Generator(StyleGAN3Config(**kw)).eval().requires_grad_(False)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("bias") or "input.affine" in name:
                p.add_(torch.randn_like(p) * 0.2)
        for name, b in G.named_buffers():
            if name.endswith("magnitude_ema"):
                b.copy_(torch.rand([]) * 2 + 0.2)
        G.mapping.w_avg.copy_(torch.randn(G.config.w_dim))
    return G


def _nvidia_attributes(module: torch.nn.Module, cfg: StyleGAN3Config) -> tuple[str, dict[str, Any]]:
    """NVIDIA's class name and the plain attributes its __init__ sets (numpy where NVIDIA's are)."""
    if isinstance(module, StyleGAN3Generator):
        return "Generator", dict(z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, img_resolution=cfg.img_resolution,
                                 img_channels=cfg.img_channels, num_ws=cfg.num_ws)  # fmt: skip
    if isinstance(module, MappingNetwork):
        return "MappingNetwork", dict(z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, num_ws=cfg.num_ws,
                                      num_layers=cfg.mapping_layers, w_avg_beta=0.998)  # fmt: skip
    if isinstance(module, FullyConnected):
        out_f, in_f = module.weight.shape
        return "FullyConnectedLayer", dict(in_features=in_f, out_features=out_f, activation=module.activation,
                                           weight_gain=np.float64(module.weight_gain), bias_gain=module.lr_mul)  # fmt: skip
    if isinstance(module, SynthesisInput):
        return "SynthesisInput", dict(w_dim=cfg.w_dim, channels=module.channels,
                                      size=np.broadcast_to(np.asarray(module.size), [2]),
                                      sampling_rate=np.float64(module.sampling_rate),
                                      bandwidth=np.float64(module.bandwidth))  # fmt: skip
    if isinstance(module, SynthesisNetwork):
        return "SynthesisNetwork", dict(w_dim=cfg.w_dim, num_ws=cfg.num_ws, img_resolution=cfg.img_resolution,
                                        img_channels=cfg.img_channels, num_layers=cfg.num_layers,
                                        num_critical=cfg.num_critical, margin_size=cfg.margin_size,
                                        output_scale=cfg.output_scale, num_fp16_res=4,
                                        layer_names=list(module.layer_names))  # fmt: skip
    if isinstance(module, SynthesisLayer):
        s = module.spec
        return "SynthesisLayer", dict(
            w_dim=cfg.w_dim, is_torgb=s.is_torgb, is_critically_sampled=s.is_critically_sampled, use_fp16=False,
            in_channels=s.in_channels, out_channels=s.out_channels,
            in_size=np.broadcast_to(np.asarray(s.in_size), [2]), out_size=np.broadcast_to(np.asarray(s.out_size), [2]),
            in_sampling_rate=s.in_sampling_rate, out_sampling_rate=s.out_sampling_rate,
            tmp_sampling_rate=s.tmp_sampling_rate, in_cutoff=np.float64(s.in_cutoff), out_cutoff=np.float64(s.out_cutoff),
            in_half_width=np.float64(s.in_half_width), out_half_width=np.float64(s.out_half_width),
            conv_kernel=s.conv_kernel, conv_clamp=cfg.conv_clamp, magnitude_ema_beta=0.999,
            up_factor=s.up_factor, up_taps=s.up_taps, down_factor=s.down_factor, down_taps=s.down_taps,
            down_radial=s.down_radial, padding=list(s.padding),
        )  # fmt: skip
    raise TypeError(f"no NVIDIA counterpart for {type(module).__name__}")


def _record(module: torch.nn.Module, cfg: StyleGAN3Config, src: str, init_kwargs: Any = None) -> _Persistent:
    class_name, attrs = _nvidia_attributes(module, cfg)
    params = collections.OrderedDict(
        (k, None if v is None else torch.nn.Parameter(v.detach().clone(), requires_grad=False))
        for k, v in module._parameters.items()
    )
    buffers = collections.OrderedDict(
        (k, None if v is None else v.detach().clone()) for k, v in module._buffers.items()
    )
    children = collections.OrderedDict((k, _record(v, cfg, src)) for k, v in module._modules.items())
    if isinstance(module, MappingNetwork) and not cfg.c_dim:
        children = collections.OrderedDict([("embed", None), *children.items()])  # NVIDIA keeps embed = None
    if isinstance(module, StyleGAN3Generator):  # NVIDIA builds synthesis first
        children = collections.OrderedDict([("synthesis", children["synthesis"]), ("mapping", children["mapping"])])
    state = {
        "training": False, "_parameters": params, "_buffers": buffers, "_non_persistent_buffers_set": set(),
        "_backward_pre_hooks": collections.OrderedDict(), "_backward_hooks": collections.OrderedDict(),
        "_is_full_backward_hook": None, "_forward_hooks": collections.OrderedDict(),
        "_forward_pre_hooks": collections.OrderedDict(), "_state_dict_hooks": collections.OrderedDict(),
        "_load_state_dict_pre_hooks": collections.OrderedDict(), "_modules": children,
        **attrs, "_init_args": (), "_init_kwargs": init_kwargs if init_kwargs is not None else EasyDict(),
    }  # fmt: skip
    return _Persistent(dict(type="class", version=6, module_src=src, class_name=class_name, state=state))


def generator_init_kwargs(cfg: StyleGAN3Config) -> EasyDict:
    """The Generator's kwargs as train.py builds them (synthesis settings flat, not nested)."""
    kw = EasyDict(z_dim=cfg.z_dim, w_dim=cfg.w_dim, mapping_kwargs=EasyDict(num_layers=cfg.mapping_layers),
                  channel_base=cfg.channel_base, channel_max=cfg.channel_max, magnitude_ema_beta=0.5 ** (32 / 20000),
                  num_layers=cfg.num_layers, c_dim=cfg.c_dim, img_resolution=cfg.img_resolution,
                  img_channels=cfg.img_channels)  # fmt: skip
    if cfg.use_radial_filters:
        kw.update(conv_kernel=cfg.conv_kernel, use_radial_filters=True)
    if cfg.conv_clamp is None:  # --fp32
        kw.update(num_fp16_res=0, conv_clamp=None)
    return kw


def stylegan3_pickle_bytes(
    G: StyleGAN3Generator, marker: Path, init_kwargs: Any = None, payload: Any = None, protocol: int = 4
) -> bytes:
    """A network snapshot pickle of G as NVIDIA's stylegan3 training loop writes it."""
    src = marker_source(marker)
    cfg = G.config
    kwargs = generator_init_kwargs(cfg) if init_kwargs is None else init_kwargs
    with fake_modules({
        "torch_utils": {}, "torch_utils.persistence": {"_reconstruct_persistent_obj": _reconstruct_persistent_obj},
        "dnnlib": {}, "dnnlib.util": {"EasyDict": EasyDict},
    }):  # fmt: skip
        g_ema = _record(G, cfg, src, kwargs)
        if payload is not None:
            g_ema.meta["state"]["payload"] = payload
        trained = G.with_tensors({k: v + 0.5 for k, v in G.state_dict().items() if k.endswith("weight")})
        d_state = {"_parameters": collections.OrderedDict(w=torch.nn.Parameter(torch.ones(2), requires_grad=False)),
                   "_buffers": collections.OrderedDict(), "_modules": collections.OrderedDict(),
                   "_init_args": (), "_init_kwargs": EasyDict(c_dim=cfg.c_dim)}  # fmt: skip
        data = {"G": _record(trained, cfg, src, kwargs),
                "D": _Persistent(dict(type="class", version=6, module_src=src, class_name="Discriminator", state=d_state)),
                "G_ema": g_ema, "augment_pipe": None,
                "training_set_kwargs": dict(class_name="training.dataset.ImageFolderDataset", path="data.zip",
                                            use_labels=bool(cfg.c_dim), max_size=None, xflip=False,
                                            resolution=cfg.img_resolution, random_seed=0)}  # fmt: skip
        return pickle.dumps(data, protocol=protocol)
