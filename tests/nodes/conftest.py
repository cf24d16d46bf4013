"""Fixtures for the node tests: the pack imported as ComfyUI imports it, with its folders in a temp dir."""

from __future__ import annotations

import pytest

import nada
from tests.nodes.fixtures import make_tiny_generator, tiny_clip_architecture, write_test_clip


@pytest.fixture
def bridge(pack, tmp_path):
    """The bridge in standalone mode, reading and writing under a fresh temp base folder."""
    b = pack.nodes.comfy_bridge
    assert not b.in_comfyui(), "node tests run without ComfyUI"
    b.configure_standalone(tmp_path)
    b.request_interrupt(False)
    yield b
    b.request_interrupt(False)


@pytest.fixture
def tiny_generator(pack):
    return make_tiny_generator(nada)


@pytest.fixture(scope="session")
def tiny_clip(pack, tmp_path_factory):
    """The tests' micro CLIP, loaded the way the Load CLIP node loads a local file with its config."""
    weights, config = write_test_clip(tmp_path_factory.mktemp("test_clip"))
    return nada.clip.load_clip(tiny_clip_architecture(), weights=weights, config=config)


@pytest.fixture(scope="session")
def tiny_direction(pack, tiny_clip):
    return nada.directions.text_direction(tiny_clip, "red circle", "blue square", templates="none")
