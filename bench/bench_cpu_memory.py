"""The CPU allocator switch (`nada.cpu_memory`): step time, kernel time and peak memory, on and off.

    python bench/bench_cpu_memory.py --threads 2 --steps 4 --rounds 2

The plain adaptation step of `bench_adapt.py` (256 px config-f generator, ViT-B-32 with random
weights, batch 2), run by `nada.adapt` in the main thread (the CLI, a Python script) and in a
second thread (ComfyUI runs its nodes in a worker thread; the switch stays off there), and in the
worker thread with `MALLOC_ARENA_MAX=1` in the environment (every thread allocates from glibc's main
heap, so the switch works), each with the switch on (the default) and off (`NADA_REUSE_CPU_MEMORY=0`). Each variant runs in its own process;
the variants alternate, `--rounds` times. Per variant: median seconds per step (wall), the kernel's
share of the process's CPU time during the steps (page faults of freshly mapped memory show up there),
and the peak RSS over the RSS once the models are loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

VARIANTS = {
    "main thread, switch on": ("main", {}),
    "main thread, switch off": ("main", {"NADA_REUSE_CPU_MEMORY": "0"}),
    "worker thread (switch stays off)": ("worker", {}),
    "worker thread, MALLOC_ARENA_MAX=1, on": ("worker", {"MALLOC_ARENA_MAX": "1"}),
    "worker thread, MALLOC_ARENA_MAX=1, off": ("worker", {"MALLOC_ARENA_MAX": "1", "NADA_REUSE_CPU_MEMORY": "0"}),
}


def _one(where: str, steps: int) -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from bench_adapt import _models, _rss_mb

    from nada.adaptation import AdaptConfig, adapt

    G, clip, direction = _models(torch.device("cpu"))
    base = _rss_mb()
    stamps = []

    def on_step(_):
        r = resource.getrusage(resource.RUSAGE_SELF)
        stamps.append((time.perf_counter(), r.ru_utime, r.ru_stime))

    def run():
        adapt(G, clip, direction, AdaptConfig(steps=steps + 1, batch=2, seed=0), callback=on_step, device="cpu")

    if where == "main":
        run()
    else:
        t = threading.Thread(target=run)
        t.start()
        t.join()
    walls = [b[0] - a[0] for a, b in zip(stamps, stamps[1:])]  # the first step is the warm-up
    user, system = stamps[-1][1] - stamps[0][1], stamps[-1][2] - stamps[0][2]
    return {
        "wall": statistics.median(walls),
        "kernel_share": system / (user + system),
        "peak_mb": _rss_mb() - base,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per process (after one warm-up step)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: "main" or "worker"
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(_one(args.one, args.steps)))
        return
    print(f"torch {torch.__version__}, threads {args.threads or torch.get_num_threads()}, "
          f"{args.steps} timed steps per process, {args.rounds} rounds")  # fmt: skip
    got: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for i in range(args.rounds):
        names = list(VARIANTS) if i % 2 == 0 else list(reversed(VARIANTS))
        for name in names:
            where, env = VARIANTS[name]
            cmd = [sys.executable, __file__, "--one", where, "--steps", str(args.steps)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            clean = {k: v for k, v in os.environ.items() if k not in ("NADA_REUSE_CPU_MEMORY", "MALLOC_ARENA_MAX")}
            out = subprocess.run(cmd, capture_output=True, text=True, env={**clean, "PYTHONPATH": str(ROOT), **env})
            if out.returncode != 0:
                sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
            got[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = statistics.median(r["wall"] for r in got["main thread, switch off"])
    print(f"\n{'variant':<42}{'s/step':>8}{'x off':>7}{'kernel CPU':>12}{'peak MB':>9}")
    for name, rows in got.items():
        wall = statistics.median(r["wall"] for r in rows)
        share = statistics.median(r["kernel_share"] for r in rows)
        peak = statistics.median(r["peak_mb"] for r in rows)
        print(f"{name:<42}{wall:>8.2f}{wall / base:>7.2f}{share:>12.0%}{peak:>9.0f}")
    print("\nx off: seconds per step over the main thread's with the switch off; peak MB: over the loaded models")


if __name__ == "__main__":
    main()
