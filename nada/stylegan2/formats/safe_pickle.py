"""A pickle reader that never runs code from the file.

NVIDIA's StyleGAN pickles rebuild their networks by executing Python source embedded in the file
(`torch_utils.persistence` for PyTorch, `dnnlib.tflib.Network.__setstate__` for TensorFlow). We read
the same bytes with `SafeUnpickler`, whose `find_class` maps an explicit allow-list of global names to
harmless stand-ins of our own: network objects become plain records of their state, tensors are
rebuilt by torch's weights-only loader, numpy arrays by numpy's data-only constructors. Any other
global, anything that would call a function we do not know, is refused with `FormatError` naming it.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import pickle
import re
import struct
import warnings
from typing import Any

import numpy as np
import torch

from ...errors import FormatError
from ...torch_files import check_torch_archive, overlapping


class PersistentRecord:
    """What NVIDIA's `_reconstruct_persistent_obj` would have rebuilt: the class name and its state.

    The embedded module source is kept only as its length, never executed.
    """

    def __init__(self, meta: dict[str, Any]):
        if not isinstance(meta, dict) or meta.get("type") not in ("class", None):
            raise FormatError("unexpected persistent-object record in the pickle; the file may be damaged")
        self.class_name = str(meta.get("class_name", ""))
        self.module_src_len = len(meta.get("module_src") or "")
        self.state = meta.get("state") or {}

    def __repr__(self) -> str:
        return f"PersistentRecord({self.class_name})"


class TFNetworkRecord:
    """A `dnnlib.tflib.Network` as data: the state its `__setstate__` receives, without building it."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise FormatError("unexpected TensorFlow network state in the pickle; the file may be damaged")
        self.state = state

    @property
    def name(self) -> str:
        return str(self.state.get("name", ""))

    @property
    def variables(self) -> dict[str, np.ndarray]:
        return {str(k): v for k, v in self.state.get("variables", [])}

    @property
    def components(self) -> dict[str, Any]:
        return dict(self.state.get("components") or {})

    @property
    def static_kwargs(self) -> dict[str, Any]:
        return dict(self.state.get("static_kwargs") or {})


class EasyDictRecord(dict):
    """dnnlib.EasyDict as a plain dict."""


class _ModuleRecord:
    """A torch.nn module pickled the default way (by `copyreg._reconstructor`), as data."""

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {}


def _load_storage_bytes(data: bytes) -> Any:
    """torch.storage._load_from_bytes, weights-only."""
    if not isinstance(data, (bytes, bytearray)):
        raise FormatError("a tensor storage in the pickle is not bytes; the file may be damaged")
    if bytes(data[:4]) == b"PK\x03\x04":
        # A nested zip would be inflated by torch.load before any check (zip bombs).
        check_torch_archive(bytes(data), len(data), "a tensor storage nested in the pickle", FormatError)
    try:
        storage = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as e:  # torch raises several types for bad data
        # torch's own message advises weights_only=False, the one thing never to do with such a file
        found = re.search(r"GLOBAL\s+([\w.]+)", str(e))
        what = f"asks to load {found.group(1)}" if found else "is not plain tensor data"
        raise FormatError(
            f"a tensor storage nested in the pickle {what}; refused for safety (it could run code "
            "from the file). The file is damaged or hostile"
        ) from None
    # The legacy torch format sizes a storage by a number in the data and allocates it uninitialised
    # before (or without) reading it; a storage larger than its bytes was never filled from the file.
    with warnings.catch_warnings():  # TypedStorage.nbytes warns that TypedStorage is deprecated
        warnings.simplefilter("ignore")
        nbytes = storage.nbytes() if hasattr(storage, "nbytes") else 0
    if nbytes > len(data):
        raise FormatError(
            f"a tensor storage nested in the pickle declares {nbytes} bytes but holds {len(data)}; "
            "the file is damaged or hostile and is refused"
        )
    return storage


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    from torch._utils import _rebuild_tensor_v2

    t = _rebuild_tensor_v2(storage, storage_offset, size, stride, False, collections.OrderedDict())
    if overlapping(t):
        raise FormatError(
            f"a tensor of shape {list(t.shape)} in the pickle declares more values than it stores "
            "(overlapping strides); the file is damaged or hostile and is refused"
        )
    return t


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not isinstance(data, torch.Tensor):
        raise FormatError("a parameter in the pickle is not a tensor; the file may be damaged")
    return data


def _rebuild_from_type(func, new_type, args, state):
    if func not in _SAFE_FUNCTIONS:
        raise FormatError("a tensor in the pickle is rebuilt by an unknown function; refused for safety")
    return func(*args)


def _reconstructor(cls, base, state):
    if cls not in (TFNetworkRecord, _ModuleRecord) or base is not object:
        raise FormatError(f"the pickle asks to build {getattr(cls, '__name__', cls)!r}; refused for safety")
    return cls.__new__(cls)


