"""Resource checks for PyTorch files read with `torch.load(weights_only=True)`.

`weights_only=True` stops code from running, but not a file that makes the loader allocate far more
than it holds: a zip bomb (compressed entries that inflate into memory), tensors whose zero or
overlapping strides declare terabytes of values over a few stored bytes, or legacy storages sized by
a number in the file and never filled from it. Generators (`nada.stylegan2.formats`), encoders
(`nada.inversion`) and CLIP weights (`nada.clip`) all pass through these checks; each caller names its
own error type.
"""

from __future__ import annotations

import argparse
import io
import pickle
import re
import zipfile
from typing import IO, Any

import torch

from .errors import NadaError


def check_torch_archive(source: bytes | IO[bytes], size: int, where: str, error: type[NadaError]) -> None:
    """Refuse a zip-format torch file that is damaged, has no data.pkl, or inflates far beyond `size`
    bytes (torch.save stores entries uncompressed, so only a hostile file expands). Legacy (non-zip)
    files are left to the tensor check after loading."""
    fileobj = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        infos = zipfile.ZipFile(fileobj).infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:  # damaged directories raise all of these
        raise error(f"{where} is a damaged or truncated PyTorch archive ({e}); re-download it") from None
    unpacked = sum(i.file_size for i in infos)
    if unpacked > 2 * size + (1 << 20):
        raise error(
            f"{where} is a zip archive that expands to {unpacked} bytes from {size}; "
            "a PyTorch checkpoint is not compressed like that, so it is refused"
        )
    if not any(i.filename.endswith("data.pkl") for i in infos):
        raise error(f"{where} is a zip file but not a PyTorch checkpoint (no data.pkl)")


def overlapping(t: torch.Tensor) -> bool:
    """True if the tensor declares more values than its storage holds (zero or overlapping strides).
    Weights never overlap, so this marks a damaged or hostile file."""
    return t.numel() * t.element_size() > t.untyped_storage().nbytes()


def check_tensors_fit(obj: Any, where: str, file_size: int, error: type[NadaError]) -> None:
    """Refuse loaded tensors that declare more data than the file holds: overlapping strides, or
    storages larger in total than the file (legacy format: allocated uninitialised, never read)."""
    storages: dict[int, int] = {}

    def walk(x: Any, depth: int) -> None:
        if isinstance(x, torch.Tensor):
            if overlapping(x):
                raise error(
                    f"{where}: a tensor of shape {list(x.shape)} declares more values than the file "
                    "stores (overlapping strides); the file is damaged or hostile and is refused"
                )
            st = x.untyped_storage()
            storages[st.data_ptr()] = st.nbytes()
        elif depth < 64:
            if isinstance(x, argparse.Namespace):
                x = vars(x)
            if isinstance(x, dict):
                x = list(x.values())
            if isinstance(x, (list, tuple)):
                for y in x:
                    walk(y, depth + 1)

    walk(obj, 0)
    declared = sum(storages.values())
    if declared > file_size:
        raise error(
            f"{where} declares {declared} bytes of tensor data but the file has only {file_size}; "
            "it is damaged or hostile and is refused"
        )


def load_torch_bytes(data: bytes, where: str, kind: str, error: type[NadaError]) -> Any:
    """`torch.load(weights_only=True)` of a .pt file's bytes, with the checks above; a file that asks
    for anything but tensors and plain containers (or argparse.Namespace, which rosinality's training
    script stores) is refused, naming what it asked for. `kind` names the file type in messages."""
    if data[:4] == b"PK\x03\x04":
        check_torch_archive(data, len(data), where, error)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch words it "Unsupported global: GLOBAL a.b ..." or "unsupported GLOBAL a.b whose module ..."
        found = re.search(r"GLOBAL\s+([\w.]+)", str(e))
        hint = found.group(1) if found else ""
        raise error(
            f"{where} was refused: it asks to load {hint or 'something other than tensors'}, which a {kind} "
            "checkpoint never needs and which could run code from the file"
        ) from None
    except Exception as e:  # torch raises RuntimeError/ValueError/EOFError for damaged archives
        raise error(
            f"{where} cannot be read as a PyTorch checkpoint ({type(e).__name__}: {e}); "
            "it may be truncated, re-download it"
        ) from None
    check_tensors_fit(obj, where, len(data), error)
    return obj
