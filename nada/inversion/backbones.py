"""The two backbones of the pSp family of encoders, with the parameter names their checkpoints use.

| backbone | stem (keys) | body | FPN taps (body index: channels @ 256 px input) |
|---|---|---|---|
| IR-SE50 (ArcFace ResNet-50 with squeeze-excitation) | `input_layer.{0,1,2}` conv3x3 s1, BN, PReLU | 24 IR-SE units | 6: 128 @ 64, 20: 256 @ 32, 23: 512 @ 16 |
| ResNet34 (torchvision's blocks, no max-pool) | `conv1` 7x7 s2, `bn1`, `relu` (a PReLU) | 16 basic blocks | 6: 128 @ 64, 12: 256 @ 32, 15: 512 @ 16 |

Keys stay those of the files (`body.3.res_layer.5.fc1.weight`, `body.3.downsample.0.weight`), so a
checkpoint loads with a strict `load_state_dict`, never a renaming table. Every layer is a stock
torch module applied in the authors' order, so the numbers are theirs to float rounding only where
torch itself differs between calls (none on the same device and batch).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# IR-SE50: (output channels, units) per stage; the first unit of each stage has stride 2.
IRSE50_STAGES = ((64, 3), (128, 4), (256, 14), (512, 3))
# ResNet34 (torchvision's layer1..layer4): same shape of table.
RESNET34_STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))
FPN_TAPS = {"ir_se50": (6, 20, 23), "resnet34": (6, 12, 15)}


class SqueezeExcite(nn.Module):
    """Channel gates from the globally pooled features (reduction 16), as in IR-SE units."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, padding=0, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, padding=0, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class IRSEUnit(nn.Module):
    """Pre-activation residual unit: BN -> conv3x3 -> PReLU -> conv3x3 (stride) -> BN -> SE, plus a
    shortcut that subsamples (same width) or projects (new width)."""

    def __init__(self, in_channels: int, depth: int, stride: int):
        super().__init__()
        if in_channels == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)  # a 1x1 max-pool is a plain subsampling
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, depth, (1, 1), stride, bias=False), nn.BatchNorm2d(depth)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, (3, 3), (1, 1), 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, (3, 3), stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SqueezeExcite(depth, 16),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block: conv3x3 (stride) -> BN -> ReLU -> conv3x3 -> BN, + shortcut, ReLU."""

    def __init__(self, in_channels: int, depth: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, depth, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(depth)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(depth, depth, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(depth)
        self.downsample = None
        if stride != 1 or in_channels != depth:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


def _units(stages, unit: type[nn.Module], first_stride_of_first_stage: int) -> nn.Sequential:
    modules, in_channels = [], 64
    for s, (depth, count) in enumerate(stages):
        for i in range(count):
            stride = (first_stride_of_first_stage if s == 0 else 2) if i == 0 else 1
            modules.append(unit(in_channels, depth, stride))
            in_channels = depth
    return nn.Sequential(*modules)


class Backbone(nn.Module):
    """Stem + body of an encoder; `forward` returns the three FPN taps (fine, middle, coarse) and the
    final map is the coarse tap. `kind` is "ir_se50" or "resnet34"."""

    def __init__(self, kind: str, input_channels: int):
        super().__init__()
        self.kind = kind
        if kind == "ir_se50":
            self.input_layer = nn.Sequential(
                nn.Conv2d(input_channels, 64, (3, 3), 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)
            )
            # IR-SE50 halves the resolution in its first unit (the stem keeps it).
            self.body = _units(IRSE50_STAGES, IRSEUnit, first_stride_of_first_stage=2)
        elif kind == "resnet34":
            # The encoders replace torchvision's stem (conv, BN, ReLU, max-pool) by conv, BN, PReLU
            # without the max-pool; layer1 keeps the resolution.
            self.conv1 = nn.Conv2d(input_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.PReLU(64)
            self.body = _units(RESNET34_STAGES, BasicBlock, first_stride_of_first_stage=1)
        else:
            raise ValueError(f"unknown backbone {kind!r}")
        self.taps = FPN_TAPS[kind]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.kind == "ir_se50":
            x = self.input_layer(x)
        else:
            x = self.relu(self.bn1(self.conv1(x)))
        taps = []
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self.taps:
                taps.append(x)
        c1, c2, c3 = taps  # [B,128,H/4,W/4], [B,256,H/8,W/8], [B,512,H/16,W/16]
        return c1, c2, c3


class EqualLinear(nn.Module):
    """rosinality's equalised-lr linear layer (lr_mul 1, no activation): weight scaled by 1/sqrt(in)
    at run time, in the same order of operations as the original."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = 1 / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, bias=self.bias)


class StyleBlock(nn.Module):
    """map2style: log2(spatial) stride-2 convs with leaky ReLU take a [B,512,s,s] map to [B,512,1,1],
    then an equalised linear layer gives one style vector [B,512]."""

    def __init__(self, channels: int, spatial: int):
        super().__init__()
        self.channels = channels
        self.spatial = spatial
        layers: list[nn.Module] = []
        for _ in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x)
        return self.linear(x.view(-1, self.channels))


def upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The FPN merge: x resized bilinearly (corners aligned) to y's size, plus y."""
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y
