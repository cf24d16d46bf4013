"""nada.adapt: the guarantees users rely on, and the proof that it adapts (with the tiny CLIP)."""

from __future__ import annotations

import math

import pytest
import torch

from nada.adaptation import AdaptConfig, AdaptError, AdaptProgress, adapt
from nada.directions import text_direction
from nada.errors import ConfigError
from nada.layers import unit_parameters, w_index_units
from nada.sampling import sample
from nada.stylegan2 import Generator, GeneratorConfig
from tests.adapt_fixtures import (
    colour_score,
    layout_correlation,
    make_generator,
    similarity_gap,
    tiny_clip,
    zero_shot,
)
from tests.clip_fixtures import micro_clip_ensemble

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return micro_clip_ensemble(tmp_path_factory)  # the proof of adaptation uses the trained tiny CLIP


@pytest.fixture(scope="module")
def direction(clip):
    return text_direction(clip, "red", "blue", templates=None)


@pytest.fixture(scope="module")
def tiny():
    return tiny_clip()


@pytest.fixture(scope="module")
def G():
    return make_generator(seed=0, resolution=16)


def snapshot(G):
    return {k: v.clone() for k, v in G.state_dict().items()}


def assert_unchanged(G, snap):
    state = G.state_dict()
    assert state.keys() == snap.keys()
    for k, v in state.items():
        assert torch.equal(v, snap[k]), k


def cfg(**kw):
    base = dict(steps=2, seed=0)
    base.update(kw)
    return AdaptConfig(**base)


# -- configuration ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(steps=-1), "steps"),
        (dict(batch=0), "batch"),
        (dict(lr=0), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(mixing=1.5), "mixing"),
        (dict(layers="textures"), "layers"),
        (dict(layers=()), "layers"),
        (dict(lambda_direction=0), "all loss weights are 0"),
        (dict(lambda_global=-1), "lambda_global"),
        (dict(patch_fraction=0), "patch_fraction"),
        (dict(gradient_checkpointing="yes"), "gradient_checkpointing"),
        (dict(auto_k=0), "auto_k"),
        (dict(seed=True), "seed"),
    ],
)
def test_config_errors_name_the_field(kw, match):
    with pytest.raises(ConfigError, match=match):
        AdaptConfig(**kw)


def test_config_defaults_follow_the_colab_and_round_trip():
    c = AdaptConfig()
    assert (c.batch, c.lr, c.mixing, c.layers, c.preview_truncation) == (2, 0.002, 0.0, "all", 0.7)
    assert c.effective_lr == pytest.approx(0.0016)
    assert AdaptConfig.from_dict(c.to_dict()) == c
    assert AdaptConfig.from_dict(cfg(layers=["b8", "b16"]).to_dict()).layers == ("b8", "b16")


def test_auto_k_larger_than_the_generator_allows_is_a_config_error(G, clip, direction):
    with pytest.raises(ConfigError, match="auto_k"):
        adapt(G, clip, direction, cfg(layers="auto", auto_k=G.num_ws), device="cpu")


# -- guarantees -------------------------------------------------------------------------------------------


def test_input_unchanged_result_trained_with_metadata(G, clip, direction):
    snap = snapshot(G)
    seen: list[AdaptProgress] = []
    G2 = adapt(G, clip, direction, cfg(steps=3), callback=seen.append, device="cpu").generator
    assert_unchanged(G, snap)
    assert G2 is not G and not G2.training
    assert not any(p.requires_grad for p in G2.parameters())
    assert G2.device == G.device
    changed = {k for k, v in G2.state_dict().items() if not torch.equal(v, snap[k])}
    trainable = set(unit_parameters(G2, G2.metadata["adaptation"]["trained_units"]))
    assert changed and changed <= trainable
    assert not any(k.startswith("mapping") or ".torgb." in k for k in changed)
    assert [p.step for p in seen] == [1, 2, 3] and all(math.isfinite(p.loss) for p in seen)
    meta = G2.metadata["adaptation"]
    assert meta["steps"] == 3 and meta["interrupted"] is False
    assert len(meta["loss_history"]) == 3
    assert [(c["name"], c["weight"]) for c in meta["clip"]] == [("A", 1.0), ("B", 0.5)]
    assert meta["base_fingerprint"] == G.fingerprint()
    assert meta["config"]["steps"] == 3