def _np_reconstruct(cls, shape, dtype):
    if cls is not np.ndarray:
        raise FormatError("the pickle asks to build a numpy array subclass; refused for safety")
    # numpy pickles start from an empty array and fill it from the data that follows; a large shape
    # here would only allocate memory the data never fills.
    if int(np.prod(shape)) > 1:
        raise FormatError("the pickle asks for a pre-sized numpy array; refused (the file is not a plain numpy pickle)")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _np_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise FormatError("the pickle holds a numpy scalar of an object dtype; refused for safety")
    if data is None:
        return dtype.type()
    if not isinstance(data, (bytes, bytearray)) or len(data) != dtype.itemsize:
        raise FormatError(
            f"a numpy {dtype} scalar in the pickle does not hold {dtype.itemsize} bytes; the file is damaged"
        )
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _np_dtype(spec, align=False, copy=False):
    # Always a fresh copy: the pickle's BUILD step then sets state on it, and on a shared dtype
    # such as np.dtype("float32") that would change it for the whole process.
    if not isinstance(spec, str):
        raise FormatError("the pickle describes a numpy dtype in an unexpected way; refused for safety")
    dt = np.dtype(spec, align=bool(align), copy=True)
    if dt.hasobject:
        raise FormatError("the pickle holds a numpy array of Python objects; refused for safety")
    return dt


def _codecs_encode(text, encoding="utf-8", errors="strict"):
    """_codecs.encode as protocol-2 pickles use it: bytes written as a latin-1 string."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise FormatError("the pickle asks to encode data in an unexpected way; refused for safety")
    return text.encode("latin-1")


class _TypeRef:
    """A class named in the pickle only as a type tag (e.g. of `_rebuild_from_type_v2`); never called."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, *args, **kwargs):
        raise FormatError(f"the pickle asks to call {self.name}(...) directly; refused for safety")


_SAFE_FUNCTIONS = {_rebuild_tensor, _rebuild_parameter, _load_storage_bytes}

_TORCH_STORAGES = {
    name: getattr(torch, name)
    for name in (
        "FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage", "LongStorage", "IntStorage",
        "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage", "UntypedStorage",
    )
    if hasattr(torch, name)
}  # fmt: skip

ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentRecord,
    ("dnnlib.util", "EasyDict"): EasyDictRecord,
    ("dnnlib", "EasyDict"): EasyDictRecord,
    ("dnnlib.tflib.network", "Network"): TFNetworkRecord,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
    ("torch.nn.parameter", "Parameter"): _TypeRef("torch.nn.Parameter"),
    ("torch", "Tensor"): _TypeRef("torch.Tensor"),
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy._core.multiarray", "scalar"): _np_scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _np_dtype,
    ("_codecs", "encode"): _codecs_encode,
}
for _module in ("torch.nn.modules.container", "torch.nn.modules.module"):
    for _cls in ("ModuleList", "ModuleDict", "Sequential", "Module"):
        ALLOWED[(_module, _cls)] = _ModuleRecord
for _name, _storage in _TORCH_STORAGES.items():
    ALLOWED[("torch", _name)] = _storage


class _BoundedStorage:
    """A storage class as the pickle may call it: `FloatStorage(n)` allocates n values before any data is
    read, so a few bytes could ask for gigabytes that converting the weights would then touch. More
    values than the file has bytes cannot have come from the file."""

    def __init__(self, cls: Any, limit: int):
        self.cls, self.limit = cls, limit

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        n = args[0] if args and isinstance(args[0], int) else 0
        if n < 0 or n > self.limit:
            raise FormatError(
                f"the pickle asks for a storage of {n} values in a file of {self.limit} bytes; "
                "it is damaged or hostile and is refused"
            )
        return self.cls(*args, **kwargs)


class SafeUnpickler(pickle._Unpickler):
    """Unpickler restricted to `ALLOWED`; refuses persistent ids and every other global.

    It is the pure-Python unpickler (as fast here: the time goes into the tensor data), because
    the C one allocates whatever size a BYTEARRAY8 opcode declares before reading it, so eight
    damaged bytes could ask for exabytes. Here every declared size is checked against the data.
    """

    def __init__(self, file: io.BytesIO, size: int):
        super().__init__(file)
        self._size = size

    def _load_bytearray8(self) -> None:
        (n,) = struct.unpack("<Q", self.read(8))
        if n > self._size:
            raise FormatError(f"the pickle declares {n} bytes of data in a file of {self._size}; it is damaged")
        b = bytearray(n)
        if self.readinto(b) != n:
            raise FormatError("the pickle ends inside its data; the file is truncated")
        self.append(b)

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3:  # Python 3 writes protocols 0-2 with Python 2 names (__builtin__.set, copy_reg)
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            else:
                module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            found = ALLOWED[(module, name)]
            if module == "torch" and name in _TORCH_STORAGES:
                return _BoundedStorage(found, self._size)
            return found
        except KeyError:
            raise FormatError(
                f"the pickle refers to {module}.{name}, which comfyui-nada does not load: a checkpoint "
                "never needs it, and loading it could run code from the file. The file is refused for "
                "safety; if it is a genuine StyleGAN checkpoint, please report it"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise FormatError(
            "the pickle uses external references (persistent ids), which a plain StyleGAN pickle does not; refused"
        )


def safe_load(data: bytes) -> Any:
    """Unpickle `data` without running code from it."""
    try:
        return SafeUnpickler(io.BytesIO(data), len(data)).load()
    except FormatError:
        raise
    except RecursionError:
        raise FormatError("the pickle is nested too deeply; the file is damaged or hostile") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        UnicodeDecodeError,
        OverflowError,
        MemoryError,
        RuntimeError,
        struct.error,
    ) as e:
        raise FormatError(f"the pickle is damaged or truncated ({type(e).__name__}: {e})") from None
