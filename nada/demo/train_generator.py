"""Train the demo StyleGAN2 generator of the shapes world (non-adversarial, minutes on a CPU).

    python -m nada.demo.train_generator --out nada/assets/demo_generator

The objective is honest and simple: a fixed function `scene_of(z)` reads a shapes-world scene out of
a latent (shape, colour and background from the argmax of groups of coordinates of the normalised z,
position, size and rotation through the normal CDF of others), and the generator is fitted so that
G(z) renders that scene (L1 at full and half resolution, Adam, seeded). The result is an ordinary
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
    mapping_lr_mul=0.1,  # a shallow mapping has to learn argmax-like switches: let it move faster
)
SHAPES = world.SHAPES
COLOURS = tuple(world.SHAPE_COLOURS)
BACKGROUNDS = tuple(world.BACKGROUNDS)
_S, _C, _B = len(SHAPES), len(COLOURS), len(BACKGROUNDS)


def scene_of(z: torch.Tensor) -> world.Scene:
    """The scene a latent encodes (a pure function of z [z_dim], documented in the module doc)."""
    zn = normalize_2nd_moment(z[None].float())[0]
    shape = SHAPES[int(zn[0:_S].argmax())]
    colour = COLOURS[int(zn[_S : _S + _C].argmax())]
    bg_order = zn[_S + _C : _S + _C + _B].argsort(descending=True).tolist()
    background = next(BACKGROUNDS[i] for i in bg_order if BACKGROUNDS[i] != colour)
    u = torch.special.ndtr(zn[_S + _C + _B : _S + _C + _B + 4]).tolist()
    radius = 0.18 + 0.14 * u[2]
    lo, hi = radius * 0.8, 1 - radius * 0.8
    return world.Scene(
        shape=shape, colour=colour, background=background,
        colour_rgb=world.SHAPE_COLOURS[colour], background_rgb=world.BACKGROUNDS[background],
        cx=lo + (hi - lo) * u[0], cy=lo + (hi - lo) * u[1], radius=radius, angle=360.0 * u[3],
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
        loss = (got - want).abs().mean() + (F.avg_pool2d(got, 2) - F.avg_pool2d(want, 2)).abs().mean()
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
