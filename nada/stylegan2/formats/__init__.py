"""Reading and writing generators in every format people have, without running code from files.

| format | how it is recognised (by content, not extension) | read with |
|---|---|---|
| ours (.safetensors) | 8-byte header length + JSON header | safetensors; config + provenance in the header |
| rosinality / StyleGAN-NADA .pt | zip archive (or legacy torch pickle) | torch.load(weights_only=True) + argparse.Namespace |
| NVIDIA StyleGAN2-ADA / StyleGAN3 PyTorch .pkl | raw pickle with persistent networks | `SafeUnpickler` (allow-list, never executes) |
| NVIDIA StyleGAN2 TensorFlow .pkl | raw pickle of dnnlib.tflib Networks | `SafeUnpickler` |

    G = load_generator("ffhq.pkl")              # eval mode, gradients off, on the CPU
    save_generator(G, "mine.safetensors")       # atomic; refuses to overwrite unless overwrite=True
    export_rosinality(G, "mine.pt")             # for rosinality-based tools (StyleGAN-NADA, e4e, ...)
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from ...errors import ConfigError, FormatError
from ...io import FileExistsNadaError, atomic_write, atomic_write_bytes, read_model_file
from ...stylegan3 import StyleGAN3Config, StyleGAN3Generator
from ...stylegan3.config import FAMILY as FAMILY_STYLEGAN3
from ...torch_files import load_torch_bytes, overlapping
from ..config import GeneratorConfig
from ..networks import Generator
from . import nvidia, rosinality
from .safe_pickle import PersistentRecord, SafeUnpickler, TFNetworkRecord, safe_load

log = logging.getLogger(__name__)

FORMAT_NAME = "nada.generator"
FORMAT_VERSION = 1
MAX_HEADER = 100 * 1024 * 1024  # a safetensors header larger than this is not a generator
TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

__all__ = ["FormatError", "detect_format", "export_rosinality", "load_generator", "save_generator"]


def detect_format(data: bytes) -> str:
    """'safetensors', 'torch-zip', 'torch-legacy', 'pickle' or 'unknown', from the bytes alone."""
    if len(data) >= 10 and data[8:9] == b"{":
        n = int.from_bytes(data[:8], "little")
        if 2 <= n <= min(MAX_HEADER, len(data) - 8):
            return "safetensors"
    if data[:4] == b"PK\x03\x04":
        return "torch-zip"
    if data[:1] == b"\x80" and len(data) > 2:
        try:
            # Our allow-list unpickler even for these 64 bytes: a plain pickle.Unpickler would run a
            # short payload (e.g. os.system) placed at the start of the file while detecting it.
            first = SafeUnpickler(io.BytesIO(data[:64]), 64).load()
        except Exception:
            first = None
        return "torch-legacy" if first == TORCH_LEGACY_MAGIC else "pickle"
    return "unknown"


def _finite_float(sd: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    out = {}
    for k, t in sd.items():
        if not isinstance(t, torch.Tensor):
            raise FormatError(f"{where}: entry {k!r} is not a tensor")
        if overlapping(t):
            raise FormatError(
                f"{where}: tensor {k} declares more values than the file stores (overlapping "
                "strides); the file is damaged or hostile and is refused"
            )
        if not (t.is_floating_point() or t.dtype in (torch.int64, torch.int32, torch.uint8)):
            raise FormatError(f"{where}: tensor {k} has dtype {t.dtype}; expected floating point weights")
        t = t.detach().to(torch.float32)
        # A finite sum proves every element finite (NaN and Inf propagate); only a sum that is not
        # finite (which large finite weights can also cause) needs the element-wise check.
        if not torch.isfinite(t.sum()) and not torch.isfinite(t).all():
            raise FormatError(f"{where}: tensor {k} contains NaN or Inf; the checkpoint is corrupt (re-download it)")
        out[k] = t
    return out


def generator_class(cfg: GeneratorConfig | StyleGAN3Config) -> type[Generator]:
    """The generator a config builds: StyleGAN3Generator for a StyleGAN3Config, else StyleGAN2's."""
    return StyleGAN3Generator if isinstance(cfg, StyleGAN3Config) else Generator


