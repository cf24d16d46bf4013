"""Long use in one process, as a ComfyUI server runs queue after queue: memory, open files and threads
stay flat, results are freed when dropped, and (on CUDA) the cache is emptied after training."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from tests.robustness.robust_fixtures import open_fds, rss_bytes, thread_count

pytestmark = pytest.mark.filterwarnings("ignore")


def _queue(pack, node, G, clip, direction, seed: int) -> weakref.ref:
    """One queue of NADA Adapt (+ a Sample of the result), dropping every output like ComfyUI's cache
    does when the next prompt differs."""
    with torch.inference_mode():
        out = node.adapt(
            G,
            clip,
            direction,
            steps=3,
            learning_rate=0.002,
            layers="all",
            train_seed=seed,
            preview_every=1,
            batch=1,
            reuse_saved=False,
        )
        G2 = out["result"][0]
        pack.NODE_CLASS_MAPPINGS["NADA_Sample"]().sample(G2, "0-1", 0.7, "const")
    ref = weakref.ref(G2)
    del out, G2
    gc.collect()
    return ref


def _soak(pack, bridge, G, clip, direction, runs: int, capsys) -> dict[str, list[int]]:
    node = pack.NODE_CLASS_MAPPINGS["NADA_Adapt"]()
    numbers: dict[str, list[int]] = {"rss": [], "fds": [], "threads": []}
    for seed in range(runs):
        ref = _queue(pack, node, G, clip, direction, seed)
        assert ref() is None, f"run {seed}: the adapted generator is still referenced after its outputs were dropped"
        numbers["rss"].append(rss_bytes())
        numbers["fds"].append(open_fds())
        numbers["threads"].append(thread_count())
        if torch.cuda.is_available():
            assert torch.cuda.memory_allocated() == 0 or torch.cuda.memory_reserved() == 0
    mib = [round(r / 2**20, 1) for r in numbers["rss"]]
    with capsys.disabled():
        print(
            f"\nsoak {runs} runs: RSS MiB {mib[0]} after run 1, {mib[1]} after run 2, {mib[-1]} at the end "
            f"(all: {mib}); fds {numbers['fds'][0]} -> {numbers['fds'][-1]}; "
            f"threads {numbers['threads'][0]} -> {numbers['threads'][-1]}"
        )
    return numbers


def test_open_files_and_threads_do_not_grow(pack, bridge, tiny_generator, tiny_clip, tiny_direction, capsys):
    n = _soak(pack, bridge, tiny_generator, tiny_clip, tiny_direction, 5, capsys)
    assert n["fds"][-1] <= n["fds"][0], n["fds"]
    assert n["threads"][-1] <= n["threads"][0], n["threads"]


@pytest.mark.slow
def test_twenty_adaptations_keep_memory_flat(pack, bridge, tiny_generator, tiny_clip, tiny_direction, capsys):
    n = _soak(pack, bridge, tiny_generator, tiny_clip, tiny_direction, 20, capsys)
    base = n["rss"][1]  # after the first two runs: imports, allocator pools and lazy init are done
    worst = max(n["rss"][2:])
    assert worst <= base * 1.05, f"RSS grew from {base / 2**20:.1f} to {worst / 2**20:.1f} MiB"
    assert n["fds"][-1] <= n["fds"][1], n["fds"]
    assert n["threads"][-1] <= n["threads"][1], n["threads"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_cache_is_emptied_after_training(pack, bridge, tiny_generator, tiny_clip, tiny_direction):
    node = pack.NODE_CLASS_MAPPINGS["NADA_Adapt"]()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    ref = _queue(pack, node, tiny_generator, tiny_clip, tiny_direction, 0)
    assert ref() is None
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() <= before  # results returned on the input's device (CPU)
    assert torch.cuda.memory_reserved() - before < 64 * 2**20  # soft_empty_cache released the cache
