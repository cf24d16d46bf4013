"""Sampling throughput next to NVIDIA's and rosinality's generators, same weights, same images.

    python bench/bench_vs_reference_sampling.py --nvidia /path/to/stylegan2-ada-pytorch \\
        --official /path/to/StyleGAN-nada --threads 2 --rounds 3

Checkouts of NVlabs/stylegan2-ada-pytorch and rinongal/StyleGAN-nada (rosinality's model as the
official NADA code ships it, `ZSSGAN/model/sg2_model.py`) are not shipped with this project and
not installed by this script; their code runs unmodified, each on its own CPU paths (NVIDIA's
`_ref` upfirdn2d / bias_act and its fused grouped modulated convolution in eval mode; rosinality's
`upfirdn2d_native` and plain leaky ReLU, its op modules imported without compiling their CUDA
kernels as in `bench_vs_official.py`; nothing else is patched, so our loader reads both files as
it always does).

NVIDIA's `training.networks.Generator` (256 px config-f: channel_base 32768, channel_max 512, fp32,
no conv clamp; random weights, noise strengths 0.05, `w_avg` the mean of 1000 mapped z) is pickled as
`{"G_ema": G}`; rosinality's `Generator(256, 512, 8, channel_multiplier=2)` (noise strengths 0.05)
saved as `{"g_ema", "latent_avg"}`; ours loads both files (`nada.load_generator`, the restricted
unpickler for the pickle), so each pair has the same weights. Same z (batch `--batch`), truncation
0.7, constant noise, `inference_mode`; the images are compared first. Rounds alternate the order
after a warm-up; each call renders two batches; time in CPU seconds (`--wall` for wall seconds on
an idle machine).
"""

from __future__ import annotations

import argparse
import io
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nvidia", type=Path, required=True, help="stylegan2-ada-pytorch checkout")
    ap.add_argument("--official", type=Path, required=True, help="StyleGAN-nada checkout (rosinality's model)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--wall", action="store_true", help="wall seconds instead of CPU seconds")
    args = ap.parse_args()
    if not (args.nvidia / "training" / "networks.py").is_file():
        ap.error("--nvidia must be a checkout of NVlabs/stylegan2-ada-pytorch (holding training/networks.py)")
    if not (args.official / "ZSSGAN" / "model" / "sg2_model.py").is_file():
        ap.error("--official must be a checkout of rinongal/StyleGAN-nada (holding ZSSGAN/)")
    sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
    import torch

    torch.set_num_threads(args.threads)
    from bench_vs_official import ops_without_compiling

    from nada.cpu_memory import reuse_freed_memory
    from nada.stylegan2.formats import load_generator

    res, B, psi = 256, args.batch, 0.7
    tmp = Path(tempfile.mkdtemp())

    sys.path.insert(0, str(args.nvidia.resolve()))
    from training.networks import Generator as NvGenerator

    torch.manual_seed(0)
    nv = NvGenerator(
        z_dim=512, c_dim=0, w_dim=512, img_resolution=res, img_channels=3, mapping_kwargs=dict(num_layers=8),
        synthesis_kwargs=dict(channel_base=32768, channel_max=512, num_fp16_res=0, conv_clamp=None),
    ).eval()  # fmt: skip
    nv.requires_grad_(False)
    with torch.no_grad():  # a trained-looking generator: nonzero noise strengths and a w_avg
        for name, p in nv.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.05)
        nv.mapping.w_avg.copy_(nv.mapping(torch.randn(1000, 512), None, skip_w_avg_update=True)[:, 0].mean(0))
    buf = io.BytesIO()
    pickle.dump({"G_ema": nv}, buf)
    (tmp / "nv256.pkl").write_bytes(buf.getvalue())
    ours_nv = load_generator(tmp / "nv256.pkl").eval().requires_grad_(False)

    sys.path[:0] = [str(args.official.resolve()), str(args.official.resolve() / "ZSSGAN")]
    ops_without_compiling()
    import ZSSGAN.model.sg2_model as sg2

    torch.manual_seed(1)
    ro = sg2.Generator(res, 512, 8, channel_multiplier=2).eval()
    ro.requires_grad_(False)
    with torch.no_grad():
        for name, p in ro.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.05)
    mean_latent = ro.mean_latent(4096)
    torch.save({"g_ema": ro.state_dict(), "latent_avg": mean_latent[0]}, tmp / "ro256.pt")
    ours_ro = load_generator(tmp / "ro256.pt").eval().requires_grad_(False)
    ro_noise = [getattr(ro.noises, f"noise_{i}") for i in range(ro.num_layers)]

    z = torch.randn(B, 512, generator=torch.Generator().manual_seed(7))
    runs = {
        "NVIDIA": lambda: nv(z, None, truncation_psi=psi, noise_mode="const"),
        "ours(nv)": lambda: ours_nv(z, truncation_psi=psi, noise_mode="const"),
        "rosinality": lambda: ro([z], truncation=psi, truncation_latent=mean_latent, noise=ro_noise)[0],
        "ours(ro)": lambda: ours_ro(z, truncation_psi=psi, noise_mode="const"),
    }
    with torch.inference_mode():
        for theirs, ours in (("NVIDIA", "ours(nv)"), ("rosinality", "ours(ro)")):
            a, b = runs[theirs](), runs[ours]()
            print(
                f"same images? {theirs} vs ours: max |diff| {(a - b).abs().max():.2e} (values up to {a.abs().max():.2f})"
            )

    clock = time.perf_counter if args.wall else time.process_time

    def rate(fn) -> float:
        t0 = clock()
        with torch.inference_mode():
            for _ in range(2):
                fn()
        return 2 * B / (clock() - t0)

    rows = []
    with reuse_freed_memory("cpu"):  # as nada.sample runs; the others get the same process state
        for fn in runs.values():
            rate(fn)  # warm-up
        print(f"{'round':<6}" + "".join(f"{n:>12}" for n in runs) + f"   img/s per {'' if args.wall else 'CPU '}second")
        for i in range(args.rounds):
            order = list(runs) if i % 2 == 0 else list(reversed(runs))
            r = {n: rate(runs[n]) for n in order}
            rows.append(r)
            print(f"{i:<6}" + "".join(f"{r[n]:>12.2f}" for n in runs))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {res} px config-f, batch {B}, psi {psi}")
    for theirs, ours in (("NVIDIA", "ours(nv)"), ("rosinality", "ours(ro)")):
        q = [r[ours] / r[theirs] for r in rows]
        print(f"{ours}/{theirs} img/s: median {statistics.median(q):.2f} (min {min(q):.2f}, max {max(q):.2f})")


if __name__ == "__main__":
    main()
