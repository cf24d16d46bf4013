"""pSp, e4e and ReStyle encoders, read from the checkpoints their authors' training code writes.

A checkpoint is a torch zip file holding `{"state_dict": {"encoder.*", "decoder.*"}, "opts": {...},
"latent_avg": tensor, ...}`; it is read with `torch.load(weights_only=True)` (no code runs), the
decoder is a rosinality generator that `nada.load_generator` reads from the same file.

What is taken from where:
| property | source |
|---|---|
| backbone (IR-SE50 / ResNet34) | the stem's keys (`input_layer.0.weight` / `conv1.weight`) |
| input channels (3 = pSp/e4e, 6 = ReStyle: image + current reconstruction) | the stem's weight shape |
| number of W+ entries, w_dim | the `styles.N` blocks and their linear layers (and the decoder) |
| how the styles combine (pSp: one per entry; e4e: w0 + deltas) | `opts["encoder_type"]`: the tensors are identical |
| whether the average latent is added | `opts["start_from_latent_avg"]` (pSp/e4e); always for ReStyle |

| opts["encoder_type"] | kind | backbone | head |
|---|---|---|---|
| GradualStyleEncoder | psp (3 channels) or restyle_psp (6) | IR-SE50 | FPN, one style per W+ entry |
| Encoder4Editing | e4e | IR-SE50 | FPN, w0 + per-entry deltas |
| SingleStyleCodeEncoder, BackboneEncoderUsingLastLayerIntoW | psp | IR-SE50 | one w for all entries |
| BackboneEncoderUsingLastLayerIntoWPlus | psp | IR-SE50 | W+ from one 7x7-pooled vector |
| BackboneEncoder, ResNetBackboneEncoder, ResNetGradualStyleEncoder | restyle_psp | IR-SE50 / ResNet34 | last map / FPN |
| ProgressiveBackboneEncoder, ResNetProgressiveBackboneEncoder | restyle_e4e | IR-SE50 / ResNet34 | last map, w0 + deltas |
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import FormatError
from ..io import read_model_file
from ..stylegan2.formats import rosinality
from ..torch_files import load_torch_bytes
from .backbones import Backbone, EqualLinear, StyleBlock, upsample_add

log = logging.getLogger(__name__)

KINDS = ("psp", "e4e", "restyle_psp", "restyle_e4e")
# encoder_type -> (kind for 3-channel input, head). Heads: "fpn" one style per entry from the feature
# pyramid; "fpn_deltas" e4e's w0 + deltas over the pyramid; "map" / "map_deltas" the same from the
# last 16x16 map only; "single" one w for every entry; "wplus" all entries from one pooled vector.
ENCODER_TYPES = {
    "GradualStyleEncoder": ("psp", "fpn"),
    "Encoder4Editing": ("e4e", "fpn_deltas"),
    "SingleStyleCodeEncoder": ("psp", "single"),
    "BackboneEncoderUsingLastLayerIntoW": ("psp", "single"),
    "BackboneEncoderUsingLastLayerIntoWPlus": ("psp", "wplus"),
    "BackboneEncoder": ("restyle_psp", "map"),
    "ResNetBackboneEncoder": ("restyle_psp", "map"),
    "ResNetGradualStyleEncoder": ("restyle_psp", "fpn"),
    "ProgressiveBackboneEncoder": ("restyle_e4e", "map_deltas"),
    "ResNetProgressiveBackboneEncoder": ("restyle_e4e", "map_deltas"),
}
COARSE, MIDDLE = 3, 7  # W+ entries [0,3) read the 16x16 map, [3,7) the 32x32, the rest the 64x64 (FPN heads)
INPUT_SIZE = 256  # every published encoder is trained on 256x256 crops (transforms: Resize((256, 256)))


@dataclass(frozen=True)
class EncoderSpec:
    """The architecture of one encoder, as inferred from its file."""

    kind: str  # one of KINDS
    encoder_type: str  # the authors' class name (opts["encoder_type"])
    backbone: str  # "ir_se50" or "resnet34"
    head: str  # see ENCODER_TYPES
    input_channels: int  # 3, or 6 for ReStyle
    num_ws: int  # W+ entries
    w_dim: int
    adds_latent_avg: bool  # codes are offsets from latent_avg (always true for ReStyle's first step)
    decoder_resolution: int  # of the decoder stored in the same file
    input_size: int = INPUT_SIZE

    @property
    def iterative(self) -> bool:
        return self.kind.startswith("restyle")


def _spatial(i: int, head: str) -> int:
    if head in ("fpn", "fpn_deltas"):
        return 16 if i < COARSE else 32 if i < MIDDLE else 64
    return 16


class EncoderNet(Backbone):
    """Backbone + style head, with the parameter names of the authors' encoders (strict loading)."""

    def __init__(self, spec: EncoderSpec):
        super().__init__(spec.backbone, spec.input_channels)
        self.head, self.num_ws = spec.head, spec.num_ws
        if spec.head == "single":
            self.output_pool = nn.AdaptiveAvgPool2d((1, 1))
            self.linear = EqualLinear(512, spec.w_dim)
            return
        if spec.head == "wplus":
            self.output_layer_2 = nn.Sequential(
                nn.BatchNorm2d(512), nn.AdaptiveAvgPool2d((7, 7)), nn.Flatten(), nn.Linear(512 * 7 * 7, 512)
            )
            self.linear = EqualLinear(512, spec.w_dim * spec.num_ws)
            return
        self.styles = nn.ModuleList(StyleBlock(512, _spatial(i, spec.head)) for i in range(spec.num_ws))
        if spec.head.startswith("fpn"):
            self.latlayer1 = nn.Conv2d(256, 512, kernel_size=1, stride=1, padding=0)
            self.latlayer2 = nn.Conv2d(128, 512, kernel_size=1, stride=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, 256, 256] -> [B, num_ws, w_dim]
        c1, c2, c3 = super().forward(x)
        if self.head == "single":
            w = self.linear(self.output_pool(c3).view(-1, 512))
            return w.unsqueeze(1).repeat(1, self.num_ws, 1)
        if self.head == "wplus":
            return self.linear(self.output_layer_2(c3)).view(x.shape[0], self.num_ws, -1)
        levels = [c3] * self.num_ws
        if self.head.startswith("fpn"):
            # The pyramid is built only as deep as the entries need it, like the original.
            p2 = upsample_add(c3, self.latlayer1(c2)) if self.num_ws > COARSE else None
            p1 = upsample_add(p2, self.latlayer2(c1)) if self.num_ws > MIDDLE else None
            levels = [c3 if i < COARSE else p2 if i < MIDDLE else p1 for i in range(self.num_ws)]
        if self.head.endswith("deltas"):
            # e4e: one w from the coarsest features, then a delta per entry (the same additions as
            # the original's `w[:, i] += delta_i`).
            w = self.styles[0](levels[0]).unsqueeze(1).repeat(1, self.num_ws, 1)
            for i in range(1, self.num_ws):
                w[:, i] += self.styles[i](levels[i])
            return w
        return torch.stack([style(level) for style, level in zip(self.styles, levels)], dim=1)


