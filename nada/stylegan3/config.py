"""The architecture of a StyleGAN3 (alias-free) generator, as data, and the per-layer schedule it implies.

A StyleGAN3 synthesis network is a Fourier-feature input followed by `num_layers` modulated layers
and a ToRGB layer. Each layer is described by its cutoff frequency, stopband, sampling rate and
size, which follow geometric progressions from the first layer to the output (paper, section 3.2 and
appendix F); the last `num_critical` layers are critically sampled (cutoff = sampling rate / 2).
`layer_specs(cfg)` computes that schedule with the same float64 arithmetic as NVIDIA's code, so the
layer sizes, channel counts and paddings agree exactly with the pickles it wrote.

The two published variants differ only in three settings:

| variant       | conv_kernel | use_radial_filters | channel_base / channel_max |
|---------------|-------------|--------------------|----------------------------|
| `stylegan3-t` | 3           | False              | 32768 / 512                |
| `stylegan3-r` | 1           | True               | 65536 / 1024 (doubled)     |
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..errors import ConfigError

FAMILY = "stylegan3"
MAX_DIM = 4096
MAX_TAPS = 256


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One synthesis layer (index 0..num_layers; the last is the ToRGB layer)."""

    name: str  # NVIDIA's module name, L{idx}_{out_size}_{out_channels}
    is_torgb: bool
    is_critically_sampled: bool
    in_channels: int
    out_channels: int
    in_size: int  # square feature maps, margin included
    out_size: int
    in_sampling_rate: int
    out_sampling_rate: int
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float
    conv_kernel: int  # 1 for ToRGB
    up_factor: int
    down_factor: int
    up_taps: int  # 1 = no filter
    down_taps: int
    down_radial: bool
    tmp_sampling_rate: int
    padding: tuple[int, int, int, int]  # x0, x1, y0, y1 of the upsampled signal


