"""Keep freed CPU memory for the next step instead of handing it back to the kernel (glibc only).

A training step on the CPU allocates and frees the same large tensors every step (a 128-channel
activation at 256 px, batch 2, is 64 MB). glibc's malloc serves every block above its mmap
threshold (at most 32 MB) with a fresh `mmap` and returns it with `munmap` on free, so each step the
kernel maps, faults in and zeroes every page of every large activation again. On the build machine
that was a quarter of a 256 px step's CPU time, spent in the kernel (`bench/README.md`, "The CPU
allocator").

`reuse_freed_memory(device)` switches that off for the duration of a loop on the CPU: large blocks
come from the heap (`M_MMAP_MAX` 0) and freed memory stays there for the next step (`M_TRIM_THRESHOLD`
2 GB). On the way out it restores the state glibc reaches by itself after freeing large blocks
(mmap threshold 32 MB, trim threshold 64 MB) and hands the free memory back (`malloc_trim`). Nested
and concurrent uses share one switch (a counter). The numbers computed are the same: only where the
memory comes from changes.

Only where it helps, measured (`bench/bench_cpu_memory.py`): in the main thread, and in other
threads when every thread allocates from glibc's main heap (`MALLOC_ARENA_MAX=1` in the environment).
A thread of its own (ComfyUI runs nodes in a worker thread) allocates from a separate arena whose
heaps hold at most 64 MB, so its larger blocks are mapped fresh whatever the settings; there the
switch made steps slower, not faster, and stays off. Off as well for other devices (their tensors
are not malloc'ed), without glibc (macOS, Windows, musl), and when the environment says
`NADA_REUSE_CPU_MEMORY=0`.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4

_HOLD = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1}
# What glibc's dynamic thresholds settle at once large blocks have been freed (DEFAULT_MMAP_THRESHOLD_MAX
# on 64-bit, and twice it), and its default mmap count.
_RELEASE = {M_MMAP_MAX: 65536, M_MMAP_THRESHOLD: 32 * 2**20, M_TRIM_THRESHOLD: 64 * 2**20}

_lock = threading.Lock()
_depth = 0
_libc: ctypes.CDLL | None | bool = False  # False: not looked up yet


def glibc() -> ctypes.CDLL | None:
    """The process's glibc (with `mallopt` and `malloc_trim`), or None where malloc is another one."""
    global _libc
    if _libc is False:
        _libc = None
        try:
            libc = ctypes.CDLL(None)
            version = libc.gnu_get_libc_version
            version.restype = ctypes.c_char_p
            version()
            libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            libc.malloc_trim.argtypes = [ctypes.c_size_t]
            _libc = libc
        except (OSError, AttributeError):
            pass
    return _libc


def _one_arena() -> bool:
    """Whether the environment pins glibc to one arena, so every thread allocates from the main heap."""
    tunables = dict(t.partition("=")[::2] for t in os.environ.get("GLIBC_TUNABLES", "").split(":") if t)
    return os.environ.get("MALLOC_ARENA_MAX") == "1" or tunables.get("glibc.malloc.arena_max") == "1"


def enabled() -> bool:
    """Whether the switch works for the calling thread (see the module docstring)."""
    if os.environ.get("NADA_REUSE_CPU_MEMORY", "1") == "0" or glibc() is None:
        return False
    return threading.current_thread() is threading.main_thread() or _one_arena()


@contextmanager
def reuse_freed_memory(device: torch.device | str | None) -> Iterator[bool]:
    """Within the block, freed CPU memory is kept for reuse (see the module docstring). Yields whether
    the switch is on. A no-op for non-CPU devices and without glibc."""
    global _depth
    if device is None or torch.device(device).type != "cpu" or not enabled():
        yield False
        return
    libc = glibc()
    with _lock:
        if _depth == 0:
            for param, value in _HOLD.items():
                libc.mallopt(param, value)
        _depth += 1
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for param, value in _RELEASE.items():
                    libc.mallopt(param, value)
                libc.malloc_trim(0)
