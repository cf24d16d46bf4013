"""Cancel at random steps (engine and node), and a process killed in the middle of saving a generator.

After a cancel: the inputs are bit-identical, the result is a usable partial generator (engine) or
the node's Interrupted with a loadable partial autosave, and no temp or half-written file remains.
After a SIGKILL during save_generator: the old file is intact and the next save in that folder
removes the dead writer's temp file.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import nada
from nada.io import TEMP_SUFFIX

pytestmark = pytest.mark.filterwarnings("ignore")
RUNS = 20
MAX_STEPS = 4


def snap(G) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in G.state_dict().items()}


def direction_snap(d) -> dict[str, torch.Tensor]:
    return {
        f"{part}.{k}": v.clone()
        for part in ("vectors", "targets", "sources", "patch")
        for k, v in getattr(d, part).items()
    }


def identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def no_temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(TEMP_SUFFIX) or p.name.startswith(".")]


def usable(pack, G) -> None:
    with torch.no_grad():
        z = torch.randn(2, G.config.z_dim, generator=torch.Generator().manual_seed(0))
        img = G(z)
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()


def test_engine_cancel_at_random_steps(pack, tiny_generator, tiny_clip, tiny_direction, tmp_path, capsys):
    rng = random.Random(6)
    g0, c0, d0 = snap(tiny_generator), snap(tiny_clip.model), direction_snap(tiny_direction)
    out = tmp_path / "out"
    cancelled_at = []
    for run in range(RUNS):
        steps = rng.randint(1, MAX_STEPS)
        # 0: cancel before the first step; every 5th run is never cancelled (the control)
        stop_after = rng.randint(0, steps - 1) if run % 5 else steps
        polls = [0]

        def should_stop(polls=polls, stop_after=stop_after):
            polls[0] += 1
            return polls[0] > stop_after

        cfg = nada.AdaptConfig(steps=steps, batch=1, seed=run, preview_count=0, layers=rng.choice(["all", "auto"]))
        G2 = nada.adapt(tiny_generator, tiny_clip, tiny_direction, cfg, should_stop=should_stop, device="cpu").generator
        meta = G2.metadata["adaptation"]
        assert meta["steps"] == min(stop_after, steps)
        assert meta["interrupted"] == (stop_after < steps)
        assert len(meta["loss_history"]) == meta["steps"]
        assert G2 is not tiny_generator
        assert not any(p.requires_grad for p in G2.parameters())
        usable(pack, G2)
        if meta["steps"] == 0:
            assert identical(snap(G2), g0)
        nada.stylegan2.formats.save_generator(G2, out / f"run{run}.safetensors")
        loaded = nada.stylegan2.formats.load_generator(out / f"run{run}.safetensors")
        assert identical(snap(loaded), snap(G2))
        cancelled_at.append((stop_after, steps))
        # Inputs bit-identical after every run, cancelled or not.
        assert identical(snap(tiny_generator), g0)
        assert identical(snap(tiny_clip.model), c0)
        assert identical(direction_snap(tiny_direction), d0)
    assert not no_temp_files(out)
    n = sum(1 for a, s in cancelled_at if a < s)
    with capsys.disabled():
        print(f"\nengine cancel: {RUNS} runs, {n} cancelled (at steps {[a for a, s in cancelled_at if a < s]})")
    assert n == RUNS - RUNS // 5


def test_node_cancel_at_random_steps(pack, bridge, tiny_generator, tiny_clip, tiny_direction, tmp_path, capsys):
    node = pack.NODE_CLASS_MAPPINGS["NADA_Adapt"]()
    rng = random.Random(7)
    g0, c0, d0 = snap(tiny_generator), snap(tiny_clip.model), direction_snap(tiny_direction)
    folder = tmp_path / "output" / "stylegan" / "nada-autosave"
    at_steps = []
    for run in range(RUNS):
        steps = rng.randint(2, MAX_STEPS)
        cancel_at = rng.randint(0, steps - 1)  # 0: Cancel pressed before the node starts
        seen = []

        def listener(name, data, cancel_at=cancel_at, seen=seen):
            if name == "nada.adapt.progress":
                seen.append(data["step"])
                if data["step"] == cancel_at:
                    bridge.request_interrupt()

        bridge.event_listeners.append(listener)
        if cancel_at == 0:
            bridge.request_interrupt()
        try:
            with torch.inference_mode(), pytest.raises(bridge.Interrupted):
                node.adapt(
                    tiny_generator,
                    tiny_clip,
                    tiny_direction,
                    steps=steps,
                    learning_rate=0.002,
                    layers="all",
                    train_seed=run,
                    preview_every=0,
                    batch=1,
                )
        finally:
            bridge.event_listeners.clear()
        assert seen == list(range(1, cancel_at + 1)), (cancel_at, seen)  # no step after Cancel
        assert not bridge.interrupt_requested()  # consumed: the next queue runs
        assert identical(snap(tiny_generator), g0)
        assert identical(snap(tiny_clip.model), c0)
        assert identical(direction_snap(tiny_direction), d0)
        partial = sorted(folder.glob(f"*_step{cancel_at:06d}-partial.safetensors")) if folder.exists() else []
        if cancel_at == 0:
            assert not partial  # nothing trained, nothing saved
        else:
            # Each run has its own seed, so its own autosave key: exactly this run's file is new.
            mine = [p for p in partial if p.name not in {x for x, _ in at_steps}]
            assert len(mine) == 1, partial
            G = nada.stylegan2.formats.load_generator(mine[0])
            assert G.metadata["adaptation"]["interrupted"] and G.metadata["adaptation"]["steps"] == cancel_at
            usable(pack, G)
            at_steps.append((mine[0].name, cancel_at))
        if folder.exists():
            assert not no_temp_files(folder)
            assert not [p for p in folder.glob("*.safetensors") if "-partial" not in p.name]  # no "finished"
    with capsys.disabled():
        print(f"\nnode cancel: {RUNS} runs cancelled, {len(at_steps)} partial autosaves (others before step 1)")
    # A later run with the same node and no Cancel finishes normally.
    with torch.inference_mode():
        out = node.adapt(
            tiny_generator,
            tiny_clip,
            tiny_direction,
            steps=1,
            learning_rate=0.002,
            layers="all",
            train_seed=999,
            preview_every=0,
            batch=1,
        )
    assert out["result"][0].metadata["adaptation"]["steps"] == 1


WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    import torch
    from nada.stylegan2 import Generator, GeneratorConfig
    from nada.stylegan2.formats import save_generator
    torch.manual_seed(1)
    cfg = GeneratorConfig(img_resolution=128, channels=(512, 512, 512, 256, 128, 64), z_dim=512, w_dim=512,
                          mapping_layers=8)
    G = Generator(cfg).eval().requires_grad_(False)
    print("ready", flush=True)
    save_generator(G, {target!r}, overwrite=True)
    print("saved", flush=True)
    """
)


