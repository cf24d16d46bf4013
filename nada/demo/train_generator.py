"""Train a demo generator of the shapes world (non-adversarial, minutes on a CPU).

    python -m nada.demo.train_generator --out nada/assets/stylegan/nada-demo
    python -m nada.demo.train_generator --family stylegan3 --steps 2000 --out /tmp/sg3-demo

The objective is honest and simple: a fixed, smooth function `scene_of(z)` reads a shapes-world scene
out of a latent (a circle whose hue is the angle of two coordinates of the normalised z, position and
size through the normal CDF of others), and the generator is fitted so that G(z) renders that scene:
squared error with the shape's pixels weighted up, plus the same at 1/2, 1/4 and 1/8 resolution, and
both images blurred early in training (a Gaussian whose width falls from 3 pixels to 0 over the first
60 % of the steps: a sharp edge in the wrong place gives almost no gradient toward the right place,
a blurred one does). Adam, cosine learning-rate decay, seeded. The result is an ordinary
StyleGAN2 (mapping + synthesis, W+, noise) whose samples are recognisable coloured shapes, which the
tiny CLIP understands: together they are the demo world in which NADA can be shown on a CPU.

`--family stylegan3` fits a small StyleGAN3-T (`CONFIGS["stylegan3"]`) with the same objective and loop;
its magnitude EMAs are updated during the fit as NVIDIA's training does. It is not bundled: it serves
the StyleGAN3 grid-artefact study (`bench/bench_sg3_artefacts.py`, `docs/stylegan3.md`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..images import image_grid
from ..stylegan2 import Generator, GeneratorConfig
from ..stylegan2.formats import generator_class, save_generator
from ..stylegan2.ops import normalize_2nd_moment
from ..stylegan3 import StyleGAN3Config
from . import DEMO_GENERATOR, DEMO_GENERATOR_DIR, world

log = logging.getLogger(__name__)

RESOLUTION = 32
CONFIGS: dict[str, GeneratorConfig | StyleGAN3Config] = {
    "stylegan2": GeneratorConfig(
        img_resolution=RESOLUTION,
        channels=(128, 128, 64, 32),
        z_dim=32,
        w_dim=64,
        mapping_layers=4,
        mapping_lr_mul=0.5,  # no discriminator to stabilise against: the mapping may move much faster than 0.01
    ),
    # StyleGAN3-T's design (margins, filters, 2 critically sampled layers) scaled down: 8 layers instead of
    # 14 and channels capped at 32, so that a fit takes < 30 CPU-minutes.
    "stylegan3": StyleGAN3Config(
        img_resolution=RESOLUTION,
        z_dim=32,
        w_dim=64,
        mapping_layers=4,
        mapping_lr_mul=0.5,
        channel_base=4096,
        channel_max=32,  # 64 is ~6x slower per step on a CPU (1.4 vs 9.5 s at batch 16, 1 thread)
        num_layers=8,
    ),
}
# Half-life of the magnitude EMAs during a StyleGAN3 fit, in images (NVIDIA: 20k images of a 25M-image
# training; a fit of ~50k images needs them to follow the fast early changes of the layer statistics).
MAGNITUDE_EMA_IMAGES = 1000


def hue_rgb(hue: float) -> tuple[int, int, int]:
    """A fully saturated colour at `hue` (0..1 around the colour wheel), as 0..255 RGB."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, 0.85, 0.9)
    return int(r * 255), int(g * 255), int(b * 255)


def colour_name(hue: float) -> str:
    """The shapes-world colour word nearest to a hue."""
    named = {"red": 0.0, "orange": 0.08, "yellow": 0.16, "green": 0.33, "blue": 0.62, "purple": 0.78}
    return min(named, key=lambda n: min(abs(hue % 1 - named[n]), 1 - abs(hue % 1 - named[n])))


