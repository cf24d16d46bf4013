"""Grid artefacts of an adapted StyleGAN3: spectra and translation equivariance before and after NADA.

    python -m nada.demo.train_generator --family stylegan3 --threads 1 --steps 1100 --batch 16 --out FIT
    python bench/bench_sg3_artefacts.py --generator FIT/shapes-32px-stylegan3.safetensors --steps 150

The official StyleGAN-NADA README warns of grid artefacts when adapting StyleGAN3. This adapts a small
StyleGAN3-T fitted to the shapes world (`nada.demo.train_generator --family stylegan3`) with the tiny
CLIP under settings that could cause or avoid them, and measures on the same 64 latents (psi 0.7):

- hf: share of the image's AC spectral energy at |f|max >= 1/4 cycle/pixel (the top half of the band);
- nyquist: share on the lines fx = 1/2 or fy = 1/2 cycle/pixel (a pattern alternating every pixel);
- fixed: how much of the high-passed images is one pattern shared by all samples (the energy of their
  mean over their mean energy; content at random places averages out to ~1/64, a pattern bound to
  the pixel grid does not);
- eq_t PSNR (dB): the image rendered with the input translated by t pixels (`set_transform`), shifted
  back by t with a Fourier shift, against the untranslated image, 4 px border excluded, t = 0.5 px
  and 1.25 px along x and y. An alias-free generator keeps it high; texture stuck to the pixel grid
  lowers it (the StyleGAN3 paper's EQ-T, here with a periodic shift);
- P(tgt): the tiny CLIP's P(target vs source text) on the same images (how far the run got).

Settings: layers `all` (the default: the Fourier input and every layer), `late` (the layers at the
16-32 px band only: no input, no early layers), `early` (the `shape` preset: input and early layers
only), and `all` with the magnitude EMAs updated during the run (`--ema-half-life` images; NADA and
the official code keep them frozen). Pictures go to docs/images/sg3_*.png. Not a test: one run.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

N_LATENTS = 64
PSI = 0.7
SHIFTS_PX = ((0.5, 0.0), (0.0, 0.5), (1.25, 0.0), (0.0, 1.25))
BORDER = 4
SCALE = 3  # 32 px tiles, nearest-neighbour enlarged
PICTURE_SEEDS = list(range(5))
DIRECTIONS = (("blue", "red"), ("circle", "square"))
RUNS = {"red": ("all", "late", "early", "all+ema"), "square": ("all", "late")}  # settings per direction


def spectrum_shares(x: torch.Tensor) -> dict[str, float]:
    """hf, nyquist and fixed-pattern shares of images [N, C, H, W] (see the module doc)."""
    x = x - x.mean((2, 3), keepdim=True)
    spec = torch.fft.fft2(x)
    power = spec.abs().square().sum(1)  # [N, H, W]
    f = torch.fft.fftfreq(x.shape[-1]).abs()
    fy, fx = f[:, None], f[None, :]
    high = torch.maximum(fx, fy) >= 0.25
    total = power.sum()
    hp = torch.fft.ifft2(spec * high).real  # [N, C, H, W] high-passed images
    fixed = hp.mean(0).square().sum() / hp.square().sum((1, 2, 3)).mean()
    return {
        "hf": (power * high).sum().item() / total.item(),
        "nyquist": (power * ((fx == 0.5) | (fy == 0.5))).sum().item() / total.item(),
        "fixed": fixed.item(),
    }


def fourier_shift(x: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    """x [N, C, H, W] moved by (dx, dy) pixels (right, down), periodic, band-limited interpolation."""
    h, w = x.shape[-2:]
    fy, fx = torch.fft.fftfreq(h)[:, None], torch.fft.fftfreq(w)[None, :]
    return torch.fft.ifft2(torch.fft.fft2(x) * torch.exp(-2j * math.pi * (fx * dx + fy * dy))).real


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (peak-to-peak 2, images in [-1, 1]) inside a BORDER-pixel frame."""
    c = (..., slice(BORDER, -BORDER), slice(BORDER, -BORDER))
    return 10 * math.log10(4 / (a[c] - b[c]).square().mean().item())


