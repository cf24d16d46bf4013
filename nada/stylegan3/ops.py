"""StyleGAN3's operators in plain PyTorch and numpy: filter design and the filtered leaky ReLU.

- `lowpass_filter`: a windowed-sinc FIR low-pass filter with a Kaiser window whose shape comes from
  the transition width (the design scipy.signal.firwin makes with `width=`; scipy is not needed).
- `radial_lowpass_filter`: StyleGAN3-R's radially symmetric 2-D filter, a jinc (J1(2 pi f r) / (pi r))
  under a separable Kaiser window.
- `filtered_lrelu`: bias, up-sample with an FIR filter, leaky ReLU times gain, clamp, down-sample with
  an FIR filter: NVIDIA's fused CUDA op computed step by step (as its own reference path does).

Pickles store the designed filters as buffers, so loading one never designs a filter; the design is
used when a generator is built from a config (tests, fitting).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..stylegan2.ops import upfirdn2d


def kaiser_beta(atten_db: float) -> float:
    """Kaiser's empirical window parameter for a stopband attenuation in dB."""
    if atten_db > 50:
        return 0.1102 * (atten_db - 8.7)
    if atten_db > 21:
        return 0.5842 * (atten_db - 21) ** 0.4 + 0.07886 * (atten_db - 21)
    return 0.0


def kaiser_atten(numtaps: int, width: float) -> float:
    """Attenuation (dB) a Kaiser-windowed filter of `numtaps` reaches for a transition `width`
    given as a fraction of the Nyquist frequency."""
    return 2.285 * (numtaps - 1) * math.pi * width + 7.95


def lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float) -> torch.Tensor | None:
    """Separable Kaiser-windowed sinc low-pass filter [numtaps], unit DC gain; None for 1 tap (identity)."""
    if numtaps < 1:
        raise ValueError(f"numtaps must be at least 1, got {numtaps}")
    if numtaps == 1:
        return None
    nyq = fs / 2
    beta = kaiser_beta(kaiser_atten(numtaps, width / nyq))
    m = np.arange(numtaps) - (numtaps - 1) / 2
    c = cutoff / nyq
    h = c * np.sinc(c * m) * np.kaiser(numtaps, beta)
    return torch.as_tensor(h / h.sum(), dtype=torch.float32)


def radial_lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float) -> torch.Tensor | None:
    """Radially symmetric jinc low-pass filter [numtaps, numtaps] under a Kaiser window, sum 1."""
    if numtaps == 1:
        return None
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    # on the CPU explicitly: generators are also built under torch.device("meta") before loading
    r = torch.as_tensor(np.hypot(*np.meshgrid(x, x)), dtype=torch.float64, device="cpu")
    a = 2 * cutoff * math.pi
    # J1(a r) / (pi r) tends to a / (2 pi) at r = 0 (only reached by odd tap counts)
    f = torch.where(r > 0, torch.special.bessel_j1(a * r) / (math.pi * r.clamp_min(1e-300)), a / (2 * math.pi))
    beta = kaiser_beta(kaiser_atten(numtaps, width / (fs / 2)))
    w = np.kaiser(numtaps, beta)
    f = f.numpy() * np.outer(w, w)
    return torch.as_tensor(f / f.sum(), dtype=torch.float32)


def filtered_lrelu(
    x: torch.Tensor,  # [B, C, H, W]
    fu: torch.Tensor | None,  # up-sampling filter [taps] or [taps, taps], None = identity
    fd: torch.Tensor | None,  # down-sampling filter
    b: torch.Tensor,  # bias [C]
    up: int = 1,
    down: int = 1,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),  # x0, x1, y0, y1, of the up-sampled signal
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: float | None = None,
) -> torch.Tensor:
    """x + b, up-sample by `up` with fu (gain up**2), leaky ReLU, * gain, clamp, down-sample with fd.

    The non-linearity runs at the higher rate so that the harmonics it creates are filtered out
    before down-sampling: the alias-free part of StyleGAN3.
    """
    one = x.new_ones([1, 1], dtype=torch.float32)
    x = x + b.reshape(1, -1, 1, 1).to(x.dtype)
    x = upfirdn2d(x, one if fu is None else fu.to(x.device), up=up, padding=padding, gain=up**2)
    x = F.leaky_relu(x, slope)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return upfirdn2d(x, one if fd is None else fd.to(x.device), down=down)
