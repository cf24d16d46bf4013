"""Adaptive layer selection: does a cheaper selection choose the same layers, and what does it cost?

    python bench/bench_selection.py --agreement --steps 30   # demo world, ~2 min on one core
    python bench/bench_selection.py --cost --threads 1       # 256 px config-f + ViT-B-32, ~6 min

`--agreement` (demo generator, tiny CLIP, text directions; colour, background and shape pairs): a
NADA run with `layers="auto"` (selection batch 8, k = 5 of 7 eligible W+ indices, selection every
step) trains for `--steps` steps; before each step the selection is also run on a second, independent
batch-8 draw, and variants of it are compared with that draw's full-batch ranking:

- chunks of 2 latents (the engine's form: chunks of the training batch): same draw, same ranking up
  to float rounding; printed with the largest score difference relative to the k-th/(k+1)-th gap.
- the first 4 or the first 2 latents of the draw only (a smaller select_batch);
- another independent batch-8 draw (how much the ranking moves with the draw alone);
- the run's own selection one step later (select_every = 2 trains step t + 1 on step t's choice).

Agreement = the fraction of selections whose top-k set is identical, for k = 5 (the default) and k = 3.

`--cost` (256 px config-f generator, ViT-B-32, random weights; the bench_adapt.py setup): one plain
step, one whole-batch selection and one chunked selection (chunks of the training batch, 2),
alternating in one process after a warm-up; prints medians and the ratios to the plain step. Peak
memory of each selection form is measured in its own subprocess (CPU: peak RSS during the selection
over the RSS before it, sampled every 5 ms).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from nada import layers as layer_groups  # noqa: E402
from nada.adaptation import AdaptConfig  # noqa: E402
from nada.adaptation.run import _guides  # noqa: E402
from nada.adaptation.step import Run, draw_inputs, frozen_and_trainable_ws  # noqa: E402

PAIRS = (("blue", "red"), ("green", "purple"), ("gray background", "white background"), ("circle", "square"))


def draw(run: Run, batch: int, rng: torch.Generator) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A selection draw as Run.select makes it: W+ of `batch` fresh latents and their noise."""
    drawn = draw_inputs(run.G_frozen, batch, 0.0, "shared", "shared", rng, run.device)
    with torch.no_grad():
        ws = frozen_and_trainable_ws(run.G_frozen, drawn, run.device)[0]
    return ws, drawn.noise_frozen


def scores(run: Run, ws: torch.Tensor, noise: list[torch.Tensor], chunk: int | None = None) -> list[float]:
    cfg = run.cfg
    sel = layer_groups.select_w_indices(
        run.G_train, ws, noise, run.selection_loss, run.auto_k, run.candidates,
        lr=cfg.select_lr, iters=cfg.select_iters, synthesize=run.synthesize, mapping=cfg.w_mapping, chunk=chunk,
    )  # fmt: skip
    return list(sel.scores)


def top(s: list[float], eligible: list[int], k: int) -> frozenset[int]:
    return frozenset(sorted(eligible, key=lambda i: (-s[i], i))[:k])


def agreement(steps: int) -> None:
    from nada import text_direction
    from nada.demo.run import load_demo_world

    G, clip = load_demo_world()
    device = torch.device("cpu")
    variants = ("chunks of 2", "first 4 latents", "first 2 latents", "another batch-8 draw", "next step's own")
    ks = (5, 3)
    hits = {(v, k): 0 for v in variants for k in ks}
    count = {v: 0 for v in variants}
    worst = 0.0  # largest |score difference| of the chunked form over the k-th/(k+1)-th gap
    for pair_no, (src, tgt) in enumerate(PAIRS):
        cfg = AdaptConfig(steps=steps, seed=pair_no, layers="auto", preview_count=0)
        run = Run(G, _guides(clip, text_direction(clip, src, tgt), device, cfg), cfg, device)
        params_before = {k: p.detach().clone() for k, p in run.params.items()}
        eligible = [i for i, u in layer_groups.w_index_units(G, run.candidates, cfg.w_mapping).items() if u]
        rng = torch.Generator().manual_seed(1000 + pair_no)
        for t in range(steps):
            if t > 0:  # at step 0 the trainable generator is the frozen one: every variant is alike
                ws, noise = draw(run, 8, rng)
                ws_b, noise_b = draw(run, 8, rng)
                grads = [None if p.grad is None else p.grad.clone() for p in run.params.values()]
                full = scores(run, ws, noise)
                chunked = scores(run, ws, noise, chunk=2)
                after = [p.grad for p in run.params.values()]
                assert all(a is b or torch.equal(a, b) for a, b in zip(after, grads, strict=True)), "a gradient moved"
                got = {
                    "chunks of 2": chunked,
                    "first 4 latents": scores(run, ws[:4], [n[:4] for n in noise]),
                    "first 2 latents": scores(run, ws[:2], [n[:2] for n in noise]),
                    "another batch-8 draw": scores(run, ws_b, noise_b),
                }
                ranked = sorted((full[i] for i in eligible), reverse=True)
                gap = ranked[run.auto_k - 1] - ranked[run.auto_k]
                diff = max(abs(a - b) for a, b in zip(full, chunked, strict=True))
                worst = max(worst, diff / gap if gap > 0 else float("inf"))
                for v, s in got.items():
                    count[v] += 1
                    for k in ks:
                        hits[(v, k)] += top(s, eligible, k) == top(full, eligible, k)
            run.step()
        history = [h["w_indices"] for h in run.selection_history]
        for a, b in zip(history[1:], history[2:]):  # from step 1 on (step 0's choice is the frozen one's)
            count["next step's own"] += 1
            hits[("next step's own", 5)] += a == b
        moved = max((p - params_before[k]).abs().max().item() for k, p in run.params.items())
        print(f"{src} -> {tgt}: {steps} steps, weights moved by up to {moved:.3f}, loss {run.loss_history[-1]:.4f}")
    print(f"\n{'variant vs the full batch-8 ranking':<40}{'selections':>11}{'same top-5':>12}{'same top-3':>12}")
    for v in variants:
        k3 = "-" if v == "next step's own" else f"{hits[(v, 3)] / count[v]:.2f}"
        print(f"{v:<40}{count[v]:>11}{hits[(v, 5)] / count[v]:>12.2f}{k3:>12}")
    print(f"chunked vs whole batch: largest score difference = {worst:.1e} of the top-5 gap")


