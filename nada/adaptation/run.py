"""The NADA fine-tune: shift a generator toward a CLIP direction, keeping what the direction does not name.

    result = adapt(G, clip, direction, AdaptConfig(steps=200), callback=print_progress)
    G2 = result.generator

How one step works (nada-spec 1, 2.3, 2.6-2.11, with this project's decisions; code in `.step`):

1. z ~ N(0, I) for `batch` pairs from the run's seeded RNG; w = the *frozen* mapping of z (truncation 1).
   With `mixing` > 0 each pair, with that probability, gets a second w from a second z after a random
   crossover index; the frozen and the trainable image of a pair use the same W+ (the official code
   draws a separate crossover per generator, so its pairs differ by more than the adaptation:
   `crossover="per_generator"`).
2. The frozen and trainable synthesis networks render the same W+ with the *same* noise maps (the
   official code draws independent noise, so dI also carries a noise component: `noise="independent"`).
3. Loss = sum over CLIP members m of weight_m * (lambda_direction * directional + lambda_global * global
   + lambda_manifold * manifold + lambda_patch * patch), see `nada.losses`.
4. Adam over the trainable tensors only, lr * 0.8 and betas (0, 0.99 ** 0.8) (the official effective
   settings, a StyleGAN2 lazy-regularisation leftover), eps 1e-8, no weight decay, no EMA. Because the
   two generators start equal and share w and noise, dI is exactly zero at the first step; its
   gradient has a direction but no meaningful scale, so Adam's moments are reset after that step
   (see `Run.step`; the official code never hits this because its noise maps differ: `adam_reset="never"`).
5. With `layers="auto"`, before the step (every `select_every` steps) the k most relevant W+ indices are
   found (`nada.layers.select_w_indices`) and only the units reading them are trained this step.
   The selection loss is the global loss toward the target embedding of the direction: the target
   text (template-averaged) in text mode, the mean target-image embedding in image mode (the official
   code uses the text `target_class` even when the target is images; see nada-spec 2.9).

Every difference from the official code is a switch of `AdaptConfig`; `compat="official"` sets them all
to the official behaviour (docs/fidelity.md). `make_run` + `Run.step(StepInputs(...))` runs steps on
given draws.

Guarantees:

- The input generator is never modified, not even moved: if training runs on another device, a
  copy is made there. The trainable generator is a deep copy made inside `torch.inference_mode(False)`,
  so `adapt` works when called inside `torch.inference_mode()` (as ComfyUI runs nodes) with a
  generator whose tensors are inference tensors.
- The CLIP ensemble is not modified either: if its models are not on the training device, the run
  uses copies moved there (pass models already on the device to avoid the copy). CLIP weights get no
  gradients.
- Deterministic for a seed on one device: every random draw (z, mixing, noise, patch boxes, selection
  batches) comes from `torch.Generator`s seeded from `config.seed`; the global RNG is not used. On
  the CPU the bits are the same for the same torch build and thread count (a different
  `torch.set_num_threads` splits sums differently); on CUDA see docs/determinism.md. No draw depends
  on `config.steps`, so a run resumed from a state saved after step N (`resume=`) gives the bits of
  a run that never stopped.
- A non-finite loss or gradient stops the run with `AdaptError`; no non-finite update is ever applied,
  so `error.result` holds the weights as of the last completed step (finite), with metadata.
- `should_stop()` returning True (e.g. ComfyUI's cancel) ends the run before the next step; the
  result so far is returned with `interrupted=True`.
- The result's generator is in eval mode with gradients off, on the input generator's device, and
  carries `metadata["adaptation"]`: prompts / direction provenance, steps, config, CLIP members and
  weights, trained units, the selection history (auto mode), the loss history and the base fingerprint.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..clip import as_ensemble
from ..cpu_memory import reuse_freed_memory
from ..devices import default_device, is_out_of_memory
from ..errors import ConfigError, DirectionError, NadaError
from ..templates import PART_TEMPLATES, apply_templates
from .config import AdaptConfig
from .result import AdaptResult, Provenance, build_result
from .step import Guide, NonFinite, Run

log = logging.getLogger(__name__)


class AdaptError(NadaError):
    """The adaptation could not continue (e.g. the loss became NaN/Inf).

    `result` is the `AdaptResult` as of the last completed step (finite weights), or None when the
    failure happened before any step; `generator` is its generator; `step` is the step that failed;
    `saved` is where `nada.runs` saved that result, if it did. Any other exception inside a step (out of
    memory, a CLIP that fails) is re-raised as an `AdaptError` with `resumable=True` and the result as of
    the last completed step (with `.state` when asked for), chained to the original.
    """

    def __init__(self, message: str, result: AdaptResult | None = None, step: int = 0, resumable: bool = False):
        super().__init__(message)
        self.result = result
        self.generator = result.generator if result is not None else None
        self.step = step
        self.resumable = resumable  # the failure was not the numbers' (e.g. out of memory): continuing may work
        self.saved: Any = None


class AdaptOutOfMemory(AdaptError):
    """The device ran out of memory during a step. `result` holds the weights as of the last completed
    step (the failed step applied no update), so `nada.runs` saves it like any failed run."""


def out_of_memory_advice(cfg: AdaptConfig, G: nn.Module, device: torch.device, failed: int) -> str:
    """What ran out and what to lower, in the order that saves the most memory for the least change."""
    tips = [f"lower batch (now {cfg.batch}; the activations scale with it)"]
    if cfg.gradient_checkpointing is not True:
        tips.append("set gradient_checkpointing on")
    if cfg.autocast == "off":
        tips.append("set autocast to bf16")
    if cfg.lambda_patch > 0:
        tips.append(f"lower patch_count (now {cfg.patch_count})")
    tips.append("use one CLIP instead of an ensemble, or free other models first")
    return (
        f"{device} ran out of memory at step {failed} of {cfg.steps} ({G.config.img_resolution} px): "
        + "; ".join(tips)
        + f". No update was applied; the weights as of step {failed - 1} are kept."
    )


@dataclasses.dataclass(frozen=True)
class AdaptProgress:
    """What the progress callback receives after every step."""

    step: int  # steps completed, 1..total
    total: int
    loss: float  # total loss of this step
    terms: dict[str, float]  # the unweighted loss terms, averaged over CLIP members by weight
    it_per_s: float  # steps per second, averaged over the steps run in this call
    elapsed: float  # seconds since the start of this call
    units: tuple[str, ...]  # units trained this step
    w_indices: tuple[int, ...] | None  # W+ indices selected this step ("auto" only)


ProgressCallback = Callable[[AdaptProgress], None]
PreviewCallback = Callable[[int, torch.Tensor], None]  # (step, images [N, C, H, W] in [-1, 1] on CPU)
CheckpointCallback = Callable[[AdaptResult], None]  # a snapshot with `.state`, every `checkpoint_every` steps


def adapt(
    G: nn.Module,
    clip: Any,
    direction: Any,
    config: AdaptConfig | None = None,
    callback: ProgressCallback | None = None,
    preview: PreviewCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: torch.device | str | None = None,
    resume: dict[str, Any] | None = None,
    checkpoint: CheckpointCallback | None = None,
    checkpoint_every: int = 0,
    with_state: bool = False,
) -> AdaptResult:
    """Adapt `G` toward `direction` under the CLIP ensemble `clip`; return an `AdaptResult`.

    `direction` comes from `nada.text_direction`, `nada.image_direction` or `nada.combine_directions`
    with the same `clip`. `callback(AdaptProgress)` runs after every step; `preview(step, images)` runs
    before the first step, every `config.preview_every` steps and after the last (when
    `config.preview_count` > 0); `should_stop()` is polled before every step. `device` is where the
    training runs (default: CUDA when available, else the CPU); the result is returned on `G`'s device.

    Resume and save-every-N (used by `nada.runs`): `resume` is a `result.state` of an earlier run of
    the same G, direction, CLIP and result-changing config (any `steps`); the run continues after its
    step. `checkpoint(snapshot)` receives a result with `.state` every `checkpoint_every` steps;
    `with_state=True` makes the returned result (and `AdaptError.result`) carry `.state` as well.
    See the module docstring for the guarantees (input never modified, determinism, NaN handling).
    """
    cfg = config or AdaptConfig()
    cfg.validate()
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 0:
        raise ConfigError(f"checkpoint_every must be an integer >= 0, got {checkpoint_every!r}")
    device = torch.device(device) if device is not None else default_device()
    if G.config.img_channels != 3:
        raise ConfigError(f"CLIP guidance needs an RGB generator; this one has {G.config.img_channels} channels")
    with torch.inference_mode(False), reuse_freed_memory(device):
        run = Run(G, _guides(clip, direction, device, cfg), cfg, device)
        if resume is not None:
            run.load_state_dict(resume)
            if run.done > cfg.steps:
                raise ConfigError(f"the saved run is at step {run.done}, beyond steps = {cfg.steps}", field="steps")
        inputs = Provenance.of(G, as_ensemble(clip).describe(), direction)
        start, first = time.perf_counter(), run.done
        interrupted = False

        def result(snapshot: bool = False, state: bool = with_state) -> AdaptResult:
            return build_result(run, inputs, interrupted, snapshot=snapshot, with_state=state)

        previews = preview is not None and cfg.preview_count > 0
        if previews:
            preview(run.done, run.preview())
        while run.done < cfg.steps:
            if should_stop is not None and should_stop():
                interrupted = True
                log.info("adaptation stopped by request after %d of %d steps", run.done, cfg.steps)
                break
            oom = False
            try:
                value, terms = run.step()
            except NonFinite as e:
                failed = run.done + 1
                raise AdaptError(
                    f"the adaptation diverged at step {failed} of {cfg.steps}: {e}. "
                    f"No update was applied; `error.generator` holds the weights as of step {run.done}. "
                    f"Lower the learning rate (now {cfg.lr}), or use full precision for CLIP.",
                    result=result(),
                    step=failed,
                ) from None
            except Exception as e:  # the step in flight is lost, the steps before it are not
                if not is_out_of_memory(e):
                    failed = run.done + 1
                    raise AdaptError(
                        f"the adaptation stopped at step {failed} of {cfg.steps}: {type(e).__name__}: {e}",
                        result=result(),
                        step=failed,
                        resumable=True,
                    ) from e
                oom = True  # handled outside the except block, so the step's activations can be freed
            if oom:
                run.optim.zero_grad(set_to_none=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                failed = run.done + 1
                log.warning("out of memory at step %d on %s", failed, device)
                raise AdaptOutOfMemory(
                    out_of_memory_advice(cfg, G, device, failed), result=result(), step=failed, resumable=True
                )
            done = run.done
            elapsed = time.perf_counter() - start
            if callback is not None:
                callback(
                    AdaptProgress(
                        step=done, total=cfg.steps, loss=value, terms=terms,
                        it_per_s=(done - first) / elapsed if elapsed > 0 else 0.0, elapsed=elapsed,
                        units=run.units, w_indices=run.w_indices,
                    )
                )  # fmt: skip
            if checkpoint is not None and checkpoint_every and done % checkpoint_every == 0 and done < cfg.steps:
                checkpoint(result(snapshot=True, state=True))
            if previews and cfg.preview_every > 0 and done % cfg.preview_every == 0 and done < cfg.steps:
                preview(done, run.preview())
        if previews and run.done > first:
            preview(run.done, run.preview())
        return result()


def make_run(
    G: nn.Module,
    clip: Any,
    direction: Any,
    config: AdaptConfig | None = None,
    device: torch.device | str | None = None,
) -> Run:
    """The working state of an adaptation, for running steps yourself: `run.step(StepInputs(...))`
    runs one step on given z, noise maps and crossovers (see `nada.adaptation.step.StepInputs`), e.g.
    to compare with another implementation; `run.params` are the trained tensors, `run.optim` Adam."""
    cfg = config or AdaptConfig()
    device = torch.device(device) if device is not None else default_device()
    with torch.inference_mode(False):
        return Run(G, _guides(clip, direction, device, cfg), cfg, device)


def _text_embedding(model: Any, text: str) -> torch.Tensor:
    """[D] unit embedding of one text, made outside inference mode."""
    with torch.inference_mode(False), torch.no_grad():
        return torch.nn.functional.normalize(model.encode_text([text])[0].float(), dim=-1).clone()


def _official_patch_directions(model: Any, source: str, target: str) -> torch.Tensor:
    """[P, D]: per part template p, the text direction of p(source) -> p(target) over the ImageNet
    templates (the official code wraps each part prompt again)."""
    rows = []
    with torch.inference_mode(False), torch.no_grad():
        for part in PART_TEMPLATES:
            ts = torch.nn.functional.normalize(
                model.encode_text(apply_templates(part.format(source), "imagenet")), dim=-1
            )
            tt = torch.nn.functional.normalize(
                model.encode_text(apply_templates(part.format(target), "imagenet")), dim=-1
            )
            rows.append(torch.nn.functional.normalize((tt - ts).mean(0).float(), dim=-1))
    return torch.stack(rows).clone()


def _guides(clip: Any, direction: Any, device: torch.device, cfg: AdaptConfig) -> list[Guide]:
    """The ensemble's members on `device` (copies where needed, see `ClipModel.on`) with their vectors."""
    need_patch = cfg.lambda_patch > 0
    ensemble = as_ensemble(clip)
    direction.check(ensemble)
    # A NaN direction would only surface as a "diverged" loss, whose advice (lower the learning
    # rate) is wrong; name the real cause instead.
    for m in ensemble:
        parts = (direction.vectors, direction.targets, direction.sources) + ((direction.patch,) if need_patch else ())
        if not all(bool(torch.isfinite(part[m.name]).all()) for part in parts):
            raise DirectionError(
                f"the direction contains NaN or Inf values (CLIP {m.name!r}); make it again with Encode Prompt "
                "Pair or Image Direction from finite inputs"
            )
    texts = direction.kind == "text"
    if not texts and (cfg.text_targets == "official" or (need_patch and cfg.patch_templates != "parts")):
        log.info(
            "text_targets / patch_templates: a %s direction has no texts; the default targets are used", direction.kind
        )
    antialias = cfg.clip_antialias == "on"  # the default calls encode_images as every CLIP-like object takes it
    guides = []
    for m in ensemble.on(device):
        target = direction.targets[m.name].to(device)
        global_target = select_target = target
        patch = direction.patch[m.name] if need_patch else direction.vectors[m.name]
        if texts and cfg.text_targets == "official":
            global_target = _text_embedding(m.model, f"a {direction.provenance['target']}").to(device)
            select_target = _text_embedding(m.model, direction.provenance["target"]).to(device)
        if texts and need_patch and cfg.patch_templates == "parts_in_imagenet":
            patch = _official_patch_directions(m.model, direction.provenance["source"], direction.provenance["target"])
        guides.append(
            Guide(
                name=m.name,
                weight=float(m.weight),
                encode=m.model.encode_images
                if antialias
                else functools.partial(m.model.encode_images, antialias=False),
                direction=direction.vectors[m.name].to(device),
                target=target,
                source=direction.sources[m.name].to(device),
                patch_directions=patch.to(device),
                global_target=global_target,
                select_target=select_target,
            )
        )
    return guides
