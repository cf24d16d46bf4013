"""StyleGAN3 next to StyleGAN2 at the same resolution: sampling throughput and seconds per adaptation step.

    python bench/bench_stylegan3.py                     # 256 px, 1 warm-up + 1 timed step per family
    python bench/bench_stylegan3.py --resolution 128 --steps 3 --device cuda

Setup: random weights; StyleGAN2 with the config-f channel layout (channels_rosinality), StyleGAN3-T
and -R with NVIDIA's settings (channel_base 32768 / 65536, channel_max 512 / 1024, 14 layers); the
ViT-B-32 architecture with random weights (no download); batch 2, layers "all", text direction
"photo" -> "sketch". All families run in this one process, one after the other, so the ratios compare
like with like on whatever the machine is doing. Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make(family: str, resolution: int):
    import torch

    from nada.stylegan2 import Generator, GeneratorConfig, channels_rosinality
    from nada.stylegan3 import StyleGAN3Config, StyleGAN3Generator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if family == "stylegan2":
            return Generator(GeneratorConfig(img_resolution=resolution, channels=channels_rosinality(resolution, 2)))
        r = family == "stylegan3-r"
        cfg = StyleGAN3Config(img_resolution=resolution, conv_kernel=1 if r else 3, use_radial_filters=r,
                              channel_base=65536 if r else 32768, channel_max=1024 if r else 512)  # fmt: skip
        return StyleGAN3Generator(cfg)


def measure(G, clip, direction, steps: int, device) -> dict[str, float]:
    import torch
    from nada.adapt import AdaptConfig, adapt
    from nada.sample import sample

    G = G.eval().requires_grad_(False).to(device)
    sample(G, [0, 1])  # warm-up
    n = 8
    t0 = time.perf_counter()
    sample(G, list(range(n)), batch_size=4)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    images_per_s = n / (time.perf_counter() - t0)
    stamps: list[float] = []

    def on_step(_):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())

    adapt(G, clip, direction, AdaptConfig(steps=steps + 1, batch=2, seed=0, gradient_checkpointing=False),
          callback=on_step, device=device)  # fmt: skip
    per_step = [b - a for a, b in zip(stamps, stamps[1:])]  # the first step is the warm-up
    return {"images_per_s": images_per_s, "s_per_step": statistics.median(per_step)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--steps", type=int, default=1, help="timed steps per family (plus one warm-up step)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--families", default="stylegan2,stylegan3-t,stylegan3-r")
    args = ap.parse_args()

    import torch

    from nada import clip as nada_clip
    from nada import directions

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clip = nada_clip.load_clip("ViT-B-32", random_weights=True, device=device)
    direction = directions.text_direction(clip, "photo", "sketch", templates=None)
    rows = {}
    for family in args.families.split(","):
        rows[family] = measure(make(family, args.resolution), clip, direction, args.steps, device)
    base = rows.get("stylegan2")
    print(f"{args.resolution} px, {args.device}, {torch.get_num_threads()} threads, {args.steps} timed step(s)")
    print(f"{'family':<12} {'images/s':>9} {'s/step':>8} {'images/s ×SG2':>14} {'s/step ×SG2':>12}")
    for family, r in rows.items():
        ratio_s = f"{r['images_per_s'] / base['images_per_s']:.2f}x" if base else "-"
        ratio_t = f"{r['s_per_step'] / base['s_per_step']:.2f}x" if base else "-"
        print(f"{family:<12} {r['images_per_s']:>9.2f} {r['s_per_step']:>8.2f} {ratio_s:>14} {ratio_t:>12}")


if __name__ == "__main__":
    main()
