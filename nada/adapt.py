"""The NADA fine-tune: shift a generator toward a CLIP direction, keeping what the direction does not name.

    G2 = adapt(G, clip, direction, AdaptConfig(steps=200), callback=print_progress)

How one step works (nada-spec 1, 2.3, 2.6-2.11, with this project's decisions):

1. z ~ N(0, I) for `batch` pairs from the run's seeded RNG; w = the *frozen* mapping of z (truncation 1).
   With `mixing` > 0 each pair, with that probability, gets a second w from a second z after a random
   crossover index; the frozen and the trainable image of a pair use the same W+ (the official code
   draws a separate crossover per generator, so its pairs differ by more than the adaptation).
2. The frozen and trainable synthesis networks render the same W+ with the *same* noise maps (the
   official code draws independent noise, so dI also carries a noise component).
3. Loss = sum over CLIP members m of weight_m * (lambda_direction * directional + lambda_global * global
   + lambda_manifold * manifold + lambda_patch * patch), see `nada.losses`.
4. Adam over the trainable parameters only, lr * 0.8 and betas (0, 0.99 ** 0.8) (the official effective
   settings, a StyleGAN2 lazy-regularisation leftover), eps 1e-8, no weight decay, no EMA. Because the
   two generators start equal and share w and noise, dI is exactly zero at the first step; its
   gradient has a direction but no meaningful scale, so Adam's moments are reset after that step
   (see `_Run.step`; the official code never hits this because its noise maps differ).
5. With `layers="auto"`, before the step (every `select_every` steps) the k most relevant W+ indices are
   found (`nada.layers.select_w_indices`) and only the units reading them are trained this step.
   The selection loss is the global loss toward the target embedding of the direction: the target
   text (template-averaged) in text mode, the mean target-image embedding in image mode (the official
   code uses the text `target_class` even when the target is images; see nada-spec 2.9).

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
  `torch.set_num_threads` splits sums differently); on CUDA see docs/determinism.md.
- A non-finite loss or gradient stops the run with `AdaptError`; no non-finite update is ever applied,
  so `error.generator` holds the weights as of the last completed step (finite), with metadata.
- `should_stop()` returning True (e.g. ComfyUI's cancel) ends the run before the next step; the
  generator trained so far is returned with `metadata["adaptation"]["interrupted"] = True`.
- The result is in eval mode with gradients off, on the input generator's device, and carries
  `metadata["adaptation"]`: prompts / direction provenance, steps, config, CLIP members and weights,
  trained units, the selection history (auto mode), the loss history and the base fingerprint.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from . import layers as layer_groups
from . import losses
from .adapters import make_parameterization
from .errors import ConfigError, DirectionError, NadaError
from .sample import sample as sample_seeds

log = logging.getLogger(__name__)

OFFICIAL_LR_SCALE = 0.8  # g_reg_every / (g_reg_every + 1) with g_reg_every = 4 (nada-spec 2.11)
OFFICIAL_BETAS = (0.0, 0.99**0.8)
PARAMETERIZATIONS = ("full", "lora", "modulation")
# Learning-rate multipliers of the small parameterisations, so that `lr` means the same amount of
# change for all three: at the official lr a lora (B starts at 0) or a style scale moves the images
# far less per step than full training. Measured with the tiny CLIP, 80 steps, 32 px generator, red->blue
# and blue->green: these multipliers bring lora and modulation to the zero-shot and colour shift of full.
PARAMETERIZATION_LR_SCALE = {"full": 1.0, "lora": 4.0, "modulation": 10.0}

# Independent random streams of a run, so enabling one feature does not shift the draws of another.
_STREAM_TRAIN, _STREAM_SELECT, _STREAM_PATCH = 0, 1, 2


class AdaptError(NadaError):
    """The adaptation could not continue (e.g. the loss became NaN/Inf).

    `generator` is the generator as of the last completed step (finite weights, eval mode, with
    metadata), or None when the failure happened before any step; `step` is the step that failed.
    """

    def __init__(self, message: str, generator: nn.Module | None = None, step: int = 0):
        super().__init__(message)
        self.generator = generator
        self.step = step


@dataclasses.dataclass(frozen=True)
class AdaptConfig:
    """Knobs of one adaptation; defaults follow the official Colab (nada-spec 8.4)."""

    steps: int = 150  # optimisation steps (Colab: 151; style changes 200-400, image targets 400-600)
    batch: int = 2  # pairs per step
    lr: float = 0.002  # official learning rate; Adam runs at lr * 0.8 (see `effective_lr`)
    seed: int = 0  # seeds every random draw of the run
    layers: str | tuple[str, ...] = "all"  # a preset (nada.layers.PRESETS), "auto", or unit names
    auto_k: int | None = None  # "auto": W+ indices trained per step; None = int(2 * num_ws / 3)
    select_every: int = 1  # "auto": re-select every N steps (1 = the paper)
    select_batch: int = 8  # "auto": latents used to rank the W+ indices
    select_lr: float = 0.01  # "auto": SGD step size on the W+ codes
    select_iters: int = 1  # "auto": SGD steps on the W+ codes
    mixing: float = 0.0  # probability that a pair uses style mixing (Colab "improve shape": 0.9)
    lambda_direction: float = 1.0  # directional CLIP loss (the method)
    lambda_global: float = 0.0  # global CLIP loss toward the target
    lambda_manifold: float = 0.0  # manifold-angle loss
    lambda_patch: float = 0.0  # patch-directional loss
    patch_fraction: float = 0.5  # patch side as a fraction of the image side (official: 510 px at 1024)
    patch_count: int = 1  # patches per image
    preview_every: int = 0  # render previews every N steps (0 = only before and after)
    preview_count: int = 4  # preview images: seeds 0..preview_count-1 (nada.sample's seeds)
    preview_truncation: float = 0.7  # truncation of the previews (official sample_truncation)
    gradient_checkpointing: bool | str = "auto"  # True/False, or "auto" = on for CUDA at >= 512 px
    parameterization: str = "full"  # "full" (the paper), "lora" or "modulation" (see nada.adapters)
    rank: int = 4  # "lora": rank of the update of each conv weight

    def __post_init__(self) -> None:
        if isinstance(self.layers, list):
            object.__setattr__(self, "layers", tuple(self.layers))
        self.validate()

    def validate(self) -> None:
        def whole(name: str, lo: int, hi: int | None = None) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
                rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
                raise ConfigError(f"AdaptConfig.{name} must be an integer {rng}, got {v!r}")

        def real(name: str, lo: float, hi: float | None = None, open_lo: bool = False) -> None:
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            ok = ok and (v > lo if open_lo else v >= lo) and (hi is None or v <= hi)
            if not ok:
                rng = f"{'>' if open_lo else '>='} {lo}" + ("" if hi is None else f" and <= {hi}")
                raise ConfigError(f"AdaptConfig.{name} must be a finite number {rng}, got {v!r}")

        whole("steps", 0, 1_000_000)
        whole("batch", 1, 4096)
        whole("seed", 0, 2**63 - 1)
        whole("select_every", 1)
        whole("select_batch", 1, 4096)
        whole("select_iters", 1, 1000)
        whole("patch_count", 1, 64)
        whole("preview_every", 0)
        whole("preview_count", 0, 256)
        whole("rank", 1, 4096)
        real("lr", 0.0, open_lo=True)
        real("select_lr", 0.0, open_lo=True)
        real("mixing", 0.0, 1.0)
        real("patch_fraction", 0.0, 1.0, open_lo=True)
        real("preview_truncation", -10.0, 10.0)
        for name in ("lambda_direction", "lambda_global", "lambda_manifold", "lambda_patch"):
            real(name, 0.0)
        if not any(getattr(self, n) > 0 for n in self.loss_names()):
            raise ConfigError("all loss weights are 0: set lambda_direction (the method) to 1")
        if self.auto_k is not None:
            whole("auto_k", 1, 4096)
        if isinstance(self.layers, str):
            if self.layers != layer_groups.AUTO and self.layers not in layer_groups.PRESETS:
                raise ConfigError(
                    f"AdaptConfig.layers {self.layers!r} is unknown; use 'auto', one of "
                    f"{', '.join(layer_groups.PRESETS)}, or a list of unit names such as ('b8', 'b16.conv0')"
                )
        elif not self.layers or not all(isinstance(x, str) and x for x in self.layers):
            raise ConfigError("AdaptConfig.layers must be a preset name, 'auto', or a non-empty list of names")
        if self.parameterization not in PARAMETERIZATIONS:
            raise ConfigError(
                f"AdaptConfig.parameterization must be one of {', '.join(PARAMETERIZATIONS)}, "
                f"got {self.parameterization!r}"
            )
        if self.gradient_checkpointing not in (True, False, "auto"):
            raise ConfigError(
                f"AdaptConfig.gradient_checkpointing must be True, False or 'auto', got {self.gradient_checkpointing!r}"
            )

    @staticmethod
    def loss_names() -> tuple[str, ...]:
        return ("lambda_direction", "lambda_global", "lambda_manifold", "lambda_patch")

    @property
    def auto(self) -> bool:
        return self.layers == layer_groups.AUTO

    @property
    def effective_lr(self) -> float:
        """Adam's learning rate: lr * 0.8 (official), times the parameterisation's multiplier."""
        return self.lr * OFFICIAL_LR_SCALE * PARAMETERIZATION_LR_SCALE[self.parameterization]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["layers"] = self.layers if isinstance(self.layers, str) else list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AdaptConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown AdaptConfig keys {unknown}")
        kw = dict(d)
        if isinstance(kw.get("layers"), list):
            kw["layers"] = tuple(kw["layers"])
        return cls(**kw)


@dataclasses.dataclass(frozen=True)
class AdaptProgress:
    """What the progress callback receives after every step."""

    step: int  # steps completed, 1..total
    total: int
    loss: float  # total loss of this step
    terms: dict[str, float]  # the unweighted loss terms, averaged over CLIP members by weight
    it_per_s: float  # steps per second, averaged since the start
    elapsed: float  # seconds since the start
    units: tuple[str, ...]  # units trained this step
    w_indices: tuple[int, ...] | None  # W+ indices selected this step ("auto" only)


ProgressCallback = Callable[[AdaptProgress], None]
PreviewCallback = Callable[[int, torch.Tensor], None]  # (step, images [N, C, H, W] in [-1, 1] on CPU)


def _default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _fresh_copy(G: nn.Module, device: torch.device) -> nn.Module:
    """A deep copy on `device` whose tensors are ordinary (not inference) tensors.

    Made inside `inference_mode(False)`: deepcopy clones every parameter, buffer and tensor attribute,
    and clones made outside inference mode are ordinary tensors that autograd can use.
    """
    with torch.inference_mode(False), torch.no_grad():
        out = copy.deepcopy(G).to(device)
        for t in list(out.parameters()) + list(out.buffers()):
            if t.is_inference():  # defensive: deepcopy above already clones outside inference mode
                t.data = t.data.clone()
    return out


def _same_device(a: torch.device, b: torch.device) -> bool:
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.type == "cuda":
        return (a.index or torch.cuda.current_device()) == (b.index or torch.cuda.current_device())
    return a.index == b.index or a.type == "cpu"


def _rng(seed: int, stream: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed * 4 + stream)


def _use_checkpointing(cfg: AdaptConfig, G: nn.Module, device: torch.device) -> bool:
    if cfg.gradient_checkpointing == "auto":
        return device.type == "cuda" and G.config.img_resolution >= 512
    return bool(cfg.gradient_checkpointing)


def _latents(
    G_frozen: nn.Module, batch: int, mixing: float, rng: torch.Generator, device: torch.device
) -> torch.Tensor:
    """W+ for a batch: frozen mapping of seeded z (truncation 1), per-pair style mixing."""
    z_dim, num_ws, c_dim = G_frozen.config.z_dim, G_frozen.config.num_ws, G_frozen.config.c_dim
    z = torch.randn(batch, z_dim, generator=rng)
    c = None
    if c_dim:
        c = torch.nn.functional.one_hot(torch.randint(c_dim, (batch,), generator=rng), c_dim).float()
        c = c.to(device)
    ws = G_frozen.mapping(z.to(device), c)
    if mixing > 0:
        z2 = torch.randn(batch, z_dim, generator=rng)
        mix = torch.rand(batch, generator=rng) < mixing
        cross = torch.randint(1, max(2, num_ws), (batch,), generator=rng)
        cross = torch.where(mix, cross, torch.full_like(cross, num_ws))
        ws2 = G_frozen.mapping(z2.to(device), c)
        use2 = torch.arange(num_ws)[None, :] >= cross[:, None]  # [B, num_ws]
        ws = torch.where(use2[:, :, None].to(device), ws2, ws)
    return ws


class _Run:
    """State of one adaptation run (kept out of `adapt` so the step fits on a screen)."""

    def __init__(self, G, guides, cfg: AdaptConfig, device: torch.device):
        self.cfg = cfg
        self.device = device
        self.guides = guides
        self.G_frozen = G if _same_device(G.device, device) else _fresh_copy(G, device)
        self.G_frozen.requires_grad_(False)
        with torch.inference_mode(False):
            self.G_train = _fresh_copy(G, device).train()
            self.G_train.requires_grad_(False)
            self.G_train.synthesis.gradient_checkpointing = _use_checkpointing(cfg, G, device)
            self.candidates = layer_groups.resolve_units(self.G_train, cfg.layers)
            if not self.candidates:
                raise ConfigError(f"layers {cfg.layers!r} select nothing in this generator")
            # The seam for other parameterisations (issue 7): `params` are the tensors Adam updates,
            # `params_for` maps trained units to them, and `synthesize` renders with them.
            self.params = layer_groups.unit_parameters(self.G_train, self.candidates)
            self.parameterization = make_parameterization(
                cfg.parameterization, self.G_train, list(self.params), rank=cfg.rank, seed=cfg.seed
            )
            if self.parameterization is not None:
                self.params = self.parameterization.named_tensors()
            self.optim = torch.optim.Adam(
                list(self.params.values()), lr=cfg.effective_lr, betas=OFFICIAL_BETAS, eps=1e-8
            )
        num_ws = G.config.num_ws
        self.auto_k = cfg.auto_k if cfg.auto_k is not None else layer_groups.default_auto_k(num_ws)
        if cfg.auto:
            eligible = sum(1 for u in layer_groups.w_index_units(G, self.candidates).values() if u)
            if self.auto_k > eligible:
                raise ConfigError(
                    f"auto_k = {self.auto_k} but this generator has only {eligible} W+ indices with "
                    f"trainable layers; use auto_k <= {eligible}"
                )
        self.rng_train = _rng(cfg.seed, _STREAM_TRAIN)
        self.rng_select = _rng(cfg.seed, _STREAM_SELECT)
        self.rng_patch = _rng(cfg.seed, _STREAM_PATCH)
        self.units: tuple[str, ...] = tuple(self.candidates)
        self.w_indices: tuple[int, ...] | None = None
        self.selection_history: list[dict[str, Any]] = []
        self.loss_history: list[float] = []

    def synthesize(self, ws: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        if self.parameterization is None:
            return self.G_train.synthesis(ws, noise=noise)
        overrides = {
            k.removeprefix("synthesis."): v for k, v in self.parameterization.overrides(self.G_train).items()
        }
        return functional_call(self.G_train.synthesis, overrides, (ws,), {"noise": noise})

    def params_for(self, units: Sequence[str]) -> set[str]:
        if self.parameterization is None:
            return set(layer_groups.unit_parameters(self.G_train, units))
        return {k for k in self.params if any(k.startswith(u + ".") for u in units)}

    # -- losses ----------------------------------------------------------------------------------

    def loss(self, src_img: torch.Tensor, tgt_img: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        total = tgt_img.new_zeros((), dtype=torch.float32)
        terms = {"direction": 0.0, "global": 0.0, "manifold": 0.0, "patch": 0.0}
        boxes = None
        if cfg.lambda_patch > 0:
            b, _, h, w = src_img.shape
            boxes = losses.random_patch_boxes(b, h, w, cfg.patch_fraction, cfg.patch_count, self.rng_patch)
        weight_sum = sum(g.weight for g in self.guides)
        for g in self.guides:
            with torch.no_grad():
                e_src = g.encode(src_img)
            e_tgt = g.encode(tgt_img)
            member = tgt_img.new_zeros((), dtype=torch.float32)
            if cfg.lambda_direction > 0:
                v = losses.directional_loss(e_src, e_tgt, g.direction)
                member = member + cfg.lambda_direction * v
                terms["direction"] += g.weight / weight_sum * v.item()
            if cfg.lambda_global > 0:
                v = losses.global_loss(e_tgt, g.target)
                member = member + cfg.lambda_global * v
                terms["global"] += g.weight / weight_sum * v.item()
            if cfg.lambda_manifold > 0:
                v = losses.manifold_loss(e_src, e_tgt, g.source, g.target)
                member = member + cfg.lambda_manifold * v
                terms["manifold"] += g.weight / weight_sum * v.item()
            if boxes is not None:
                with torch.no_grad():
                    p_src = g.encode(losses.crop_patches(src_img, boxes))
                p_tgt = g.encode(losses.crop_patches(tgt_img, boxes))
                v = losses.patch_directional_loss(p_src, p_tgt, g.patch_directions)
                member = member + cfg.lambda_patch * v
                terms["patch"] += g.weight / weight_sum * v.item()
            total = total + g.weight * member
        return total, {k: v for k, v in terms.items() if getattr(cfg, f"lambda_{k}") > 0}

    def selection_loss(self, images: torch.Tensor) -> torch.Tensor:
        return sum(g.weight * losses.global_loss(g.encode(images), g.target) for g in self.guides)

    # -- one step --------------------------------------------------------------------------------

    def select(self, step: int) -> None:
        cfg = self.cfg
        for p in self.params.values():  # the ranking needs W+ gradients only
            p.requires_grad_(False)
        with torch.no_grad():
            ws = _latents(self.G_frozen, cfg.select_batch, 0.0, self.rng_select, self.device)
        noise = self.G_frozen.synthesis.make_noise(cfg.select_batch, self.rng_select, self.device)
        try:
            sel = layer_groups.select_w_indices(
                self.G_train, ws, noise, self.selection_loss, self.auto_k, self.candidates,
                lr=cfg.select_lr, iters=cfg.select_iters, synthesize=self.synthesize,
            )  # fmt: skip
        except FloatingPointError as e:
            raise _NonFinite(f"the layer-selection loss is not finite ({e})") from None
        self.units, self.w_indices = sel.units, sel.indices
        self.selection_history.append({"step": step, "w_indices": list(sel.indices)})
        trained = self.params_for(sel.units)
        for name, p in self.params.items():
            p.requires_grad_(name in trained)

    def step(self, step: int) -> tuple[float, dict[str, float]]:
        cfg = self.cfg
        if cfg.auto and step % cfg.select_every == 0:
            self.select(step)
        elif not cfg.auto and step == 0:
            for p in self.params.values():
                p.requires_grad_(True)
        with torch.no_grad():
            ws = _latents(self.G_frozen, cfg.batch, cfg.mixing, self.rng_train, self.device)
            noise = self.G_frozen.synthesis.make_noise(cfg.batch, self.rng_train, self.device)
            src = self.G_frozen.synthesis(ws, noise=noise)
        tgt = self.synthesize(ws, noise)
        loss, terms = self.loss(src, tgt)
        value = loss.item()
        if not math.isfinite(value):
            raise _NonFinite(f"the loss is {value}")
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        if grads and not torch.isfinite(torch.stack([g.float().sum() for g in grads])).all():
            raise _NonFinite("a gradient is not finite")
        self.optim.step()
        if step == 0:
            # At the first step the trainable generator still equals the frozen one, so every dI is
            # exactly zero: the gradient has a direction (along dT, see losses.DELTA_EPS) but an
            # arbitrary scale. Adam's first update is scale-free (lr * sign), but its second-moment
            # estimate would remember that scale for hundreds of steps (beta2 = 0.992) and damp the
            # updates after it; starting the moments afresh makes step 2 a clean first Adam step.
            self.optim.state.clear()
        return value, terms

    def preview(self) -> torch.Tensor:
        return sample_seeds(
            self.G_train,
            list(range(self.cfg.preview_count)),
            truncation_psi=self.cfg.preview_truncation,
            noise_mode="const",
        )


class _NonFinite(Exception):
    pass


@dataclasses.dataclass
class _Guide:
    """One CLIP member as the losses need it, on the training device."""

    name: str
    weight: float
    encode: Callable[[torch.Tensor], torch.Tensor]  # images [B, 3, H, W] in [-1, 1] -> [B, D], differentiable
    direction: torch.Tensor  # [D] unit direction dT
    target: torch.Tensor  # [D] target embedding (global loss, selection)
    source: torch.Tensor  # [D] source embedding (manifold loss)
    patch_directions: torch.Tensor  # [P, D] directions of the patch loss


def adapt(
    G: nn.Module,
    clip: Any,
    direction: Any,
    config: AdaptConfig | None = None,
    callback: ProgressCallback | None = None,
    preview: PreviewCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Adapt `G` toward `direction` under the CLIP ensemble `clip`; return the new generator.

    `direction` comes from `nada.text_direction`, `nada.image_direction` or `nada.combine_directions`
    with the same `clip`. `callback(AdaptProgress)` runs after every step; `preview(step, images)` runs
    before the first step, every `config.preview_every` steps and after the last (when
    `config.preview_count` > 0); `should_stop()` is polled before every step. `device` is where the
    training runs (default: CUDA when available, else the CPU); the result is returned on `G`'s device.
    See the module docstring for the guarantees (input never modified, determinism, NaN handling).
    """
    cfg = config or AdaptConfig()
    cfg.validate()
    device = torch.device(device) if device is not None else _default_device()
    if G.config.img_channels != 3:
        raise ConfigError(f"CLIP guidance needs an RGB generator; this one has {G.config.img_channels} channels")
    out_device = G.device
    with torch.inference_mode(False):
        guides = _guides(clip, direction, device, need_patch=cfg.lambda_patch > 0)
        run = _Run(G, guides, cfg, device)
        base_fingerprint = G.fingerprint() if hasattr(G, "fingerprint") else None
        start = time.perf_counter()
        interrupted = False
        done = 0

        def finish() -> nn.Module:
            return _result(G, run, cfg, done, interrupted, out_device, clip, direction, base_fingerprint)

        if preview is not None and cfg.preview_count > 0:
            preview(0, run.preview())
        for step in range(cfg.steps):
            if should_stop is not None and should_stop():
                interrupted = True
                log.info("adaptation stopped by request after %d of %d steps", done, cfg.steps)
                break
            try:
                value, terms = run.step(step)
            except _NonFinite as e:
                partial = finish()
                raise AdaptError(
                    f"the adaptation diverged at step {step + 1} of {cfg.steps}: {e}. "
                    f"No update was applied; `error.generator` holds the weights as of step {done}. "
                    f"Lower the learning rate (now {cfg.lr}), or use full precision for CLIP.",
                    generator=partial,
                    step=step + 1,
                ) from None
            done = step + 1
            run.loss_history.append(value)
            elapsed = time.perf_counter() - start
            if callback is not None:
                callback(
                    AdaptProgress(
                        step=done, total=cfg.steps, loss=value, terms=terms,
                        it_per_s=done / elapsed if elapsed > 0 else 0.0, elapsed=elapsed,
                        units=run.units, w_indices=run.w_indices,
                    )
                )  # fmt: skip
            if (
                preview is not None
                and cfg.preview_count > 0
                and cfg.preview_every > 0
                and done % cfg.preview_every == 0
                and done < cfg.steps
            ):
                preview(done, run.preview())
        if preview is not None and cfg.preview_count > 0 and done > 0:
            preview(done, run.preview())
        return finish()