def config_from_dict(d: dict[str, Any]) -> GeneratorConfig | StyleGAN3Config:
    """A config as `to_dict()` wrote it; StyleGAN3 configs carry `family: stylegan3`."""
    if not isinstance(d, dict):
        raise ConfigError(f"a generator config must be a JSON object, got {type(d).__name__}")
    return StyleGAN3Config.from_dict(d) if d.get("family") == FAMILY_STYLEGAN3 else GeneratorConfig.from_dict(d)


def _build(
    cfg: GeneratorConfig | StyleGAN3Config, sd: dict[str, torch.Tensor], where: str, w_avg_known: bool
) -> Generator:
    with torch.device("meta"):
        G = generator_class(cfg)(cfg)
    G.requires_grad_(False)
    own = G.state_dict()
    if not w_avg_known and "mapping.w_avg" not in sd:
        sd = {**sd, "mapping.w_avg": torch.zeros(cfg.w_dim)}
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        raise FormatError(
            f"{where}: the tensors do not form a {cfg.img_resolution}px "
            f"{getattr(cfg, 'variant', 'StyleGAN2')} generator "
            f"(missing {missing[:4]}{'...' if len(missing) > 4 else ''}, "
            f"unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''})"
        )
    for k, t in own.items():
        if tuple(sd[k].shape) != tuple(t.shape):
            raise FormatError(
                f"{where}: tensor {k} has shape {list(sd[k].shape)}, expected {list(t.shape)} "
                "for the architecture inferred from the file"
            )
    G.load_state_dict(sd, assign=True)
    return G.eval()


def load_generator(path: str | os.PathLike, device: torch.device | str = "cpu") -> Generator:
    """Load a generator from any supported file; eval mode, gradients off, on `device`."""
    path = Path(path)
    data = read_model_file(path)
    where = path.name
    try:
        G = _load(data, where)
    except FormatError:
        raise
    except (
        RuntimeError,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        EOFError,
        OverflowError,
        MemoryError,
        zipfile.BadZipFile,
    ) as e:
        # Damaged files fail in many places (zip directory, tensor shapes, nested structures); they
        # all mean the same to the user.
        raise FormatError(
            f"{where} is damaged or not a generator comfyui-nada can read "
            f"({type(e).__name__}: {str(e)[:200]}); re-download or re-export it"
        ) from None
    G.metadata.setdefault("source_file", path.name)
    G.metadata["source_bytes"] = len(data)
    return G.to(device)


def _load(data: bytes, where: str) -> Generator:
    kind = detect_format(data)
    meta: dict[str, Any] = {}
    w_avg_known = True
    if kind == "safetensors":
        cfg, sd, meta = _load_safetensors(data, where)
    elif kind in ("torch-zip", "torch-legacy"):
        cfg, sd, w_avg_known, meta = _load_torch(data, where)
    elif kind == "pickle":
        obj = safe_load(data)
        if isinstance(obj, dict) and "G_ema" in obj:
            cfg, sd, info = nvidia.from_nvidia_pytorch(obj)
            meta = {"source_format": "nvidia-pytorch-pkl", "nvidia": info}
        elif isinstance(obj, (tuple, list)) and any(isinstance(x, TFNetworkRecord) for x in obj):
            cfg, sd, info = nvidia.from_nvidia_tf(obj)
            meta = {"source_format": "nvidia-tf-pkl", "nvidia": info}
        elif isinstance(obj, PersistentRecord):
            raise FormatError(f"{where} holds a single network ({obj.class_name}), not a network pickle with 'G_ema'")
        else:
            raise FormatError(
                f"{where} is a pickle but not a StyleGAN2/StyleGAN3 network pickle (found {type(obj).__name__})"
            )
        w_avg_known = "mapping.w_avg" in sd
    else:
        size = len(data)
        raise FormatError(
            f"{where} ({size} bytes) is not a generator file comfyui-nada can read: expected .safetensors, a "
            "rosinality/StyleGAN-NADA .pt or an NVIDIA StyleGAN2(-ADA) / StyleGAN3 .pkl"
            + ("; it is empty" if size == 0 else "; it may be truncated or of another kind")
        )
    sd = _finite_float(sd, where)
    try:
        G = _build(cfg, sd, where, w_avg_known)
    except ConfigError as e:
        raise FormatError(f"{where}: {e}") from None
    if not w_avg_known:
        with torch.no_grad():
            G.mapping.w_avg.copy_(G.mapping.estimate_w_avg())
        meta["w_avg"] = "estimated from 4096 seeded samples (the file has no average w)"
    G.metadata = meta
    return G


