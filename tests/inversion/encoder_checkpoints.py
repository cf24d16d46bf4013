"""Writers of pSp / e4e / ReStyle checkpoints in the layout the authors' training code saves.

From reading their coaches' `__get_save_dict` (no code of theirs is used): `torch.save` of
    {"state_dict": net.state_dict(),   # "encoder.*" (the encoder module) + "decoder.*" (rosinality G)
     "opts": vars(opts),               # every training option, plain Python values
     "latent_avg": tensor [n_styles, 512]}  # e4e: only with --start_from_latent_avg
(ReStyle-e4e adds "global_step", "optimizer" (an optimizer state_dict) and "best_val_loss").
The encoder weights come from our own `EncoderNet`, whose parameter names are the authors'.

Random weights for 512-wide encoders are large (pSp's style heads alone are ~200M values), so
weights are views into a few shared pools of random numbers at random offsets: every tensor has its
own values, the file stays a few tens of MB, and the loader sees an ordinary torch file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nada.inversion.backbones import EqualLinear
from nada.inversion.encoders import ENCODER_TYPES, EncoderNet, EncoderSpec
from nada.stylegan2 import Generator, GeneratorConfig
from tests.stylegan2.checkpoint_writers import rosinality_state_dict

# encoder4editing options/train_options.py defaults (+ "device", which the coach sets before saving).
E4E_OPTS: dict[str, Any] = {
    "exp_dir": "experiment",
    "dataset_type": "ffhq_encode",
    "encoder_type": "Encoder4Editing",
    "batch_size": 4,
    "test_batch_size": 2,
    "workers": 4,
    "test_workers": 2,
    "learning_rate": 0.0001,
    "optim_name": "ranger",
    "train_decoder": False,
    "start_from_latent_avg": True,
    "lpips_type": "alex",
    "lpips_lambda": 0.8,
    "id_lambda": 0.1,
    "l2_lambda": 1.0,
    "stylegan_weights": "pretrained_models/stylegan2-ffhq-config-f.pt",
    "stylegan_size": 1024,
    "checkpoint_path": None,
    "max_steps": 500000,
    "image_interval": 100,
    "board_interval": 50,
    "val_interval": 1000,
    "save_interval": None,
    "w_discriminator_lambda": 0.1,
    "w_discriminator_lr": 2e-05,
    "r1": 10,
    "d_reg_every": 16,
    "use_w_pool": True,
    "w_pool_size": 50,
    "delta_norm": 2,
    "delta_norm_lambda": 0.0002,
    "progressive_steps": [0, 20000, 22000],
    "progressive_start": None,
    "progressive_step_every": 2000,
    "save_training_data": False,
    "sub_exp_dir": None,
    "keep_optimizer": False,
    "resume_training_from_ckpt": None,
    "update_param_list": None,
    "device": "cuda:0",
}
# restyle-encoder options/train_options.py (ReStyle-e4e: e4e_train_options.py adds the e4e keys).
RESTYLE_OPTS: dict[str, Any] = {
    "exp_dir": "experiment",
    "dataset_type": "ffhq_encode",
    "encoder_type": "BackboneEncoder",
    "input_nc": 6,
    "output_size": 1024,
    "batch_size": 4,
    "test_batch_size": 2,
    "workers": 4,
    "test_workers": 2,
    "learning_rate": 0.0001,
    "optim_name": "ranger",
    "train_decoder": False,
    "start_from_latent_avg": False,
    "lpips_lambda": 0.8,
    "id_lambda": 0.1,
    "l2_lambda": 1.0,
    "w_norm_lambda": 0,
    "moco_lambda": 0,
    "stylegan_weights": "pretrained_models/stylegan2-ffhq-config-f.pt",
    "checkpoint_path": None,
    "max_steps": 500000,
    "image_interval": 100,
    "board_interval": 50,
    "val_interval": 1000,
    "save_interval": None,
    "n_iters_per_batch": 5,
    "device": "cuda:0",
}
RESTYLE_E4E_EXTRA: dict[str, Any] = {
    "w_discriminator_lambda": 0.1,
    "w_discriminator_lr": 2e-05,
    "r1": 10,
    "d_reg_every": 16,
    "use_w_pool": True,
    "w_pool_size": 50,
    "delta_norm": 2,
    "delta_norm_lambda": 0.0002,
    "progressive_steps": None,
    "progressive_start": 20000,
    "progressive_step_every": 2000,
    "save_training_data": False,
    "sub_exp_dir": None,
    "resume_training_from_ckpt": None,
    "update_param_list": None,
}
BACKBONE = {
    "ResNetBackboneEncoder": "resnet34",
    "ResNetGradualStyleEncoder": "resnet34",
    "ResNetProgressiveBackboneEncoder": "resnet34",
}


def make_decoder(resolution: int, seed: int) -> Generator:
    """A rosinality-shaped (512-wide, 8-layer mapping) generator with seeded random weights."""
    torch.manual_seed(seed)
    G = Generator(GeneratorConfig(img_resolution=resolution)).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in G.state_dict().items():
            if name.endswith(".bias") or name.endswith("noise_strength"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
        G.mapping.w_avg.copy_(torch.randn(512, generator=g) * 0.3)
    return G


class _Pools:
    """Random numbers of one scale per fan-in, handed out as views at random offsets."""

    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(seed)
        self.pools: dict[int, torch.Tensor] = {}

    def take(self, shape: torch.Size, fan_in: int) -> torch.Tensor:
        numel = math.prod(shape)
        pool = self.pools.get(fan_in)
        if pool is None or pool.numel() < 2 * numel:
            # std 0.8/sqrt(fan_in) keeps activations finite through 24 un-normalised residual units.
            pool = torch.randn(max(2 * numel, 1 << 16), generator=self.g) * (0.8 / math.sqrt(fan_in))
            self.pools[fan_in] = pool
        start = int(torch.randint(0, pool.numel() - numel + 1, (1,), generator=self.g))
        return pool[start : start + numel].view(shape)


def encoder_state(spec: EncoderSpec, seed: int) -> dict[str, torch.Tensor]:
    """Seeded random weights for the encoder of `spec`, with the authors' parameter names."""
    with torch.device("meta"):
        net = EncoderNet(spec)
    pools, g = _Pools(seed), torch.Generator().manual_seed(seed + 1)
    out = {}
    for prefix, m in net.named_modules():
        p = f"{prefix}." if prefix else ""
        if isinstance(m, nn.BatchNorm2d):
            out[p + "weight"] = torch.rand(m.weight.shape, generator=g) + 0.5
            out[p + "bias"] = torch.randn(m.bias.shape, generator=g) * 0.1
            out[p + "running_mean"] = torch.randn(m.running_mean.shape, generator=g) * 0.1
            out[p + "running_var"] = torch.rand(m.running_var.shape, generator=g) + 0.5
            out[p + "num_batches_tracked"] = torch.tensor(1234)
        elif isinstance(m, nn.PReLU):
            out[p + "weight"] = torch.rand(m.weight.shape, generator=g) * 0.5
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            out[p + "weight"] = pools.take(m.weight.shape, math.prod(m.weight.shape[1:]))
            if m.bias is not None:
                out[p + "bias"] = torch.randn(m.bias.shape, generator=g) * 0.1
        elif isinstance(m, EqualLinear):  # stored N(0, 1), scaled by 1/sqrt(in) when run
            out[p + "weight"] = torch.randn(m.weight.shape, generator=g)
            out[p + "bias"] = torch.randn(m.bias.shape, generator=g) * 0.1
    assert set(out) == set(net.state_dict()), "every encoder tensor gets a value"
    return out


