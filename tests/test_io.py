"""Saves are atomic, never overwrite silently, and leave no temp files behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from nada.io import TEMP_SUFFIX, FileExistsNadaError, atomic_write, atomic_write_bytes, unique_path


def test_write_and_refuse_overwrite(tmp_path):
    p = tmp_path / "g.bin"
    atomic_write_bytes(p, b"one")
    with pytest.raises(FileExistsNadaError, match="already exists"):
        atomic_write_bytes(p, b"two")
    assert p.read_bytes() == b"one"
    atomic_write_bytes(p, b"two", overwrite=True)
    assert p.read_bytes() == b"two"
    assert [q.name for q in tmp_path.iterdir()] == ["g.bin"]


def test_failed_write_keeps_old_file_and_no_temp(tmp_path):
    p = tmp_path / "g.bin"
    atomic_write_bytes(p, b"old")

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write(p, boom, overwrite=True)
    assert p.read_bytes() == b"old"
    assert [q.name for q in tmp_path.iterdir()] == ["g.bin"]


def test_unique_path(tmp_path):
    p = tmp_path / "a.safetensors"
    assert unique_path(p) == p
    p.write_bytes(b"x")
    assert unique_path(p).name == "a_00001.safetensors"


def test_killed_save_leaves_old_file_and_next_save_cleans_up(tmp_path):
    target = tmp_path / "model.bin"
    atomic_write_bytes(target, b"old contents")
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {os.getcwd()!r})
        from nada.io import atomic_write
        def slow(f):
            for _ in range(1000):
                f.write(b"x" * 1024)
                f.flush()
                time.sleep(0.01)
        atomic_write({str(target)!r}, slow, overwrite=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 30
    while not list(tmp_path.glob(f".*{TEMP_SUFFIX}")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert target.read_bytes() == b"old contents"
    assert list(tmp_path.glob(f".*{TEMP_SUFFIX}")), "the killed writer should have left its temp file"
    atomic_write_bytes(tmp_path / "other.bin", b"new")
    assert not list(tmp_path.glob(f".*{TEMP_SUFFIX}"))
    assert target.read_bytes() == b"old contents"


@pytest.mark.skipif(os.name == "nt", reason="the POSIX check")
def test_process_check_tells_running_from_finished_processes():
    from nada.io import _pid_alive

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert _pid_alive(child.pid) and _pid_alive(os.getpid()) and _pid_alive(os.getppid())
    finally:
        child.kill()
        child.wait()
    assert not _pid_alive(child.pid)  # reaped: no such process (unless the id was reused at once)


def test_process_check_never_sends_a_signal_on_windows(monkeypatch):
    """On Windows os.kill(pid, 0) sends CTRL_C_EVENT instead of probing, so the check there goes through
    OpenProcess/GetExitCodeProcess; here it is replaced by a recorder, since kernel32 exists only there."""
    import nada.io

    def no_kill(*args):
        raise AssertionError("os.kill called on Windows")

    asked = []
    monkeypatch.setattr(nada.io.os, "kill", no_kill)
    monkeypatch.setattr(nada.io, "_windows_pid_alive", lambda pid: asked.append(pid) or False)
    assert nada.io._pid_alive(os.getppid(), platform="nt") is False
    assert nada.io._pid_alive(os.getpid(), platform="nt") is True  # our own process: no question asked
    assert asked == [os.getppid()]
