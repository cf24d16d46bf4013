"""Load CLIP / Ensemble / Encode Prompt Pair / Image Direction / Combine on the bundled tiny CLIP."""

from __future__ import annotations

import pytest
import torch

from tests.nodes.fixtures import clip_weights_name, install_test_models, tiny_clip_architecture


def node(pack, node_id):
    return pack.NODE_CLASS_MAPPINGS[node_id]()


def test_load_clip_lists_and_loads_a_local_file_with_its_config(pack, bridge, tmp_path):
    install_test_models(pack, stylegan_dir=tmp_path / "models" / "stylegan", base=tmp_path)
    choices = pack.NODE_CLASS_MAPPINGS["NADA_LoadCLIP"].INPUT_TYPES()["required"]["weights"][0]
    assert choices[0] == "(pretrained tag)" and clip_weights_name() in choices
    assert not any(c.endswith(".json") for c in choices)  # configs are read next to their weights
    with torch.inference_mode():
        (clip,) = node(pack, "NADA_LoadCLIP").load(tiny_clip_architecture(), clip_weights_name(), "")
    assert clip.name == tiny_clip_architecture()
    assert all(not p.requires_grad for p in clip.model.parameters())


def test_text_direction_templates(pack, bridge, tiny_clip):
    enc = node(pack, "NADA_EncodePromptPair")
    with torch.inference_mode():
        (plain,) = enc.encode(tiny_clip, "red circle", "blue square", "none")
        (custom,) = enc.encode(tiny_clip, "red circle", "blue square", "custom", "a {}.\na drawing of a {}.")
        (imagenet,) = enc.encode(tiny_clip, "red circle", "blue square", "imagenet")
    assert plain.provenance["templates"] == "none"
    assert custom.provenance["template_count"] == 2
    assert imagenet.provenance["template_count"] == 79
    v = plain.vector(tiny_clip.name)
    assert torch.isclose(v.norm(), torch.tensor(1.0)) and not v.is_inference()
    with pytest.raises(bridge.NodeError, match="one per line"):
        enc.encode(tiny_clip, "red circle", "blue square", "custom", "no placeholder")


def test_image_direction_from_images_or_generator_samples(pack, bridge, tiny_clip, tiny_generator):
    target = torch.rand(2, 24, 24, 3, generator=torch.Generator().manual_seed(0))
    source = torch.rand(1, 20, 20, 3, generator=torch.Generator().manual_seed(1))
    nd = node(pack, "NADA_ImageDirection")
    with torch.inference_mode():
        (from_images,) = nd.encode(tiny_clip, target, source_images=source)
        (from_generator,) = nd.encode(tiny_clip, target, generator=tiny_generator, source_samples=3)
    assert from_images.provenance["source"] == "images"
    assert from_generator.provenance["source_count"] == 3
    with pytest.raises(bridge.NodeError, match="source_images or a generator"):
        nd.encode(tiny_clip, target)


def test_combine_and_ensemble(pack, bridge, tiny_clip):
    with torch.inference_mode():
        (a,) = node(pack, "NADA_EncodePromptPair").encode(tiny_clip, "red circle", "blue square", "none")
        (b,) = node(pack, "NADA_EncodePromptPair").encode(tiny_clip, "red circle", "green triangle", "none")
        (same,) = node(pack, "NADA_CombineDirections").combine(a, 1.0, b, 0.0)
        (ens,) = node(pack, "NADA_CLIPEnsemble").combine(tiny_clip, 1.0, tiny_clip, 0.0)
    torch.testing.assert_close(same.vector(tiny_clip.name), a.vector(tiny_clip.name))
    assert [(m.name, m.weight) for m in ens] == [(tiny_clip.name, 1.0)]  # weight 0 is left out
