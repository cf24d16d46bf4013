"""Writers of test checkpoints in the foreign formats, from a small generator the tests make.

Nothing here comes from NVIDIA or rosinality: the files are built from the formats' documented
structure (key names, shapes, pickle layout) with stand-in classes of our own that are registered
under NVIDIA's module names only while a file is being written (`fake_modules`).
"""

from __future__ import annotations

import collections
import contextlib
import io
import pickle
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nada.stylegan2 import Generator
from nada.stylegan2.ops import make_filter


def marker_source(marker: Path) -> str:
    """Python source that would create `marker` if anything ever executed it."""
    return f"open({str(marker)!r}, 'w').write('executed')\n"


# ---------------------------------------------------------------------------------------------
# rosinality


def rosinality_state_dict(G: Generator) -> dict[str, torch.Tensor]:
    """rosinality's `g_ema` keys and shapes, built by hand (independently of our exporter)."""
    cfg = G.config
    sd = {k: v.detach().clone() for k, v in G.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for i in range(cfg.mapping_layers):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"]
    out["input.input"] = sd["synthesis.b4.const"][None]
    kernel = make_filter() * 4  # rosinality stores the blur kernel scaled by upsample_factor**2

    def styled(prefix: str, ours: str, blur: bool) -> None:
        out[f"{prefix}.conv.weight"] = sd[f"{ours}.weight"][None]
        if blur:
            out[f"{prefix}.conv.blur.kernel"] = kernel.clone()
        out[f"{prefix}.conv.modulation.weight"] = sd[f"{ours}.affine.weight"]
        out[f"{prefix}.conv.modulation.bias"] = sd[f"{ours}.affine.bias"]
        out[f"{prefix}.noise.weight"] = sd[f"{ours}.noise_strength"].reshape(1)
        out[f"{prefix}.activate.bias"] = sd[f"{ours}.bias"]

    def rgb(prefix: str, ours: str, upsample: bool) -> None:
        out[f"{prefix}.bias"] = sd[f"{ours}.bias"].reshape(1, -1, 1, 1)
        if upsample:
            out[f"{prefix}.upsample.kernel"] = kernel.clone()
        out[f"{prefix}.conv.weight"] = sd[f"{ours}.weight"][None]
        out[f"{prefix}.conv.modulation.weight"] = sd[f"{ours}.affine.weight"]
        out[f"{prefix}.conv.modulation.bias"] = sd[f"{ours}.affine.bias"]

    styled("conv1", "synthesis.b4.conv1", False)
    rgb("to_rgb1", "synthesis.b4.torgb", False)
    noises = [sd["synthesis.b4.conv1.noise_const"]]
    for j, res in enumerate(cfg.resolutions[1:]):
        styled(f"convs.{2 * j}", f"synthesis.b{res}.conv0", True)
        styled(f"convs.{2 * j + 1}", f"synthesis.b{res}.conv1", False)
        rgb(f"to_rgbs.{j}", f"synthesis.b{res}.torgb", True)
        noises += [sd[f"synthesis.b{res}.conv0.noise_const"], sd[f"synthesis.b{res}.conv1.noise_const"]]
    for i, n in enumerate(noises):
        out[f"noises.noise_{i}"] = n[None, None]
    return out


# ---------------------------------------------------------------------------------------------
# stand-ins registered under NVIDIA's module names while writing


@contextlib.contextmanager
def fake_modules(names: dict[str, dict[str, Any]]):
    """Temporarily register modules `name -> attributes` in sys.modules (for pickling by name)."""
    saved = {n: sys.modules.get(n) for n in names}
    try:
        for n, attrs in names.items():
            m = types.ModuleType(n)
            for k, v in attrs.items():
                setattr(m, k, v)
                if hasattr(v, "__module__"):
                    with contextlib.suppress(AttributeError, TypeError):
                        v.__module__ = n
            sys.modules[n] = m
        yield
    finally:
        for n, old in saved.items():
            if old is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = old


def _reconstruct_persistent_obj(meta):  # the name NVIDIA's pickles call; never called by our loader
    raise AssertionError("test stand-in; must never be called")


class EasyDict(dict):
    pass


class _Persistent:
    def __init__(self, meta: dict[str, Any]):
        self.meta = meta

    def __reduce__(self):
        return (_reconstruct_persistent_obj, (self.meta,))


def _module_record(module: torch.nn.Module, src: str, class_name: str, extra: dict[str, Any]) -> _Persistent:
    params = collections.OrderedDict(
        (k, torch.nn.Parameter(v.detach().clone(), requires_grad=False)) for k, v in module._parameters.items()
    )
    buffers = collections.OrderedDict((k, v.detach().clone()) for k, v in module._buffers.items())
    if class_name in ("SynthesisLayer", "SynthesisBlock", "Conv2dLayer"):
        buffers["resample_filter"] = make_filter()
    children = collections.OrderedDict()
    for name, child in module.named_children():
        cname = {"FullyConnected": "FullyConnectedLayer", "SkipConv": "Conv2dLayer"}.get(
            type(child).__name__, type(child).__name__
        )
        children[name] = _module_record(child, src, cname, {})
    state = {
        "training": False,
        "_parameters": params,
        "_buffers": buffers,
        "_non_persistent_buffers_set": set(),
        "_backward_hooks": collections.OrderedDict(),
        "_forward_hooks": collections.OrderedDict(),
        "_forward_pre_hooks": collections.OrderedDict(),
        "_state_dict_hooks": collections.OrderedDict(),
        "_load_state_dict_pre_hooks": collections.OrderedDict(),
        "_modules": children,
        "_init_args": (),
        "_init_kwargs": {},
        **extra,
    }
    return _Persistent(dict(type="class", version=6, module_src=src, class_name=class_name, state=state))


def nvidia_init_kwargs(G: Generator) -> dict[str, Any]:
    cfg = G.config
    return EasyDict(
        z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, img_resolution=cfg.img_resolution,
        img_channels=cfg.img_channels,
        mapping_kwargs=EasyDict(num_layers=cfg.mapping_layers),
        synthesis_kwargs=EasyDict(channel_base=cfg.channels[-1] * cfg.img_resolution, channel_max=max(cfg.channels),
                                  num_fp16_res=0, conv_clamp=cfg.conv_clamp, architecture=cfg.architecture),
    )  # fmt: skip


def stylegan3_repo_init_kwargs(G: Generator) -> dict[str, Any]:
    """The kwargs the stylegan3 repository's train.py gives its StyleGAN2 (`--cfg=stylegan2`): the
    synthesis settings flat, not under `synthesis_kwargs`, plus `fused_modconv_default`."""
    cfg = G.config
    return EasyDict(
        z_dim=cfg.z_dim, w_dim=cfg.w_dim, mapping_kwargs=EasyDict(num_layers=cfg.mapping_layers),
        channel_base=cfg.channels[-1] * cfg.img_resolution, channel_max=max(cfg.channels), num_fp16_res=0,
        conv_clamp=cfg.conv_clamp, fused_modconv_default="inference_only", c_dim=cfg.c_dim,
        img_resolution=cfg.img_resolution, img_channels=cfg.img_channels,
    )  # fmt: skip


def nvidia_pickle_bytes(G: Generator, marker: Path, payload: Any = None, init_kwargs: Any = None) -> bytes:
    """A StyleGAN2-ADA-PyTorch-style network pickle of G ({'G', 'D', 'G_ema', ...}).

    `payload`, if given, is put into the G_ema state (for hostile-file tests); `init_kwargs` replaces
    stylegan2-ada-pytorch's Generator kwargs (e.g. `stylegan3_repo_init_kwargs`).
    """
    src = marker_source(marker)
    kwargs = nvidia_init_kwargs(G) if init_kwargs is None else init_kwargs
    extra: dict[str, Any] = {"_init_kwargs": kwargs, "z_dim": G.config.z_dim}
    if payload is not None:
        extra["payload"] = payload
    with fake_modules({
        "torch_utils": {},
        "torch_utils.persistence": {"_reconstruct_persistent_obj": _reconstruct_persistent_obj},
        "dnnlib": {},
        "dnnlib.util": {"EasyDict": EasyDict},
    }):  # fmt: skip
        g_ema = _module_record(G, src, "Generator", extra)
        d = _module_record(torch.nn.Linear(2, 1), src, "Discriminator", {})
        data = {"G": g_ema, "D": d, "G_ema": g_ema, "augment_pipe": None,
                "training_set_kwargs": EasyDict(resolution=G.config.img_resolution)}  # fmt: skip
        return pickle.dumps(data, protocol=4)


# ---------------------------------------------------------------------------------------------
# NVIDIA TensorFlow


class Network:
    """Stand-in for dnnlib.tflib.network.Network: pickles as (class, state) like the real one."""

    def __init__(self, state: dict[str, Any]):
        self._state = state

    def __getstate__(self):
        return self._state

    def __setstate__(self, state):
        raise AssertionError("test stand-in; must never be rebuilt")


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).numpy().copy()


