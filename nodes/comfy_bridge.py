"""The one place where the node pack touches ComfyUI.

Every ComfyUI module is imported lazily, when a node first needs it, and each service has a
standalone fallback: outside ComfyUI (tests, scripts) the nodes read and write under a base folder
(`configure_standalone`), report progress to the log, and are cancelled through `request_interrupt`.
Inside ComfyUI the same functions go to `folder_paths`, `comfy.utils.ProgressBar`,
`comfy.model_management` and `server.PromptServer`.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch

from nada.demo import ASSETS_DIR as DEMO_ASSETS_DIR

log = logging.getLogger(__name__)

# Which files each of our folders lists. `.pkl` is read by our restricted unpickler, never executed.
STYLEGAN_EXTENSIONS = frozenset({".pt", ".pkl", ".safetensors"})
OPEN_CLIP_EXTENSIONS = frozenset({".safetensors", ".bin", ".pt", ".pth"})
STYLEGAN_FOLDER = "stylegan"
OPEN_CLIP_FOLDER = "open_clip"
ADAPTER_FOLDER = "stylegan_adapters"
ADAPTER_EXTENSIONS = frozenset({".safetensors"})
# pSp / e4e / ReStyle checkpoints: torch zip files read with weights_only=True (no code runs).
ENCODER_FOLDER = "stylegan_encoders"
ENCODER_EXTENSIONS = frozenset({".pt", ".pth"})
# VGG16 (torchvision's) and LPIPS weights for the projector's perceptual loss; read with weights_only.
PERCEPTUAL_FOLDER = "lpips"
PERCEPTUAL_EXTENSIONS = frozenset({".pth", ".pt", ".safetensors"})

_MISSING = object()
_modules: dict[str, Any] = {}


class NodeError(Exception):
    """A node cannot run with the inputs it was given; the message says what to change."""


class Interrupted(Exception):  # noqa: N818 - named after what happened, like ComfyUI's own
    """Standalone stand-in for ComfyUI's InterruptProcessingException (the user pressed Cancel)."""


def _module(name: str, attr: str) -> Any:
    """ComfyUI's module `name` if it is importable and really ComfyUI's (has `attr`), else None."""
    mod = _modules.get(name, _MISSING)
    if mod is _MISSING:
        try:
            mod = importlib.import_module(name)
        except Exception:  # not running inside ComfyUI (ImportError, or a half-importable checkout)
            mod = None
        if mod is not None and not hasattr(mod, attr):
            mod = None
        _modules[name] = mod
    return mod


def _folder_paths() -> Any:
    return _module("folder_paths", "folder_names_and_paths")


def _model_management() -> Any:
    return _module("comfy.model_management", "processing_interrupted")


def _comfy_utils() -> Any:
    return _module("comfy.utils", "ProgressBar")


def _prompt_server() -> Any:
    server = _module("server", "PromptServer")
    return getattr(server.PromptServer, "instance", None) if server is not None else None


def in_comfyui() -> bool:
    """True when ComfyUI's folder registry is importable (we are loaded as a custom-node pack)."""
    return _folder_paths() is not None


# ---------------------------------------------------------------------------------------------
# Folders

_standalone = {"base": os.environ.get("COMFYUI_NADA_BASE") or os.getcwd()}
_standalone_folders: dict[str, tuple[list[str], frozenset[str]]] = {}


def configure_standalone(base_dir: str | os.PathLike[str]) -> None:
    """Outside ComfyUI: put models/, output/ and temp/ under `base_dir` (tests use a temp dir)."""
    _standalone["base"] = os.fspath(base_dir)
    _standalone_folders.clear()
    register_folders()


def output_directory() -> str:
    fp = _folder_paths()
    return fp.get_output_directory() if fp is not None else os.path.join(_standalone["base"], "output")


def temp_directory() -> str:
    fp = _folder_paths()
    return fp.get_temp_directory() if fp is not None else os.path.join(_standalone["base"], "temp")


def models_directory() -> str:
    fp = _folder_paths()
    return fp.models_dir if fp is not None else os.path.join(_standalone["base"], "models")


def stylegan_output_directory() -> str:
    """Where generators are saved; also a search path of the loader, so saved files show up there."""
    return os.path.join(output_directory(), STYLEGAN_FOLDER)


