"""What "looks the same" means to the projector: LPIPS / VGG16 features, or pixels at several scales + CLIP.

    features = load_vgg16("vgg16-397923af.pth", lpips="vgg.pth")   # both files local; nothing downloaded
    objective = make_objective(target, features=features, clip=None)
    objective(images)          # [B] distance of each image to its target (differentiable)
    objective.name             # "lpips", "vgg16", "pixels" or "pixels+clip" (what was used)

VGG16 is rebuilt here as torchvision lays out its `features` (13 convolutions, ReLUs, 4 max-pools up
to relu5_3), so torchvision's own state dict (`vgg16-397923af.pth`, the ImageNet weights LPIPS uses)
loads into it by name. LPIPS's linear calibration (`vgg.pth` of the `lpips` package: `lin0..lin4`)
is optional: with it the distance is LPIPS (Zhang et al. 2018), without it the uncalibrated variant
(every channel weighted 1). Files are read without executing code: safetensors, or
`torch.load(weights_only=True)` after the resource checks of `nada.torch_files`.

Without VGG weights the projector needs no download at all: mean squared error of the pixels at full,
1/2, 1/4 and 1/8 resolution (coarse layout and fine detail both pull), plus, when a CLIP is given,
the cosine distance of its image embeddings (semantics the pixels miss).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ProjectionError
from ..torch_files import check_tensors_fit, check_torch_archive

# torchvision's VGG16 `features`: channel counts, "M" = 2x2 max-pool.
_VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_LPIPS_TAPS = (3, 8, 15, 22, 29)  # indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in `features`
_LPIPS_CHANNELS = (64, 128, 256, 512, 512)
# LPIPS's ScalingLayer: ImageNet mean/std expressed for inputs in [-1, 1].
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
VGG_MAX_SIDE = 256  # larger images are area-downsampled first, as NVIDIA's projector does
PIXEL_SCALES = (1, 2, 4, 8)


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (safetensors, or a plain state dict read with weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise ProjectionError(f"perceptual weights file {path} does not exist")
    size = path.stat().st_size
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own error types
            raise ProjectionError(f"cannot read {path.name} as safetensors: {e}") from None
    else:
        if zipfile.is_zipfile(path):
            with open(path, "rb") as f:
                check_torch_archive(f, size, path.name, ProjectionError)
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # every unpickler failure means "not a plain state dict"
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ProjectionError(
                f"cannot load {path.name} safely ({msg}); only plain state dicts are read (weights_only). "
                "Use torchvision's vgg16-397923af.pth and the lpips package's vgg.pth, not a TorchScript file"
            ) from None
        check_tensors_fit(sd, path.name, size, ProjectionError)
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ProjectionError(f"{path.name} does not contain a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


class VGG16Features(nn.Module):
    """VGG16 up to relu5_3 with LPIPS's input scaling; returns the five LPIPS feature maps.

    `lin` holds one [C] channel weight per tap: LPIPS's calibration, or ones (uncalibrated).
    """

    def __init__(self, lin: list[torch.Tensor] | None = None):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in _VGG16_LAYOUT:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_ch, int(v), 3, padding=1), nn.ReLU()]
                in_ch = int(v)
        self.features = nn.Sequential(*layers)
        self.calibrated = lin is not None
        weights = lin if lin is not None else [torch.ones(c) for c in _LPIPS_CHANNELS]
        for i, w in enumerate(weights):
            self.register_buffer(f"lin{i}", w.float().reshape(-1))
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))

    @property
    def name(self) -> str:
        return "lpips" if self.calibrated else "vgg16"

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:  # images [B, 3, H, W] in [-1, 1]
        if max(images.shape[-2:]) > VGG_MAX_SIDE:
            h, w = images.shape[-2:]
            f = VGG_MAX_SIDE / max(h, w)
            images = F.interpolate(images, size=(max(1, round(h * f)), max(1, round(w * f))), mode="area")
        x = (images - self.shift) / self.scale
        taps = []
        for i, layer in enumerate(self.features[: _LPIPS_TAPS[-1] + 1]):
            x = layer(x)
            if i in _LPIPS_TAPS:
                taps.append(x)
        return taps

    def distance(self, a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
        """LPIPS between two sets of taps: per image [B] (channel-normalised, weighted, spatial mean)."""
        total = 0
        for i, (fa, fb) in enumerate(zip(a, b)):
            na = fa / (fa.square().sum(1, keepdim=True).sqrt() + 1e-10)
            nb = fb / (fb.square().sum(1, keepdim=True).sqrt() + 1e-10)
            lin = getattr(self, f"lin{i}").view(1, -1, 1, 1)
            total = total + ((na - nb).square() * lin).sum(1).mean((1, 2))
        return total


def load_vgg16(weights: str | os.PathLike, lpips: str | os.PathLike | None = None) -> VGG16Features:
    """VGG16 features from torchvision's state dict file, with LPIPS's linear weights if given."""
    sd = read_tensors(weights)
    features = {k: v for k, v in sd.items() if k.startswith("features.")}
    lin = None
    if lpips is not None:
        lsd = read_tensors(lpips)
        lin = []
        for i, c in enumerate(_LPIPS_CHANNELS):
            t = lsd.get(f"lin{i}.model.1.weight")
            if t is None or t.numel() != c:
                raise ProjectionError(
                    f"{Path(lpips).name} is not LPIPS's VGG calibration: expected lin{i}.model.1.weight with "
                    f"{c} values (the lpips package's weights/v0.1/vgg.pth)"
                )
            lin.append(t)
    with torch.inference_mode(False):
        model = VGG16Features(lin)
        own = {k: v for k, v in model.state_dict().items() if k.startswith("features.")}
        missing = sorted(set(own) - set(features))
        wrong = [k for k in own if k in features and features[k].shape != own[k].shape]
        if missing or wrong:
            raise ProjectionError(
                f"{Path(weights).name} is not torchvision's VGG16 (missing {missing[:3]}, wrong shape "
                f"{wrong[:3]}); use vgg16-397923af.pth from torchvision"
            )
        model.load_state_dict({**model.state_dict(), **{k: features[k].float() for k in own}})
    return model.eval().requires_grad_(False)


def pixel_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error at full, 1/2, 1/4 and 1/8 resolution, summed: [B]."""
    total = 0
    for f in PIXEL_SCALES:
        if min(a.shape[-2:]) // f < 2:
            break
        pa, pb = (a, b) if f == 1 else (F.avg_pool2d(a, f), F.avg_pool2d(b, f))
        total = total + (pa - pb).square().mean((1, 2, 3))
    return total


