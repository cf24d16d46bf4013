"""The nodes on real GPUs and in long sessions (issue 13): memory freed before work with a budget the
bridge reports, training outputs for ComfyUI's loss graph and a preview batch, progress and cancel
between render chunks, and the CLIP precision input."""

from __future__ import annotations

import logging
import math

import pytest
import torch

import nada

ARGS = dict(learning_rate=0.002, layers="all", train_seed=0)


def adapt_node(pack):
    return pack.NODE_CLASS_MAPPINGS["NADA_Adapt"]()


def test_adapt_outputs_a_loss_map_the_core_loss_graph_reads_and_the_preview_progression(
    pack, bridge, tiny_generator, tiny_clip, tiny_direction
):
    node = adapt_node(pack)
    with torch.inference_mode():
        out = node.adapt(tiny_generator, tiny_clip, tiny_direction, steps=4, preview_every=2, lambda_global=0.5,
                         autosave=False, **ARGS)  # fmt: skip
    G2, plot, loss, previews = out["result"]
    assert [t for t in type(node).RETURN_TYPES[2:]] == ["LOSS_MAP", "IMAGE"]
    # ComfyUI's Plot Loss Graph reads loss["loss"] (a list of floats, one per step).
    assert len(loss["loss"]) == 4 and all(isinstance(v, float) and math.isfinite(v) for v in loss["loss"])
    assert loss["loss"] == pytest.approx(G2.metadata["adaptation"]["loss_history"])
    # Per-term losses: the active terms, one value per step; the total is their weighted sum.
    assert set(loss) == {"loss", "direction", "global"}
    for i in range(4):
        assert loss["loss"][i] == pytest.approx(loss["direction"][i] + 0.5 * loss["global"][i], abs=1e-5)
    # Previews before, at step 2, and after: three grids of one size, in ComfyUI's IMAGE layout.
    assert previews.ndim == 4 and previews.shape[0] == 3 and previews.shape[-1] == 3
    assert 0.0 <= float(previews.min()) and float(previews.max()) <= 1.0
    assert not torch.equal(previews[0], previews[-1])


def test_a_reused_run_still_outputs_its_losses_and_a_preview(pack, bridge, tiny_generator, tiny_clip, tiny_direction):
    node = adapt_node(pack)
    with torch.inference_mode():
        first = node.adapt(tiny_generator, tiny_clip, tiny_direction, steps=2, preview_every=0, **ARGS)["result"]
        again = node.adapt(tiny_generator, tiny_clip, tiny_direction, steps=2, preview_every=0, **ARGS)["result"]
    assert again[2]["loss"] == first[2]["loss"] and again[2]["direction"] == first[2]["direction"]
    assert again[3].shape[0] == 1 and again[3].shape[1:] == first[3].shape[1:]
    assert torch.allclose(again[3], first[3][-1:], atol=1 / 255)  # the result's grid: the last preview


