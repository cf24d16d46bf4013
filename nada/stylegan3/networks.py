"""The StyleGAN3 generator (alias-free GAN, T and R variants) in plain PyTorch.

Module and tensor names follow NVIDIA's stylegan3 layout (`synthesis.input.freqs`,
`synthesis.L3_52_512.affine.weight`, `...magnitude_ema`, `...up_filter`), so reading a pickle is a
flattening of its state. The designed filters, the Fourier frequencies and phases, the magnitude
EMAs and the user transform are buffers: a loaded generator uses the file's values, never redesigns.

The interface is StyleGAN2's `nada.Generator` (it is a subclass): `mapping`, `synthesis`, `num_ws`,
`w_index_consumers()`, `with_tensors()`, `fingerprint()`, so sampling, blending, saving, adapters
and the adaptation work unchanged. StyleGAN3 has no noise inputs: `noise_mode` is accepted and every
mode gives the same image; `make_noise` returns no maps.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from ..stylegan2.networks import NOISE_MODES, FullyConnected
from ..stylegan2.networks import Generator as _StyleGAN2Generator
from .config import LayerSpec, StyleGAN3Config, input_spec, layer_specs
from .ops import filtered_lrelu, lowpass_filter, radial_lowpass_filter


def modulated_conv2d(
    x: torch.Tensor,  # [B, in, H, W]
    weight: torch.Tensor,  # [out, in, k, k], raw (demodulation makes its scale irrelevant)
    styles: torch.Tensor,  # [B, in]
    demodulate: bool,
    padding: int,
    input_gain: torch.Tensor,  # [] the magnitude EMA's 1/sqrt
) -> torch.Tensor:
    """StyleGAN3's modulated convolution: pre-normalised weight and styles, then StyleGAN2's
    modulation and demodulation, then the input gain, as one grouped convolution."""
    batch, in_ch = x.shape[:2]
    out_ch, _, kh, kw = weight.shape
    if demodulate:
        # Keeps fp16 in range on GPUs; the styles are normalised over the whole batch, as NVIDIA's code
        # does (demodulation cancels any per-sample scale, so only the 1e-8 epsilon sees it).
        weight = weight * weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean().rsqrt()
    w = weight[None] * styles[:, None, :, None, None]  # [B, out, in, k, k]
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()[:, :, None, None, None]
    w = w * input_gain.expand(batch, in_ch)[:, None, :, None, None]
    x = x.reshape(1, batch * in_ch, *x.shape[2:])
    x = F.conv2d(x, w.reshape(batch * out_ch, in_ch, kh, kw).to(x.dtype), padding=padding, groups=batch)
    return x.reshape(batch, out_ch, *x.shape[2:])


class SynthesisInput(nn.Module):
    """Fourier features: sinusoids of fixed random frequencies, rotated and translated by an affine of
    w[0] and by the user `transform`, then mixed by a learned channel matrix."""

    def __init__(self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float):
        super().__init__()
        self.channels, self.size = channels, size
        self.sampling_rate, self.bandwidth = float(sampling_rate), float(bandwidth)
        # Frequencies drawn uniformly from a disc of radius `bandwidth` (the paper's initialisation).
        freqs = torch.randn(channels, 2)
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        self.weight = nn.Parameter(torch.randn(channels, channels))
        self.affine = FullyConnected(w_dim, 4)
        with torch.no_grad():  # starts as the identity transform: rotation (1, 0), translation (0, 0)
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        # The user transform (image-space inverse: rotation/translation of the output), see set_transform.
        self.register_buffer("transform", torch.eye(3))
        self.register_buffer("freqs", freqs)  # [channels, 2] cycles per image unit
        self.register_buffer("phases", torch.rand(channels) - 0.5)  # [channels] in cycles

    def forward(self, w: torch.Tensor) -> torch.Tensor:  # [B, w_dim] -> [B, channels, size, size]
        batch = w.shape[0]
        t = self.affine(w)  # (r_c, r_s, t_x, t_y)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        m_r = torch.eye(3, device=w.device).unsqueeze(0).repeat(batch, 1, 1)
        m_r[:, 0, 0], m_r[:, 0, 1], m_r[:, 1, 0], m_r[:, 1, 1] = t[:, 0], -t[:, 1], t[:, 1], t[:, 0]
        m_t = torch.eye(3, device=w.device).unsqueeze(0).repeat(batch, 1, 1)
        m_t[:, 0, 2], m_t[:, 1, 2] = -t[:, 2], -t[:, 3]
        transforms = m_r @ m_t @ self.transform.unsqueeze(0)  # rotate, then translate, then the user's
        freqs, phases = self.freqs.unsqueeze(0), self.phases.unsqueeze(0)
        phases = phases + (freqs @ transforms[:, :2, 2:]).squeeze(2)
        freqs = freqs @ transforms[:, :2, :2]
        # Frequencies a user transform pushes beyond the band are faded out rather than aliased.
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        theta = torch.eye(2, 3, device=w.device)
        theta[0, 0] = theta[1, 1] = 0.5 * self.size / self.sampling_rate
        grids = F.affine_grid(theta.unsqueeze(0), [1, 1, self.size, self.size], align_corners=False)
        x = (grids.unsqueeze(3) @ freqs.permute(0, 2, 1).unsqueeze(1).unsqueeze(2)).squeeze(3)  # [B, H, W, C]
        x = torch.sin((x + phases.unsqueeze(1).unsqueeze(2)) * (np.pi * 2))
        x = x * amplitudes.unsqueeze(1).unsqueeze(2)
        x = x @ (self.weight / np.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)


class SynthesisLayer(nn.Module):
    """Modulated conv, then bias + filtered leaky ReLU between the layer's sampling rates."""

    def __init__(self, spec: LayerSpec, w_dim: int, filter_size: int, conv_clamp: float | None):
        super().__init__()
        self.spec = spec
        self.conv_clamp = conv_clamp
        k = spec.conv_kernel
        self.affine = FullyConnected(w_dim, spec.in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(spec.out_channels, spec.in_channels, k, k))
        self.bias = nn.Parameter(torch.zeros(spec.out_channels))
        # Mean square of the input seen in training; its 1/sqrt normalises the input (fixed at inference).
        self.register_buffer("magnitude_ema", torch.ones([]))
        up = lowpass_filter(spec.up_taps, spec.in_cutoff, spec.in_half_width * 2, spec.tmp_sampling_rate)
        design = radial_lowpass_filter if spec.down_radial else lowpass_filter
        down = design(spec.down_taps, spec.out_cutoff, spec.out_half_width * 2, spec.tmp_sampling_rate)
        self.register_buffer("up_filter", up)  # None (identity) is not a buffer entry, as in NVIDIA's files
        self.register_buffer("down_filter", down)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = self.spec
        styles = self.affine(w)
        if s.is_torgb:
            styles = styles * (1 / math.sqrt(s.in_channels * s.conv_kernel**2))
        x = modulated_conv2d(x, self.weight, styles, demodulate=not s.is_torgb, padding=s.conv_kernel - 1,
                             input_gain=self.magnitude_ema.rsqrt())  # fmt: skip
        return filtered_lrelu(x, self.up_filter, self.down_filter, self.bias.to(x.dtype), up=s.up_factor,
                              down=s.down_factor, padding=s.padding, gain=1.0 if s.is_torgb else math.sqrt(2),
                              slope=1.0 if s.is_torgb else 0.2, clamp=self.conv_clamp)  # fmt: skip