def test_first_step_pairs_are_identical_so_shared_w_noise_and_mixing(G, clip, direction):
    """Both generators render the same W+ (incl. the mixing crossover) with the same noise: at the first
    step the trainable copy still equals the frozen one, so every dI is zero (up to CLIP's float noise,
    far below losses.DELTA_EPS) and each member's loss is 1: the total is the sum of the weights.
    Pairs differing in noise or crossover would give a dI of order 0.01-1 and a loss far from that."""
    G2 = adapt(G, clip, direction, cfg(steps=1, mixing=1.0, batch=3), device="cpu").generator
    assert G2.metadata["adaptation"]["loss_history"][0] == pytest.approx(1.5, abs=1e-3)


def test_loss_is_the_weighted_directional_loss_with_the_directions_vectors(G, clip, direction):
    """Recompute step 2's loss independently: the documented RNG stream gives z and noise, the
    1-step result gives the trainable weights, and the loss is sum_m weight_m * L_dir(member m)."""
    from nada.losses import directional_loss

    two = adapt(G, clip, direction, cfg(steps=2), device="cpu").generator
    one = adapt(G, clip, direction, cfg(steps=1), device="cpu").generator
    rng = torch.Generator().manual_seed(0 * 4 + 0)  # the run's training stream for seed 0
    for _ in range(2):  # step 1's draws, then step 2's
        z = torch.randn(2, G.config.z_dim, generator=rng)
        noise = G.synthesis.make_noise(2, rng)
    with torch.no_grad():
        ws = G.mapping(z)
        src, tgt = G.synthesis(ws, noise=noise), one.synthesis(ws, noise=noise)
        expected = sum(
            m.weight
            * directional_loss(m.model.encode_images(src), m.model.encode_images(tgt), direction.vectors[m.name])
            for m in clip
        )
    # The history is stored rounded to 6 decimals (half a unit: 5e-7), and the recomputation here runs
    # the same maths in another op order (no autograd, other batching), so float32 noise on top.
    stored = two.metadata["adaptation"]["loss_history"][1]
    assert stored == pytest.approx(expected.item(), rel=1e-5, abs=5e-7 + 1e-6)


def test_works_inside_inference_mode_with_an_inference_tensor_generator(clip, direction):
    with torch.inference_mode():
        Gi = make_generator(seed=0)
        assert Gi.synthesis.b8.conv0.weight.is_inference()
        snap = snapshot(Gi)
        G2 = adapt(Gi, clip, direction, cfg(steps=2), device="cpu").generator
        assert_unchanged(Gi, snap)
        assert any(not torch.equal(v, snap[k]) for k, v in G2.state_dict().items())


def test_deterministic_for_a_seed(G, clip, direction):
    a = adapt(G, clip, direction, cfg(steps=2, mixing=0.5), device="cpu").generator
    b = adapt(G, clip, direction, cfg(steps=2, mixing=0.5), device="cpu").generator
    c = adapt(G, clip, direction, cfg(steps=2, mixing=0.5, seed=1), device="cpu").generator
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())


def test_global_rng_is_not_used(G, clip, direction):
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    adapt(G, clip, direction, cfg(steps=1, layers="auto", auto_k=2, mixing=0.5, lambda_patch=1.0), device="cpu")
    assert torch.equal(torch.random.get_rng_state(), before)


def test_cancel_returns_within_one_step_with_the_partial_result(G, clip, direction):
    snap = snapshot(G)
    steps_seen = []
    G2 = adapt(
        G, clip, direction, cfg(steps=50), callback=lambda p: steps_seen.append(p.step),
        should_stop=lambda: len(steps_seen) >= 2, device="cpu",
    ).generator  # fmt: skip
    assert steps_seen == [1, 2]
    meta = G2.metadata["adaptation"]
    assert meta["interrupted"] is True and meta["steps"] == 2 and meta["steps_planned"] == 50
    # The partial result is exactly a 2-step run.
    ref = adapt(G, clip, direction, cfg(steps=2), device="cpu").generator
    for k, v in ref.state_dict().items():
        assert torch.equal(v, G2.state_dict()[k]), k
    assert_unchanged(G, snap)


def test_nan_stops_with_a_clear_error_and_the_last_good_weights(G, clip, direction):
    # An absurd learning rate makes step 1's update overflow the next forward pass.
    bad = cfg(steps=5, lr=1e30)
    with pytest.raises(AdaptError, match=r"diverged at step \d+ of 5.*learning rate") as info:
        adapt(G, clip, direction, bad, device="cpu")
    err = info.value
    assert err.generator is not None and err.step >= 2
    good_steps = err.step - 1
    assert err.generator.metadata["adaptation"]["steps"] == good_steps
    assert all(torch.isfinite(v).all() for v in err.generator.state_dict().values())
    ref = adapt(G, clip, direction, cfg(steps=good_steps, lr=1e30), device="cpu").generator
    for k, v in ref.state_dict().items():
        assert torch.equal(v, err.generator.state_dict()[k]), k


