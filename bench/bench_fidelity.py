"""Quality side by side of a fidelity switch (docs/fidelity.md): shape changes on the demo world with
mixing 0, mixing 0.9 with a shared crossover (ours) and with a per-generator crossover (official), and
the whole official-compatible mode. Not a speed benchmark: it prints, per prompt pair and setting, the
tiny CLIP's zero-shot P(target) (templates the direction was not built with), the edge-layout
correlation to the unadapted samples and the drift of each image's mean colour, averaged over 3 seeds.

    python bench/bench_fidelity.py            # ~3 min on one CPU core
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nada  # noqa: E402
from nada.demo.run import load_demo_world  # noqa: E402
from tests.adapt_fixtures import layout_correlation, zero_shot  # noqa: E402

PAIRS = (("circle", "square"), ("square", "circle"), ("circle", "star"), ("triangle", "cross"))
SETTINGS = (
    ("mixing 0", {}),
    ("mixing 0.9, crossover shared", {"mixing": 0.9}),
    ("mixing 0.9, crossover per_generator", {"mixing": 0.9, "crossover": "per_generator"}),
    ("compat official, mixing 0.9", {"mixing": 0.9, "compat": "official"}),
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.steps} steps, seeds 0-2")
    G, clip = load_demo_world()
    seeds = list(range(100, 124))  # samples judged; no test trains on them
    base = nada.sample(G, seeds, truncation_psi=0.7)
    for src, tgt in PAIRS:
        d = nada.text_direction(clip, src, tgt)
        print(f"{src} -> {tgt}: unadapted P(target) {zero_shot(clip, base, src, tgt):.3f}")
        for name, kw in SETTINGS:
            rows = []
            for seed in (0, 1, 2):
                cfg = nada.AdaptConfig(steps=args.steps, seed=seed, preview_count=0, **kw)
                out = nada.sample(nada.adapt(G, clip, d, cfg, device="cpu").generator, seeds, truncation_psi=0.7)
                drift = (out.mean((2, 3)) - base.mean((2, 3))).abs().mean().item()
                rows.append((zero_shot(clip, out, src, tgt), layout_correlation(base, out), drift))
            p_t, layout, drift = (sum(r[i] for r in rows) / len(rows) for i in range(3))
            print(f"  {name:38s} P(target) {p_t:.3f}  layout corr {layout:6.3f}  colour drift {drift:.3f}", flush=True)


if __name__ == "__main__":
    main()
