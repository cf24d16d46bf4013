"""`python -m nada sample`: render a grid of seeds from a generator."""

from __future__ import annotations

import argparse

from .common import DEVICE_HELP


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("sample", help="render a grid of seeds from a generator")
    p.add_argument("--generator", required=True, help="generator file (.pt, .pkl, .safetensors)")
    p.add_argument("--seeds", default="0-7", help="seeds, e.g. 0-7 or 1,5,9 (default 0-7)")
    p.add_argument("--truncation", type=float, default=0.7, help="truncation psi (default 0.7)")
    p.add_argument("--noise-mode", default="const", choices=["const", "random", "none"])
    p.add_argument("--class-index", type=int, default=None, help="class of a conditional generator")
    p.add_argument("--nrow", type=int, default=None, help="images per row (default: about sqrt(n))")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..devices import parse_device
    from ..images import image_grid, save_image
    from ..sampling import sample
    from ..stylegan2.formats import load_generator

    G = load_generator(args.generator).to(parse_device(args.device))
    images = sample(G, args.seeds, args.truncation, args.noise_mode, class_index=args.class_index)
    path = save_image(image_grid(images, nrow=args.nrow), args.out, overwrite=args.overwrite)
    print(f"wrote {path} ({images.shape[0]} images)")
    return 0
