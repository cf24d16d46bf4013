"""StyleGAN-NADA on StyleGAN3: presets, adaptive selection, parameterisations, the engine's other
functions, and a proof of adaptation with the tiny CLIP."""

from __future__ import annotations

import pytest
import torch

from nada import AdaptConfig, adapt
from nada.adapters import apply_adapters, extract_adapter
from nada.clip import load_clip
from nada.directions import text_direction
from nada.layers import preset_units, unit_parameters, w_index_units
from nada.sampling import blend_generators, interpolate, sample
from nada.stylegan2.formats import load_generator, save_generator
from nada.stylegan3 import StyleGAN3Config, StyleGAN3Generator
from tests.adapt_fixtures import colour_score, layout_correlation, similarity_gap, tiny_clip, zero_shot
from tests.clip_fixtures import write_micro_clip

torch.set_num_threads(min(2, torch.get_num_threads()))


def make_generator(seed: int = 0, resolution: int = 16) -> StyleGAN3Generator:
    """A random StyleGAN3-T (output_scale 1 so the images span the colours, as the StyleGAN2 fixtures)."""
    cfg = StyleGAN3Config(img_resolution=resolution, z_dim=32, w_dim=32, channel_base=2048, channel_max=64,
                          num_layers=6, output_scale=1.0)  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = StyleGAN3Generator(cfg).eval().requires_grad_(False)
    with torch.no_grad():
        G.mapping.w_avg.copy_(G.mapping.estimate_w_avg(n=512, seed=seed))
    return G


@pytest.fixture(scope="module")
def G():
    return make_generator()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    files = write_micro_clip(tmp_path_factory.mktemp("clip"), seed=0)  # random weights: mechanics only
    return load_clip(files[0], weights=files[1])


@pytest.fixture(scope="module")
def direction(clip):
    return text_direction(clip, "red", "blue", templates=None)


def snapshot(G):
    return {k: v.clone() for k, v in G.state_dict().items()}


def short(**kw) -> AdaptConfig:
    return AdaptConfig(**{"steps": 2, "batch": 2, "preview_count": 2, **kw})


def test_presets_at_256px_are_the_documented_table():
    with torch.device("meta"):
        G = StyleGAN3Generator(StyleGAN3Config(img_resolution=256))
    short_names = {p: [u.removeprefix("synthesis.").split("_")[0] for u in preset_units(G, p)] for p in
                   ("all", "all_with_torgb", "texture", "shape", "shape_expanded", "no_fine")}  # fmt: skip
    layers = [f"L{i}" for i in range(15)]
    assert short_names["all"] == ["input"] + layers[:14]
    assert short_names["all_with_torgb"] == ["input"] + layers
    assert short_names["texture"] == ["input", "L0"] + layers[3:11]
    assert short_names["shape"] == ["input", "L0", "L1", "L2"]
    assert short_names["shape_expanded"] == ["input", "L0", "L1", "L2", "L3"]
    assert short_names["no_fine"] == ["input"] + layers[:11]


def test_w_indices_map_to_the_layers_that_read_them(G):
    units = preset_units(G, "all")
    mapping = w_index_units(G, units)
    assert mapping[0] == ["synthesis.input"]
    names = G.synthesis.layer_names
    for i, name in enumerate(names[:-1]):
        assert mapping[i + 1] == [f"synthesis.{name}"]
    assert mapping[len(names)] == []  # ToRGB is not a candidate of `all`


def test_adapt_full_keeps_input_and_family_and_saves(G, clip, direction, tmp_path):
    snap = snapshot(G)
    G2 = adapt(G, clip, direction, short(), device="cpu").generator
    assert all(torch.equal(v, snap[k]) for k, v in G.state_dict().items())  # the input is never modified
    assert type(G2) is StyleGAN3Generator and G2.config == G.config
    changed = {k for k, v in G2.state_dict().items() if not torch.equal(v, snap[k])}
    assert changed and all(k.startswith("synthesis.") for k in changed)
    assert not any(k.endswith(("filter", "magnitude_ema", "freqs", "phases", "transform")) for k in changed)
    H = load_generator(save_generator(G2, tmp_path / "a.safetensors"))
    assert type(H) is StyleGAN3Generator and H.fingerprint() == G2.fingerprint()
    assert H.metadata["adaptation"]["trained_units"]


def test_adaptive_selection_trains_only_the_selected_layers(G, clip, direction):
    snap = snapshot(G)
    G2 = adapt(G, clip, direction, short(steps=1, layers="auto", auto_k=2), device="cpu").generator
    meta = G2.metadata["adaptation"]
    (sel,) = meta["selection_history"]
    units = [u for i in sel["w_indices"] for u in w_index_units(G, meta["trained_units"])[i]]
    assert len(units) == 2 and sorted(units) == sorted(meta["trained_units"])
    trained = set(unit_parameters(G2, units))
    for k, v in G2.state_dict().items():
        assert torch.equal(v, snap[k]) == (k not in trained), k


def test_named_layers_and_presets_limit_training(G, clip, direction):
    snap = snapshot(G)
    name = G.synthesis.layer_names[2]
    G2 = adapt(G, clip, direction, short(steps=1, layers=(name,)), device="cpu").generator
    changed = {k for k, v in G2.state_dict().items() if not torch.equal(v, snap[k])}
    assert changed and all(k.startswith(f"synthesis.{name}.") for k in changed)


