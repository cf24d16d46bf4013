"""The official-compatible mode (issue 15): with `compat="official"`, a training step on given draws
gives the official code's loss, weights and Adam state.

The reference below is the official step written out from its definition (rinongal/StyleGAN-nada
train.py, ZSSGAN.forward, CLIPLoss; nada-spec 2.3-2.11), independently of `nada.adaptation`: two
generators, each rendering its own W+ (its own crossover) with its own noise maps; CLIP preprocessing
(x + 1) / 2, plain bicubic resize, normalise; dI = n(e_t) - n(e_s), re-encoded from the trainable image
+ 1e-6 when it sums to exactly zero, normalised with no floor; loss = sum_m w_m * mean_b (1 - cos(dI, dT));
`net.zero_grad(); loss.backward(); g_optim.step()` with Adam over all trainable-generator parameters at
lr * 0.8, betas (0 ** 0.8, 0.99 ** 0.8), never reset. Only the generator network and the CLIP are shared.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from nada import layers as layer_groups
from nada.adaptation import AdaptConfig, StepInputs, adapt, make_run
from nada.adaptation.config import OFFICIAL_SWITCHES
from nada.directions import text_direction
from nada.templates import IMAGENET_TEMPLATES

from .adapt_fixtures import make_generator, tiny_clip

TOL = 1e-5


@pytest.fixture(scope="module")
def clip():
    return tiny_clip()


def _official_text_direction(clip, source: str, target: str) -> torch.Tensor:
    """compute_text_direction: n(mean_i (n(E_T(tpl_i(target))) - n(E_T(tpl_i(source)))))."""
    with torch.no_grad():
        ts = F.normalize(clip.model.encode_text(clip.tokenizer([t.format(source) for t in IMAGENET_TEMPLATES])), dim=-1)
        tt = F.normalize(clip.model.encode_text(clip.tokenizer([t.format(target) for t in IMAGENET_TEMPLATES])), dim=-1)
        return F.normalize((tt - ts).mean(0, keepdim=True), dim=-1)  # [1, D]


def _official_encode(clip, images: torch.Tensor) -> torch.Tensor:
    """get_image_features: Normalize(-1, 2), tensor Resize(bicubic, no antialias), CenterCrop, Normalize, n(E_I)."""
    x = (images + 1.0) / 2.0
    x = F.interpolate(x, size=clip.image_size, mode="bicubic", align_corners=False)
    mean = torch.tensor(clip.mean).view(1, 3, 1, 1)
    std = torch.tensor(clip.std).view(1, 3, 1, 1)
    e = clip.model.encode_image((x - mean) / std)
    return e / e.clone().norm(dim=-1, keepdim=True)


def _official_ws(G, z: torch.Tensor, z2: torch.Tensor | None, inject: int | None) -> torch.Tensor:
    """rosinality forward_with_w: styles[0] for indices < inject_index, styles[1] from it on."""
    num_ws = G.config.num_ws
    w = G.mapping(z, None)[:, 0]  # [B, w_dim]: the style MLP (truncation 1)
    if z2 is None:
        return w[:, None].repeat(1, num_ws, 1)
    w2 = G.mapping(z2, None)[:, 0]
    return torch.cat([w[:, None].repeat(1, inject, 1), w2[:, None].repeat(1, num_ws - inject, 1)], dim=1)


class OfficialStep:
    """The official training state: frozen and trainable generator, Adam, the cached direction."""

    def __init__(self, G, clip, source: str, target: str, lr: float):
        self.G_frozen, self.clip = G, clip
        self.G_train = copy.deepcopy(G).train()
        # phase None: the learned constant, conv1 and all convs train (affines, noise strengths and
        # biases included); mapping and ToRGBs do not
        for name, p in self.G_train.named_parameters():
            p.requires_grad_(name.startswith("synthesis.") and ".torgb." not in name)
        ratio = 4 / 5
        self.optim = torch.optim.Adam(self.G_train.parameters(), lr=lr * ratio, betas=(0**ratio, 0.99**ratio))
        self.direction = _official_text_direction(clip, source, target)

    def step(self, z, z2, inject_frozen, inject_train, noise_frozen, noise_train) -> float:
        with torch.no_grad():
            w_f = _official_ws(self.G_frozen, z, z2, inject_frozen)
            w_t = _official_ws(self.G_frozen, z, z2, inject_train)
            frozen_img = self.G_frozen.synthesis(w_f, noise=noise_frozen)
        trainable_img = self.G_train.synthesis(w_t, noise=noise_train)
        src = _official_encode(self.clip, frozen_img)
        tgt = _official_encode(self.clip, trainable_img)
        edit = tgt - src
        if edit.sum() == 0:
            tgt = _official_encode(self.clip, trainable_img + 1e-6)
            edit = tgt - src
        edit = edit / edit.clone().norm(dim=-1, keepdim=True)
        loss = (1.0 - F.cosine_similarity(edit, self.direction)).mean()
        loss = torch.stack([1.0 * loss]).sum()  # the ensemble sum (one member, weight 1)
        self.G_train.zero_grad()
        loss.backward()
        self.optim.step()
        return loss.item()


def _pretrained_like_generator():
    """A test generator whose noise strengths are nonzero, as in every trained StyleGAN2 (they start at
    0), so independent noise maps make the pair differ."""
    G = make_generator(seed=1, resolution=16)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.05)
    return G


def _draws(G, seed: int, batch: int, mixed: bool, same_noise: bool):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, G.config.z_dim, generator=g)
    z2 = torch.randn(batch, G.config.z_dim, generator=g) if mixed else None
    injects = (2, 5) if mixed else (None, None)
    noise_f = [torch.randn(batch, 1, h, w, generator=g) for h, w in G.synthesis.noise_shapes()]
    noise_t = (
        noise_f if same_noise else [torch.randn(batch, 1, h, w, generator=g) for h, w in G.synthesis.noise_shapes()]
    )
    return z, z2, injects, noise_f, noise_t


def _inputs(batch, z, z2, injects, noise_f, noise_t) -> StepInputs:
    cross = [None if k is None else torch.full((batch,), k) for k in injects]
    return StepInputs(
        z=z, noise_frozen=noise_f, noise_train=noise_t, z2=z2, crossover_frozen=cross[0], crossover_train=cross[1]
    )


def test_official_compatible_steps_match_the_official_step(clip):
    """Three steps (plain, mixed with a different crossover per generator, plain): the loss, the weights
    and Adam's moments of the official step.

    Tolerances: loss 1e-5; weights 1e-5 wherever the gradient was above Adam's rounding floor at every
    step (|g| >= 1e-6: Adam divides each gradient by its own magnitude, so an element whose gradient is
    rounding noise of the two mathematically equal computations moves by a different fraction of lr;
    against the real official code that is 91 of 13.1 M elements, max 2.1e-4); moments relative 1e-5
    (the second as its square root, in gradient units).
    """
    G = _pretrained_like_generator()
    batch, lr = 2, 0.002
    direction = text_direction(clip, "red", "blue")
    cfg = AdaptConfig(compat="official", batch=batch, lr=lr, mixing=0.9, steps=3)
    run = make_run(G, clip, direction, cfg, device="cpu")
    ref = OfficialStep(G, clip, "red", "blue", lr)
    ref_params = dict(ref.G_train.named_parameters())
    assert set(run.params) == {n for n, p in ref_params.items() if p.requires_grad}
    stable = {n: torch.ones_like(p, dtype=torch.bool) for n, p in run.params.items()}  # |g| >= 1e-6 so far
    for i, mixed in enumerate((False, True, False)):
        draws = _draws(G, seed=10 + i, batch=batch, mixed=mixed, same_noise=False)
        ours, _ = run.step(_inputs(batch, *draws))
        theirs = ref.step(draws[0], draws[1], *draws[2], draws[3], draws[4])
        assert abs(ours - theirs) < TOL, (i, ours, theirs)
        for name, p in run.params.items():
            q = ref_params[name]
            a, b = run.optim.state[p], ref.optim.state[q]
            stable[name] &= b["exp_avg"].abs() >= 1e-6  # beta1 = 0: exp_avg is this step's gradient
            assert (p.detach() - q.detach())[stable[name]].abs().max() < TOL, (i, name)
            for x, y in ((a["exp_avg"], b["exp_avg"]), (a["exp_avg_sq"].sqrt(), b["exp_avg_sq"].sqrt())):
                assert (x - y).abs().max() <= TOL * max(1.0, y.abs().max().item()), (i, name)
            assert int(a["step"]) == int(b["step"]) == i + 1
    assert all(not torch.equal(p, dict(G.named_parameters())[n]) for n, p in run.params.items() if "weight" in n)


def test_official_zero_delta_guard_keeps_the_first_step_finite(clip):
    """With no floor, identical images (shared noise, an untouched generator) give dI = 0; the official
    guard re-encodes the trainable image + 1e-6 instead of dividing by zero."""
    G = _pretrained_like_generator()
    direction = text_direction(clip, "red", "blue")
    run = make_run(G, clip, direction, AdaptConfig(compat="official", steps=1), device="cpu")
    assert run.cfg.delta_floor == 0
    loss, _ = run.step(_inputs(2, *_draws(G, seed=3, batch=2, mixed=False, same_noise=True)))
    assert math.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in run.params.values())


def test_compat_official_sets_every_switch_and_ours_keeps_them():
    official = AdaptConfig(compat="official", noise="shared", delta_floor=0.5)
    assert {k: getattr(official, k) for k in OFFICIAL_SWITCHES} == OFFICIAL_SWITCHES
    ours = AdaptConfig()
    assert all(getattr(ours, k) != v for k, v in OFFICIAL_SWITCHES.items())
    assert AdaptConfig.from_dict(official.to_dict()) == official


def test_official_w_mapping_is_shifted_by_one_and_can_pick_the_first_torgb():
    G = make_generator(seed=0, resolution=32)  # num_ws 8: b4 reads 0-1, b8 1-3, b16 3-5, b32 5-7
    cand = layer_groups.resolve_units(G, "all_with_torgb")
    official = layer_groups.w_index_units(G, cand, "official")
    expected = ["b4.conv1", "b4.torgb", "b8.conv0", "b8.conv1", "b16.conv0", "b16.conv1", "b32.conv0", "b32.conv1"]
    assert official == {i: [f"synthesis.{u}"] for i, u in enumerate(expected)}
    ours = layer_groups.w_index_units(G, cand)
    assert "synthesis.b8.conv0" in ours[1] and "synthesis.b8.conv0" in official[2]


def test_auto_with_the_official_mapping_trains_what_the_index_names(clip):
    G = make_generator(seed=0, resolution=16)
    direction = text_direction(clip, "red", "blue", templates=None)
    cfg = AdaptConfig(steps=1, layers="auto", auto_k=1, w_mapping="official", preview_count=0)
    run = make_run(G, clip, direction, cfg, device="cpu")
    run.step()
    (index,) = run.w_indices
    expected = ["synthesis.b4.conv1", "synthesis.b4.torgb", "synthesis.b8.conv0", "synthesis.b8.conv1"][index]
    assert run.units == (expected,)


def test_adapt_leaves_the_callers_requires_grad_flags_alone(clip):
    G = make_generator(seed=0, resolution=16)
    G.requires_grad_(True)
    G.mapping.requires_grad_(False)
    before = {n: p.requires_grad for n, p in G.named_parameters()}
    adapt(
        G,
        clip,
        text_direction(clip, "red", "blue", templates=None),
        AdaptConfig(steps=1, preview_count=0),
        device="cpu",
    )
    assert {n: p.requires_grad for n, p in G.named_parameters()} == before


def test_the_antialias_switch_changes_only_the_resize(clip):
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    plain = _official_encode(clip, images)
    assert torch.allclose(clip.encode_images(images, antialias=False), plain, atol=1e-6)
    assert not torch.allclose(clip.encode_images(images), plain, atol=1e-4)


def test_official_text_targets_and_patch_templates_use_the_official_prompts(clip):
    from nada.templates import PART_TEMPLATES

    G = make_generator(seed=0, resolution=16)
    direction = text_direction(clip, "red", "blue")
    cfg = AdaptConfig(compat="official", lambda_patch=1.0, patch_fraction=0.5)
    (guide,) = make_run(G, clip, direction, cfg, device="cpu").guides
    with torch.no_grad():
        assert torch.allclose(
            guide.global_target, F.normalize(clip.model.encode_text(clip.tokenizer(["a blue"]))[0], dim=-1), atol=1e-6
        )
        assert torch.allclose(
            guide.select_target, F.normalize(clip.model.encode_text(clip.tokenizer(["blue"]))[0], dim=-1), atol=1e-6
        )
        # compute_text_direction(part(source), part(target)): each part prompt wrapped in the 79 templates
        expected = torch.cat(
            [_official_text_direction(clip, p.format("red"), p.format("blue")) for p in PART_TEMPLATES]
        )
    assert guide.patch_directions.shape == (len(PART_TEMPLATES), expected.shape[-1])
    assert torch.allclose(guide.patch_directions, expected, atol=1e-5)
    (ours,) = make_run(G, clip, direction, AdaptConfig(lambda_patch=1.0), device="cpu").guides
    assert torch.equal(ours.global_target, ours.select_target) and torch.equal(
        ours.global_target, direction.targets[clip.name]
    )
    assert not torch.allclose(ours.patch_directions, expected, atol=1e-3)
