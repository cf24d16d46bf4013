"""Preparing photos for the encoders: what their authors' transforms do to an already aligned face.

The FFHQ encoders were trained on faces aligned the FFHQ way (eyes and mouth at fixed places of a
square crop, from 68 dlib landmarks) and read them through `Resize((256, 256))`, `ToTensor()`,
`Normalize(0.5, 0.5)`: a bilinear resize (antialiased when shrinking, as PIL does) to 256x256 and
values in [-1, 1]. `prepare_face` does exactly that on tensors. It does not align: a face that is
not aligned is inverted badly, and no warning can detect that. Align first (docs/inversion.md names
ComfyUI packs that do it from landmarks); here a crop that is not square, or smaller than the
encoder's input, gets a warning, since neither comes out of FFHQ alignment.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from ..errors import InversionError

log = logging.getLogger(__name__)

ASPECT_TOLERANCE = 0.02  # aligned crops are square; a few pixels off is a resize rounding, not a problem


def prepare_face(images: torch.Tensor, size: int = 256) -> torch.Tensor:
    """[B, C, H, W] in [-1, 1] (C = 1 or 3) -> [B, 3, size, size] float32 in [-1, 1], as the encoders
    expect an aligned face. A non-square input is centre-cropped to a square first (with a warning);
    grayscale is repeated to RGB. Returns a new tensor; the input is not changed."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InversionError(f"prepare_face takes images [batch, channels, height, width] in [-1, 1], got {shape}")
    b, c, h, w = images.shape
    if b == 0:
        raise InversionError("there are no images to prepare (the batch is empty)")
    if c not in (1, 3):
        raise InversionError(
            f"prepare_face takes RGB or grayscale images, got {c} channels (drop the alpha channel "
            "or convert the image to RGB)"
        )
    if size < 1 or h < 1 or w < 1:
        raise InversionError(f"cannot resize a {h}x{w} image to {size}x{size}")
    x = images.detach().to(torch.float32)
    if not torch.isfinite(x).all():
        raise InversionError("the images contain NaN or Inf values")
    if abs(h / w - 1.0) > ASPECT_TOLERANCE:
        log.warning(
            "the image is %dx%d, not square: FFHQ-aligned faces are square crops, so it is centre-cropped "
            "to a square; align the face first (see docs/inversion.md) for a faithful inversion",
            h,
            w,
        )
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        x = x[:, :, top : top + side, left : left + side]
        h = w = side
    if min(h, w) < size:
        log.warning(
            "the image is %dx%d, smaller than the encoder's %dx%d input: it is enlarged and details the "
            "encoder relies on are missing",
            h,
            w,
            size,
            size,
        )
    if c == 1:
        x = x.expand(-1, 3, -1, -1)
    if (h, w) != (size, size):
        # Bilinear with antialiasing is the filter of PIL's BILINEAR resize, which the authors'
        # transforms.Resize applies to their PIL images.
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.contiguous()
