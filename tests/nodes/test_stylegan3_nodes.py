"""The nodes on a StyleGAN3: an NVIDIA snapshot in models/stylegan loads with the (renamed) loader and
goes through sampling, rendering, blending, adaptation, saving and adapters like a StyleGAN2."""

from __future__ import annotations

import torch

from tests.stylegan3.writers import make_stylegan3, stylegan3_pickle_bytes


def node(pack, node_id):
    return pack.NODE_CLASS_MAPPINGS[node_id]()


def load_snapshot(pack, bridge, tmp_path, variant="r"):
    folder = tmp_path / "models" / "stylegan"
    folder.mkdir(parents=True, exist_ok=True)
    G = make_stylegan3(variant=variant)
    (folder / f"stylegan3-{variant}-tiny.pkl").write_bytes(stylegan3_pickle_bytes(G, tmp_path / "executed"))
    listed = pack.NODE_CLASS_MAPPINGS["NADA_LoadStyleGAN2"].INPUT_TYPES()["required"]["model_name"][0]
    assert f"stylegan3-{variant}-tiny.pkl" in listed
    (loaded,) = node(pack, "NADA_LoadStyleGAN2").load(f"stylegan3-{variant}-tiny.pkl")
    assert not (tmp_path / "executed").exists()
    return G, loaded


def test_loader_keeps_its_id_and_names_both_families(pack):
    assert "NADA_LoadStyleGAN2" in pack.NODE_CLASS_MAPPINGS
    assert "3" in pack.NODE_DISPLAY_NAME_MAPPINGS["NADA_LoadStyleGAN2"]


def test_stylegan3_snapshot_loads_and_samples_like_nvidias_weights(pack, bridge, tmp_path):
    G, loaded = load_snapshot(pack, bridge, tmp_path)
    assert type(loaded).__name__ == "StyleGAN3Generator" and loaded.config.variant == "stylegan3-r"
    (latent,) = node(pack, "NADA_LatentFromSeed").make(loaded, "0-3", 0.7)
    (images,) = node(pack, "NADA_RenderLatent").render(loaded, latent, "random")
    (sampled,) = node(pack, "NADA_Sample").sample(loaded, "0-3", 0.7, "const")
    assert images.shape == (4, 16, 16, 3) and 0 <= images.min() and images.max() <= 1
    torch.testing.assert_close(images, sampled)  # no noise inputs: every noise mode renders alike
    with torch.no_grad():
        ref = G.synthesis(latent["ws"])  # our writer's generator, outside the pack
    torch.testing.assert_close(images, ((ref.permute(0, 2, 3, 1) + 1) / 2).clamp(0, 1), atol=1e-6, rtol=0)


def test_stylegan3_adapt_blend_and_save_nodes(pack, bridge, tmp_path, tiny_clip, tiny_direction):
    _, G = load_snapshot(pack, bridge, tmp_path, variant="t")
    before = {k: v.clone() for k, v in G.state_dict().items()}
    with torch.inference_mode():
        out = node(pack, "NADA_Adapt").adapt(G, tiny_clip, tiny_direction, steps=2, learning_rate=0.002,
                                             layers="texture", train_seed=0, preview_every=1)  # fmt: skip
    G2 = out["result"][0]
    assert all(torch.equal(v, before[k]) for k, v in G.state_dict().items())
    changed = {k for k, v in G2.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("synthesis.") for k in changed)
    (half,) = node(pack, "NADA_BlendGenerators").blend(G, G2, 0.5)
    assert type(half).__name__ == "StyleGAN3Generator"
    rel = node(pack, "NADA_SaveGenerator").save(G2, "sg3/adapted", "safetensors")["ui"]["nada_saved"][0]
    (back,) = node(pack, "NADA_LoadStyleGAN2").load(rel)
    assert back.fingerprint() == G2.fingerprint() and back.config == G2.config
