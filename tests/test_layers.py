"""Layer groups, presets and adaptive selection over the generator's real module names."""

from __future__ import annotations

import pytest
import torch

from nada.errors import ConfigError
from nada.layers import (
    PRESETS,
    all_units,
    default_auto_k,
    preset_units,
    resolve_units,
    select_w_indices,
    unit_parameters,
    w_index_units,
)
from nada.stylegan2 import Generator, GeneratorConfig


def gen(res=32, arch="skip", seed=0):
    torch.manual_seed(seed)
    blocks = {32: 4, 256: 7, 512: 8, 1024: 9}[res]  # tiny channels: only the layer structure matters
    cfg = GeneratorConfig(
        img_resolution=res, channels=(8,) * blocks, z_dim=8, w_dim=8, mapping_layers=2, architecture=arch
    )
    return Generator(cfg).eval()


def official_convs(res):
    """rosinality's `convs` list, in our names: convs[2j], convs[2j+1] = conv0, conv1 of block 8 * 2**j."""
    out = []
    r = 8
    while r <= res:
        out += [f"synthesis.b{r}.conv0", f"synthesis.b{r}.conv1"]
        r *= 2
    return out


def test_all_units_of_a_32px_skip_generator():
    G = gen(32)
    assert all_units(G) == [
        "synthesis.b4.const", "synthesis.b4.conv1", "synthesis.b4.torgb",
        "synthesis.b8.conv0", "synthesis.b8.conv1", "synthesis.b8.torgb",
        "synthesis.b16.conv0", "synthesis.b16.conv1", "synthesis.b16.torgb",
        "synthesis.b32.conv0", "synthesis.b32.conv1", "synthesis.b32.torgb",
    ]  # fmt: skip
    default = preset_units(G, "all")
    assert not any(u.endswith("torgb") for u in default) and len(default) == 8
    assert resolve_units(G, "all_with_torgb") == all_units(G)


@pytest.mark.parametrize("res", [256, 512, 1024])
def test_presets_equal_the_official_phases(res):
    """nada-spec 2.10: each phase is [const, conv1] + a slice of rosinality's convs."""
    G = gen(res)
    base = ["synthesis.b4.const", "synthesis.b4.conv1"]
    convs = official_convs(res)
    official = {
        "all": base + convs,
        "texture": base + convs[2:10],
        "shape": base + convs[0:2],
        "shape_expanded": base + convs[0:3],
        "no_fine": base + convs[:10],
    }
    for name, units in official.items():
        assert preset_units(G, name) == units, name


def test_unit_parameters_include_affine_weight_bias_and_noise_strength():
    G = gen(32)
    names = sorted(unit_parameters(G, ["synthesis.b8.conv0", "synthesis.b4.const"]))
    assert names == sorted([
        "synthesis.b4.const",
        "synthesis.b8.conv0.affine.bias", "synthesis.b8.conv0.affine.weight",
        "synthesis.b8.conv0.bias", "synthesis.b8.conv0.noise_strength", "synthesis.b8.conv0.weight",
    ])  # fmt: skip
    assert not any(n.startswith("mapping") for n in unit_parameters(G, resolve_units(G, "all_with_torgb")))


def test_w_index_mapping_is_the_real_consumer_not_the_official_off_by_one():
    G = gen(32)
    m = w_index_units(G, preset_units(G, "all"))
    assert m == {
        0: ["synthesis.b4.conv1"],
        1: ["synthesis.b8.conv0"],  # official: to_rgb1 (its index 1); b8.conv0 would be index 2 there
        2: ["synthesis.b8.conv1"],
        3: ["synthesis.b16.conv0"],
        4: ["synthesis.b16.conv1"],
        5: ["synthesis.b32.conv0"],
        6: ["synthesis.b32.conv1"],
        7: [],  # read only by the final ToRGB, which "all" does not train
    }
    m2 = w_index_units(G, all_units(G))
    assert m2[1] == ["synthesis.b4.torgb", "synthesis.b8.conv0"] and m2[7] == ["synthesis.b32.torgb"]


