"""NVIDIA StyleGAN2 / StyleGAN2-ADA / StyleGAN3 pickles, PyTorch and TensorFlow, read as data (see safe_pickle).

PyTorch (stylegan2-ada-pytorch, and the stylegan3 repository's StyleGAN2 and StyleGAN3 networks,
the latter converted by `nvidia_stylegan3`): the pickle is a dict whose `G_ema` is a persistent network; its
state holds `_parameters`, `_buffers`, `_modules` and the constructor's `_init_kwargs`. Parameter
names already match ours (we use NVIDIA's layout), minus the fixed `resample_filter` buffers.

TensorFlow (stylegan2 / stylegan2-ada TF): the pickle is (G, D, Gs) of `dnnlib.tflib.Network`s whose
state lists each network's variables as numpy arrays. We take Gs and convert: dense and conv weights
to PyTorch layouts, `mod_bias + 1` for the style affine bias (TF adds the 1 at run time), the
upsampling convs' kernels flipped (TF's transposed convolution runs the kernel the other way round),
`dlatent_avg` to `w_avg`.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

from ...errors import FormatError
from ...stylegan3.config import StyleGAN3Config
from ..config import GeneratorConfig
from ..ops import make_filter
from . import nvidia_stylegan3
from .safe_pickle import PersistentRecord, TFNetworkRecord

# ---------------------------------------------------------------------------------------------
# PyTorch


def _flatten(record: Any, prefix: str, out: dict[str, torch.Tensor], depth: int = 0) -> None:
    if depth > 32:
        raise FormatError("the network in the pickle is nested too deeply; the file is damaged")
    state = getattr(record, "state", None)
    if not isinstance(state, dict):
        raise FormatError(f"network entry {prefix or 'G_ema'} has no readable state")
    for group in ("_parameters", "_buffers"):
        for name, t in (state.get(group) or {}).items():
            if t is None:
                continue
            if not isinstance(t, torch.Tensor):
                raise FormatError(f"{prefix}{name} in the pickle is not a tensor")
            out[f"{prefix}{name}"] = t
    for name, sub in (state.get("_modules") or {}).items():
        if sub is not None:
            _flatten(sub, f"{prefix}{name}.", out, depth + 1)


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (np.generic,)):
        return v.item()
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return repr(v)


def _infer_arch(sd: dict[str, torch.Tensor], resolutions: tuple[int, ...]) -> str:
    if any(k.endswith(".skip.weight") for k in sd):
        return "resnet"
    if len(resolutions) > 1 and f"synthesis.b{resolutions[0]}.torgb.weight" not in sd:
        return "orig"
    return "skip"


def config_from_ours(
    sd: dict[str, torch.Tensor], kwargs: dict[str, Any] | None = None
) -> GeneratorConfig | StyleGAN3Config:
    """Infer our config from a state dict in our naming (+ NVIDIA init kwargs for what tensors lack)."""
    kwargs = kwargs or {}
    if nvidia_stylegan3.is_stylegan3(sd):
        return nvidia_stylegan3.config_from_stylegan3(sd, kwargs)
    blocks = sorted(int(m.group(1)) for k in sd if (m := re.match(r"^synthesis\.b(\d+)\.conv1\.weight$", k)))
    if not blocks:
        raise FormatError("no synthesis blocks found (synthesis.b4.conv1.weight ...); not a StyleGAN2 generator")
    resolutions = tuple(blocks)
    if resolutions != tuple(4 * 2**i for i in range(len(resolutions))):
        raise FormatError(f"synthesis blocks {list(resolutions)} are not 4, 8, 16, ...; unsupported generator")
    fcs = sorted(int(m.group(1)) for k in sd if (m := re.match(r"^mapping\.fc(\d+)\.weight$", k)))
    if not fcs or fcs != list(range(len(fcs))):
        raise FormatError("no mapping layers (mapping.fc0 ...) found; not a StyleGAN2 generator")
    channels = tuple(int(sd[f"synthesis.b{r}.conv1.weight"].shape[0]) for r in resolutions)
    w_dim = int(sd[f"mapping.fc{fcs[-1]}.weight"].shape[0])
    in_features = int(sd["mapping.fc0.weight"].shape[1])
    c_dim = int(sd["mapping.embed.weight"].shape[1]) if "mapping.embed.weight" in sd else 0
    embed = int(sd["mapping.embed.weight"].shape[0]) if c_dim else None
    z_dim = in_features - (embed or 0)
    hidden = int(sd["mapping.fc0.weight"].shape[0]) if len(fcs) > 1 else None
    last_rgb = f"synthesis.b{resolutions[-1]}.torgb.weight"
    if last_rgb not in sd:
        raise FormatError(f"{last_rgb} is missing; the generator is incomplete")
    mk = kwargs.get("mapping_kwargs") or {}
    sk = kwargs.get("synthesis_kwargs") or {}
    clamp = sk.get("conv_clamp", kwargs.get("conv_clamp"))
    try:
        return GeneratorConfig(
            img_resolution=resolutions[-1],
            channels=channels,
            z_dim=z_dim,
            w_dim=w_dim,
            c_dim=c_dim,
            img_channels=int(sd[last_rgb].shape[0]),
            mapping_layers=len(fcs),
            mapping_lr_mul=float(mk.get("lr_multiplier", 0.01)),
            mapping_layer_features=hidden if hidden != w_dim else None,
            mapping_embed_features=embed if embed != w_dim else None,
            architecture=_infer_arch(sd, resolutions),
            conv_clamp=float(clamp) if clamp is not None else None,
        )
    except (TypeError, ValueError) as e:
        raise FormatError(f"the generator's settings cannot be used: {e}") from None


def from_nvidia_pytorch(data: Any) -> tuple[GeneratorConfig, dict[str, torch.Tensor], dict[str, Any]]:
    if not isinstance(data, dict) or "G_ema" not in data:
        found = sorted(map(str, data))[:8] if isinstance(data, dict) else type(data).__name__
        raise FormatError(f"the pickle holds no 'G_ema' generator (found {found}); not a StyleGAN2-ADA network pickle")
    rec = data["G_ema"]
    if not isinstance(rec, PersistentRecord):
        raise FormatError("'G_ema' in the pickle is not a network; the file is damaged or not StyleGAN2-ADA")
    sd: dict[str, torch.Tensor] = {}
    _flatten(rec, "", sd)
    kwargs = _plain(rec.state.get("_init_kwargs") or {})
    info = {"class_name": rec.class_name, "init_kwargs": kwargs}
    if nvidia_stylegan3.is_stylegan3(sd):
        return nvidia_stylegan3.config_from_stylegan3(sd, kwargs), sd, info
    kernel = make_filter()
    for k in [k for k in sd if k.endswith("resample_filter")]:
        if sd[k].shape != kernel.shape or not torch.allclose(sd[k].float(), kernel, atol=1e-6):
            raise FormatError(f"{k} is not the standard [1,3,3,1] filter; this generator variant is not supported")
        del sd[k]
    return config_from_ours(sd, kwargs), sd, info


# ---------------------------------------------------------------------------------------------
# TensorFlow


def _t(a: Any, name: str) -> torch.Tensor:
    # TensorFlow's session returns a 0-d variable (noise_strength, lod) as a numpy scalar such as
    # np.float32, not as an array, and the pickles store it that way.
    if isinstance(a, np.generic) and a.dtype.kind in "fiu":
        a = np.asarray(a)
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "fiu":
        found = f"{a.dtype} array" if isinstance(a, np.ndarray) else type(a).__name__
        raise FormatError(
            f"TensorFlow variable {name} is not a number or numeric array (found {found}); "
            "the network is damaged or of an unsupported kind"
        )
    return torch.from_numpy(np.ascontiguousarray(a).astype(np.float32, copy=False).copy())


class _Vars(dict):
    """A network's variables by name; `tensor(name)` converts one and names it in every error."""

    def __missing__(self, key: str):
        raise FormatError(f"TensorFlow variable {key} is missing; the network is damaged or of an unsupported kind")

    def tensor(self, key: str) -> torch.Tensor:
        return _t(self[key], key)


