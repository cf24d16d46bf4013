"""The projector's guarantees on a tiny random generator: inputs untouched, seeded, cancellable,
usable under inference mode, and bad inputs refused with a message naming the fix."""

from __future__ import annotations

import logging

import pytest
import torch

import nada
from nada.errors import ConfigError, ProjectionError
from nada.inversion.project import project, psnr
from tests.nodes.fixtures import make_tiny_generator

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def G():
    return make_tiny_generator(nada)


def targets(G, n=2, seed=99):
    z = torch.randn(n, G.config.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ws = G.mapping(z)
        return ws, G.synthesis(ws, noise_mode="const")


def snapshot(G):
    return {k: v.clone() for k, v in G.state_dict().items()}, G.training, [p.requires_grad for p in G.parameters()]


def test_projection_reduces_the_loss_and_returns_w_plus_latents_that_render_the_images(G):
    _, x = targets(G)
    r = project(G, x, steps=40, space="w+")
    assert r.latents.shape == (2, G.num_ws, G.config.w_dim) and r.latents.device.type == "cpu"
    assert r.images.shape == x.shape and r.loss_name == "pixels" and r.steps == 40 and not r.interrupted
    assert r.loss_history[-1] < 0.5 * r.loss_history[0]
    with torch.no_grad():
        torch.testing.assert_close(G.synthesis(r.latents, noise_mode="const"), r.images)
    assert (psnr(r.images, x) > psnr(project(G, x, steps=0).images, x) + 3).all()


def test_w_space_gives_one_w_per_image(G):
    _, x = targets(G)
    r = project(G, x, steps=5, space="w")
    assert torch.equal(r.latents, r.latents[:, :1].expand_as(r.latents))


def test_the_generator_is_untouched_even_with_gradients_enabled_on_it(G):
    G.train().requires_grad_(True)
    before = snapshot(G)
    _, x = targets(G)
    project(G, x, steps=3, optimize_noise=True)
    after = snapshot(G)
    assert after[1:] == before[1:]
    for k, v in before[0].items():
        assert torch.equal(after[0][k], v), k
    assert all(p.grad is None for p in G.parameters())


def test_same_seed_same_bits_other_seed_other_path(G):
    _, x = targets(G)
    a = project(G, x, steps=6, seed=3, optimize_noise=True)
    b = project(G, x, steps=6, seed=3, optimize_noise=True)
    c = project(G, x, steps=6, seed=4, optimize_noise=True)
    assert torch.equal(a.latents, b.latents) and a.loss_history == b.loss_history
    assert all(torch.equal(m, n) for m, n in zip(a.noise, b.noise))
    assert not torch.equal(a.latents, c.latents)


def test_works_inside_inference_mode_with_a_generator_made_there():
    with torch.inference_mode():
        G = make_tiny_generator(nada)
        assert next(G.parameters()).is_inference()
        _, x = targets(G)
        r = project(G, x, steps=4)
    assert r.steps == 4 and torch.isfinite(r.latents).all()


def test_cancel_stops_at_the_next_step_with_each_images_best_latent(G):
    _, x = targets(G)
    seen = []
    r = project(G, x, steps=50, callback=seen.append, should_stop=lambda: len(seen) >= 7)
    assert r.interrupted and r.steps == 7 and len(r.loss_history) == 7
    assert [p.step for p in seen] == list(range(1, 8)) and seen[-1].images.shape == x.shape
    # The returned latents are the ones of each image's best step (its distance, measured again).
    assert sum(r.losses) / 2 == pytest.approx(seen[-1].best, rel=1e-4, abs=1e-6)
    assert seen[-1].best <= min(p.loss for p in seen)


def test_init_at_the_true_latent_starts_near_zero_loss(G):
    ws, x = targets(G)
    start = project(G, x, steps=0, init=ws)
    assert start.steps == 0 and max(start.losses) < 1e-8
    far = project(G, x, steps=0)
    assert min(far.losses) > 1e-3


def test_noise_maps_stay_normalised_when_optimised(G):
    _, x = targets(G)
    r = project(G, x, steps=10, optimize_noise=True)
    assert len(r.noise) == len(G.synthesis.conv_layers())
    for n in r.noise:  # zero mean, unit variance per image and map (renormalised after every step)
        assert n.shape[0] == 2
        torch.testing.assert_close(n.mean((1, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
        torch.testing.assert_close(n.square().mean((1, 2, 3)), torch.ones(2), atol=1e-4, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(G.synthesis(r.latents, noise=r.noise), r.images)


def test_a_square_image_of_another_size_is_resized_with_a_warning(G, caplog):
    _, x = targets(G)
    big = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
    with caplog.at_level(logging.WARNING):
        r = project(G, big, steps=2)
    assert "resizing the images from 32x32" in caplog.text and r.images.shape[-1] == 16


@pytest.mark.parametrize(
    "images, match",
    [
        (torch.zeros(0, 3, 16, 16), "batch is empty"),
        (torch.zeros(1, 1, 16, 16), "grayscale"),
        (torch.zeros(1, 4, 16, 16), "4-channel"),
        (torch.zeros(1, 3, 16, 24), "crop them to a square"),
        (torch.full((1, 3, 16, 16), float("nan")), "NaN"),
        (torch.zeros(16, 16), r"shape \[B, 3, H, W\]"),
    ],
)
def test_bad_images_are_refused_and_change_nothing(G, images, match):
    before = snapshot(G)
    copy = images.clone()
    with pytest.raises(ProjectionError, match=match):
        project(G, images, steps=2)
    assert torch.equal(copy.nan_to_num(), images.nan_to_num())
    assert all(torch.equal(v, before[0][k]) for k, v in G.state_dict().items())


def test_bad_settings_are_refused(G):
    _, x = targets(G, n=1)
    with pytest.raises(ConfigError, match="space"):
        project(G, x, steps=2, space="z")
    with pytest.raises(ConfigError, match="perceptual_weights"):
        project(G, x, steps=2, loss="lpips")
    with pytest.raises(ProjectionError, match="init must be a W\\+ latent"):
        project(G, x, steps=2, init=torch.zeros(1, 3, 7))
    with pytest.raises(ProjectionError, match="3 latents for 1 images"):
        project(G, x, steps=2, init=torch.zeros(3, G.num_ws, G.config.w_dim))


def test_a_diverging_run_raises_with_the_best_result_so_far(G):
    _, x = targets(G)
    with torch.no_grad():
        G.synthesis.b16.conv1.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ProjectionError, match="diverged") as e:
        project(G, x, steps=20)
    assert e.value.result.latents.shape == (2, G.num_ws, G.config.w_dim)
    assert torch.isfinite(e.value.result.latents).all()
