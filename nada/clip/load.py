"""Loading one CLIP model: the model config and the weights are resolved separately (as open_clip does),
then built. Loading never executes code from a file: configs are JSON, weights are safetensors or a
plain state dict read with `torch.load(weights_only=True)` after the resource checks of
`nada.torch_files` (zip bombs, overlapping strides, storages larger than the file); a local file never
triggers a download.

Precision (`nada.clip.precision`): "auto" runs CLIP in float16 on CUDA (as the official code's OpenAI
CLIP did) and in float32 elsewhere; "fp32", "fp16" and "bf16" force one; `ClipModel.on` applies the
same policy when a model moves to another device. Half precision follows open_clip's recipe:
linear, convolution and attention weights in half, LayerNorms computed in float32. Inputs are cast to
the model's dtype after preprocessing and the embeddings come back as float32, so gradients flow
from a half-precision CLIP into a float32 generator.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ClipError
from ..torch_files import check_tensors_fit, check_torch_archive
from .model import ClipModel
from .precision import cast_network, resolve_precision
from .preprocess import OPENAI_MEAN, OPENAI_STD

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode", "fill_color")


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ClipError(f"CLIP config {path} does not exist") from None
    except (OSError, ValueError) as e:
        raise ClipError(f"cannot read CLIP config {path}: {e}") from None
    if not isinstance(data, dict):
        raise ClipError(f"CLIP config {path} is not a JSON object")
    return data


def _split_config(data: Mapping[str, Any], where: str) -> tuple[dict, dict]:
    """(model config, preprocess config) from an open_clip model config or an `open_clip_config.json`
    (Hugging Face layout: {"model_cfg": ..., "preprocess_cfg": ...})."""
    data = copy.deepcopy(dict(data))
    pre: dict = {}
    if "model_cfg" in data:
        pre = dict(data.get("preprocess_cfg") or {})
        data = dict(data["model_cfg"])
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in data]
    if missing:
        raise ClipError(
            f"{where} is not an open_clip model config: it lacks {', '.join(missing)}. "
            "Use the schema of open_clip's model_configs/*.json (embed_dim, vision_cfg, text_cfg)."
        )
    return data, pre


def _builtin_preprocess(arch: str) -> dict:
    """Preprocessing shared by every pretrained tag of a built-in architecture (e.g. every ViT-B-32
    tag uses OpenAI's mean/std), so that a local weights file of that architecture gets it too."""
    import open_clip

    cfgs = [open_clip.get_pretrained_cfg(arch, t) for t in open_clip.list_pretrained_tags_by_model(arch)]
    out = {}
    for key in _PREPROCESS_KEYS:
        values = {json.dumps(c.get(key)) for c in cfgs if key in c}
        if len(values) == 1:
            out[key] = json.loads(values.pop())
    return out


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a weights file, without executing anything from it.

    .safetensors via safetensors; .pt/.pth/.bin/.ckpt via `torch.load(weights_only=True)`, which
    refuses anything but tensors and plain containers. A {"state_dict": ...} wrapper and a "module."
    prefix (DataParallel) are removed.
    """
    path = Path(path)
    if not path.is_file():
        raise ClipError(f"CLIP weights file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own error types
            raise ClipError(f"cannot read {path} as safetensors: {e}") from None
    elif suffix in WEIGHT_SUFFIXES:
        size = path.stat().st_size
        if zipfile.is_zipfile(path):
            with open(path, "rb") as f:
                check_torch_archive(f, size, path.name, ClipError)
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # the unpickler raises many types; every one means "not a plain state dict"
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ClipError(
                f"cannot load {path} safely ({msg}). Only plain state dicts are read (weights_only=True); "
                "TorchScript archives such as OpenAI's original ViT-B-32.pt are refused. Use the open_clip "
                "weights (e.g. the .safetensors of the open_clip model on Hugging Face) instead."
            ) from None
        check_tensors_fit(sd, path.name, size, ClipError)
    else:
        raise ClipError(
            f"{path.name}: unknown weights format {suffix or '(none)'}; use one of {', '.join(WEIGHT_SUFFIXES)}"
        )
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ClipError(f"{path} does not contain a state dict of tensors")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def _build_model(model_cfg: dict, precision: str) -> nn.Module:
    import open_clip

    cfg = copy.deepcopy(model_cfg)
    vision, text = dict(cfg["vision_cfg"]), dict(cfg["text_cfg"])
    # Never let a config pull backbone weights from the internet: the CLIP weights come later.
    if "timm_model_name" in vision:
        vision["timm_model_pretrained"] = False
    hf_text = "hf_model_name" in text
    if hf_text:
        text["hf_model_pretrained"] = False
    cfg["vision_cfg"], cfg["text_cfg"] = vision, text
    custom_text = bool(cfg.pop("custom_text", False)) or hf_text
    if "multimodal_cfg" in cfg:
        cls = open_clip.CoCa
    elif custom_text:
        cls = open_clip.CustomTextCLIP
    else:
        cls = open_clip.CLIP
    cast = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    try:
        return cls(**cfg, cast_dtype=cast)
    except (TypeError, ValueError, KeyError, AssertionError) as e:
        raise ClipError(f"open_clip cannot build this model config: {e}") from None


def _load_weights(model: nn.Module, sd: dict[str, torch.Tensor], label: str, where: str) -> None:
    from open_clip.convert import convert_state_dict
    from open_clip.model import convert_to_custom_text_state_dict

    sd = convert_state_dict(model, dict(sd))
    if "positional_embedding" in sd and not hasattr(model, "positional_embedding"):
        sd = convert_to_custom_text_state_dict(sd)
    own = model.state_dict()
    for key in ("logit_scale", "logit_bias"):
        if key in sd and key in own and own[key] is not None and sd[key].ndim != own[key].ndim:
            sd[key] = sd[key].reshape(own[key].shape)
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} of another shape (e.g. {k}: {list(sd[k].shape)} vs {list(own[k].shape)})")
        raise ClipError(
            f"the weights in {where} do not fit the architecture {label}: tensors {'; '.join(parts)}. "
            "Choose the architecture the weights were trained as (or give its model config JSON)."
        )
    model.load_state_dict(sd, strict=True)


def _make_tokenizer(arch: str | None, model_cfg: dict) -> Any:
    import open_clip
    from open_clip.tokenizer import HFTokenizer

    text = model_cfg.get("text_cfg", {})
    ctx = text.get("context_length", 77)
    if arch is not None:
        return open_clip.get_tokenizer(arch, context_length=ctx)
    if text.get("hf_tokenizer_name"):
        return HFTokenizer(text["hf_tokenizer_name"], context_length=ctx, tokenizer_mode=text.get("tokenizer_mode"))
    return open_clip.SimpleTokenizer(context_length=ctx, **(text.get("tokenizer_kwargs") or {}))


def _label_of_config(path: Path) -> str:
    # "config.json" / "open_clip_config.json" say nothing; their folder names the model.
    if path.stem in ("config", "open_clip_config") and path.parent.name:
        return path.parent.name
    return path.stem


def load_clip(
    model: str | os.PathLike,
    pretrained: str | os.PathLike | None = None,
    *,
    weights: str | os.PathLike | None = None,
    config: str | os.PathLike | Mapping[str, Any] | None = None,
    device: torch.device | str | None = None,
    precision: str = "auto",
    name: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    cache_dir: str | os.PathLike | None = None,
    random_weights: bool = False,
) -> ClipModel:
    """Load one CLIP model, frozen (eval mode, no gradients).

    - `model`: an open_clip architecture name ("ViT-B-32"; OpenAI's "ViT-B/32" spelling works too),
      or the path of a model config JSON (open_clip's model-config schema, or an `open_clip_config.json`
      with "model_cfg" and "preprocess_cfg").
    - `pretrained`: an open_clip pretrained tag ("openai", "laion2b_s34b_b79k", ...) for a built-in
      architecture; open_clip downloads it once into `cache_dir` (needs internet). A path to an
      existing file is taken as `weights`.
    - `weights`: a local weights file (.safetensors, or a plain state dict .pt/.pth/.bin/.ckpt).
      OpenAI's weights were trained with QuickGELU: from a file, use the "-quickgelu" architecture
      (e.g. "ViT-B-32-quickgelu"); the "openai" tag switches it on by itself.
    - `config`: a model config (path or dict) when `model` is only a label for it.
    - `precision`: "auto" (fp16 on CUDA, fp32 elsewhere), "fp32", "fp16" or "bf16".
    - `mean`/`std`: override the preprocessing statistics (otherwise: the tag's, the config's
      "preprocess_cfg", the shared statistics of the architecture's tags, or OpenAI's).
    - `random_weights=True` builds the architecture with random weights (benchmarks only); without
      it, asking for no weights at all is an error.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    requested, precision = precision, resolve_precision(precision, device)
    is_path = pretrained is not None and (
        os.path.isfile(pretrained) or Path(str(pretrained)).suffix.lower() in WEIGHT_SUFFIXES
    )
    if is_path and weights is None:
        weights, pretrained = pretrained, None
    if pretrained is not None and weights is not None:
        raise ClipError("give either a pretrained tag or a weights file, not both")
    with torch.inference_mode(False):
        resolved = resolve_config(str(model), pretrained, config)
        weights = resolve_weights(resolved, pretrained, weights, cache_dir, random_weights)
        clip = _build(resolved, weights, device, precision, name, mean, std)
    clip.requested_precision = requested
    return clip


@dataclasses.dataclass
class ResolvedConfig:
    """What a CLIP is, before any weights: the open_clip model config and preprocessing, its label."""

    model_cfg: dict
    arch: str | None  # a built-in architecture (its tokenizer and pretrained tags apply)
    label: str
    preprocess: dict
    source: dict[str, Any]
    tag_cfg: dict | None = None  # open_clip's config of the pretrained tag (where to download it)


def resolve_config(
    model: str, pretrained: str | os.PathLike | None, config: str | os.PathLike | Mapping[str, Any] | None
) -> ResolvedConfig:
    """The model config of `load_clip`'s arguments: a custom config (path or dict), or a built-in
    architecture with the preprocessing of its tags (and of `pretrained`, when given). Reads no weights."""
    import open_clip

    if config is None and model.lower().endswith(".json"):
        config = model
    if config is not None:
        if pretrained is not None:
            raise ClipError(
                f"pretrained tag {pretrained!r} given with a custom config; tags exist only for open_clip's "
                "built-in architectures. Give the weights file instead."
            )
        if isinstance(config, Mapping):
            model_cfg, pre = _split_config(config, "the config dict")
            label = model if model and not model.lower().endswith(".json") else "custom"
            return ResolvedConfig(model_cfg, None, label, pre, {"config": "dict"})
        cpath = Path(config)
        model_cfg, pre = _split_config(_read_json(cpath), str(cpath))
        label = model if model and not model.lower().endswith(".json") else _label_of_config(cpath)
        return ResolvedConfig(model_cfg, None, label, pre, {"config": str(cpath)})
    if model.startswith(("hf-hub:", "local-dir:")):
        raise ClipError(
            f"{model!r}: open_clip schemas are not loaded here; download the model's open_clip_config.json "
            "and weights file and pass them as config and weights"
        )
    arch = model.replace("/", "-")
    model_cfg = open_clip.get_model_config(arch)
    if model_cfg is None:
        raise ClipError(
            f"unknown CLIP architecture {model!r}. Use an open_clip name (e.g. ViT-B-32, ViT-B-16, "
            "ViT-L-14, RN50) or give a model config JSON for a custom model."
        )
    resolved = ResolvedConfig(model_cfg, arch, arch, _builtin_preprocess(arch), {"architecture": arch})
    if pretrained is not None:
        tag_cfg = open_clip.get_pretrained_cfg(arch, str(pretrained))
        if not tag_cfg:
            tags = open_clip.list_pretrained_tags_by_model(arch)
            raise ClipError(
                f"{arch} has no pretrained tag {str(pretrained)!r} and no such file exists; "
                f"known tags: {', '.join(tags) or 'none'}. A local weights file works too."
            )
        resolved.preprocess.update({k: tag_cfg[k] for k in _PREPROCESS_KEYS if k in tag_cfg})
        if tag_cfg.get("quick_gelu") and not model_cfg.get("quick_gelu"):
            # These weights were trained with QuickGELU; open_clip would only warn and run GELU.
            resolved.model_cfg = {**model_cfg, "quick_gelu": True}
        resolved.tag_cfg = tag_cfg
    return resolved


def resolve_weights(
    resolved: ResolvedConfig,
    pretrained: str | os.PathLike | None,
    weights: str | os.PathLike | None,
    cache_dir: str | os.PathLike | None,
    random_weights: bool,
) -> str | None:
    """The weights file for a resolved config: a local file, or the pretrained tag's download (needs
    internet once); None only with `random_weights`. Updates the config's label and source."""
    import open_clip

    if resolved.tag_cfg is not None:
        try:
            weights = open_clip.download_pretrained(
                resolved.tag_cfg, cache_dir=str(cache_dir) if cache_dir is not None else None
            )
        except Exception as e:  # network and hub errors come in many types
            raise ClipError(
                f"cannot download the {resolved.arch} '{pretrained}' weights ({type(e).__name__}: {e}). Without "
                "internet, put the weights file on this machine and pass it as weights."
            ) from None
        if not weights:
            raise ClipError(f"open_clip has no download for {resolved.arch} '{pretrained}'")
        resolved.source["pretrained"] = str(pretrained)
        resolved.label = f"{resolved.arch}:{pretrained}"
        return str(weights)
    if weights is not None:
        wpath = Path(weights)
        resolved.source["weights"] = str(wpath)
        if resolved.arch is not None:  # a custom config already names the model
            resolved.label = f"{resolved.label}:{wpath.name}"
        return str(weights)
    if not random_weights:
        raise ClipError(
            f"no weights for {resolved.label}: give a pretrained tag (e.g. openai) or a weights file "
            "(random_weights=True builds it untrained, for benchmarks only)"
        )
    resolved.source["weights"] = None
    log.warning("CLIP %s has random weights (benchmark use only)", resolved.label)
    return None


def _build(resolved: ResolvedConfig, weights, device, precision, name, mean, std) -> ClipModel:
    model_cfg, pre, label = resolved.model_cfg, resolved.preprocess, resolved.label
    net = _build_model(model_cfg, precision)
    if weights is not None:
        _load_weights(net, read_state_dict(weights), label, str(weights))
    if precision != "fp32":
        cast_network(net, precision)
    net = net.to(device).eval().requires_grad_(False)
    size = model_cfg["vision_cfg"].get("image_size", 224)
    size = getattr(net.visual, "image_size", size)
    size = (size, size) if isinstance(size, int) else tuple(size)
    clip = ClipModel(
        net,
        _make_tokenizer(resolved.arch, model_cfg),
        name or label,
        size,
        mean if mean is not None else pre.get("mean", OPENAI_MEAN),
        std if std is not None else pre.get("std", OPENAI_STD),
        interpolation=pre.get("interpolation", "bicubic"),
        resize_mode=pre.get("resize_mode", "shortest"),
        fill=float(pre.get("fill_color", 0)) / 255.0,
        precision=precision,
        source=resolved.source,
    )
    if len(clip.mean) != 3 or len(clip.std) != 3 or any(s <= 0 for s in clip.std):
        raise ClipError(f"mean/std must be three numbers each (std > 0), got {clip.mean} / {clip.std}")
    log.info("loaded CLIP %s (%s, input %s, %s)", clip.name, precision, size, device)
    return clip
