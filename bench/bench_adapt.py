"""Seconds per adaptation step, peak memory, and sampling throughput at 256 px.

    python bench/bench_adapt.py                 # all cases, 1 warm-up + 1 timed step each (~5 min on CPU)
    python bench/bench_adapt.py --steps 5 --device cuda

Setup: a 256 px generator with the config-f channel layout (channels_rosinality(256, 2), random
weights), the ViT-B-32 architecture with random weights (no download; speed and memory do not depend
on the weights), batch 2, text direction "photo" -> "sketch" without templates.

Each case runs in its own subprocess so that peak memory is its own: on CPU the peak resident set
size (ru_maxrss) of the process minus its size once the models are loaded; on CUDA
torch.cuda.max_memory_allocated over the steps. Seconds per step are the median over the timed
steps, after one warm-up step. Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASES = {
    "step": dict(layers="all", gradient_checkpointing=False),
    "step+checkpointing": dict(layers="all", gradient_checkpointing=True),
    "step+auto": dict(layers="auto", gradient_checkpointing=False),
    "step+auto+checkpointing": dict(layers="auto", gradient_checkpointing=True),
    "sampling": None,
}


def _rss_mb() -> float:
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 1024 / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _models(device):
    import torch

    from nada import clip as nada_clip
    from nada import directions
    from nada.stylegan2 import Generator, GeneratorConfig, channels_rosinality

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        G = Generator(GeneratorConfig(img_resolution=256, channels=channels_rosinality(256, 2))).eval()
    G.requires_grad_(False)
    G = G.to(device)
    clip = nada_clip.load_clip("ViT-B-32", random_weights=True, device=device)
    d = directions.text_direction(clip, "photo", "sketch", templates=None)
    return G, clip, d


def run_case(name: str, steps: int, device: str) -> dict:
    import torch

    from nada.adaptation import AdaptConfig, adapt
    from nada.sampling import sample

    dev = torch.device(device)
    G, clip, direction = _models(dev)
    base_rss = _rss_mb()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base_cuda = torch.cuda.memory_allocated(dev)
    if CASES[name] is None:
        sample(G, [0, 1])  # warm-up
        n = 16
        t0 = time.perf_counter()
        sample(G, list(range(n)), batch_size=8)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        dt = time.perf_counter() - t0
        result = {"images_per_s": n / dt}
    else:
        stamps = []
        cfg = AdaptConfig(steps=steps + 1, batch=2, seed=0, **CASES[name])
        start = time.perf_counter()

        def on_step(p):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            stamps.append(time.perf_counter())

        adapt(G, clip, direction, cfg, callback=on_step, device=dev)
        per_step = [b - a for a, b in zip(stamps, stamps[1:])]  # the first step is the warm-up
        result = {"s_per_step": statistics.median(per_step), "setup_and_first_step_s": stamps[0] - start}
    if dev.type == "cuda":
        result["peak_mb"] = (torch.cuda.max_memory_allocated(dev) - base_cuda) / 2**20
    else:
        result["peak_mb"] = _rss_mb() - base_rss
    result["base_mb"] = base_rss
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1, help="timed steps per case (plus one warm-up step)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of " + ", ".join(CASES))
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.case:
        print(json.dumps(run_case(args.case, args.steps, args.device)))
        return

    print(f"torch {torch.__version__}, threads {args.threads or torch.get_num_threads()}, device {args.device}")
    print("256 px config-f generator, ViT-B-32 (random weights), batch 2\n")
    rows = {}
    for name in args.cases.split(","):
        cmd = [sys.executable, __file__, "--case", name, "--steps", str(args.steps), "--device", args.device]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if out.returncode != 0:
            print(f"{name}: failed\n{out.stderr[-2000:]}")
            continue
        rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
    mem = "peak CUDA MB" if args.device.startswith("cuda") else "peak RSS MB (over loaded)"
    print(f"{'case':<26}{'s/step':>10}{'x step':>9}{mem:>28}")
    base = rows.get("step", {}).get("s_per_step")
    for name, r in rows.items():
        if "s_per_step" in r:
            ratio = f"{r['s_per_step'] / base:.2f}" if base else "-"
            print(f"{name:<26}{r['s_per_step']:>10.2f}{ratio:>9}{r['peak_mb']:>28.0f}")
        else:
            print(f"{name:<26}{r['images_per_s']:>8.2f} img/s{'':>7}{r['peak_mb']:>28.0f}")
    if rows:
        print(f"\nmodels loaded: {next(iter(rows.values()))['base_mb']:.0f} MB RSS")


if __name__ == "__main__":
    main()