def scene_of(z: torch.Tensor) -> world.Scene:
    """The scene a latent encodes: a pure, smooth function of the normalised z [z_dim].

    The colour is the angle of (z0, z1) on the colour wheel, so nearby latents have nearby colours and
    every hue occurs; position comes from z2, z3 and the size from z4 through the normal CDF. The
    shape is a circle on a gray background, the part of the shapes world a small generator can fit
    in minutes on a CPU without a discriminator.
    """
    zn = normalize_2nd_moment(z[None].float())[0]
    hue = (math.atan2(float(zn[1]), float(zn[0])) / (2 * math.pi)) % 1.0
    u = torch.special.ndtr(zn[2:5]).tolist()
    radius = 0.2 + 0.12 * u[2]
    lo, hi = radius * 0.9, 1 - radius * 0.9
    return world.Scene(
        shape="circle", colour=colour_name(hue), background="gray",
        colour_rgb=hue_rgb(hue), background_rgb=world.BACKGROUNDS["gray"],
        cx=lo + (hi - lo) * u[0], cy=lo + (hi - lo) * u[1], radius=radius, angle=0.0,
        blur=0.0, noise=0.0, noise_seed=0,
    )  # fmt: skip


def targets(z: torch.Tensor) -> torch.Tensor:  # [B, z_dim] -> [B, 3, RESOLUTION, RESOLUTION]
    return world.render_batch([scene_of(v) for v in z], size=RESOLUTION)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [B, C, H, W] with edge replication (identity below 0.3 pixels)."""
    if sigma < 0.3:
        return x
    k = math.ceil(3 * sigma)
    t = torch.arange(-k, k + 1, dtype=x.dtype)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = (g / g.sum()).repeat(x.shape[1], 1, 1, 1)
    x = F.conv2d(F.pad(x, (k, k, 0, 0), mode="replicate"), g.view(-1, 1, 1, 2 * k + 1), groups=x.shape[1])
    return F.conv2d(F.pad(x, (0, 0, k, k), mode="replicate"), g.view(-1, 1, 2 * k + 1, 1), groups=x.shape[1])


def fit_loss(got: torch.Tensor, want: torch.Tensor, sigma: float) -> torch.Tensor:
    """Squared error (shape pixels x5) after a blur of `sigma` pixels, plus the plain squared error at
    1/2, 1/4 and 1/8 resolution weighted by the pooling factor (coarse layout first)."""
    # The shape covers a small part of the image: unweighted, the loss first settles on the background.
    shape_mask = ((want - want[:, :, :1, :1]).abs().amax(1, keepdim=True) > 0.05).float()
    loss = ((gaussian_blur(got, sigma) - gaussian_blur(want, sigma)).square() * (1.0 + 4.0 * shape_mask)).mean()
    for f in (2, 4, 8):
        loss = loss + 0.5 * f * (F.avg_pool2d(got, f) - F.avg_pool2d(want, f)).square().mean()
    return loss


def preview(G: Generator, n: int = 10, seed: int = 999) -> torch.Tensor:
    """Targets (top row) above G's renders (bottom row) of the same unseen latents."""
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return torch.cat([targets(z), G.eval()(z, noise_mode="const").clamp(-1, 1)])


def initial_generator(family: str, seed: int) -> Generator:
    """The untrained generator `train` starts from: `CONFIGS[family]`, weights drawn after seeding torch."""
    cfg = CONFIGS[family]
    torch.manual_seed(seed)
    return generator_class(cfg)(cfg)


