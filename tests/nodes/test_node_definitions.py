"""Every node's declaration is one ComfyUI accepts, with the metadata users see in the UI."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest

from tests.nodes.workflow_api import WIDGET_TYPES, combo_values, input_options, input_type

ROOT = Path(__file__).resolve().parents[2]
# Our own type names: spacepxl/ComfyUI-StyleGan passes other objects as STYLEGAN and STYLEGAN_LATENT, and
# the canvas links any two sockets whose type strings are equal.
CUSTOM_TYPES = {"NADA_STYLEGAN", "NADA_LATENT", "NADA_CLIP", "NADA_DIRECTION", "NADA_ADAPTER", "NADA_ENCODER"}
CORE_TYPES = {"IMAGE", "MASK", "STRING", "LOSS_MAP"}
OPTION_KEYS = {
    "INT": {"default", "min", "max", "step", "display", "control_after_generate", "tooltip", "forceInput", "advanced"},
    "FLOAT": {"default", "min", "max", "step", "round", "display", "tooltip", "forceInput", "advanced"},
    "STRING": {"default", "multiline", "placeholder", "dynamicPrompts", "tooltip", "forceInput", "advanced"},
    "BOOLEAN": {"default", "label_on", "label_off", "tooltip", "forceInput", "advanced"},
    "COMBO": {"default", "tooltip", "control_after_generate", "advanced", "options"},
}
SOCKET_OPTION_KEYS = {"tooltip", "lazy", "rawLink"}


def all_nodes(pack):
    return sorted(pack.NODE_CLASS_MAPPINGS.items())


def test_root_module_exports_only_the_three_names(pack):
    exported = {n for n in vars(pack) if not n.startswith("_")} - {"nodes", "nada"}
    assert exported == {"NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"}
    assert (ROOT / pack.WEB_DIRECTORY / "js").is_dir()


def test_every_node_is_listed_with_a_prefixed_id_and_display_name(pack):
    ids = set(pack.NODE_CLASS_MAPPINGS)
    expected = {
        "NADA_LoadStyleGAN2",
        "NADA_LoadCLIP",
        "NADA_CLIPEnsemble",
        "NADA_EncodePromptPair",
        "NADA_ImageDirection",
        "NADA_CombineDirections",
        "NADA_Adapt",
        "NADA_LatentFromSeed",
        "NADA_Sample",
        "NADA_RenderLatent",
        "NADA_InterpolateLatents",
        "NADA_BlendGenerators",
        "NADA_SaveGenerator",
        "NADA_LoadAdapter",
        "NADA_ApplyAdapters",
        "NADA_SaveAdapter",
        "NADA_LoadEncoder",
        "NADA_InvertImage",
        "NADA_ProjectImage",
    }
    assert ids == expected
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == ids
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert cls.NODE_ID == node_id
        assert pack.NODE_DISPLAY_NAME_MAPPINGS[node_id]


@pytest.mark.parametrize("attr", ["CATEGORY", "DESCRIPTION", "FUNCTION"])
def test_metadata_strings(pack, attr):
    for node_id, cls in all_nodes(pack):
        value = getattr(cls, attr, None)
        assert isinstance(value, str) and value, f"{node_id}.{attr}"
    for node_id, cls in all_nodes(pack):
        assert cls.CATEGORY.startswith("StyleGAN-NADA/"), node_id
        assert len(cls.DESCRIPTION) > 30, f"{node_id}: say what the node does"


def test_outputs_are_named_typed_and_explained(pack):
    for node_id, cls in all_nodes(pack):
        n = len(cls.RETURN_TYPES)
        assert isinstance(cls.RETURN_TYPES, tuple)
        assert len(cls.RETURN_NAMES) == n and len(cls.OUTPUT_TOOLTIPS) == n, node_id
        assert all(t in CUSTOM_TYPES | CORE_TYPES for t in cls.RETURN_TYPES), node_id
        assert all(isinstance(t, str) and len(t) > 10 for t in cls.OUTPUT_TOOLTIPS), node_id
        aliases = cls.SEARCH_ALIASES
        assert isinstance(aliases, list) and aliases and all(isinstance(a, str) for a in aliases), node_id


def test_the_function_takes_exactly_the_declared_inputs(pack):
    for node_id, cls in all_nodes(pack):
        spec = cls.INPUT_TYPES()
        declared = {n for section in ("required", "optional") for n in spec.get(section, {})}
        declared |= set(spec.get("hidden", {}))
        params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
        var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        names = {n for n, p in params.items() if n != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD}
        if var_kw:  # **kwargs takes the rest; every named parameter must still be declared
            assert names <= declared, f"{node_id}: function takes {sorted(names - declared)} it does not declare"
        else:
            assert names == declared, f"{node_id}: function takes {sorted(names)}, declares {sorted(declared)}"
        for opt in spec.get("optional", {}):
            if opt in params:
                assert params[opt].default is not inspect.Parameter.empty, (
                    f"{node_id}: optional '{opt}' needs a default"
                )


def test_every_input_is_valid_for_comfyui(pack):
    for node_id, cls in all_nodes(pack):
        spec = cls.INPUT_TYPES()
        assert set(spec) <= {"required", "optional", "hidden"}, node_id
        json.dumps(spec)  # /object_info must serialise it
        for section in ("required", "optional"):
            for name, entry in spec.get(section, {}).items():
                where = f"{node_id}.{name}"
                assert re.fullmatch(r"[a-z][a-z0-9_]*", name), where
                assert isinstance(entry, tuple) and 1 <= len(entry) <= 2, where
                kind = input_type(entry)
                opts = input_options(entry)
                assert isinstance(opts.get("tooltip"), str) and len(opts["tooltip"]) > 10, f"{where}: tooltip"
                if kind not in WIDGET_TYPES:
                    assert kind in CUSTOM_TYPES | CORE_TYPES, where
                    assert set(opts) <= SOCKET_OPTION_KEYS, f"{where}: {set(opts) - SOCKET_OPTION_KEYS}"
                    continue
                assert set(opts) <= OPTION_KEYS[kind], f"{where}: unknown option keys {set(opts) - OPTION_KEYS[kind]}"
                if kind == "COMBO":
                    values = combo_values(entry)
                    assert all(isinstance(v, str) for v in values), where
                    if "default" in opts:
                        assert opts["default"] in values, where
                    continue
                assert "default" in opts, f"{where}: widgets need a default"
                d = opts["default"]
                if kind == "INT":
                    assert isinstance(d, int) and not isinstance(d, bool), where
                    for k in ("min", "max", "step"):
                        assert isinstance(opts.get(k), int), f"{where}: {k}"
                if kind == "FLOAT":
                    assert isinstance(d, (int, float)) and not isinstance(d, bool), where
                    for k in ("min", "max", "step"):
                        assert isinstance(opts.get(k), (int, float)), f"{where}: {k}"
                if kind in ("INT", "FLOAT"):
                    assert opts["min"] <= d <= opts["max"], f"{where}: default {d} outside {opts['min']}..{opts['max']}"
                    assert opts["step"] > 0, where
                if kind == "BOOLEAN":
                    assert isinstance(d, bool), where
                if kind == "STRING":
                    assert isinstance(d, str), where


def test_experimental_training_and_output_nodes(pack):
    nodes = pack.NODE_CLASS_MAPPINGS
    assert nodes["NADA_Adapt"].EXPERIMENTAL is True
    assert getattr(nodes["NADA_SaveGenerator"], "OUTPUT_NODE", False) is True
    outputs = sorted(n for n, c in nodes.items() if getattr(c, "OUTPUT_NODE", False))
    assert outputs == ["NADA_SaveAdapter", "NADA_SaveGenerator"]


def test_every_node_has_a_doc_page(pack):
    for node_id in pack.NODE_CLASS_MAPPINGS:
        doc = ROOT / "web" / "docs" / f"{node_id}.md"
        assert doc.is_file(), f"missing {doc}"
        text = doc.read_text(encoding="utf-8")
        assert text.startswith("# "), doc
        for name in pack.NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES().get("required", {}):
            assert f"`{name}`" in text, f"{doc}: document input `{name}`"
