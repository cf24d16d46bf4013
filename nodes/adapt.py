"""The NADA Adapt node: the fine-tune on the canvas, with progress, previews, cancel and an autosave.

The training is `nada.adapt` and its persistence `nada.runs` (the same code as `python -m nada adapt
--runs-dir`); this node adds what ComfyUI needs around them: memory freed first, a progress bar with
preview grids, loss and it/s on the node, events for the loss curve (web/js/nada_adapt.js), and a
cancel check every step. Its training inputs are generated from `AdaptConfig`'s field options.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from nada import images as nada_images
from nada import layers as nada_layers
from nada import runs as nada_runs
from nada import sampling as nada_sampling
from nada.adaptation import AdaptConfig, AdaptError, AdaptOutOfMemory, AdaptProgress, AdaptResult
from nada.adaptation import memory as nada_memory
from nada.adaptation.step import use_checkpointing
from nada.devices import is_out_of_memory
from nada.errors import ConfigError

from . import comfy_bridge as bridge
from .types import CLIP, DIRECTION, GENERATOR, LOSS_MAP

log = logging.getLogger(__name__)

CATEGORY = "StyleGAN-NADA/training"
AUTOSAVE_DIR = "nada-autosave"
EVENT_START = "nada.adapt.start"
EVENT_PROGRESS = "nada.adapt.progress"
LAYER_CHOICES = [*nada_layers.PRESETS, nada_layers.AUTO]
TEXT_INTERVAL_S = 0.25  # at most four text updates per second on the node (the last step always shows)
GIB = 1 << 30

# The AdaptConfig fields the node exposes, in widget order (saved workflows store widget values by
# position: new inputs only ever go at the end), with the node's name for each.
REQUIRED_FIELDS = {
    "steps": "steps",
    "lr": "learning_rate",
    "layers": "layers",
    "seed": "train_seed",
    "preview_every": "preview_every",
}
OPTIONAL_FIELDS = {
    "batch": "batch",
    "auto_k": "auto_k",
    "mixing": "mixing",
    "lambda_global": "lambda_global",
    "lambda_patch": "lambda_patch",
    "parameterization": "parameterization",
    "rank": "rank",
}
LATER_FIELDS = {"lambda_manifold": "lambda_manifold", "select_every": "select_every"}  # added after release 1
GPU_FIELDS = {"autocast": "autocast"}  # after autosave_limit_gb (issue 13)
INPUT_OF_FIELD = {**REQUIRED_FIELDS, **OPTIONAL_FIELDS, **LATER_FIELDS, **GPU_FIELDS}
MEMORY_FIXES = "lower batch, turn gradient_checkpointing on, set autocast to bf16"
FIELD_OF_INPUT = {v: k for k, v in INPUT_OF_FIELD.items()}


def config_input(field: str) -> tuple:
    """The node input of an AdaptConfig field: type, default and range from its `Option`."""
    default, opt = AdaptConfig.options()[field]
    default = opt.ui_default if opt.ui_default is not None else default
    tip = {"tooltip": opt.help[0].upper() + opt.help[1:] + "."}
    if opt.kind == "layers":
        return LAYER_CHOICES, {"default": default, **tip}
    if opt.kind == "choice":
        return list(opt.choices), {"default": default, **tip}
    lo = opt.ui_lo if opt.ui_lo is not None else opt.lo
    hi = opt.ui_hi if opt.ui_hi is not None else opt.hi
    if opt.kind == "int":
        if opt.optional:  # None ("derive it") is 0 on the widget
            default, lo = 0, 0
        return "INT", {
            "default": default,
            "min": int(lo),
            "max": int(hi if hi is not None else 2**31 - 1),
            "step": 1,
            **tip,
        }
    spec = {"default": default, "min": lo, "max": hi if hi is not None else 1e6, "step": opt.ui_step or 0.01}
    if opt.ui_round is not None:
        spec["round"] = opt.ui_round
    return "FLOAT", {**spec, **tip}


def config_from_inputs(values: dict[str, Any]) -> AdaptConfig:
    """The AdaptConfig of the node's inputs; a bad value raises a NodeError naming the node's input."""
    kw = {FIELD_OF_INPUT[name]: v for name, v in values.items()}
    if kw.get("auto_k") == 0:
        kw["auto_k"] = None
    try:
        return AdaptConfig(**kw)
    except ConfigError as e:
        raise node_error(e) from None


def node_error(e: ConfigError) -> bridge.NodeError:
    """The engine's message with the node's input name where it names a config field (`e.field`)."""
    if e.field is None:
        return bridge.NodeError(str(e))
    return bridge.NodeError(str(e).replace(f"AdaptConfig.{e.field}", INPUT_OF_FIELD.get(e.field, e.field)))


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
            (left + pw * i / n, top + ph * (1 - (v - lo) / (hi - lo))) for i, v in enumerate(losses) if math.isfinite(v)
        ]
        if len(pts) == 1:
            pts = pts * 2
        draw.line(pts, fill=(102, 204, 255), width=2)
        draw.text((4, top), f"{hi:.4g}", fill=(200, 200, 200))
        draw.text((4, height - bottom - 10), f"{lo:.4g}", fill=(200, 200, 200))
        draw.text(
            (left, height - bottom + 6), f"step 1..{len(losses)}  final loss {losses[-1]:.4f}", fill=(220, 220, 220)
        )
    else:
        draw.text((left + 8, height // 2), "no steps ran", fill=(200, 200, 200))
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]
    return arr.to(bridge.intermediate_device())


def training_bytes(generator: torch.nn.Module, clip: Any, config: AdaptConfig, device: torch.device) -> int:
    """What to free before training: weights, gradients, Adam and activations (`nada.adaptation.memory`)."""
    checkpointing = use_checkpointing(config, generator, device)
    return nada_memory.training_bytes(generator, clip, config, device, checkpointing)


def preview_batch(grids: list[Image.Image]) -> torch.Tensor:
    """The preview grids of a run as a ComfyUI IMAGE batch [N, H, W, 3], oldest first."""
    arrays = [torch.from_numpy(np.asarray(g.convert("RGB"), dtype=np.float32) / 255.0) for g in grids]
    return torch.stack(arrays).to(bridge.intermediate_device())


def loss_map(result: AdaptResult) -> dict[str, list[float]]:
    """ComfyUI's LOSS_MAP (comfy_extras/nodes_train.py): {"loss": [total per step]}, which its Plot Loss
    Graph node draws, plus each active loss term per step under its own name (unweighted)."""
    meta = result.metadata
    out = {"loss": [float(v) for v in meta.get("loss_history", [])]}
    for term, values in meta.get("loss_terms", {}).items():
        out[term] = [float("nan") if v is None else float(v) for v in values]
    return out


class NadaAdapt:
    NODE_ID = "NADA_Adapt"
    DISPLAY_NAME = "NADA Adapt (StyleGAN-NADA)"
    CATEGORY = CATEGORY
    EXPERIMENTAL = True
    DESCRIPTION = (
        "Fine-tunes a copy of the generator so its images move along the CLIP direction (e.g. photo -> "
        "pencil sketch) while keeping everything else. Shows progress, previews and the loss on the node; "
        "Cancel stops within one step. The result is saved to output/stylegan/nada-autosave/ and reused "
        "when the same inputs are queued again; raising steps continues the saved run."
    )
    SEARCH_ALIASES = ["stylegan nada", "domain adaptation", "clip guided", "train stylegan", "fine-tune gan"]
    RETURN_TYPES = (GENERATOR, "IMAGE", LOSS_MAP, "IMAGE")
    RETURN_NAMES = ("generator", "loss_plot", "loss", "previews")
    OUTPUT_TOOLTIPS = (
        "The adapted generator (a new one; the input is unchanged).",
        "The loss curve of the run as an image.",
        "The loss per step for ComfyUI's Plot Loss Graph node ('loss': the total), with each loss term too.",
        "The preview grids of the run (before, every preview_every steps, after) as an IMAGE batch.",
    )
    FUNCTION = "adapt"

    @classmethod
    def INPUT_TYPES(cls):
        required = {
            "generator": (GENERATOR, {"tooltip": "The generator to adapt; it is never modified."}),
            "clip": (CLIP, {"tooltip": "The CLIP model (or ensemble) that judges the images."}),
            "direction": (
                DIRECTION,
                {
                    "tooltip": "Where to move, from Encode Prompt Pair, Image Direction or Combine Directions "
                    "(made with the same CLIP)."
                },
            ),
        }
        required |= {name: config_input(field) for field, name in REQUIRED_FIELDS.items()}
        optional = {name: config_input(field) for field, name in OPTIONAL_FIELDS.items()}
        optional["reuse_saved"] = (
            "BOOLEAN",
            {
                "default": True,
                "tooltip": (
                    "Load the autosaved result of identical inputs instead of training again, and continue a "
                    "saved shorter run when steps grows."
                ),
            },
        )
        optional |= {name: config_input(field) for field, name in LATER_FIELDS.items()}
        optional["autosave"] = (
            "BOOLEAN",
            {
                "default": True,
                "tooltip": (
                    f"Save the run in output/stylegan/{AUTOSAVE_DIR}/ (with its state, so it can be continued). "
                    "Off: nothing is written, reused or continued."
                ),
            },
        )
        optional["save_every"] = (
            "INT",
            {
                "default": 0,
                "min": 0,
                "max": 100000,
                "step": 1,
                "tooltip": (
                    "Also save a resumable snapshot every N steps (0 = off); a crash then loses at most N steps."
                ),
            },
        )
        optional["keep_last"] = (
            "INT",
            {
                "default": 2,
                "min": 1,
                "max": 1000,
                "step": 1,
                "tooltip": "Snapshots kept per run; older ones are deleted.",
            },
        )
        optional["autosave_limit_gb"] = (
            "FLOAT",
            {
                "default": 0.0,
                "min": 0.0,
                "max": 10000.0,
                "step": 0.5,
                "tooltip": (
                    "Size limit of the autosave folder in GB: the oldest saves of other runs are deleted first "
                    "(0 = no limit)."
                ),
            },
        )
        optional |= {name: config_input(field) for field, name in GPU_FIELDS.items()}
        optional["unload_all_models"] = (
            "BOOLEAN",
            {
                "default": False,
                "tooltip": (
                    "Unload every other model from the GPU before training (off: only as many as this run needs, "
                    "estimated from the resolution, batch and CLIP models)."
                ),
            },
        )
        return {"required": required, "optional": optional}

    def adapt(
        self,
        generator,
        clip,
        direction,
        steps,
        reuse_saved=True,
        autosave=True,
        save_every=0,
        keep_last=2,
        autosave_limit_gb=0.0,
        unload_all_models=False,
        **inputs,
    ):
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            # The engine accepts 0 (a plain copy), but on the node it only hides a mistake.
            raise bridge.NodeError(f"steps must be at least 1 (got {steps!r}); set steps to 150-400 for a style")
        config = config_from_inputs({"steps": steps, **inputs})
        try:
            policy = nada_runs.RunPolicy(
                autosave=bool(autosave),
                reuse=bool(reuse_saved),
                save_every=save_every,
                keep_last=keep_last,
                max_bytes=int(autosave_limit_gb * GIB),
            )
        except ConfigError as e:
            raise bridge.NodeError(
                str(e).replace("RunPolicy.max_bytes", "autosave_limit_gb").replace("RunPolicy.", "")
            ) from None
        store = nada_runs.RunStore(os.path.join(bridge.stylegan_output_directory(), AUTOSAVE_DIR), policy)
        node_id = bridge.current_node_id()
        device = bridge.torch_device()
        progress = bridge.Progress(steps, node_id=node_id)
        last_text = [0.0]

        def on_step(p: AdaptProgress) -> None:
            progress.update(p.step)
            bridge.send_event(
                EVENT_PROGRESS,
                {
                    "node": node_id,
                    "step": p.step,
                    "total": p.total,
                    "loss": float(p.loss),
                    "its": float(p.it_per_s),
                    "selected": list(p.units),
                },
            )
            now = time.monotonic()
            if now - last_text[0] >= TEXT_INTERVAL_S or p.step == p.total:
                last_text[0] = now
                bridge.send_text(f"step {p.step}/{p.total} · loss {p.loss:.4f} · {p.it_per_s:.2f} it/s", node_id)

        grids: list[Image.Image] = []

        def on_preview(step: int, images: torch.Tensor) -> None:
            grids.append(nada_images.image_grid(images))
            progress.update(step, preview=grids[-1])

        def should_stop() -> bool:
            return progress.interrupted or bridge.interrupt_requested()

        needed = training_bytes(generator, clip, config, device)
        bridge.make_room(needed, device, everything=bool(unload_all_models), advice=f"if it runs out: {MEMORY_FIXES}")
        bridge.send_event(EVENT_START, {"node": node_id, "total": steps, "layers": nada_layers.all_units(generator)})
        # ComfyUI runs nodes under torch.inference_mode(); training needs autograd (nada.adapt also
        # guards this and makes its trainable copy inside the block).
        with torch.inference_mode(False):
            try:
                outcome = nada_runs.run_adaptation(
                    generator,
                    clip,
                    direction,
                    config,
                    store,
                    label=_direction_label(direction),
                    callback=on_step,
                    preview=on_preview,
                    should_stop=should_stop,
                    device=device,
                )
            except ConfigError as e:  # found when the run meets the generator (e.g. auto_k too large)
                raise node_error(e) from None
            except AdaptOutOfMemory as e:
                where = f" They are saved in {AUTOSAVE_DIR}/{e.saved.name}." if e.saved is not None else ""
                raise bridge.NodeError(f"{e}{where}") from None
            except AdaptError as e:
                if e.saved is not None:
                    bridge.send_text(
                        f"failed at step {e.step}; last good weights in {AUTOSAVE_DIR}/{e.saved.name}", node_id
                    )
                raise
            except RuntimeError as e:  # out of memory before the first step (copying the models to the device)
                if not is_out_of_memory(e):
                    raise
                raise bridge.NodeError(
                    f"{device} ran out of memory before training started (about {needed / GIB:.1f} GiB needed): "
                    f"{MEMORY_FIXES}, use one CLIP, or set unload_all_models on"
                ) from None
            finally:
                bridge.soft_empty_cache()
        if outcome.reused is not None:
            bridge.send_text(f"reused {AUTOSAVE_DIR}/{outcome.reused.name} (same inputs)", node_id)
        elif outcome.resumed_from:
            log.info("continued the saved run from step %d", outcome.resumed_from)
        result = outcome.result
        if result.interrupted:
            saved = f"; partial result in {AUTOSAVE_DIR}/{outcome.saved.name}" if outcome.saved else ""
            bridge.send_text(f"cancelled after {result.steps}/{steps} steps{saved}", node_id)
            bridge.raise_if_interrupted()  # clears ComfyUI's flag if the progress hook did not
            raise bridge.interrupt_exception_type()()
        return self._outputs(result, grids)

    @staticmethod
    def _outputs(result: AdaptResult, grids: list[Image.Image]):
        losses = [float(v) for v in result.metadata.get("loss_history", [])]  # as saved: same when reused
        ui = {"nada_loss": losses}
        if result.config.auto:
            ui["nada_layers"] = list(result.metadata.get("trained_units", []))
        if not grids:  # reused, or previews off: the result's own grid, so the output is never empty
            cfg = result.config
            seeds = list(range(max(1, cfg.preview_count)))
            grids = [nada_images.image_grid(nada_sampling.sample(result.generator, seeds, cfg.preview_truncation))]
        outputs = (result.generator, loss_plot(losses), loss_map(result), preview_batch(grids))
        return {"ui": ui, "result": outputs}


NADA_NODES = [NadaAdapt]
