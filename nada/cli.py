"""`python -m nada`: adapt and sample from the command line.

    python -m nada adapt --generator ffhq.pt --clip ViT-B-32 --pretrained openai \\
        --source "photo" --target "sketch" --steps 300 --out sketch.safetensors
    python -m nada sample --generator sketch.safetensors --seeds 0-7 --out grid.png

The subcommands are listed in `SUBCOMMANDS`: each is a module function `add_parser(subparsers)` that
adds its sub-parser and sets `run` (args -> exit code) as its default. To add one, write that function
next to its code and add it here; nothing registers itself at import time.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from .commands import adapt as adapt_command
from .commands import extract_adapter as extract_adapter_command
from .commands import invert as invert_command
from .commands import sample as sample_command
from .demo import run as demo_command
from .errors import NadaError

log = logging.getLogger(__name__)

SUBCOMMANDS = (
    sample_command.add_parser,
    adapt_command.add_parser,
    invert_command.add_parser,
    extract_adapter_command.add_parser,
    demo_command.add_parser,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nada", description="StyleGAN-NADA: adapt, sample and invert.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser in SUBCOMMANDS:
        add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    start = time.perf_counter()
    try:
        code = args.run(args)
    except NadaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log.info("done in %.1f s", time.perf_counter() - start)
    return code