def _rss_mb() -> float:
    """The resident set size now (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_during(fn) -> float:
    """Peak resident set size while fn runs, over the size before it (sampled every 5 ms): the loaded
    models' own peak (ru_maxrss) would hide a smaller one."""
    import threading

    base, peak, done = _rss_mb(), [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.005)

    t = threading.Thread(target=sample)
    t.start()
    try:
        fn()
    finally:
        done.set()
        t.join()
    return max(peak[0], _rss_mb()) - base


def cost_run(device: torch.device, layers: str = "auto") -> Run:
    from bench_adapt import _models

    G, clip, direction = _models(device)
    cfg = AdaptConfig(steps=1000, batch=2, seed=0, layers=layers, gradient_checkpointing=False)
    return Run(G, _guides(clip, direction, device, cfg), cfg, device)


def memory(case: str, device: torch.device) -> dict:
    """Peak memory of a fresh run's first plain step (with its gradients and Adam's moments) or of one
    selection (`case` = the chunk size, or "none" for the whole batch)."""
    if case == "step":
        run = cost_run(device, "all")
        return {"peak_mb": peak_during(run.step)}
    run = cost_run(device)
    for p in run.params.values():  # as Run.select: the ranking needs W+ gradients only
        p.requires_grad_(False)
    ws, noise = draw(run, run.cfg.select_batch, torch.Generator().manual_seed(0))
    return {"peak_mb": peak_during(lambda: scores(run, ws, noise, None if case == "none" else int(case)))}


def cost(pairs: int, threads: int, device: torch.device) -> None:
    run = cost_run(device)
    run.step()  # warm-up (selection + step)
    rng = torch.Generator().manual_seed(0)
    run.cfg = dataclasses.replace(run.cfg, layers="all")  # the plain step from here on
    for p in run.params.values():
        p.requires_grad_(True)

    def timed(fn) -> float:
        t0 = time.process_time() if device.type == "cpu" else time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.process_time() if device.type == "cpu" else time.perf_counter()) - t0

    def select(chunk):
        ws, noise = draw(run, 8, rng)
        grad = {k: p.requires_grad for k, p in run.params.items()}
        for p in run.params.values():
            p.requires_grad_(False)
        scores(run, ws, noise, chunk)
        for k, p in run.params.items():
            p.requires_grad_(grad[k])

    rows = {"plain step (batch 2)": [], "selection, batch 8 at once": [], "selection, chunks of 2": []}
    for _ in range(pairs):
        rows["plain step (batch 2)"].append(timed(run.step))
        rows["selection, batch 8 at once"].append(timed(lambda: select(None)))
        rows["selection, chunks of 2"].append(timed(lambda: select(2)))
    step = statistics.median(rows["plain step (batch 2)"])
    clock = "CPU s" if device.type == "cpu" else "s"
    print(f"{'(' + clock + ', median of ' + str(pairs) + ')':<32}{clock:>8}{'x step':>8}{'peak MB':>10}")
    for name, ts in rows.items():
        case, mem = "step" if name.startswith("plain") else "none" if "once" in name else "2", ""
        if device.type == "cpu":
            cmd = [sys.executable, __file__, "--memory-case", case, "--threads", str(threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            mem = (
                f"{json.loads(out.stdout.strip().splitlines()[-1])['peak_mb']:.0f}" if out.returncode == 0 else "failed"
            )
        print(f"{name:<32}{statistics.median(ts):>8.2f}{statistics.median(ts) / step:>8.2f}{mem:>10}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agreement", action="store_true", help="side-by-side on the demo world")
    ap.add_argument("--cost", action="store_true", help="time and memory at 256 px")
    ap.add_argument("--steps", type=int, default=30, help="--agreement: steps per prompt pair")
    ap.add_argument("--pairs", type=int, default=3, help="--cost: timed rounds (step, selection, chunked)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--memory-case", default=None, help=argparse.SUPPRESS)  # internal: one selection's peak
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    from nada.cpu_memory import reuse_freed_memory

    with reuse_freed_memory(device):  # as adapt() runs the selection
        _main(args, device)


def _main(args, device: torch.device) -> None:
    if args.memory_case:
        print(json.dumps(memory(args.memory_case, device)))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device {device}, "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    if args.agreement:
        agreement(args.steps)
    if args.cost:
        print("256 px config-f generator, ViT-B-32 (random weights), training batch 2, selection batch 8, k = 9")
        cost(args.pairs, args.threads, device)


if __name__ == "__main__":
    main()
