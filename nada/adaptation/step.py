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
    target: torch.Tensor  # [D] target embedding (global loss, selection)
    source: torch.Tensor  # [D] source embedding (manifold loss)
    patch_directions: torch.Tensor  # [P, D] directions of the patch loss


def use_checkpointing(cfg: AdaptConfig, G: nn.Module, device: torch.device) -> bool:
    if cfg.gradient_checkpointing == "auto":
        return device.type == "cuda" and G.config.img_resolution >= 512
    return bool(cfg.gradient_checkpointing)


def latents(G_frozen: nn.Module, batch: int, mixing: float, rng: torch.Generator, device: torch.device) -> torch.Tensor:
    """W+ [batch, num_ws, w_dim] for a batch: frozen mapping of seeded z (truncation 1), per-pair mixing."""
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


class Run:
    """The working state of one adaptation run on `device`."""

    def __init__(self, G: nn.Module, guides: list[Guide], cfg: AdaptConfig, device: torch.device):
        self.cfg = cfg
        self.device = device
        self.guides = guides
        self.G_frozen = G if same_device(G.device, device) else trainable_copy(G, device)
        self.G_frozen.requires_grad_(False)
        with torch.inference_mode(False):
            self.G_train = trainable_copy(G, device).train()
            self.G_train.requires_grad_(False)
            self.G_train.synthesis.gradient_checkpointing = use_checkpointing(cfg, G, device)
            if hasattr(self.G_train.synthesis, "fused_modconv"):  # StyleGAN3's layers have one form
                self.G_train.synthesis.fused_modconv = cfg.fused_modconv
            self.candidates = layer_groups.resolve_units(self.G_train, cfg.layers)
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
            eligible = sum(1 for u in layer_groups.w_index_units(G, self.candidates).values() if u)
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

    def synthesize(self, ws: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        return self.parameterization.synthesize(self.G_train, ws, noise)

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
        rng = self.rng["select"]
        with torch.no_grad():
            ws = latents(self.G_frozen, cfg.select_batch, 0.0, rng, self.device)
        noise = self.G_frozen.synthesis.make_noise(cfg.select_batch, rng, self.device)
        try:
            sel = layer_groups.select_w_indices(
                self.G_train, ws, noise, self.selection_loss, self.auto_k, self.candidates,
                lr=cfg.select_lr, iters=cfg.select_iters, synthesize=self.synthesize,
            )  # fmt: skip
        except FloatingPointError as e:
            raise NonFinite(f"the layer-selection loss is not finite ({e})") from None
        self.units, self.w_indices = sel.units, sel.indices
        self.selection_history.append({"step": step, "w_indices": list(sel.indices)})
        trained = self.parameterization.tensors_for(sel.units)
        for name, p in self.params.items():
            p.requires_grad_(name in trained)

    def step(self) -> tuple[float, dict[str, float]]:
        """Step number `self.done` (0-based); returns (loss, terms). Raises NonFinite before any update.

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
            return self._step()
        except BaseException:
            rng, self.units, self.w_indices, selections, grad = boundary
            for k, g in self.rng.items():
                g.set_state(rng[k])
            del self.selection_history[selections:]
            for k, p in self.params.items():
                p.requires_grad_(grad[k])
            raise

    def _step(self) -> tuple[float, dict[str, float]]:
        cfg, step = self.cfg, self.done
        if cfg.auto and step % cfg.select_every == 0:
            self.select(step)
        elif not cfg.auto and step == 0:
            for p in self.params.values():
                p.requires_grad_(True)
        rng = self.rng["train"]
        with torch.no_grad():
            ws = latents(self.G_frozen, cfg.batch, cfg.mixing, rng, self.device)
            noise = self.G_frozen.synthesis.make_noise(cfg.batch, rng, self.device)
        with torch.inference_mode():  # ws and noise stay ordinary tensors: the trainable pass saves them
            src = self.G_frozen.synthesis(ws, noise=noise)
        tgt = self.synthesize(ws, noise)
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
        if step == 0:
            # At the first step the trainable generator still equals the frozen one, so every dI is
            # exactly zero: the gradient has a direction (along dT, see losses.DELTA_EPS) but an
            # arbitrary scale. Adam's first update is scale-free (lr * sign), but its second-moment
            # estimate would remember that scale for hundreds of steps (beta2 = 0.992) and damp the
            # updates after it; starting the moments afresh makes step 2 a clean first Adam step.
            self.optim.state.clear()
        self.done = step + 1
        self.loss_history.append(value)
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
