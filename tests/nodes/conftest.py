"""Fixtures for the node tests: the pack imported as ComfyUI imports it, with its folders in a temp dir."""

from __future__ import annotations

import pytest

from tests.nodes.fixtures import make_tiny_generator


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
    return make_tiny_generator(pack.nada)
