"""The pack's root module imports both ways (as ComfyUI imports a pack, and as a plain module), and the
registry zip holds what the nodes need to run."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

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


# What the nodes need at run time: every tracked file under these folders, and these root files.
RUNTIME_FOLDERS = ("nada/", "nodes/", "web/", "example_workflows/")
RUNTIME_ROOT_FILES = ("__init__.py", "pyproject.toml", "requirements.txt", "LICENSE", "README.md")
DEVELOPMENT_FOLDERS = ("tests/", "bench/", ".ci/", "docs/")


def git_ls_files(*args: str) -> set[str]:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files", *args], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"needs a git checkout (comfy-cli zips git-tracked files): {e}")
    return set(out.stdout.splitlines())


def registry_zip_files() -> set[str]:
    """The paths `comfy node pack` / `comfy node publish` put in the registry zip.

    comfy-cli (`comfy_cli/file_utils.py`, `zip_files`) takes `git ls-files`, strips each line of
    `.comfyignore`, drops blank and `#` lines, and leaves out every path that the remaining lines match
    with gitignore rules (pathspec's "gitwildmatch"), unless it lies under a `[tool.comfy] includes`
    prefix. Git itself applies the same gitignore rules here (`ls-files --ignored`), so the test needs
    no extra package; negated patterns, where pathspec and git could differ, are refused."""
    lines = [line.strip() for line in (ROOT / ".comfyignore").read_text(encoding="utf-8").splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert not any(p.startswith("!") for p in patterns), "keep .comfyignore free of negations (see docstring)"
    # includes: a TOML list of strings on one key; tomllib exists only from Python 3.11.
    m = re.search(r"^includes\s*=\s*\[([^\]]*)\]", (ROOT / "pyproject.toml").read_text(encoding="utf-8"), re.M)
    includes = [s.strip("/") for s in re.findall(r'"([^"]*)"', m.group(1))] if m else []

    tracked = git_ls_files()
    with tempfile.NamedTemporaryFile("w", suffix=".comfyignore", delete=False, encoding="utf-8") as f:
        f.write("\n".join(patterns) + "\n")
    try:
        ignored = git_ls_files("--cached", "--ignored", f"--exclude-from={f.name}")
    finally:
        os.unlink(f.name)
    forced = {p for p in ignored if any(p == i or p.startswith(i + "/") for i in includes if i)}
    return tracked - ignored | forced


def test_registry_zip_has_every_runtime_file_and_no_development_file():
    files = registry_zip_files()
    runtime = {p for p in files if p.startswith(RUNTIME_FOLDERS)}
    assert git_ls_files(*RUNTIME_FOLDERS) - runtime == set(), "runtime files the registry zip would drop"
    assert set(RUNTIME_ROOT_FILES) <= files
    for folder in ("nada/assets/", "web/docs/", "web/js/", "example_workflows/"):
        assert any(p.startswith(folder) for p in files), folder
    assert not [p for p in files if p.startswith(DEVELOPMENT_FOLDERS)]
    assert "requirements-dev.txt" not in files


def test_node_list_for_comfyui_manager_names_every_node(pack):
    """ComfyUI-Manager finds which pack provides a workflow's missing node types from a literal
    `NODE_CLASS_MAPPINGS = {...}` in the pack's source or from `node_list.json` ({node id: description})
    at its root (its `scanner.py`). Ours is built from the node classes, so the file is the list."""
    listed = json.loads((ROOT / "node_list.json").read_text(encoding="utf-8"))
    assert listed == pack.NODE_DISPLAY_NAME_MAPPINGS, (
        "node_list.json is out of date; write it again from NODE_DISPLAY_NAME_MAPPINGS"
    )
    assert "node_list.json" in registry_zip_files()
