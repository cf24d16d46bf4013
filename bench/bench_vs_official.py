"""Side by side with the official StyleGAN-NADA training step, same machine, alternating processes.

    python bench/bench_vs_official.py --official /path/to/StyleGAN-nada --threads 2 --pairs 3
    python bench/bench_vs_official.py --official ... --cases step,auto --steps 2 --pairs 4

`--official` is a checkout of rinongal/StyleGAN-nada (not shipped with this project, not installed by
this script). Its code runs unmodified. What this script supplies is what the official code expects
from its environment and cannot get on a machine without CUDA or OpenAI's `clip` package:

- its compiled ops (`op/upfirdn2d.py`, `op/fused_act.py`) call `torch.utils.cpp_extension.load` at
  import; that call is replaced by one that compiles nothing, so the modules import and take their
  own CPU paths (`upfirdn2d_native`, the plain leaky ReLU; `conv2d_gradfix` falls back to
  `F.conv2d` off CUDA). Only on the CPU: with `--device cuda` the official ops need their CUDA build.
- `ZSSGAN` hard-codes `cuda:0`; on the CPU, `.to("cuda...")` and `torch.load` are redirected to the CPU.
- a `clip` module with OpenAI's interface (`load` -> model with `encode_image`, `encode_text`,
  `__call__` -> logits, and the usual Resize/CenterCrop/ToRGB/ToTensor/Normalize preprocess;
  `tokenize`), serving open_clip architectures with random weights, as `bench_adapt.py` does for ours.

Both sides get the same 256 px config-f generator (random weights, nonzero noise strengths, written
once as a rosinality `.pt` that the official code loads and ours reads), the ViT-B-32 architecture
with random weights, batch 2, "photo" -> "sketch", the directional loss only (official defaults:
lambda_direction 1, the training layers of `phase=None`, Adam at lr 0.002 x 4/5 as `train.py`).
Cases: `step` (a plain step) and `auto` (adaptive layers every step: k = 9, selection batch 8, one
SGD iteration, as the official `--auto_layer_k 9 --auto_layer_iters 1 --auto_layer_batch 8`).

Each (side, case) runs in its own process: set-up, one warm-up step, `--steps` timed steps (median
wall and CPU seconds), peak RSS over the RSS once the models are loaded. Processes alternate official
/ ours, `--pairs` times; the table gives each side's median and the median of the pair-by-pair ratios.
Run it on an idle machine: a busy one changes the times by 2-4x.

Ours runs its steps with `nada.cpu_memory.reuse_freed_memory` (glibc keeps freed blocks for the next
step) as every adaptation on the CPU does; the official code runs with glibc's defaults, as its users
run it. `--same-allocator` gives the official process the same settings (through glibc's environment
variables) to compare the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bench_adapt import _rss_mb  # noqa: E402  (the peak RSS the other benches report)

SIZE, BATCH, SRC, TGT, LR, K, SELECT_BATCH = 256, 2, "photo", "sketch", 0.002, 9, 8


def _cpu_s() -> float:
    return time.process_time()


def _checkpoint(official: Path, path: Path) -> None:
    """The shared generator, written by the official code's own Generator class."""
    import torch

    sys.path[:0] = [str(official), str(official / "ZSSGAN")]
    _install_official_env("cpu")
    from ZSSGAN.model.sg2_model import Generator

    torch.manual_seed(0)
    g = Generator(SIZE, 512, 8, channel_multiplier=2)
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.05)  # trained generators have nonzero noise strengths
    torch.save({"g_ema": g.state_dict()}, path)


def ops_without_compiling() -> None:
    """Let the official op modules import without compiling their CUDA kernels (on the CPU they never
    call them: each op has its own CPU path)."""
    import torch.utils.cpp_extension as cpp_extension

    cpp_extension.load = lambda *a, **k: types.SimpleNamespace()


def _install_official_env(device: str) -> None:
    import torch

    if device == "cpu":
        ops_without_compiling()

        def cpu(a):
            return "cpu" if isinstance(a, (str, torch.device)) and "cuda" in str(a) else a

        tensor_to, module_to, load = torch.Tensor.to, torch.nn.Module.to, torch.load
        torch.Tensor.to = lambda self, *a, **k: tensor_to(self, *map(cpu, a), **{n: cpu(v) for n, v in k.items()})
        torch.nn.Module.to = lambda self, *a, **k: module_to(self, *map(cpu, a), **{n: cpu(v) for n, v in k.items()})
        torch.load = lambda *a, **k: load(*a, **{**k, "map_location": "cpu", "weights_only": False})
    sys.modules["clip"] = _openai_clip_interface(device)