def _guides(clip: Any, direction: Any, device: torch.device, need_patch: bool) -> list[_Guide]:
    """The ensemble's members on `device` (copies where needed, see `ClipModel.on`) with their vectors."""
    from .clip import as_ensemble

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
    guides = []
    for m in ensemble.on(device):
        guides.append(
            _Guide(
                name=m.name,
                weight=float(m.weight),
                encode=m.model.encode_images,
                direction=direction.vectors[m.name].to(device),
                target=direction.targets[m.name].to(device),
                source=direction.sources[m.name].to(device),
                patch_directions=direction.patch[m.name].to(device) if need_patch else direction.vectors[m.name],
            )
        )
    return guides


def _describe_clip(clip: Any) -> list[dict[str, Any]]:
    from .clip import as_ensemble

    return as_ensemble(clip).describe()


def _describe_direction(direction: Any) -> dict[str, Any]:
    return direction.describe() if hasattr(direction, "describe") else {"kind": type(direction).__name__}


def _result(G, run: _Run, cfg, done, interrupted, out_device, clip, direction, base_fingerprint) -> nn.Module:
    out = run.G_train
    adapter = None
    if run.parameterization is not None:
        # Bake the learned tensors into the weights, so the result is an ordinary generator; the
        # adapter itself rides along as `G.adapter` (Save Adapter / nada.save_adapter write it).
        with torch.no_grad():
            baked = {k: v.detach().clone() for k, v in run.parameterization.overrides(out).items()}
            params = dict(out.named_parameters())
            for name, t in baked.items():
                params[name].copy_(t)
        adapter = run.parameterization.to_adapter()
    out.synthesis.gradient_checkpointing = False
    out.eval().requires_grad_(False)
    for p in out.parameters():
        p.grad = None
    if not _same_device(out.device, out_device):
        out = out.to(out_device)
    run.optim.state.clear()
    used = {u for h in run.selection_history for u in _units_of(run, h["w_indices"])}
    trained = [u for u in run.candidates if u in used] if cfg.auto else list(run.candidates)
    meta = dict(getattr(G, "metadata", {}) or {})
    meta["adaptation"] = {
        "method": "stylegan-nada",
        "direction": _describe_direction(direction),
        "clip": _describe_clip(clip),
        "steps": done,
        "steps_planned": cfg.steps,
        "interrupted": interrupted,
        "config": cfg.to_dict(),
        "effective_lr": cfg.effective_lr,
        "betas": list(OFFICIAL_BETAS),
        "trained_units": trained,
        "selection_history": run.selection_history,
        "loss_history": [round(v, 6) for v in run.loss_history],
        "base_fingerprint": base_fingerprint,
        "parameterization": cfg.parameterization,
    }
    out.metadata = meta
    if adapter is not None:
        adapter.metadata.update(
            base_fingerprint=base_fingerprint,
            base_config=G.config.to_dict(),
            parameterization=cfg.parameterization,
            rank=cfg.rank if cfg.parameterization == "lora" else None,
            steps=done,
            direction=meta["adaptation"]["direction"],
            clip=meta["adaptation"]["clip"],
        )
    out.adapter = adapter
    return out


def _units_of(run: _Run, indices: Sequence[int]) -> list[str]:
    mapping = layer_groups.w_index_units(run.G_train, run.candidates)
    return [u for i in indices for u in mapping[i]]
