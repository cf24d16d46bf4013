"""FLOP efficiency of the adaptation step, and selection and sampling as ratios to the plain step.

    python bench/bench_efficiency.py --threads 1 --rounds 3          # CPU, ~6 min at 256 px
    python bench/bench_efficiency.py --device cuda --rounds 5 --compile
    python bench/bench_efficiency.py --device cuda --rounds 5 --compile --compile-mode reduce-overhead  # + CUDA graphs

Setup as bench_adapt.py: 256 px config-f generator, ViT-B-32 (random weights), batch 2, layers
"all", the default (non-fused) training form. In one process, after a warm-up, rounds alternate:
a square fp32 GEMM (`--gemm` side, default 2048), one 3x3 convolution forward (128 channels,
256 px, batch 2: the step's largest layer shape, what the convolution library reaches), one plain
step, one adaptive selection (batch 8 in chunks of the training batch, as `layers="auto"` runs it
before its step) and one sampling call (batch 4, truncation 0.7, const noise). Each is timed in CPU seconds of this process on the CPU (a
shared machine's waiting does not count; with N threads a second of wall time is up to N CPU
seconds, so the GEMM and the step are compared per CPU second alike) and in synchronised wall
seconds on CUDA (`--wall`: wall seconds on the CPU too, for an idle machine).

"Useful" FLOPs are those of the matrix products and convolutions (forward and backward), counted
once with torch.utils.flop_counter.FlopCounterMode; its convolution-backward formula over-counts
grouped convolutions (the fused modulated convolution of the frozen/inference form), so a
group-aware formula replaces it: each of the input and the weight gradient costs what the forward
costs. The script first checks the counter on one modulated-convolution layer against the analytic
count 2 * B * C_out * C_in * k^2 * H * W per pass, in both forms.

`--compile` also times torch.compile of the generator's forward (sampling, inference mode) and of
the trainable synthesis inside the plain step (forward and backward), each against the eager form,
alternating; the first compiled call (the compilation) is timed separately.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_selection import draw, scores  # noqa: E402
from bench_step_paths import make_run  # noqa: E402


def conv_backward_flops(grad_out_shape, x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    """Group-aware: the input gradient and the weight gradient each cost one forward convolution."""
    transposed, output_mask = args[4], args[7]
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def counter() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flops})


def check_counter() -> None:
    """One 3x3 modulated convolution (256 -> 256 channels, 64 x 64, batch 2), forward + backward."""
    from nada.stylegan2 import ops

    b, c, o, k, h = 2, 256, 256, 3, 64
    analytic = 3 * 2 * b * o * c * k * k * h * h  # forward, input gradient, weight gradient
    for fused in (True, False):
        x = torch.randn(b, c, h, h, requires_grad=True)
        w = torch.randn(o, c, k, k, requires_grad=True)
        s = torch.randn(b, c, requires_grad=True)
        counts = []
        for mode in (FlopCounterMode(display=False), counter()):
            with mode:
                y, d = ops.modulated_conv2d(x, w, s, fused=fused)
                ops.bias_act(y, demod=d).sum().backward()
            counts.append(mode.get_total_flops())
        print(f"modconv {'fused    ' if fused else 'non-fused'}: analytic {analytic / 1e9:.3f} GFLOP, "
              f"torch's counter {counts[0] / 1e9:.3f}, group-aware {counts[1] / 1e9:.3f}")  # fmt: skip


def clock(device: torch.device, wall: bool):
    if device.type == "cuda":

        def now() -> float:
            torch.cuda.synchronize(device)
            return time.perf_counter()

        return now
    return time.perf_counter if wall else time.process_time


def compare_compiled(what: str, eager, compiled, rounds: int, now, unit: str) -> None:
    t0, w0 = now(), time.perf_counter()
    compiled()
    first, first_wall = now() - t0, time.perf_counter() - w0
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for i in range(rounds):
        for which in ("eager", "compiled") if i % 2 == 0 else ("compiled", "eager"):
            t0 = now()
            (eager if which == "eager" else compiled)()
            times[which].append(now() - t0)
    e, c = statistics.median(times["eager"]), statistics.median(times["compiled"])
    print(f"torch.compile, {what}: first call {first:.1f} {unit} ({first_wall:.0f} s wall, compiler processes "
          f"included); compiled/eager {c / e:.2f} (median {c:.3f} vs {e:.3f} {unit})")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gemm", type=int, default=2048, help="side of the square fp32 GEMM")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the generator forward")
    ap.add_argument(
        "--compile-mode",
        default=None,
        choices=("default", "reduce-overhead", "max-autotune"),
        help="torch.compile's mode; reduce-overhead records CUDA graphs on CUDA (on the CPU it compiles as default)",
    )
    ap.add_argument("--wall", action="store_true", help="CPU: time in wall seconds (an idle machine) instead of CPU")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    now = clock(device, args.wall)
    unit = "CPU s" if device.type == "cpu" and not args.wall else "s"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device {device}, "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    check_counter()
    from nada.cpu_memory import reuse_freed_memory

    with reuse_freed_memory(device):  # as adapt() and sample() run
        measure(args, device, now, unit)


def measure(args, device: torch.device, now, unit: str) -> None:
    run = make_run(False, args.device)
    run.step()  # warm-up; turns on the trained parameters' gradients
    G = run.G_train
    z = torch.randn(4, G.config.z_dim, generator=torch.Generator().manual_seed(0)).to(device)
    sel_rng = torch.Generator().manual_seed(0)
    a = torch.randn(args.gemm, args.gemm, device=device)
    b = torch.randn(args.gemm, args.gemm, device=device)

    x = torch.randn(2, 128, 256, 256, device=device)
    k = torch.randn(128, 128, 3, 3, device=device)

    def gemm() -> None:
        torch.mm(a, b)

    def conv() -> None:  # the largest layer shape of the step, forward alone: what oneDNN/cuDNN reach
        torch.nn.functional.conv2d(x, k, padding=1)

    def select() -> None:
        ws, noise = draw(run, run.cfg.select_batch, sel_rng)
        for p in run.params.values():
            p.requires_grad_(False)
        scores(run, ws, noise, chunk=run.cfg.batch)
        for p in run.params.values():
            p.requires_grad_(True)

    def sample() -> None:
        with torch.inference_mode():
            G.eval()(z, truncation_psi=0.7, noise_mode="const")
        G.train()

    def select_as_backward() -> None:
        """The selection's passes with .backward() instead of autograd.grad, whose leaf inputs the flop
        counter's module hooks cannot follow; the same operations, so the same FLOPs."""
        ws, noise = draw(run, run.cfg.select_batch, sel_rng)
        for p in run.params.values():
            p.requires_grad_(False)
        for start in range(0, ws.shape[0], run.cfg.batch):
            w = ws[start : start + run.cfg.batch].clone().requires_grad_(True)
            maps = [n[start : start + run.cfg.batch] for n in noise]
            run.selection_loss(run.synthesize(w, maps)).backward()
        for p in run.params.values():
            p.requires_grad_(True)

    work = {
        "GEMM": gemm,
        "conv 3x3 128ch 256px": conv,
        "plain step": run.step,
        "selection": select,
        "sampling (batch 4)": sample,
    }
    flops = {"GEMM": 2 * args.gemm**3, "conv 3x3 128ch 256px": 2 * 2 * 128 * 128 * 9 * 256 * 256}
    for name, fn in (("plain step", run.step), ("selection", select_as_backward), ("sampling (batch 4)", sample)):
        with counter() as c:
            fn()
        flops[name] = c.get_total_flops()
    gemm()  # warm-ups
    conv()
    times: dict[str, list[float]] = {k: [] for k in work}
    for i in range(args.rounds):
        for name in work if i % 2 == 0 else reversed(work):
            t0 = now()
            work[name]()
            times[name].append(now() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    peak = flops["GEMM"] / min(times["GEMM"])
    conv_name = "conv 3x3 128ch 256px"
    conv_peak = flops[conv_name] / min(times[conv_name])
    print(
        f"\n{'(median of ' + str(args.rounds) + ')':<22}{'GFLOP':>9}{unit:>9}{'GFLOP/s':>9}{'of GEMM':>9}"
        f"{'of conv':>9}{'x step':>8}"
    )
    for name in work:
        rate = flops[name] / med[name]
        print(f"{name:<22}{flops[name] / 1e9:>9.1f}{med[name]:>9.3f}{rate / 1e9:>9.1f}{rate / peak:>9.0%}"
              f"{rate / conv_peak:>9.0%}{med[name] / med['plain step']:>8.2f}")  # fmt: skip
    step_rate = flops["plain step"] / med["plain step"]
    print(f"GEMM {args.gemm}^2 fp32: best {peak / 1e9:.1f} GFLOP/s per {'CPU ' if unit == 'CPU s' else ''}second, "
          f"median {flops['GEMM'] / med['GEMM'] / 1e9:.1f}")  # fmt: skip
    print(f"useful FLOP/s = {step_rate / peak:.0%} of GEMM peak, {step_rate / conv_peak:.0%} of the 3x3 "
          f"convolution's best rate ({conv_peak / 1e9:.1f} GFLOP/s) (plain step)")  # fmt: skip

    if args.compile:
        # The sampling forward (inference) and the trainable synthesis inside the plain step (forward and
        # backward), each against its eager form, alternating after the first (compiling) call.
        forward = G.forward
        compiled = torch.compile(forward, mode=args.compile_mode)

        def render(fn) -> None:
            with torch.inference_mode():
                G.eval()
                fn(z, truncation_psi=0.7, noise_mode="const")
            G.train()

        compare_compiled("generator forward, sampling (batch 4)", lambda: render(forward), lambda: render(compiled),
                         args.rounds, now, unit)  # fmt: skip
        syn = G.synthesis
        eager_synthesis, compiled_synthesis = syn.forward, torch.compile(syn.forward, mode=args.compile_mode)

        def step_with(fn):
            def go() -> None:
                syn.forward = fn  # the instance attribute shadows the method for this module only
                run.step()

            return go

        compare_compiled("trainable synthesis, plain step", step_with(eager_synthesis), step_with(compiled_synthesis),
                         args.rounds, now, unit)  # fmt: skip
    assert math.isfinite(run.loss_history[-1])


if __name__ == "__main__":
    main()
