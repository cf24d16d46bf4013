"""The StyleGAN2 generator: one implementation for every checkpoint format.

Parameter names follow NVIDIA's StyleGAN2-ADA layout (`mapping.fc0.weight`,
`synthesis.b8.conv0.affine.bias`, ...). Weights are stored "raw": the equalised-learning-rate gains
(1/sqrt(fan_in), and the mapping's lr multiplier) are applied in `forward`, exactly as both reference
implementations store them, so converting a checkpoint is a renaming and a reshape, never arithmetic.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from ..fingerprints import fingerprint
from . import ops
from .config import GeneratorConfig

NOISE_MODES = ("const", "random", "none")


class FullyConnected(nn.Module):
    """Linear layer with equalised learning rate: weight stored as N(0,1)/lr_mul, scaled at run time."""

    def __init__(
        self,
        in_features: int,  # input width
        out_features: int,  # output width
        activation: str = "linear",  # "linear" or "lrelu"
        lr_mul: float = 1.0,  # learning-rate multiplier (0.01 in the mapping network)
        bias_init: float = 0.0,  # initial effective bias (1 for style affines: styles start at 1)
    ):
        super().__init__()
        self.activation = activation
        self.lr_mul = lr_mul
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init) / lr_mul))
        self.weight_gain = lr_mul / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = self.bias * self.lr_mul
        if self.activation == "linear":
            return F.linear(x, w, b)
        return ops.bias_act(F.linear(x, w), b, act=self.activation)


class MappingNetwork(nn.Module):
    """z (and class label c) -> w, broadcast to num_ws entries, with truncation toward `w_avg`."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = cfg.z_dim, cfg.c_dim, cfg.w_dim
        self.num_ws = cfg.num_ws
        if cfg.c_dim:
            self.embed = FullyConnected(cfg.c_dim, cfg.embed_features)
        in_features = cfg.z_dim + (cfg.embed_features if cfg.c_dim else 0)
        features = [in_features] + [cfg.hidden_features] * (cfg.mapping_layers - 1) + [cfg.w_dim]
        for i in range(cfg.mapping_layers):
            layer = FullyConnected(features[i], features[i + 1], activation="lrelu", lr_mul=cfg.mapping_lr_mul)
            setattr(self, f"fc{i}", layer)
        self.num_layers = cfg.mapping_layers
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def forward(
        self,
        z: torch.Tensor,  # [B, z_dim]
        c: torch.Tensor | None = None,  # [B, c_dim] for conditional models
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,  # truncate only the first N entries of W+
    ) -> torch.Tensor:  # [B, num_ws, w_dim]
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ConfigError(f"z must have shape [batch, {self.z_dim}], got {list(z.shape)}")
        x = ops.normalize_2nd_moment(z.to(self.w_avg.dtype))
        if self.c_dim:
            if c is None or c.ndim != 2 or c.shape != (z.shape[0], self.c_dim):
                raise ConfigError(
                    f"this generator is conditional: pass c with shape [{z.shape[0]}, {self.c_dim}] "
                    f"(one-hot class labels), got {None if c is None else list(c.shape)}"
                )
            y = ops.normalize_2nd_moment(self.embed(c.to(x.dtype)))
            x = torch.cat([x, y], dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            n = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws = torch.cat([self.w_avg.lerp(ws[:, :n], truncation_psi), ws[:, n:]], dim=1)
        return ws

    @torch.no_grad()
    def estimate_w_avg(self, n: int = 4096, seed: int = 0, c: torch.Tensor | None = None) -> torch.Tensor:
        """Mean w over `n` seeded z (what rosinality's `mean_latent` computes; used when a file lacks it)."""
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.z_dim, generator=g).to(self.w_avg.device)
        if self.c_dim and c is None:
            idx = torch.randint(self.c_dim, (n,), generator=g)
            c = F.one_hot(idx, self.c_dim).to(z)
        return self.forward(z, c)[:, 0].mean(0)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally upsampling), noise, bias, leaky ReLU, clamp."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,  # output resolution, also the size of the stored noise
        up: int = 1,  # 2 for the first conv of each block above 4x4
        conv_clamp: float | None = None,
        resample_filter: torch.Tensor | None = None,
        kernel_size: int = 3,
    ):
        super().__init__()
        self.up = up
        self.resolution = resolution
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.resample_filter = resample_filter

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None, gain: float = 1.0, fused: bool = True
    ) -> torch.Tensor:
        styles = self.affine(w)
        f = None if self.resample_filter is None else self.resample_filter.to(x.device)
        x, d = ops.modulated_conv2d(
            x, self.weight * self.weight_gain, styles, up=self.up, resample_filter=f, fused=fused
        )
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        # x is the convolution's own output (its backward does not need it): the tail may reuse it.
        return ops.bias_act(
            x, self.bias, act="lrelu", gain=ops.LRELU_GAIN * gain, clamp=clamp, inplace=True,
            demod=d, noise=noise, noise_strength=self.noise_strength,
        )  # fmt: skip


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution to image channels, without demodulation."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool = True) -> torch.Tensor:
        styles = self.affine(w)
        x, _ = ops.modulated_conv2d(x, self.weight * self.weight_gain, styles, demodulate=False, fused=fused)
        return ops.bias_act(x, self.bias, clamp=self.conv_clamp, inplace=True)  # x: the conv's own output


