"""The StyleGAN2 operators in plain PyTorch: no compiled or JIT ops, so every device works.

The formulas follow the StyleGAN2 paper and produce the same numbers as the reference
implementations' own "reference" (non-CUDA) paths, up to float rounding:

- `upfirdn2d`: upsample by zero insertion, pad, convolve with a 2-D FIR filter, downsample.
- `bias_act`: add a per-channel bias, apply the activation, scale by a gain, clamp.
- `modulated_conv2d`: scale the input channels of a convolution by per-sample styles, optionally
  demodulate (normalise each output filter); fused (one grouped convolution over the batch, for
  inference) or not (one shared-weight convolution between two scalings, for training).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
DEMOD_EPS = 1e-8


def make_filter(taps: Sequence[float] = (1, 3, 3, 1), device=None) -> torch.Tensor:
    """A separable 2-D low-pass filter normalised to sum 1: the outer product of `taps`."""
    k = torch.as_tensor(taps, dtype=torch.float32, device=device)
    k2 = k[:, None] * k[None, :]
    return k2 / k2.sum()


def upfirdn2d(
    x: torch.Tensor,  # [B, C, H, W]
    f: torch.Tensor,  # [fh, fw], or [taps] for a separable filter (applied along x, then y)
    up: int = 1,
    down: int = 1,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),  # x0, x1, y0, y1; negative values crop
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample (zero insertion), pad, FIR-filter (true convolution), downsample.

    `gain` scales the whole filter, so a separable filter gets sqrt(gain) in each of its two passes.
    """
    b, c, h, w = x.shape
    px0, px1, py0, py1 = padding
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]
    # conv2d is a correlation; flipping the filter makes it a convolution.
    k = (f * gain ** (f.ndim / 2)).flip(list(range(f.ndim))).to(x.dtype)
    if f.ndim == 2:
        x = F.conv2d(x, k[None, None].repeat(c, 1, 1, 1), groups=c)
    else:
        x = F.conv2d(x, k[None, None, None].repeat(c, 1, 1, 1), groups=c)  # along x
        x = F.conv2d(x, k[None, None, :, None].repeat(c, 1, 1, 1), groups=c)  # along y
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """Upsample by `up` with the FIR filter `f`, keeping the image centred."""
    fw = f.shape[-1]
    p0 = (fw + up - 1) // 2
    p1 = (fw - up) // 2
    return upfirdn2d(x, f, up=up, padding=(p0, p1, p0, p1), gain=up * up)


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    act: str = "linear",
    gain: float | None = None,
    clamp: float | None = None,
    inplace: bool = False,
) -> torch.Tensor:
    """x + b (per channel, dim 1), then the activation, then * gain, then clamp to [-clamp, clamp].

    `inplace=True` lets the bias and the activation overwrite `x` (the caller's own temporary, e.g. a
    convolution's output): the same numbers without two full-size temporaries, which on the CPU
    measured ~8% of a 256 px layer's forward and backward.
    """
    if b is not None:
        shape = [1, -1] + [1] * (x.ndim - 2)
        b = b.reshape(shape).to(x.dtype)
        x = x.add_(b) if inplace else x + b
    if act == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE, inplace=inplace)
        default_gain = LRELU_GAIN
    elif act == "linear":
        default_gain = 1.0
    else:
        raise ValueError(f"unknown activation {act!r}; expected 'linear' or 'lrelu'")
    g = default_gain if gain is None else gain
    if g != 1:
        x = x * g
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def modulated_conv2d(
    x: torch.Tensor,  # [B, in, H, W]
    weight: torch.Tensor,  # [out, in, k, k], already multiplied by its equalised-lr gain
    styles: torch.Tensor,  # [B, in]
    demodulate: bool = True,
    up: int = 1,
    resample_filter: torch.Tensor | None = None,
    fused: bool = True,
) -> torch.Tensor:
    """Modulated (and demodulated) convolution.

    `fused=True` folds styles and demodulation into per-sample weights and runs one grouped
    convolution over the batch (cheapest without gradients). `fused=False` scales the input by the
    styles, runs one ordinary convolution with the shared weight and scales the output by the
    demodulation coefficients: the same numbers up to float reassociation, and a cheaper backward
    (no per-sample weight tensor, no grouped-convolution weight gradient), as NVIDIA's training does.

    With `up=2` the convolution is transposed with stride 2 and then low-pass filtered, which is
    the StyleGAN2 upsampling convolution (3x3 kernel, [1,3,3,1] filter).
    """
    batch, in_ch, height, width = x.shape
    out_ch, _, kh, kw = weight.shape
    if up not in (1, 2) or (up == 2 and resample_filter is None):
        raise ValueError("modulated_conv2d supports up=1, or up=2 with a resample filter")
    if fused:
        w = weight[None] * styles[:, None, :, None, None]  # [B, out, in, k, k]
        if demodulate:
            d = torch.rsqrt(w.square().sum(dim=[2, 3, 4]) + DEMOD_EPS)  # [B, out]
            w = w * d[:, :, None, None, None]
        x = x.reshape(1, batch * in_ch, height, width)
        if up == 1:
            w = w.reshape(batch * out_ch, in_ch, kh, kw)
            x = F.conv2d(x, w.to(x.dtype), padding=kh // 2, groups=batch)
        else:
            w = w.transpose(1, 2).reshape(batch * in_ch, out_ch, kh, kw)
            x = F.conv_transpose2d(x, w.to(x.dtype), stride=2, padding=0, groups=batch)
        x = x.reshape(batch, out_ch, x.shape[2], x.shape[3])
    else:
        x = x * styles.to(x.dtype)[:, :, None, None]
        if up == 1:
            x = F.conv2d(x, weight.to(x.dtype), padding=kh // 2)
        else:
            x = F.conv_transpose2d(x, weight.transpose(0, 1).to(x.dtype), stride=2, padding=0)
        if demodulate:
            # sum over in, k, k of (weight * style)^2, without the per-sample weight: [B, out]
            d = torch.rsqrt(styles.square() @ weight.square().sum(dim=[2, 3]).T + DEMOD_EPS)
            x = x * d.to(x.dtype)[:, :, None, None]
    if up == 1:
        return x
    # The transposed conv grows the image to 2H + k - 2; the filter's padding trims it back to 2H.
    # (Demodulation is a per-channel scale, so it commutes with this per-channel filter.)
    fw = resample_filter.shape[-1]
    p = (fw - up) - (kw - 1)
    p0 = (p + 1) // 2 + up - 1
    p1 = p // 2 + 1
    return upfirdn2d(x, resample_filter, padding=(p0, p1, p0, p1), gain=up * up)


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale each vector to unit root-mean-square (StyleGAN's PixelNorm of z)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()