@dataclasses.dataclass(frozen=True)
class StyleGAN3Config:
    img_resolution: int = 256  # output side in pixels, a power of two
    z_dim: int = 512  # input latent size
    w_dim: int = 512  # intermediate latent (style) size
    c_dim: int = 0  # class-label size for conditional models, 0 = unconditional
    img_channels: int = 3  # output colour channels
    mapping_layers: int = 2  # fully connected layers in the mapping network (StyleGAN3 uses 2)
    mapping_lr_mul: float = 0.01  # learning-rate multiplier of the mapping layers
    channel_base: int = 32768  # channels = min(channel_base / 2 / cutoff, channel_max)
    channel_max: int = 512
    num_layers: int = 14  # synthesis layers, excluding the Fourier input and ToRGB
    num_critical: int = 2  # critically sampled layers at the end
    first_cutoff: float = 2.0  # f_{c,0}
    first_stopband: float = 2**2.1  # f_{t,0}
    last_stopband_rel: float = 2**0.3  # f_{t,N} / f_{c,N}
    margin_size: int = 10  # extra pixels around the image in the early layers
    output_scale: float = 0.25  # the image is the ToRGB output times this
    conv_kernel: int = 3  # 3 for StyleGAN3-T, 1 for StyleGAN3-R
    filter_size: int = 6  # low-pass filter taps relative to the lower sampling rate
    lrelu_upsampling: int = 2  # oversampling of the leaky ReLU
    use_radial_filters: bool = False  # StyleGAN3-R: radially symmetric down-sampling filters
    conv_clamp: float | None = 256.0  # clamp of layer outputs, None = no clamp
    family: str = FAMILY  # tells the formats which generator this config builds

    def __post_init__(self) -> None:
        r = self.img_resolution
        if not isinstance(r, int) or r < 8 or r > 4096 or r & (r - 1):
            raise ConfigError(f"img_resolution must be a power of two in 8..4096, got {r!r}")
        for name in ("z_dim", "w_dim", "img_channels", "mapping_layers", "channel_base", "channel_max"):
            v = getattr(self, name)
            if (
                not isinstance(v, int)
                or isinstance(v, bool)
                or v < 1
                or v > (1 << 20 if "channel" in name else MAX_DIM)
            ):
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(self.c_dim, int) or self.c_dim < 0 or self.c_dim > MAX_DIM * 16:
            raise ConfigError(f"c_dim must be a non-negative integer, got {self.c_dim!r}")
        if not isinstance(self.num_layers, int) or not 1 <= self.num_layers <= 64:
            raise ConfigError(f"num_layers must be in 1..64, got {self.num_layers!r}")
        if not isinstance(self.num_critical, int) or not 0 <= self.num_critical < self.num_layers:
            raise ConfigError(f"num_critical must be in 0..num_layers-1, got {self.num_critical!r}")
        if self.conv_kernel not in (1, 3, 5):
            raise ConfigError(f"conv_kernel must be 1, 3 or 5, got {self.conv_kernel!r}")
        if not isinstance(self.filter_size, int) or not 1 <= self.filter_size <= 64:
            raise ConfigError(f"filter_size must be in 1..64, got {self.filter_size!r}")
        if self.lrelu_upsampling not in (1, 2, 4):
            raise ConfigError(f"lrelu_upsampling must be 1, 2 or 4, got {self.lrelu_upsampling!r}")
        if not isinstance(self.margin_size, int) or not 0 <= self.margin_size <= 256:
            raise ConfigError(f"margin_size must be in 0..256, got {self.margin_size!r}")
        for name in ("first_cutoff", "first_stopband", "last_stopband_rel", "output_scale", "mapping_lr_mul"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0 < v < 1e6:
                raise ConfigError(f"{name} must be a positive number, got {v!r}")
        if self.conv_clamp is not None and not (self.conv_clamp > 0):
            raise ConfigError(f"conv_clamp must be None or positive, got {self.conv_clamp!r}")
        if self.family != FAMILY:
            raise ConfigError(f"family must be {FAMILY!r}, got {self.family!r}")
        layer_specs(self)  # the schedule must be realisable (integer up/down factors)

    @property
    def variant(self) -> str:
        return "stylegan3-r" if self.use_radial_filters else "stylegan3-t"

    @property
    def num_ws(self) -> int:
        """W+ entries: one for the input's transform, one per layer, one for ToRGB."""
        return self.num_layers + 2

    # What the StyleGAN2 mapping network reads (StyleGAN3's mapping is the same network).
    @property
    def hidden_features(self) -> int:
        return self.w_dim

    @property
    def embed_features(self) -> int:
        return self.w_dim

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StyleGAN3Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown StyleGAN3 config keys {unknown}; the file may come from a newer comfyui-nada")
        try:
            return cls(**d)
        except TypeError as e:
            raise ConfigError(f"invalid StyleGAN3 config: {e}") from e


def layer_specs(cfg: StyleGAN3Config) -> tuple[LayerSpec, ...]:
    """The layer schedule (paper appendix F), in float64 like NVIDIA's code so every size is identical."""
    n, res = cfg.num_layers, cfg.img_resolution
    last_cutoff = res / 2
    last_stopband = last_cutoff * cfg.last_stopband_rel
    exponents = np.minimum(np.arange(n + 1) / max(n - cfg.num_critical, 1), 1)
    cutoffs = cfg.first_cutoff * (last_cutoff / cfg.first_cutoff) ** exponents
    stopbands = cfg.first_stopband * (last_stopband / cfg.first_stopband) ** exponents
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, res))))
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + cfg.margin_size * 2
    sizes[-2:] = res
    channels = np.rint(np.minimum((cfg.channel_base / 2) / cutoffs, cfg.channel_max))
    channels[-1] = cfg.img_channels
    specs = []
    for idx in range(n + 1):
        prev = max(idx - 1, 0)
        is_torgb = idx == n
        critical = idx >= n - cfg.num_critical
        in_sr, out_sr = int(sampling_rates[prev]), int(sampling_rates[idx])
        if min(in_sr, out_sr) < 1:
            raise ConfigError(
                f"the StyleGAN3 schedule gives layer {idx} a sampling rate below 1; check the "
                "cutoff and stopband settings"
            )
        kernel = 1 if is_torgb else cfg.conv_kernel
        tmp_sr = max(in_sr, out_sr) * (1 if is_torgb else cfg.lrelu_upsampling)
        up, down = round(tmp_sr / in_sr), round(tmp_sr / out_sr)
        if in_sr * up != tmp_sr or out_sr * down != tmp_sr or int(channels[idx]) < 1:
            raise ConfigError(
                f"the StyleGAN3 schedule gives layer {idx} a non-integer resampling factor or "
                "no channels; check img_resolution, num_layers and the cutoff settings"
            )
        up_taps = cfg.filter_size * up if up > 1 and not is_torgb else 1
        down_taps = cfg.filter_size * down if down > 1 and not is_torgb else 1
        if max(up_taps, down_taps) > MAX_TAPS:  # NVIDIA's models use 12 and 24
            raise ConfigError(
                f"the StyleGAN3 schedule gives layer {idx} filters of {max(up_taps, down_taps)} "
                f"taps (more than {MAX_TAPS}); check filter_size and the cutoff settings"
            )
        in_size, out_size = int(sizes[prev]), int(sizes[idx])
        # Output size before down-sampling, minus the up-sampled input, plus what the filters consume;
        # split so that samples sit where the symmetric interpretation puts them (paper, appendix C.3).
        pad_total = (out_size - 1) * down + 1 - (in_size + kernel - 1) * up + up_taps + down_taps - 2
        pad_lo = (pad_total + up) // 2
        pad_hi = pad_total - pad_lo
        specs.append(LayerSpec(
            name=f"L{idx}_{out_size}_{int(channels[idx])}", is_torgb=is_torgb, is_critically_sampled=critical,
            in_channels=int(channels[prev]), out_channels=int(channels[idx]), in_size=in_size, out_size=out_size,
            in_sampling_rate=in_sr, out_sampling_rate=out_sr, in_cutoff=float(cutoffs[prev]),
            out_cutoff=float(cutoffs[idx]), in_half_width=float(half_widths[prev]),
            out_half_width=float(half_widths[idx]), conv_kernel=kernel, up_factor=up, down_factor=down,
            up_taps=up_taps, down_taps=down_taps, down_radial=cfg.use_radial_filters and not critical,
            tmp_sampling_rate=tmp_sr, padding=(pad_lo, pad_hi, pad_lo, pad_hi),
        ))  # fmt: skip
    return tuple(specs)


def input_spec(cfg: StyleGAN3Config) -> tuple[int, int, int, float]:
    """(channels, size, sampling rate, bandwidth) of the Fourier-feature input."""
    first = layer_specs(cfg)[0]
    return first.in_channels, first.in_size, first.in_sampling_rate, first.in_cutoff