@torch.no_grad()
def images(G, ws: torch.Tensor) -> torch.Tensor:
    """G's images of ws [N, num_ws, w_dim], 8 at a time (on a CPU, batch 64 takes 4x longer than 8 x 8)."""
    return torch.cat([G.synthesis(w) for w in ws.split(8)]).clamp(-1, 1)


def translated(G, ws: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    """G's images of ws with the output moved by (dx, dy) pixels through the input transform."""
    res = G.config.img_resolution
    G.synthesis.set_transform(0.0, (dx / res, dy / res))
    try:
        return images(G, ws)
    finally:
        G.synthesis.set_transform(0.0, (0.0, 0.0))


def measure(G, ws: torch.Tensor) -> dict[str, float]:
    base = images(G, ws)
    out = spectrum_shares(base)
    scores = [psnr(fourier_shift(translated(G, ws, dx, dy), -dx, -dy), base) for dx, dy in SHIFTS_PX]
    out["eq_t_psnr"] = sum(scores) / len(scores)
    return out


def check_shift_sign(G, ws: torch.Tensor) -> None:
    """set_transform's translation must move the image the way fourier_shift undoes (2 px, whole pixels)."""
    moved, base = translated(G, ws, 2.0, 0.0), images(G, ws)
    right, wrong = psnr(torch.roll(moved, -2, dims=-1), base), psnr(torch.roll(moved, 2, dims=-1), base)
    if right <= wrong:
        raise SystemExit(f"set_transform moves the image the other way ({right:.1f} vs {wrong:.1f} dB)")


def adapt_one(G, clip, source: str, target: str, units, steps: int, ema_beta: float | None):
    from nada.adaptation import AdaptConfig, adapt
    from nada.directions import text_direction

    G_in = G
    if ema_beta is not None:  # the run's trainable copy inherits the setting; the frozen G stays in eval
        G_in = copy.deepcopy(G)
        G_in.synthesis.magnitude_ema_beta = ema_beta
    cfg = AdaptConfig(steps=steps, seed=0, layers=units, preview_count=0)
    G2 = adapt(G_in, clip, text_direction(clip, source, target), cfg, device="cpu").generator
    G2.synthesis.magnitude_ema_beta = None
    return G2


def high_pass_view(x: torch.Tensor, gain: float = 4.0) -> torch.Tensor:
    """The part of images [N, C, H, W] at |f|max >= 1/4 cycle/pixel, amplified, around gray."""
    f = torch.fft.fftfreq(x.shape[-1]).abs()
    high = torch.maximum(f[:, None], f[None, :]) >= 0.25
    return (torch.fft.ifft2(torch.fft.fft2(x) * high).real * gain).clamp(-1, 1)


def error_view(shifted_back: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
    """|shifted back - unshifted| x64 as images (black = 0, white >= 1/32); the BORDER frame (the periodic
    shift's wrap-around, outside the PSNR) is left black."""
    err = torch.full_like(img, -1.0)
    c = (..., slice(BORDER, -BORDER), slice(BORDER, -BORDER))
    err[c] = ((shifted_back - img)[c].abs() * 64 - 1).clamp(-1, 1)
    return err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", required=True, help="a StyleGAN3 fitted by train_generator --family stylegan3")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--ema-half-life", type=float, default=50.0, help="images, for the 'EMA updated' setting")
    ap.add_argument("--out", default=str(ROOT / "docs" / "images"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    from nada.demo import load_tiny_clip
    from nada.demo.run import target_probability
    from nada.demo.train_generator import preview, quality
    from nada.images import labelled_grid, save_image
    from nada.layers import resolve_units
    from nada.sampling import seeds_to_z, z_to_w
    from nada.stylegan2.formats import load_generator

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    G = load_generator(args.generator)
    clip = load_tiny_clip()
    out = Path(args.out)
    print(f"fit: {json.dumps(quality(G))}", flush=True)
    save_image(labelled_grid([("scene", (p := preview(G, n=8))[:8]), ("StyleGAN3", p[8:])], scale=SCALE),
               out / "sg3_fit.png", overwrite=True)  # fmt: skip

    ws = z_to_w(G, seeds_to_z(list(range(N_LATENTS)), G.config.z_dim), PSI)
    check_shift_sign(G, ws[:8])
    every = resolve_units(G, "all")
    early = resolve_units(G, "shape")
    beta = 0.5 ** (2 / args.ema_half_life)  # batch 2 per step
    settings = {
        "all": (every, None),
        "late": (tuple(u for u in every if u not in early), None),
        "early": (early, None),
        "all+ema": (every, beta),
    }
    rows = {"unadapted": measure(G, ws)}
    emas0 = {n: layer.magnitude_ema.item() for n, layer in G.synthesis.layers()}
    pictures: dict[str, list[tuple[str, torch.Tensor]]] = {}
    eq_rows: list[tuple[str, torch.Tensor]] = []
    pic_ws = ws[: len(PICTURE_SEEDS)]
    base_pic = images(G, pic_ws)
    base_images = images(G, ws)
    for source, target in DIRECTIONS:
        p0 = target_probability(clip, base_images, source, target)
        print(f"unadapted: tiny CLIP P({target!r} vs {source!r}) = {p0:.3f}", flush=True)
        pictures[target] = [("unadapted", base_pic), ("hi-pass x4", high_pass_view(base_pic))]
        for name in RUNS[target]:
            units, ema_beta = settings[name]
            t0 = time.perf_counter()
            G2 = adapt_one(G, clip, source, target, units, args.steps, ema_beta)
            key = f"{source}->{target} {name}"
            rows[key] = measure(G2, ws)
            drift = max(abs(layer.magnitude_ema.item() / emas0[n] - 1) for n, layer in G2.synthesis.layers())
            rows[key]["ema_drift"] = drift
            rows[key]["p_target"] = target_probability(clip, images(G2, ws), source, target)
            print(f"{key}: {json.dumps({k: round(v, 4) for k, v in rows[key].items()})} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
            img = images(G2, pic_ws)
            pictures[target] += [(name, img)] + ([("hi-pass x4", high_pass_view(img))] if name != "early" else [])
            if source == "blue" and name in ("all", "late"):
                back = fourier_shift(translated(G2, pic_ws, 0.5, 0.0), -0.5, 0.0)
                eq_rows += [(f"{name}", img), ("|error| x64", error_view(back, img))]
    back = fourier_shift(translated(G, pic_ws, 0.5, 0.0), -0.5, 0.0)
    eq_rows = [("unadapted", base_pic), ("|error| x64", error_view(back, base_pic))] + eq_rows
    for target, picture_rows in pictures.items():
        save_image(labelled_grid(picture_rows, scale=SCALE), out / f"sg3_adapted_{target}.png", overwrite=True)
    save_image(labelled_grid(eq_rows, scale=SCALE), out / "sg3_equivariance.png", overwrite=True)

    print(f"\n{len(ws)} latents, psi {PSI}, {args.steps} steps per run, tiny CLIP, seed 0")
    print(f"{'generator':<28} {'hf':>7} {'nyquist':>8} {'fixed':>7} {'eq_t dB':>8} {'EMA drift':>9} {'P(tgt)':>7}")
    for key, r in rows.items():
        drift = f"{r['ema_drift']:.1%}" if "ema_drift" in r else "-"
        p = f"{r['p_target']:.3f}" if "p_target" in r else "-"
        print(
            f"{key:<28} {r['hf']:>7.4f} {r['nyquist']:>8.5f} {r['fixed']:>7.4f} {r['eq_t_psnr']:>8.2f} {drift:>9} {p:>7}"
        )
    print(f"pictures in {out} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
