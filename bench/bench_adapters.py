"""Adapter file sizes at 1024 px config-f: trained adapters (issue 7's bar: lora rank 4 < 2 MB, modulation
< 200 KB) and adapters extracted from a full adaptation, with their image errors (issue 17).

    python bench/bench_adapters.py [--resolution 1024] [--rank 4] [--extract-ranks 1,4,16] [--seeds 0-3]
    python bench/bench_adapters.py --demo-steps 100     # extraction from a real run of the demo generator

Trained adapters: each parameterisation over the default trainable layers (the `all` preset), its
learned tensors filled with random values (file sizes do not depend on the values).

Extraction: a full NADA run at 1024 px does not fit this CPU, so the adapted generator is the base
(random weights) plus a synthetic shift shaped like the real runs measured on the demo generator
(100 full steps, tiny CLIP): there every weight matrix moved by ~1.1 % of its norm, the top 16
singular values of a convolution delta held 60-95 % of its energy and those of a style affine ~97 %,
and every bias, noise strength, the constant and the to-RGB layers changed too. Here, per tensor:
  - convolution weights: rel * ||W|| * (sqrt(0.6) L8 + sqrt(0.4) N), L8 a rank-8 matrix with
    singular values ~ 1/k, N dense Gaussian (each of unit norm); rel = 0.02;
  - style affines and to-RGB weights: the same with 0.85 / 0.15 energy (a steeper spectrum);
  - the constant, biases: rel * ||t|| Gaussian (0.1 * the mean |affine bias| for zero biases);
    noise strengths: 0.01 absolute; the mapping network is unchanged (NADA never trains it).
The image error is measured on the written fp16 file (`nada.adapters.image_error`: mean |pixel
difference| in [-1, 1] over the seeds at truncation 0.7), next to the error of the base itself.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nada import layers  # noqa: E402
from nada.adaptation.parameterizations import make_parameterization  # noqa: E402
from nada.adapters import extract_adapter, image_error, load_adapter, measure_shift, render_seeds, save_adapter  # noqa: E402
from nada.sampling import parse_seeds  # noqa: E402
from nada.stylegan2 import Generator, GeneratorConfig, channels_rosinality  # noqa: E402

REL = 0.02


def low_rank_plus_noise(
    shape: torch.Size, norm: float, rank: int, low_share: float, g: torch.Generator
) -> torch.Tensor:
    m, n = shape[0], math.prod(shape[1:])
    r = min(rank, m, n)
    u, _ = torch.linalg.qr(torch.randn(m, r, generator=g))
    v, _ = torch.linalg.qr(torch.randn(n, r, generator=g))
    s = 1.0 / torch.arange(1, r + 1)
    low = u * s @ v.T
    noise = torch.randn(m, n, generator=g)
    d = math.sqrt(low_share) * low / low.norm() + math.sqrt(1 - low_share) * noise / noise.norm()
    return (norm * d).reshape(shape)


def synthetic_adaptation(G: Generator, seed: int = 0) -> Generator:
    """G plus a shift shaped like a real NADA run's (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    bias_scale = (
        0.1 * torch.cat([p.abs().flatten() for n, p in G.named_parameters() if n.endswith("affine.bias")]).mean()
    )
    out = {}
    for name, p in G.named_parameters():
        if not name.startswith("synthesis."):
            continue
        if name.endswith(".weight") and p.ndim >= 2:
            share = 0.6 if (p.ndim == 4 and ".torgb." not in name) else 0.85
            out[name] = p + low_rank_plus_noise(p.shape, REL * float(p.norm()), 8, share, g)
        elif name.endswith("noise_strength"):
            out[name] = p + 0.01
        else:
            scale = REL * float(p.norm()) / math.sqrt(p.numel()) if float(p.abs().max()) > 0 else float(bias_scale)
            out[name] = p + scale * torch.randn(p.shape, generator=g)
    return G.with_tensors(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=1024)
    ap.add_argument("--rank", type=int, default=4, help="rank of the trained lora adapter")
    ap.add_argument("--extract-ranks", default="1,4,16", help="ranks of the extracted adapters ('' = skip)")
    ap.add_argument("--seeds", default="0-3", help="seeds of the image error")
    ap.add_argument("--demo-steps", type=int, default=0, help="instead: extract from a real N-step demo run")
    args = ap.parse_args()
    if args.demo_steps:
        demo_extraction(args.demo_steps, tuple(parse_seeds(args.seeds)))
        return
    cfg = GeneratorConfig(img_resolution=args.resolution, channels=channels_rosinality(args.resolution, 2))
    torch.manual_seed(0)
    G = Generator(cfg).eval().requires_grad_(False)
    names = list(layers.unit_parameters(G, layers.resolve_units(G, "all")))
    full_bytes = sum(t.numel() * t.element_size() for t in G.state_dict().values())
    rows = [("full generator (fp32 tensors)", sum(p.numel() for p in G.parameters()), full_bytes, None)]
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("lora", "modulation"):
            p = make_parameterization(kind, G, names, rank=args.rank)
            with torch.no_grad():
                for t in p.parameters():
                    t.normal_()
            adapter = p.to_adapter({"base_fingerprint": "0" * 64, "kind": kind})
            for dtype, label in ((torch.float32, "fp32"), (torch.float16, "fp16")):
                path = save_adapter(adapter, Path(tmp) / f"{kind}-{label}.safetensors", dtype=dtype)
                rows.append(
                    (
                        f"trained {kind} ({label})" + (f", rank {args.rank}" if kind == "lora" else ""),
                        adapter.num_parameters(),
                        os.path.getsize(path),
                        None,
                    )
                )
        if args.extract_ranks:
            rows += extraction_rows(
                G, [int(r) for r in args.extract_ranks.split(",")], tuple(parse_seeds(args.seeds)), tmp
            )
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.resolution} px config-f (random "
        f"weights); trained adapters: preset 'all' ({len(names)} tensors); image error: seeds {args.seeds}"
    )
    # "of shift": the image error as a share of the base's own error (how much of the shift is missing).
    shift_error = next((err for what, _, _, err in rows if what.startswith("base itself")), None)
    print(f"{'what':<40}{'parameters':>14}{'file size':>14}{'vs full':>10}{'image error':>13}{'of shift':>10}")
    for what, n, size, err in rows:
        shown = "" if err is None else f"{err:13.5f}{err / shift_error:>10.2%}"
        print(f"{what:<40}{n:>14,}{size / 1024:>11,.1f} KB{size / full_bytes:>10.4f}{shown}")


