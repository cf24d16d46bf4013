"""The projector: find the latent whose image is a given image, for any generator and any domain.

    result = project(G, images, steps=500, space="w+")       # images [B, 3, H, W] in [-1, 1]
    result.latents        # [B, num_ws, w_dim] W+ (render with G or with an adapted copy of G)
    result.images         # the reconstructions, [B, 3, H, W]
    result.loss_name      # what "the same" meant: "lpips", "vgg16", "pixels" or "pixels+clip"

The method is NVIDIA's StyleGAN2-ADA projector (Karras et al. 2020, `projector.py`), generalised:
Adam on a latent that starts at the mean w (or at `init`, e.g. an encoder's W+), with the learning
rate ramped up over the first 5 % of the steps and down (cosine) over the last 25 %, and Gaussian
noise of 0.05 x the spread of w added to the latent, fading to zero at 75 % of the steps (it keeps
the early steps from settling in the first local minimum). `space="w"` optimises one w per image
(what NVIDIA does; stays on the generator's manifold, so edits and adapted generators behave), "w+"
one w per layer (reconstructs far better, drifts further from the manifold). With
`optimize_noise=True` the per-layer noise maps are optimised too, with NVIDIA's regulariser (the
squared autocorrelation of every map at every scale down to 8x8, weight 1e5) and renormalised to
zero mean and unit variance after every step, so they cannot carry the picture.

The loss is chosen by what the user has (`nada.inversion.perceptual`): LPIPS when VGG16 weights
(and LPIPS's calibration) are given as local files, else pixels at four scales plus, with a CLIP,
its image embedding. `result.loss_name` says which.

Guarantees:

- `G` is never modified, moved or put in another mode; gradients reach only the latent (and noise).
  When `G` holds inference tensors (ComfyUI loads models under `torch.inference_mode()`), a copy
  with ordinary tensors is made, since autograd cannot save inference tensors for backward.
- Works inside `torch.inference_mode()` and `torch.no_grad()`; runs on `G`'s device.
- Seeded: every random draw comes from one CPU `torch.Generator` seeded with `seed`, then is moved
  to the device, so a CPU run repeats bit for bit and a CUDA run draws the same numbers.
- Every step scores each image; the result holds, per image, the latent (and noise) of its best step
  so far. `should_stop()` is polled before every step; when it returns True the run ends there
  with `interrupted=True` and that best-so-far result. A non-finite loss raises `ProjectionError`
  whose `.result` holds the same.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..cpu_memory import reuse_freed_memory
from ..devices import module_device, trainable_copy
from ..errors import ConfigError, ProjectionError
from . import perceptual

log = logging.getLogger(__name__)

SPACES = ("w", "w+")
LOSSES = ("auto", "lpips", "pixels")
LR_RAMPUP, LR_RAMPDOWN = 0.05, 0.25  # fractions of the run (NVIDIA's projector)
LATENT_NOISE_RAMP = 0.75  # the latent noise is gone at 75 % of the run
ADAM_BETAS = (0.9, 0.999)


@dataclasses.dataclass(frozen=True)
class ProjectConfig:
    """Knobs of one projection; defaults are NVIDIA's projector's, except `steps` (its 1000 is slow)."""

    steps: int = 500  # optimisation steps
    space: str = "w+"  # "w": one w per image; "w+": one w per layer
    optimize_noise: bool = False  # also optimise the per-layer noise maps (StyleGAN2)
    loss: str = "auto"  # "auto" (lpips if weights are given), "lpips", "pixels"
    seed: int = 0  # seeds the w statistics, the latent noise and the initial noise maps
    lr: float = 0.1  # peak Adam learning rate
    latent_noise: float = 0.05  # initial latent noise, as a fraction of the spread of w
    noise_regularization: float = 1e5  # weight of the noise-map autocorrelation penalty
    clip_weight: float = 0.1  # weight of the CLIP embedding distance (when a CLIP is given)
    w_avg_samples: int = 10000  # mapped samples for the mean and spread of w

    def __post_init__(self) -> None:
        def number(name: str, lo: float, hi: float, whole: bool = False) -> None:
            v = getattr(self, name)
            ok = isinstance(v, int if whole else (int, float)) and not isinstance(v, bool)
            if not (ok and math.isfinite(v) and lo <= v <= hi):
                kind = "an integer" if whole else "a number"
                raise ConfigError(f"projection {name} must be {kind} in {lo:g}..{hi:g}, got {v!r}")

        number("steps", 0, 1_000_000, whole=True)
        number("seed", 0, 2**63 - 1, whole=True)
        number("w_avg_samples", 1, 10_000_000, whole=True)
        number("lr", 1e-8, 100.0)
        for name in ("latent_noise", "noise_regularization", "clip_weight"):
            number(name, 0.0, 1e12)
        if self.space not in SPACES:
            raise ConfigError(f"projection space must be 'w' or 'w+', got {self.space!r}")
        if self.loss not in LOSSES:
            raise ConfigError(f"projection loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not isinstance(self.optimize_noise, bool):
            raise ConfigError(f"optimize_noise must be True or False, got {self.optimize_noise!r}")


@dataclasses.dataclass(frozen=True)
class ProjectionProgress:
    """What the progress callback receives after every step."""

    step: int  # steps completed, 1..total
    total: int
    loss: float  # mean distance of this step's images
    best: float  # mean of each image's best distance so far
    elapsed: float  # seconds since the start
    images: torch.Tensor  # this step's images [B, C, H, W] (detached, on the projection device)


@dataclasses.dataclass(frozen=True)
class ProjectionResult:
    latents: torch.Tensor  # [B, num_ws, w_dim] float32 on the CPU: each image's best latent
    images: torch.Tensor  # [B, C, H, W] float32 on the CPU: those latents rendered (with `noise`)
    loss_name: str  # "lpips", "vgg16", "pixels", with "+clip" when a CLIP took part
    losses: list[float]  # distance of each returned image to its target
    loss_history: list[float]  # mean distance per step
    steps: int  # steps completed
    interrupted: bool  # stopped by `should_stop`
    noise: list[torch.Tensor] | None  # [B, 1, r, r] per conv layer (CPU) when noise was optimised
    config: ProjectConfig


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of images in [-1, 1] (peak = the [0, 1] range), per image [B]."""
    mse = ((a.float().clamp(-1, 1) - b.float().clamp(-1, 1)) / 2).square().mean((1, 2, 3))
    return 10 * torch.log10(1 / mse.clamp_min(1e-12))


