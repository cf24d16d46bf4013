"""Adapter nodes: adapt with lora, save the adapter, load it, apply it with strengths."""

from __future__ import annotations

import os

import pytest
import torch

import nada


def render(G):
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(4))
    return G(z, noise_mode="const")


@pytest.fixture
def adapted(pack, tiny_generator, tiny_clip, tiny_direction):
    cfg = nada.AdaptConfig(steps=2, parameterization="modulation")
    return nada.adapt(tiny_generator, tiny_clip, tiny_direction, cfg).generator


def test_save_load_apply_round_trip(pack, bridge, tiny_generator, adapted):
    nodes = pack.NODE_CLASS_MAPPINGS
    ui = nodes["NADA_SaveAdapter"]().save(adapted, "sketch", half_precision=False)
    assert "saved stylegan_adapters/sketch_00001.safetensors" in ui["ui"]["text"][0]
    names = nodes["NADA_LoadAdapter"].INPUT_TYPES()["required"]["adapter_name"][0]
    assert names == ["sketch_00001.safetensors"]
    (adapter,) = nodes["NADA_LoadAdapter"]().load(names[0])
    before = {k: v.clone() for k, v in tiny_generator.state_dict().items()}
    (full,) = nodes["NADA_ApplyAdapters"]().apply(tiny_generator, True, adapter_1=adapter, strength_1=1.0)
    assert torch.equal(render(full), render(adapted))
    (none,) = nodes["NADA_ApplyAdapters"]().apply(tiny_generator, True, adapter_1=adapter, strength_1=0.0)
    assert torch.equal(render(none), render(tiny_generator))
    for k, v in tiny_generator.state_dict().items():
        assert torch.equal(v, before[k])
    # A second save never overwrites the first.
    nodes["NADA_SaveAdapter"]().save(adapted, "sketch", half_precision=True)
    folder = os.path.join(bridge.output_directory(), bridge.ADAPTER_FOLDER)
    assert sorted(os.listdir(folder)) == ["sketch_00001.safetensors", "sketch_00002.safetensors"]


def test_apply_refuses_an_adapter_of_another_base(pack, bridge, adapted):
    other = nada.Generator(adapted.config)
    with pytest.raises(bridge.NodeError, match="different base generator"):
        pack.NODE_CLASS_MAPPINGS["NADA_ApplyAdapters"]().apply(
            other, True, adapter_1=nada.adapter_of(adapted), strength_1=1.0
        )


def test_save_extracts_from_a_full_adaptation_or_says_what_to_connect(
    pack, bridge, tiny_generator, tiny_clip, tiny_direction
):
    full = nada.adapt(tiny_generator, tiny_clip, tiny_direction, nada.AdaptConfig(steps=2)).generator
    node = pack.NODE_CLASS_MAPPINGS["NADA_SaveAdapter"]()
    with pytest.raises(bridge.NodeError, match="connect base_generator"):
        node.save(full, "x", half_precision=False)
    ui = node.save(full, "x", half_precision=False, base_generator=tiny_generator, rank=0)
    (adapter,) = ui["result"]
    assert adapter.kind == "delta"
    (again,) = pack.NODE_CLASS_MAPPINGS["NADA_ApplyAdapters"]().apply(tiny_generator, True, adapter_1=adapter)
    # base + (adapted - base) is the adapted weight up to one float rounding per element.
    torch.testing.assert_close(render(again), render(full), atol=1e-5, rtol=0)
    assert "image error 0.0000" in ui["ui"]["text"][0]


def test_save_extracts_low_rank_names_it_and_the_loader_shows_the_name(
    pack, bridge, tiny_generator, tiny_clip, tiny_direction, caplog
):
    full = nada.adapt(tiny_generator, tiny_clip, tiny_direction, nada.AdaptConfig(steps=2)).generator
    nodes = pack.NODE_CLASS_MAPPINGS
    ui = nodes["NADA_SaveAdapter"]().save(full, "square", half_precision=False, base_generator=tiny_generator,
                                          max_error=0.02, name="squares")  # fmt: skip
    (adapter,) = ui["result"]
    assert adapter.kind == "lora" and adapter.metadata["image_error"]["value"] <= 0.02
    assert "adapter 'squares': lora rank" in ui["ui"]["text"][0]
    with caplog.at_level("INFO"):
        (loaded,) = nodes["NADA_LoadAdapter"]().load("square_00001.safetensors")
    assert loaded.name == "squares" and "adapter 'squares'" in caplog.text
    # Without a name input: the target prompt of the run.
    ui = nodes["NADA_SaveAdapter"]().save(full, "square", half_precision=True, base_generator=tiny_generator, rank=2)
    assert "adapter 'blue square': lora rank 2" in ui["ui"]["text"][0]
    with pytest.raises(bridge.NodeError, match="identical weights"):
        nodes["NADA_SaveAdapter"]().save(tiny_generator, "x", half_precision=True, base_generator=tiny_generator)


def test_adapt_node_trains_an_adapter_and_reuse_keeps_it(pack, bridge, tiny_generator, tiny_clip, tiny_direction):
    node = pack.NODE_CLASS_MAPPINGS["NADA_Adapt"]()
    args = dict(
        steps=2, learning_rate=0.002, layers="all", train_seed=0, preview_every=0, parameterization="lora", rank=2
    )
    out = node.adapt(tiny_generator, tiny_clip, tiny_direction, **args)
    G2 = out["result"][0]
    assert nada.adapter_of(G2) is not None and nada.adapter_of(G2).kind == "lora"
    again = node.adapt(tiny_generator, tiny_clip, tiny_direction, **args)["result"][0]
    assert nada.adapter_of(again) is not None and again is not G2
    assert torch.equal(render(again), render(G2))
