"""CLIP for the NADA losses: open_clip models, differentiable preprocessing, text encoding, ensembles.

    clip = load_clip("ViT-B-32", pretrained="openai")                  # a pretrained tag (downloads once)
    clip = load_clip("ViT-B-32", weights="models/open_clip/vit-b-32.safetensors")   # a local file
    clip = load_clip("my_clip.json", weights="my_clip.safetensors")    # custom open_clip config + weights
    both = clip_ensemble([(clip_b32, 1.0), (clip_b16, 1.0)])           # weighted ensemble
    both = load_ensemble([ClipSpec("ViT-B-32", "openai"), ClipSpec("ViT-B-16", "openai", weight=0.0)])
    emb = clip.encode_images(images)        # [B, 3, H, W] in [-1, 1] -> [B, D] unit vectors, differentiable
    txt = clip.encode_text(["a photo of a dog."])                       # [N, D] unit vectors

Loading never executes code from a file: configs are JSON, weights are safetensors or a plain state
dict read with `torch.load(weights_only=True)` after the resource checks of `nada.torch_files` (zip
bombs, overlapping strides, storages larger than the file); a local file never triggers a download. A loaded
model is in eval mode with gradients off, and is never modified afterwards (`ClipModel.on` copies).

Precision: "auto" runs CLIP in float16 on CUDA (as the official code's OpenAI CLIP did) and in
float32 elsewhere; "fp32", "fp16" and "bf16" force one. Half precision follows open_clip's recipe:
linear, convolution and attention weights in half, LayerNorms computed in float32. Inputs are cast to
the model's dtype after preprocessing and the embeddings come back as float32, so gradients flow
from a half-precision CLIP into a float32 generator.

In an ensemble a member of weight 0 is neither loaded (`load_ensemble`) nor run (`clip_ensemble`
drops it), and every consumer treats a single `ClipModel` as an ensemble of one (`as_ensemble`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ClipError
from .torch_files import check_tensors_fit, check_torch_archive

log = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode", "fill_color")


# -- preprocessing ------------------------------------------------------------------------------------


def clip_preprocess(
    images: torch.Tensor,  # [B, 3, H, W] in [-1, 1] (generator output; not clamped)
    size: int | tuple[int, int],  # the model's input size (H, W) or a square side
    mean: Sequence[float] = OPENAI_MEAN,
    std: Sequence[float] = OPENAI_STD,
    interpolation: str = "bicubic",
    resize_mode: str = "shortest",
    fill: float = 0.0,
) -> torch.Tensor:  # [B, 3, size_h, size_w] float32, normalised
    """Differentiable CLIP preprocessing of generator images. The exact policy:

    1. x = (images + 1) / 2: [-1, 1] -> [0, 1]. No clamping, as in the official code: a clamp would
       cut the gradient of every pixel that overshoots.
    2. Resize (resize_mode "shortest", open_clip's default, like OpenAI's `Resize(n_px)`): scale by
       s = max(size_h / H, size_w / W), so the image covers the input; the new size is
       (max(size_h, round(H * s)), max(size_w, round(W * s))). Square images and square models
       reduce to "shorter side -> n_px". Interpolation is `interpolation` ("bicubic" or "bilinear",
       the model's own) with `align_corners=False` and **antialias=True** (torch's antialiased
       resampling, which averages over the source footprint when shrinking; when enlarging it equals
       plain interpolation). An image already of the right size is not resampled.
       "squash" resizes straight to (size_h, size_w); "longest" scales by min(...) and pads with
       `fill` (in [0, 1] units), centred.
    3. Centre crop to (size_h, size_w): top = (h - size_h) // 2, left = (w - size_w) // 2.
    4. Normalise each channel: (x - mean[c]) / std[c], with the model's own mean and std.

    Every step is differentiable; the result is float32 (cast to the model's dtype afterwards).
    """
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1] != 3:
        hint = ""
        if images.ndim == 4 and images.shape[-1] == 3:
            hint = " (ComfyUI IMAGE tensors [B, H, W, 3] in [0, 1] convert with x.permute(0, 3, 1, 2) * 2 - 1)"
        raise ClipError(f"CLIP needs RGB images [B, 3, H, W] in [-1, 1], got shape {list(images.shape)}{hint}")
    th, tw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if interpolation not in ("bicubic", "bilinear"):
        raise ClipError(f"interpolation {interpolation!r} is not supported; use 'bicubic' or 'bilinear'")
    x = (images.float() + 1.0) * 0.5
    h, w = x.shape[-2:]
    if resize_mode == "squash":
        x = _resize(x, th, tw, interpolation)
    elif resize_mode == "shortest":
        s = max(th / h, tw / w)
        nh, nw = max(th, round(h * s)), max(tw, round(w * s))
        x = _resize(x, nh, nw, interpolation)
        top, left = (nh - th) // 2, (nw - tw) // 2
        x = x[:, :, top : top + th, left : left + tw]
    elif resize_mode == "longest":
        s = min(th / h, tw / w)
        nh, nw = min(th, round(h * s)), min(tw, round(w * s))
        x = _resize(x, nh, nw, interpolation)
        pt, pl = (th - nh) // 2, (tw - nw) // 2
        x = F.pad(x, (pl, tw - nw - pl, pt, th - nh - pt), value=fill)
    else:
        raise ClipError(f"resize_mode {resize_mode!r} is not supported; use 'shortest', 'squash' or 'longest'")
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    sd = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / sd


def _resize(x: torch.Tensor, h: int, w: int, mode: str) -> torch.Tensor:
    if x.shape[-2:] == (h, w):
        return x
    return F.interpolate(x, size=(h, w), mode=mode, align_corners=False, antialias=True)


def pil_to_tensor(image: Any) -> torch.Tensor:
    """A PIL image -> [3, H, W] float32 in [-1, 1] (RGB), the generators' convention."""
    import numpy as np

    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


# -- one model --------------------------------------------------------------------------------------


class ClipModel:
    """One frozen open_clip model with its tokenizer and preprocessing.

    `name` labels the model in ensembles, directions and metadata. `image_size` is (H, W) of the
    model input; `mean`/`std`/`interpolation`/`resize_mode` are the model's own preprocessing.
    `source` records where it came from (architecture, pretrained tag, weights file, config).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        name: str,
        image_size: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        interpolation: str = "bicubic",
        resize_mode: str = "shortest",
        fill: float = 0.0,
        precision: str = "fp32",
        source: Mapping[str, Any] | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.interpolation = interpolation
        self.resize_mode = resize_mode
        self.fill = float(fill)
        self.precision = precision
        self.source = dict(source or {})
        self._embed_dim: int | None = None

    def __repr__(self) -> str:
        return (
            f"ClipModel({self.name!r}, input {self.image_size[0]}x{self.image_size[1]}, {self.precision}, "
            f"{self.device})"
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype inputs are cast to (the dtype of the image tower's weights)."""
        for m in self.model.visual.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                return m.weight.dtype
        return next(self.model.parameters()).dtype

    @property
    def embed_dim(self) -> int:
        if self._embed_dim is None:
            self._embed_dim = int(self.encode_text(["a"]).shape[-1])
        return self._embed_dim

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Generator images [B, 3, H, W] in [-1, 1] -> model input (see `clip_preprocess`), float32."""
        return clip_preprocess(
            images, self.image_size, self.mean, self.std, self.interpolation, self.resize_mode, self.fill
        )

    def encode_images(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] -> [B, D] float32 unit embeddings; differentiable w.r.t. `images`.

        `batch_size` splits large batches to bound memory (gradients still flow through every chunk).
        """
        if images.ndim == 3:
            images = images[None]
        if images.shape[0] == 0:
            raise ClipError("no images to encode (the batch is empty)")
        step = batch_size or images.shape[0]
        out = []
        for i in range(0, images.shape[0], step):
            x = self.preprocess(images[i : i + step].to(self.device)).to(self.dtype)
            out.append(self.model.encode_image(x).float())
        return F.normalize(torch.cat(out), dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: str | Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Texts -> [N, D] float32 unit embeddings (no gradients; texts are constants of the losses)."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise ClipError("no texts to encode")
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(texts[i : i + batch_size]).to(self.device)
            out.append(self.model.encode_text(tokens).float())
        return F.normalize(torch.cat(out), dim=-1)

    @property
    def members(self) -> tuple[ClipMember, ...]:
        """As an ensemble of one (weight 1), so consumers can treat models and ensembles alike."""
        return (ClipMember(self.name, 1.0, self),)

    def member_weights(self) -> dict[str, float]:
        return {self.name: 1.0}

    def on(self, device: torch.device | str) -> ClipModel:
        """This model on `device`: itself when already there, else a copy (this one is not moved)."""
        device = torch.device(device)
        if _same_device(self.device, device):
            return self
        with torch.inference_mode(False), torch.no_grad():
            other = copy.copy(self)
            other.model = copy.deepcopy(self.model).to(device)
        return other

    def describe(self) -> dict[str, Any]:
        """JSON-able provenance (for metadata)."""
        return {"name": self.name, "precision": self.precision, "image_size": list(self.image_size), **self.source}


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type == "cuda":
        cur = torch.cuda.current_device()
        return (a.index if a.index is not None else cur) == (b.index if b.index is not None else cur)
    return a.index == b.index or a.type == "cpu"


# -- loading -------------------------------------------------------------------------------------------


def _resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ClipError(f"precision {precision!r} is unknown; use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    return precision


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
    precision = _resolve_precision(precision, device)
    is_path = pretrained is not None and (
        os.path.isfile(pretrained) or Path(str(pretrained)).suffix.lower() in WEIGHT_SUFFIXES
    )
    if is_path and weights is None:
        weights, pretrained = pretrained, None
    if pretrained is not None and weights is not None:
        raise ClipError("give either a pretrained tag or a weights file, not both")
    with torch.inference_mode(False):
        return _load(
            str(model), pretrained, weights, config, device, precision, name, mean, std, cache_dir, random_weights
        )


def _load(model, pretrained, weights, config, device, precision, name, mean, std, cache_dir, random_weights):
    import open_clip

    arch: str | None = None  # a built-in architecture (its tokenizer and tags apply)
    pre: dict = {}
    source: dict[str, Any] = {}
    if config is None and model.lower().endswith(".json"):
        config = model
    if config is not None:
        if isinstance(config, Mapping):
            model_cfg, pre = _split_config(config, "the config dict")
            label = model if model and not model.lower().endswith(".json") else "custom"
            source["config"] = "dict"
        else:
            cpath = Path(config)
            model_cfg, pre = _split_config(_read_json(cpath), str(cpath))
            label = model if model and not model.lower().endswith(".json") else _label_of_config(cpath)
            source["config"] = str(cpath)
        if pretrained is not None:
            raise ClipError(
                f"pretrained tag {pretrained!r} given with a custom config; tags exist only for open_clip's "
                "built-in architectures. Give the weights file instead."
            )
    else:
        if model.startswith(("hf-hub:", "local-dir:")):
            raise ClipError(
                f"{model!r}: open_clip schemas are not loaded here; download the model's open_clip_config.json "
                "and weights file and pass them as config and weights"
            )
        arch = model.replace("/", "-")
        builtin = open_clip.get_model_config(arch)
        if builtin is None:
            raise ClipError(
                f"unknown CLIP architecture {model!r}. Use an open_clip name (e.g. ViT-B-32, ViT-B-16, "
                "ViT-L-14, RN50) or give a model config JSON for a custom model."
            )
        model_cfg, label = builtin, arch
        source["architecture"] = arch
        pre = _builtin_preprocess(arch)
        if pretrained is not None:
            tag_cfg = open_clip.get_pretrained_cfg(arch, str(pretrained))
            if not tag_cfg:
                tags = open_clip.list_pretrained_tags_by_model(arch)
                raise ClipError(
                    f"{arch} has no pretrained tag {str(pretrained)!r} and no such file exists; "
                    f"known tags: {', '.join(tags) or 'none'}. A local weights file works too."
                )
            pre.update({k: tag_cfg[k] for k in _PREPROCESS_KEYS if k in tag_cfg})
            if tag_cfg.get("quick_gelu") and not model_cfg.get("quick_gelu"):
                # These weights were trained with QuickGELU; open_clip would only warn and run GELU.
                model_cfg = {**model_cfg, "quick_gelu": True}
            try:
                weights = open_clip.download_pretrained(
                    tag_cfg, cache_dir=str(cache_dir) if cache_dir is not None else None
                )
            except Exception as e:  # network and hub errors come in many types
                raise ClipError(
                    f"cannot download the {arch} '{pretrained}' weights ({type(e).__name__}: {e}). Without "
                    "internet, put the weights file on this machine and pass it as weights."
                ) from None
            if not weights:
                raise ClipError(f"open_clip has no download for {arch} '{pretrained}'")
            source["pretrained"] = str(pretrained)
            label = f"{arch}:{pretrained}"
    if weights is not None:
        wpath = Path(weights)
        if "pretrained" not in source:
            source["weights"] = str(wpath)
            if arch is not None:  # a custom config already names the model
                label = f"{label}:{wpath.name}"
    elif not random_weights:
        raise ClipError(
            f"no weights for {label}: give a pretrained tag (e.g. openai) or a weights file "
            "(random_weights=True builds it untrained, for benchmarks only)"
        )
    else:
        source["weights"] = None
        log.warning("CLIP %s has random weights (benchmark use only)", label)
    net = _build_model(model_cfg, precision)
    if weights is not None:
        _load_weights(net, read_state_dict(weights), label, str(weights))
    if precision in ("fp16", "bf16"):
        from open_clip.model import convert_weights_to_lp

        convert_weights_to_lp(net, dtype=torch.float16 if precision == "fp16" else torch.bfloat16)
    net = net.to(device).eval().requires_grad_(False)
    size = model_cfg["vision_cfg"].get("image_size", 224)
    size = getattr(net.visual, "image_size", size)
    size = (size, size) if isinstance(size, int) else tuple(size)
    clip = ClipModel(
        net,
        _make_tokenizer(arch, model_cfg),
        name or label,
        size,
        mean if mean is not None else pre.get("mean", OPENAI_MEAN),
        std if std is not None else pre.get("std", OPENAI_STD),
        interpolation=pre.get("interpolation", "bicubic"),
        resize_mode=pre.get("resize_mode", "shortest"),
        fill=float(pre.get("fill_color", 0)) / 255.0,
        precision=precision,
        source=source,
    )
    if len(clip.mean) != 3 or len(clip.std) != 3 or any(s <= 0 for s in clip.std):
        raise ClipError(f"mean/std must be three numbers each (std > 0), got {clip.mean} / {clip.std}")
    log.info("loaded CLIP %s (%s, input %s, %s)", clip.name, precision, size, device)
    return clip


# -- ensembles -----------------------------------------------------------------------------------------


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