def test_training_warns_with_what_to_lower_when_the_budget_is_too_small(
    pack, bridge, tiny_generator, tiny_clip, tiny_direction, caplog
):
    node = adapt_node(pack)
    module = __import__(type(node).__module__, fromlist=["training_bytes"])
    config = nada.AdaptConfig(steps=1)
    needed = module.training_bytes(tiny_generator, tiny_clip, config, torch.device("cpu"))
    try:
        bridge.set_memory_budget(needed // 2)
        with caplog.at_level(logging.WARNING), torch.inference_mode():
            node.adapt(tiny_generator, tiny_clip, tiny_direction, steps=1, preview_every=0, autosave=False, **ARGS)
        warned = [r.getMessage() for r in caplog.records if "GiB are free" in r.getMessage()]
        assert len(warned) == 1 and "lower batch" in warned[0] and "gradient_checkpointing" in warned[0]
        caplog.clear()
        bridge.set_memory_budget(needed)
        with caplog.at_level(logging.WARNING), torch.inference_mode():
            node.adapt(tiny_generator, tiny_clip, tiny_direction, steps=1, preview_every=0, autosave=False, **ARGS)
            # Unloading everything (inside ComfyUI: model_management.unload_all_models) is one input away.
            node.adapt(
                tiny_generator, tiny_clip, tiny_direction, steps=1, preview_every=0, autosave=False,
                unload_all_models=True, **ARGS,
            )  # fmt: skip
        assert not [r for r in caplog.records if "GiB are free" in r.getMessage()]
    finally:
        bridge.set_memory_budget(None)


def test_the_estimate_grows_with_what_costs_memory_and_knows_the_run_precision(pack, tiny_generator, tiny_clip):
    from nada.adaptation.memory import training_bytes
    from nada.clip import clip_ensemble

    base = nada.AdaptConfig()

    def size(clip=tiny_clip, device="cpu", checkpointing=False, **kw):
        return training_bytes(tiny_generator, clip, nada.AdaptConfig(**kw), device, checkpointing)

    assert size(batch=4) > size(batch=2) > size(batch=1)
    assert size(layers="auto") == size()  # the selection runs its batch of 8 in chunks of `batch`
    assert size(autocast="bf16") < size()
    assert size(checkpointing=True) < size()
    assert size(clip=clip_ensemble([(tiny_clip, 1.0), (tiny_clip.on("cpu", "bf16"), 1.0)])) > size()
    # The same fp32 model resting on the CPU runs in fp16 on CUDA (auto), so it needs less there.
    assert size(device="cuda") < size(device="cpu")
    assert (
        size(clip=tiny_clip.on("cpu", "bf16")) < size() == training_bytes(tiny_generator, tiny_clip, base, "cpu", False)
    )


def test_render_frees_room_first_shrinks_its_chunks_to_fit_and_stops_between_chunks_on_cancel(
    pack, bridge, tiny_generator, caplog
):
    from nada.adaptation.memory import render_batch, render_bytes
    from nada.sampling import sample

    update = bridge.chunk_progress()
    chunks = []

    def cancel_after_first_chunk(done, total):
        chunks.append(done)
        if done > 0:
            bridge.request_interrupt()  # the user presses Cancel while the first chunk was rendering
        update(done, total)

    with pytest.raises(bridge.Interrupted):
        sample(tiny_generator, list(range(20)), batch_size=8, progress=cancel_after_first_chunk)
    assert chunks == [0, 8]  # the second and third chunks were never rendered

    node = pack.NODE_CLASS_MAPPINGS["NADA_Sample"]()
    bridge.request_interrupt()  # pressed before the node started: nothing is rendered
    with pytest.raises(bridge.Interrupted), torch.inference_mode():
        node.sample(tiny_generator, "0-3", 0.7, "const")
    bridge.request_interrupt(False)
    (full,) = node.sample(tiny_generator, "0-9", 0.7, "const")
    try:
        # Room for three images at a time: smaller chunks, the same images, no warning.
        bridge.set_memory_budget(render_bytes(tiny_generator, 3))
        assert render_batch(tiny_generator, bridge.free_bytes(torch.device("cpu")), 8) == 3
        with caplog.at_level(logging.WARNING), torch.inference_mode():
            (images,) = node.sample(tiny_generator, "0-9", 0.7, "const")
        assert torch.allclose(images, full, atol=1e-5)  # other chunk sizes sum in another order
        assert not any("GiB are free" in r.getMessage() for r in caplog.records)
        # Not even one image fits: the node says so and tries anyway.
        bridge.set_memory_budget(1)
        with caplog.at_level(logging.WARNING), torch.inference_mode():
            (images,) = node.sample(tiny_generator, "0-9", 0.7, "const")
        assert torch.allclose(images, full, atol=1e-5)  # other chunk sizes sum in another order
        assert any("GiB are free" in r.getMessage() and "Unload Models" in r.getMessage() for r in caplog.records)
    finally:
        bridge.set_memory_budget(None)


def test_image_direction_reports_progress_and_honours_cancel(pack, bridge, tiny_generator, tiny_clip):
    from nada.directions import image_direction

    targets = torch.rand(3, 3, 32, 32) * 2 - 1
    seen = []
    image_direction(tiny_clip, targets, tiny_generator, source_samples=5, batch_size=2,
                    progress=lambda d, t: seen.append((d, t)))  # fmt: skip
    assert seen[-1] == (5 + 3 + 5, 5 + 3 + 5) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    node = pack.NODE_CLASS_MAPPINGS["NADA_ImageDirection"]()
    bridge.request_interrupt()
    with pytest.raises(bridge.Interrupted), torch.inference_mode():
        node.encode(tiny_clip, targets.permute(0, 2, 3, 1) * 0.5 + 0.5, generator=tiny_generator)


def test_load_clip_precision_input_is_applied_where_the_model_runs(pack, bridge, tmp_path):
    from tests.nodes.fixtures import clip_weights_name, install_test_models, tiny_clip_architecture

    install_test_models(pack, stylegan_dir=tmp_path / "models" / "stylegan", base=tmp_path)
    node = pack.NODE_CLASS_MAPPINGS["NADA_LoadCLIP"]()
    assert type(node).INPUT_TYPES()["optional"]["precision"][0] == ["auto", "fp32", "fp16", "bf16"]
    with torch.inference_mode():
        (auto,) = node.load(tiny_clip_architecture(), clip_weights_name(), "", precision="auto")
        (bf16,) = node.load(tiny_clip_architecture(), clip_weights_name(), "", precision="bf16")
    assert (auto.precision, auto.requested_precision) == ("fp32", "auto")  # auto is fp32 on the CPU
    assert bf16.precision == "bf16" and bf16.dtype == torch.bfloat16
    assert auto.on("cpu") is auto and bf16.on("cpu") is bf16  # nothing to move or cast
