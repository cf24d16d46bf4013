"""Project Image as ComfyUI runs it: inside inference_mode, a latent Render Latent accepts, cancel, bad inputs."""

from __future__ import annotations

import logging

import pytest
import torch

from nada.errors import ProjectionError


def node(pack, node_id):
    return pack.NODE_CLASS_MAPPINGS[node_id]()


def rendered(pack, G, seeds="5,6"):
    """(latent, IMAGE) of seeds, made by our own nodes under inference mode."""
    with torch.inference_mode():
        (latent,) = node(pack, "NADA_LatentFromSeed").make(G, seeds, 1.0)
        (image,) = node(pack, "NADA_RenderLatent").render(G, latent, "const")
    return latent, image


def run(pack, G, image, steps=20, **kw):
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        return node(pack, "NADA_ProjectImage").project(G, image, steps, "w+", 0, **kw)


def snapshot(G):
    return {k: v.clone() for k, v in G.state_dict().items()}


def assert_unchanged(G, snap):
    for k, v in G.state_dict().items():
        assert torch.equal(v, snap[k]), k


def test_projected_latent_renders_the_reconstruction_and_the_generator_is_kept(pack, bridge, tiny_generator):
    with torch.inference_mode():
        G = type(tiny_generator)(tiny_generator.config)
        G.load_state_dict(tiny_generator.state_dict())
        G.eval().requires_grad_(False)
    before = snapshot(G)
    _, image = rendered(pack, G)
    latent, recon = run(pack, G, image, steps=30)
    assert latent["ws"].shape == (2, G.num_ws, G.config.w_dim) and latent["seeds"] is None
    assert recon.shape == image.shape and recon.device.type == "cpu" and 0 <= recon.min() and recon.max() <= 1
    with torch.inference_mode():
        (again,) = node(pack, "NADA_RenderLatent").render(G, latent, "const")
    torch.testing.assert_close(again, recon)
    _, start = run(pack, G, image, steps=0)
    assert (recon - image).square().mean() < 0.5 * (start - image).square().mean()
    assert_unchanged(G, before)


def test_latent_init_as_a_latent_or_a_raw_w_plus_tensor(pack, bridge, tiny_generator):
    latent, image = rendered(pack, tiny_generator, "7")
    _, from_dict = run(pack, tiny_generator, image, steps=0, latent_init=latent)
    _, from_tensor = run(pack, tiny_generator, image, steps=0, latent_init=latent["ws"][0])
    torch.testing.assert_close(from_dict, image)
    torch.testing.assert_close(from_tensor, image)
    with torch.inference_mode():  # Render Latent takes the raw tensor too
        (raw,) = node(pack, "NADA_RenderLatent").render(tiny_generator, latent["ws"], "const")
    torch.testing.assert_close(raw, image)
    with pytest.raises(bridge.NodeError, match="Latent from Seed"):
        run(pack, tiny_generator, image, steps=1, latent_init=torch.zeros(1, 3, 5))


def test_grayscale_is_converted_and_says_so(pack, bridge, tiny_generator, caplog):
    _, image = rendered(pack, tiny_generator, "3")
    gray = image.mean(-1, keepdim=True)
    with caplog.at_level(logging.WARNING):
        latent, recon = run(pack, tiny_generator, gray, steps=2)
    assert "grayscale" in caplog.text and recon.shape[-1] == 3


def test_bad_images_are_refused_and_change_nothing(pack, bridge, tiny_generator):
    before = snapshot(tiny_generator)
    with pytest.raises(bridge.NodeError, match="at least one image"):
        run(pack, tiny_generator, torch.zeros(0, 16, 16, 3))
    with pytest.raises(ProjectionError, match="crop them to a square"):
        run(pack, tiny_generator, torch.zeros(1, 16, 20, 3))
    with pytest.raises(bridge.NodeError, match="choose vgg16_weights"):
        run(pack, tiny_generator, torch.zeros(1, 16, 16, 3), lpips_weights="vgg.pth")
    assert_unchanged(tiny_generator, before)


def test_cancel_stops_within_one_step_and_raises(pack, bridge, tiny_generator, monkeypatch):
    _, image = rendered(pack, tiny_generator)
    before = snapshot(tiny_generator)
    steps_seen = []

    class CancelAtStep3(bridge.Progress):
        def update(self, value, preview=None):
            steps_seen.append(value)
            if value == 3:
                bridge.request_interrupt()  # the user presses Cancel during step 3
            super().update(value, preview)

    monkeypatch.setattr(bridge, "Progress", CancelAtStep3)
    with pytest.raises(bridge.Interrupted):
        run(pack, tiny_generator, image, steps=200)
    assert steps_seen == [1, 2, 3]
    assert not bridge.interrupt_requested()  # consumed: the next queue runs normally
    assert_unchanged(tiny_generator, before)


def test_vgg16_weights_from_models_lpips_are_listed_and_used(pack, bridge, tiny_generator, tmp_path, monkeypatch):
    tv = pytest.importorskip("torchvision")
    folder = tmp_path / "models" / "lpips"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    features = tv.models.vgg16(weights=None).features.state_dict()
    torch.save({f"features.{k}": v for k, v in features.items()}, folder / "vgg16-397923af.pth")
    spec = pack.NODE_CLASS_MAPPINGS["NADA_ProjectImage"].INPUT_TYPES()
    assert "vgg16-397923af.pth" in spec["optional"]["vgg16_weights"][0]
    _, image = rendered(pack, tiny_generator, "2")
    texts = []
    monkeypatch.setattr(bridge, "send_text", lambda text, node_id=None: texts.append(text))
    run(pack, tiny_generator, image, steps=2, vgg16_weights="vgg16-397923af.pth")
    assert "vgg16 loss" in texts[-1]


def test_frees_room_first_and_says_what_to_lower_when_it_does_not_fit(pack, bridge, tiny_generator, caplog):
    from nada.adaptation.memory import projection_bytes

    _, image = rendered(pack, tiny_generator)
    needed = projection_bytes(tiny_generator, image.shape[0])
    assert projection_bytes(tiny_generator, 4) > needed > projection_bytes(tiny_generator, 1)
    try:
        for budget, warnings in ((needed // 2, 1), (needed, 0)):
            bridge.set_memory_budget(budget)
            caplog.clear()
            with caplog.at_level(logging.WARNING):
                run(pack, tiny_generator, image, steps=1)
            said = [r.getMessage() for r in caplog.records if "GiB are free" in r.getMessage()]
            assert len(said) == warnings and all("project fewer images" in s for s in said)
    finally:
        bridge.set_memory_budget(None)
