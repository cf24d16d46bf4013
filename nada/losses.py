"""The CLIP losses of StyleGAN-NADA (nada-spec 2.6-2.8), on embeddings.

Every function here takes CLIP embeddings (not images), so it is exact, cheap to test and
independent of the CLIP model; `nada.adapt` encodes the images and sums the terms over the ensemble.
Embeddings need not be normalised on input: each function normalises what the formula normalises.

- `directional_loss`: the method. mean_b (1 - cos(dI_b, dT)), dI_b = n(e_tgt_b) - n(e_src_b) per pair.
- `global_loss`: mean_b (1 - cos(e_tgt_b, t)), CLIP similarity to the target (off by default).
- `manifold_loss`: mean_b |clamp(cos(e_tgt_b, e_src_b), -1, 1) - cos(t_tgt, t_src)| (off by default).
- `patch_directional_loss`: the directional loss on patches, weighted per patch over several text
  directions with a softmax (off by default); the patches come from `random_patch_boxes`.
"""

from __future__ import annotations

import torch

# Floor on ||dI|| in the directional losses. The spec normalises dI with no epsilon, so an exactly
# unchanged pair (every pair at the first step here: the frozen and trainable generators start equal
# and share w and noise) would give 0/0 = NaN. Below the floor the loss is the linear extension
# 1 - <dI, dT> / floor: finite, with a gradient that moves the trainable embedding along dT. Above it
# the formula is the spec's exactly; the floor is far below the dI of a real pair after even one step.
# It also bounds that first gradient (<= 1/floor per unit of embedding), which keeps a half-precision
# CLIP backward from overflowing. `nada.adapt` resets Adam's moments after the first step, so the
# arbitrary scale of that first gradient does not damp the steps after it. `AdaptConfig.delta_floor`
# sets it per run (0 = the official code: no floor, and a re-encode when dI is exactly zero).
DELTA_EPS = 1e-3


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def _as_rows(v: torch.Tensor, dim: int) -> torch.Tensor:
    v = v.reshape(-1, dim) if v.ndim == 1 else v
    return v


def normalized_delta(src: torch.Tensor, tgt: torch.Tensor, eps: float = DELTA_EPS) -> torch.Tensor:
    """dI = (n(tgt) - n(src)) / max(||n(tgt) - n(src)||, eps), per row. [B, D] -> [B, D]."""
    delta = _unit(tgt.float()) - _unit(src.float())
    return delta / delta.norm(dim=-1, keepdim=True).clamp_min(eps)


def directional_loss(
    src: torch.Tensor,  # [B, D] CLIP embeddings of the frozen generator's images
    tgt: torch.Tensor,  # [B, D] CLIP embeddings of the trainable generator's images (same w, noise)
    direction: torch.Tensor,  # [D] or [1, D] unit text (or image) direction dT
    eps: float = DELTA_EPS,
) -> torch.Tensor:
    """nada-spec 2.6: mean over pairs of 1 - cos(dI, dT), dI normalised per pair (see `DELTA_EPS`)."""
    if src.shape != tgt.shape:
        raise ValueError(f"src and tgt embeddings differ in shape: {list(src.shape)} vs {list(tgt.shape)}")
    d = _unit(_as_rows(direction.float(), src.shape[-1]))
    di = normalized_delta(src, tgt, eps)
    return (1.0 - (di * d).sum(-1)).mean()


def global_loss(
    tgt: torch.Tensor,  # [B, D] embeddings of the trainable generator's images
    target: torch.Tensor,  # [D] or [T, D]: the target embedding(s), averaged over T after normalising
) -> torch.Tensor:
    """nada-spec 2.7 `lambda_global`: mean over images of 1 - cos(e_img, e_target).

    The official code uses CLIP logits / 100, which is the same cosine for OpenAI CLIP.
    """
    t = _unit(_unit(_as_rows(target.float(), tgt.shape[-1])).mean(0))
    return (1.0 - _unit(tgt.float()) @ t).mean()


def manifold_loss(
    src: torch.Tensor,  # [B, D]
    tgt: torch.Tensor,  # [B, D]
    text_source: torch.Tensor,  # [D] source embedding (template-averaged, any norm)
    text_target: torch.Tensor,  # [D] target embedding
) -> torch.Tensor:
    """nada-spec 2.7 `lambda_manifold`: push cos(image pair) toward cos(source text, target text)."""
    img_cos = (_unit(tgt.float()) * _unit(src.float())).sum(-1).clamp(-1.0, 1.0)
    txt_cos = (_unit(text_target.float().reshape(-1)) * _unit(text_source.float().reshape(-1))).sum()
    return (img_cos - txt_cos).abs().mean()


def patch_directional_loss(
    src: torch.Tensor,  # [N, D] embeddings of N patches of frozen images
    tgt: torch.Tensor,  # [N, D] embeddings of the same patches of the trainable images
    directions: torch.Tensor,  # [P, D] unit text directions (one per part template), or [D]
    eps: float = DELTA_EPS,
) -> torch.Tensor:
    """nada-spec 2.7 `lambda_patch`: mean over patches and directions of

    (1 - cos(dI_n, dT_p)) * softmax_p(dI_n . dT_p).

    With a single direction this is the directional loss on patches.
    """
    d = _unit(_as_rows(directions.float(), src.shape[-1]))  # [P, D]
    di = normalized_delta(src, tgt, eps)  # [N, D]
    sim = di @ d.T  # [N, P]; both unit, so this is the cosine
    return ((1.0 - sim) * sim.softmax(dim=-1)).mean()


def random_patch_boxes(
    batch: int,
    height: int,
    width: int,
    fraction: float,
    count: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """`count` square patch boxes per image, side = round(fraction * min(H, W)) (at least 1 px).

    Returns [batch, count, 4] integer (top, left, size, size). The same boxes are meant to be cut
    from the frozen and the trainable image of a pair, so that dI compares the same region. Drawn
    from `generator` so a seeded run is reproducible.
    """
    side = max(1, min(height, width, round(fraction * min(height, width))))
    top = torch.randint(0, height - side + 1, (batch, count), generator=generator)
    left = torch.randint(0, width - side + 1, (batch, count), generator=generator)
    size = torch.full_like(top, side)
    return torch.stack([top, left, size, size], dim=-1)


def crop_patches(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Cut the boxes of `random_patch_boxes` out of images [B, C, H, W] -> [B * count, C, s, s]."""
    b, count, _ = boxes.shape
    if b != images.shape[0]:
        raise ValueError(f"{b} box rows for {images.shape[0]} images")
    patches = []
    for i in range(b):
        for j in range(count):
            t, lft, h, w = (int(v) for v in boxes[i, j])
            patches.append(images[i, :, t : t + h, lft : lft + w])
    return torch.stack(patches)
