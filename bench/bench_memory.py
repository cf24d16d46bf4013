"""Activation memory of one adaptation step per resolution and batch, and the fit the VRAM policy uses.

    python bench/bench_memory.py                     # 64/128/256 px x batch 1/2 (+ checkpointing), ~3 min on CPU
    python bench/bench_memory.py --device cuda --resolutions 256,512,1024

Setup: config-f generators (channels_rosinality(res, 2), random weights), ViT-B-32 with random weights
(no download), text direction, directional loss, layers "all"; one step per case, each in its own
subprocess. Two measurements per case:

- saved: the bytes autograd keeps for the backward pass (unique storages seen by
  `torch.autograd.graph.saved_tensors_hooks` during the step, parameters left out: the estimate
  counts weights separately): device-independent, deterministic; these are the activations that
  dominate a step's memory.
- peak: what the step added on top of the loaded models: CUDA `max_memory_allocated` delta, or on the
  CPU the peak resident set size delta (noisy: the allocator keeps freed pages).

The fit is `saved = a * batch * S(res) + b * batch + c`, where S(res) = sum over the generator's blocks
of channels * side^2 (the activation volume of one image, which is what changes with resolution) and b
the per-image CLIP activations. `nada.adaptation.memory` holds the fitted constants. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1024 if sys.platform != "darwin" else 1)


def run_case(res: int, batch: int, checkpointing: bool, device: str) -> dict:
    import torch

    from nada import clip as nada_clip
    from nada import directions
    from nada.adaptation import AdaptConfig, adapt
    from nada.adaptation.memory import activation_volume
    from nada.stylegan2 import Generator, GeneratorConfig, channels_rosinality

    dev = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        G = Generator(GeneratorConfig(img_resolution=res, channels=channels_rosinality(res, 2))).eval()
    G.requires_grad_(False)
    G = G.to(dev)
    clip = nada_clip.load_clip("ViT-B-32", random_weights=True, device=dev, precision="fp32")
    d = directions.text_direction(clip, "photo", "sketch", templates=None)
    cfg = AdaptConfig(steps=1, batch=batch, preview_count=0, gradient_checkpointing=checkpointing)
    seen: dict[int, int] = {}
    # Storages of parameters (and of views of them, e.g. a transposed weight): counted with the weights.
    weights = {t.untyped_storage().data_ptr() for m in (G, clip.model) for t in m.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
        if isinstance(t, torch.nn.Parameter):
            weights.add(s.data_ptr())
        return t

    base_rss = _rss_bytes()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        adapt(G, clip, d, cfg, device=dev)
    peak = torch.cuda.max_memory_allocated(dev) - base if dev.type == "cuda" else _rss_bytes() - base_rss
    return {"res": res, "batch": batch, "checkpointing": checkpointing, "saved": sum(v for k, v in seen.items() if k not in weights), "peak": peak,
            "volume": activation_volume(G.config)}  # fmt: skip


def fit(rows: list[dict]) -> tuple[float, float, float]:
    import numpy as np

    plain = [r for r in rows if not r["checkpointing"]]
    x = np.array([[r["batch"] * r["volume"], r["batch"], 1.0] for r in plain])
    y = np.array([r["saved"] for r in plain], dtype=np.float64)
    (a, b, c), *_ = np.linalg.lstsq(x, y, rcond=None)
    return float(a), float(b), float(c)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--resolutions", default="64,128,256")
    ap.add_argument("--batches", default="1,2")
    ap.add_argument("--json", default=None, help="also write the rows and the fit to this file")
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: "res,batch,ckpt"
    args = ap.parse_args()
    if args.case:
        res, batch, ckpt = (int(v) for v in args.case.split(","))
        print(json.dumps(run_case(res, batch, bool(ckpt), args.device)))
        return
    resolutions = [int(v) for v in args.resolutions.split(",")]
    cases = [(r, b, 0) for r in resolutions for b in (int(v) for v in args.batches.split(","))]
    cases.append((resolutions[-1], 2, 1))
    rows = []
    for case in cases:
        cmd = [sys.executable, __file__, "--case", ",".join(map(str, case)), "--device", args.device]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if out.returncode != 0:
            print(f"{case}: failed\n{out.stderr[-2000:]}")
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    a, b, c = fit(rows)
    mb = 2**20
    print(f"{'res':>5}{'batch':>6}{'ckpt':>6}{'saved MB':>10}{'fit MB':>9}{'peak MB':>9}")
    for r in rows:
        pred = a * r["batch"] * r["volume"] + b * r["batch"] + c
        ck = "on" if r["checkpointing"] else "off"
        print(f"{r['res']:>5}{r['batch']:>6}{ck:>6}{r['saved'] / mb:>10.0f}{pred / mb:>9.0f}{r['peak'] / mb:>9.0f}")
    print(f"\nfit: saved = {a:.2f} * batch * S(res) + {b / mb:.1f} MB * batch + {c / mb:.1f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "fit": [a, b, c]}, indent=1))


if __name__ == "__main__":
    main()
