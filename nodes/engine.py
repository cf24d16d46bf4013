"""The engine under its one import identity: the top-level package `nada`.

ComfyUI imports this pack as `custom_nodes.<folder>` (or under the folder's name), while tests,
scripts and `python -m nada` import the engine as `nada`. Were the nodes to import it relatively, the
same file would run twice as two modules, and a generator made by a node would fail `isinstance`
checks against `nada.Generator`. So the nodes import `nada` by its top-level name, and this module
makes that name mean this pack's engine: it reuses `sys.modules["nada"]` when that is this folder's
engine (tests, scripts), and otherwise loads `<pack>/nada/` under the name `nada`. The pack root is not
put on `sys.path`, so none of the pack's other folders (`nodes`, `tests`) can shadow ComfyUI's modules.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ENGINE_DIR = Path(__file__).resolve().parent.parent / "nada"


def load_engine() -> ModuleType:
    existing = sys.modules.get("nada")
    if existing is not None:
        where = Path(getattr(existing, "__file__", "") or "").resolve().parent
        if where != ENGINE_DIR:
            raise ImportError(
                f"another package named 'nada' is already loaded from {where}; comfyui-nada needs its own "
                f"engine from {ENGINE_DIR}. Remove the other copy (or the second comfyui-nada folder)."
            )
        return existing
    spec = importlib.util.spec_from_file_location(
        "nada", ENGINE_DIR / "__init__.py", submodule_search_locations=[str(ENGINE_DIR)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["nada"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["nada"]
        raise
    return module


nada = load_engine()
