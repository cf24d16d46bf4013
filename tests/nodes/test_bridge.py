"""The bridge's standalone behaviour: the folders, saves and cancel flag the nodes rely on outside ComfyUI."""

from __future__ import annotations

import pytest


def test_stylegan_folder_lists_models_and_outputs_with_our_extensions(bridge, tmp_path):
    models = tmp_path / "models" / "stylegan"
    outputs = tmp_path / "output" / "stylegan" / "nada"
    models.mkdir(parents=True)
    outputs.mkdir(parents=True)
    for name in ("ffhq.pt", "cats.pkl", "dogs.safetensors", "readme.txt", "weights.ckpt"):
        (models / name).write_bytes(b"x")
    (outputs / "sketch_00001.safetensors").write_bytes(b"x")
    assert bridge.list_files("stylegan") == ["cats.pkl", "dogs.safetensors", "ffhq.pt", "nada/sketch_00001.safetensors"]
    assert bridge.full_path("stylegan", "nada/sketch_00001.safetensors") == str(outputs / "sketch_00001.safetensors")
    assert bridge.folder_paths_of("open_clip") == [str(tmp_path / "models" / "open_clip")]


def test_full_path_refuses_missing_files_and_escapes(bridge, tmp_path):
    (tmp_path / "secret.pt").write_bytes(b"x")
    with pytest.raises(bridge.NodeError, match="not found"):
        bridge.full_path("stylegan", "../../secret.pt")
    with pytest.raises(bridge.NodeError, match="Refresh"):
        bridge.full_path("stylegan", "missing.pt")


def test_next_free_path_never_overwrites_and_stays_inside(bridge, tmp_path):
    folder = str(tmp_path / "output" / "stylegan")
    first = bridge.next_free_path(folder, "nada/sketch", ".safetensors")
    assert first.endswith("nada/sketch_00001.safetensors")
    open(first, "wb").close()
    assert bridge.next_free_path(folder, "nada/sketch", ".safetensors").endswith("sketch_00002.safetensors")
    with pytest.raises(bridge.NodeError, match="outside"):
        bridge.next_free_path(folder, "../../evil", ".pt")


def test_interrupt_flag_is_read_then_consumed(bridge):
    assert not bridge.interrupt_requested()
    bridge.raise_if_interrupted()  # nothing pending: no raise
    bridge.request_interrupt()
    assert bridge.interrupt_requested()
    with pytest.raises(bridge.interrupt_exception_type()):
        bridge.raise_if_interrupted()
    assert not bridge.interrupt_requested()


def test_progress_and_events_work_without_comfyui(bridge):
    seen = []
    bridge.event_listeners.append(lambda name, data: seen.append((name, data)))
    try:
        p = bridge.Progress(3)
        for i in range(1, 4):
            p.update(i)
        bridge.send_event("nada.test", {"x": 1})
        bridge.send_text("hello")
    finally:
        bridge.event_listeners.clear()
    assert seen == [("nada.test", {"x": 1})]
    assert not p.interrupted
    assert bridge.current_node_id() is None
