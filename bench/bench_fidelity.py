"""Quality side by side of every fidelity switch (docs/fidelity.md): our default against the official value.

Not a speed benchmark. On the demo world (32 px demo generator, tiny CLIP) each switch is flipped to its
official value in a setting where it acts (e.g. `crossover` needs mixing, `patch_templates` the patch
loss), for held-out prompt pairs (no test uses them) and several training seeds. It prints, averaged
over the seeds, the tiny CLIP's zero-shot P(target) (templates the direction was not built with), the
edge-layout correlation to the unadapted samples, the drift of each image's mean colour and, for colour
pairs, the share of shape pixels whose nearest world colour is the target, and the share of gray
background pixels that moved by more than 0.1 (in [0, 1] units). A summary line per study gives the
official-minus-ours difference with its spread over the seeds. It writes one before/after picture per
switch, docs/images/fidelity_<switch>.png (a colour and a shape pair; rows: unadapted, ours, official;
training seed 0, the first judged samples).

    python bench/bench_fidelity.py                    # ~15 min on one CPU core
    python bench/bench_fidelity.py --steps 10 --seeds 1 --out /tmp/fid    # a quick check
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nada  # noqa: E402
from nada.demo.run import DEMO_LR, load_demo_world  # noqa: E402
from nada.demo.world import BACKGROUNDS, SHAPE_COLOURS  # noqa: E402
from nada.images import labelled_grid, save_image  # noqa: E402
from tests.adapt_fixtures import layout_correlation, zero_shot  # noqa: E402

DOCS_IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"
# Held-out pairs: none of these source -> target pairs appears in tests/.
PAIRS = (("green", "orange"), ("purple", "yellow"), ("circle", "triangle"), ("square", "star"))
# (switch, setting, the setting's config, the official value). The setting is where the switch acts;
# "defaults" = AdaptConfig's defaults. Runs with the same config are made once.
STUDIES = (
    ("noise", "defaults", {}, {"noise": "independent"}),
    ("crossover", "mixing 0.9", {"mixing": 0.9}, {"crossover": "per_generator"}),
    ("adam_reset", "defaults", {}, {"adam_reset": "never"}),
    ("adam_reset", "noise independent", {"noise": "independent"}, {"adam_reset": "never"}),
    ("w_mapping", "layers auto", {"layers": "auto"}, {"w_mapping": "official"}),
    ("text_targets", "lambda_global 0.5", {"lambda_global": 0.5}, {"text_targets": "official"}),
    ("text_targets", "layers auto", {"layers": "auto"}, {"text_targets": "official"}),
    ("patch_templates", "lambda_patch 1", {"lambda_patch": 1.0}, {"patch_templates": "parts_in_imagenet"}),
    ("delta_floor", "defaults", {}, {"delta_floor": 0.0}),
    ("clip_antialias", "defaults", {}, {"clip_antialias": "off"}),
    ("compat", "defaults", {}, {"compat": "official"}),
    ("compat", "mixing 0.9", {"mixing": 0.9}, {"compat": "official"}),
)
METRICS = ("P(target)", "layout", "drift", "shape->target", "bg moved", "layout@P", "bg moved@P")
PSI = 0.7
N_SAMPLES, N_GRID, SCALE = 24, 4, 2
PICTURED = (PAIRS[0], PAIRS[2])  # one colour and one shape pair per picture (keeps each PNG < 60 KB)
# World palette in [-1, 1]: shape colours first, then the backgrounds.
PALETTE = torch.tensor([*SHAPE_COLOURS.values(), *BACKGROUNDS.values()], dtype=torch.float32) / 127.5 - 1
GRAY = len(SHAPE_COLOURS) + list(BACKGROUNDS).index("gray")


def nearest_colour(images: torch.Tensor, n: int) -> torch.Tensor:
    """Index of the nearest of the first `n` palette colours per pixel: [B, H, W]."""
    px = images.float().clamp(-1, 1).permute(0, 2, 3, 1)  # [B, H, W, 3]
    return torch.cdist(px.reshape(-1, 3), PALETTE[:n]).argmin(-1).reshape(px.shape[:3])


def colour_shares(base: torch.Tensor, out: torch.Tensor, source: str, target: str) -> tuple[float, float]:
    """(share of the unadapted source-coloured shape pixels whose nearest shape colour is now the target,
    share of the unadapted gray background pixels whose largest channel change exceeds 0.1 in [0, 1])."""
    names = list(SHAPE_COLOURS)
    before = nearest_colour(base, len(PALETTE))
    shape = before == names.index(source)
    to_target = nearest_colour(out, len(names))[shape] == names.index(target)
    moved = ((out - base).abs().amax(1) / 2 > 0.1)[before == GRAY]
    return to_target.float().mean().item(), moved.float().mean().item()


def judged_seeds(G, source: str) -> list[int]:
    """The samples a pair is judged on: for a colour pair the first seeds from 100 whose unadapted image
    has a shape of the source colour (> 5 % of its pixels); for a shape pair seeds 100 on."""
    if source not in SHAPE_COLOURS:
        return list(range(100, 100 + N_SAMPLES))
    pool = list(range(100, 1100))
    labels = nearest_colour(nada.sample(G, pool, truncation_psi=PSI), len(PALETTE))
    share = (labels == list(SHAPE_COLOURS).index(source)).float().mean((1, 2))
    return [pool[i] for i in (share > 0.05).nonzero().flatten()[:N_SAMPLES].tolist()]


def measure(clip, base: torch.Tensor, out: torch.Tensor, source: str, target: str) -> dict[str, float]:
    m = {
        "P(target)": zero_shot(clip, out, source, target),
        "layout": layout_correlation(base, out),
        "drift": (out.mean((2, 3)) - base.mean((2, 3))).abs().mean().item(),
    }
    if source in SHAPE_COLOURS:
        m["shape->target"], m["bg moved"] = colour_shares(base, out, source, target)
    return m


def at_equal_strength(G, clip, world, a: tuple, b: tuple) -> tuple[dict[str, float], dict[str, float]]:
    """The two runs compared at the same P(target): the stronger one's change is scaled down (its weights
    blended toward the unadapted generator, alpha by bisection) until its P(target) is the weaker one's;
    returns the metrics of (a, b) at that strength. a, b: (metrics, generator) of two runs."""
    (ma, ga), (mb, gb) = a, b
    if abs(ma["P(target)"] - mb["P(target)"]) <= 0.02:
        return ma, mb
    (strong, weak), swap = ((ga, mb), False) if ma["P(target)"] > mb["P(target)"] else ((gb, ma), True)
    src, tgt, judged, base = world
    lo, hi, m = 0.0, 1.0, None
    for _ in range(6):
        alpha = (lo + hi) / 2
        out = nada.sample(nada.blend_generators(G, strong, alpha), judged, truncation_psi=PSI)
        m = measure(clip, base, out, src, tgt)
        lo, hi = (alpha, hi) if m["P(target)"] < weak["P(target)"] else (lo, alpha)
    return (weak, m) if swap else (m, weak)


def fmt(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:+.3f}" if len(values) < 2 else f"{mean:+.3f} ± {statistics.stdev(values):.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--lr", type=float, default=DEMO_LR, help=f"learning rate (default {DEMO_LR}, the demo's)")
    p.add_argument("--seeds", type=int, default=3, help="training seeds 0..N-1 (default 3)")
    p.add_argument("--pairs", type=int, default=len(PAIRS), help="use the first N prompt pairs")
    p.add_argument("--switches", default="", help="comma-separated switches to study (default: all)")
    p.add_argument("--out", default=str(DOCS_IMAGES), help="folder of the pictures (default docs/images)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    wanted = set(filter(None, args.switches.split(",")))
    studies = [s for s in STUDIES if not wanted or s[0] in wanted]
    pairs, seeds = PAIRS[: args.pairs], range(args.seeds)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.steps} steps at lr {args.lr}, seeds 0-{args.seeds - 1}"
    )
    start = time.perf_counter()
    G, clip = load_demo_world()

    runs: dict[tuple, tuple] = {}  # (pair, seed, config) -> (metrics, generator, images for the picture)
    worlds = {}  # pair -> (source, target, judged seeds, their unadapted images)
    unadapted = {}  # pair -> P(target) of the unadapted samples
    for src, tgt in pairs:
        judged = judged_seeds(G, src)
        base = nada.sample(G, judged, truncation_psi=PSI)
        worlds[(src, tgt)] = (src, tgt, judged, base)
        d = nada.text_direction(clip, src, tgt)
        unadapted[(src, tgt)] = zero_shot(clip, base, src, tgt)
        print(f"{src} -> {tgt}: judged on {len(judged)} seeds {judged[0]}..{judged[-1]}", flush=True)
        for _, _, setting, official in studies:
            for kw in (setting, {**setting, **official}):
                for seed in seeds:
                    key = ((src, tgt), seed, tuple(sorted(kw.items())))
                    if key in runs:
                        continue
                    cfg = nada.AdaptConfig(steps=args.steps, lr=args.lr, seed=seed, preview_count=0, **kw)
                    G2 = nada.adapt(G, clip, d, cfg, device="cpu").generator
                    out = nada.sample(G2, judged, truncation_psi=PSI)
                    runs[key] = (measure(clip, base, out, src, tgt), G2, out[:N_GRID])
        print(f"  {len(runs)} runs, {time.perf_counter() - start:.0f} s", flush=True)

    def result(pair, setting, extra, seed):
        return runs[(pair, seed, tuple(sorted({**setting, **extra}.items())))]

    pictures = {}
    for switch, label, setting, official in studies:
        value = ", ".join(f"{k}={v}" for k, v in official.items())
        print(f"\n{switch}: ours / {value}, setting: {label}\n")
        print("| pair (unadapted P) | " + " | ".join(METRICS) + " |\n" + "|---" * (len(METRICS) + 1) + "|")
        diffs: dict[str, list[list[float]]] = {m: [] for m in METRICS}  # per pair: official - ours per seed
        rows = []
        for pair in pairs:
            both = [(result(pair, setting, {}, s), result(pair, setting, official, s)) for s in seeds]
            raw = [(a[0], b[0]) for a, b in both]
            matched = [at_equal_strength(G, clip, worlds[pair], a[:2], b[:2]) for a, b in both]
            cells = []
            for m in METRICS:
                name = m.removesuffix("@P")
                ours = [x.get(name) for x, _ in (matched if m.endswith("@P") else raw)]
                theirs = [y.get(name) for _, y in (matched if m.endswith("@P") else raw)]
                if ours[0] is None:
                    cells.append("-")
                    continue
                cells.append(f"{statistics.fmean(ours):.3f} / {statistics.fmean(theirs):.3f}")
                diffs[m].append([b - a for a, b in zip(ours, theirs)])
            print(f"| {pair[0]} -> {pair[1]} ({unadapted[pair]:.2f}) | " + " | ".join(cells) + " |")
            if pair not in PICTURED:
                continue
            rows += [
                (f"{pair[0]}>{pair[1]}", worlds[pair][3][:N_GRID]),
                ("  ours", both[0][0][2]),
                ("  official", both[0][1][2]),
            ]
        # Each seed's difference averaged over the pairs that have the metric, then mean ± sd over seeds.
        per_seed = {m: [statistics.fmean(col) for col in zip(*d)] for m, d in diffs.items() if d}
        print("| official - ours (± sd over seeds) | " + " | ".join(fmt(per_seed[m]) for m in METRICS) + " |")
        if rows:
            pictures.setdefault(switch, rows)  # a switch studied in two settings is pictured in its first
    for switch, rows in pictures.items():
        path = save_image(labelled_grid(rows, scale=SCALE), Path(args.out) / f"fidelity_{switch}.png", overwrite=True)
        print(f"{path} ({path.stat().st_size // 1024} KB)")
    print(f"{len(runs)} runs in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
