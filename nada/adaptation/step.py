"""One adaptation run's working state and its step: latents, losses, layer selection, Adam.

`Run` holds the frozen and the trainable generator, the parameterisation, Adam and the random
streams; `Run.step(i)` is step i of the method (see `nada.adaptation.run` for the whole recipe).
`state_dict()` / `load_state_dict()` capture everything a later step depends on, so a run saved
after step N and continued gives the same bits as one that never stopped (same device and build).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .. import layers as layer_groups
from .. import losses
from ..devices import same_device, trainable_copy
from ..errors import ConfigError
from ..sampling import sample as sample_seeds
from .config import OFFICIAL_BETAS, AdaptConfig
from .parameterizations import make_parameterization

# Independent random streams of a run, so enabling one feature does not shift the draws of another.
STREAMS = {"train": 0, "select": 1, "patch": 2}


class NonFinite(Exception):
    """A loss or gradient of this step is NaN/Inf (no update was applied)."""


@dataclasses.dataclass
class Guide:
    """One CLIP member as the losses need it, on the training device."""

    name: str
    weight: float
    encode: Callable[[torch.Tensor], torch.Tensor]  # images [B, 3, H, W] in [-1, 1] -> [B, D], differentiable
    direction: torch.Tensor  # [D] unit direction dT
    target: torch.Tensor  # [D] target embedding (manifold loss; global loss and selection by default)
    source: torch.Tensor  # [D] source embedding (manifold loss)
    patch_directions: torch.Tensor  # [P, D] directions of the patch loss
    global_target: torch.Tensor  # [D] target of the global loss (`text_targets` switch)
    select_target: torch.Tensor  # [D] target of the layer selection (`text_targets` switch)


def use_checkpointing(cfg: AdaptConfig, G: nn.Module, device: torch.device) -> bool:
    if cfg.gradient_checkpointing == "auto":
        return device.type == "cuda" and G.config.img_resolution >= 512
    return bool(cfg.gradient_checkpointing)


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def generator_autocast(cfg: AdaptConfig, device: torch.device) -> torch.autocast:
    """The autocast context the generator's forward runs in (`cfg.autocast`; disabled for "off").
    Weights, gradients and Adam stay float32; only the forward's matmuls and convolutions run in half."""
    dtype = AUTOCAST_DTYPES.get(cfg.autocast)
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


@dataclasses.dataclass(frozen=True)
class StepInputs:
    """The random draws of one training step. Give them to `Run.step` to run a step on chosen draws
    (e.g. to compare with another implementation); `draw_inputs` makes them from a seeded RNG.

    A crossover index k means: W+ indices < k come from z, indices >= k from z2; k = num_ws is no
    mixing. Each generator has its own crossover and noise maps (the same tensors when shared).
    """

    z: torch.Tensor  # [B, z_dim]
    noise_frozen: list[torch.Tensor]  # one [B, 1, r, r] map per conv layer, for the frozen image
    noise_train: list[torch.Tensor]  # the same for the trainable image
    z2: torch.Tensor | None = None  # [B, z_dim] second latents of style mixing
    crossover_frozen: torch.Tensor | None = None  # [B] int64, None = no mixing
    crossover_train: torch.Tensor | None = None  # [B] int64, None = no mixing
    c: torch.Tensor | None = None  # [B, c_dim] one-hot labels of a conditional generator


def draw_inputs(
    G_frozen: nn.Module,
    batch: int,
    mixing: float,
    noise: str,
    crossover: str,
    rng: torch.Generator,
    device: torch.device,
) -> StepInputs:
    """The draws of a step from `rng`, in a fixed order (z, c, mixing, noise) so the default switches
    keep the bits of earlier releases. `noise`/`crossover` are the AdaptConfig switches."""
    z_dim, num_ws, c_dim = G_frozen.config.z_dim, G_frozen.config.num_ws, G_frozen.config.c_dim
    z = torch.randn(batch, z_dim, generator=rng)
    c = None
    if c_dim:
        c = torch.nn.functional.one_hot(torch.randint(c_dim, (batch,), generator=rng), c_dim).float()
    z2 = cross_f = cross_t = None
    if mixing > 0:
        z2 = torch.randn(batch, z_dim, generator=rng)
        if crossover == "shared":  # a coin and a crossover per pair, used by both images
            mix = torch.rand(batch, generator=rng) < mixing
            cross = torch.randint(1, max(2, num_ws), (batch,), generator=rng)
            cross_f = cross_t = torch.where(mix, cross, torch.full_like(cross, num_ws))
        elif bool(torch.rand((), generator=rng) < mixing):  # official: one coin per batch, one index per call
            cross_f, cross_t = (
                torch.randint(1, max(2, num_ws), (1,), generator=rng).expand(batch).clone() for _ in range(2)
            )
    noise_f = G_frozen.synthesis.make_noise(batch, rng, device)
    noise_t = noise_f if noise == "shared" else G_frozen.synthesis.make_noise(batch, rng, device)
    return StepInputs(z, noise_f, noise_t, z2, cross_f, cross_t, c)