def tf_variables(G: Generator) -> tuple[list, list, list]:
    """(Gs, mapping, synthesis) variable lists: the inverse of the documented TF -> PyTorch rules."""
    cfg = G.config
    sd = {k: v.detach() for k, v in G.state_dict().items()}
    mapping = []
    for i in range(cfg.mapping_layers):
        mapping += [
            (f"Dense{i}/weight", _np(sd[f"mapping.fc{i}.weight"].T)),
            (f"Dense{i}/bias", _np(sd[f"mapping.fc{i}.bias"])),
        ]
    if cfg.c_dim:
        mapping += [
            ("LabelEmbed/weight", _np(sd["mapping.embed.weight"].T)),
            ("LabelEmbed/bias", _np(sd["mapping.embed.bias"])),
        ]
    synthesis = [("4x4/Const/const", _np(sd["synthesis.b4.const"][None]))]
    noises = []
    for res in cfg.resolutions:
        convs = [("Conv", "conv1", False)] if res == 4 else [("Conv0_up", "conv0", True), ("Conv1", "conv1", False)]
        for tf_name, ours, flip in convs:
            o, v = f"synthesis.b{res}.{ours}", f"{res}x{res}/{tf_name}"
            w = sd[f"{o}.weight"]
            w = w.flip([2, 3]) if flip else w  # TF runs its transposed conv with the kernel the other way round
            synthesis += [
                (f"{v}/weight", _np(w.permute(2, 3, 1, 0))),
                (f"{v}/mod_weight", _np(sd[f"{o}.affine.weight"].T)),
                (f"{v}/mod_bias", _np(sd[f"{o}.affine.bias"] - 1)),  # TF adds the 1 at run time
                # a 0-d variable: TF's session returns it as a numpy scalar, not an array
                (f"{v}/noise_strength", np.float32(sd[f"{o}.noise_strength"].item())),
                (f"{v}/bias", _np(sd[f"{o}.bias"])),
            ]
            noises.append(_np(sd[f"{o}.noise_const"][None, None]))
        if f"synthesis.b{res}.torgb.weight" in sd:
            o = f"synthesis.b{res}.torgb"
            v = f"{res}x{res}/ToRGB" if cfg.architecture != "orig" else "ToRGB_lod0"
            synthesis += [
                (f"{v}/weight", _np(sd[f"{o}.weight"].permute(2, 3, 1, 0))),
                (f"{v}/mod_weight", _np(sd[f"{o}.affine.weight"].T)),
                (f"{v}/mod_bias", _np(sd[f"{o}.affine.bias"] - 1)),
                (f"{v}/bias", _np(sd[f"{o}.bias"])),
            ]
        if f"synthesis.b{res}.skip.weight" in sd:
            synthesis.append((f"{res}x{res}/Skip/weight", _np(sd[f"synthesis.b{res}.skip.weight"].permute(2, 3, 1, 0))))
    synthesis += [(f"noise{i}", n) for i, n in enumerate(noises)]
    synthesis.append(("lod", np.float32(0.0)))  # G_synthesis_stylegan2's progressive-growing leftover
    gs = [("dlatent_avg", _np(sd["mapping.w_avg"]))]
    return gs, mapping, synthesis


