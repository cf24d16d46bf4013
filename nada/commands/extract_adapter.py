"""`python -m nada extract-adapter`: a full adaptation (yours, or a published NADA checkpoint) as a small adapter.

    python -m nada extract-adapter ffhq.pt pixar.pt --rank 8 --out pixar.safetensors
    python -m nada extract-adapter ffhq.pt pixar.pt --max-error 0.01 --out pixar.safetensors

Without --rank and --max-error the adapter holds the exact differences (as large as the changed
tensors). The image error printed is measured on the written file (see `nada.adapters.extract`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import DEVICE_HELP


def add_parser(subparsers) -> argparse.ArgumentParser:
    help_text = "extract a small adapter from a base generator and a full adaptation of it"
    p = subparsers.add_parser("extract-adapter", help=help_text, description=help_text)
    p.add_argument("base", help="the generator that was adapted (.pt, .pkl, .safetensors)")
    p.add_argument("adapted", help="the adapted generator (e.g. a published StyleGAN-NADA checkpoint)")
    p.add_argument("--rank", type=int, default=None,
                   help="rank of the weight factors (higher = closer and larger); with --max-error: the highest rank tried")  # fmt: skip
    p.add_argument("--max-error", type=float, default=None,
                   help="pick the smallest rank whose image error (mean |pixel difference| in [-1, 1] over "
                        "--seeds at truncation 0.7) is at most this, e.g. 0.01")  # fmt: skip
    p.add_argument("--seeds", default="0-3", help="seeds the image error is measured on (default 0-3)")
    p.add_argument(
        "--name", default=None, help="adapter name (default: the target prompt, else the adapted file's name)"
    )
    p.add_argument("--half", action="store_true", help="store fp16 (half the size; loads as fp32)")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP + " (default cpu)")
    p.add_argument("--out", required=True, help="adapter file to write (.safetensors)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    import torch

    from ..adapters import extract_adapter, image_error, load_adapter, render_seeds, save_adapter
    from ..devices import parse_device
    from ..errors import NadaError
    from ..sampling import parse_seeds
    from ..stylegan2.formats import load_generator

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise NadaError(f"{out} already exists; choose another name or pass --overwrite")
    device = parse_device(args.device)
    base = load_generator(args.base, device=device)
    adapted = load_generator(args.adapted, device=device)
    seeds = tuple(parse_seeds(args.seeds))
    adapter = extract_adapter(base, adapted, rank=args.rank, max_error=args.max_error, name=args.name or "",
                              seeds=seeds)  # fmt: skip
    if not adapter.name:
        adapter.metadata["name"] = Path(args.adapted).stem
    save_adapter(adapter, out, overwrite=args.overwrite, dtype=torch.float16 if args.half else None)
    written = load_adapter(out)
    error = image_error(base, written, render_seeds(adapted, seeds), seeds)
    what = f"rank {adapter.metadata['rank']}" if adapter.kind == "lora" else "exact differences"
    print(
        f"wrote adapter {adapter.name!r} to {out} ({out.stat().st_size / 1024:.1f} KB, {what}): image error "
        f"{error:.5f} on seeds {args.seeds}; relative change of the weights {adapter.metadata['relative_change']:.4f}"
    )
    return 0
