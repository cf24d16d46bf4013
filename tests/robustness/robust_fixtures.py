"""Shared helpers for the robustness tests: raw pickle builders, container writers, process numbers.

No test functions here. Hostile pickles are written opcode by opcode (protocol 0 text opcodes plus
a few binary ones), so the corpus can name any global and nest calls the way an attacker would,
without the test process ever holding the dangerous objects.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import resource
import signal
import struct
import zipfile
from pathlib import Path

import torch

TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


# --- raw pickle opcodes -------------------------------------------------------------------------


def glob(module: str, name: str) -> bytes:
    """GLOBAL opcode: push module.name (the unpickler's find_class decides what that is)."""
    return f"c{module}\n{name}\n".encode()


def text(s: str) -> bytes:
    """A str via BINUNICODE (any characters, including newlines)."""
    b = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(b)) + b


def raw_bytes(b: bytes) -> bytes:
    """A bytes object via BINBYTES (protocol 3+ opcode; the unpickler accepts it in any stream)."""
    return b"B" + struct.pack("<I", len(b)) + b


def call(func: bytes, *args: bytes) -> bytes:
    """func(*args) via MARK ... TUPLE REDUCE."""
    return func + b"(" + b"".join(args) + b"tR"


def dict_of(**items: bytes) -> bytes:
    """{key: value, ...} via EMPTY_DICT + SETITEM."""
    out = b"}"
    for k, v in items.items():
        out += text(k) + v + b"s"
    return out


def tuple_of(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def finish(body: bytes, protocol: int = 2) -> bytes:
    """A complete pickle stream: PROTO header (protocol >= 2), body, STOP."""
    return (bytes([0x80, protocol]) if protocol >= 2 else b"") + body + b"."


# --- containers ---------------------------------------------------------------------------------


def torch_zip_with(data_pkl: bytes) -> bytes:
    """A genuine torch.save zip archive whose data.pkl is replaced by `data_pkl`."""
    buf = io.BytesIO()
    torch.save({"g_ema": {}}, buf)
    zin = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("data.pkl"):
                data = data_pkl
            zout.writestr(item, data)
    return out.getvalue()


def torch_legacy_with(object_pkl: bytes) -> bytes:
    """The legacy (pre-1.6, `_use_new_zipfile_serialization=False`) layout around `object_pkl`:
    magic number, protocol version, system info, the object pickle, the storage key list."""
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    return (
        pickle.dumps(TORCH_LEGACY_MAGIC, protocol=2)
        + pickle.dumps(1001, protocol=2)
        + pickle.dumps(sys_info, protocol=2)
        + object_pkl
        + pickle.dumps([], protocol=2)
    )


def torch_legacy_save(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


# --- process numbers ----------------------------------------------------------------------------

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Current resident set size, from /proc/self/statm."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def thread_count() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads: line in /proc/self/status")


class Hang(BaseException):
    """Raised by `deadline` when the guarded code runs too long (a BaseException, so that no
    `except Exception` in the code under test swallows it)."""


@contextlib.contextmanager
def deadline(seconds: float):
    """Raise Hang inside the block after `seconds` (SIGALRM; main thread only)."""

    def fire(signum, frame):
        raise Hang()

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def load_or_refuse(load, refusal: type[BaseException], label: str, seconds: float):
    """`load()`'s result, or None when it raises `refusal`; any other exception, or taking longer than
    `seconds`, fails the test (the bugs the fuzzers look for)."""
    import pytest

    try:
        with deadline(seconds):
            return load()
    except refusal:
        return None
    except Hang:
        pytest.fail(f"{label}: took more than {seconds} s")
    except BaseException as e:  # noqa: BLE001 - anything but the refusal is the bug we look for
        pytest.fail(f"{label}: {type(e).__name__}: {e}")