def test_adaptive_selection_trains_only_the_selected_layers(G, clip, direction):
    snap = snapshot(G)
    progress = []
    G2 = adapt(
        G, clip, direction, cfg(steps=1, layers="auto", auto_k=3), callback=progress.append, device="cpu"
    ).generator
    meta = G2.metadata["adaptation"]
    (sel,) = meta["selection_history"]
    assert len(sel["w_indices"]) == 3 and progress[0].w_indices == tuple(sel["w_indices"])
    units = [u for i in sel["w_indices"] for u in w_index_units(G, meta["trained_units"])[i]]
    assert sorted(units) == sorted(meta["trained_units"]) == sorted(progress[0].units)
    trained = set(unit_parameters(G2, units))
    for k, v in G2.state_dict().items():
        if k in trained and not k.endswith("noise_strength"):
            assert not torch.equal(v, snap[k]), f"{k} was selected but did not change"
        elif k not in trained:
            assert torch.equal(v, snap[k]), f"{k} was not selected but changed"


def test_selection_is_rerun_every_select_every_steps(G, clip, direction):
    G2 = adapt(G, clip, direction, cfg(steps=4, layers="auto", auto_k=2, select_every=2), device="cpu").generator
    assert [h["step"] for h in G2.metadata["adaptation"]["selection_history"]] == [0, 2]


def test_image_guided_direction_drives_training_and_selection(G, clip):
    """Image mode: the direction and the selection's global-loss target come from the images."""
    from nada.directions import image_direction

    blue = torch.zeros(3, 3, 16, 16)
    blue[:, 2] = 1.0
    blue[:, :2] = -1.0
    d = image_direction(clip, blue, source=G, source_samples=4)
    G2 = adapt(G, clip, d, cfg(steps=2, layers="auto", auto_k=2), device="cpu").generator
    meta = G2.metadata["adaptation"]
    assert meta["direction"]["kind"] == "image" and len(meta["selection_history"]) == 2
    assert all(math.isfinite(v) for v in meta["loss_history"])


def test_presets_and_named_layers_limit_training(G, clip, direction):
    snap = snapshot(G)
    G2 = adapt(G, clip, direction, cfg(steps=1, layers=("b8.conv1",)), device="cpu").generator
    changed = {k for k, v in G2.state_dict().items() if not torch.equal(v, snap[k])}
    assert changed and all(k.startswith("synthesis.b8.conv1.") for k in changed)


def test_all_loss_terms_run_and_are_reported(G, clip, direction):
    seen = []
    c = cfg(steps=2, lambda_global=0.5, lambda_manifold=0.5, lambda_patch=0.5, patch_fraction=0.5, patch_count=2)
    adapt(G, clip, direction, c, callback=seen.append, device="cpu")
    assert set(seen[-1].terms) == {"direction", "global", "manifold", "patch"}
    assert all(math.isfinite(v) for v in seen[-1].terms.values())


def test_gradient_checkpointing_gives_the_same_training(G, clip, direction):
    a = adapt(G, clip, direction, cfg(steps=2, gradient_checkpointing=False), device="cpu").generator
    b = adapt(G, clip, direction, cfg(steps=2, gradient_checkpointing=True), device="cpu").generator
    la, lb = a.metadata["adaptation"]["loss_history"], b.metadata["adaptation"]["loss_history"]
    assert la == pytest.approx(lb, abs=1e-5)
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k], atol=1e-5, rtol=1e-5)
    assert b.synthesis.gradient_checkpointing is False