def frozen_and_trainable_ws(
    G_frozen: nn.Module, inputs: StepInputs, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """W+ [B, num_ws, w_dim] of the frozen and of the trainable image: the frozen mapping (truncation 1)."""
    c = None if inputs.c is None else inputs.c.to(device)
    ws = G_frozen.mapping(inputs.z.to(device), c)
    if inputs.z2 is None:
        return ws, ws
    ws2 = G_frozen.mapping(inputs.z2.to(device), c)
    idx = torch.arange(ws.shape[1], device=device)[None, :]  # [1, num_ws]

    def mixed(cross: torch.Tensor | None) -> torch.Tensor:
        if cross is None:
            return ws
        return torch.where((idx >= cross.to(device)[:, None])[:, :, None], ws2, ws)

    ws_f = mixed(inputs.crossover_frozen)
    if inputs.crossover_train is inputs.crossover_frozen:
        return ws_f, ws_f
    return ws_f, mixed(inputs.crossover_train)


class Run:
    """The working state of one adaptation run on `device`."""

    def __init__(self, G: nn.Module, guides: list[Guide], cfg: AdaptConfig, device: torch.device):
        self.cfg = cfg
        self.device = device
        self.guides = guides
        # The caller's generator is used as it is (its requires_grad flags untouched): it only ever
        # runs under no_grad here.
        self.G_frozen = G if same_device(G.device, device) else trainable_copy(G, device)
        with torch.inference_mode(False):
            self.G_train = trainable_copy(G, device).train()
            self.G_train.requires_grad_(False)
            self.G_train.synthesis.gradient_checkpointing = use_checkpointing(cfg, G, device)
            # The frozen image is rendered in the trainable copy's form (without touching the caller's
            # generator), so the two images of a pair are computed alike and dI is exactly 0 at step 1.
            self.frozen_form: dict[str, bool] = {}
            if hasattr(self.G_train.synthesis, "fused_modconv"):  # StyleGAN3's layers have one form
                self.G_train.synthesis.fused_modconv = cfg.fused_modconv
                self.frozen_form = {"fused_modconv": cfg.fused_modconv}
            # The official W+ mapping can choose the first ToRGB, so it must be among the candidates.
            official_auto = cfg.auto and cfg.w_mapping == "official"
            self.candidates = layer_groups.resolve_units(
                self.G_train, "all_with_torgb" if official_auto else cfg.layers
            )
            if not self.candidates:
                raise ConfigError(f"layers {cfg.layers!r} select nothing in this generator", field="layers")
            self.parameterization = make_parameterization(
                cfg.parameterization, self.G_train, self.candidates, rank=cfg.rank, seed=cfg.seed
            )
            self.params = self.parameterization.tensors()
            self.optim = torch.optim.Adam(
                list(self.params.values()), lr=cfg.effective_lr, betas=OFFICIAL_BETAS, eps=1e-8
            )
        self.auto_k = cfg.auto_k if cfg.auto_k is not None else layer_groups.default_auto_k(G.config.num_ws)
        if cfg.auto:
            eligible = sum(1 for u in layer_groups.w_index_units(G, self.candidates, cfg.w_mapping).values() if u)
            if self.auto_k > eligible:
                raise ConfigError(
                    f"auto_k = {self.auto_k} but this generator has only {eligible} W+ indices with "
                    f"trainable layers; use auto_k <= {eligible}",
                    field="auto_k",
                )
        self.rng = {name: torch.Generator(device="cpu").manual_seed(cfg.seed * 4 + i) for name, i in STREAMS.items()}
        self.done = 0  # steps completed
        self.units: tuple[str, ...] = tuple(self.candidates)
        self.w_indices: tuple[int, ...] | None = None
        self.selection_history: list[dict[str, Any]] = []
        self.loss_history: list[float] = []
        # Each active loss term per step, unweighted (see `loss`); None where a resumed state had no terms.
        self.term_history: dict[str, list[float | None]] = {}

    def synthesize(self, ws: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        with generator_autocast(self.cfg, self.device):
            return self.parameterization.synthesize(self.G_train, ws, noise).float()

    # -- losses ----------------------------------------------------------------------------------

    def loss(self, src_img: torch.Tensor, tgt_img: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        total = tgt_img.new_zeros((), dtype=torch.float32)
        terms = {"direction": 0.0, "global": 0.0, "manifold": 0.0, "patch": 0.0}
        boxes = None
        if cfg.lambda_patch > 0:
            b, _, h, w = src_img.shape
            boxes = losses.random_patch_boxes(b, h, w, cfg.patch_fraction, cfg.patch_count, self.rng["patch"])
        weight_sum = sum(g.weight for g in self.guides)
        for g in self.guides:
            with torch.no_grad():
                e_src = g.encode(src_img)
            e_tgt = g.encode(tgt_img)
            member = tgt_img.new_zeros((), dtype=torch.float32)
            if cfg.lambda_direction > 0:
                e_dir = e_tgt
                if cfg.delta_floor == 0 and bool((e_tgt - e_src).sum() == 0):
                    # the official guard for an exactly unchanged batch (no floor): the directional
                    # loss re-encodes the image nudged by 1e-6 (the other terms keep e_tgt)
                    e_dir = g.encode(tgt_img + 1e-6)
                v = losses.directional_loss(e_src, e_dir, g.direction, cfg.delta_floor)
                member = member + cfg.lambda_direction * v
                terms["direction"] += g.weight / weight_sum * v.item()
            if cfg.lambda_global > 0:
                v = losses.global_loss(e_tgt, g.global_target)
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
                v = losses.patch_directional_loss(p_src, p_tgt, g.patch_directions, cfg.delta_floor)
                member = member + cfg.lambda_patch * v
                terms["patch"] += g.weight / weight_sum * v.item()
            total = total + g.weight * member
        return total, {k: v for k, v in terms.items() if getattr(cfg, f"lambda_{k}") > 0}

    def selection_loss(self, images: torch.Tensor) -> torch.Tensor:
        return sum(g.weight * losses.global_loss(g.encode(images), g.select_target) for g in self.guides)

    # -- one step --------------------------------------------------------------------------------

    def select(self, step: int) -> None:
        cfg = self.cfg
        for p in self.params.values():  # the ranking needs W+ gradients only
            p.requires_grad_(False)
        rng = self.rng["select"]
        drawn = draw_inputs(self.G_frozen, cfg.select_batch, 0.0, "shared", "shared", rng, self.device)
        with torch.no_grad():
            ws = frozen_and_trainable_ws(self.G_frozen, drawn, self.device)[0]
        noise = drawn.noise_frozen
        try:
            sel = layer_groups.select_w_indices(
                self.G_train, ws, noise, self.selection_loss, self.auto_k, self.candidates,
                lr=cfg.select_lr, iters=cfg.select_iters, synthesize=self.synthesize, mapping=cfg.w_mapping,
                chunk=cfg.batch,  # the selection holds no more activations than the step itself
            )  # fmt: skip
        except FloatingPointError as e:
            raise NonFinite(f"the layer-selection loss is not finite ({e})") from None
        self.units, self.w_indices = sel.units, sel.indices
        self.selection_history.append({"step": step, "w_indices": list(sel.indices)})
        trained = self.parameterization.tensors_for(sel.units)
        for name, p in self.params.items():
            p.requires_grad_(name in trained)

    def step(self, inputs: StepInputs | None = None) -> tuple[float, dict[str, float]]:
        """Step number `self.done` (0-based); returns (loss, terms). Raises NonFinite before any update.

        `inputs`: the step's draws (z, noise, crossovers); None draws them from the run's RNG.

        A step that raises leaves the run as it was before it (random streams and selection state
        restored), so `state_dict()` after a failure resumes with exactly the step that failed.
        """
        boundary = (
            {k: g.get_state() for k, g in self.rng.items()},
            self.units,
            self.w_indices,
            len(self.selection_history),
            {k: p.requires_grad for k, p in self.params.items()},
        )
        try:
            return self._step(inputs)
        except BaseException:
            rng, self.units, self.w_indices, selections, grad = boundary
            for k, g in self.rng.items():
                g.set_state(rng[k])
            del self.selection_history[selections:]
            for k, p in self.params.items():
                p.requires_grad_(grad[k])
            raise

    def _step(self, inputs: StepInputs | None) -> tuple[float, dict[str, float]]:
        cfg, step = self.cfg, self.done
        if cfg.auto and step % cfg.select_every == 0:
            self.select(step)
        elif not cfg.auto and step == 0:
            for p in self.params.values():
                p.requires_grad_(True)
        if inputs is None:
            inputs = draw_inputs(
                self.G_frozen, cfg.batch, cfg.mixing, cfg.noise, cfg.crossover, self.rng["train"], self.device
            )
        noise_f = [n.to(self.device) for n in inputs.noise_frozen]
        noise_t = (
            noise_f if inputs.noise_train is inputs.noise_frozen else [n.to(self.device) for n in inputs.noise_train]
        )
        with torch.no_grad():
            ws_f, ws_t = frozen_and_trainable_ws(self.G_frozen, inputs, self.device)
        # ws and noise stay ordinary tensors: the trainable pass saves them for its backward
        with torch.inference_mode(), generator_autocast(cfg, self.device):
            src = self.G_frozen.synthesis(ws_f, noise=noise_f, **self.frozen_form).float()
        tgt = self.synthesize(ws_t, noise_t)
        loss, terms = self.loss(src, tgt)
        value = loss.item()
        if not math.isfinite(value):
            raise NonFinite(f"the loss is {value}")
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        if grads and not torch.isfinite(torch.stack([g.float().sum() for g in grads])).all():
            raise NonFinite("a gradient is not finite")
        self.optim.step()
        if step == 0 and cfg.adam_reset == "after_first_step":
            # At the first step the trainable generator still equals the frozen one, so every dI is
            # exactly zero: the gradient has a direction (along dT, see losses.DELTA_EPS) but an
            # arbitrary scale. Adam's first update is scale-free (lr * sign), but its second-moment
            # estimate would remember that scale for hundreds of steps (beta2 = 0.992) and damp the
            # updates after it; starting the moments afresh makes step 2 a clean first Adam step.
            self.optim.state.clear()
        self.done = step + 1
        self.loss_history.append(value)
        for k, v in terms.items():
            self.term_history.setdefault(k, [None] * step).append(v)
        return value, terms

    def preview(self) -> torch.Tensor:
        return sample_seeds(
            self.G_train,
            list(range(self.cfg.preview_count)),
            truncation_psi=self.cfg.preview_truncation,
            noise_mode="const",
        )

    # -- state (resume and extend) ---------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything the next step depends on, as CPU tensors and JSON-able values (copies)."""
        names = list(self.params)
        optim = self.optim.state_dict()
        moments = {
            f"{names[i]}.{k}": v.detach().to("cpu", copy=True) for i, s in optim["state"].items() for k, v in s.items()
        }
        return {
            "step": self.done,
            "tensors": {k: p.detach().to("cpu", copy=True) for k, p in self.params.items()},
            "moments": moments,
            "rng": {k: g.get_state() for k, g in self.rng.items()},
            "requires_grad": [k for k, p in self.params.items() if p.requires_grad],
            "units": list(self.units),
            "w_indices": None if self.w_indices is None else list(self.w_indices),
            "selection_history": [dict(h) for h in self.selection_history],
            "loss_history": list(self.loss_history),
            "term_history": {k: list(v) for k, v in self.term_history.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()` of a run with the same generator and result-changing config."""
        if set(state["tensors"]) != set(self.params):
            raise ConfigError("the saved run state does not fit this run (different layers or parameterization)")
        names = list(self.params)
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(state["tensors"][k])
        optim = self.optim.state_dict()
        optim["state"] = {}
        for key, t in state["moments"].items():
            name, slot = key.rsplit(".", 1)
            optim["state"].setdefault(names.index(name), {})[slot] = t
        self.optim.load_state_dict(optim)
        for k, g in self.rng.items():
            g.set_state(state["rng"][k])
        grad = set(state["requires_grad"])
        for k, p in self.params.items():
            p.requires_grad_(k in grad)
        self.done = int(state["step"])
        self.units = tuple(state["units"])
        self.w_indices = None if state["w_indices"] is None else tuple(state["w_indices"])
        self.selection_history = [dict(h) for h in state["selection_history"]]
        self.loss_history = [float(v) for v in state["loss_history"]]
        self.term_history = {k: list(v) for k, v in state.get("term_history", {}).items()}
