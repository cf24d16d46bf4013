"""The description of an adaptation run: one frozen dataclass, the single source of every front end.

Each field carries an `Option` in its metadata: help text, valid range or choices, whether it changes
the result (the run key of `nada.runs` hashes only those), and the widget hints of the ComfyUI node.
`nada.cli` builds its options from it, `nodes/adapt.py` its inputs, `validate()` its checks; a bad
value raises `ConfigError` whose `field` names the field, so a front end can name its own input.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .. import layers as layer_groups
from ..errors import ConfigError
from ..losses import DELTA_EPS

OFFICIAL_LR_SCALE = 0.8  # g_reg_every / (g_reg_every + 1) with g_reg_every = 4 (nada-spec 2.11)
OFFICIAL_BETAS = (0.0, 0.99**0.8)
PARAMETERIZATIONS = ("full", "lora", "modulation")
# Learning-rate multipliers of the small parameterisations, so that `lr` means the same amount of
# change for all three: at the official lr a lora (B starts at 0) or a style scale moves the images
# far less per step than full training. Measured with the tiny CLIP, 80 steps, 32 px generator, red->blue
# and blue->green: these multipliers bring lora and modulation to the zero-shot and colour shift of full.
PARAMETERIZATION_LR_SCALE = {"full": 1.0, "lora": 4.0, "modulation": 10.0}
AUTOCAST_CHOICES = ("off", "bf16", "fp16")
LOSS_FIELDS = ("lambda_direction", "lambda_global", "lambda_manifold", "lambda_patch")
# What `compat="official"` sets: every place where our default differs from the official code
# (rinongal/StyleGAN-nada), at the official behaviour. docs/fidelity.md explains each one.
OFFICIAL_SWITCHES = {
    "noise": "independent",
    "crossover": "per_generator",
    "adam_reset": "never",
    "w_mapping": "official",
    "text_targets": "official",
    "patch_templates": "parts_in_imagenet",
    "delta_floor": 0.0,
    "clip_antialias": "off",
    # Not a different formula, but the official code runs rosinality's fused modulated convolution, so
    # the compatible step rounds the way it does.
    "fused_modconv": True,
}


@dataclasses.dataclass(frozen=True)
class Option:
    """What a front end needs to know about one config field.

    kind: "int", "float", "choice", "layers" (a preset, "auto" or unit names) or "checkpointing".
    lo/hi: the valid range (hi None = unbounded; open_lo = strictly above lo). affects_result: False
    for display and memory knobs, which the run key leaves out. ui_*: the node's widget where it
    deliberately differs from the Python default or the valid range (e.g. a slider's useful maximum).
    """

    help: str
    kind: str = "int"
    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False
    choices: tuple[Any, ...] = ()
    optional: bool = False  # None is allowed (means "derive it")
    affects_result: bool = True
    ui_default: Any = None
    ui_lo: float | None = None
    ui_hi: float | None = None
    ui_step: float | None = None
    ui_round: float | None = None


def option(default: Any, help: str, **kw: Any) -> Any:
    return dataclasses.field(default=default, metadata={"nada": Option(help=help, **kw)})


@dataclasses.dataclass(frozen=True)
class AdaptConfig:
    """Knobs of one adaptation; defaults follow the official Colab (nada-spec 8.4)."""

    steps: int = option(
        150,
        "optimisation steps (Colab: 151; style changes 200-400, image targets 400-600)",
        lo=0,
        hi=1_000_000,
        ui_lo=1,
        ui_hi=100_000,
    )
    batch: int = option(2, "image pairs per step (2 is the paper's)", lo=1, hi=4096, ui_hi=64)
    lr: float = option(
        0.002,
        "learning rate (0.002 is the paper's; Adam runs at 0.8x, see effective_lr)",
        kind="float",
        lo=0.0,
        open_lo=True,
        ui_lo=0.00001,
        ui_hi=0.1,
        ui_step=0.0001,
        ui_round=0.00001,
    )
    seed: int = option(0, "seed of every random draw of the run; same inputs + seed = same result", lo=0, hi=2**63 - 1)
    layers: str | tuple[str, ...] = option(
        "all",
        f"which layers train: 'auto' (adaptive top-k), a preset ({', '.join(layer_groups.PRESETS)}) "
        "or unit names such as b8,b16.conv0",
        kind="layers",
    )
    auto_k: int | None = option(
        None, "auto: W+ indices trained per step (default: two thirds of them)", lo=1, hi=4096, optional=True, ui_hi=64
    )
    select_every: int = option(1, "auto: re-select the layers every N steps (1 = the paper)", lo=1, ui_hi=100_000)
    select_batch: int = option(8, "auto: latents used to rank the W+ indices", lo=1, hi=4096, ui_hi=64)
    select_lr: float = option(0.01, "auto: SGD step size on the W+ codes", kind="float", lo=0.0, open_lo=True)
    select_iters: int = option(1, "auto: SGD steps on the W+ codes", lo=1, hi=1000)
    mixing: float = option(
        0.0,
        "probability that a pair uses style mixing (0.9 helps shape changes)",
        kind="float",
        lo=0.0,
        hi=1.0,
        ui_step=0.05,
    )
    lambda_direction: float = option(
        1.0, "weight of the directional CLIP loss (the method)", kind="float", lo=0.0, ui_hi=10.0, ui_step=0.1
    )
    lambda_global: float = option(
        0.0, "weight of the global CLIP loss toward the target", kind="float", lo=0.0, ui_hi=10.0, ui_step=0.1
    )
    lambda_manifold: float = option(
        0.0, "weight of the manifold-angle loss", kind="float", lo=0.0, ui_hi=10.0, ui_step=0.1
    )
    lambda_patch: float = option(
        0.0, "weight of the patch-directional loss (local textures)", kind="float", lo=0.0, ui_hi=10.0, ui_step=0.1
    )
    patch_fraction: float = option(
        0.5,
        "patch side as a fraction of the image side (official: 510 px at 1024)",
        kind="float",
        lo=0.0,
        hi=1.0,
        open_lo=True,
    )
    patch_count: int = option(1, "patches per image", lo=1, hi=64)
    preview_every: int = option(
        0,
        "render previews every N steps (0 = only before and after)",
        lo=0,
        affects_result=False,
        ui_default=25,
        ui_hi=100_000,
    )
    preview_count: int = option(4, "preview images: seeds 0..preview_count-1", lo=0, hi=256, affects_result=False)
    preview_truncation: float = option(
        0.7,
        "truncation of the previews (official sample_truncation)",
        kind="float",
        lo=-10.0,
        hi=10.0,
        affects_result=False,
    )
    gradient_checkpointing: bool | str = option(
        "auto",
        "recompute activations to save memory: auto (on for CUDA at >= 512 px), on or off",
        kind="checkpointing",
        choices=("auto", True, False),
        affects_result=False,
    )
    fused_modconv: bool = option(
        False,
        "train with the modulated convolutions fused into grouped ones (on) or as a shared-weight convolution "
        "between two scalings (off: measured ~0.85x the step time on the CPU, and NVIDIA's training form); "
        "same result up to float rounding (so part of the run key: a continued run keeps its bits)",
        kind="checkpointing",
        choices=(True, False),
    )
    parameterization: str = option(
        "full",
        "full = train the weights (the paper); lora = low-rank weight updates; modulation = "
        "per-channel style scales (lora/modulation results can be saved as small adapters)",
        kind="choice",
        choices=PARAMETERIZATIONS,
    )
    rank: int = option(4, "lora: rank of the update of each conv weight", lo=1, hi=4096, ui_hi=256)
    autocast: str = option(
        "off",
        "generator precision: off = float32 (the paper); bf16 or fp16 = mixed precision autocast of the "
        "generator's convolutions (less memory and faster on GPUs; fp16 can underflow, prefer bf16)",
        kind="choice",
        choices=AUTOCAST_CHOICES,
    )
    # The fidelity switches (docs/fidelity.md): each names one place where our default departs from
    # the official code, with the official behaviour as the other choice.
    compat: str = option(
        "ours",
        "official = every fidelity switch below set to the official code's behaviour (overrides them); "
        "ours = the switches as given",
        kind="choice",
        choices=("ours", "official"),
    )
    noise: str = option(
        "shared",
        "noise maps of a pair: shared by the frozen and trainable image (dI is the adaptation only) or "
        "independent (official: each generator draws its own)",
        kind="choice",
        choices=("shared", "independent"),
    )
    crossover: str = option(
        "shared",
        "style mixing draws: shared = a coin and a crossover per pair, used by both images; per_generator = "
        "one coin per batch and one crossover per generator call (official)",
        kind="choice",
        choices=("shared", "per_generator"),
    )
    adam_reset: str = option(
        "after_first_step",
        "reset Adam's moments after the first step, whose dI is exactly zero with shared noise (never = official)",
        kind="choice",
        choices=("after_first_step", "never"),
    )
    w_mapping: str = option(
        "consumers",
        "auto: W+ index -> layers: consumers = the layers that read it; official = [conv1, to_rgb1, convs...], "
        "shifted by one from the layers that read the index",
        kind="choice",
        choices=("consumers", "official"),
    )
    text_targets: str = option(
        "templated",
        "target text of the global loss and the layer selection: templated = the template-averaged target; "
        "official = 'a {target}' for the global loss and the bare target for selection (text directions only)",
        kind="choice",
        choices=("templated", "official"),
    )
    patch_templates: str = option(
        "parts",
        "patch loss directions: parts = the part prompts as they are; parts_in_imagenet = each part prompt "
        "wrapped again in the ImageNet templates (official; text directions only)",
        kind="choice",
        choices=("parts", "parts_in_imagenet"),
    )
    delta_floor: float = option(
        DELTA_EPS,
        "floor on |dI| in the directional losses (keeps an unchanged pair finite); 0 = official: no floor, an "
        "exactly zero dI re-encodes the trainable image + 1e-6",
        kind="float",
        lo=0.0,
        ui_step=0.0001,
    )
    clip_antialias: str = option(
        "on",
        "antialiased resize of the images for CLIP (on) or plain bicubic (off = official, torchvision < 0.17)",
        kind="choice",
        choices=("on", "off"),
    )

    def __post_init__(self) -> None:
        if isinstance(self.layers, list):
            object.__setattr__(self, "layers", tuple(self.layers))
        if self.compat == "official":
            for name, value in OFFICIAL_SWITCHES.items():
                object.__setattr__(self, name, value)
        self.validate()

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            check_value(f.name, getattr(self, f.name), f.metadata["nada"])
        if not any(getattr(self, n) > 0 for n in LOSS_FIELDS):
            raise ConfigError(
                "all loss weights are 0: set lambda_direction (the method) to 1", field="lambda_direction"
            )

    @staticmethod
    def options() -> dict[str, tuple[Any, Option]]:
        """{field name: (default, Option)} in declaration order: what front ends generate from."""
        return {f.name: (f.default, f.metadata["nada"]) for f in dataclasses.fields(AdaptConfig)}

    @property
    def auto(self) -> bool:
        return self.layers == layer_groups.AUTO

    @property
    def effective_lr(self) -> float:
        """Adam's learning rate: lr * 0.8 (official), times the parameterisation's multiplier."""
        return self.lr * OFFICIAL_LR_SCALE * PARAMETERIZATION_LR_SCALE[self.parameterization]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["layers"] = self.layers if isinstance(self.layers, str) else list(self.layers)
        return d

    def result_dict(self) -> dict[str, Any]:
        """The fields that change the trained weights (what a run key hashes)."""
        opts = self.options()
        return {k: v for k, v in self.to_dict().items() if opts[k][1].affects_result}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AdaptConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown AdaptConfig keys {unknown}")
        kw = dict(d)
        if isinstance(kw.get("layers"), list):
            kw["layers"] = tuple(kw["layers"])
        return cls(**kw)


def check_value(name: str, v: Any, opt: Option) -> None:
    """Raise `ConfigError(field=name)` unless `v` is a valid value of the field."""
    if v is None and opt.optional:
        return
    if opt.kind == "int":
        if isinstance(v, bool) or not isinstance(v, int) or v < opt.lo or (opt.hi is not None and v > opt.hi):
            rng = f">= {opt.lo}" if opt.hi is None else f"in {opt.lo}..{opt.hi}"
            raise ConfigError(f"AdaptConfig.{name} must be an integer {rng}, got {v!r}", field=name)
    elif opt.kind == "float":
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and (v > opt.lo if opt.open_lo else v >= opt.lo) and (opt.hi is None or v <= opt.hi)
        if not ok:
            rng = f"{'>' if opt.open_lo else '>='} {opt.lo}" + ("" if opt.hi is None else f" and <= {opt.hi}")
            raise ConfigError(f"AdaptConfig.{name} must be a finite number {rng}, got {v!r}", field=name)
    elif opt.kind in ("choice", "checkpointing"):
        if v not in opt.choices:
            shown = ", ".join(str(c) for c in opt.choices)
            raise ConfigError(f"AdaptConfig.{name} must be one of {shown}, got {v!r}", field=name)
    elif opt.kind == "layers":
        if isinstance(v, str):
            if v != layer_groups.AUTO and v not in layer_groups.PRESETS:
                raise ConfigError(
                    f"AdaptConfig.layers {v!r} is unknown; use 'auto', one of "
                    f"{', '.join(layer_groups.PRESETS)}, or a list of unit names such as ('b8', 'b16.conv0')",
                    field=name,
                )
        elif not isinstance(v, tuple) or not v or not all(isinstance(x, str) and x for x in v):
            raise ConfigError(
                "AdaptConfig.layers must be a preset name, 'auto', or a non-empty list of names", field=name
            )
    else:  # a programming error in this file, not a user's
        raise AssertionError(f"unknown option kind {opt.kind!r}")