class Encoder(nn.Module):
    """An image encoder into W+ (eval mode, gradients off). `forward` gives the raw codes; `nada.invert`
    adds the average latent / previous estimate and runs ReStyle's refinement.

    Attributes: `kind` ("psp", "e4e", "restyle_psp", "restyle_e4e"), `num_ws`, `w_dim`, `input_size`
    (images are `input_size` square, in [-1, 1]), `input_channels`, `latent_avg` ([num_ws, w_dim], or
    None for a pSp trained without it), `decoder_path` (the file, whose decoder `nada.load_generator`
    reads), `spec` (everything inferred from the file)."""

    def __init__(self, spec: EncoderSpec, decoder_path: Path, latent_avg: torch.Tensor | None):
        super().__init__()
        self.spec = spec
        self.decoder_path = decoder_path
        self.net = EncoderNet(spec)
        self.register_buffer("latent_avg", latent_avg)

    kind = property(lambda self: self.spec.kind)
    num_ws = property(lambda self: self.spec.num_ws)
    w_dim = property(lambda self: self.spec.w_dim)
    input_size = property(lambda self: self.spec.input_size)
    input_channels = property(lambda self: self.spec.input_channels)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, input_channels, 256, 256] -> [B, num_ws, w_dim]
        return self.net(x)

    def extra_repr(self) -> str:
        s = self.spec
        return f"kind={s.kind}, type={s.encoder_type}, backbone={s.backbone}, num_ws={s.num_ws}, w_dim={s.w_dim}"


