"""Train the demo StyleGAN2 generator of the shapes world (non-adversarial, minutes on a CPU).

    python -m nada.demo.train_generator --out nada/assets/demo_generator

The objective is honest and simple: a fixed, smooth function `scene_of(z)` reads a shapes-world scene
out of a latent (a circle whose hue is the angle of two coordinates of the normalised z, position and
size through the normal CDF of others), and the generator is fitted so that G(z) renders that scene
(squared error with the shape's pixels weighted up, plus at half resolution; Adam, seeded). The result is an ordinary
StyleGAN2 (mapping + synthesis, W+, noise) whose samples are recognisable coloured shapes, which the
tiny CLIP understands: together they are the demo world in which NADA can be shown on a CPU.
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

from ..stylegan2 import Generator, GeneratorConfig
from ..stylegan2.formats import save_generator
from ..stylegan2.ops import normalize_2nd_moment
from . import world

log = logging.getLogger(__name__)

DEMO_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo_generator"
RESOLUTION = 32
CONFIG = GeneratorConfig(
    img_resolution=RESOLUTION,
    channels=(64, 64, 48, 32),
    z_dim=32,
    w_dim=64,
    mapping_layers=4,
    mapping_lr_mul=0.1,  # a shallow, quickly trained mapping: let it move faster than StyleGAN's 0.01
)


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


def targets(z: torch.Tensor) -> torch.Tensor:
    return world.render_batch([scene_of(v) for v in z], size=RESOLUTION)


def train(steps: int, batch: int, seed: int, lr: float = 0.002) -> tuple[Generator, list[float]]:
    torch.manual_seed(seed)
    G = Generator(CONFIG).train()
    opt = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.0, 0.99))
    rng = torch.Generator().manual_seed(seed)
    history = []
    start = time.perf_counter()
    for step in range(steps):
        z = torch.randn(batch, CONFIG.z_dim, generator=rng)
        want = targets(z)
        got = G(z, noise_mode="random", generator=rng)
        # Squared error, with the shape's pixels weighted up: the shape covers a small part of the
        # image, and an unweighted loss first settles on the plain background.
        shape_mask = ((want - want[:, :, :1, :1]).abs().amax(1, keepdim=True) > 0.05).float()
        weight = 1.0 + 4.0 * shape_mask
        loss = ((got - want).square() * weight).mean() + (F.avg_pool2d(got, 2) - F.avg_pool2d(want, 2)).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for group in opt.param_groups:  # cosine decay to 10 %
            group["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step + 1) / steps)))
        history.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            log.warning("step %d/%d  loss %.4f  %.1f s", step + 1, steps, loss.item(), time.perf_counter() - start)
    with torch.no_grad():
        G.mapping.w_avg.copy_(G.mapping.estimate_w_avg())
    return G.eval().requires_grad_(False), history


@torch.no_grad()
def fit_error(G: Generator, n: int = 256, seed: int = 12345) -> float:
    """Mean absolute pixel error (in [-1, 1] units) against the scenes, on latents unseen in training."""
    z = torch.randn(n, CONFIG.z_dim, generator=torch.Generator().manual_seed(seed))
    return (G(z, noise_mode="const") - targets(z)).abs().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(DEMO_DIR))
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(format="%(message)s")
    torch.set_num_threads(2)
    start = time.perf_counter()
    G, history = train(args.steps, args.batch, args.seed)
    minutes = (time.perf_counter() - start) / 60
    err = fit_error(G)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"name": "shapes-world demo generator", "steps": args.steps, "batch": args.batch, "seed": args.seed,
            "train_minutes": round(minutes, 1), "fit_l1": round(err, 4), "final_loss": round(history[-1], 4)}
    save_generator(G, out / "generator.safetensors", metadata=meta, overwrite=True, dtype=torch.float16)
    (out / "training.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