def write_checkpoint(
    path: Path,
    encoder_type: str = "Encoder4Editing",
    resolution: int = 16,
    seed: int = 0,
    start_from_latent_avg: bool = True,
    opts: dict[str, Any] | None = None,
) -> Path:
    """An encoder checkpoint as the authors' coach for `encoder_type` writes it."""
    kind, head = ENCODER_TYPES[encoder_type]
    restyle = kind.startswith("restyle") or opts is not None and opts.get("input_nc") == 6
    num_ws = 2 * int(math.log2(resolution)) - 2
    spec = EncoderSpec(
        kind=kind,
        encoder_type=encoder_type,
        backbone=BACKBONE.get(encoder_type, "ir_se50"),
        head=head,
        input_channels=6 if restyle else 3,
        num_ws=num_ws,
        w_dim=512,
        adds_latent_avg=True,
        decoder_resolution=resolution,
    )
    G = make_decoder(resolution, seed)
    state = {f"encoder.{k}": v for k, v in encoder_state(spec, seed).items()}
    state.update({f"decoder.{k}": v for k, v in rosinality_state_dict(G).items()})
    if restyle:
        options = {**RESTYLE_OPTS, "encoder_type": encoder_type, "output_size": resolution}
        if kind == "restyle_e4e":
            options.update(RESTYLE_E4E_EXTRA)
    else:
        options = {
            **E4E_OPTS,
            "encoder_type": encoder_type,
            "stylegan_size": resolution,
            "start_from_latent_avg": start_from_latent_avg,
        }
    options.update(opts or {})
    # latent_avg: the decoder's average w repeated per style, as __load_latent_avg(ckpt, repeat=n) leaves it.
    latent_avg = G.mapping.w_avg.clone().repeat(num_ws, 1)
    ckpt: dict[str, Any] = {"state_dict": state, "opts": options}
    if restyle or start_from_latent_avg:
        ckpt["latent_avg"] = latent_avg
    if kind == "restyle_e4e":
        params = [torch.zeros(3, requires_grad=True)]
        ckpt.update(
            {"global_step": 20000, "optimizer": torch.optim.Adam(params, lr=1e-4).state_dict(), "best_val_loss": None}
        )
    torch.save(ckpt, path)
    return path
