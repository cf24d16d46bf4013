"""The pack's root module imports both ways: as ComfyUI imports a pack, and as a plain module."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_root_imports_as_a_plain_module_without_nodes(tmp_path):
    # pytest imports the checkout's __init__.py outside any package when the folder name is not a
    # package name (a clone into "ci-clone"); it must not fail on the relative import of the nodes.
    copy = tmp_path / "plain_root.py"
    copy.write_text((ROOT / "__init__.py").read_text())
    spec = importlib.util.spec_from_file_location("plain_root", copy)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.NODE_CLASS_MAPPINGS == {} and module.WEB_DIRECTORY == "./web"


def test_root_as_a_pack_exports_every_node(pack):
    assert len(pack.NODE_CLASS_MAPPINGS) >= 16
    assert set(pack.NODE_CLASS_MAPPINGS) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
    assert all(k.startswith("NADA_") for k in pack.NODE_CLASS_MAPPINGS)
