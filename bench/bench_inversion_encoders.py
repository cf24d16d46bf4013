"""Seconds per encoder call and per inversion step, with the published encoders' shapes.

    python bench/bench_inversion_encoders.py                      # CPU, batch 1, 1 warm-up + 2 timed calls
    python bench/bench_inversion_encoders.py --device cuda --repeats 10 --batch 4

Setup: the encoders at their real sizes (IR-SE50 or ResNet34 backbone, 18 style heads for a 1024 px
decoder, 14 for 256 px) and config-f generators with random weights; speed does not depend on the
weights. "encoder" is one forward pass of the encoder on 256x256 input; "step" is what `nada.invert`
does per step: encoder + rendering at the decoder's resolution (+ the 256 px pooling for ReStyle).
Medians after one warm-up. Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nada.inversion.encoders import ENCODER_TYPES, Encoder, EncoderSpec  # noqa: E402
from nada.inversion.inference import invert  # noqa: E402
from nada.stylegan2 import Generator, GeneratorConfig  # noqa: E402

CASES = [  # (label, encoder_type, backbone) as published
    ("pSp (FPN, IR-SE50)", "GradualStyleEncoder", "ir_se50"),
    ("e4e (FPN, IR-SE50)", "Encoder4Editing", "ir_se50"),
    ("ReStyle-pSp (IR-SE50)", "BackboneEncoder", "ir_se50"),
    ("ReStyle-e4e (ResNet34)", "ResNetProgressiveBackboneEncoder", "resnet34"),
]


def _timed(fn, repeats: int, device: torch.device) -> float:
    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    once()
    return statistics.median(once() for _ in range(repeats))


def _case(G: Generator, spec: EncoderSpec, batch: int, repeats: int, device: torch.device) -> tuple[float, float]:
    enc = Encoder(spec, Path("bench.pt"), G.mapping.w_avg.expand(G.num_ws, 512).clone())
    enc = enc.eval().requires_grad_(False).to(device)
    x = torch.rand(batch, 3, 256, 256, device=device) * 2 - 1
    xin = torch.cat([x, x], 1) if spec.input_channels == 6 else x
    with torch.no_grad():
        t_enc = _timed(lambda: enc(xin), repeats, device)
    t_step = _timed(lambda: invert(enc, x, n_iters=1 if spec.iterative else None, generator=G), repeats, device)
    return t_enc, t_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--resolutions", default="256,1024", help="decoder resolutions")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, device {device}, batch {args.batch}, threads {torch.get_num_threads()}, "
        f"median of {args.repeats}"
    )
    print(f"{'encoder':26} {'decoder':>7} {'encoder s':>10} {'step s':>8}")
    for res in (int(r) for r in args.resolutions.split(",")):
        G = Generator(GeneratorConfig(img_resolution=res)).eval().requires_grad_(False).to(device)
        for label, encoder_type, backbone in CASES:
            kind, head = ENCODER_TYPES[encoder_type]
            channels = 6 if kind.startswith("restyle") else 3
            spec = EncoderSpec(
                kind=kind,
                encoder_type=encoder_type,
                backbone=backbone,
                head=head,
                input_channels=channels,
                num_ws=G.num_ws,
                w_dim=512,
                adds_latent_avg=True,
                decoder_resolution=res,
            )
            t_enc, t_step = _case(G, spec, args.batch, args.repeats, device)
            print(f"{label:26} {res:>5}px {t_enc:>10.3f} {t_step:>8.3f}", flush=True)


if __name__ == "__main__":
    main()