def test_killed_save_keeps_the_old_generator_and_the_next_save_cleans_up(tmp_path):
    from nada.stylegan2.formats import load_generator, save_generator
    from tests.stylegan2.format_fixtures import make_generator

    folder = tmp_path / "models"
    folder.mkdir()
    target = folder / "mine.safetensors"
    old = make_generator(seed=3)
    save_generator(old, target)
    old_bytes = target.read_bytes()
    root = str(Path(__file__).resolve().parents[2])
    script = WRITER.format(root=root, target=str(target))
    for _attempt in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.time() + 60
        caught = False
        while time.time() < deadline and proc.poll() is None:
            if list(folder.glob(f".*{TEMP_SUFFIX}")):
                caught = True
                break
            time.sleep(0.0005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        if caught and target.read_bytes() == old_bytes:
            break
        # The writer finished before we saw its temp file: put the old file back and try again.
        target.unlink()
        save_generator(old, target)
        for p in folder.glob(f".*{TEMP_SUFFIX}"):
            p.unlink()
    else:
        pytest.skip("could not catch the writer mid-save in 4 attempts (machine too fast or too slow)")
    assert target.read_bytes() == old_bytes
    stale = list(folder.glob(f".*{TEMP_SUFFIX}"))
    assert stale, "the killed writer left its temp file"
    G = load_generator(target)
    assert all(torch.equal(G.state_dict()[k], v) for k, v in old.state_dict().items())
    # The next save into the folder (any file) removes the dead writer's temp file.
    save_generator(make_generator(seed=4), folder / "other.safetensors")
    assert not list(folder.glob(f".*{TEMP_SUFFIX}"))
    assert target.read_bytes() == old_bytes
