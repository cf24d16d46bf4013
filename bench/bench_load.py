"""Loading a 1024 px config-f generator: each of our formats against a plain torch.load of its state dict.

    python bench/bench_load.py [--resolution 1024] [--repeats 3]

Issue 2's bar: our loader takes under 2x the time of a plain `torch.load` of the same state dict.
The generator (random weights, config-f channel layout) is made by the bench and written in each
format; every load is timed `--repeats` times in this one run and the best time is reported, as a
ratio to the plain torch.load baseline.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nada.stylegan2 import Generator, GeneratorConfig, channels_rosinality  # noqa: E402
from nada.stylegan2.formats import export_rosinality, load_generator, save_generator  # noqa: E402


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cfg = GeneratorConfig(img_resolution=args.resolution, channels=channels_rosinality(args.resolution, 2))
    G = Generator(cfg).eval().requires_grad_(False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plain = tmp / "state_dict.pt"
        torch.save(G.state_dict(), plain)
        ours = save_generator(G, tmp / "g.safetensors")
        ros = export_rosinality(G, tmp / "g.pt")
        base = best_of(lambda: torch.load(plain, weights_only=True), args.repeats)
        rows = [
            ("plain torch.load(state_dict.pt)", base, plain.stat().st_size),
            ("load_generator(.safetensors)", best_of(lambda: load_generator(ours), args.repeats), ours.stat().st_size),
            ("load_generator(rosinality .pt)", best_of(lambda: load_generator(ros), args.repeats), ros.stat().st_size),
        ]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.resolution} px config-f "
        f"({sum(p.numel() for p in G.parameters()) / 1e6:.2f} M parameters), best of {args.repeats}"
    )
    print(f"{'what':<36}{'seconds':>10}{'vs torch.load':>15}{'file MB':>10}")
    for what, secs, size in rows:
        print(f"{what:<36}{secs:>10.3f}{secs / base:>15.2f}{size / 1e6:>10.1f}")


if __name__ == "__main__":
    main()
