"""Adapter file sizes for a 1024 px config-f generator (issue 7's bar: lora rank 4 < 2 MB, modulation < 200 KB).

    python bench/bench_adapters.py [--resolution 1024] [--rank 4]

Builds a config-f generator with random weights, makes each parameterisation over the default
trainable layers (the `all` preset), fills the learned tensors with random values (file sizes do not
depend on the values), saves the adapter files and prints their sizes next to the full generator's.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nada import layers  # noqa: E402
from nada.adaptation.parameterizations import make_parameterization
from nada.adapters import save_adapter  # noqa: E402
from nada.stylegan2 import Generator, GeneratorConfig, channels_rosinality  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=1024)
    ap.add_argument("--rank", type=int, default=4)
    args = ap.parse_args()
    cfg = GeneratorConfig(img_resolution=args.resolution, channels=channels_rosinality(args.resolution, 2))
    G = Generator(cfg).eval().requires_grad_(False)
    names = list(layers.unit_parameters(G, layers.resolve_units(G, "all")))
    full_bytes = sum(t.numel() * t.element_size() for t in G.state_dict().values())
    rows = [("full generator (fp32 tensors)", sum(p.numel() for p in G.parameters()), full_bytes)]
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("lora", "modulation"):
            p = make_parameterization(kind, G, names, rank=args.rank)
            with torch.no_grad():
                for t in p.parameters():
                    t.normal_()
            adapter = p.to_adapter({"base_fingerprint": "0" * 64, "kind": kind})
            for dtype, label in ((torch.float32, "fp32"), (torch.float16, "fp16")):
                path = save_adapter(adapter, Path(tmp) / f"{kind}-{label}.safetensors", dtype=dtype)
                rows.append((f"{kind} adapter ({label})" + (f", rank {args.rank}" if kind == "lora" else ""),
                             adapter.num_parameters(), os.path.getsize(path)))
    print(f"torch {torch.__version__}, {args.resolution} px config-f, trainable layers: preset 'all' ({len(names)} tensors)")
    print(f"{'what':<36}{'parameters':>14}{'file size':>14}{'vs full':>10}")
    for what, n, size in rows:
        print(f"{what:<36}{n:>14,}{size / 1024:>11,.1f} KB{size / full_bytes:>10.4f}")


if __name__ == "__main__":
    main()
