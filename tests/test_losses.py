"""The CLIP losses against hand-computed values (nada-spec 2.6-2.7)."""

from __future__ import annotations

import math

import pytest
import torch

from nada.losses import (
    DELTA_EPS,
    crop_patches,
    directional_loss,
    global_loss,
    manifold_loss,
    patch_directional_loss,
    random_patch_boxes,
)

S = 1 / math.sqrt(2)


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_directional_loss_hand_computed():
    src, tgt = t([1.0, 0.0]), t([0.0, 1.0])
    # dI = (-1, 1) / sqrt(2): parallel to dT -> 0, orthogonal -> 1, at 135 degrees -> 1 + 1/sqrt(2).
    assert directional_loss(src, tgt, torch.tensor([-S, S])).item() == pytest.approx(0.0, abs=1e-6)
    assert directional_loss(src, tgt, torch.tensor([S, S])).item() == pytest.approx(1.0, abs=1e-6)
    assert directional_loss(src, tgt, torch.tensor([1.0, 0.0])).item() == pytest.approx(1 + S, abs=1e-6)


def test_directional_loss_normalises_embeddings_per_sample_and_averages_pairs():
    # Embedding norms must not matter (the spec normalises e_s and e_t); pairs are averaged.
    src = t([3.0, 0.0], [0.0, 2.0])
    tgt = t([0.0, 5.0], [0.0, 7.0])  # second pair: same direction, different norm -> dI = 0
    d = torch.tensor([-S, S])
    loss = directional_loss(src, tgt, d)
    # pair 1: 0; pair 2: dI is exactly zero -> the guarded value 1 - <0, dT> / eps = 1.
    assert loss.item() == pytest.approx((0.0 + 1.0) / 2, abs=1e-6)
    # The direction is normalised too, and [1, D] works like [D].
    assert directional_loss(src, tgt, 10 * d[None]).item() == pytest.approx(loss.item(), abs=1e-6)


def test_directional_loss_matches_formula_on_random_batch():
    g = torch.Generator().manual_seed(0)
    src, tgt, d = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g), torch.randn(8, generator=g)
    es, et = src / src.norm(dim=1, keepdim=True), tgt / tgt.norm(dim=1, keepdim=True)
    di = (et - es) / (et - es).norm(dim=1, keepdim=True)
    expected = (1 - di @ (d / d.norm())).mean()
    assert directional_loss(src, tgt, d).item() == pytest.approx(expected.item(), abs=1e-6)


def test_zero_delta_is_finite_and_its_gradient_points_along_the_direction():
    src = t([1.0, 0.0, 0.0])
    tgt = src.clone().requires_grad_(True)
    d = torch.tensor([0.0, S, S])
    loss = directional_loss(src, tgt, d)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(1.0)
    g = tgt.grad[0]
    assert torch.isfinite(g).all()
    # Descending the gradient moves the target embedding along dT (the component along e_t itself
    # is projected out by the normalisation).
    assert torch.allclose(-g / g.norm(), d, atol=1e-5)
    # The magnitude is bounded by 1 / DELTA_EPS.
    assert g.norm().item() <= 1.0 / DELTA_EPS * 1.0001


def test_global_loss_hand_computed():
    tgt = t([1.0, 0.0], [0.0, 2.0])
    assert global_loss(tgt, torch.tensor([1.0, 0.0])).item() == pytest.approx(0.5)  # (0 + 1) / 2
    # Several target embeddings are normalised, averaged and renormalised: here -> (S, S).
    assert global_loss(tgt, t([1.0, 0.0], [0.0, 3.0])).item() == pytest.approx(1 - S, abs=1e-6)


def test_manifold_loss_hand_computed():
    src, tgt = t([1.0, 0.0]), t([S, S])  # image cosine = S
    ts, tt = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 4.0])  # text cosine = 0
    assert manifold_loss(src, tgt, ts, tt).item() == pytest.approx(S, abs=1e-6)
    assert manifold_loss(src, tgt, ts, torch.tensor([1.0, 1.0])).item() == pytest.approx(0.0, abs=1e-6)


def test_patch_loss_with_one_direction_is_the_directional_loss():
    g = torch.Generator().manual_seed(1)
    src, tgt, d = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g), torch.randn(6, generator=g)
    assert patch_directional_loss(src, tgt, d).item() == pytest.approx(directional_loss(src, tgt, d).item())


def test_patch_loss_hand_computed_softmax_weighting():
    src, tgt = t([1.0, 0.0]), t([0.0, 1.0])  # dI = (-S, S)
    dirs = t([-S, S], [1.0, 0.0])  # cosines 1 and -S
    c = torch.tensor([1.0, -S])
    w = c.softmax(0)
    expected = ((1 - c) * w).mean()  # mean over the P = 2 directions (and N = 1 patch)
    assert patch_directional_loss(src, tgt, dirs).item() == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.parametrize("res", [16, 64, 256, 1024])
def test_patch_boxes_work_at_every_resolution_and_are_seeded(res):
    a = random_patch_boxes(3, res, res, 0.5, 2, torch.Generator().manual_seed(7))
    b = random_patch_boxes(3, res, res, 0.5, 2, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and a.shape == (3, 2, 4)
    side = res // 2
    assert (a[..., 2] == side).all() and (a[..., 3] == side).all()
    assert (a[..., 0] >= 0).all() and (a[..., 0] + side <= res).all()
    assert (a[..., 1] >= 0).all() and (a[..., 1] + side <= res).all()


def test_crop_patches_cuts_the_same_region_from_src_and_tgt():
    imgs = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    boxes = torch.tensor([[[1, 2, 4, 4]], [[4, 0, 4, 4]]])
    p = crop_patches(imgs, boxes)
    assert p.shape == (2, 3, 4, 4)
    assert torch.equal(p[0], imgs[0, :, 1:5, 2:6]) and torch.equal(p[1], imgs[1, :, 4:8, 0:4])
    assert torch.equal(crop_patches(imgs + 1, boxes), p + 1)
