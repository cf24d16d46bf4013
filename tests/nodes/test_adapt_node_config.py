"""NADA Adapt's inputs come from AdaptConfig's field options and stay compatible with saved workflows;
the engine has one import identity for the nodes and for Python users."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

import nada
from nada.adaptation import AdaptConfig

RELEASED = Path(__file__).with_name("adapt_inputs_v1.json")  # INPUT_TYPES of the first release, tooltips left out
# Socket types renamed on purpose after the first release (another pack's STYLEGAN carries other objects);
# saved workflows link by slot, so a renamed type keeps them loading.
RENAMED_TYPES = {"STYLEGAN": "NADA_STYLEGAN", "STYLEGAN_LATENT": "NADA_LATENT"}


def without_tooltips(input_types: dict) -> dict:
    def strip(spec):
        kind, opts = spec
        kind = RENAMED_TYPES.get(kind, kind) if isinstance(kind, str) else kind
        return [kind if isinstance(kind, str) else list(kind), {k: v for k, v in opts.items() if k != "tooltip"}]

    return json.loads(json.dumps({sec: {k: strip(v) for k, v in d.items()} for sec, d in input_types.items()}))


def test_released_inputs_keep_their_section_position_type_default_and_range(pack):
    old = without_tooltips(json.loads(RELEASED.read_text(encoding="utf-8")))
    new = without_tooltips(pack.NODE_CLASS_MAPPINGS["NADA_Adapt"].INPUT_TYPES())
    for section in ("required", "optional"):
        # Saved workflows store widget values by position: the released inputs come first, in order.
        assert list(new[section])[: len(old[section])] == list(old[section]), section
        for name, spec in old[section].items():
            assert new[section][name] == spec, name
    assert list(new["required"]) == list(old["required"]), "a new required input breaks saved workflows"
    added = set(new["optional"]) - set(old["optional"])
    assert {"lambda_manifold", "select_every", "autosave", "save_every", "keep_last"} <= added


def test_every_config_input_is_generated_from_the_field_options(pack):
    node = sys.modules[pack.NODE_CLASS_MAPPINGS["NADA_Adapt"].__module__]
    inputs = pack.NODE_CLASS_MAPPINGS["NADA_Adapt"].INPUT_TYPES()
    merged = {**inputs["required"], **inputs["optional"]}
    for field, name in node.INPUT_OF_FIELD.items():
        default, opt = AdaptConfig.options()[field]
        kind, opts = merged[name]
        assert opt.help[1:] in opts["tooltip"]
        if opt.ui_default is None and not opt.optional:
            assert opts["default"] == default, field
        if kind in ("INT", "FLOAT") and opt.hi is not None:
            assert opts["max"] <= opt.hi, field  # the widget never offers an invalid value
        if kind in ("INT", "FLOAT"):
            assert opts["min"] >= (opt.lo if not opt.optional else 0), field


def test_config_errors_name_the_node_input_through_the_table(pack, bridge, tiny_generator, tiny_clip, tiny_direction):
    node = pack.NODE_CLASS_MAPPINGS["NADA_Adapt"]()
    args = dict(steps=1, learning_rate=0.002, layers="all", train_seed=0, preview_every=0)
    with pytest.raises(bridge.NodeError, match=r"^learning_rate must be a finite number > 0"):
        node.adapt(tiny_generator, tiny_clip, tiny_direction, **{**args, "learning_rate": -1.0})
    with pytest.raises(bridge.NodeError, match=r"^train_seed must be an integer"):
        node.adapt(tiny_generator, tiny_clip, tiny_direction, **{**args, "train_seed": -3})
    with pytest.raises(bridge.NodeError, match=r"^select_every must be an integer >= 1"):
        node.adapt(tiny_generator, tiny_clip, tiny_direction, **args, select_every=0)


def test_new_inputs_reach_the_config(pack, bridge, tiny_generator, tiny_clip, tiny_direction):
    node = pack.NODE_CLASS_MAPPINGS["NADA_Adapt"]()
    args = dict(steps=2, learning_rate=0.002, layers="auto", train_seed=0, preview_every=0)
    with torch.inference_mode():
        G2 = node.adapt(
            tiny_generator, tiny_clip, tiny_direction, **args, lambda_manifold=0.5, select_every=2, autosave=False
        )["result"][0]
    config = G2.metadata["adaptation"]["config"]
    assert config["lambda_manifold"] == 0.5 and config["select_every"] == 2
    assert [h["step"] for h in G2.metadata["adaptation"]["selection_history"]] == [0]  # selected once in 2 steps
    assert not (
        bridge.stylegan_output_directory() and Path(bridge.stylegan_output_directory(), "nada-autosave").exists()
    )


def test_one_engine_identity_for_nodes_tests_and_scripts(pack, bridge, tiny_generator):
    engine = sys.modules[pack.__name__ + ".nodes.engine"].nada
    assert engine is nada and sys.modules["nada"] is nada
    assert f"{pack.__name__}.nada" not in sys.modules  # nothing loaded a second copy of the engine
    nada.save_generator(tiny_generator, Path(bridge.models_directory()) / "stylegan" / "g.safetensors")
    (G,) = pack.NODE_CLASS_MAPPINGS["NADA_LoadStyleGAN2"]().load("g.safetensors")
    assert isinstance(G, nada.Generator) and isinstance(G, nada.stylegan2.Generator)
    assert dataclasses.is_dataclass(G.config) and isinstance(G.config, nada.GeneratorConfig)


def test_raising_steps_continues_the_saved_run(pack, bridge, tiny_generator, tiny_clip, tiny_direction, caplog):
    node = pack.NODE_CLASS_MAPPINGS["NADA_Adapt"]()
    args = dict(learning_rate=0.002, layers="all", train_seed=0, preview_every=0)
    with torch.inference_mode():
        node.adapt(tiny_generator, tiny_clip, tiny_direction, steps=2, **args)
        with caplog.at_level("INFO"):
            longer = node.adapt(tiny_generator, tiny_clip, tiny_direction, steps=4, save_every=1, **args)
        fresh = node.adapt(tiny_generator, tiny_clip, tiny_direction, steps=4, autosave=False, **args)
    assert "continued the saved run from step 2" in caplog.text
    assert longer["ui"]["nada_loss"] == fresh["ui"]["nada_loss"]
    for k, v in fresh["result"][0].state_dict().items():
        assert torch.equal(longer["result"][0].state_dict()[k], v), k
    folder = Path(bridge.stylegan_output_directory(), "nada-autosave")
    steps = sorted(p.name.split("_step")[1] for p in folder.glob("*.safetensors"))
    assert steps == ["000002.safetensors", "000003-partial.safetensors", "000004.safetensors"]


def test_the_loader_lists_autosaves_after_the_users_files(pack, bridge, tiny_generator):
    folder = Path(bridge.stylegan_output_directory())
    (folder / "nada-autosave").mkdir(parents=True)
    for name in ("nada-autosave/a_step000001.safetensors", "zebra.safetensors", "b.safetensors"):
        nada.save_generator(tiny_generator, folder / name)
    (choices, _) = pack.NODE_CLASS_MAPPINGS["NADA_LoadStyleGAN2"].INPUT_TYPES()["required"]["model_name"]
    demo = [c for c in choices if c.startswith("nada-demo/")]
    assert demo, "the bundled demo generator is listed"
    assert choices == ["b.safetensors", "zebra.safetensors", *demo, "nada-autosave/a_step000001.safetensors"]


def test_a_queued_run_hashes_each_generator_once(pack, bridge, tiny_generator, tiny_clip, tiny_direction, monkeypatch):
    import hashlib

    import nada.fingerprints

    hashed = []

    class CountingHashlib:  # the real sha256, counted
        @staticmethod
        def sha256():
            hashed.append(1)
            return hashlib.sha256()

    monkeypatch.setattr(nada.fingerprints, "hashlib", CountingHashlib)
    G = tiny_generator  # a fresh generator per test: nothing cached yet
    node = pack.NODE_CLASS_MAPPINGS["NADA_Adapt"]()
    with torch.inference_mode():
        node.adapt(
            G,
            tiny_clip,
            tiny_direction,
            steps=1,
            learning_rate=0.002,
            layers="all",
            train_seed=0,
            preview_every=0,
            parameterization="lora",
        )
    # The input for the run key, the adaptation's provenance and the adapter; the result when it is saved.
    assert len(hashed) == 2


def test_a_config_error_found_by_the_run_names_the_input(pack, bridge, tiny_generator, tiny_clip, tiny_direction):
    node = pack.NODE_CLASS_MAPPINGS["NADA_Adapt"]()
    args = dict(steps=1, learning_rate=0.002, layers="auto", train_seed=0, preview_every=0, auto_k=64)
    with pytest.raises(bridge.NodeError, match=r"auto_k = 64 but this generator has only \d+ W\+ indices"):
        node.adapt(tiny_generator, tiny_clip, tiny_direction, **args)