def from_nvidia_tf(data: Any) -> tuple[GeneratorConfig, dict[str, torch.Tensor], dict[str, Any]]:
    nets = data if isinstance(data, (tuple, list)) else (data,)
    gs = [n for n in nets if isinstance(n, TFNetworkRecord)]
    if not gs:
        raise FormatError("the pickle holds no TensorFlow networks; not a StyleGAN2 TensorFlow pickle")
    Gs = gs[-1]  # (G, D, Gs): the moving-average generator is last
    comps = Gs.components
    mapping, synthesis = comps.get("mapping"), comps.get("synthesis")
    if not isinstance(mapping, TFNetworkRecord) or not isinstance(synthesis, TFNetworkRecord):
        raise FormatError("the TensorFlow generator has no mapping/synthesis components; unsupported network")
    version = Gs.state.get("version")
    if isinstance(version, int) and version < 4:
        raise FormatError(
            f"this TensorFlow network pickle has version {version} (StyleGAN 1 era); only "
            "StyleGAN2 / StyleGAN2-ADA networks are supported"
        )
    kw = {**Gs.static_kwargs, **mapping.static_kwargs, **synthesis.static_kwargs}
    for key, ok in (("nonlinearity", "lrelu"), ("mapping_nonlinearity", "lrelu")):
        if kw.get(key, ok) != ok:
            raise FormatError(f"this TensorFlow network uses {key}={kw[key]!r}; only 'lrelu' is supported")
    if kw.get("use_noise", True) is False:
        raise FormatError("this TensorFlow network was built without noise inputs (use_noise=False); unsupported")
    mv, sv, gv = _Vars(mapping.variables), _Vars(synthesis.variables), _Vars(Gs.variables)
    # 'orig' networks name their single ToRGB by level of detail (lod 0 = the output resolution).
    resolution = max((int(m.group(1)) for k in sv if (m := re.match(r"^(\d+)x\d+/", k))), default=4)
    for k in list(sv):
        if m := re.match(r"^ToRGB_lod(\d+)/(.*)$", k):
            lod = int(m.group(1))
            if lod > 16:  # 2 ** lod of a huge number in a variable name would hang the load
                raise FormatError(f"the TensorFlow network has a variable {k!r} with an impossible level of detail")
            r = resolution // 2**lod
            sv[f"{r}x{r}/ToRGB/{m.group(2)}"] = sv.pop(k)
    if any("Conv0_up" not in k and re.match(r"^\d+x\d+/Conv0$", k.rsplit("/", 1)[0]) for k in sv):
        raise FormatError("this TensorFlow network has no upsampling convs; only StyleGAN2 generators are supported")
    sd: dict[str, torch.Tensor] = {}
    dense = sorted(int(m.group(1)) for k in mv if (m := re.match(r"^Dense(\d+)/weight$", k)))
    if not dense:
        raise FormatError("the TensorFlow mapping network has no Dense layers; unsupported network")
    for i in dense:
        sd[f"mapping.fc{i}.weight"] = mv.tensor(f"Dense{i}/weight").T.contiguous()
        sd[f"mapping.fc{i}.bias"] = mv.tensor(f"Dense{i}/bias")
    if "LabelConcat/weight" in mv:
        # StyleGAN2 (not -ADA) TF conditions by concatenating an un-normalised label projection,
        # a different mapping from the one we (and NVIDIA's PyTorch port) implement.
        raise FormatError(
            "this is a conditional StyleGAN2 TensorFlow network with 'LabelConcat'; only "
            "StyleGAN2-ADA conditional networks ('LabelEmbed') are supported"
        )
    if "LabelEmbed/weight" in mv:
        sd["mapping.embed.weight"] = mv.tensor("LabelEmbed/weight").T.contiguous()
        sd["mapping.embed.bias"] = mv.tensor("LabelEmbed/bias")
    if "dlatent_avg" in gv:
        sd["mapping.w_avg"] = gv.tensor("dlatent_avg").reshape(-1)
    res_names = sorted({int(m.group(1)) for k in sv if (m := re.match(r"^(\d+)x\d+/", k))})
    noise_idx = 0
    for res in res_names:
        p = f"{res}x{res}"
        o = f"synthesis.b{res}"
        if res == 4:
            sd[f"{o}.const"] = sv.tensor(f"{p}/Const/const")[0]
            convs = [("Conv", "conv1", False)]
        else:
            convs = [("Conv0_up", "conv0", True), ("Conv1", "conv1", False)]
        for tf_name, ours, flip in convs:
            v = f"{p}/{tf_name}"
            if f"{v}/weight" not in sv:
                raise FormatError(f"TensorFlow variable {v}/weight is missing; unsupported or damaged network")
            w = sv.tensor(f"{v}/weight").permute(3, 2, 0, 1)
            sd[f"{o}.{ours}.weight"] = (w.flip([2, 3]) if flip else w).contiguous()
            sd[f"{o}.{ours}.affine.weight"] = sv.tensor(f"{v}/mod_weight").T.contiguous()
            sd[f"{o}.{ours}.affine.bias"] = sv.tensor(f"{v}/mod_bias") + 1
            sd[f"{o}.{ours}.bias"] = sv.tensor(f"{v}/bias")
            sd[f"{o}.{ours}.noise_strength"] = sv.tensor(f"{v}/noise_strength").reshape(())
            noise = sv.tensor(f"noise{noise_idx}")  # [1, 1, res, res]
            sd[f"{o}.{ours}.noise_const"] = noise.reshape(noise.shape[-2:])
            noise_idx += 1
        if f"{p}/ToRGB/weight" in sv:
            v = f"{p}/ToRGB"
            sd[f"{o}.torgb.weight"] = sv.tensor(f"{v}/weight").permute(3, 2, 0, 1).contiguous()
            sd[f"{o}.torgb.affine.weight"] = sv.tensor(f"{v}/mod_weight").T.contiguous()
            sd[f"{o}.torgb.affine.bias"] = sv.tensor(f"{v}/mod_bias") + 1
            sd[f"{o}.torgb.bias"] = sv.tensor(f"{v}/bias")
        if f"{p}/Skip/weight" in sv:
            sd[f"{o}.skip.weight"] = sv.tensor(f"{p}/Skip/weight").permute(3, 2, 0, 1).contiguous()
    kwargs = {
        "mapping_kwargs": {"lr_multiplier": float(kw.get("mapping_lrmul", 0.01))},
        "synthesis_kwargs": {"conv_clamp": kw.get("conv_clamp")},
    }
    cfg = config_from_ours(sd, kwargs)
    taps = kw.get("resample_kernel", [1, 3, 3, 1])
    if taps is not None and [float(t) for t in taps] != [1.0, 3.0, 3.0, 1.0]:
        raise FormatError(f"this TensorFlow network uses resample_kernel={taps}; only [1,3,3,1] is supported")
    info = {"tf_networks": [n.name for n in gs], "static_kwargs": _plain(Gs.static_kwargs)}
    return cfg, sd, info
