"""Latent from Seed / Render / Sample / Interpolate / Blend: ComfyUI IMAGE batches of the right shape."""

from __future__ import annotations

import pytest
import torch


def node(pack, node_id):
    return pack.NODE_CLASS_MAPPINGS[node_id]()


def test_latent_then_render_equals_sample_and_is_comfyui_image(pack, bridge, tiny_generator):
    (latent,) = node(pack, "NADA_LatentFromSeed").make(tiny_generator, "0-2,7", 0.7)
    assert latent["seeds"] == [0, 1, 2, 7]
    assert latent["ws"].shape == (4, tiny_generator.config.num_ws, tiny_generator.config.w_dim)
    (rendered,) = node(pack, "NADA_RenderLatent").render(tiny_generator, latent, "const")
    (sampled,) = node(pack, "NADA_Sample").sample(tiny_generator, "0-2,7", 0.7, "const")
    assert rendered.shape == (4, 16, 16, 3)
    assert rendered.dtype == torch.float32 and rendered.device.type == "cpu"
    assert 0.0 <= rendered.min() and rendered.max() <= 1.0
    torch.testing.assert_close(rendered, sampled)


def test_random_noise_is_per_seed_and_reproducible(pack, bridge, tiny_generator):
    (a,) = node(pack, "NADA_Sample").sample(tiny_generator, "3,4", 1.0, "random")
    (b,) = node(pack, "NADA_Sample").sample(tiny_generator, "4", 1.0, "random")
    torch.testing.assert_close(a[1:], b)


def test_render_refuses_a_latent_of_another_architecture(pack, bridge, tiny_generator):
    latent = {"ws": torch.zeros(1, 3, 32), "seeds": None}
    with pytest.raises(bridge.NodeError, match="Latent from Seed"):
        node(pack, "NADA_RenderLatent").render(tiny_generator, latent, "const")


def test_interpolation_frames_start_and_end_on_the_keyframes(pack, bridge, tiny_generator):
    (latent,) = node(pack, "NADA_LatentFromSeed").make(tiny_generator, "1,2", 1.0)
    (frames,) = node(pack, "NADA_InterpolateLatents").interpolate(latent, 5, "lerp", False)
    assert frames["ws"].shape[0] == 5 and frames["seeds"] is None
    torch.testing.assert_close(frames["ws"][0], latent["ws"][0])
    torch.testing.assert_close(frames["ws"][-1], latent["ws"][1])
    (images,) = node(pack, "NADA_RenderLatent").render(tiny_generator, frames, "const")
    assert images.shape == (5, 16, 16, 3)


def test_blend_ends_are_the_inputs_and_inputs_are_untouched(pack, bridge, tiny_generator):
    other = type(tiny_generator)(tiny_generator.config).eval()
    before = {k: v.clone() for k, v in tiny_generator.state_dict().items()}
    (g0,) = node(pack, "NADA_BlendGenerators").blend(tiny_generator, other, 0.0)
    (g1,) = node(pack, "NADA_BlendGenerators").blend(tiny_generator, other, 1.0)
    for k, v in tiny_generator.state_dict().items():
        assert torch.equal(v, before[k])
    for (k, p0), (_, p1), (_, pa), (_, pb) in zip(
        g0.named_parameters(), g1.named_parameters(), tiny_generator.named_parameters(), other.named_parameters()
    ):
        assert torch.equal(p0, pa) and torch.equal(p1, pb), k