def _merge_folder(name: str, paths: Iterable[str], extensions: frozenset[str]) -> None:
    fp = _folder_paths()
    if fp is None:
        existing, _ = _standalone_folders.get(name, ([], extensions))
        _standalone_folders[name] = (existing + [p for p in paths if p not in existing], extensions)
        return
    # extra_model_paths.yaml runs before custom nodes are imported, so a user's `stylegan:` entry may
    # already exist: keep its paths, add ours after them, and set our extension set (a folder created
    # by add_model_folder_path alone has an empty set, which lists every file).
    for p in paths:
        fp.add_model_folder_path(name, p)
    user_paths = fp.folder_names_and_paths[name][0]
    fp.folder_names_and_paths[name] = (user_paths, set(extensions))


def register_folders() -> None:
    """Register models/stylegan + output/stylegan, models/open_clip, the adapter folders and
    models/stylegan_encoders and models/lpips (idempotent).

    The pack's own demo models are a search path of stylegan and open_clip too (after the user's), so the
    loaders list them as "nada-demo/<file>" with nothing to copy."""
    _merge_folder(
        STYLEGAN_FOLDER,
        [
            os.path.join(models_directory(), STYLEGAN_FOLDER),
            stylegan_output_directory(),
            str(DEMO_ASSETS_DIR / STYLEGAN_FOLDER),
        ],
        STYLEGAN_EXTENSIONS,
    )
    _merge_folder(
        OPEN_CLIP_FOLDER,
        [os.path.join(models_directory(), OPEN_CLIP_FOLDER), str(DEMO_ASSETS_DIR / OPEN_CLIP_FOLDER)],
        OPEN_CLIP_EXTENSIONS,
    )
    _merge_folder(
        ADAPTER_FOLDER,
        [os.path.join(models_directory(), ADAPTER_FOLDER), os.path.join(output_directory(), ADAPTER_FOLDER)],
        ADAPTER_EXTENSIONS,
    )
    _merge_folder(ENCODER_FOLDER, [os.path.join(models_directory(), ENCODER_FOLDER)], ENCODER_EXTENSIONS)
    _merge_folder(PERCEPTUAL_FOLDER, [os.path.join(models_directory(), PERCEPTUAL_FOLDER)], PERCEPTUAL_EXTENSIONS)


def folder_paths_of(name: str) -> list[str]:
    fp = _folder_paths()
    if fp is not None:
        return fp.get_folder_paths(name)
    if name not in _standalone_folders:
        register_folders()
    return list(_standalone_folders[name][0])


