"""Seconds per projector step at 256 and 1024 px (config-f channel layout, random weights), per loss.

    python bench/bench_projector.py                         # 256 and 1024, every case, 1 warm-up + 2 timed steps
    python bench/bench_projector.py --resolutions 256 --steps 5 --device cuda

A step is one generator forward and backward pass plus the loss: the projector's cost is the number
of steps times this. Cases: multi-scale pixels in W+ (the default without weight files), the same in
W, with noise-map optimisation, with VGG16 features (LPIPS costs the same; random VGG weights written
to a temporary file, since speed does not depend on them), and the bare generator forward + backward
for comparison. Seconds per step are the median of the timed steps after the warm-up; "x pixels" is the
ratio to the pixels/W+ case of the same resolution in this run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nada.inversion import perceptual  # noqa: E402
from nada.inversion.project import project  # noqa: E402
from nada.stylegan2 import Generator, GeneratorConfig, channels_rosinality  # noqa: E402

GENERATOR_ONLY = "generator fwd+bwd"
CASES = {  # case -> project() arguments (the VGG16 file is added for "vgg16")
    "pixels w+": {"space": "w+"},
    "pixels w": {"space": "w"},
    "pixels w+ noise": {"space": "w+", "optimize_noise": True},
    "vgg16 w+": {"space": "w+"},
    GENERATOR_ONLY: {},
}


def step_times(G, target, case: str, steps: int, vgg_file: Path) -> list[float]:
    if case == GENERATOR_ONLY:
        times = []
        for _ in range(steps + 1):
            ws = G.mapping.w_avg.expand(1, G.num_ws, -1).clone().requires_grad_(True)
            start = time.perf_counter()
            G.synthesis(ws).square().mean().backward()
            times.append(time.perf_counter() - start)
        return times[1:]
    stamps: list[float] = []
    kw = dict(CASES[case], perceptual_weights=vgg_file if case.startswith("vgg16") else None)
    start = time.perf_counter()
    project(G, target, steps=steps + 1, callback=lambda p: stamps.append(time.perf_counter()), **kw)
    # The first interval includes the setup (w statistics, loss construction) and the warm-up step.
    return [b - a for a, b in zip(stamps, stamps[1:])] or [stamps[0] - start]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolutions", default="256,1024")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per case (after one warm-up)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cases", default=",".join(CASES))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cases = [c for c in args.cases.split(",") if c]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}, batch 1")
    with tempfile.TemporaryDirectory() as tmp:
        vgg_file = Path(tmp) / "vgg16.pth"
        torch.save(perceptual.VGG16Features().state_dict(), vgg_file)
        for res in (int(r) for r in args.resolutions.split(",")):
            torch.manual_seed(0)
            cfg = GeneratorConfig(img_resolution=res, channels=channels_rosinality(res, 2))
            G = Generator(cfg).eval().requires_grad_(False).to(device)
            with torch.no_grad():
                target = G(torch.randn(1, cfg.z_dim, device=device)).clamp(-1, 1)
            print(f"\n{res} px config-f generator (random weights)")
            print(f"{'case':<22}{'s/step':>10}{'x pixels':>10}")
            base = None
            for case in cases:
                s = statistics.median(step_times(G, target, case, args.steps, vgg_file))
                base = base or s
                print(f"{case:<22}{s:>10.3f}{s / base:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
