"""nada.cpu_memory: freed CPU blocks are kept for reuse during a loop, and everything is put back after.

Observed through glibc's own accounting (`mallinfo2().hblkhd`: bytes in blocks served by mmap), so
the tests run where the switch does something: Linux with glibc >= 2.33.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from nada import cpu_memory
from nada.cpu_memory import reuse_freed_memory


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
    ]  # fmt: skip


def _mallinfo():
    """glibc's mallinfo2, or None where there is none."""
    libc = cpu_memory.glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2


def _mallinfo2():
    info = _mallinfo()
    if info is None:
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")
    return info


BIG = 80 * 2**20  # above glibc's largest mmap threshold (32 MB): served by mmap unless the switch is on


def _mmapped_bytes_of_a_big_tensor() -> int:
    """How many more bytes sit in mmapped blocks while a BIG tensor is alive. The tensor is also larger
    than the whole heap, so no free hole left in it by earlier tests can serve it: only the settings
    decide between extending the heap and a mapping of its own."""
    info = _mallinfo2()
    before = info().hblkhd
    t = torch.empty(max(BIG, info().arena + BIG) // 4, dtype=torch.float32)
    t.fill_(1.0)
    during = info().hblkhd
    del t
    return during - before


@pytest.fixture(autouse=True)
def _switch_on(monkeypatch):
    for name in ("NADA_REUSE_CPU_MEMORY", "MALLOC_ARENA_MAX", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    assert cpu_memory._depth == 0


def _in_a_fresh_process(body: str) -> None:
    """Run `body` (a function of this module) in a new Python process. Where a block comes from depends
    on the calling thread's arena, and glibc moves a thread to another arena for good after one failed
    allocation (the hostile-file tests provoke some): a long test process cannot promise the main heap."""
    root = Path(__file__).resolve().parents[1]
    env = {
        k: v for k, v in os.environ.items() if k not in ("NADA_REUSE_CPU_MEMORY", "MALLOC_ARENA_MAX", "GLIBC_TUNABLES")
    }
    code = f"import tests.test_cpu_memory as m; m.{body}()"
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    if "SKIP:" in out.stdout:
        pytest.skip(out.stdout.split("SKIP:", 1)[1].strip())
    assert out.returncode == 0, out.stderr[-3000:]


def _heap_inside_and_mmap_after() -> None:
    if _mallinfo() is None:
        print("SKIP: needs glibc >= 2.33 (mallinfo2)")
        return
    assert _mmapped_bytes_of_a_big_tensor() >= BIG  # glibc's default: its own mapping
    with reuse_freed_memory("cpu") as on:
        assert on
        assert _mmapped_bytes_of_a_big_tensor() == 0
    assert cpu_memory._depth == 0
    assert _mmapped_bytes_of_a_big_tensor() >= BIG  # restored


def _nested_and_concurrent() -> None:
    if _mallinfo() is None:
        print("SKIP: needs glibc >= 2.33 (mallinfo2)")
        return
    os.environ["MALLOC_ARENA_MAX"] = "1"  # what lets a second thread use the switch
    entered, leave = threading.Event(), threading.Event()

    def other_run():
        with reuse_freed_memory(torch.device("cpu")):
            entered.set()
            leave.wait(10)

    t = threading.Thread(target=other_run)
    t.start()
    assert entered.wait(10)
    try:
        with reuse_freed_memory("cpu"):
            with reuse_freed_memory("cpu"):
                pass
            assert _mmapped_bytes_of_a_big_tensor() == 0  # the inner exit did not switch it off
        assert _mmapped_bytes_of_a_big_tensor() == 0  # the other thread's run is still going
    finally:
        leave.set()
        t.join()
    assert cpu_memory._depth == 0
    assert _mmapped_bytes_of_a_big_tensor() >= BIG


def test_large_blocks_come_from_the_heap_inside_and_from_mmap_again_after():
    _in_a_fresh_process("_heap_inside_and_mmap_after")


def test_nested_and_concurrent_uses_keep_the_switch_until_the_last_one_leaves():
    _in_a_fresh_process("_nested_and_concurrent")


def test_off_in_a_thread_of_its_own_unless_glibc_has_one_arena(monkeypatch):
    """A worker thread's big blocks are mapped fresh whatever the settings (its arena's heaps hold at
    most 64 MB), so the switch stays off there unless every thread allocates from the main heap."""
    _mallinfo2()
    seen = {}

    def worker(key):
        with reuse_freed_memory("cpu") as on:
            seen[key] = on

    for key, env in (("plain", {}), ("arena", {"MALLOC_ARENA_MAX": "1"}),
                     ("tunable", {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0:glibc.malloc.arena_max=1"})):  # fmt: skip
        with monkeypatch.context() as m:
            for k, v in env.items():
                m.setenv(k, v)
            t = threading.Thread(target=worker, args=(key,))
            t.start()
            t.join()
    assert seen == {"plain": False, "arena": True, "tunable": True}
    assert cpu_memory._depth == 0


def test_off_for_other_devices_and_when_the_environment_says_so(monkeypatch):
    _mallinfo2()
    for device in ("meta", "cuda", None):
        with reuse_freed_memory(device) as on:
            assert not on
            assert cpu_memory._depth == 0
            assert _mmapped_bytes_of_a_big_tensor() >= BIG
    monkeypatch.setenv("NADA_REUSE_CPU_MEMORY", "0")
    with reuse_freed_memory("cpu") as on:
        assert not on
        assert _mmapped_bytes_of_a_big_tensor() >= BIG


def test_an_exception_inside_still_puts_everything_back():
    _mallinfo2()
    with pytest.raises(KeyError):
        with reuse_freed_memory("cpu"):
            raise KeyError("boom")
    assert cpu_memory._depth == 0
    assert _mmapped_bytes_of_a_big_tensor() >= BIG


def test_adaptation_gives_the_same_weights_with_the_switch_on_and_off(monkeypatch):
    """Only where memory comes from changes: the same run, bit for bit (same process, same ops). A
    reused block holds old numbers where a fresh mapping held zeros, so code that read memory it never
    wrote would differ here."""
    from nada.adaptation import AdaptConfig, adapt
    from nada.directions import text_direction
    from tests.adapt_fixtures import make_generator, tiny_clip

    G, clip = make_generator(seed=0, resolution=32), tiny_clip()
    direction = text_direction(clip, "red", "blue", templates=None)

    def run() -> dict[str, torch.Tensor]:
        cfg = AdaptConfig(steps=3, seed=0, layers="auto", auto_k=3, mixing=0.5)
        return adapt(G, clip, direction, cfg, device="cpu").generator.state_dict()

    monkeypatch.setenv("NADA_REUSE_CPU_MEMORY", "0")
    off = run()
    monkeypatch.setenv("NADA_REUSE_CPU_MEMORY", "1")
    on = run()
    assert off.keys() == on.keys()
    for name in off:
        assert torch.equal(off[name], on[name]), name
