"""The bridge's standalone behaviour: the folders, saves and cancel flag the nodes rely on outside ComfyUI."""

from __future__ import annotations

import types

import pytest


def test_stylegan_folder_lists_models_and_outputs_with_our_extensions(bridge, tmp_path):
    models = tmp_path / "models" / "stylegan"
    outputs = tmp_path / "output" / "stylegan" / "nada"
    models.mkdir(parents=True)
    outputs.mkdir(parents=True)
    for name in ("ffhq.pt", "cats.pkl", "dogs.safetensors", "readme.txt", "weights.ckpt"):
        (models / name).write_bytes(b"x")
    (outputs / "sketch_00001.safetensors").write_bytes(b"x")
    assert bridge.list_files("stylegan") == [
        "cats.pkl",
        "dogs.safetensors",
        "ffhq.pt",
        "nada-demo/shapes-32px.safetensors",
        "nada/sketch_00001.safetensors",
    ]
    assert bridge.full_path("stylegan", "nada/sketch_00001.safetensors") == str(outputs / "sketch_00001.safetensors")
    assert bridge.folder_paths_of("open_clip")[0] == str(tmp_path / "models" / "open_clip")


def test_bundled_demo_models_are_listed_and_load_without_copying(pack, bridge, tmp_path):
    import nada
    from nada.demo import DEMO_GENERATOR, tiny_clip_files

    nodes = pack.NODE_CLASS_MAPPINGS
    generators = nodes["NADA_LoadStyleGAN2"].INPUT_TYPES()["required"]["model_name"][0]
    clips = nodes["NADA_LoadCLIP"].INPUT_TYPES()["required"]["weights"][0]
    assert "nada-demo/shapes-32px.safetensors" in generators and "nada-demo/tiny-clip.safetensors" in clips
    (G,) = nodes["NADA_LoadStyleGAN2"]().load("nada-demo/shapes-32px.safetensors")
    assert G.fingerprint() == nada.load_generator(DEMO_GENERATOR).fingerprint()
    (clip,) = nodes["NADA_LoadCLIP"]().load("tiny-clip", "nada-demo/tiny-clip.safetensors", "")
    assert clip.name == "tiny-clip" and tiny_clip_files()[1].is_file()
    # The user's folders come first: their file of the same name is the one loaded.
    mine = tmp_path / "models" / "stylegan" / "nada-demo" / "shapes-32px.safetensors"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"x")
    assert bridge.full_path("stylegan", "nada-demo/shapes-32px.safetensors") == str(mine)


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


def comfy_utils_stand_in(with_node_id: bool):
    """comfy.utils's ProgressBar as ComfyUI has it from 0.3.45 (`ProgressBar(total, node_id=None)`) and
    before (`ProgressBar(total)`, reported on the node the server is executing). ComfyUI itself is not
    installed here; the signatures are the ones in Comfy-Org/ComfyUI comfy/utils.py at v0.3.44/0.3.45."""
    calls = []

    class OldProgressBar:
        def __init__(self, total):
            self.total = total

        def update_absolute(self, value, total=None, preview=None):
            calls.append((getattr(self, "node_id", None), value, total if total is not None else self.total))

    class ProgressBar(OldProgressBar):
        def __init__(self, total, node_id=None):
            super().__init__(total)
            self.node_id = node_id

    return types.SimpleNamespace(ProgressBar=ProgressBar if with_node_id else OldProgressBar), calls


@pytest.mark.parametrize("with_node_id", [False, True], ids=["comfyui<0.3.45", "comfyui>=0.3.45"])
def test_progress_bar_works_on_comfyui_before_and_since_node_ids(bridge, monkeypatch, with_node_id):
    utils, calls = comfy_utils_stand_in(with_node_id)
    server = types.SimpleNamespace(PromptServer=types.SimpleNamespace(instance=types.SimpleNamespace(last_node_id=7)))
    monkeypatch.setitem(bridge._modules, "comfy.utils", utils)
    monkeypatch.setitem(bridge._modules, "server", server)
    monkeypatch.setitem(bridge._modules, "comfy_execution.utils", None)  # no executing context before 0.3.45
    assert bridge.current_node_id() == "7"  # the server's executing node, for our events and text
    p = bridge.Progress(2)
    p.update(1)
    p.update(5)
    assert calls == [("7" if with_node_id else None, 1, 2), ("7" if with_node_id else None, 2, 2)]
