"""GPU self-check: is every CUDA path right (against the CPU), and how fast and big is a step?

    python bench/gpu_selfcheck.py                       # on CUDA: a few minutes; writes the result files
    python bench/gpu_selfcheck.py --device cpu --quick  # the same checks on tiny models (CI runs this)

No downloads: generators and ViT-B CLIPs are built with random weights (speed and memory do not depend
on the weights); `--quick` uses small generators and the bundled tiny CLIP instead.

1. Correctness, each against the CPU in float32 (tolerances in CHECKS, chosen for TF32 convolutions,
   which PyTorch allows on Ampere and newer by default):
   images (const and seeded random noise), one adaptation step (loss and weight update), CLIP in
   the half precision the policy picks on this device (fp16 on CUDA, bf16 elsewhere) against fp32
   (embeddings and their gradient w.r.t. the images), and the generator's bf16 autocast against fp32.
2. Speed and memory: seconds per step (median after a warm-up) and peak memory (CUDA
   max_memory_allocated over the loaded models) at 256/512/1024 px, with one and two ViT-B CLIPs,
   gradient checkpointing off and on, next to the estimate the ComfyUI node frees before training
   (`nada.adaptation.memory`), so the estimate can be checked on real GPUs. A case that runs out of
   memory is recorded as such. On the CPU the memory column is not measured.

Writes `<out>.json` and `<out>.md` (default: nada-selfcheck-<device>-<time>); attach both to an issue.
Exit status 1 when a correctness check fails.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# name: (metric, bound, pass when metric <= bound ("max") or >= bound ("min")). Adam's first update is
# about lr * sign(gradient), so gradient entries near zero may flip sign under TF32: the cosine of two
# correct updates can be a few percent below 1, while a wrong path gives about 0.
CHECKS = {
    "images const noise": ("max abs diff", 0.05, "max"),
    "images random noise": ("max abs diff", 0.05, "max"),
    **{
        f"adaptation step{path} {what}": check
        for path in (" plain", " checkpointing", " auto layers", " lora", " modulation")
        for what, check in (
            ("loss", ("relative diff", 0.01, "max")),
            ("update", ("cosine of weight updates", 0.9, "min")),
        )
    },
    "half CLIP embeddings": ("min cosine", 0.995, "min"),
    "half CLIP image gradient": ("cosine", 0.95, "min"),
    "autocast bf16 step loss": ("relative diff", 0.03, "max"),
    "autocast bf16 step update": ("cosine of weight updates", 0.8, "min"),
}


# The code paths of a step that differ on a device: plain, recomputed activations, the layer selection
# (SGD on W+ and a partial update), and the two small parameterisations.
STEP_PATHS = {
    "plain": {},
    "checkpointing": {"gradient_checkpointing": True},
    "auto layers": {"layers": "auto"},
    "lora": {"parameterization": "lora"},
    "modulation": {"parameterization": "modulation"},
}


def make_generator(res: int, quick: bool):
    from nada.stylegan2 import Generator, GeneratorConfig, channels_rosinality

    if quick:
        channels = tuple(min(64, 256 // 2**i) for i in range(len(channels_rosinality(res))))
        cfg = GeneratorConfig(img_resolution=res, channels=channels, z_dim=64, w_dim=64, mapping_layers=2)
    else:
        cfg = GeneratorConfig(img_resolution=res, channels=channels_rosinality(res, 2))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(res)
        G = Generator(cfg).eval().requires_grad_(False)
    with torch.no_grad():
        G.mapping.w_avg.copy_(G.mapping.estimate_w_avg(n=256, seed=0))
    return G


def make_clips(count: int, quick: bool, device: torch.device) -> list:
    """`count` CLIPs (fp32, on the CPU; `ClipModel.on` applies the device's precision)."""
    from nada.clip import load_clip
    from nada.demo import load_tiny_clip

    if quick:
        tiny = load_tiny_clip()
        return [tiny] + [load_tiny_clip() for _ in range(count - 1)]
    return [load_clip(a, random_weights=True, precision="fp32") for a in ("ViT-B-32", "ViT-B-16")[:count]]


def ensemble(clips: list):
    from nada.clip import clip_ensemble

    return clip_ensemble([(c, 1.0) for c in clips]) if len(clips) > 1 else clips[0]


def _update_cosine(G, a, b) -> float:
    base = torch.cat([p.flatten() for p in G.synthesis.parameters()])
    da = torch.cat([p.flatten().cpu() for p in a.synthesis.parameters()]) - base
    db = torch.cat([p.flatten().cpu() for p in b.synthesis.parameters()]) - base
    return float(F.cosine_similarity(da, db, dim=0))


def correctness(device: torch.device, quick: bool) -> dict[str, float]:
    from nada.adaptation import AdaptConfig, adapt
    from nada.directions import text_direction
    from nada.sampling import sample

    out: dict[str, float] = {}
    G = make_generator(64 if quick else 256, quick)
    Gd = _copy_to(G, device)
    for mode, name in (("const", "images const noise"), ("random", "images random noise")):
        a, b = sample(G, [0, 1, 2, 3], noise_mode=mode), sample(Gd, [0, 1, 2, 3], noise_mode=mode)
        out[name] = float((a - b).abs().max())

    clip = make_clips(1, quick, device)[0]
    direction = text_direction(clip, "photo", "sketch", templates=None)
    cfg = AdaptConfig(steps=1, batch=2, preview_count=0, gradient_checkpointing=False)
    for path, extra in STEP_PATHS.items():
        path_cfg = AdaptConfig(**{**cfg.to_dict(), **extra})
        ref = adapt(G, clip, direction, path_cfg, device="cpu")
        run = adapt(G, clip.on(device, "fp32"), direction, path_cfg, device=device)
        out[f"adaptation step {path} loss"] = abs(run.loss_history[0] - ref.loss_history[0]) / abs(ref.loss_history[0])
        out[f"adaptation step {path} update"] = _update_cosine(G, ref.generator, run.generator)
    run = adapt(G, clip.on(device, "fp32"), direction, cfg, device=device)

    half = clip.on(device, "fp16" if device.type == "cuda" else "bf16")
    images = sample(G, list(range(4)), truncation_psi=1.0)
    e32, g32 = _embed_and_grad(clip, images)
    e16, g16 = _embed_and_grad(half, images.to(device))
    out["half CLIP embeddings"] = float(F.cosine_similarity(e32, e16.cpu(), dim=-1).min())
    out["half CLIP image gradient"] = float(F.cosine_similarity(g32.flatten(), g16.cpu().flatten(), dim=0))

    auto = adapt(G, clip.on(device, "fp32"), direction, AdaptConfig(**{**cfg.to_dict(), "autocast": "bf16"}),
                 device=device)  # fmt: skip
    out["autocast bf16 step loss"] = abs(auto.loss_history[0] - run.loss_history[0]) / abs(run.loss_history[0])
    out["autocast bf16 step update"] = _update_cosine(G, run.generator, auto.generator)
    return out


def _copy_to(G, device):
    from nada.devices import on_device

    return on_device(G, device)


def _embed_and_grad(clip, images: torch.Tensor):
    with torch.enable_grad():
        x = images.clone().requires_grad_(True)
        e = clip.encode_images(x)
        e[:, 0].sum().backward()  # any fixed scalar of the embeddings: a check of the backward pass
    return e.detach(), x.grad.detach()


def performance(device: torch.device, quick: bool, resolutions: list[int], steps: int) -> list[dict]:
    from nada.adaptation import AdaptConfig, memory
    from nada.clip import as_ensemble
    from nada.directions import text_direction

    rows = []
    clips_all = make_clips(2, quick, device)
    for res in resolutions:
        G = _copy_to(make_generator(res, quick), device)
        for count in (1, 2):
            clip = ensemble(clips_all[:count])
            clip = as_ensemble(clip).on(device)  # the policy's precision, as the node and the CLI
            direction = text_direction(clip, "photo", "sketch", templates=None)
            for ckpt in (False, True):
                cfg = AdaptConfig(steps=steps + 1, batch=2, preview_count=0, gradient_checkpointing=ckpt)
                row = {"res": res, "clips": count, "checkpointing": ckpt, "precision": clip.members[0].model.precision,
                       "estimate_mb": memory.training_bytes(G, clip, cfg, device, ckpt) / 2**20}  # fmt: skip
                row.update(_time_case(G, clip, direction, cfg, device))
                rows.append(row)
                print(_row_text(row), flush=True)
    return rows


def _time_case(G, clip, direction, cfg, device: torch.device) -> dict:
    from nada.adaptation import AdaptError, adapt

    stamps: list[float] = []

    def on_step(_p) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    try:
        adapt(G, clip, direction, cfg, callback=on_step, device=device)
    except (torch.OutOfMemoryError, AdaptError) as e:
        return {"error": "out of memory" if "memory" in str(e) else str(e)[:200]}
    per_step = [b - a for a, b in zip(stamps, stamps[1:])]
    out = {"s_per_step": statistics.median(per_step) if per_step else None}
    if device.type == "cuda":
        out["peak_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return out


def _row_text(r: dict) -> str:
    ck = "on" if r["checkpointing"] else "off"
    head = f"| {r['res']} | {r['clips']} | {r['precision']} | {ck} |"
    if "error" in r:
        return f"{head} {r['error']} | | {r['estimate_mb']:.0f} |"
    peak = f"{r['peak_mb']:.0f}" if "peak_mb" in r else "n/a"
    return f"{head} {r['s_per_step']:.3f} | {peak} | {r['estimate_mb']:.0f} |"


def environment(device: torch.device) -> dict:
    import nada

    env = {"torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
           "nada": nada.__version__, "device": str(device), "threads": torch.get_num_threads()}  # fmt: skip
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(gpu=p.name, capability=f"{p.major}.{p.minor}", memory_gb=round(p.total_memory / 2**30, 1),
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                   tf32_conv=torch.backends.cudnn.allow_tf32, tf32_matmul=torch.backends.cuda.matmul.allow_tf32)  # fmt: skip
    return env


def verdicts(measured: dict[str, float]) -> dict[str, dict]:
    out = {}
    for name, value in measured.items():
        metric, bound, kind = CHECKS[name]
        ok = value <= bound if kind == "max" else value >= bound
        out[name] = {"metric": metric, "value": value, "bound": bound, "kind": kind, "ok": bool(ok)}
    return out


def markdown(report: dict) -> str:
    lines = ["# comfyui-nada GPU self-check", "", "```", json.dumps(report["environment"], indent=1), "```", "",
             "## Correctness against the CPU", "", "| check | metric | value | bound | result |", "|---|---|---|---|---|"]  # fmt: skip
    for name, v in report["checks"].items():
        sign = "<=" if v["kind"] == "max" else ">="
        lines.append(
            f"| {name} | {v['metric']} | {v['value']:.6g} | {sign} {v['bound']} | {'ok' if v['ok'] else 'FAIL'} |"
        )
    lines += ["", f"## Speed and memory (batch 2, {report['steps']} timed steps after a warm-up)", "",
              "| px | CLIPs | CLIP precision | checkpointing | s/step | peak MB | node's estimate MB |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    lines += [_row_text(r) for r in report["performance"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny models (32/64 px, the bundled tiny CLIP)")
    ap.add_argument("--resolutions", default=None, help="default 256,512,1024 (quick: 32,64)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per case (default 3; quick: 1)")
    ap.add_argument("--out", default=None, help="result files without extension")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available here; run with --device cpu --quick to check the script itself")
        return 2
    resolutions = [int(v) for v in (args.resolutions or ("32,64" if args.quick else "256,512,1024")).split(",")]
    steps = args.steps or (1 if args.quick else 3)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"nada-selfcheck-{device.type}-{stamp}")
    report = {"environment": environment(device), "quick": args.quick, "steps": steps}
    report["checks"] = verdicts(correctness(device, args.quick))
    for name, v in report["checks"].items():
        print(
            f"{'ok  ' if v['ok'] else 'FAIL'} {name}: {v['metric']} {v['value']:.6g} (bound {v['bound']})", flush=True
        )
    report["performance"] = performance(device, args.quick, resolutions, steps)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(report), encoding="utf-8")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0 if all(v["ok"] for v in report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