def list_files(name: str) -> list[str]:
    """Relative names of the files in every search path of folder `name`, sorted."""
    fp = _folder_paths()
    if fp is not None:
        return fp.get_filename_list(name)
    if name not in _standalone_folders:
        register_folders()
    paths, exts = _standalone_folders[name]
    found: set[str] = set()
    for root in paths:
        if not os.path.isdir(root):
            continue
        for dirpath, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for f in files:
                if os.path.splitext(f)[1].lower() in exts:
                    found.add(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return sorted(found)


def full_path(name: str, filename: str) -> str:
    """Absolute path of `filename` in folder `name`; refuses names that climb out of the folder."""
    fp = _folder_paths()
    if fp is not None:
        path = fp.get_full_path(name, filename)
    else:
        path = None
        rel = os.path.normpath(filename)
        if not (os.path.isabs(rel) or rel.startswith("..")):
            for root in folder_paths_of(name):
                candidate = os.path.join(root, rel)
                if os.path.isfile(candidate):
                    path = candidate
                    break
    if path is None:
        roots = ", ".join(folder_paths_of(name)) or "(none)"
        raise NodeError(
            f"'{filename}' was not found in the {name} folders ({roots}); put the file there "
            f"and press Refresh (R) so the list is re-read"
        )
    return path


def file_signature(name: str, filename: str) -> str:
    """Changes when the file in folder `name` is replaced, so ComfyUI re-runs a loader instead of
    serving the old model (for IS_CHANGED); "" when it is missing (the loader then says so)."""
    try:
        st = os.stat(full_path(name, filename))
    except (NodeError, OSError):
        return ""
    return f"{st.st_size}-{st.st_mtime_ns}"


# ---------------------------------------------------------------------------------------------
# Devices and memory


def torch_device() -> torch.device:
    """The device heavy work runs on: ComfyUI's choice (honours --cpu), else CUDA/MPS/CPU."""
    mm = _model_management()
    if mm is not None:
        return mm.get_torch_device()
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def intermediate_device() -> torch.device:
    """Where node outputs (IMAGE batches) live so that any other node can take them."""
    mm = _model_management()
    return mm.intermediate_device() if mm is not None else torch.device("cpu")


def offload_device() -> torch.device:
    """Where models rest between nodes."""
    mm = _model_management()
    return mm.unet_offload_device() if mm is not None else torch.device("cpu")


# Standalone only: a pretend amount of free device memory (bytes) that tests and dry runs set to see
# what the nodes do when a model does not fit. None: the real free memory (CUDA) or unknown (CPU).
_standalone_budget: dict[str, int | None] = {"free": None}


def set_memory_budget(free_bytes: int | None) -> None:
    """Outside ComfyUI: pretend that `free_bytes` are free on every device (None: measure)."""
    _standalone_budget["free"] = None if free_bytes is None else int(free_bytes)


def free_bytes(device: torch.device) -> int | None:
    """Bytes free on `device` now (ComfyUI's count, which includes its own cache), None when unknown."""
    mm = _model_management()
    if mm is not None:
        return int(mm.get_free_memory(device))
    if _standalone_budget["free"] is not None:
        return _standalone_budget["free"]
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return None


def free_memory(bytes_needed: int, device: torch.device, everything: bool = False) -> int | None:
    """Ask ComfyUI to unload its own models until `bytes_needed` are free on `device` (all of them with
    `everything`); returns the bytes free afterwards (None when unknown, e.g. the CPU outside ComfyUI)."""
    mm = _model_management()
    if mm is not None:
        if everything:
            mm.unload_all_models()
        mm.free_memory(bytes_needed, device)
    soft_empty_cache()
    return free_bytes(device)


def make_room(
    bytes_needed: int, device: torch.device, everything: bool = False, advice: str = "", minimum: int | None = None
) -> int | None:
    """Free memory for work that needs about `bytes_needed` on `device` (see `free_memory`). When not
    even `minimum` (default: all of it) fits, say so on the node with `advice` (what to lower) and go
    on: the estimate can be off, and an out-of-memory error later names the same fixes. Returns the
    bytes free afterwards (None when unknown)."""
    free = free_memory(bytes_needed, device, everything)
    least = bytes_needed if minimum is None else minimum
    if free is not None and free < least:
        text = (
            f"this needs about {least / 2**30:.2f} GiB on {device} but only {free / 2**30:.2f} GiB are free "
            f"after unloading other models{'; ' + advice if advice else ''}"
        )
        log.warning("%s", text)
        send_text(text)
    return free


def soft_empty_cache() -> None:
    mm = _model_management()
    if mm is not None:
        mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# Interruption

_interrupt_lock = threading.Lock()
_interrupt_flag = {"set": False}


def interrupt_exception_type() -> type[BaseException]:
    """The exception that tells the executor the user cancelled (ComfyUI's, or our stand-in)."""
    mm = _model_management()
    return mm.InterruptProcessingException if mm is not None else Interrupted


def interrupt_requested() -> bool:
    """Whether Cancel was pressed; does not clear the request."""
    mm = _model_management()
    if mm is not None:
        return bool(mm.processing_interrupted())
    with _interrupt_lock:
        return _interrupt_flag["set"]


def raise_if_interrupted() -> None:
    """Raise the interrupt exception (and clear the request) if Cancel was pressed."""
    mm = _model_management()
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()
        return
    with _interrupt_lock:
        if _interrupt_flag["set"]:
            _interrupt_flag["set"] = False
            raise Interrupted("processing interrupted")


def request_interrupt(value: bool = True) -> None:
    """Press (or release) Cancel: ComfyUI's flag inside ComfyUI, ours outside."""
    mm = _model_management()
    if mm is not None:
        mm.interrupt_current_processing(value)
        return
    with _interrupt_lock:
        _interrupt_flag["set"] = value


# ---------------------------------------------------------------------------------------------
# Progress, text and events on the node


def current_node_id() -> str | None:
    """The id of the node being executed (ComfyUI sets it in a context variable), or None."""
    utils = _module("comfy_execution.utils", "get_executing_context")
    if utils is None:  # ComfyUI < 0.3.45 runs one node at a time and names it on the server
        node = getattr(_prompt_server(), "last_node_id", None)
        return None if node is None else str(node)
    ctx = utils.get_executing_context()
    return None if ctx is None else str(ctx.node_id)


# Standalone listeners of `send_event` (scripts and tests watch a run with them; ComfyUI has websockets).
event_listeners: list[Callable[[str, dict[str, Any]], None]] = []


def send_event(event: str, data: dict[str, Any]) -> None:
    """Send a JSON event to the browser tab that queued the prompt (our web extension listens)."""
    server = _prompt_server()
    if server is None:
        log.debug("event %s: %s", event, data)
        for listener in list(event_listeners):
            listener(event, data)
        return
    server.send_sync(event, data, getattr(server, "client_id", None))


def send_text(text: str, node_id: str | None = None) -> None:
    """Show `text` on the node (ComfyUI renders progress text under the node's title)."""
    node_id = node_id if node_id is not None else current_node_id()
    server = _prompt_server()
    if server is None or node_id is None or not hasattr(server, "send_progress_text"):
        log.info("%s", text)
        return
    server.send_progress_text(text, node_id, getattr(server, "client_id", None))


class Progress:
    """A progress bar on the running node, with optional preview images; logs outside ComfyUI.

    ComfyUI's progress hook also raises the interrupt exception when Cancel was pressed. `update`
    swallows that raise and remembers it (`interrupted`), so a training loop can stop at its own
    step boundary, keep its partial result, and raise afterwards.
    """

    def __init__(self, total: int, node_id: str | None = None, preview_size: int = 512):
        self.total = max(1, int(total))
        self.node_id = node_id if node_id is not None else current_node_id()
        self.preview_size = preview_size
        self.interrupted = False
        utils = _comfy_utils()
        if utils is None:
            self._bar = None
        elif "node_id" in inspect.signature(utils.ProgressBar).parameters:
            self._bar = utils.ProgressBar(self.total, node_id=self.node_id)
        else:  # ComfyUI < 0.3.45: ProgressBar(total), reported on the executing node
            self._bar = utils.ProgressBar(self.total)
        self._last_log = 0.0

    def update(self, value: int, preview: Any = None) -> None:
        """Set the bar to `value` of `total`; `preview` is a PIL image shown on the node."""
        if self._bar is None:
            now = time.monotonic()
            if now - self._last_log > 2.0 or value >= self.total:
                log.info("progress %d/%d", value, self.total)
                self._last_log = now
            return
        payload = ("JPEG", preview, self.preview_size) if preview is not None else None
        try:
            self._bar.update_absolute(min(int(value), self.total), self.total, payload)
        except interrupt_exception_type():
            self.interrupted = True


def chunk_progress(node_id: str | None = None) -> Callable[[int, int], None]:
    """A `(done, total)` callback for engine work done in chunks (rendering, encoding): moves the node's
    progress bar and raises the interrupt exception between chunks when Cancel was pressed."""
    bars: dict[int, Progress] = {}

    def update(done: int, total: int) -> None:
        bar = bars.get(total)
        if bar is None:
            bars.clear()
            bar = bars[total] = Progress(total, node_id=node_id)
        bar.update(done)
        if bar.interrupted:
            raise interrupt_exception_type()("processing interrupted")
        raise_if_interrupted()

    return update


def sibling_json(path: str) -> str | None:
    """`name.json` next to `name.<ext>` (a custom model config shipped with its weights), if present."""
    candidate = os.path.splitext(path)[0] + ".json"
    return candidate if os.path.isfile(candidate) else None


def next_free_path(folder: str, prefix: str, extension: str) -> str:
    """`<folder>/<prefix>_00001<extension>`, counting up past existing files (saves never overwrite).

    `prefix` may contain subfolders ("nada/sketch"); it may not climb out of `folder`.
    """
    prefix = prefix.strip().replace("\\", "/").strip("/") or "nada"
    target = os.path.normpath(os.path.join(folder, prefix))
    if os.path.commonpath([os.path.abspath(target), os.path.abspath(folder)]) != os.path.abspath(folder):
        raise NodeError(f"filename_prefix '{prefix}' points outside {folder}; use a relative name like 'nada/sketch'")
    directory, base = os.path.split(target)
    os.makedirs(directory, exist_ok=True)
    counter = 1
    while True:
        path = os.path.join(directory, f"{base}_{counter:05d}{extension}")
        if not os.path.exists(path):
            return path
        counter += 1