def test_resolve_units_by_name_and_errors():
    G = gen(32, arch="resnet")
    assert resolve_units(G, ["b8"]) == ["synthesis.b8.skip", "synthesis.b8.conv0", "synthesis.b8.conv1"]
    assert resolve_units(G, ["b16.conv1", "synthesis.b4.const"]) == ["synthesis.b4.const", "synthesis.b16.conv1"]
    assert "synthesis.b8.skip" in preset_units(G, "all")
    with pytest.raises(ConfigError, match="not part of"):
        resolve_units(G, ["b64"])
    with pytest.raises(ConfigError, match="unknown layer preset"):
        resolve_units(G, "textures")
    assert set(PRESETS) >= {"all", "texture", "shape", "shape_expanded", "no_fine", "all_with_torgb"}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("fused", [True, False])
def test_chunked_selection_is_the_whole_batch_selection_and_leaves_the_weights_alone(dtype, fused):
    G = gen(32).to(dtype)
    G.synthesis.fused_modconv = fused
    ws = G.mapping(torch.randn(5, 8, generator=torch.Generator().manual_seed(0), dtype=dtype)).detach()
    noise = [n.to(dtype) for n in G.synthesis.make_noise(5, torch.Generator().manual_seed(1))]
    target = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(2), dtype=dtype)

    def loss_fn(img):  # a mean of per-image terms, as the global loss is
        return (img - target).square().mean()

    cand = preset_units(G, "all")
    weights = {k: p.detach().clone() for k, p in G.named_parameters()}
    whole = select_w_indices(G, ws, noise, loss_fn, k=4, candidates=cand, lr=0.5, iters=3)
    for chunk in (1, 2, 4):  # uneven last chunks included
        counting = _ChunkTargets(target, chunk, iters=3)
        sel = select_w_indices(G, ws, noise, counting, k=4, candidates=cand, lr=0.5, iters=3, chunk=chunk)
        tol = {"rtol": 1e-10, "atol": 1e-14} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-7}
        torch.testing.assert_close(torch.tensor(sel.scores), torch.tensor(whole.scores), **tol)
        assert sel.indices == whole.indices and sel.units == whole.units
        assert counting.sizes == [min(chunk, 5 - s) for s in range(0, 5, chunk) for _ in range(3)]
    # One chunk of the whole batch (or more) is the unchunked computation, bit for bit (same process, same ops).
    once = select_w_indices(G, ws, noise, loss_fn, k=4, candidates=cand, lr=0.5, iters=3, chunk=8)
    assert once.scores == whole.scores
    assert all(p.grad is None for p in G.parameters())  # no gradient left for the main step
    assert all(torch.equal(p, weights[k]) for k, p in G.named_parameters())
    assert ws.grad is None and not ws.requires_grad
    with pytest.raises(ConfigError, match="chunk"):
        select_w_indices(G, ws, noise, loss_fn, k=4, candidates=cand, chunk=0)


class _ChunkTargets:
    """A per-image squared error whose targets follow the chunks the selection passes in order."""

    def __init__(self, target: torch.Tensor, chunk: int, iters: int):
        self.target, self.chunk, self.iters = target, chunk, iters
        self.sizes: list[int] = []

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        start = len(self.sizes) // self.iters * self.chunk
        self.sizes.append(img.shape[0])
        return (img - self.target[start : start + img.shape[0]]).square().mean()


def test_default_auto_k_matches_the_colab():
    assert [default_auto_k(n) for n in (14, 16, 18)] == [9, 10, 12]


def test_select_w_indices_scores_are_the_sgd_movement_and_top_k_is_taken():
    G = gen(32)
    ws = G.mapping(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)))
    noise = G.synthesis.make_noise(3, torch.Generator().manual_seed(1))
    target = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))

    def loss_fn(img):
        return (img - target).square().mean()

    cand = preset_units(G, "all")
    sel = select_w_indices(G, ws, noise, loss_fn, k=3, candidates=cand, lr=0.01)
    # Independent computation: one SGD step moves w by lr * grad.
    w = ws.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(G.synthesis(w, noise=noise)), [w])
    expected = (0.01 * g).abs().mean(dim=(0, 2))
    torch.testing.assert_close(torch.tensor(sel.scores), expected, rtol=1e-4, atol=1e-9)
    eligible = [i for i in range(8) if i != 7]
    top = sorted(sorted(eligible, key=lambda i: -expected[i].item())[:3])
    assert list(sel.indices) == top
    mapping = w_index_units(G, cand)
    assert set(sel.units) == {u for i in top for u in mapping[i]}
    # No parameter gradient is left behind.
    assert all(p.grad is None for p in G.parameters())
    with pytest.raises(ConfigError, match="auto_k"):
        select_w_indices(G, ws, noise, loss_fn, k=8, candidates=cand)
