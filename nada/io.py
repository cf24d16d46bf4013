"""Writing files so that nothing is lost: atomic, never overwriting silently, no temp files left behind.

Every file comfyui-nada writes (generators, adapters, images) goes through `atomic_write`: the data
goes to a temp file in the target folder, is flushed to disk, then takes the final name in one step.
A crash or kill mid-write leaves the old file intact; the temp file it leaves is removed by the next
write into that folder (`remove_stale_temp_files`), since its name records the writing process.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .errors import FormatError, NadaError

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".nada-tmp"


class FileExistsNadaError(NadaError, FileExistsError):
    """The target file exists and overwriting was not asked for."""


def _pid_alive(pid: int, platform: str = os.name) -> bool:
    """Whether process `pid` may still run; when unsure, yes (its temp file is then kept)."""
    if pid == os.getpid():
        return True
    return _windows_pid_alive(pid) if platform == "nt" else _posix_pid_alive(pid)


def _posix_pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def _windows_pid_alive(pid: int) -> bool:
    # Not os.kill(pid, 0) here: on Windows signal 0 is CTRL_C_EVENT, which would be sent to a console.
    import ctypes
    from ctypes import wintypes

    query_limited_information, still_active, error_access_denied = 0x1000, 259, 5
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.GetExitCodeProcess.argtypes = (wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD))
    kernel32.GetExitCodeProcess.restype = wintypes.BOOL
    kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
    handle = kernel32.OpenProcess(query_limited_information, False, pid)
    if not handle:  # no such process (ERROR_INVALID_PARAMETER), or one we may not open
        return ctypes.get_last_error() == error_access_denied
    try:
        code = wintypes.DWORD()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == still_active
    finally:
        kernel32.CloseHandle(handle)


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete temp files of ours in `folder` whose writing process no longer runs."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.glob(f".*{TEMP_SUFFIX}"):
        parts = p.name.split(".")
        try:
            pid = int(parts[-3])
        except (IndexError, ValueError):
            continue
        if not _pid_alive(pid):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    if removed:
        log.info("removed %d temp file(s) left by an interrupted save in %s", len(removed), folder)
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], overwrite: bool = False) -> Path:
    """Call `write(file)` on a temp file next to `path`, then give it the final name atomically.

    Without `overwrite`, an existing `path` is an error, checked again at the final step so that a
    file created meanwhile is not replaced either.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsNadaError(f"{path} already exists; choose another name, or allow overwriting")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            # A hard link fails if the name exists, so no file appearing meanwhile is clobbered.
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsNadaError(f"{path} already exists; choose another name, or allow overwriting") from None
            except OSError:
                if path.exists():
                    raise FileExistsNadaError(f"{path} already exists; choose another name") from None
                os.replace(tmp, path)
            tmp.unlink(missing_ok=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> Path:
    return atomic_write(path, lambda f: f.write(data), overwrite=overwrite)


def unique_path(path: str | os.PathLike) -> Path:
    """`path` if free, else `name_00001.ext`, `name_00002.ext`, ... (the first free one)."""
    path = Path(path)
    if not path.exists():
        return path
    for i in range(1, 100000):
        candidate = path.with_name(f"{path.stem}_{i:05d}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise NadaError(f"no free file name like {path} (100000 taken); clean up the folder")


def read_model_file(path: str | os.PathLike, what: str = "a checkpoint file") -> bytes:
    """The bytes of a model file, or a FormatError that says what is wrong with the path."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FormatError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise FormatError(f"{path} is a folder, not {what}") from None
    except OSError as e:
        raise FormatError(f"cannot read {path}: {e.strerror}") from None