@pytest.mark.parametrize("kind", ["lora", "modulation"])
def test_adapters_train_extract_and_apply(G, clip, direction, kind):
    result = adapt(G, clip, direction, short(parameterization=kind), device="cpu")
    G2, adapter = result.generator, result.adapter
    assert adapter is not None and adapter.kind == kind
    assert not any("synthesis.input" in k for k in adapter.tensors)  # convs / styles only
    again = apply_adapters(G, [(adapter, 1.0)])
    z = torch.randn(2, G.config.z_dim)
    with torch.no_grad():
        torch.testing.assert_close(again(z), G2(z), atol=1e-5, rtol=0)
    if kind == "lora":
        extracted = extract_adapter(G, G2, rank=4)
        with torch.no_grad():
            torch.testing.assert_close(apply_adapters(G, [(extracted, 1.0)])(z), G2(z), atol=1e-4, rtol=0)


def test_sampling_interpolation_and_blending(G):
    H = G.with_tensors({k: v * 1.1 for k, v in G.state_dict().items() if k.endswith(".weight")})
    imgs = sample(G, [1, 2, 3], noise_mode="random")
    assert imgs.shape == (3, 3, 16, 16) and torch.equal(imgs, sample(G, [1, 2, 3], noise_mode="const"))
    with torch.no_grad():
        frames = G.synthesis(interpolate(G.mapping(torch.randn(2, G.config.z_dim)), 5))
    assert frames.shape == (5, 3, 16, 16) and torch.isfinite(frames).all()
    half = blend_generators(G, H, 0.5)
    assert type(half) is StyleGAN3Generator
    name = (
        "synthesis.L1_36_64.weight"
        if "synthesis.L1_36_64.weight" in G.state_dict()
        else next(k for k in G.state_dict() if k.endswith(".weight") and k.startswith("synthesis.L"))
    )
    torch.testing.assert_close(half.state_dict()[name], G.state_dict()[name] * 1.05)


# -- proof of adaptation ------------------------------------------------------------------------------
#
# Measured (30 steps, 16 px random StyleGAN3-T, tiny CLIP, layers "all"): red -> blue seed 0: CLIP
# similarity gap +0.21, colour statistic +0.08, layout 0.90; blue -> green seed 1: +0.16, +0.15, 0.90;
# yellow -> purple seed 2: +0.27, +0.15, 0.82. The thresholds sit at about half the smallest rise.

STEPS = 30
MIN_GAP_RISE = 0.07
MIN_COLOUR_RISE = 0.035
MIN_LAYOUT = 0.6


def proof(source: str, target: str, seed: int) -> dict:
    clip = tiny_clip()
    G = make_generator(seed=seed)
    snap = snapshot(G)
    G2 = adapt(G, clip, text_direction(clip, source, target, templates=None), AdaptConfig(steps=STEPS, seed=seed),
               device="cpu").generator  # fmt: skip
    seeds = list(range(100, 116))
    before, after = sample(G, seeds), sample(G2, seeds)
    return {
        "gap": similarity_gap(clip, after, source, target) - similarity_gap(clip, before, source, target),
        "p": zero_shot(clip, after, source, target) - zero_shot(clip, before, source, target),
        "colour": colour_score(after, source, target) - colour_score(before, source, target),
        "layout": layout_correlation(before, after),
        "unchanged": all(torch.equal(v, snap[k]) for k, v in G.state_dict().items()),
    }


def check(r: dict) -> None:
    assert r["unchanged"] and r["p"] >= -1e-3, r
    assert r["gap"] > MIN_GAP_RISE and r["colour"] > MIN_COLOUR_RISE and r["layout"] > MIN_LAYOUT, r


def test_proof_of_adaptation_on_stylegan3_red_to_blue():
    check(proof("red", "blue", seed=0))


@pytest.mark.slow
@pytest.mark.parametrize("source, target, seed", [("blue", "green", 1), ("yellow", "purple", 2), ("green", "red", 3)])
def test_proof_of_adaptation_on_stylegan3_more_pairs(source, target, seed):
    check(proof(source, target, seed))


def test_adaptation_keeps_the_magnitude_emas_frozen_unless_a_decay_is_set(G, clip, direction):
    """As the official code (no update_emas): the adapted generator has the input's EMAs bit for bit.
    With `synthesis.magnitude_ema_beta` set on the input, the run's trainable copy (training mode)
    updates them and the input (eval mode, rendering the frozen images) keeps its own."""
    import copy

    def emas(g):
        return torch.stack([layer.magnitude_ema for _, layer in g.synthesis.layers()])

    frozen = adapt(G, clip, direction, short(preview_count=0)).generator
    assert torch.equal(emas(frozen), emas(G))
    G_upd = copy.deepcopy(G)
    G_upd.synthesis.magnitude_ema_beta = 0.5
    updated = adapt(G_upd, clip, direction, short(preview_count=0)).generator
    assert not torch.allclose(emas(updated), emas(G))
    assert torch.equal(emas(G_upd), emas(G))
