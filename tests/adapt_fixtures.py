"""Small models and measurements for the adaptation tests (no test functions here).

The measurements are deliberately independent of the loss being optimised: a zero-shot
classification between the two prompts (CLIP's own judgement, with prompt templates the direction
was not built with), plain colour statistics, and a layout correlation on edge maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nada.stylegan2 import Generator, GeneratorConfig

COLOURS = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "purple": (0.5, 0.0, 0.5),
    "orange": (1.0, 0.5, 0.0),
    "white": (1.0, 1.0, 1.0),
    "black": (0.0, 0.0, 0.0),
}

# Zero-shot prompts: not the ones the adaptation direction was computed from (it uses the bare words).
ZERO_SHOT_TEMPLATES = ("a photo of something {}.", "a {} image.", "it is {}.")


def make_generator(seed: int = 0, resolution: int = 32) -> Generator:
    """A randomly initialised generator (its images are coloured textures with structure)."""
    blocks = {16: (64, 64, 32), 32: (64, 64, 32, 32), 64: (64, 64, 32, 32, 16)}[resolution]
    cfg = GeneratorConfig(img_resolution=resolution, channels=blocks, z_dim=32, w_dim=32, mapping_layers=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = Generator(cfg).eval().requires_grad_(False)
    with torch.no_grad():
        G.mapping.w_avg.copy_(G.mapping.estimate_w_avg(n=512, seed=seed))
    return G


def tiny_clip():
    from nada.clip import load_clip
    from nada.demo import tiny_clip_files

    config, weights = tiny_clip_files()
    return load_clip(config, weights=weights)


@torch.no_grad()
def _judge(clip, images: torch.Tensor, source: str, target: str) -> tuple[float, float]:
    """(mean P(target) of a two-way zero-shot softmax, mean cos(img, target) - cos(img, source)),
    each averaged over the CLIP members by weight. Text embeddings are template-averaged."""
    from nada.clip import encode_images, encode_texts

    img = encode_images(clip, images)  # {member: [B, D]}
    prob = gap = wsum = 0.0
    for name, weight in clip.member_weights().items():
        texts = []
        for word in (source, target):
            t = encode_texts(clip, [tpl.format(word) for tpl in ZERO_SHOT_TEMPLATES])[name]
            texts.append(F.normalize(F.normalize(t, dim=-1).mean(0), dim=-1))
        cos = F.normalize(img[name].float(), dim=-1) @ torch.stack(texts).float().T  # [B, 2]
        prob += weight * (100.0 * cos).softmax(-1)[:, 1].mean().item()
        gap += weight * (cos[:, 1] - cos[:, 0]).mean().item()
        wsum += weight
    return prob / wsum, gap / wsum


def zero_shot(clip, images: torch.Tensor, source: str, target: str) -> float:
    """Mean probability of `target` vs `source` (CLIP logit scale 100); saturates near 0 and 1."""
    return _judge(clip, images, source, target)[0]


def similarity_gap(clip, images: torch.Tensor, source: str, target: str) -> float:
    """Mean cos(image, target text) - cos(image, source text): CLIP's judgement, without saturation."""
    return _judge(clip, images, source, target)[1]


def colour_score(images: torch.Tensor, source: str, target: str) -> float:
    """Mean projection of pixel colours (in [0, 1]) on the unit vector from `source`'s RGB to `target`'s."""
    v = torch.tensor(COLOURS[target]) - torch.tensor(COLOURS[source])
    v = v / v.norm()
    x = ((images.float() + 1) / 2).clamp(0, 1)
    return (x * v[None, :, None, None]).sum(1).mean().item()


def edges(images: torch.Tensor) -> torch.Tensor:
    """Per-pixel gradient magnitude summed over the colour channels: [B, H-2, W-2].

    Summing per-channel magnitudes keeps an edge an edge when its colours change, so this measures
    layout, not colour.
    """
    x = images.float()
    gx = x[:, :, 1:-1, 2:] - x[:, :, 1:-1, :-2]
    gy = x[:, :, 2:, 1:-1] - x[:, :, :-2, 1:-1]
    return (gx.square() + gy.square()).sqrt().sum(1)


def layout_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean per-image Pearson correlation of the edge maps of a and b (same latents)."""
    ea, eb = edges(a).flatten(1), edges(b).flatten(1)
    ea = ea - ea.mean(1, keepdim=True)
    eb = eb - eb.mean(1, keepdim=True)
    r = (ea * eb).sum(1) / (ea.norm(dim=1) * eb.norm(dim=1)).clamp_min(1e-12)
    return r.mean().item()