def extraction_rows(G: Generator, ranks: list[int], seeds: tuple[int, ...], tmp: str) -> list[tuple]:
    A = synthetic_adaptation(G)
    shift = measure_shift(G, A)
    print(f"synthetic adaptation: {len(shift.deltas)} tensors changed, relative change {shift.relative_change:.4f}",
          file=sys.stderr)  # fmt: skip
    reference = render_seeds(A, seeds)
    rows = [("base itself (no adapter)", 0, 0, float((render_seeds(G, seeds) - reference).abs().mean()))]
    for rank in ranks:
        adapter = shift.adapter(rank)
        path = save_adapter(adapter, Path(tmp) / f"extracted-r{rank}.safetensors", dtype=torch.float16)
        rows.append(
            (
                f"extracted (fp16), rank {rank}",
                adapter.num_parameters(),
                os.path.getsize(path),
                image_error(G, load_adapter(path), reference, seeds),
            )
        )
    exact = extract_adapter(G, A)
    path = save_adapter(exact, Path(tmp) / "extracted-exact.safetensors", dtype=torch.float16)
    rows.append(
        (
            "extracted (fp16), exact differences",
            exact.num_parameters(),
            os.path.getsize(path),
            image_error(G, load_adapter(path), reference, seeds),
        )
    )
    return rows


def demo_extraction(steps: int, seeds: tuple[int, ...]) -> None:
    """A real full NADA run (the demo generator, 32 px, tiny CLIP, 'a photo' -> 'a red sketch', every
    layer and to-RGB trained) and the image error of its extracted adapter per rank."""
    import nada
    from nada.demo import load_tiny_clip
    from nada.demo.run import DEMO_GENERATOR

    G = nada.load_generator(DEMO_GENERATOR)
    clip = load_tiny_clip()
    d = nada.text_direction(clip, "a photo", "a red sketch", templates=None)
    A = nada.adapt(G, clip, d, nada.AdaptConfig(steps=steps, layers="all_with_torgb")).generator
    shift = measure_shift(G, A)
    reference = render_seeds(A, seeds)
    base_error = float((render_seeds(G, seeds) - reference).abs().mean())
    print(
        f"torch {torch.__version__}; demo generator, {steps} full steps: {len(shift.deltas)} tensors changed, "
        f"relative change {shift.relative_change:.4f}; base vs adapted image error {base_error:.5f} (seeds {seeds})"
    )
    print(f"{'rank':>6}{'parameters':>12}{'fp32 KB':>10}{'image error':>13}{'of shift':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for rank in sorted({1, 2, 4, 8, 16, 32, 64, shift.full_rank}):
            adapter = shift.adapter(rank)
            size = save_adapter(adapter, Path(tmp) / f"r{rank}.safetensors").stat().st_size
            err = image_error(G, adapter, reference, seeds)
            print(f"{rank:>6}{adapter.num_parameters():>12,}{size / 1024:>10.1f}{err:>13.5f}{err / base_error:>10.2%}")


if __name__ == "__main__":
    main()