def _autograd_ready(G: nn.Module) -> nn.Module:
    """`G` itself, or a copy whose tensors are ordinary ones when `G` holds inference tensors."""
    if not any(t.is_inference() for t in (*G.parameters(), *G.buffers())):
        return G
    return trainable_copy(G, module_device(G))


def _target_images(G: nn.Module, images: Any, device: torch.device) -> torch.Tensor:
    """Validated [B, C, R, R] float32 on `device`; a square image of another size is resized."""
    channels, res = G.config.img_channels, G.config.img_resolution
    if not isinstance(images, torch.Tensor):
        raise ProjectionError(f"images must be a tensor [B, {channels}, H, W] in [-1, 1], got {type(images).__name__}")
    x = images[None] if images.ndim == 3 else images
    if x.ndim != 4:
        raise ProjectionError(f"images must have shape [B, {channels}, H, W], got {list(images.shape)}")
    if x.shape[0] == 0:
        raise ProjectionError("no images to project (the batch is empty)")
    if x.shape[1] != channels:
        kind = "grayscale" if x.shape[1] == 1 else f"{x.shape[1]}-channel"
        raise ProjectionError(
            f"the images are {kind} but the generator makes {channels}-channel images; convert them "
            f"(grayscale: repeat the channel; RGBA: drop alpha) before projecting"
        )
    x = x.detach().to(device=device, dtype=torch.float32).clone()
    if not torch.isfinite(x).all():
        raise ProjectionError("the images contain NaN or Inf values")
    h, w = x.shape[-2:]
    if (h, w) != (res, res):
        if h != w:
            raise ProjectionError(
                f"the images are {w}x{h} but the generator makes {res}x{res}: crop them to a square "
                "(for faces, the alignment crop the generator was trained on) before projecting"
            )
        log.warning("resizing the images from %dx%d to the generator's %dx%d", w, h, res, res)
        mode = "area" if h > res else "bicubic"
        x = F.interpolate(x, size=(res, res), mode=mode, **({"align_corners": False} if mode == "bicubic" else {}))
    return x


@torch.no_grad()
def _w_stats(G: nn.Module, n: int, rng: torch.Generator, device: torch.device) -> tuple[torch.Tensor, float]:
    """Mean w [w_dim] and the spread of w (root mean squared distance to the mean) over `n` samples."""
    cfg = G.config
    z = torch.randn(n, cfg.z_dim, generator=rng).to(device)
    c = None
    if cfg.c_dim:
        c = F.one_hot(torch.randint(cfg.c_dim, (n,), generator=rng), cfg.c_dim).float().to(device)
    w = G.mapping(z, c)[:, 0].float()  # [n, w_dim]
    w_avg = w.mean(0)
    return w_avg, (w - w_avg).square().sum(1).mean().sqrt().item()