def _openai_clip_interface(device: str) -> types.ModuleType:
    """A module with OpenAI clip's `load` / `tokenize`, over open_clip architectures with random weights."""
    import open_clip
    import torch
    import torch.nn.functional as F
    import torchvision.transforms as T

    from nada.clip import OPENAI_MEAN, OPENAI_STD

    names = {"ViT-B/32": "ViT-B-32", "RN50": "RN50", "ViT-B/16": "ViT-B-16"}
    tokenizer = open_clip.get_tokenizer("ViT-B-32")

    class Model:
        def __init__(self, net):
            self.net = net

        def encode_image(self, x):
            return self.net.encode_image(x)

        def encode_text(self, tokens):
            return self.net.encode_text(tokens)

        def __call__(self, image, tokens):
            i = F.normalize(self.encode_image(image), dim=-1)
            t = F.normalize(self.encode_text(tokens), dim=-1)
            logits = self.net.logit_scale.exp() * i @ t.T
            return logits, logits.T

        def requires_grad_(self, flag):
            self.net.requires_grad_(flag)
            return self

    def load(name, device=device, **_):
        torch.manual_seed(1)
        net = open_clip.create_model(names[name]).eval().to(device)
        size = net.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        pre = T.Compose(
            [
                T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
                T.CenterCrop(size),
                lambda im: im.convert("RGB"),
                T.ToTensor(),
                T.Normalize(OPENAI_MEAN, OPENAI_STD),
            ]
        )
        return Model(net), pre

    mod = types.ModuleType("clip")
    mod.load, mod.tokenize = load, lambda texts: tokenizer(texts)
    return mod


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _official(official: Path, ckpt: Path, case: str, steps: int, device: str) -> dict:
    import torch

    sys.path[:0] = [str(official), str(official / "ZSSGAN")]
    _install_official_env(device)
    from ZSSGAN.model.ZSSGAN import ZSSGAN

    auto = case == "auto"
    args = types.SimpleNamespace(
        sg3=False,
        sgxl=False,
        frozen_gen_ckpt=str(ckpt),
        train_gen_ckpt=str(ckpt),
        size=SIZE,
        phase=None,
        lambda_direction=1.0,
        lambda_patch=0.0,
        lambda_global=0.0,
        lambda_manifold=0.0,
        lambda_texture=0.0,
        clip_models=["ViT-B/32"],
        clip_model_weights=[1.0],
        source_class=SRC,
        target_class=TGT,
        auto_layer_k=K if auto else 0,
        auto_layer_iters=1 if auto else 0,
        auto_layer_batch=SELECT_BATCH,
        target_img_list=None,
        g_reg_every=4,
    )
    net = ZSSGAN(args)
    if device == "cpu":
        net.device = "cpu"  # determine_opt_layers draws its latents on net.device
    ratio = args.g_reg_every / (args.g_reg_every + 1)  # train.py's optimiser
    g_optim = torch.optim.Adam(net.generator_trainable.parameters(), lr=LR * ratio, betas=(0**ratio, 0.99**ratio))
    base = _rss_mb()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    torch.manual_seed(2)
    walls, cpus = [], []
    for i in range(steps + 1):
        z = torch.randn(BATCH, 512, device=device)
        _sync(device)
        t0, c0 = time.perf_counter(), _cpu_s()
        net.train()  # train.py's loop body
        [_, _], loss = net([z])
        net.zero_grad()
        loss.backward()
        g_optim.step()
        _sync(device)
        if i:  # the first step is the warm-up (and computes the text direction)
            walls.append(time.perf_counter() - t0)
            cpus.append(_cpu_s() - c0)
    return _result(walls, cpus, base, device, base_cuda if device.startswith("cuda") else 0)


def _ours(ckpt: Path, case: str, steps: int, device: str) -> dict:
    import torch

    from nada import clip as nada_clip
    from nada import directions
    from nada.adaptation import AdaptConfig, adapt
    from nada.stylegan2.formats import load_generator

    G = load_generator(str(ckpt)).eval().to(device)
    clip = nada_clip.load_clip("ViT-B-32", random_weights=True, device=device)
    direction = directions.text_direction(clip, SRC, TGT, templates=None)
    layers = dict(layers="auto", auto_k=K, select_batch=SELECT_BATCH) if case == "auto" else dict(layers="all")
    cfg = AdaptConfig(steps=steps + 1, batch=BATCH, seed=0, **layers)
    base = _rss_mb()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    stamps = []

    def on_step(_):
        _sync(device)
        stamps.append((time.perf_counter(), _cpu_s()))

    adapt(G, clip, direction, cfg, callback=on_step, device=device)
    walls = [b[0] - a[0] for a, b in zip(stamps, stamps[1:])]
    cpus = [b[1] - a[1] for a, b in zip(stamps, stamps[1:])]
    return _result(walls, cpus, base, device, base_cuda if device.startswith("cuda") else 0)