def test_fused_and_non_fused_modconv_give_the_same_training(G, clip, direction):
    """Float reassociation only: Adam normalises each element, so the few whose step-0 gradient is ~0
    may flip sign (a step of lr); the images of the two results agree far closer than they moved."""
    a = adapt(G, clip, direction, cfg(steps=3, fused_modconv=True), device="cpu").generator
    b = adapt(G, clip, direction, cfg(steps=3, fused_modconv=False), device="cpu").generator
    la, lb = a.metadata["adaptation"]["loss_history"], b.metadata["adaptation"]["loss_history"]
    assert la == pytest.approx(lb, abs=1e-4)
    sa, sb = a.state_dict(), b.state_dict()
    differing = sum(int(((sa[k] - sb[k]).abs() > 1e-4).sum()) for k in sa)
    assert differing < 1e-3 * sum(v.numel() for v in sa.values())
    seeds = [0, 1, 2, 3]
    ia, ib, i0 = sample(a, seeds), sample(b, seeds), sample(G, seeds)
    assert (ia - i0).abs().max() > 0.1  # the runs did adapt
    assert (ia - ib).abs().max() < 1e-3
    assert a.synthesis.fused_modconv is True and b.synthesis.fused_modconv is True  # results infer fused


def test_previews_before_every_n_and_after(G, clip, direction):
    shots = []
    adapt(G, clip, direction, cfg(steps=5, preview_every=2, preview_count=3),
          preview=lambda step, imgs: shots.append((step, imgs)), device="cpu")  # fmt: skip
    assert [s for s, _ in shots] == [0, 2, 4, 5]
    assert all(imgs.shape == (3, 3, G.config.img_resolution, G.config.img_resolution) for _, imgs in shots)
    assert not torch.equal(shots[0][1], shots[-1][1])


def test_rejects_a_non_rgb_generator(clip, direction):
    cfg_1ch = GeneratorConfig(img_resolution=16, channels=(16, 16, 8), z_dim=8, w_dim=8, mapping_layers=2,
                              img_channels=1)  # fmt: skip
    with pytest.raises(ConfigError, match="RGB"):
        adapt(Generator(cfg_1ch), clip, direction, cfg(), device="cpu")


# -- proof of adaptation ----------------------------------------------------------------------------------
#
# Measured margins (80 steps, 32 px random generators, tiny CLIP; 5 colour pairs x seeds 0-3), see the
# issue note: CLIP similarity gap rose by 0.098..0.50, the colour statistic by 0.037..0.32, layout
# correlation 0.77..0.91. The thresholds below sit at about half the smallest observed rise.

PAIRS = [("red", "blue"), ("blue", "green"), ("green", "red"), ("yellow", "purple"), ("orange", "blue")]
STEPS = 80
MIN_GAP_RISE = 0.05  # cos(img, target) - cos(img, source), CLIP's own judgement
MIN_COLOUR_RISE = 0.02  # mean pixel colour projected on RGB(target) - RGB(source), pixels in [0, 1]
MIN_LAYOUT = 0.6  # correlation of edge maps, same latents, before vs after


def proof(G, clip, source: str, target: str, seed: int, steps: int = STEPS) -> dict:
    from nada.sampling import sample

    d = text_direction(clip, source, target, templates=None)
    snap = snapshot(G)
    G2 = adapt(G, clip, d, AdaptConfig(steps=steps, seed=seed), device="cpu").generator
    seeds = list(range(100, 116))  # held-out latents (training draws its own z from the run's RNG)
    before, after = sample(G, seeds), sample(G2, seeds)
    return {
        "gap_before": similarity_gap(clip, before, source, target),
        "gap_after": similarity_gap(clip, after, source, target),
        "p_before": zero_shot(clip, before, source, target),
        "p_after": zero_shot(clip, after, source, target),
        "colour_before": colour_score(before, source, target),
        "colour_after": colour_score(after, source, target),
        "layout": layout_correlation(before, after),
        "unchanged": all(torch.equal(v, snap[k]) for k, v in G.state_dict().items()),
    }


def check(r: dict) -> None:
    assert r["unchanged"], "the frozen generator changed"
    assert r["gap_after"] - r["gap_before"] > MIN_GAP_RISE, r
    assert r["p_after"] >= r["p_before"] - 1e-3, r
    assert r["colour_after"] - r["colour_before"] > MIN_COLOUR_RISE, r
    assert r["layout"] > MIN_LAYOUT, r


def test_proof_of_adaptation_red_to_blue(tiny):
    """Issue 3 item 7: the images move toward the target by CLIP's own judgement (other prompts than
    the direction's) and by colour statistics, the layout stays, and the frozen generator is untouched."""
    check(proof(make_generator(seed=0, resolution=32), tiny, "red", "blue", seed=0))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("source, target", PAIRS)
def test_proof_of_adaptation_over_seeds_and_colour_pairs(tiny, source, target, seed):
    check(proof(make_generator(seed=seed, resolution=32), tiny, source, target, seed=seed))
