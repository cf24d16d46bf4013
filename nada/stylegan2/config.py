"""The architecture of a StyleGAN2 generator, as data.

A `GeneratorConfig` is everything needed to build the network; the formats infer it from a
checkpoint's tensors and metadata. Channel counts are stored per resolution, so both channel
layouts in use (rosinality's `channel_multiplier`, NVIDIA's `channel_base`/`channel_max`) and any
custom table are one thing.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ..errors import ConfigError

ARCHITECTURES = ("skip", "resnet", "orig")
MIN_RESOLUTION = 4
MAX_RESOLUTION = 4096
MAX_CHANNELS = 4096
MAX_DIM = 4096


def channels_rosinality(resolution: int, channel_multiplier: int = 2) -> tuple[int, ...]:
    """rosinality/stylegan2-pytorch's channel table for blocks 4..resolution."""
    table = {
        4: 512,
        8: 512,
        16: 512,
        32: 512,
        64: 256 * channel_multiplier,
        128: 128 * channel_multiplier,
        256: 64 * channel_multiplier,
        512: 32 * channel_multiplier,
        1024: 16 * channel_multiplier,
    }
    if resolution not in table:
        raise ConfigError(f"rosinality's channel table covers 4..1024, not {resolution}")
    return tuple(table[4 * 2**i] for i in range(block_count(resolution)))


def channels_nvidia(resolution: int, channel_base: int = 32768, channel_max: int = 512) -> tuple[int, ...]:
    """NVIDIA StyleGAN2(-ADA)'s channel rule, min(channel_base // res, channel_max)."""
    return tuple(min(channel_base // (4 * 2**i), channel_max) for i in range(block_count(resolution)))


def block_count(resolution: int) -> int:
    """Number of synthesis blocks (4x4, 8x8, ..., resolution)."""
    return int(math.log2(resolution)) - 1


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    img_resolution: int = 256  # output side in pixels, a power of two
    channels: tuple[int, ...] = ()  # feature maps of the blocks at 4, 8, ..., img_resolution
    z_dim: int = 512  # input latent size
    w_dim: int = 512  # intermediate latent (style) size
    c_dim: int = 0  # class-label size for conditional models, 0 = unconditional
    img_channels: int = 3  # output colour channels
    mapping_layers: int = 8  # fully connected layers in the mapping network
    mapping_lr_mul: float = 0.01  # learning-rate multiplier of the mapping layers (scales the weights)
    mapping_layer_features: int | None = None  # hidden width of the mapping network, None = w_dim
    mapping_embed_features: int | None = None  # width of the class embedding, None = w_dim
    architecture: str = "skip"  # output architecture: skip (RGB skip connections), resnet, orig
    conv_clamp: float | None = None  # clamp of conv outputs (NVIDIA's 256), None = no clamp
    resample_filter: tuple[float, ...] = (1.0, 3.0, 3.0, 1.0)  # low-pass FIR taps for up-sampling

    def __post_init__(self) -> None:
        r = self.img_resolution
        if not isinstance(r, int) or r < MIN_RESOLUTION or r > MAX_RESOLUTION or r & (r - 1):
            raise ConfigError(f"img_resolution must be a power of two in {MIN_RESOLUTION}..{MAX_RESOLUTION}, got {r!r}")
        if not self.channels:
            object.__setattr__(self, "channels", channels_rosinality(self.img_resolution))
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "resample_filter", tuple(float(t) for t in self.resample_filter))
        self.validate()

    def validate(self) -> None:
        r = self.img_resolution
        if len(self.channels) != block_count(r):
            raise ConfigError(f"channels must list {block_count(r)} values (blocks 4..{r}), got {len(self.channels)}")
        if any(c < 1 or c > MAX_CHANNELS for c in self.channels):
            raise ConfigError(f"channel counts must be in 1..{MAX_CHANNELS}, got {self.channels}")
        for name in ("z_dim", "w_dim", "img_channels", "mapping_layers"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1 or v > MAX_DIM:
                raise ConfigError(f"{name} must be an integer in 1..{MAX_DIM}, got {v!r}")
        if not isinstance(self.c_dim, int) or self.c_dim < 0 or self.c_dim > MAX_DIM * 16:
            raise ConfigError(f"c_dim must be a non-negative integer, got {self.c_dim!r}")
        for name in ("mapping_layer_features", "mapping_embed_features"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1 or v > MAX_DIM):
                raise ConfigError(f"{name} must be None or an integer in 1..{MAX_DIM}, got {v!r}")
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.conv_clamp is not None and not (self.conv_clamp > 0):
            raise ConfigError(f"conv_clamp must be None or positive, got {self.conv_clamp!r}")
        if not (self.mapping_lr_mul > 0):
            raise ConfigError(f"mapping_lr_mul must be positive, got {self.mapping_lr_mul!r}")
        if len(self.resample_filter) < 2 or len(self.resample_filter) % 2:
            raise ConfigError(f"resample_filter must have an even number of taps, got {self.resample_filter}")

    @property
    def resolutions(self) -> tuple[int, ...]:
        return tuple(4 * 2**i for i in range(block_count(self.img_resolution)))

    @property
    def num_ws(self) -> int:
        """Number of W+ entries: one per conv layer plus one for the final ToRGB."""
        return 2 * block_count(self.img_resolution)

    @property
    def hidden_features(self) -> int:
        return self.mapping_layer_features or self.w_dim

    @property
    def embed_features(self) -> int:
        return self.mapping_embed_features or self.w_dim

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        d["resample_filter"] = list(self.resample_filter)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GeneratorConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"unknown generator config keys {unknown}; the file may come from a newer comfyui-nada, update it"
            )
        kwargs = dict(d)
        if "channels" in kwargs:
            kwargs["channels"] = tuple(kwargs["channels"])
        if "resample_filter" in kwargs:
            kwargs["resample_filter"] = tuple(kwargs["resample_filter"])
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise ConfigError(f"invalid generator config: {e}") from e