def _options(obj: dict[str, Any], where: str) -> dict[str, Any]:
    opts = obj.get("opts")
    if opts is not None and not isinstance(opts, dict):
        opts = vars(opts) if hasattr(opts, "__dict__") else None
    if not isinstance(opts, dict) or not isinstance(opts.get("encoder_type"), str):
        raise FormatError(
            f"{where} has no training options with an 'encoder_type' ('opts'); pSp, e4e and ReStyle "
            "checkpoints store them, and the tensors alone cannot tell pSp from e4e. Use the file as "
            "published by the authors"
        )
    return opts


def _split(obj: Any, where: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    sd = obj.get("state_dict") if isinstance(obj, dict) else None
    if not isinstance(sd, dict):
        found = sorted(str(k) for k in obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise FormatError(
            f"{where} is not a pSp/e4e/ReStyle encoder checkpoint (no 'state_dict'; found {found}). "
            "A StyleGAN generator goes to Load StyleGAN2 / nada.load_generator instead"
        )
    encoder, decoder = {}, {}
    for k, v in sd.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise FormatError(f"{where}: state_dict entry {k!r} is not a named tensor")
        if k.startswith("encoder."):
            encoder[k[len("encoder.") :]] = v
        elif k.startswith("decoder."):
            decoder[k[len("decoder.") :]] = v
    if not encoder:
        raise FormatError(f"{where} has a state_dict but no 'encoder.*' weights; it is not an encoder checkpoint")
    if not decoder:
        raise FormatError(
            f"{where} has no 'decoder.*' weights (the StyleGAN2 generator the encoder was trained "
            "with); published pSp/e4e/ReStyle checkpoints carry it"
        )
    for k, v in encoder.items():
        # A finite sum proves every element finite; only a non-finite one needs the element-wise look.
        if v.is_floating_point() and not torch.isfinite(v.sum()) and not torch.isfinite(v).all():
            raise FormatError(f"{where}: encoder tensor {k} contains NaN or Inf; the checkpoint is corrupt")
    return encoder, decoder


def infer_spec(
    encoder: dict[str, torch.Tensor], decoder: dict[str, torch.Tensor], opts: dict[str, Any], where: str
) -> EncoderSpec:
    """The architecture of an encoder from its weights, its decoder's and its training options (see
    the module table)."""
    encoder_type = opts["encoder_type"]
    if encoder_type not in ENCODER_TYPES:
        raise FormatError(
            f"{where}: encoder_type {encoder_type!r} is not supported; supported: {', '.join(ENCODER_TYPES)}"
        )
    if "cars" in str(opts.get("dataset_type", "")):
        raise FormatError(
            f"{where} is a cars encoder (192x256 inputs, cropped outputs), which comfyui-nada does not "
            "support yet (encoders of 256x256 crops load)"
        )
    stem = "input_layer.0.weight" if "input_layer.0.weight" in encoder else "conv1.weight"
    if stem not in encoder or encoder[stem].ndim != 4:
        raise FormatError(
            f"{where}: the encoder has neither an IR-SE50 stem (input_layer.0.weight) nor a ResNet34 one (conv1.weight)"
        )
    backbone = "ir_se50" if stem == "input_layer.0.weight" else "resnet34"
    input_channels = int(encoder[stem].shape[1])
    kind, head = ENCODER_TYPES[encoder_type]
    if kind == "psp" and input_channels == 6:
        kind = "restyle_psp"  # ReStyle's FPN variant keeps pSp's class name
    expected_channels = 6 if kind.startswith("restyle") else 3
    if input_channels != expected_channels:
        raise FormatError(
            f"{where}: a {kind} encoder takes {expected_channels} input channels but this one takes {input_channels}; "
            + (
                "it translates other inputs (sketches, segmentation maps), it does not invert photos"
                if kind in ("psp", "e4e")
                else "it is not a ReStyle inversion encoder"
            )
        )
    try:
        dcfg = rosinality.config_from_rosinality(decoder)
    except FormatError as e:
        raise FormatError(f"{where}: the decoder stored with the encoder is not a StyleGAN2 generator ({e})") from None
    if head in ("single", "wplus"):
        out_features = int(encoder.get("linear.weight", torch.empty(0, 0)).shape[0])
        num_ws, w_dim = dcfg.num_ws, out_features // (dcfg.num_ws if head == "wplus" else 1)
    else:
        num_ws = len({k.split(".")[1] for k in encoder if k.startswith("styles.")})
        w_dim = int(encoder.get("styles.0.linear.weight", torch.empty(0, 0)).shape[0])
    if num_ws != dcfg.num_ws or w_dim != dcfg.w_dim:
        raise FormatError(
            f"{where}: the encoder makes {num_ws} x {w_dim} W+ codes but its decoder takes "
            f"{dcfg.num_ws} x {dcfg.w_dim}; the file is inconsistent"
        )
    adds = kind.startswith("restyle") or bool(opts.get("start_from_latent_avg", False))
    return EncoderSpec(
        kind=kind,
        encoder_type=encoder_type,
        backbone=backbone,
        head=head,
        input_channels=input_channels,
        num_ws=num_ws,
        w_dim=w_dim,
        adds_latent_avg=adds,
        decoder_resolution=dcfg.img_resolution,
    )


def _latent_avg(obj: dict[str, Any], spec: EncoderSpec, where: str) -> torch.Tensor | None:
    avg = obj.get("latent_avg")
    if avg is None:
        if spec.adds_latent_avg:
            raise FormatError(
                f"{where} has no 'latent_avg', which this {spec.kind} encoder adds to its codes; "
                "the file is incomplete (re-download it)"
            )
        return None
    if (
        not isinstance(avg, torch.Tensor)
        or not avg.is_floating_point()
        or avg.shape[-1] != spec.w_dim
        or avg.ndim > 2
        or (avg.ndim == 2 and avg.shape[0] not in (1, spec.num_ws))
    ):
        shape = list(avg.shape) if isinstance(avg, torch.Tensor) else type(avg).__name__
        raise FormatError(
            f"{where}: latent_avg has shape {shape}; expected [{spec.w_dim}] or [{spec.num_ws}, {spec.w_dim}]"
        )
    if not torch.isfinite(avg).all():
        raise FormatError(f"{where}: latent_avg contains NaN or Inf; the checkpoint is corrupt")
    # Stored as [w_dim], [1, w_dim] (learn-in-W pSp) or [num_ws, w_dim]; added by broadcasting in the
    # original, so the full table is the same numbers.
    return avg.detach().float().reshape(-1, spec.w_dim).expand(spec.num_ws, spec.w_dim).clone()


def load_encoder(path: str | os.PathLike, device: torch.device | str | None = None) -> Encoder:
    """Load a pSp / e4e / ReStyle encoder from its checkpoint (eval mode, gradients off, on `device`,
    default CPU). No code from the file runs; bad files raise FormatError naming the problem."""
    path = Path(path)
    where = path.name
    data = read_model_file(path, "an encoder checkpoint")
    if data[:4] != b"PK\x03\x04" and data[:1] != b"\x80":
        raise FormatError(
            f"{where} ({len(data)} bytes) is not a PyTorch checkpoint; pSp/e4e/ReStyle encoders are .pt "
            "files" + ("; it is empty" if not data else "")
        )
    obj = load_torch_bytes(data, where, "pSp/e4e/ReStyle", FormatError)
    weights, decoder = _split(obj, where)
    spec = infer_spec(weights, decoder, _options(obj, where), where)
    latent_avg = _latent_avg(obj, spec, where)
    with torch.device("meta"):
        enc = Encoder(spec, path, None)
    own = enc.net.state_dict()
    missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    if missing or unexpected:
        raise FormatError(
            f"{where}: the encoder weights do not form a {spec.encoder_type} ({spec.backbone}, "
            f"{spec.num_ws} styles): missing {missing[:4]}, unexpected {unexpected[:4]}"
        )
    for k, t in own.items():
        if tuple(weights[k].shape) != tuple(t.shape):
            raise FormatError(
                f"{where}: encoder tensor {k} has shape {list(weights[k].shape)}, expected {list(t.shape)}"
            )
    weights = {k: (v.float() if v.is_floating_point() else v) for k, v in weights.items()}
    enc.net.load_state_dict(weights, assign=True)
    enc.latent_avg = latent_avg
    enc.requires_grad_(False).eval()
    log.info(
        "loaded %s encoder %s (%s, %d W+ entries, %d-px decoder)",
        spec.kind,
        where,
        spec.backbone,
        spec.num_ws,
        spec.decoder_resolution,
    )
    return enc.to(device if device is not None else "cpu")
