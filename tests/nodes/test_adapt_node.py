"""NADA Adapt as ComfyUI runs it: inside inference_mode, with autosave/reuse, progress and cancel."""

from __future__ import annotations

import logging

import pytest
import torch


def run_adapt(pack, G, clip, direction, steps=3, **kw):
    node = pack.NODE_CLASS_MAPPINGS["NADA_Adapt"]()
    args = dict(steps=steps, learning_rate=0.002, layers="all", train_seed=0, preview_every=1)
    args.update(kw)
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        return node.adapt(G, clip, direction, **args)


def snapshot(G):
    return {k: v.clone() for k, v in G.state_dict().items()}


def assert_bit_identical(G, snap):
    state = G.state_dict()
    assert state.keys() == snap.keys()
    for k, v in state.items():
        assert torch.equal(v, snap[k]), k


def test_adapt_trains_a_copy_saves_it_and_reuses_it(
    pack, bridge, tiny_generator, tiny_clip, tiny_direction, tmp_path, caplog
):
    before = snapshot(tiny_generator)
    events = []
    bridge.event_listeners.append(lambda name, data: events.append((name, data)))
    try:
        out = run_adapt(pack, tiny_generator, tiny_clip, tiny_direction, steps=3)
    finally:
        bridge.event_listeners.clear()
    G2, plot, *_ = out["result"]
    assert_bit_identical(tiny_generator, before)
    changed = [k for k, v in G2.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all(k.startswith("synthesis.") for k in changed)
    assert plot.ndim == 4 and plot.shape[0] == 1 and plot.shape[-1] == 3
    assert 0 <= plot.min() and plot.max() <= 1
    assert len(out["ui"]["nada_loss"]) == 3

    assert events[0][0] == "nada.adapt.start" and events[0][1]["total"] == 3
    steps = [d["step"] for name, d in events if name == "nada.adapt.progress"]
    assert steps == [1, 2, 3]

    saved = sorted((tmp_path / "output" / "stylegan" / "nada-autosave").glob("*.safetensors"))
    assert len(saved) == 1
    # The autosave is listed by the loader and loads back as the same weights.
    listed = bridge.list_files("stylegan")
    assert f"nada-autosave/{saved[0].name}" in listed
    (loaded,) = pack.NODE_CLASS_MAPPINGS["NADA_LoadStyleGAN2"]().load(f"nada-autosave/{saved[0].name}")
    for k, v in G2.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k

    # A new node instance (ComfyUI evicted its cache) with the same inputs loads instead of training.
    with caplog.at_level(logging.INFO):
        again = run_adapt(pack, tiny_generator, tiny_clip, tiny_direction, steps=3)
    assert "reused nada-autosave/" in caplog.text
    for k, v in again["result"][0].state_dict().items():
        assert torch.equal(G2.state_dict()[k], v), k
    assert again["ui"]["nada_loss"] == out["ui"]["nada_loss"]


def test_a_different_input_trains_again(pack, bridge, tiny_generator, tiny_clip, tiny_direction, tmp_path):
    run_adapt(pack, tiny_generator, tiny_clip, tiny_direction, steps=2)
    run_adapt(pack, tiny_generator, tiny_clip, tiny_direction, steps=2, train_seed=1)
    saved = list((tmp_path / "output" / "stylegan" / "nada-autosave").glob("*.safetensors"))
    assert len(saved) == 2


def test_cancel_returns_within_one_step_and_keeps_the_input(
    pack, bridge, tiny_generator, tiny_clip, tiny_direction, tmp_path
):
    before = snapshot(tiny_generator)
    seen = []

    def press_cancel_at_step_2(name, data):
        if name == "nada.adapt.progress":
            seen.append(data["step"])
            if data["step"] == 2:
                bridge.request_interrupt()

    bridge.event_listeners.append(press_cancel_at_step_2)
    try:
        with pytest.raises(bridge.Interrupted):
            run_adapt(pack, tiny_generator, tiny_clip, tiny_direction, steps=50)
    finally:
        bridge.event_listeners.clear()
    assert seen == [1, 2]  # no step started after Cancel
    assert not bridge.interrupt_requested()  # the request was consumed, the next queue runs normally
    assert_bit_identical(tiny_generator, before)
    folder = tmp_path / "output" / "stylegan" / "nada-autosave"
    partial = list(folder.glob("*_step000002-partial.safetensors"))
    assert len(partial) == 1
    assert not [p for p in folder.glob("*.safetensors") if "-partial" not in p.name]  # no "finished" result


def test_inference_tensors_from_a_loader_train(pack, bridge, tiny_generator, tiny_clip, tiny_direction):
    with torch.inference_mode():
        G_inf = type(tiny_generator)(tiny_generator.config)
        G_inf.load_state_dict(tiny_generator.state_dict())
        G_inf.eval().requires_grad_(False)
    assert next(G_inf.parameters()).is_inference()
    G2, *_ = run_adapt(pack, G_inf, tiny_clip, tiny_direction, steps=1, preview_every=0)["result"]
    assert not torch.equal(G2.synthesis.b8.conv0.weight, G_inf.synthesis.b8.conv0.weight)
