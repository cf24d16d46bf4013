"""The StyleGAN2 operators in plain PyTorch: no compiled or JIT ops, so every device works.

The formulas follow the StyleGAN2 paper and produce the same numbers as the reference
implementations' own "reference" (non-CUDA) paths, up to float rounding:

- `upfirdn2d`: upsample by zero insertion, pad, convolve with a 2-D FIR filter, downsample.
- `bias_act`: the tail of a layer: demodulate, add noise and a per-channel bias, apply the
  activation, scale by a gain, clamp; in one pass, with a backward that saves little.
- `modulated_conv2d`: scale the input channels of a convolution by per-sample styles, optionally
  demodulate (normalise each output filter); fused (one grouped convolution over the batch, for
  inference) or not (one shared-weight convolution between two scalings, for training).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

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


_ACTIVATION_GAINS = {"linear": 1.0, "lrelu": LRELU_GAIN}  # each activation's default gain


def bias_act(
    x: torch.Tensor,  # [B, C, ...]
    b: torch.Tensor | None = None,  # [C]
    act: str = "linear",  # "linear" or "lrelu"
    gain: float | None = None,  # None: the activation's default (sqrt 2 for lrelu)
    clamp: float | None = None,  # clamp the result to [-clamp, clamp]; None or negative: no clamp
    inplace: bool = False,  # x is the caller's own temporary: the result may overwrite it
    demod: torch.Tensor | None = None,  # [B, C] per-sample channel scales (demodulation), applied first
    noise: torch.Tensor | None = None,  # broadcastable to [B, 1, ...], added times `noise_strength`
    noise_strength: torch.Tensor | None = None,  # [] scalar tensor
) -> torch.Tensor:
    """The tail of every StyleGAN layer in one pass over one tensor:
    clamp(act(x * demod + noise * noise_strength + b) * gain), computed in x's dtype.

    With gradients this is one autograd function that writes a single output (or `x` itself when
    `inplace` and x is not needed for the backward) and saves only what its backward reads: x and
    demod (for each other's gradients), noise and its strength (likewise) and the OUTPUT, which the
    next layer saves anyway and from which both the leaky ReLU's branch and the clamp's cut are read.
    Separate ops would keep the demodulated-activated and the unclamped copies alive besides. Without
    gradients the same code runs in place, outside autograd. `inplace=True` saved ~8% of a 256 px
    layer's forward and backward on the CPU over separate temporaries.
    """
    if act not in _ACTIVATION_GAINS:
        raise ValueError(f"unknown activation {act!r}; expected 'linear' or 'lrelu'")
    if noise is not None and noise_strength is None:
        raise ValueError("bias_act: noise needs its noise_strength (a scalar tensor)")
    g = _ACTIVATION_GAINS[act] if gain is None else gain
    clamp = clamp if clamp is not None and clamp >= 0 else None
    # The parameters are cast to x's dtype (autocast runs the layer in bf16/fp16); noise_strength
    # enters as it is, as it always has (a 0-dim tensor does not change the product's dtype).
    b, demod, noise = (None if t is None else t.to(x.dtype) for t in (b, demod, noise))
    inputs = (x, demod, noise, noise_strength, b)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
        return _BiasAct.apply(*inputs, act, g, clamp, inplace)
    return _bias_act_forward(*inputs, act, g, clamp, inplace, keep_activation=False)[0]


def _bias_act_forward(
    x, demod, noise, noise_strength, b, act: str, gain: float, clamp: float | None, inplace: bool, keep_activation: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """bias_act's arithmetic. Returns the output and the activation, which is the output itself
    (scaled and clamped in place) unless `keep_activation` asks for it to be kept apart."""
    per_channel = [1, -1] + [1] * (x.ndim - 2)
    if demod is not None:
        demod = demod.reshape(x.shape[0], x.shape[1], *[1] * (x.ndim - 2))
        y = x.mul_(demod) if inplace else x * demod
    else:
        y = x if inplace else x.clone()
    if noise is not None:
        y.add_(noise * noise_strength)
    if b is not None:
        y.add_(b.reshape(per_channel))
    if act == "lrelu":
        F.leaky_relu(y, LRELU_SLOPE, inplace=True)
    activation = y
    if gain != 1:
        y = y * gain if keep_activation else y.mul_(gain)
    if clamp is not None:
        y.clamp_(-clamp, clamp)
    return y, activation


@functools.cache
def _clamp_passes_at_bounds() -> bool:
    """Whether this torch's clamp gives a value exactly at a bound its gradient (older versions did)."""
    with torch.inference_mode(False), torch.enable_grad():
        x = torch.ones((), requires_grad=True)
        (g,) = torch.autograd.grad(x.clamp(-1.0, 1.0), x)
    return bool(g == 1)


class _BiasAct(torch.autograd.Function):
    """bias_act with gradients: one output, few saved tensors (see bias_act)."""

    @staticmethod
    def forward(ctx, x, demod, noise, noise_strength, b, act, gain, clamp, inplace):
        need_x, need_demod, need_noise, need_strength = ctx.needs_input_grad[:4]
        keep_x = demod is not None and need_demod
        # The backward reads the leaky ReLU's branch from the sign of the output: a gain >= 1 keeps it
        # (no non-zero value rounds to zero; where the clamp changes a value its gradient is zero);
        # a smaller gain needs the activation kept apart, and then x is not overwritten either.
        keep_activation = act == "lrelu" and gain < 1
        inplace = inplace and not keep_x and not keep_activation
        y, activation = _bias_act_forward(
            x, demod, noise, noise_strength, b, act, gain, clamp, inplace, keep_activation
        )
        if y is x:
            ctx.mark_dirty(x)
        ctx.gain, ctx.clamp = gain, clamp
        ctx.noise_shape = None if noise is None else noise.shape
        ctx.strength_dtype = None if noise_strength is None else noise_strength.dtype
        ctx.save_for_backward(
            x if keep_x else None,
            demod if need_x else None,
            noise if need_strength else None,
            noise_strength if need_noise else None,
            activation if act == "lrelu" else None,
            y if clamp is not None else None,
        )
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, demod, noise, noise_strength, activation, y = ctx.saved_tensors
        need_x, need_demod, need_noise, need_strength, need_b = ctx.needs_input_grad[:5]
        # gp: the gradient at x * demod + noise * strength + b. A new tensor (autograd may share
        # `grad`), which becomes x's gradient in place once the reductions have read it.
        gp = grad * ctx.gain
        if y is not None:
            # Where torch's own clamp passes the gradient, read from the clamped output: strictly
            # inside (-clamp, clamp) in recent torch, the closed interval in older ones; never at NaN.
            lo, hi = (torch.ge, torch.le) if _clamp_passes_at_bounds() else (torch.gt, torch.lt)
            gp.masked_fill_(lo(y, -ctx.clamp).logical_and_(hi(y, ctx.clamp)).logical_not_(), 0)
        if activation is not None:  # torch's own leaky ReLU backward (the slope at exactly 0, as autograd)
            torch.ops.aten.leaky_relu_backward.grad_input(gp, activation, LRELU_SLOPE, True, grad_input=gp)
        g_x = g_demod = g_noise = g_strength = g_b = None
        if need_demod:  # sum over the pixels of gp * x, as a batched dot product: no full-size temporary
            n = x.shape[0] * x.shape[1]
            with torch.autocast(x.device.type, enabled=False):  # in x's dtype even if backward runs in autocast
                g_demod = torch.bmm(gp.reshape(n, 1, -1), x.reshape(n, -1, 1)).reshape(x.shape[:2])
        if need_b:
            g_b = gp.sum([0, *range(2, gp.ndim)])
        if need_noise or need_strength:
            g_sum = gp.sum_to_size(ctx.noise_shape)  # [B or 1, 1, ...]
            if need_noise:
                g_noise = g_sum * noise_strength
            if need_strength:
                g_strength = (g_sum * noise).sum().to(ctx.strength_dtype)
        if need_x:
            g_x = gp if demod is None else gp.mul_(demod.reshape(*demod.shape, *[1] * (gp.ndim - 2)))
        return g_x, g_demod, g_noise, g_strength, g_b, None, None, None, None


def modulated_conv2d(
    x: torch.Tensor,  # [B, in, H, W]
    weight: torch.Tensor,  # [out, in, k, k], already multiplied by its equalised-lr gain
    styles: torch.Tensor,  # [B, in]
    demodulate: bool = True,
    up: int = 1,
    resample_filter: torch.Tensor | None = None,
    fused: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:  # ([B, out, H * up, W * up], [B, out] or None)
    """Modulated (and demodulated) convolution: returns the output and the demodulation coefficients
    still to apply to its channels (`bias_act(..., demod=d)`, with the layer's bias and activation
    in the same pass), or None when there are none (`fused`, or `demodulate=False`).

    `fused=True` folds styles and demodulation into per-sample weights and runs one grouped
    convolution over the batch (cheapest without gradients). `fused=False` scales the input by the
    styles, runs one ordinary convolution with the shared weight and leaves the demodulation to the
    output's channels: the same numbers up to float reassociation, and a cheaper backward (no
    per-sample weight tensor, no grouped-convolution weight gradient), as NVIDIA's training does.

    With `up=2` the convolution is transposed with stride 2 and then low-pass filtered, which is
    the StyleGAN2 upsampling convolution (3x3 kernel, [1,3,3,1] filter).
    """
    batch, in_ch, height, width = x.shape
    out_ch, _, kh, kw = weight.shape
    if up not in (1, 2) or (up == 2 and resample_filter is None):
        raise ValueError("modulated_conv2d supports up=1, or up=2 with a resample filter")
    d = None
    if fused:
        w = weight[None] * styles[:, None, :, None, None]  # [B, out, in, k, k]
        if demodulate:
            w = w * torch.rsqrt(w.square().sum(dim=[2, 3, 4]) + DEMOD_EPS)[:, :, None, None, None]
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
    if up == 1:
        return x, d
    # The transposed conv grows the image to 2H + k - 2; the filter's padding trims it back to 2H.
    # (Demodulation is a per-channel scale, so it commutes with this per-channel filter.)
    fw = resample_filter.shape[-1]
    p = (fw - up) - (kw - 1)
    p0 = (p + 1) // 2 + up - 1
    p1 = p // 2 + 1
    return upfirdn2d(x, resample_filter, padding=(p0, p1, p0, p1), gain=up * up), d


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale each vector to unit root-mean-square (StyleGAN's PixelNorm of z)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()
