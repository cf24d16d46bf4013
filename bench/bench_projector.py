"""Seconds per projector step at 256 and 1024 px (config-f channel layout, random weights), per loss.

    python bench/bench_projector.py                         # 256 and 1024, every case, 3 rounds
    python bench/bench_projector.py --resolutions 256 --rounds 5 --device cuda

A step is one generator forward and backward pass plus the loss: the projector's cost is the number
of steps times this. Cases: multi-scale pixels in W+ (the default without weight files), the same in
W, with noise-map optimisation, with VGG16 features (LPIPS costs the same; random VGG weights written
to a temporary file, since speed does not depend on them), and the bare generator forward + backward
for comparison. The cases take turns, round after round (each round: one warm-up step and one timed
step per case), so a machine whose load changes slows every case alike; seconds per step are the
median over the rounds, and "x pixels" is the ratio to the pixels/W+ case of the same resolution.
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


def step_time(G, target, case: str, vgg_file: Path) -> float:
    """Seconds of the second of two steps (the first warms up)."""
    if case == GENERATOR_ONLY:
        times = []
        for _ in range(2):
            ws = G.mapping.w_avg.expand(1, G.num_ws, -1).clone().requires_grad_(True)
            start = time.perf_counter()
            G.synthesis(ws).square().mean().backward()
            times.append(time.perf_counter() - start)
        return times[1]
    stamps: list[float] = []
    kw = dict(CASES[case], perceptual_weights=vgg_file if case.startswith("vgg16") else None)
    project(G, target, steps=2, callback=lambda p: stamps.append(time.perf_counter()), **kw)
    return stamps[1] - stamps[0]  # before the first callback lie the setup and the warm-up step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolutions", default="256,1024")
    ap.add_argument("--rounds", type=int, default=3, help="timed steps per case, one per round")
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
            times: dict[str, list[float]] = {case: [] for case in cases}
            for _ in range(args.rounds):
                for case in cases:
                    times[case].append(step_time(G, target, case, vgg_file))
            print(f"{'case':<22}{'s/step':>10}{'x pixels':>10}")
            base = statistics.median(times[cases[0]])
            for case in cases:
                s = statistics.median(times[case])
                print(f"{case:<22}{s:>10.3f}{s / base:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