def _start(init: Any, w_avg: torch.Tensor, batch: int, G: nn.Module, space: str) -> torch.Tensor:
    """The starting latent: [B, 1, w_dim] in W, [B, num_ws, w_dim] in W+."""
    num_ws, w_dim = G.num_ws, G.config.w_dim
    if init is None:
        ws = w_avg.view(1, 1, w_dim).expand(batch, num_ws, w_dim)
    else:
        if not isinstance(init, torch.Tensor) or init.shape[-2:] != (num_ws, w_dim) or init.ndim not in (2, 3):
            shape = list(init.shape) if isinstance(init, torch.Tensor) else type(init).__name__
            raise ProjectionError(
                f"init must be a W+ latent [B, {num_ws}, {w_dim}] or [{num_ws}, {w_dim}] of this generator, got "
                f"{shape}: use an encoder (or latent) made for this generator"
            )
        ws = init[None] if init.ndim == 2 else init
        if ws.shape[0] not in (1, batch):
            raise ProjectionError(f"init has {ws.shape[0]} latents for {batch} images; give one or one per image")
        ws = ws.detach().to(w_avg).expand(batch, num_ws, w_dim)
        if not torch.isfinite(ws).all():
            raise ProjectionError("init contains NaN or Inf values")
    return (ws.mean(1, keepdim=True) if space == "w" else ws).clone()


def _noise_penalty(noise: list[torch.Tensor]) -> torch.Tensor:
    """NVIDIA's noise regulariser: squared mean autocorrelation (1-pixel shifts) at every scale >= 8."""
    total = noise[0].new_zeros(())
    for n in noise:
        while True:
            total = (
                total + (n * torch.roll(n, 1, dims=3)).mean().square() + (n * torch.roll(n, 1, dims=2)).mean().square()
            )
            if n.shape[2] <= 8:
                break
            n = F.avg_pool2d(n, 2)
    return total


def _lr_at(t: float, peak: float) -> float:
    ramp = min(1.0, (1.0 - t) / LR_RAMPDOWN)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return peak * ramp * min(1.0, t / LR_RAMPUP)