class Objective:
    """Distance of generated images to fixed targets, per image [B]; `name` says what it measures."""

    def __init__(self, name: str, distance: Callable[[torch.Tensor], torch.Tensor]):
        self.name = name
        self._distance = distance

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self._distance(images)


def make_objective(
    target: torch.Tensor,  # [B, 3, H, W] in [-1, 1]
    features: VGG16Features | None = None,
    clip=None,  # a nada ClipModel / ClipEnsemble, or None
    clip_weight: float = 0.1,
) -> Objective:
    """LPIPS / VGG16 when `features` are given, else multi-scale pixels; plus CLIP when given."""
    parts: list[Callable[[torch.Tensor], torch.Tensor]] = []
    if features is not None:
        features = features.to(target.device)
        with torch.no_grad():
            target_taps = features(target)
        parts.append(lambda x: features.distance(features(x), target_taps))
        name = features.name
    else:
        parts.append(lambda x: pixel_distance(x, target))
        name = "pixels"
    if clip is not None and clip_weight > 0:
        from ..clip import as_ensemble

        members = [(m.weight, m.model) for m in as_ensemble(clip).on(target.device)]
        with torch.no_grad():
            target_emb = [model.encode_images(target) for _, model in members]

        def clip_distance(x: torch.Tensor) -> torch.Tensor:
            total = 0
            for (weight, model), t in zip(members, target_emb):
                total = total + weight * (1 - (model.encode_images(x) * t).sum(-1))
            return clip_weight * total

        parts.append(clip_distance)
        name += "+clip"
    return Objective(name, lambda x: sum(p(x) for p in parts))