def _load_torch(data: bytes, where: str):
    obj = load_torch_bytes(data, where, "StyleGAN", FormatError)
    sd, latent_avg, info = rosinality.unwrap_checkpoint(obj)
    if rosinality.is_rosinality(sd):
        cfg, ours = rosinality.from_rosinality(sd)
        if latent_avg is not None:
            ours["mapping.w_avg"] = latent_avg.reshape(-1)
        return cfg, ours, latent_avg is not None, {"source_format": "rosinality-pt", "checkpoint": info}
    cfg = nvidia.config_from_ours(sd)
    return cfg, dict(sd), "mapping.w_avg" in sd, {"source_format": "state-dict-pt", "checkpoint": info}


def _load_safetensors(data: bytes, where: str):
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    try:
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + n])
        tensors = st_load(data)
    except (SafetensorError, ValueError, UnicodeDecodeError) as e:
        raise FormatError(f"{where} is a damaged .safetensors file ({e}); re-download or re-save it") from None
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT_NAME:
        if "format" in meta and meta["format"] == "nada.adapter":
            raise FormatError(
                f"{where} is a NADA adapter, not a generator; apply it with Apply Adapters / nada.apply_adapters"
            )
        cfg = nvidia.config_from_ours(tensors)
        return cfg, tensors, {"source_format": "safetensors-state-dict"}
    try:
        version = int(meta.get("format_version", "0"))
        cfg = config_from_dict(json.loads(meta["config"]))
        extra = json.loads(meta.get("metadata", "{}"))
    except (KeyError, ValueError, ConfigError) as e:
        raise FormatError(f"{where}: the generator description in the header is invalid ({e})") from None
    if version > FORMAT_VERSION:
        raise FormatError(f"{where} was written by a newer comfyui-nada (format {version}); update comfyui-nada")
    extra = extra if isinstance(extra, dict) else {}
    extra.setdefault("source_format", "nada-safetensors")
    return cfg, tensors, extra


def save_generator(
    G: Generator,
    path: str | os.PathLike,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write G as .safetensors with its config and provenance (G.metadata + `metadata`) in the header.

    Atomic, and refuses to replace an existing file unless `overwrite=True`. `dtype=torch.float16`
    halves the file; loading casts back to float32.
    """
    from safetensors.torch import save as st_save

    meta = {**(getattr(G, "metadata", None) or {}), **(metadata or {})}
    tensors = {
        k: (v.to(dtype) if dtype is not None else v).detach().to("cpu").contiguous() for k, v in G.state_dict().items()
    }
    header = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(G.config.to_dict()),
        "metadata": json.dumps(meta, default=str),
        "fingerprint": G.fingerprint(),
    }
    with _naming_the_flag():
        return atomic_write_bytes(Path(path), st_save(tensors, metadata=header), overwrite=overwrite)


def export_rosinality(G: Generator, path: str | os.PathLike, overwrite: bool = False, strict: bool = False) -> Path:
    """Write G as a rosinality `.pt` ({'g_ema', 'latent_avg'}) for StyleGAN-NADA, e4e, ReStyle, ...

    A channel table that rosinality's `Generator(size, style_dim, n_mlp, channel_multiplier)` cannot
    build is written with a warning (tools that read channels from the tensors load it); `strict=True`
    refuses it instead, for files meant for the original tools."""
    if isinstance(G.config, StyleGAN3Config):
        raise ConfigError(
            "rosinality's format holds StyleGAN2 generators only; save this StyleGAN3 generator as "
            ".safetensors (save_generator) instead"
        )
    sd = {k: v.detach().to("cpu") for k, v in G.state_dict().items()}
    g_ema = rosinality.to_rosinality(G.config, sd, strict=strict)
    obj = {"g_ema": g_ema, "latent_avg": sd["mapping.w_avg"].clone()}
    with _naming_the_flag():
        return atomic_write(Path(path), lambda f: torch.save(obj, f), overwrite=overwrite)


@contextlib.contextmanager
def _naming_the_flag():
    # Python callers need to know which argument allows replacing the file.
    try:
        yield
    except FileExistsNadaError as e:
        raise FileExistsNadaError(f"{e}; pass overwrite=True to replace it") from None