def project(
    G: nn.Module,
    images: torch.Tensor,  # [B, C, H, W] in [-1, 1]
    *,
    steps: int = 500,
    space: str = "w+",
    optimize_noise: bool = False,
    loss: str = "auto",
    init: torch.Tensor | None = None,  # [B or 1, num_ws, w_dim], e.g. an encoder's W+
    seed: int = 0,
    callback: Callable[[ProjectionProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    clip: Any = None,
    perceptual_weights: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    lr: float = 0.1,
    clip_weight: float = 0.1,
) -> ProjectionResult:
    """Project `images` into `G`'s latent space (see the module docstring).

    `perceptual_weights`: torchvision's VGG16 state dict file, optionally followed by LPIPS's `vgg.pth`
    (a path or a sequence of one or two paths). `clip`: a loaded nada CLIP model or ensemble whose
    image embedding joins the loss. `callback(ProjectionProgress)` runs after every step.
    """
    cfg = ProjectConfig(
        steps=steps, space=space, optimize_noise=optimize_noise, loss=loss, seed=seed, lr=lr, clip_weight=clip_weight
    )
    paths = (
        [perceptual_weights] if isinstance(perceptual_weights, (str, os.PathLike)) else list(perceptual_weights or [])
    )
    if cfg.loss == "lpips" and not paths:
        raise ConfigError(
            "loss 'lpips' needs VGG16 weights: pass perceptual_weights=vgg16-397923af.pth (torchvision's) and "
            "optionally LPIPS's vgg.pth, or use loss 'pixels'"
        )
    if len(paths) > 2:
        raise ConfigError("perceptual_weights takes at most two files: the VGG16 weights and LPIPS's vgg.pth")
    if optimize_noise and not getattr(G.synthesis, "noise_shapes", list)():
        raise ConfigError(
            "this generator has no noise inputs to optimise (StyleGAN3 has none); use optimize_noise=False"
        )
    with torch.inference_mode(False), torch.enable_grad(), reuse_freed_memory(module_device(G)):
        run = _Projection(G, images, cfg, init, clip, paths)
        return run.loop(callback, should_stop)


class _Projection:
    """State of one projection (kept out of `project` so the loop fits on a screen)."""

    def __init__(self, G, images, cfg: ProjectConfig, init, clip, paths):
        self.cfg = cfg
        self.G = _autograd_ready(G)
        device = module_device(self.G)
        self.target = _target_images(self.G, images, device)
        batch = self.target.shape[0]
        features = None
        if paths and cfg.loss != "pixels":
            features = perceptual.load_vgg16(paths[0], paths[1] if len(paths) > 1 else None)
        self.objective = perceptual.make_objective(self.target, features, clip, cfg.clip_weight)
        self.rng = torch.Generator(device="cpu").manual_seed(cfg.seed)
        w_avg, self.w_std = _w_stats(self.G, cfg.w_avg_samples, self.rng, device)
        self.w = _start(init, w_avg, batch, self.G, cfg.space).requires_grad_(True)
        self.noise: list[torch.Tensor] = []
        if cfg.optimize_noise:
            self.noise = [n.requires_grad_(True) for n in self.G.synthesis.make_noise(batch, self.rng, device)]
        self.optim = torch.optim.Adam([self.w, *self.noise], lr=cfg.lr, betas=ADAM_BETAS)
        self.best = torch.full((batch,), math.inf, device=device)
        self.best_ws = self.ws(self.w.detach()).clone()
        self.best_noise = [n.detach().clone() for n in self.noise]

    def ws(self, w: torch.Tensor) -> torch.Tensor:
        return w.expand(-1, self.G.num_ws, -1)

    def synthesize(self, ws: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        if self.cfg.optimize_noise:
            return self.G.synthesis(ws, noise=noise)
        return self.G.synthesis(ws, noise_mode="const")

    def step(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One Adam step; returns this step's images and per-image distances (detached)."""
        cfg = self.cfg
        t = step / cfg.steps
        for group in self.optim.param_groups:
            group["lr"] = _lr_at(t, cfg.lr)
        scale = self.w_std * cfg.latent_noise * max(0.0, 1.0 - t / LATENT_NOISE_RAMP) ** 2
        ws = self.ws(self.w + torch.randn(self.w.shape, generator=self.rng).to(self.w) * scale)
        images = self.synthesize(ws, self.noise)
        dist = self.objective(images)  # [B]
        loss = dist.sum()
        if self.noise:
            loss = loss + cfg.noise_regularization * _noise_penalty(self.noise)
        if not torch.isfinite(loss):
            raise _NonFinite(f"the loss is {loss.item()} at step {step + 1}")
        params = [self.w, *self.noise]
        for p, g in zip(params, torch.autograd.grad(loss, params)):
            p.grad = g  # autograd.grad, not backward: nothing accumulates in G's own tensors
        dist = dist.detach()
        better = dist < self.best  # this step's latent and noise are what produced `dist`
        self.best = torch.where(better, dist, self.best)
        self.best_ws[better] = ws.detach()[better]
        for kept, n in zip(self.best_noise, self.noise):
            kept[better] = n.detach()[better]
        self.optim.step()
        if self.noise:
            with torch.no_grad():
                for n in self.noise:
                    n -= n.mean((1, 2, 3), keepdim=True)
                    n *= n.square().mean((1, 2, 3), keepdim=True).rsqrt()
        return images.detach(), dist

    def loop(self, callback, should_stop) -> ProjectionResult:
        history: list[float] = []
        start = time.perf_counter()
        interrupted = False
        for step in range(self.cfg.steps):
            if should_stop is not None and should_stop():
                interrupted = True
                log.info("projection stopped by request after %d of %d steps", step, self.cfg.steps)
                break
            try:
                images, dist = self.step(step)
            except _NonFinite as e:
                err = ProjectionError(
                    f"the projection diverged: {e}; `error.result` holds the best latents so far. "
                    "Lower the learning rate or check the images"
                )
                err.result = self.result(history, interrupted=False)
                raise err from None
            history.append(dist.mean().item())
            if callback is not None:
                callback(
                    ProjectionProgress(
                        step=step + 1,
                        total=self.cfg.steps,
                        loss=history[-1],
                        best=self.best.mean().item(),
                        elapsed=time.perf_counter() - start,
                        images=images,
                    )
                )
        return self.result(history, interrupted)

    @torch.no_grad()
    def result(self, history: list[float], interrupted: bool) -> ProjectionResult:
        noise = [n.clone() for n in self.best_noise]
        images = self.synthesize(self.best_ws, noise).float()
        losses = self.objective(images)
        return ProjectionResult(
            latents=self.best_ws.float().cpu(),
            images=images.cpu(),
            loss_name=self.objective.name,
            losses=[round(v, 6) for v in losses.tolist()],
            loss_history=history,
            steps=len(history),
            interrupted=interrupted,
            noise=[n.cpu() for n in noise] if self.cfg.optimize_noise else None,
            config=self.cfg,
        )


class _NonFinite(Exception):
    pass