class SkipConv(nn.Module):
    """The resnet architecture's shortcut: upsample, then a bias-free 1x1 convolution."""

    def __init__(self, in_channels: int, out_channels: int, resample_filter: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.weight_gain = 1.0 / math.sqrt(in_channels)
        self.resample_filter = resample_filter

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        x = ops.upsample2d(x, self.resample_filter.to(x.device))
        x = F.conv2d(x, (self.weight * self.weight_gain).to(x.dtype))
        return x * gain


class SynthesisBlock(nn.Module):
    """One resolution: (learned constant | upsampling conv) + conv + ToRGB."""

    def __init__(
        self,
        in_channels: int,  # 0 for the 4x4 block, which starts from a learned constant
        out_channels: int,
        resolution: int,
        is_last: bool,
        cfg: GeneratorConfig,
        resample_filter: torch.Tensor,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.architecture = cfg.architecture
        self.resample_filter = resample_filter
        kw = dict(w_dim=cfg.w_dim, resolution=resolution, conv_clamp=cfg.conv_clamp)
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, up=2, resample_filter=resample_filter, **kw)
        self.conv1 = SynthesisLayer(out_channels, out_channels, **kw)
        self.has_torgb = is_last or cfg.architecture == "skip"
        if self.has_torgb:
            self.torgb = ToRGBLayer(out_channels, cfg.img_channels, cfg.w_dim, conv_clamp=cfg.conv_clamp)
        if in_channels != 0 and cfg.architecture == "resnet":
            self.skip = SkipConv(in_channels, out_channels, resample_filter)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1 if self.has_torgb else 0

    def conv_names(self) -> list[str]:
        return ["conv1"] if self.in_channels == 0 else ["conv0", "conv1"]

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,  # [B, num_conv + num_torgb, w_dim]
        noise: list[torch.Tensor | None],  # one entry per conv layer of this block
        fused: bool = True,  # see ops.modulated_conv2d
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
            x = self.conv1(x, ws[:, 0], noise[0], fused=fused)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, ws[:, 0], noise[0], fused=fused)
            x = self.conv1(x, ws[:, 1], noise[1], gain=math.sqrt(0.5), fused=fused)
            x = y + x
        else:
            x = self.conv0(x, ws[:, 0], noise[0], fused=fused)
            x = self.conv1(x, ws[:, 1], noise[1], fused=fused)
        if img is not None:
            img = ops.upsample2d(img, self.resample_filter.to(img.device))
        if self.has_torgb:
            y = self.torgb(x, ws[:, self.num_conv], fused=fused)
            img = y if img is None else img + y
        return x, img