class SynthesisNetwork(nn.Module):
    """W+ -> image: w[0] drives the input's transform, w[1 + i] layer i, w[-1] ToRGB."""

    def __init__(self, cfg: StyleGAN3Config):
        super().__init__()
        self.cfg = cfg
        self.num_ws = cfg.num_ws
        self.img_resolution = cfg.img_resolution
        channels, size, sampling_rate, bandwidth = input_spec(cfg)
        self.input = SynthesisInput(cfg.w_dim, channels, size, sampling_rate, bandwidth)
        self.layer_names: list[str] = []
        for spec in layer_specs(cfg):
            setattr(self, spec.name, SynthesisLayer(spec, cfg.w_dim, cfg.filter_size, cfg.conv_clamp))
            self.layer_names.append(spec.name)
        self.gradient_checkpointing = False
        # None: the magnitude EMAs stay as they are (inference; NADA, like the official code, which
        # passes update_emas=False). A decay: in training mode each layer's EMA first moves toward the
        # mean square of its input, as NVIDIA's training does (beta = 0.5 ** (batch / 20000) there);
        # fitting a generator from scratch needs it.
        self.magnitude_ema_beta: float | None = None

    def layers(self) -> list[tuple[str, SynthesisLayer]]:
        return [(n, getattr(self, n)) for n in self.layer_names]

    def noise_shapes(self) -> list[tuple[int, int]]:
        return []  # StyleGAN3 has no noise inputs

    def make_noise(
        self, batch: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> list[torch.Tensor]:
        """No maps (StyleGAN3 has no noise); kept so callers treat both families alike."""
        return []

    def units(self) -> list[tuple[str, str, int]]:
        """(full name, kind, resolution) of every trainable unit in forward order, for `nada.layers`.

        Each layer gets the StyleGAN2 block resolution with the same frequency content: the power of
        two at or above twice its cutoff. The Fourier input plays the part of StyleGAN2's learned
        constant (kind `const`); the first layer at a resolution is a `conv0`, the others `conv1`,
        the last layer `torgb`. So the layer presets mean the same band of detail in both families.
        """
        out = [("synthesis.input", "const", 4)]
        seen: set[int] = set()
        for name, layer in self.layers():
            s = layer.spec
            res = max(4, 2 ** math.ceil(math.log2(2 * s.out_cutoff) - 1e-9))
            kind = "torgb" if s.is_torgb else "conv1" if res in seen else "conv0"
            seen.add(res)
            out.append((f"synthesis.{name}", kind, res))
        return out

    def w_index_consumers(self) -> dict[int, list[str]]:
        """Which modules (full names under the generator) read each W+ index."""
        out = {0: ["synthesis.input"]}
        for i, name in enumerate(self.layer_names):
            out[i + 1] = [f"synthesis.{name}"]
        return out

    def set_transform(self, angle_deg: float = 0.0, translate: tuple[float, float] = (0.0, 0.0)) -> None:
        """Rotate the output by `angle_deg` and shift it by `translate` (x, y in image widths), as
        NVIDIA's gen_images.py `--rotate/--translate` do: the inverse goes into `input.transform`."""
        a = math.radians(angle_deg)
        m = torch.tensor([[math.cos(a), math.sin(a), 0.0], [-math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
        m[0, 2], m[1, 2] = translate
        with torch.no_grad():
            self.input.transform.copy_(torch.linalg.inv(m).to(self.input.transform))

    def forward(
        self,
        ws: torch.Tensor,  # [B, num_ws, w_dim]
        noise_mode: str = "const",
        noise: list[torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:  # [B, img_channels, H, W], roughly in [-1, 1]
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.cfg.w_dim:
            raise ConfigError(f"ws must have shape [batch, {self.num_ws}, {self.cfg.w_dim}], got {list(ws.shape)}")
        if noise_mode not in NOISE_MODES:
            raise ConfigError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if noise:
            raise ConfigError(f"StyleGAN3 has no noise inputs; got {len(noise)} noise maps (pass none)")
        ws = ws.to(torch.float32).unbind(dim=1)
        x = self.input(ws[0])
        for (_, layer), w in zip(self.layers(), ws[1:]):
            if self.magnitude_ema_beta is not None and self.training:
                with torch.no_grad():
                    now = x.detach().float().square().mean()
                    layer.magnitude_ema.copy_(now.lerp(layer.magnitude_ema, self.magnitude_ema_beta))
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(layer, x, w, use_reentrant=False)
            else:
                x = layer(x, w)
        if self.cfg.output_scale != 1:
            x = x * self.cfg.output_scale
        return x.to(torch.float32)


class StyleGAN3Generator(_StyleGAN2Generator):
    """A StyleGAN3 generator: `G(z)` -> images in [-1, 1]; `G.mapping` and `G.synthesis` separately."""

    synthesis_class = SynthesisNetwork

    def __init__(self, config: StyleGAN3Config, metadata: dict[str, Any] | None = None):
        if not isinstance(config, StyleGAN3Config):
            raise ConfigError(f"StyleGAN3Generator needs a StyleGAN3Config, got {type(config).__name__}")
        super().__init__(config, metadata)

    def extra_repr(self) -> str:
        c = self.config
        return (f"variant={c.variant}, resolution={c.img_resolution}, z_dim={c.z_dim}, w_dim={c.w_dim}, "
                f"c_dim={c.c_dim}, num_layers={c.num_layers}, channel_base={c.channel_base}, "
                f"channel_max={c.channel_max}, conv_clamp={c.conv_clamp}")  # fmt: skip
