"""Load Encoder / Invert Image: files from models/stylegan_encoders, latents Render Latent accepts."""

from __future__ import annotations

import os

import pytest
import torch

from tests.inversion.encoder_checkpoints import write_checkpoint


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("encoder_files")
    return {
        "restyle": write_checkpoint(
            d / "restyle_e4e_test.pt", "ResNetProgressiveBackboneEncoder", resolution=16, seed=3
        ),
        "e4e": write_checkpoint(d / "e4e_test.pt", "Encoder4Editing", resolution=8, seed=4),
    }


def install(bridge, path) -> str:
    folder = bridge.folder_paths_of(bridge.ENCODER_FOLDER)[0]
    os.makedirs(folder, exist_ok=True)
    os.symlink(path, os.path.join(folder, path.name))
    return path.name


def comfy_image(h: int, w: int) -> torch.Tensor:  # ComfyUI IMAGE [B, H, W, 3] in 0..1
    return torch.rand(1, h, w, 3, generator=torch.Generator().manual_seed(0))


def test_load_encoder_lists_the_encoder_folder_and_loads(pack, bridge, checkpoints):
    name = install(bridge, checkpoints["restyle"])
    loader = pack.NODE_CLASS_MAPPINGS["NADA_LoadEncoder"]
    assert name in loader.INPUT_TYPES()["required"]["encoder_name"][0]
    assert loader.IS_CHANGED(name)
    enc, G = loader().load(name)
    assert (enc.kind, enc.num_ws, enc.spec.backbone) == ("restyle_e4e", 6, "resnet34")
    assert (G.num_ws, G.config.img_resolution) == (6, 16)  # the decoder stored in the same file


def test_invert_image_gives_a_latent_render_latent_reproduces(pack, bridge, checkpoints):
    enc, G = pack.NODE_CLASS_MAPPINGS["NADA_LoadEncoder"]().load(install(bridge, checkpoints["restyle"]))
    with torch.inference_mode():  # as ComfyUI runs nodes
        latent, recon = pack.NODE_CLASS_MAPPINGS["NADA_InvertImage"]().invert(enc, comfy_image(300, 300), 2, G)
        (rendered,) = pack.NODE_CLASS_MAPPINGS["NADA_RenderLatent"]().render(G, latent, "const")
    assert latent["seeds"] is None
    assert (
        latent["ws"].shape == (1, 6, 512) and latent["ws"].dtype == torch.float32 and latent["ws"].device.type == "cpu"
    )
    assert recon.shape == (1, 16, 16, 3) and 0 <= recon.min() and recon.max() <= 1
    torch.testing.assert_close(rendered, recon, rtol=0, atol=0)


def test_psp_and_e4e_ignore_the_iteration_count(pack, bridge, checkpoints):
    enc, _ = pack.NODE_CLASS_MAPPINGS["NADA_LoadEncoder"]().load(install(bridge, checkpoints["e4e"]))
    with torch.inference_mode():
        latent, recon = pack.NODE_CLASS_MAPPINGS["NADA_InvertImage"]().invert(enc, comfy_image(256, 256), 5)
    assert latent["ws"].shape == (1, 4, 512) and recon.shape == (1, 8, 8, 3)


def test_cancel_stops_the_refinement_and_raises_the_interrupt(pack, bridge, checkpoints):
    enc, _ = pack.NODE_CLASS_MAPPINGS["NADA_LoadEncoder"]().load(install(bridge, checkpoints["restyle"]))
    bridge.request_interrupt(True)
    with pytest.raises(bridge.interrupt_exception_type()), torch.inference_mode():
        pack.NODE_CLASS_MAPPINGS["NADA_InvertImage"]().invert(enc, comfy_image(256, 256), 5)


def test_invert_frees_room_first_and_says_what_to_lower_when_it_does_not_fit(pack, bridge, checkpoints, caplog):
    import logging

    from nada.adaptation.memory import inversion_bytes

    enc, G = pack.NODE_CLASS_MAPPINGS["NADA_LoadEncoder"]().load(install(bridge, checkpoints["e4e"]))
    needed = inversion_bytes(enc, G, 1)
    assert inversion_bytes(enc, G, 3) > needed
    try:
        for budget, warnings in ((needed // 2, 1), (needed, 0)):
            bridge.set_memory_budget(budget)
            caplog.clear()
            with caplog.at_level(logging.WARNING), torch.inference_mode():
                pack.NODE_CLASS_MAPPINGS["NADA_InvertImage"]().invert(enc, comfy_image(256, 256), 1, G)
            said = [r.getMessage() for r in caplog.records if "GiB are free" in r.getMessage()]
            assert len(said) == warnings and all("invert fewer images" in s for s in said)
    finally:
        bridge.set_memory_budget(None)
