"""`python -m nada adapt`: adapt a generator to a new domain with CLIP (StyleGAN-NADA).

The training options are generated from `AdaptConfig` (`config_options`); with `--runs-dir` the run
is persisted by `nada.runs` as in ComfyUI: a finished identical run is reused, a cancelled (Ctrl-C
stops after the step in flight) or failed one is saved, a longer run continues a shorter one.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import NadaError
from .common import DEVICE_HELP, ProgressLine, read_images
from .config_options import add_config_options, config_from_args

# No previews on the command line: the before/after grid is written instead.
NOT_ON_CLI = ("preview_every", "preview_count", "preview_truncation")


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..adaptation import AdaptConfig

    help_text = "adapt a generator to a new domain with CLIP (StyleGAN-NADA)"
    p = subparsers.add_parser("adapt", help=help_text, description=help_text)
    p.add_argument("--generator", required=True, help="generator file (.pt, .pkl, .safetensors)")
    add_clip_arguments(p)
    g = p.add_argument_group("direction")
    g.add_argument("--source", default=None, help='source text, e.g. "photo"')
    g.add_argument("--target", default=None, help='target text, e.g. "pencil sketch"')
    g.add_argument("--target-images", default=None, help="folder of target images (image-guided mode)")
    g.add_argument("--source-images", default=None, help="folder of source images (default: samples of the generator)")
    g.add_argument("--templates", default="imagenet", choices=["imagenet", "none"], help="prompt templates")
    t = p.add_argument_group("training")
    add_config_options(t, AdaptConfig, exclude=NOT_ON_CLI)
    t.add_argument("--device", default="auto", help=DEVICE_HELP)
    r = p.add_argument_group("runs (persistence, as the ComfyUI node does it)")
    r.add_argument("--runs-dir", default=None, help="folder of run saves: reuse, resume and extend runs (default: off)")
    r.add_argument("--save-every", type=int, default=0, help="with --runs-dir: save a resumable snapshot every N steps")
    r.add_argument("--keep-last", type=int, default=2, help="with --runs-dir: snapshots kept per run (default 2)")
    o = p.add_argument_group("output")
    o.add_argument("--out", required=True, help="adapted generator (.safetensors)")
    o.add_argument("--grid", default=None, help="before/after PNG (default: <out>.png)")
    o.add_argument("--grid-seeds", default="0-3", help="seeds of the before/after grid")
    o.add_argument("--truncation", type=float, default=0.7, help="truncation of the grid")
    o.add_argument("--adapter-out", default=None, help="with lora/modulation: also write the adapter file")
    o.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(run=run)
    return p


def add_clip_arguments(p: argparse.ArgumentParser) -> None:
    from ..clip.precision import PRECISIONS

    g = p.add_argument_group("CLIP (repeat --clip for an ensemble; the other options pair with it by position)")
    g.add_argument(
        "--clip", action="append", default=None, help="open_clip architecture or model config JSON (default ViT-B-32)"
    )
    g.add_argument("--pretrained", action="append", default=None,
                   help="open_clip pretrained tag (default openai; needs internet once) or a local weights file")  # fmt: skip
    g.add_argument("--clip-config", action="append", default=None, help="custom model config JSON")
    g.add_argument("--clip-weight", action="append", type=float, default=None, help="ensemble weight (default 1)")
    g.add_argument("--clip-precision", choices=PRECISIONS, default="auto",
                   help="CLIP precision: auto = fp16 on CUDA (LayerNorm in fp32), fp32 elsewhere (nada.clip.precision)")  # fmt: skip


def _pad(values: Sequence | None, n: int, default, name: str) -> list:
    values = list(values or [])
    if len(values) > n:
        raise NadaError(f"{len(values)} --{name} values for {n} --clip models; give at most one per model")
    return values + [default] * (n - len(values))


def load_clip_ensemble(args: argparse.Namespace, device):
    from ..clip import load_ensemble

    names = args.clip or ["ViT-B-32"]
    pretrained = _pad(args.pretrained, len(names), None, "pretrained")
    configs = _pad(args.clip_config, len(names), None, "clip-config")
    weights = _pad(args.clip_weight, len(names), 1.0, "clip-weight")
    specs = []
    for n, pt, cfg, w in zip(names, pretrained, configs, weights):
        if pt is None and cfg is None and not n.lower().endswith(".json"):
            pt = "openai"  # a built-in architecture without weights named: OpenAI's, as the paper
        specs.append({"model": n, "pretrained": pt, "config": cfg, "weight": w})
    return load_ensemble(specs, device=device, precision=args.clip_precision)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..adaptation import AdaptConfig, adapt
    from ..adapters import save_adapter
    from ..devices import parse_device
    from ..images import image_grid, save_image
    from ..runs import RunPolicy, RunStore, run_adaptation
    from ..sampling import sample
    from ..stylegan2.formats import load_generator, save_generator

    out = Path(args.out)
    grid_path = Path(args.grid) if args.grid else out.with_suffix(".png")
    for path in (out, grid_path):
        if path.exists() and not args.overwrite:
            raise NadaError(f"{path} already exists; choose another name or pass --overwrite")
    cfg = config_from_args(args, AdaptConfig)
    if args.adapter_out and cfg.parameterization == "full":
        raise NadaError("--adapter-out needs --parameterization lora or modulation")
    device = parse_device(args.device)
    G = load_generator(args.generator)
    clip = load_clip_ensemble(args, device)
    direction = _direction(args, clip, G)
    progress = ProgressLine(cfg.steps)
    if args.runs_dir:
        store = RunStore(args.runs_dir, RunPolicy(save_every=args.save_every, keep_last=args.keep_last))
        with StopOnCtrlC() as stop:
            outcome = run_adaptation(G, clip, direction, cfg, store, label=args.target or "images",
                                     callback=progress, should_stop=stop, device=device)  # fmt: skip
        if outcome.reused:
            print(f"reused {outcome.reused} (same run)")
        elif outcome.resumed_from:
            print(f"continued from step {outcome.resumed_from} ({args.runs_dir})")
        result = outcome.result
        if result.interrupted:
            saved = f"; saved {outcome.saved}: run the same command to continue" if outcome.saved else ""
            print(f"stopped after step {result.steps} of {cfg.steps}{saved}", file=sys.stderr)
            return 130  # the shell's code for "ended by Ctrl-C"
    else:
        result = adapt(G, clip, direction, cfg, callback=progress, device=device)
    G2 = result.generator
    save_generator(G2, out, overwrite=args.overwrite)
    if args.adapter_out:
        save_adapter(result.adapter, args.adapter_out, overwrite=args.overwrite)
        print(f"wrote adapter {args.adapter_out} ({Path(args.adapter_out).stat().st_size / 1024:.1f} KB)")
    before = sample(G, args.grid_seeds, args.truncation)
    after = sample(G2, args.grid_seeds, args.truncation)
    save_image(image_grid(torch.cat([before, after]), nrow=before.shape[0]), grid_path, overwrite=args.overwrite)
    print(f"wrote {out} and {grid_path} (top row: before, bottom row: after)")
    return 0


class StopOnCtrlC:
    """While active, the first Ctrl-C asks the run to stop after the step in flight (and be saved); a
    second one interrupts at once, as usual."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    def __enter__(self) -> StopOnCtrlC:
        self.previous = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):
            if self.requested:
                signal.default_int_handler(signum, frame)
            self.requested = True
            print("\nstopping after this step (Ctrl-C again to quit at once)", file=sys.stderr, flush=True)

        signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self.previous)


def _direction(args: argparse.Namespace, clip, G):
    from ..directions import image_direction, text_direction

    if args.target_images:
        source = read_images(args.source_images) if args.source_images else G
        return image_direction(clip, read_images(args.target_images), source)
    if not args.source or not args.target:
        raise NadaError("give --source and --target texts, or --target-images DIR")
    templates = "imagenet" if args.templates == "imagenet" else None
    return text_direction(clip, args.source, args.target, templates=templates)
