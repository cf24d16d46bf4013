"""`python -m nada invert`: photos -> W+ latents (+ reconstructions), with an encoder, the projector, or both.

    python -m nada invert face.png --encoder e4e_ffhq_encode.pt --out latents/       # encoder only
    python -m nada invert face.png --generator ffhq.pt --steps 500 --out latents/    # projector only
    python -m nada invert *.png --encoder e4e_ffhq_encode.pt --steps 200 --out latents/   # encoder, then refine

For every image `<name>` it writes `<name>.pt` (the W+ tensor [1, num_ws, w_dim], as other StyleGAN
tools save projected latents; or `<name>.safetensors` with `--format safetensors`, key "ws", with
the settings in its metadata) and `<name>_reconstruction.png`. Existing files are never replaced: a
free name `<name>_00001...` is used. With an encoder and no `--generator`, the decoder stored in the
encoder file is the generator.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import time
from pathlib import Path

import torch

from ..errors import NadaError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
DEFAULT_STEPS = 500  # projector steps when there is no encoder to start from


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `invert` subcommand to an argparse subparsers object; its `run` is set as default."""
    p = subparsers.add_parser(
        "invert", help="photos -> W+ latents (encoder and/or projector)", description=__doc__.splitlines()[0]
    )
    p.add_argument("images", nargs="+", help="image files or folders of images")
    p.add_argument("--generator", help="generator file (default: the decoder inside --encoder)")
    p.add_argument("--encoder", help="pSp / e4e / ReStyle checkpoint (.pt) to start from")
    p.add_argument("--iters", type=int, default=None, help="ReStyle refinement iterations (default: the encoder's)")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"projector steps (default {DEFAULT_STEPS} without --encoder, 0 with it)",
    )
    p.add_argument("--space", choices=["w+", "w"], default="w+", help="projector latent space (default w+)")
    p.add_argument("--noise", action="store_true", help="also optimise the noise maps (kept only in the PNG)")
    p.add_argument(
        "--loss",
        choices=["auto", "lpips", "pixels"],
        default="auto",
        help="auto = lpips when --vgg16 is given, else pixels (+ CLIP with --clip)",
    )
    p.add_argument("--vgg16", help="torchvision's VGG16 weights (vgg16-397923af.pth) for the perceptual loss")
    p.add_argument("--lpips", help="the lpips package's vgg.pth (LPIPS calibration; needs --vgg16)")
    p.add_argument("--clip", help="open_clip architecture or model config JSON whose embedding joins the loss")
    p.add_argument("--clip-pretrained", help="open_clip pretrained tag or a local weights file for --clip")
    p.add_argument("--lr", type=float, default=0.1, help="projector peak learning rate (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="projector seed (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--format", choices=["pt", "safetensors"], default="pt", help="latent file format (default pt)")
    p.add_argument("--out", default="nada-invert", help="output folder (default ./nada-invert)")
    p.set_defaults(run=run)
    return p


def _image_files(items: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files += sorted(f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise NadaError(f"{item} is neither an image file nor a folder")
    if not files:
        raise NadaError(f"no images (png/jpg/webp/bmp) in {', '.join(items)}")
    return files


def read_image(path: Path) -> torch.Tensor:
    """An image file -> [1, 3, H, W] in [-1, 1]; other modes are converted to RGB (and logged)."""
    import numpy as np
    from PIL import Image

    try:
        img = Image.open(path)
        img.load()
    except (OSError, ValueError) as e:
        raise NadaError(f"cannot read {path} as an image ({e})") from None
    if img.mode != "RGB":
        log.warning("%s is %s; converted to RGB", path.name, img.mode)
        img = img.convert("RGB")
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32).copy())
    return (arr / 127.5 - 1).permute(2, 0, 1)[None]


def _save_latent(ws: torch.Tensor, out: Path, stem: str, fmt: str, metadata: dict) -> Path:
    from ..io import atomic_write_bytes, unique_path

    path = unique_path(out / f"{stem}.{fmt}")
    if fmt == "safetensors":
        from safetensors.torch import save

        data = save({"ws": ws.contiguous()}, metadata={"nada_inversion": json.dumps(metadata)})
    else:
        buf = io.BytesIO()
        torch.save(ws.clone(), buf)
        data = buf.getvalue()
    return atomic_write_bytes(path, data)


def run(args: argparse.Namespace) -> int:
    from ..devices import parse_device
    from ..images import image_grid, save_image
    from ..inversion.project import project, psnr
    from ..io import unique_path
    from ..stylegan2.formats import load_generator

    if not args.generator and not args.encoder:
        raise NadaError("give --generator (projector) or --encoder (its decoder is the generator), or both")
    if args.lpips and not args.vgg16:
        raise NadaError("--lpips calibrates VGG16 features: give --vgg16 too")
    steps = args.steps if args.steps is not None else (0 if args.encoder else DEFAULT_STEPS)
    files = _image_files(args.images)
    device = parse_device(args.device)
    G = load_generator(args.generator or args.encoder).to(device)
    encoder = None
    if args.encoder:
        from ..inversion.encoders import load_encoder
        from ..inversion.faces import prepare_face
        from ..inversion.inference import invert

        encoder = load_encoder(args.encoder, device=device)
    clip = None
    if args.clip:
        from ..clip import load_clip

        clip = load_clip(args.clip, args.clip_pretrained, device=device)
    weights = [w for w in (args.vgg16, args.lpips) if w]
    out = Path(args.out)
    for path in files:
        start = time.perf_counter()
        image = read_image(path)
        init = None
        if encoder is not None:
            faces = prepare_face(image, size=encoder.input_size).to(device)  # the encoder's input size
            init = invert(encoder, faces, n_iters=args.iters, generator=G).latents
        result = project(
            G,
            image.to(device),
            steps=steps,
            space=args.space,
            optimize_noise=args.noise,
            loss=args.loss,
            init=init,
            seed=args.seed,
            clip=clip,
            perceptual_weights=weights,
            lr=args.lr,
        )
        target = (
            torch.nn.functional.interpolate(image, size=result.images.shape[-2:], mode="area")
            if image.shape[-2:] != result.images.shape[-2:]
            else image
        )
        quality = psnr(result.images, target).item()
        meta = {
            "image": path.name,
            "generator": str(args.generator or args.encoder),
            "encoder": args.encoder,
            "steps": result.steps,
            "space": args.space,
            "loss": result.loss_name,
            "psnr_db": round(quality, 2),
        }
        latent_path = _save_latent(result.latents, out, path.stem, args.format, meta)
        png = save_image(image_grid(result.images), unique_path(out / f"{path.stem}_reconstruction.png"))
        how = " + ".join(
            (["encoder"] if encoder is not None else [])
            + ([f"{result.steps} projector steps ({result.loss_name})"] if steps else [])
        )
        print(
            f"{path.name}: {how}; PSNR {quality:.2f} dB; {latent_path} and {png.name} "
            f"({time.perf_counter() - start:.1f} s)"
        )
    return 0