class SynthesisNetwork(nn.Module):
    """W+ -> image. Blocks are named b4, b8, ..., b{img_resolution}."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        self.num_ws = cfg.num_ws
        self.img_resolution = cfg.img_resolution
        # A plain attribute, not a buffer: the filter is fixed by the config and never saved.
        f = ops.make_filter(cfg.resample_filter, device="cpu")
        self.block_resolutions = cfg.resolutions
        for i, res in enumerate(self.block_resolutions):
            in_ch = 0 if i == 0 else cfg.channels[i - 1]
            block = SynthesisBlock(in_ch, cfg.channels[i], res, res == cfg.img_resolution, cfg, f)
            setattr(self, f"b{res}", block)
        self.gradient_checkpointing = False
        # The modulated convolutions' form (ops.modulated_conv2d): the same numbers up to float
        # reassociation; the adaptation may set False for its trainable copy where that is faster.
        self.fused_modconv = True

    def blocks(self) -> list[tuple[str, SynthesisBlock]]:
        return [(f"b{res}", getattr(self, f"b{res}")) for res in self.block_resolutions]

    def conv_layers(self) -> list[tuple[str, SynthesisLayer]]:
        """Every noise-carrying conv layer in forward order, with its name relative to `synthesis`."""
        return [(f"{n}.{c}", getattr(b, c)) for n, b in self.blocks() for c in b.conv_names()]

    def noise_shapes(self) -> list[tuple[int, int]]:
        return [(layer.resolution, layer.resolution) for _, layer in self.conv_layers()]

    def make_noise(
        self, batch: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> list[torch.Tensor]:
        """Fresh N(0,1) noise maps [batch, 1, r, r], one per conv layer, drawn on the generator's device.

        Drawing on the RNG's device and then moving makes a CPU generator give the same noise
        whatever device the network runs on.
        """
        rng_device = generator.device if generator is not None else torch.device("cpu")
        target = device if device is not None else next(self.parameters()).device
        return [
            torch.randn(batch, 1, h, w, generator=generator, device=rng_device).to(target)
            for h, w in self.noise_shapes()
        ]

    def units(self) -> list[tuple[str, str, int]]:
        """(full name, kind, resolution) of every trainable unit in forward order, for `nada.layers`;
        kinds: const, skip, conv0, conv1, torgb."""
        return [(f"synthesis.{name}.{kind}", kind, block.resolution)
                for name, block in self.blocks()
                for kind in ("const", "skip", "conv0", "conv1", "torgb") if hasattr(block, kind)]  # fmt: skip

    def w_index_consumers(self) -> dict[int, list[str]]:
        """Which modules (full names under the generator) read each W+ index."""
        out: dict[int, list[str]] = {i: [] for i in range(self.num_ws)}
        w_idx = 0
        for name, block in self.blocks():
            for j, conv in enumerate(block.conv_names()):
                out[w_idx + j].append(f"synthesis.{name}.{conv}")
            if block.has_torgb:
                out[w_idx + block.num_conv].append(f"synthesis.{name}.torgb")
            w_idx += block.num_conv
        return out

    def _resolve_noise(self, noise_mode, noise, batch, generator, device) -> list[torch.Tensor | None]:
        layers = self.conv_layers()
        if noise is not None:
            if len(noise) != len(layers):
                raise ConfigError(f"noise must list {len(layers)} tensors (one per conv layer), got {len(noise)}")
            return list(noise)
        if noise_mode not in NOISE_MODES:
            raise ConfigError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if noise_mode == "none":
            return [None] * len(layers)
        if noise_mode == "const":
            return [layer.noise_const[None, None] for _, layer in layers]
        return self.make_noise(batch, generator, device)

    def forward(
        self,
        ws: torch.Tensor,  # [B, num_ws, w_dim]
        noise_mode: str = "const",
        noise: list[torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
        fused_modconv: bool | None = None,  # None = self.fused_modconv; see ops.modulated_conv2d
    ) -> torch.Tensor:  # [B, img_channels, H, W], roughly in [-1, 1]
        fused = self.fused_modconv if fused_modconv is None else fused_modconv
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.cfg.w_dim:
            raise ConfigError(f"ws must have shape [batch, {self.num_ws}, {self.cfg.w_dim}], got {list(ws.shape)}")
        # Noise is materialised before the blocks so that gradient checkpointing recomputes with the
        # same maps, and so that two generators can be given identical noise.
        all_noise = self._resolve_noise(noise_mode, noise, ws.shape[0], generator, ws.device)
        x = img = None
        w_idx = n_idx = 0
        for _, block in self.blocks():
            block_ws = ws[:, w_idx : w_idx + block.num_conv + block.num_torgb]
            block_noise = all_noise[n_idx : n_idx + block.num_conv]
            if self.gradient_checkpointing and torch.is_grad_enabled() and block.in_channels:
                x, img = checkpoint(block, x, img, block_ws, block_noise, fused, use_reentrant=False)
            else:
                x, img = block(x, img, block_ws, block_noise, fused)
            w_idx += block.num_conv
            n_idx += block.num_conv
        return img


class Generator(nn.Module):
    """A StyleGAN2 generator: `G(z)` -> images in [-1, 1]; `G.mapping` and `G.synthesis` separately.

    StyleGAN3 (`nada.stylegan3`) subclasses it with its own synthesis network and config.
    """

    synthesis_class: type[nn.Module] = SynthesisNetwork

    def __init__(self, config: GeneratorConfig, metadata: dict[str, Any] | None = None):
        super().__init__()
        self.config = config
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.mapping = MappingNetwork(config)
        self.synthesis = self.synthesis_class(config)

    @property
    def num_ws(self) -> int:
        return self.config.num_ws

    @property
    def z_dim(self) -> int:
        return self.config.z_dim

    @property
    def device(self) -> torch.device:
        return self.mapping.w_avg.device

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
        noise: list[torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, noise=noise, generator=generator)

    def with_tensors(self, replacements: dict[str, torch.Tensor] | None = None) -> Generator:
        """A new generator that shares every tensor with this one except `replacements` (name -> tensor).

        Nothing is copied: unchanged weights are the same storage, so an adapter applied to a 120 MB
        base costs only the tensors it changes. The result is in eval mode with gradients off.
        """
        replacements = dict(replacements or {})
        own = self.state_dict()
        unknown = sorted(set(replacements) - set(own))
        if unknown:
            raise ConfigError(f"no such generator tensors: {unknown[:5]}")
        for name, t in replacements.items():
            if t.shape != own[name].shape:
                raise ConfigError(f"{name}: shape {list(t.shape)} does not match {list(own[name].shape)}")
        with torch.device("meta"):
            G = type(self)(self.config, metadata=self.metadata)
        G.requires_grad_(False)
        G.load_state_dict({**own, **replacements}, assign=True)
        return G.eval()

    def fingerprint(self) -> str:
        """SHA-256 over every tensor's name, dtype, shape and bytes: the identity of these weights.

        It ignores the file format, so a checkpoint converted from .pkl to .safetensors keeps its
        fingerprint; adapters, delta saves and run keys use it to find and check their base generator.
        """
        return fingerprint(self)  # cached while the weights are unchanged

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"resolution={c.img_resolution}, channels={list(c.channels)}, z_dim={c.z_dim}, w_dim={c.w_dim}, "
            f"c_dim={c.c_dim}, mapping_layers={c.mapping_layers}, architecture={c.architecture}, "
            f"conv_clamp={c.conv_clamp}"
        )
