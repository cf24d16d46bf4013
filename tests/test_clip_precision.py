"""CLIP precision is decided by the device the model runs on, and applied by one function
(`ClipModel.on`) for ComfyUI, the CLI and Python alike (issue 13)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nada.clip import ClipModel, as_ensemble, clip_ensemble, resolve_precision
from nada.errors import ClipError


@pytest.fixture(scope="module")
def tiny_clip():
    from nada.demo import load_tiny_clip

    return load_tiny_clip()


def test_auto_is_fp16_on_cuda_and_fp32_elsewhere_and_forced_precisions_stay():
    assert resolve_precision("auto", "cuda") == "fp16"
    assert resolve_precision("auto", torch.device("cuda:1")) == "fp16"
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("auto", "mps") == "fp32"
    for forced in ("fp32", "fp16", "bf16"):
        assert resolve_precision(forced, "cuda") == forced and resolve_precision(forced, "cpu") == forced
    with pytest.raises(ClipError, match="use one of auto, fp32, fp16, bf16"):
        resolve_precision("half", "cpu")


def _layernorms(clip: ClipModel) -> list[torch.nn.Module]:
    return [m for m in clip.model.modules() if isinstance(m, torch.nn.LayerNorm)]


def test_casting_is_a_copy_with_half_weights_and_float32_layernorms_as_open_clip(tiny_clip):
    from open_clip.transformer import LayerNormFp32

    before = {k: v.clone() for k, v in tiny_clip.model.state_dict().items()}
    half = tiny_clip.on("cpu", "bf16")
    assert half is not tiny_clip and half.precision == "bf16" and half.requested_precision == "bf16"
    assert half.dtype == torch.bfloat16
    assert all(isinstance(m, LayerNormFp32) and m.weight.dtype == torch.float32 for m in _layernorms(half))
    # The original (ComfyUI caches it) is neither cast nor moved.
    assert tiny_clip.precision == "fp32" and tiny_clip.dtype == torch.float32
    for k, v in tiny_clip.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert tiny_clip.on("cpu") is tiny_clip  # auto on the CPU: fp32, nothing to do


def test_a_half_clip_embeds_and_backpropagates_close_to_fp32(tiny_clip):
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    for precision, tol in (("bf16", 0.999), ("fp16", 0.9999)):
        half = tiny_clip.on("cpu", precision)
        grads = []
        for clip in (tiny_clip, half):
            x = images.clone().requires_grad_(True)
            e = clip.encode_images(x)
            assert e.dtype == torch.float32  # embeddings come back in float32 whatever the precision
            e[:, 0].sum().backward()
            grads.append((e.detach(), x.grad))
        (e32, g32), (e16, g16) = grads
        assert F.cosine_similarity(e32, e16, dim=-1).min() > tol
        assert F.cosine_similarity(g32.flatten(), g16.flatten(), dim=0) > 0.99
        back = half.on("cpu", "fp32")
        assert back.dtype == torch.float32 and back.precision == "fp32"
        assert F.cosine_similarity(e32, back.encode_images(images), dim=-1).min() > tol


def test_an_ensemble_moves_every_member_through_the_same_policy(tiny_clip):
    both = clip_ensemble([(tiny_clip, 1.0), (tiny_clip.on("cpu", "bf16"), 1.0)])
    moved = as_ensemble(both).on("cpu")
    # A forced precision is kept on every device; auto resolves per device (fp32 on the CPU).
    assert [m.model.precision for m in moved] == ["fp32", "bf16"]
    assert [m.model.requested_precision for m in moved] == ["auto", "bf16"]
    assert moved.members[0].model is tiny_clip


def test_the_cli_offers_the_same_choices(tmp_path):
    from nada.cli import build_parser

    args = build_parser().parse_args(
        ["adapt", "--generator", "g.pt", "--out", str(tmp_path / "o.safetensors"), "--clip-precision", "bf16"]
    )
    assert args.clip_precision == "bf16"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["adapt", "--generator", "g.pt", "--out", "o", "--clip-precision", "half"])
