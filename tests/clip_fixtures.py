"""A micro CLIP made by the tests themselves (random weights, tiny towers) for the loading tests.

No test functions here. The micro model uses open_clip's standard tokenizer, so its token table is the
only sizeable tensor (49408 x 16 floats, about 3 MB on disk).
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file

MICRO_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 16, "head_width": 8, "patch_size": 8, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1, "mlp_ratio": 2.0},
}


def make_micro_clip(seed: int = 0) -> torch.nn.Module:
    """The micro CLIP as a plain open_clip module with seeded random weights (eval mode)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.CLIP(**MICRO_CONFIG)
    return model.eval()


def write_micro_clip(folder: Path, seed: int = 0) -> tuple[Path, Path, torch.nn.Module]:
    """config.json + weights.safetensors in `folder`; returns (config, weights, the module)."""
    folder.mkdir(parents=True, exist_ok=True)
    model = make_micro_clip(seed)
    config, weights = folder / "config.json", folder / "weights.safetensors"
    config.write_text(json.dumps(MICRO_CONFIG))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return config, weights, model


def micro_clip_ensemble(tmp_path_factory):
    """Two micro CLIPs (random weights, fast) as a weighted ensemble A x1.0 + B x0.5: the run's mechanics
    do not need a CLIP that knows anything."""
    from nada.clip import clip_ensemble, load_clip

    a = write_micro_clip(tmp_path_factory.mktemp("a"), seed=0)
    b = write_micro_clip(tmp_path_factory.mktemp("b"), seed=1)
    return clip_ensemble(
        [(load_clip(a[0], weights=a[1], name="A"), 1.0), (load_clip(b[0], weights=b[1], name="B"), 0.5)]
    )
