"""Images -> W+ with an encoder: one pass for pSp/e4e, ReStyle's iterative refinement otherwise.

    enc = nada.load_encoder("restyle_e4e_ffhq_encode.pt")
    result = nada.invert(enc, nada.inversion.prepare_face(photos), n_iters=5)
    result.latents   # [B, num_ws, w_dim] W+, render it with any generator of the same architecture
    result.images    # [B, 3, H, W] in [-1, 1]: the reconstruction by the generator used

The steps are the authors' inference code (e4e `scripts/inference.py`, ReStyle
`utils/inference_utils.py`): stored ("const") noise, codes offset by the average latent, and for
ReStyle each step feeds [image, previous reconstruction pooled to 256x256] and adds the predicted
residual to the previous W+; step 0 starts from the average latent and its image.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..cpu_memory import reuse_freed_memory
from ..errors import ConfigError, InversionError
from ..stylegan2 import Generator
from ..stylegan2.formats import load_generator
from .encoders import Encoder

log = logging.getLogger(__name__)

RESTYLE_DEFAULT_ITERS = 5  # the authors' n_iters_per_batch default


@dataclass(frozen=True)
class InversionResult:
    latents: torch.Tensor  # [B, num_ws, w_dim] float32 W+, on the CPU
    images: torch.Tensor  # [B, 3, H, W] float32 in [-1, 1] (unclamped), the generator's rendering, on the CPU
    n_iters: int  # refinement steps run (1 for pSp/e4e; fewer than asked if stopped early)


def check_images(encoder: Encoder, images: torch.Tensor) -> None:
    """Refuse what the encoder cannot take, with the fix: it needs [B, 3, 256, 256] in [-1, 1]."""
    size = encoder.input_size
    fix = f"prepare them with nada.inversion.prepare_face(images, size={size})"
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InversionError(f"images must be a tensor [batch, 3, {size}, {size}], got {shape}")
    if images.shape[0] == 0:
        raise InversionError("there are no images to invert (the batch is empty)")
    if images.shape[1] != 3:
        what = "grayscale" if images.shape[1] == 1 else f"{images.shape[1]}-channel"
        raise InversionError(
            f"the encoder takes RGB images, got {what} ones ({list(images.shape)}); {fix}, which "
            "turns grayscale into RGB"
        )
    if tuple(images.shape[-2:]) != (size, size):
        raise InversionError(
            f"the encoder takes {size}x{size} images, got {images.shape[-2]}x{images.shape[-1]}; "
            f"{fix} (it resizes aligned faces the way the authors' transforms do)"
        )
    if not images.is_floating_point() or not torch.isfinite(images).all():
        raise InversionError("images must be finite floating point values in [-1, 1]")


def check_generator(encoder: Encoder, G: Generator) -> None:
    """The generator must take the encoder's W+ and be the architecture its decoder has."""
    cfg, spec = G.config, encoder.spec
    if (cfg.num_ws, cfg.w_dim) != (spec.num_ws, spec.w_dim) or cfg.img_resolution != spec.decoder_resolution:
        raise InversionError(
            f"this generator ({cfg.img_resolution}px, W+ {cfg.num_ws} x {cfg.w_dim}) does not fit the encoder, "
            f"which was trained with a {spec.decoder_resolution}px generator (W+ {spec.num_ws} x {spec.w_dim}); use "
            f"the generator it was trained with (default: the decoder stored in {encoder.decoder_path.name}) or one "
            "adapted from it"
        )
    if cfg.img_channels != 3:
        raise InversionError(f"the generator makes {cfg.img_channels}-channel images; the encoders need RGB")


def _n_iters(encoder: Encoder, n_iters: int | None) -> int:
    if not encoder.spec.iterative:
        if n_iters not in (None, 1):
            raise ConfigError(
                f"a {encoder.kind} encoder makes its W+ in one pass, so n_iters must be 1 (got "
                f"{n_iters}); only ReStyle encoders refine iteratively"
            )
        return 1
    n = RESTYLE_DEFAULT_ITERS if n_iters is None else n_iters
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"n_iters must be a whole number >= 1, got {n_iters!r} (ReStyle's default is 5)")
    return n


def _pool(images: torch.Tensor, size: int) -> torch.Tensor:
    # The authors' `face_pool`: AdaptiveAvgPool2d((256, 256)) on the generator output.
    return F.adaptive_avg_pool2d(images, (size, size))


def invert(
    encoder: Encoder,
    images: torch.Tensor,  # [B, 3, 256, 256] in [-1, 1]
    *,
    n_iters: int | None = None,
    generator: Generator | None = None,
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> InversionResult:
    """W+ codes of `images` and their reconstruction; neither the encoder nor the generator changes.

    `generator` must be the one the encoder was trained with (default: the decoder stored in the
    encoder's file): ReStyle feeds its reconstructions back into the encoder. To see a photo in an
    adapted domain, render `result.latents` with the adapted generator. `n_iters`: pSp/e4e 1, ReStyle
    default 5. `callback(step, total, images)` runs after every step with that step's reconstruction
    ([B, 3, H, W] on the compute device); `should_stop()` is asked before every step after the first
    and ends the refinement early (the result says how many steps ran). Runs under no_grad, so it
    works inside and outside `torch.inference_mode()`. Compute runs on the encoder's device.
    """
    check_images(encoder, images)
    total = _n_iters(encoder, n_iters)
    device = encoder.device
    if generator is None:
        log.info("rendering with the decoder stored in %s", encoder.decoder_path.name)
        generator = load_generator(encoder.decoder_path, device=device)
    check_generator(encoder, generator)
    if generator.device != device:
        raise InversionError(
            f"the encoder is on {device} but the generator on {generator.device}; move one "
            "(module.to(device)) so both are on the same device"
        )
    spec, size = encoder.spec, encoder.input_size
    x = images.to(device=device, dtype=torch.float32)
    avg = encoder.latent_avg.to(device) if encoder.latent_avg is not None else None
    with torch.no_grad(), reuse_freed_memory(device):
        if not spec.iterative:
            codes = encoder(x)
            if spec.adds_latent_avg:
                codes = codes + avg
            out = generator.synthesis(codes, noise_mode="const")
            if callback is not None:
                callback(1, 1, out)
            return InversionResult(codes.float().cpu(), out.float().cpu(), 1)
        # ReStyle step 0 compares the photo with the average latent's image (rendered once, batch 1).
        feedback = _pool(generator.synthesis(avg.unsqueeze(0), noise_mode="const"), size)
        feedback = feedback.expand(x.shape[0], -1, -1, -1)
        codes, done = avg, 0
        for step in range(total):
            if step > 0 and should_stop is not None and should_stop():
                log.info("inversion stopped after %d of %d steps", step, total)
                break
            codes = encoder(torch.cat([x, feedback], dim=1)) + codes
            out = generator.synthesis(codes, noise_mode="const")
            done = step + 1
            if callback is not None:
                callback(done, total, out)
            feedback = _pool(out, size)
    return InversionResult(codes.float().cpu(), out.float().cpu(), done)
