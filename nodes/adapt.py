"""The NADA Adapt node: the fine-tune on the canvas, with progress, previews, cancel and an autosave.

Everything about the training itself is `nada.adapt`; this node adds what ComfyUI needs around it:
memory freed first, a progress bar with preview grids, loss and it/s on the node, events for the loss
curve (web/js/nada_adapt.js), a cancel check every step, and an autosave in
output/stylegan/nada-autosave/ named by a hash of every input, so re-queuing after a cache eviction or
a restart loads the result instead of training again.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import time
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..nada import adapt as nada_adapt
from ..nada import adapters as nada_adapters
from ..nada import clip as nada_clip
from ..nada import errors as nada_errors
from ..nada import images as nada_images
from ..nada import layers as nada_layers
from ..nada.stylegan2 import formats as nada_formats
from . import comfy_bridge as bridge
from .types import CLIP, DIRECTION, GENERATOR

log = logging.getLogger(__name__)

CATEGORY = "StyleGAN-NADA/training"
AUTOSAVE_DIR = "nada-autosave"
# The adapter of a lora/modulation run, kept next to its autosaved generator; an extension no loader
# lists, so it does not show up among the generators.
ADAPTER_SUFFIX = ".adapter"
EVENT_START = "nada.adapt.start"
EVENT_PROGRESS = "nada.adapt.progress"
LAYER_CHOICES = [*nada_layers.PRESETS, nada_layers.AUTO]
TEXT_INTERVAL_S = 0.25  # at most four text updates per second on the node (the last step always shows)
# The node inputs whose names differ from the engine's AdaptConfig fields (error messages use the input).
INPUT_OF_FIELD = {"lr": "learning_rate", "seed": "train_seed"}


def content_hash(obj: Any, h: Any = None) -> str:
    """A stable hash of nested dataclasses / dicts / lists / tensors / scalars (the adapt inputs)."""
    top = h is None
    h = h or hashlib.sha256()
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous()
        h.update(f"T|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, torch.nn.Module):
        h.update(b"M|")
        for name, t in sorted(obj.state_dict().items()):
            h.update(name.encode())
            content_hash(t, h)
    elif hasattr(obj, "__dataclass_fields__"):
        h.update(f"D|{type(obj).__name__}|".encode())
        for name in sorted(obj.__dataclass_fields__):
            h.update(name.encode())
            content_hash(getattr(obj, name), h)
    elif isinstance(obj, dict):
        h.update(b"{")
        for k in sorted(obj, key=str):
            h.update(str(k).encode())
            content_hash(obj[k], h)
    elif isinstance(obj, (list, tuple)):
        h.update(f"[{len(obj)}|".encode())
        for x in obj:
            content_hash(x, h)
    else:
        h.update(f"{type(obj).__name__}|{obj!r}|".encode())
    return h.hexdigest() if top else ""


def clip_identity(clip: Any) -> Any:
    """What identifies a CLIP ensemble for the autosave key: its members' sources and weights.

    Hashing every CLIP weight would cost seconds per queue; the member description (architecture,
    pretrained tag or weights file, config, precision, weight) names the same models.
    """
    return nada_clip.as_ensemble(clip).describe()


def _slug(text: str, limit: int = 40) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return (s[:limit].rstrip("-")) or "adapted"


def _direction_label(direction: Any) -> str:
    target = dict(getattr(direction, "provenance", {}) or {}).get("target")
    return target if isinstance(target, str) and target != "images" else f"{getattr(direction, 'kind', 'nada')}"


def loss_plot(losses: list[float], width: int = 512, height: int = 256) -> torch.Tensor:
    """The loss curve as a ComfyUI IMAGE [1, H, W, 3] (drawn with PIL; no plotting library needed)."""
    img = Image.new("RGB", (width, height), (24, 24, 24))
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 56, 12, 14, 26
    draw.rectangle([left, top, width - right, height - bottom], outline=(80, 80, 80))
    finite = [v for v in losses if math.isfinite(v)]
    if finite:
        lo, hi = min(finite), max(finite)
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        n = max(1, len(losses) - 1)
        pw, ph = width - left - right, height - top - bottom
        pts = [
            (left + pw * i / n, top + ph * (1 - (v - lo) / (hi - lo)))
            for i, v in enumerate(losses)
            if math.isfinite(v)
        ]
        if len(pts) == 1:
            pts = pts * 2
        draw.line(pts, fill=(102, 204, 255), width=2)
        draw.text((4, top), f"{hi:.4g}", fill=(200, 200, 200))
        draw.text((4, height - bottom - 10), f"{lo:.4g}", fill=(200, 200, 200))
        draw.text((left, height - bottom + 6), f"step 1..{len(losses)}  final loss {losses[-1]:.4f}",
                  fill=(220, 220, 220))
    else:
        draw.text((left + 8, height // 2), "no steps ran", fill=(200, 200, 200))
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]
    return arr.to(bridge.intermediate_device())


def _module_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def _clip_bytes(clip: Any) -> int:
    return sum(_module_bytes(m.model.model) for m in nada_clip.as_ensemble(clip))


class NadaAdapt:
    NODE_ID = "NADA_Adapt"
    DISPLAY_NAME = "NADA Adapt (StyleGAN-NADA)"
    CATEGORY = CATEGORY
    EXPERIMENTAL = True
    DESCRIPTION = (
        "Fine-tunes a copy of the generator so its images move along the CLIP direction (e.g. photo -> "
        "pencil sketch) while keeping everything else. Shows progress, previews and the loss on the node; "
        "Cancel stops within one step. The result is saved to output/stylegan/nada-autosave/ and reused "
        "when the same inputs are queued again."
    )
    SEARCH_ALIASES = ["stylegan nada", "domain adaptation", "clip guided", "train stylegan", "fine-tune gan"]
    RETURN_TYPES = (GENERATOR, "IMAGE")
    RETURN_NAMES = ("generator", "loss_plot")
    OUTPUT_TOOLTIPS = (
        "The adapted generator (a new one; the input is unchanged).",
        "The loss curve of the run as an image.",
    )
    FUNCTION = "adapt"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": (GENERATOR, {"tooltip": "The generator to adapt; it is never modified."}),
                "clip": (CLIP, {"tooltip": "The CLIP model (or ensemble) that judges the images."}),
                "direction": (DIRECTION, {
                    "tooltip": "Where to move, from Encode Prompt Pair, Image Direction or Combine Directions "
                               "(made with the same CLIP)."}),
                "steps": ("INT", {"default": 150, "min": 1, "max": 100000, "step": 1,
                                  "tooltip": "Training steps: 150-400 for styles, 400-600 for image targets."}),
                "learning_rate": ("FLOAT", {"default": 0.002, "min": 0.00001, "max": 0.1, "step": 0.0001,
                                            "round": 0.00001,
                                            "tooltip": "Adam learning rate (0.002 is the paper's)."}),
                "layers": (LAYER_CHOICES, {"default": "all", "tooltip": (
                    "Which layers train: all convolutions (default), a preset (texture = colours and "
                    "strokes, shape = coarse geometry), or auto = the paper's adaptive top-k selection.")}),
                "train_seed": ("INT", {"default": 0, "min": 0, "max": 2**63 - 1, "step": 1,
                                       "tooltip": "Seed of every random draw of the run; same inputs + seed = "
                                                  "same result."}),
                "preview_every": ("INT", {"default": 25, "min": 0, "max": 100000, "step": 1,
                                          "tooltip": "Show a preview grid on the node every N steps (0 = only "
                                                     "at the start and the end)."}),
            },
            "optional": {
                "batch": ("INT", {"default": 2, "min": 1, "max": 64, "step": 1,
                                  "tooltip": "Image pairs per step (2 is the paper's)."}),
                "auto_k": ("INT", {"default": 0, "min": 0, "max": 64, "step": 1,
                                   "tooltip": "layers = auto: W+ entries trained per step (0 = two thirds)."}),
                "mixing": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.05,
                                     "tooltip": "Style-mixing probability (0.9 helps shape changes)."}),
                "lambda_global": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.1,
                                            "tooltip": "Weight of the global CLIP loss toward the target."}),
                "lambda_patch": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.1,
                                           "tooltip": "Weight of the patch-directional loss (local textures)."}),
                "parameterization": (list(nada_adapt.PARAMETERIZATIONS), {"default": "full", "tooltip": (
                    "full = train the weights (the paper); lora = low-rank weight updates; modulation = "
                    "per-channel style scales (~6k numbers). lora/modulation results can be saved as tiny "
                    "adapters with Save NADA Adapter.")}),
                "rank": ("INT", {"default": 4, "min": 1, "max": 256, "step": 1,
                                 "tooltip": "parameterization = lora: rank of each weight update."}),
                "reuse_saved": ("BOOLEAN", {"default": True,
                                            "tooltip": "Load the autosaved result of identical inputs instead "
                                                       "of training again."}),
            },
        }

    def adapt(self, generator, clip, direction, steps, learning_rate, layers, train_seed, preview_every,
              batch=2, auto_k=0, mixing=0.0, lambda_global=0.0, lambda_patch=0.0, parameterization="full",
              rank=4, reuse_saved=True):
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            # The engine accepts 0 (a plain copy), but on the node it only hides a mistake.
            raise bridge.NodeError(f"steps must be at least 1 (got {steps!r}); set steps to 150-400 for a style")
        try:
            config = nada_adapt.AdaptConfig(
                steps=steps, lr=learning_rate, layers=layers, seed=train_seed, preview_every=preview_every,
                batch=batch, auto_k=auto_k or None, mixing=mixing, lambda_global=lambda_global,
                lambda_patch=lambda_patch, parameterization=parameterization, rank=rank,
            )
        except nada_errors.ConfigError as e:  # name the node's input, not the engine's field
            raise bridge.NodeError(re.sub(r"AdaptConfig\.(\w+)", lambda m: INPUT_OF_FIELD.get(m[1], m[1]), str(e))) from None
        key = content_hash([generator.fingerprint(), direction, clip_identity(clip), config.to_dict()])[:20]
        name = f"{_slug(_direction_label(direction))}_{key}"
        folder = os.path.join(bridge.stylegan_output_directory(), AUTOSAVE_DIR)
        path = os.path.join(folder, f"{name}.safetensors")
        node_id = bridge.current_node_id()

        if reuse_saved and os.path.isfile(path):
            G2 = nada_formats.load_generator(path)
            adapter_path = path.replace(".safetensors", ADAPTER_SUFFIX)
            if os.path.isfile(adapter_path):
                G2.adapter = nada_adapters.load_adapter(adapter_path)
            bridge.send_text(f"reused {AUTOSAVE_DIR}/{name}.safetensors (same inputs)", node_id)
            return self._outputs(G2)

        device = bridge.torch_device()
        bridge.free_memory(_module_bytes(generator) * 6 + _clip_bytes(clip) + (1 << 30), device)
        progress = bridge.Progress(steps, node_id=node_id)
        all_units = nada_layers.all_units(generator)
        bridge.send_event(EVENT_START, {"node": node_id, "total": steps, "layers": all_units})
        last_text = [0.0]

        def on_step(p: nada_adapt.AdaptProgress) -> None:
            progress.update(p.step)
            bridge.send_event(EVENT_PROGRESS, {
                "node": node_id, "step": p.step, "total": p.total, "loss": float(p.loss),
                "its": float(p.it_per_s), "selected": list(p.units),
            })
            now = time.monotonic()
            if now - last_text[0] >= TEXT_INTERVAL_S or p.step == p.total:
                last_text[0] = now
                bridge.send_text(f"step {p.step}/{p.total} · loss {p.loss:.4f} · {p.it_per_s:.2f} it/s", node_id)

        def on_preview(step: int, images: torch.Tensor) -> None:
            progress.update(step, preview=nada_images.image_grid(images))

        def should_stop() -> bool:
            return progress.interrupted or bridge.interrupt_requested()

        # ComfyUI runs nodes under torch.inference_mode(); training needs autograd (nada.adapt also
        # guards this and makes its trainable copy inside the block).
        with torch.inference_mode(False):
            try:
                G2 = nada_adapt.adapt(generator, clip, direction, config, callback=on_step, preview=on_preview,
                                should_stop=should_stop, device=device)
            except nada_adapt.AdaptError as e:
                if e.generator is not None and e.step > 1:
                    self._save(e.generator, folder, f"{name}_failed-step{e.step - 1}")
                raise
            finally:
                bridge.soft_empty_cache()

        if G2.metadata.get("adaptation", {}).get("interrupted"):
            done = G2.metadata["adaptation"]["steps"]
            saved = self._save(G2, folder, f"{name}_partial-step{done}") if done else None
            bridge.send_text(f"cancelled after {done}/{steps} steps"
                             + (f"; partial result in {AUTOSAVE_DIR}/{os.path.basename(saved)}" if saved else ""),
                             node_id)
            bridge.raise_if_interrupted()  # clears ComfyUI's flag if the progress hook did not
            raise bridge.interrupt_exception_type()()
        self._save(G2, folder, name)
        return self._outputs(G2)

    @staticmethod
    def _save(G, folder: str, name: str) -> str | None:
        path = os.path.join(folder, f"{name}.safetensors")
        if os.path.exists(path):
            return path
        os.makedirs(folder, exist_ok=True)
        try:
            nada_formats.save_generator(G, path)
            if getattr(G, "adapter", None) is not None:
                nada_adapters.save_adapter(G.adapter, path.replace(".safetensors", ADAPTER_SUFFIX))
        except FileExistsError:  # another run of the same inputs saved it first
            pass
        return path

    @staticmethod
    def _outputs(G2):
        meta = G2.metadata.get("adaptation", {})
        losses = [float(v) for v in meta.get("loss_history", [])]
        ui = {"nada_loss": losses}
        if meta.get("config", {}).get("layers") == nada_layers.AUTO:
            ui["nada_layers"] = list(meta.get("trained_units", []))
        return {"ui": ui, "result": (G2, loss_plot(losses))}


NADA_NODES = [NadaAdapt]