def tf_static_kwargs(G: Generator) -> dict[str, Any]:
    cfg = G.config
    kw = dict(latent_size=cfg.z_dim, dlatent_size=cfg.w_dim, resolution=cfg.img_resolution,
              num_channels=cfg.img_channels, mapping_layers=cfg.mapping_layers, label_size=cfg.c_dim,
              architecture=cfg.architecture, fmap_base=cfg.channels[-1] * cfg.img_resolution // 2,
              fmap_max=max(cfg.channels))  # fmt: skip
    if cfg.conv_clamp is not None:
        kw["conv_clamp"] = cfg.conv_clamp
    return kw


def _numpy_1x_scalar(dtype, data):  # the name TF-era numpy wrote; never called by our loader
    raise AssertionError("test stand-in; must never be called")


def _numpy_1x_reconstruct(cls, shape, dtype):
    raise AssertionError("test stand-in; must never be called")


class _Numpy1xPickler(pickle.Pickler):
    """Pickles numpy values as numpy 1.x did (`numpy.core.multiarray.scalar` / `_reconstruct`),
    the names in every TensorFlow-era file; numpy 2 writes `numpy._core...` instead."""

    def reducer_override(self, obj):
        if type(obj) is np.ndarray:
            _, args, state = obj.__reduce__()
            return (_numpy_1x_reconstruct, args, state)
        if isinstance(obj, np.generic):
            _, args = obj.__reduce__()
            return (_numpy_1x_scalar, args)
        return NotImplemented