def _result(walls, cpus, base, device, base_cuda) -> dict:
    import torch

    out = {"wall": statistics.median(walls), "cpu": statistics.median(cpus)}
    if device.startswith("cuda"):
        out["peak_mb"] = (torch.cuda.max_memory_allocated() - base_cuda) / 2**20
    else:
        out["peak_mb"] = _rss_mb() - base
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", type=Path, default=os.environ.get("NADA_OFFICIAL_DIR"), help="StyleGAN-nada checkout")
    ap.add_argument("--cases", default="step,auto")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per process (after one warm-up step)")
    ap.add_argument("--pairs", type=int, default=3, help="official/ours process pairs per case")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--same-allocator",
        action="store_true",
        help="give the official process glibc's settings that nada.cpu_memory applies to ours (through the "
        "environment: MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_=2147483647), to compare the rest",
    )
    ap.add_argument("--side", default=None, help=argparse.SUPPRESS)  # internal: one process
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.official is None or not (args.official / "ZSSGAN" / "model" / "ZSSGAN.py").is_file():
        ap.error("--official must be a checkout of rinongal/StyleGAN-nada (the folder holding ZSSGAN/)")
    sys.path.insert(0, str(ROOT))
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.side:
        if args.side == "official":
            r = _official(args.official.resolve(), args.ckpt, args.case, args.steps, args.device)
        else:
            r = _ours(args.ckpt, args.case, args.steps, args.device)
        print(json.dumps(r))
        return

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "g256.pt"
        cmd = [
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
            f"from bench.bench_vs_official import _checkpoint; from pathlib import Path; "
            f"_checkpoint(Path({str(args.official.resolve())!r}), Path({str(ckpt)!r}))",
        ]
        subprocess.run(cmd, check=True)
        print(f"torch {torch.__version__}, threads {args.threads or torch.get_num_threads()}, device {args.device}")
        print(
            f"{SIZE} px config-f generator, ViT-B-32 (random weights), batch {BATCH}; {args.steps} timed steps "
            f"per process after one warm-up, {args.pairs} official/ours pairs per case\n"
        )
        rows = []
        for case in args.cases.split(","):
            pairs = []
            for i in range(args.pairs):
                order = ("official", "ours") if i % 2 == 0 else ("ours", "official")
                got = {}
                for side in order:
                    c = [
                        sys.executable,
                        __file__,
                        "--side",
                        side,
                        "--case",
                        case,
                        "--ckpt",
                        str(ckpt),
                        "--official",
                        str(args.official.resolve()),
                        "--steps",
                        str(args.steps),
                        "--device",
                        args.device,
                    ]
                    if args.threads:
                        c += ["--threads", str(args.threads)]
                    env = {**os.environ, "PYTHONPATH": str(ROOT)}
                    if args.same_allocator:
                        env.update(MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_="2147483647")
                    out = subprocess.run(c, capture_output=True, text=True, env=env)
                    if out.returncode != 0:
                        sys.exit(f"{side} {case} failed:\n{out.stderr[-3000:]}")
                    got[side] = json.loads(out.stdout.strip().splitlines()[-1])
                pairs.append(got)
                o, u = got["official"], got["ours"]
                print(
                    f"  {case} pair {i}: official {o['wall']:.2f} s ({o['cpu']:.2f} CPU s, {o['peak_mb']:.0f} MB), "
                    f"ours {u['wall']:.2f} s ({u['cpu']:.2f} CPU s, {u['peak_mb']:.0f} MB), "
                    f"wall ratio {u['wall'] / o['wall']:.2f}",
                    flush=True,
                )
            rows.append((case, pairs))
        mem = "peak CUDA MB" if args.device.startswith("cuda") else "peak MB over loaded"
        print(
            f"\n{'case':<8}{'official s':>12}{'ours s':>9}{'ratio':>8}{'cpu ratio':>11}"
            f"{'official ' + mem:>28}{'ours':>8}{'ratio':>8}"
        )
        for case, pairs in rows:
            med = {
                s: {k: statistics.median(p[s][k] for p in pairs) for k in ("wall", "cpu", "peak_mb")}
                for s in ("official", "ours")
            }
            wall_r = statistics.median(p["ours"]["wall"] / p["official"]["wall"] for p in pairs)
            cpu_r = statistics.median(p["ours"]["cpu"] / p["official"]["cpu"] for p in pairs)
            mem_r = med["ours"]["peak_mb"] / med["official"]["peak_mb"]
            print(
                f"{case:<8}{med['official']['wall']:>12.2f}{med['ours']['wall']:>9.2f}{wall_r:>8.2f}{cpu_r:>11.2f}"
                f"{med['official']['peak_mb']:>28.0f}{med['ours']['peak_mb']:>8.0f}{mem_r:>8.2f}"
            )
        print("\nratio = median over pairs of ours / official (time: lower is faster); memory: ratio of the medians")


if __name__ == "__main__":
    main()
