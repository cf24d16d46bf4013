"""rosinality/stylegan2-pytorch checkpoints (`g_ema` state dicts), also what StyleGAN-NADA saves.

The architecture is inferred from the tensors: resolution from the number of convs, the channel
table from the conv weights, mapping depth from the `style.*` layers. Conversion to our names is a
renaming and a reshape; export back writes rosinality's exact keys, shapes and filter buffers.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import torch

from ...errors import FormatError
from ..config import GeneratorConfig, channels_rosinality
from ..ops import make_filter

log = logging.getLogger(__name__)

_STYLE_RE = re.compile(r"^style\.(\d+)\.weight$")


def is_rosinality(sd: dict[str, Any]) -> bool:
    return "input.input" in sd and "conv1.conv.weight" in sd


def _get(sd: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    try:
        t = sd[key]
    except KeyError:
        raise FormatError(
            f"rosinality checkpoint is missing {key!r}; the file is incomplete or not a generator"
        ) from None
    if not isinstance(t, torch.Tensor):
        raise FormatError(f"rosinality checkpoint entry {key!r} is not a tensor")
    return t


def config_from_rosinality(sd: dict[str, torch.Tensor]) -> GeneratorConfig:
    n_convs = len({k.split(".")[1] for k in sd if k.startswith("convs.")})
    if n_convs % 2:
        raise FormatError(f"rosinality checkpoint has {n_convs} convs; a StyleGAN2 generator has an even number")
    resolution = 4 * 2 ** (n_convs // 2)
    styles = sorted(int(m.group(1)) for k in sd if (m := _STYLE_RE.match(k)))
    if not styles or styles != list(range(1, len(styles) + 1)):
        raise FormatError("rosinality checkpoint has no mapping layers (style.1 ... style.N); not a generator")
    w_dim = _get(sd, f"style.{styles[-1]}.weight").shape[0]
    z_dim = _get(sd, "style.1.weight").shape[1]
    hidden = int(_get(sd, "style.1.weight").shape[0])
    channels = [_get(sd, "conv1.conv.weight").shape[1]]
    for j in range(n_convs // 2):
        channels.append(_get(sd, f"convs.{2 * j}.conv.weight").shape[1])
    return GeneratorConfig(
        img_resolution=resolution,
        channels=tuple(channels),
        z_dim=int(z_dim),
        w_dim=int(w_dim),
        mapping_layers=len(styles),
        mapping_layer_features=hidden if len(styles) > 1 and hidden != w_dim else None,
        img_channels=int(_get(sd, "to_rgb1.conv.weight").shape[1]),
    )


def _conv_pairs(cfg: GeneratorConfig) -> list[tuple[str, str]]:
    """(rosinality prefix, our prefix) for every styled conv, in forward (= noise) order."""
    pairs = [("conv1", "synthesis.b4.conv1")]
    for j, res in enumerate(cfg.resolutions[1:]):
        pairs.append((f"convs.{2 * j}", f"synthesis.b{res}.conv0"))
        pairs.append((f"convs.{2 * j + 1}", f"synthesis.b{res}.conv1"))
    return pairs


def _rgb_pairs(cfg: GeneratorConfig) -> list[tuple[str, str]]:
    pairs = [("to_rgb1", "synthesis.b4.torgb")]
    for j, res in enumerate(cfg.resolutions[1:]):
        pairs.append((f"to_rgbs.{j}", f"synthesis.b{res}.torgb"))
    return pairs


def _check_filter(sd: dict[str, torch.Tensor], key: str, expected: torch.Tensor) -> None:
    if key in sd and not torch.allclose(sd[key].float(), expected, atol=1e-6):
        raise FormatError(f"{key} is not the standard [1,3,3,1] filter; this generator variant is not supported")


def from_rosinality(sd: dict[str, torch.Tensor]) -> tuple[GeneratorConfig, dict[str, torch.Tensor]]:
    """Our config and state dict from a rosinality `g_ema` state dict."""
    cfg = config_from_rosinality(sd)
    out: dict[str, torch.Tensor] = {}
    for i in range(cfg.mapping_layers):
        out[f"mapping.fc{i}.weight"] = _get(sd, f"style.{i + 1}.weight")
        out[f"mapping.fc{i}.bias"] = _get(sd, f"style.{i + 1}.bias")
    out["synthesis.b4.const"] = _get(sd, "input.input").squeeze(0)
    kernel = make_filter() * 4
    for i, (r, o) in enumerate(_conv_pairs(cfg)):
        out[f"{o}.weight"] = _get(sd, f"{r}.conv.weight").squeeze(0)
        out[f"{o}.affine.weight"] = _get(sd, f"{r}.conv.modulation.weight")
        out[f"{o}.affine.bias"] = _get(sd, f"{r}.conv.modulation.bias")
        out[f"{o}.noise_strength"] = _get(sd, f"{r}.noise.weight").reshape(())
        out[f"{o}.bias"] = _get(sd, f"{r}.activate.bias")
        out[f"{o}.noise_const"] = _get(sd, f"noises.noise_{i}").reshape(_get(sd, f"noises.noise_{i}").shape[-2:])
        _check_filter(sd, f"{r}.conv.blur.kernel", kernel)
    for r, o in _rgb_pairs(cfg):
        out[f"{o}.weight"] = _get(sd, f"{r}.conv.weight").squeeze(0)
        out[f"{o}.affine.weight"] = _get(sd, f"{r}.conv.modulation.weight")
        out[f"{o}.affine.bias"] = _get(sd, f"{r}.conv.modulation.bias")
        out[f"{o}.bias"] = _get(sd, f"{r}.bias").reshape(-1)
        _check_filter(sd, f"{r}.upsample.kernel", kernel)
    return cfg, out


def rosinality_channel_multiplier(cfg: GeneratorConfig) -> int | None:
    """The `channel_multiplier` with which rosinality's Generator builds cfg's channels, or None."""
    if cfg.img_resolution > 1024:
        return None
    for multiplier in (2, 1, 4, 3, 8):  # 2 (config-f) and 1 are the ones in use
        if tuple(cfg.channels) == channels_rosinality(cfg.img_resolution, multiplier):
            return multiplier
    return None


def to_rosinality(cfg: GeneratorConfig, sd: dict[str, torch.Tensor], strict: bool = False) -> dict[str, torch.Tensor]:
    """rosinality's `g_ema` state dict (exact keys, shapes and buffers) from ours; `strict` refuses a
    channel table no `channel_multiplier` builds (otherwise a warning)."""
    problems = []
    if cfg.architecture != "skip":
        problems.append(f"architecture {cfg.architecture!r} (rosinality has only 'skip')")
    if cfg.conv_clamp is not None:
        problems.append(f"conv_clamp {cfg.conv_clamp} (rosinality has no clamp)")
    if cfg.c_dim:
        problems.append("a conditional mapping (rosinality has no class labels)")
    if cfg.z_dim != cfg.w_dim or (cfg.mapping_layer_features or cfg.w_dim) != cfg.w_dim:
        problems.append("z_dim, w_dim and the mapping width differ (rosinality uses one style_dim)")
    if tuple(cfg.resample_filter) != (1.0, 3.0, 3.0, 1.0) or abs(cfg.mapping_lr_mul - 0.01) > 1e-12:
        problems.append("a non-standard filter or mapping lr multiplier")
    if cfg.img_channels != 3:
        problems.append(f"{cfg.img_channels} image channels (rosinality's ToRGB writes 3)")
    if problems:
        raise FormatError(
            "this generator cannot be written as a rosinality .pt: "
            + "; ".join(problems)
            + ". Save it as .safetensors instead"
        )
    multiplier = rosinality_channel_multiplier(cfg)
    if multiplier is None and strict:
        raise FormatError(
            f"channels {list(cfg.channels)} are not rosinality's table for any channel_multiplier, "
            "so rosinality's Generator() cannot load this .pt; save it as .safetensors, or export "
            "without strict for tools that take channels from the tensors"
        )
    if multiplier is None:
        # Tools that infer channels from the tensors (comfyui-nada, some converters) read it; tools
        # that rebuild rosinality's Generator(size, style_dim, n_mlp, channel_multiplier) cannot.
        log.warning(
            "channels %s are not rosinality's table for any channel_multiplier; the .pt loads only in "
            "tools that take channels from the tensors",
            list(cfg.channels),
        )
    out: dict[str, torch.Tensor] = {}
    for i in range(cfg.mapping_layers):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"]
    out["input.input"] = sd["synthesis.b4.const"].unsqueeze(0)
    kernel = make_filter() * 4
    for r, o in _conv_pairs(cfg):
        out[f"{r}.conv.weight"] = sd[f"{o}.weight"].unsqueeze(0)
        if r != "conv1" and r.split(".")[1].isdigit() and int(r.split(".")[1]) % 2 == 0:
            out[f"{r}.conv.blur.kernel"] = kernel.clone()
        out[f"{r}.conv.modulation.weight"] = sd[f"{o}.affine.weight"]
        out[f"{r}.conv.modulation.bias"] = sd[f"{o}.affine.bias"]
        out[f"{r}.noise.weight"] = sd[f"{o}.noise_strength"].reshape(1)
        out[f"{r}.activate.bias"] = sd[f"{o}.bias"]
    for j, (r, o) in enumerate(_rgb_pairs(cfg)):
        if j > 0:
            out[f"{r}.upsample.kernel"] = kernel.clone()
        out[f"{r}.conv.weight"] = sd[f"{o}.weight"].unsqueeze(0)
        out[f"{r}.conv.modulation.weight"] = sd[f"{o}.affine.weight"]
        out[f"{r}.conv.modulation.bias"] = sd[f"{o}.affine.bias"]
        out[f"{r}.bias"] = sd[f"{o}.bias"].reshape(1, -1, 1, 1)
    for i, (_, o) in enumerate(_conv_pairs(cfg)):
        out[f"noises.noise_{i}"] = sd[f"{o}.noise_const"].reshape(1, 1, *sd[f"{o}.noise_const"].shape)
    return out


def unwrap_checkpoint(obj: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, dict[str, Any]]:
    """(g_ema state dict, latent_avg or None, info) from what torch.load returned."""
    info: dict[str, Any] = {}
    if isinstance(obj, dict) and "g_ema" in obj:
        sd = obj["g_ema"]
        latent_avg = obj.get("latent_avg")
        info["keys"] = sorted(str(k) for k in obj)
        args = obj.get("args")
        if args is not None:
            info["args"] = (
                {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
                if hasattr(args, "__dict__")
                else {}
            )
    elif isinstance(obj, dict) and (is_rosinality(_unprefixed(obj)) or "synthesis.b4.const" in obj):
        sd, latent_avg = obj, None
    elif (
        isinstance(obj, dict)
        and isinstance(obj.get("state_dict"), dict)
        and any(str(k).startswith("decoder.") for k in obj["state_dict"])
    ):
        # pSp / e4e / ReStyle checkpoints carry a rosinality generator as their decoder.
        sd = {k[len("decoder.") :]: v for k, v in obj["state_dict"].items() if str(k).startswith("decoder.")}
        latent_avg = obj.get("latent_avg")
        info["keys"] = sorted(str(k) for k in obj)
        info["decoder_of"] = "pSp/e4e-style encoder checkpoint"
    else:
        keys = sorted(str(k) for k in obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise FormatError(
            f"this PyTorch file is not a StyleGAN2 generator checkpoint (found {keys}); expected a "
            "rosinality/StyleGAN-NADA checkpoint with 'g_ema', a generator state dict, or an NVIDIA .pkl"
        )
    if not isinstance(sd, dict):
        raise FormatError("'g_ema' in this checkpoint is not a state dict")
    sd = _unprefixed(sd)
    if latent_avg is not None and not isinstance(latent_avg, torch.Tensor):
        latent_avg = None
    if latent_avg is not None and latent_avg.ndim == 2:
        # Some tools store the average per W+ entry ([num_ws, w_dim], rows equal); one row is w_avg.
        if not torch.equal(latent_avg, latent_avg[:1].expand_as(latent_avg)):
            raise FormatError(
                f"latent_avg has shape {list(latent_avg.shape)} with differing rows; expected one "
                "average w. Remove it from the checkpoint to have it estimated"
            )
        latent_avg = latent_avg[0]
    return sd, latent_avg, info


def _unprefixed(sd: dict[str, Any]) -> dict[str, Any]:
    """A state dict saved from a DataParallel/DDP wrapper has every key prefixed with 'module.'."""
    if sd and all(isinstance(k, str) and k.startswith("module.") for k in sd):
        return {k[len("module.") :]: v for k, v in sd.items()}
    return sd
