"""Load StyleGAN2 and Save Generator: files round-trip through output/stylegan and show in the loader."""

from __future__ import annotations

import os
import time

import torch


def nodes(pack):
    m = pack.NODE_CLASS_MAPPINGS
    return m["NADA_LoadStyleGAN2"](), m["NADA_SaveGenerator"]()


def test_save_then_load_round_trips_and_never_overwrites(pack, bridge, tiny_generator, tmp_path):
    loader, saver = nodes(pack)
    out1 = saver.save(tiny_generator, "nada/roundtrip", "safetensors")
    out2 = saver.save(tiny_generator, "nada/roundtrip", "safetensors")
    assert out1["ui"]["nada_saved"] == ["nada/roundtrip_00001.safetensors"]
    assert out2["ui"]["nada_saved"] == ["nada/roundtrip_00002.safetensors"]
    listed = pack.NODE_CLASS_MAPPINGS["NADA_LoadStyleGAN2"].INPUT_TYPES()["required"]["model_name"][0]
    assert "nada/roundtrip_00001.safetensors" in listed
    (G,) = loader.load("nada/roundtrip_00001.safetensors")
    assert G.config == tiny_generator.config
    assert G.fingerprint() == tiny_generator.fingerprint()
    z = torch.randn(2, G.config.z_dim, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(G(z), tiny_generator(z))


def test_rosinality_export_loads_back(pack, bridge, tiny_generator, tmp_path):
    loader, saver = nodes(pack)
    out = saver.save(tiny_generator, "export/tiny", "rosinality .pt")
    rel = out["ui"]["nada_saved"][0]
    assert rel == "export/tiny_00001.pt"
    (G,) = loader.load(rel)
    z = torch.randn(2, G.config.z_dim, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(G(z), tiny_generator(z), atol=1e-5, rtol=1e-5)


def test_loader_reruns_when_the_file_is_replaced(pack, bridge, tiny_generator, tmp_path):
    _, saver = nodes(pack)
    rel = saver.save(tiny_generator, "swap", "safetensors")["ui"]["nada_saved"][0]
    cls = pack.NODE_CLASS_MAPPINGS["NADA_LoadStyleGAN2"]
    first = cls.IS_CHANGED(rel)
    path = tmp_path / "output" / "stylegan" / rel
    later = time.time() + 5
    os.utime(path, (later, later))
    assert cls.IS_CHANGED(rel) != first