def era_pickle_dumps(obj: Any, protocol: int) -> bytes:
    """`pickle.dump` as Python 3.6/3.7 with numpy 1.x wrote it (protocol 3 by default, 4 = HIGHEST)."""
    buf = io.BytesIO()
    with fake_modules({"numpy.core.multiarray": {"scalar": _numpy_1x_scalar, "_reconstruct": _numpy_1x_reconstruct}}):
        _numpy_1x_scalar.__qualname__ = "scalar"
        _numpy_1x_reconstruct.__qualname__ = "_reconstruct"
        _Numpy1xPickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def tf_pickle_bytes(
    G: Generator, marker: Path, payload: Any = None, protocol: int = 3, replace: dict[str, Any] | None = None
) -> bytes:
    """An NVIDIA TensorFlow (G, D, Gs) pickle of G as `pickle.dump((G, D, Gs), f)` wrote it.

    G and Gs are separate networks (the trained generator and its moving average); the reader takes Gs.
    `replace` swaps values of synthesis variables by name (for damaged-file tests).
    """
    src = marker_source(marker)
    gs_vars, map_vars, syn_vars = tf_variables(G)
    kw = tf_static_kwargs(G)

    def net(name, variables, components=None, func="G_main"):
        state = dict(version=4, name=name, static_kwargs=kw, components=components or {},
                     build_module_src=src, build_func_name=func, variables=variables)  # fmt: skip
        if payload is not None:
            state["payload"] = payload
        return Network(state)

    def gen(name, variables):
        return net(name, variables[0], {"mapping": net("G_mapping", variables[1], func="G_mapping"),
                                        "synthesis": net("G_synthesis", variables[2], func="G_synthesis_stylegan2")})  # fmt: skip

    # the trained G differs from Gs (Gs is its moving average): every float array shifted a little
    trained = [[(k, (v + np.float32(0.5)).astype(v.dtype)) for k, v in vs] for vs in (gs_vars, map_vars, syn_vars)]
    syn_vars = [(k, (replace or {}).get(k, v)) for k, v in syn_vars]
    d = net("D", [("Dense/weight", np.zeros((2, 1), np.float32)), ("lod", np.float32(0.0))], func="D_stylegan2")
    with fake_modules({"dnnlib": {}, "dnnlib.tflib": {}, "dnnlib.tflib.network": {"Network": Network}}):
        return era_pickle_dumps((gen("G", trained), d, gen("Gs", (gs_vars, map_vars, syn_vars))), protocol)
