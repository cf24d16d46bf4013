"""Fused vs non-fused modulated convolution in the adaptation step, and a profile of one step.

    python bench/bench_step_paths.py --threads 2 --pairs 4       # paired step-time ratio
    python bench/bench_step_paths.py --threads 2 --profile       # where one step's time goes
    python bench/bench_step_paths.py --threads 2 --only fused    # one form alone (time whole processes)

Same setup as bench_adapt.py (256 px config-f generator and ViT-B-32, random weights, batch 2,
`layers="all"`, no checkpointing). Two runs with identical seeds live in one process, one per form of
the trainable generator's modulated convolution (`AdaptConfig.fused_modconv`); their steps alternate
(fused, non-fused, fused, ...), so a drift of the machine's speed hits both alike. Printed: each
pair's non-fused/fused ratio of wall and of CPU time, and the medians. Not a test: the numbers
depend on the machine.

`--profile` times the phases of one step of the default (non-fused) run separately (frozen generator,
trainable generator forward, CLIP forward and loss, CLIP backward, generator backward, Adam) and
prints torch.profiler's operator table for one whole step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def make_run(fused: bool, device: str):
    import torch
    from bench_adapt import _models

    from nada.adaptation import AdaptConfig
    from nada.adaptation.run import _guides
    from nada.adaptation.step import Run

    G, clip, direction = _models(torch.device(device))
    cfg = AdaptConfig(steps=1000, batch=2, seed=0, layers="all", gradient_checkpointing=False, fused_modconv=fused)
    return Run(G, _guides(clip, direction, torch.device(device), cfg), cfg, torch.device(device))


def timed_step(run, device: str) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of one step. On a shared machine the CPU time is the
    steadier figure: waiting for a core while other jobs run does not count."""
    import torch

    t0, c0 = time.perf_counter(), time.process_time()
    run.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0, time.process_time() - c0


def phases(run) -> dict[str, float]:
    """One step split into phases (the same operations as Run.step, timed one by one)."""
    import torch

    from nada.adaptation.step import draw_inputs, frozen_and_trainable_ws

    cfg, t = run.cfg, {}
    t0 = time.perf_counter()
    drawn = draw_inputs(run.G_frozen, cfg.batch, cfg.mixing, cfg.noise, cfg.crossover, run.rng["train"], run.device)
    noise = drawn.noise_frozen
    with torch.no_grad():
        ws = frozen_and_trainable_ws(run.G_frozen, drawn, run.device)[0]
    with torch.inference_mode():
        src = run.G_frozen.synthesis(ws, noise=noise, **run.frozen_form)
    t1 = time.perf_counter()
    tgt = run.synthesize(ws, noise)
    t2 = time.perf_counter()
    loss, _ = run.loss(src, tgt)
    t3 = time.perf_counter()
    (g_img,) = torch.autograd.grad(loss, tgt)  # CLIP's backward alone
    t4 = time.perf_counter()
    run.optim.zero_grad(set_to_none=True)
    tgt.backward(g_img)  # the generator's backward alone
    t5 = time.perf_counter()
    run.optim.step()
    t6 = time.perf_counter()
    t["frozen generator (mapping + synthesis, no grad)"] = t1 - t0
    t["trainable generator forward"] = t2 - t1
    t["CLIP forward x2 + loss"] = t3 - t2
    t["CLIP backward"] = t4 - t3
    t["generator backward"] = t5 - t4
    t["Adam step"] = t6 - t5
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=3, help="timed step pairs (after one warm-up step each)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--profile", action="store_true", help="profile the default (non-fused) run instead of pairing")
    ap.add_argument("--only", choices=("fused", "non-fused"), default=None,
                    help="run one form for --pairs steps after a warm-up (for timing whole processes A/B)")  # fmt: skip
    args = ap.parse_args()

    import os

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip
    print("256 px config-f generator, ViT-B-32 (random weights), batch 2, layers=all\n")

    from nada.cpu_memory import reuse_freed_memory

    with reuse_freed_memory(args.device):  # as adapt() runs its steps
        _main(args)


def _main(args) -> None:
    import torch

    if args.profile:
        run = make_run(False, args.device)  # the default form
        timed_step(run, args.device)  # warm-up; also turns on the trained parameters' gradients
        rows = [phases(run) for _ in range(args.pairs)]
        total = statistics.median(sum(r.values()) for r in rows)
        print(f"{'phase (wall s, median of ' + str(len(rows)) + ' steps)':<52}{'s':>8}{'share':>8}")
        for name in rows[0]:
            s = statistics.median(r[name] for r in rows)
            print(f"{name:<52}{s:>8.2f}{s / total:>8.0%}")
        print(f"{'total':<52}{total:>8.2f}\n")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            run.step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=40))
        return

    if args.only:
        run = make_run(args.only == "fused", args.device)
        timed_step(run, args.device)  # warm-up
        times = [timed_step(run, args.device) for _ in range(args.pairs)]
        print(f"{args.only}: median step {statistics.median(t[0] for t in times):.2f} s wall, "
              f"{statistics.median(t[1] for t in times):.2f} s CPU ({len(times)} steps)")  # fmt: skip
        return

    runs = {True: make_run(True, args.device), False: make_run(False, args.device)}
    for run in runs.values():
        timed_step(run, args.device)  # warm-up
    wall, cpu = [], []
    print(
        f"{'pair':<6}{'fused s':>10}{'non-fused s':>13}{'ratio':>8}{'fused cpu s':>14}{'non-fused cpu s':>17}{'ratio':>8}"
    )
    for i in range(args.pairs):
        a, ac = timed_step(runs[True], args.device)
        b, bc = timed_step(runs[False], args.device)
        wall.append(b / a)
        cpu.append(bc / ac)
        print(f"{i:<6}{a:>10.2f}{b:>13.2f}{b / a:>8.2f}{ac:>14.2f}{bc:>17.2f}{bc / ac:>8.2f}")
    for what, r in (("wall", wall), ("CPU", cpu)):
        print(f"median non-fused/fused step {what} time: {statistics.median(r):.2f} "
              f"(min {min(r):.2f}, max {max(r):.2f}, {len(r)} pairs)")  # fmt: skip
    # Same seeds and steps: the two runs differ only by float reassociation.
    drift = max(
        (pa - pb).abs().max().item()
        for pa, pb in zip(runs[True].params.values(), runs[False].params.values(), strict=True)
    )
    print(f"largest weight difference between the two runs after {args.pairs + 1} steps: {drift:.2e}")


if __name__ == "__main__":
    main()
