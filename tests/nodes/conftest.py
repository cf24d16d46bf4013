"""Fixtures for the node tests: the pack imported as ComfyUI imports it, with its folders in a temp dir."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def bridge(pack, tmp_path):
    """The bridge in standalone mode, reading and writing under a fresh temp base folder."""
    b = pack.nodes.comfy_bridge
    assert not b.in_comfyui(), "node tests run without ComfyUI"
    b.configure_standalone(tmp_path)
    b.request_interrupt(False)
    yield b
    b.request_interrupt(False)


def make_tiny_generator(nada, seed: int = 0):
    """A 16 px generator small enough to train for a few steps in well under a second."""
    torch.manual_seed(seed)
    cfg = nada.GeneratorConfig(img_resolution=16, channels=(32, 32, 16), z_dim=32, w_dim=32, mapping_layers=2)
    G = nada.Generator(cfg).eval().requires_grad_(False)
    with torch.no_grad():
        G.mapping.w_avg.copy_(G.mapping.estimate_w_avg(n=256))
    return G


@pytest.fixture
def tiny_generator(pack):
    return make_tiny_generator(pack.nada)
