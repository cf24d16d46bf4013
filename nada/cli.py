"""`python -m nada`: adapt and sample from the command line.

    python -m nada adapt --generator ffhq.pt --clip ViT-B-32 --pretrained openai \\
        --source "photo" --target "sketch" --steps 300 --out sketch.safetensors
    python -m nada sample --generator sketch.safetensors --seeds 0-7 --out grid.png

A subcommand is one function decorated with `@command(name, help)`: it receives its argparse
sub-parser, adds its arguments and returns the function that runs it (args -> exit code).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .errors import NadaError

log = logging.getLogger(__name__)

Runner = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], Runner]]] = {}


def command(name: str, help: str):
    """Register a subcommand: `fn(parser) -> runner`, where `runner(args) -> exit code`."""

    def register(fn: Callable[[argparse.ArgumentParser], Runner]):
        _COMMANDS[name] = (help, fn)
        return fn

    return register


# -- helpers shared by the subcommands ---------------------------------------------------------------


class ProgressLine:
    """A plain-text progress line on stderr: redrawn in place on a terminal, every ~5 % otherwise."""

    def __init__(self, total: int, stream=None):
        self.total = max(total, 1)
        self.stream = stream or sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.last_pct = -1

    def __call__(self, p) -> None:
        eta = (p.total - p.step) / p.it_per_s if p.it_per_s > 0 else float("nan")
        layers = f"  W+ {list(p.w_indices)}" if p.w_indices is not None else ""
        text = (
            f"step {p.step}/{p.total}  loss {p.loss:.4f}  {p.it_per_s:.2f} it/s  "
            f"eta {_duration(eta)}{layers}"
        )
        if self.tty:
            self.stream.write("\r" + text + " " * 4)
            if p.step == p.total:
                self.stream.write("\n")
        else:
            pct = int(100 * p.step / self.total) // 5
            if pct != self.last_pct or p.step == p.total:
                self.stream.write(text + "\n")
                self.last_pct = pct
        self.stream.flush()


def _duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)


def _load_generator(path: str):
    from .stylegan2.formats import load_generator

    return load_generator(path)


# -- sample -------------------------------------------------------------------------------------------


@command("sample", "render a grid of seeds from a generator")
def sample_command(p: argparse.ArgumentParser) -> Runner:
    p.add_argument("--generator", required=True, help="generator file (.pt, .pkl, .safetensors)")
    p.add_argument("--seeds", default="0-7", help="seeds, e.g. 0-7 or 1,5,9 (default 0-7)")
    p.add_argument("--truncation", type=float, default=0.7, help="truncation psi (default 0.7)")
    p.add_argument("--noise-mode", default="const", choices=["const", "random", "none"])
    p.add_argument("--class-index", type=int, default=None, help="class of a conditional generator")
    p.add_argument("--nrow", type=int, default=None, help="images per row (default: about sqrt(n))")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")

    def run(args: argparse.Namespace) -> int:
        from .images import image_grid, save_image
        from .sample import sample

        G = _load_generator(args.generator).to(_device(args.device))
        images = sample(G, args.seeds, args.truncation, args.noise_mode, class_index=args.class_index)
        path = save_image(image_grid(images, nrow=args.nrow), args.out, overwrite=args.overwrite)
        print(f"wrote {path} ({images.shape[0]} images)")
        return 0

    return run


# -- adapt --------------------------------------------------------------------------------------------


def _add_clip_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("CLIP (repeat --clip for an ensemble; the other options pair with it by position)")
    g.add_argument(
        "--clip", action="append", default=None, help="open_clip architecture or model config JSON (default ViT-B-32)"
    )
    g.add_argument(
        "--pretrained",
        action="append",
        default=None,
        help="open_clip pretrained tag (default openai; needs internet once) or a local weights file",
    )
    g.add_argument("--clip-config", action="append", default=None, help="custom model config JSON")
    g.add_argument("--clip-weight", action="append", type=float, default=None, help="ensemble weight (default 1)")


def _pad(values: Sequence | None, n: int, default, name: str) -> list:
    values = list(values or [])
    if len(values) > n:
        raise NadaError(f"{len(values)} --{name} values for {n} --clip models; give at most one per model")
    return values + [default] * (n - len(values))


def _load_clip_ensemble(args: argparse.Namespace, device: torch.device):
    from . import clip as nada_clip

    names = args.clip or ["ViT-B-32"]
    pretrained = _pad(args.pretrained, len(names), None, "pretrained")
    configs = _pad(args.clip_config, len(names), None, "clip-config")
    weights = _pad(args.clip_weight, len(names), 1.0, "clip-weight")
    specs = []
    for n, pt, cfg, w in zip(names, pretrained, configs, weights):
        if pt is None and cfg is None and not n.lower().endswith(".json"):
            pt = "openai"  # a built-in architecture without weights named: OpenAI's, as the paper
        specs.append({"model": n, "pretrained": pt, "config": cfg, "weight": w})
    return nada_clip.load_ensemble(specs, device=device)


@command("adapt", "adapt a generator to a new domain with CLIP (StyleGAN-NADA)")
def adapt_command(p: argparse.ArgumentParser) -> Runner:
    from .adapt import AdaptConfig
    from .layers import PRESETS

    d = AdaptConfig()
    p.add_argument("--generator", required=True, help="generator file (.pt, .pkl, .safetensors)")
    _add_clip_arguments(p)
    g = p.add_argument_group("direction")
    g.add_argument("--source", default=None, help='source text, e.g. "photo"')
    g.add_argument("--target", default=None, help='target text, e.g. "pencil sketch"')
    g.add_argument("--target-images", default=None, help="folder of target images (image-guided mode)")
    g.add_argument(
        "--source-images", default=None, help="folder of source images (default: samples of the generator)"
    )
    g.add_argument("--templates", default="imagenet", choices=["imagenet", "none"], help="prompt templates")
    t = p.add_argument_group("training")
    t.add_argument("--steps", type=int, default=d.steps, help=f"optimisation steps (default {d.steps})")
    t.add_argument("--batch", type=int, default=d.batch)
    t.add_argument("--lr", type=float, default=d.lr, help=f"learning rate (default {d.lr}; Adam runs at 0.8x)")
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--layers", default="all", help=f"'auto', a preset ({', '.join(PRESETS)}) or b8,b16.conv0,...")
    t.add_argument("--k", type=int, default=None, help="auto: W+ indices trained per step (default 2/3 of them)")
    t.add_argument("--select-every", type=int, default=d.select_every)
    t.add_argument("--mixing", type=float, default=d.mixing)
    for name in ("global", "manifold", "patch"):
        t.add_argument(f"--lambda-{name}", type=float, default=0.0, help=f"weight of the {name} loss")
    t.add_argument("--gradient-checkpointing", default="auto", choices=["auto", "on", "off"])
    t.add_argument("--parameterization", default="full", choices=["full", "lora", "modulation"],
                   help="full = train the weights (the paper); lora / modulation = a small adapter")
    t.add_argument("--rank", type=int, default=d.rank, help=f"lora rank (default {d.rank})")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    o = p.add_argument_group("output")
    o.add_argument("--out", required=True, help="adapted generator (.safetensors)")
    o.add_argument("--grid", default=None, help="before/after PNG (default: <out>.png)")
    o.add_argument("--grid-seeds", default="0-3", help="seeds of the before/after grid")
    o.add_argument("--truncation", type=float, default=0.7, help="truncation of the grid")
    o.add_argument("--adapter-out", default=None, help="with lora/modulation: also write the adapter file")
    o.add_argument("--overwrite", action="store_true", help="replace existing output files")

    def run(args: argparse.Namespace) -> int:
        from .adapt import adapt
        from .images import image_grid, save_image
        from .sample import sample

        out = Path(args.out)
        grid_path = Path(args.grid) if args.grid else out.with_suffix(".png")
        for path in (out, grid_path):
            if path.exists() and not args.overwrite:
                raise NadaError(f"{path} already exists; choose another name or pass --overwrite")
        layers = args.layers if "," not in args.layers else tuple(x for x in args.layers.split(",") if x)
        cfg = AdaptConfig(
            steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed, layers=layers, auto_k=args.k,
            select_every=args.select_every, mixing=args.mixing, lambda_global=args.lambda_global,
            lambda_manifold=args.lambda_manifold, lambda_patch=args.lambda_patch,
            gradient_checkpointing={"auto": "auto", "on": True, "off": False}[args.gradient_checkpointing],
            parameterization=args.parameterization, rank=args.rank,
        )  # fmt: skip
        if args.adapter_out and args.parameterization == "full":
            raise NadaError("--adapter-out needs --parameterization lora or modulation")
        device = _device(args.device)
        G = _load_generator(args.generator)
        clip = _load_clip_ensemble(args, device)
        direction = _direction(args, clip, G)
        G2 = adapt(G, clip, direction, cfg, callback=ProgressLine(cfg.steps), device=device)
        from .stylegan2.formats import save_generator

        save_generator(G2, out, overwrite=args.overwrite)
        if args.adapter_out:
            from .adapters import save_adapter

            save_adapter(G2.adapter, args.adapter_out, overwrite=args.overwrite)
            print(f"wrote adapter {args.adapter_out} ({Path(args.adapter_out).stat().st_size / 1024:.1f} KB)")
        before = sample(G, args.grid_seeds, args.truncation)
        after = sample(G2, args.grid_seeds, args.truncation)
        n = before.shape[0]
        save_image(image_grid(torch.cat([before, after]), nrow=n), grid_path, overwrite=args.overwrite)
        print(f"wrote {out} and {grid_path} (top row: before, bottom row: after)")
        return 0

    return run


def _direction(args: argparse.Namespace, clip, G):
    from . import directions

    templates = "imagenet" if args.templates == "imagenet" else None
    if args.target_images:
        source = args.source_images if args.source_images else G
        return directions.image_direction(clip, _read_images(args.target_images), _maybe_images(source))
    if not args.source or not args.target:
        raise NadaError("give --source and --target texts, or --target-images DIR")
    return directions.text_direction(clip, args.source, args.target, templates=templates)


def _maybe_images(source):
    return _read_images(source) if isinstance(source, str) else source


def _read_images(folder: str) -> list:
    from PIL import Image

    exts = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
    files = sorted(f for f in Path(folder).iterdir() if f.suffix.lower() in exts) if Path(folder).is_dir() else []
    if not files:
        raise NadaError(f"no images (png/jpg/webp/bmp) in {folder}")
    return [Image.open(f).convert("RGB") for f in files]


# -- entry point -----------------------------------------------------------------------------------------


def _register_more_commands() -> None:
    from .demo import run  # noqa: F401  (registers `demo`)


def build_parser() -> argparse.ArgumentParser:
    _register_more_commands()
    parser = argparse.ArgumentParser(prog="python -m nada", description="StyleGAN-NADA: adapt and sample.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, configure) in _COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(run=configure(sp))
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
