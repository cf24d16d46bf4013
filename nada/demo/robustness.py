"""How much the demo's outcome depends on luck: the demo adaptation over training seeds and float perturbations.

    python -m nada.demo.robustness                          # the demo's settings: 5 seeds x 3 perturbations
    python -m nada.demo.robustness --steps 60 --grid 0-3    # the run tests/test_demo.py makes
    python -m nada.demo.robustness --batch 2                # any AdaptConfig field the demo sets

A gradient-descent run is a dynamical system: a change in the last bit of one sum (another thread
count, a reordered formula) grows step by step until it is as large as the change itself. The demo
should show the same picture whichever trajectory it lands on, so its settings (and the README's and
the test's numbers) are measured here over training seeds and over perturbations that change only the
rounding of the run:

    t1  1 thread
    t2  2 threads (the CPU kernels split their sums differently)
    lr  1 thread, learning rate x (1 + 1e-6)

For each run it prints the tiny CLIP's P(target vs source) on the grid, the share of shape pixels
nearest to the target colour and the share of background pixels changed (`nada.demo.run.pixel_change`),
then min / median / max of each over all runs. Runs one after another in this process.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from ..adaptation import AdaptConfig
from ..commands.config_options import add_config_options
from ..sampling import parse_seeds, sample
from .run import DEMO_SETTINGS, adapt_demo, load_demo_world, pixel_change, target_probability

PSI = 0.7  # the demo's grid
LR_NUDGE = 1e-6
# name: (threads, learning-rate factor)
PERTURBATIONS = {"t1": (1, 1.0), "t2": (2, 1.0), "lr": (1, 1.0 + LR_NUDGE)}
# The settings a run can vary (the demo's CLI options plus the ones the demo fixes).
VARIED = ("steps", "lr", "batch", "mixing", "layers", "delta_floor")


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One run's result on the grid: P(target vs source), target share of shape pixels, background moved."""

    seed: int
    perturbation: str
    p: float
    share: float
    background: float


def measure(
    source: str,
    target: str,
    train_seeds: list[int],
    grid: list[int],
    perturbations: list[str],
    settings: dict,
    report=None,
) -> list[Outcome]:
    """Run the demo adaptation for every training seed x perturbation; `report(outcome, seconds)` after each."""
    G, clip = load_demo_world()
    threads = torch.get_num_threads()
    before = sample(G, grid, PSI)
    outcomes = []
    try:
        for seed in train_seeds:
            for name in perturbations:
                n, factor = PERTURBATIONS[name]
                torch.set_num_threads(n)
                start = time.perf_counter()
                lr = settings.get("lr", DEMO_SETTINGS["lr"]) * factor
                G2 = adapt_demo(G, clip, source, target, **{**settings, "seed": seed, "lr": lr})
                torch.set_num_threads(threads)  # judge every run alike
                after = sample(G2, grid, PSI)
                px = pixel_change(before, after, target)
                o = Outcome(seed, name, target_probability(clip, after, source, target), px.target_share_after or 0.0,
                            px.background_moved)  # fmt: skip
                outcomes.append(o)
                if report is not None:
                    report(o, time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return outcomes


def summary(outcomes: list[Outcome]) -> dict[str, tuple[float, float, float]]:
    """{"p" | "share" | "background": (min, median, max)} over the runs."""
    out = {}
    for key in ("p", "share", "background"):
        values = [getattr(o, key) for o in outcomes]
        out[key] = (min(values), statistics.median(values), max(values))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default="blue", help='source text (default "blue")')
    ap.add_argument("--target", default="red", help='target text (default "red")')
    ap.add_argument("--train-seeds", default="0-4", help="training seeds (default 0-4)")
    ap.add_argument("--grid", default="0-7", help="seeds of the judged grid (default 0-7, the demo's)")
    ap.add_argument("--perturbations", default=",".join(PERTURBATIONS), help=f"of {', '.join(PERTURBATIONS)}")
    add_config_options(ap, AdaptConfig, only=VARIED, defaults=DEMO_SETTINGS)
    args = ap.parse_args(argv)
    settings = {k: getattr(args, k) for k in VARIED}
    perturbations = [p for p in args.perturbations.split(",") if p]
    unknown = set(perturbations) - set(PERTURBATIONS)
    if unknown:
        ap.error(f"unknown perturbations {sorted(unknown)}; choose from {', '.join(PERTURBATIONS)}")
    shown = ", ".join(f"{k} {v}" for k, v in settings.items())
    print(f"{args.source!r} -> {args.target!r}: {shown}; grid seeds {args.grid}", flush=True)

    def report(o: Outcome, seconds: float) -> None:
        print(f"seed {o.seed} {o.perturbation}: P {o.p:.2f}  share {o.share:.0%}  background {o.background:.0%}"
              f"  ({seconds:.0f} s)", flush=True)  # fmt: skip

    outcomes = measure(
        args.source, args.target, parse_seeds(args.train_seeds), parse_seeds(args.grid), perturbations, settings, report
    )
    for key, (lo, mid, hi) in summary(outcomes).items():
        fmt = "{:.2f}" if key == "p" else "{:.0%}"
        print(f"{key}: min {fmt.format(lo)}  median {fmt.format(mid)}  max {fmt.format(hi)}  ({len(outcomes)} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