def train(
    steps: int,
    batch: int,
    seed: int,
    lr: float = 0.002,
    blur: float = 3.0,
    preview_dir: Path | None = None,
    family: str = "stylegan2",
) -> tuple[Generator, list[float]]:
    G = initial_generator(family, seed).train()
    cfg = G.config
    if isinstance(cfg, StyleGAN3Config):
        G.synthesis.magnitude_ema_beta = 0.5 ** (batch / MAGNITUDE_EMA_IMAGES)
    opt = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.0, 0.99))
    rng = torch.Generator().manual_seed(seed)
    history = []
    start = time.perf_counter()
    for step in range(steps):
        z = torch.randn(batch, cfg.z_dim, generator=rng)
        want = targets(z)
        got = G(z, noise_mode="random", generator=rng)  # noise must not carry the picture
        sigma = blur * max(0.0, 1.0 - step / (0.6 * steps))
        loss = fit_loss(got, want, sigma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for group in opt.param_groups:  # cosine decay to 10 %
            group["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step + 1) / steps)))
        history.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            log.warning(
                "step %d/%d  loss %.4f  blur %.2f  %.1f s",
                step + 1,
                steps,
                loss.item(),
                sigma,
                time.perf_counter() - start,
            )
        if preview_dir is not None and (step + 1) % 1000 == 0:
            preview_dir.mkdir(parents=True, exist_ok=True)
            image_grid(preview(G), nrow=10).save(preview_dir / f"step_{step + 1:06d}.png")
            G.train()
    with torch.no_grad():
        G.mapping.w_avg.copy_(G.mapping.estimate_w_avg())
    if isinstance(cfg, StyleGAN3Config):
        G.synthesis.magnitude_ema_beta = None
    return G.eval().requires_grad_(False), history


@torch.no_grad()
def quality(G: Generator, n: int = 256, seed: int = 12345) -> dict[str, float]:
    """How well G renders the scenes of latents unseen in training (psi 1, constant noise).

    - fit_l1: mean absolute pixel error in [-1, 1] units;
    - shape_iou: mean intersection-over-union of the shape's pixels (those clearly off the gray
      background) in G(z) and in the scene;
    - clip_colour_agreement: how often the tiny CLIP names the same colour (zero-shot over the
      world's 8 colour words) for G(z) as for the scene it should render.
    """
    from ..templates import apply_templates
    from . import load_tiny_clip
    from .train_tiny_clip import class_texts

    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    want = targets(z)
    got = G.eval()(z, noise_mode="const").clamp(-1, 1)
    bg = torch.tensor(world.BACKGROUNDS["gray"], dtype=torch.float32).view(1, 3, 1, 1) / 127.5 - 1

    def shape(x: torch.Tensor) -> torch.Tensor:
        return (x - bg).abs().amax(1) > 0.25

    inter = (shape(got) & shape(want)).sum((1, 2)).float()
    union = (shape(got) | shape(want)).sum((1, 2)).float().clamp_min(1)
    clip = load_tiny_clip()
    text = class_texts(clip, [apply_templates(c, "imagenet") for c in world.SHAPE_COLOURS])
    agree = (clip.encode_images(got) @ text.T).argmax(1) == (clip.encode_images(want) @ text.T).argmax(1)
    return {
        "fit_l1": round((got - want).abs().mean().item(), 4),
        "shape_iou": round((inter / union).mean().item(), 3),
        "clip_colour_agreement": round(agree.float().mean().item(), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(DEMO_GENERATOR_DIR))
    ap.add_argument("--family", choices=sorted(CONFIGS), default="stylegan2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preview-dir", help="write targets-above-renders grids here every 1000 steps")
    args = ap.parse_args()
    logging.basicConfig(format="%(message)s")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    G, history = train(
        args.steps, args.batch, args.seed, preview_dir=args.preview_dir and Path(args.preview_dir), family=args.family
    )
    minutes = (time.perf_counter() - start) / 60
    scores = quality(G)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = DEMO_GENERATOR.name if args.family == "stylegan2" else f"{DEMO_GENERATOR.stem}-{args.family}.safetensors"
    meta = {
        "name": f"shapes-world demo generator ({args.family})",
        "steps": args.steps,
        "batch": args.batch,
        "seed": args.seed,
        "train_minutes": round(minutes, 1),
        "final_loss": round(history[-1], 4),
        **scores,
    }
    save_generator(G, out / name, metadata=meta, overwrite=True, dtype=torch.float16)
    (out / "training.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
