"""The README's pictures, rendered from the demo world (demo generator + tiny CLIP) so they stay true.

    python -m nada.demo.readme_images                 # writes docs/images/demo_*.png, prints the scores

Every picture is a pure function of the bundled models and the seeds below: the adaptations are
seeded, so rerunning the script on the same machine rewrites the same pixels. It replaces the files
it owns (docs/images/demo_*.png) and nothing else.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ..images import labelled_grid, save_image
from ..sampling import blend_generators, interpolate, render, sample, seeds_to_z, z_to_w
from .run import DEMO_STEPS, adapt_demo, load_demo_world, pixel_change, target_probability

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
SCALE = 4  # 32 px tiles are tiny on screen: nearest-neighbour upscaling keeps them honest
GRID_SEEDS = list(range(8))
PSI = 0.7

# (file, source text, target text): the before/after pictures of the README.
EXAMPLES = (
    ("demo_blue_to_red.png", "blue", "red"),
    ("demo_green_to_purple.png", "green", "purple"),
    ("demo_gray_to_white_background.png", "gray background", "white background"),
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(DOCS_IMAGES), help="folder (default docs/images of the checkout)")
    ap.add_argument(
        "--steps", type=int, default=DEMO_STEPS, help=f"adaptation steps per example (default {DEMO_STEPS}, the demo's)"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))  # the same pixels on every run of a machine
    out = Path(args.out)
    start = time.perf_counter()
    G, clip = load_demo_world()
    first = None  # the first example's adapted generator, for the interpolation and blend strips
    for name, source, target in EXAMPLES:
        G2 = adapt_demo(G, clip, source, target, steps=args.steps)
        if first is None:
            first = G2
        before, after = sample(G, GRID_SEEDS, PSI), sample(G2, GRID_SEEDS, PSI)
        picture = labelled_grid([("before", before), ("after", after)], scale=SCALE)
        save_image(picture, out / name, overwrite=True)
        p0 = target_probability(clip, before, source, target)
        p1 = target_probability(clip, after, source, target)
        px = pixel_change(before, after, target)
        pixels = f"background pixels changed {px.background_moved:.0%}"
        if px.target_share_before is not None:
            pixels = f"shape pixels nearest to {target!r} {px.target_share_before:.0%} -> {px.target_share_after:.0%}, {pixels}"
        print(f"{name}: {source!r} -> {target!r}: tiny CLIP P(target) {p0:.3f} before, {p1:.3f} after; {pixels}")

    # Interpolation: the same W path through the original and the adapted generator.
    G2 = first
    keys = z_to_w(G, seeds_to_z([3, 5], G.config.z_dim), PSI)
    path = interpolate(keys, 8, mode="lerp")
    rows = [("original", render(G, path)), ("adapted", render(G2, path))]
    save_image(labelled_grid(rows, scale=SCALE), out / "demo_interpolation.png", overwrite=True)

    # Blend: original -> adapted weights (alpha past 1 extrapolates the change).
    alphas = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25]
    rows = []
    for seed in (0, 1, 2):
        imgs = [sample(blend_generators(G, G2, a), [seed], PSI) for a in alphas]
        rows.append((f"seed {seed}", torch.cat(imgs)))
    save_image(
        labelled_grid(rows, header=[f"{a:g}" for a in alphas], scale=SCALE), out / "demo_blend.png", overwrite=True
    )
    print(f"pictures in {out} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
