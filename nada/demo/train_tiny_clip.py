"""Train the tiny CLIP fixture on the shapes world (deterministic, a few minutes on a CPU).

    python -m nada.demo.train_tiny_clip --out nada/assets/open_clip/nada-demo

writes `tiny-clip.json` (an open_clip model config), `tiny-clip.safetensors` (fp16; `nada.load_clip`
casts to the precision asked for) and `README.md` (how it was made, measured zero-shot accuracy).

The model is an ordinary open_clip CLIP (a small ViT image tower for 64 px inputs and a small text
transformer with open_clip's standard tokenizer), trained contrastively on `nada.demo.world` scenes.
A caption names some of a scene's attributes (colour and shape, colour only, shape only, the full
scene with background), as typed or wrapped in one of the 79 ImageNet templates, so that bare words
("red") and template-averaged prompts ("a photo of a red.") both land near the right images. A share
of the images are colour fields instead of shapes (one colour covering most of the image in a
random pattern, captioned with the colour only), so that colour words also describe images unlike
the shapes world, such as a generator's early textures. A share of the shape scenes carry a second
colour that the colour words must not follow (an outline, a glow, a tint, a spot:
`world.render_distracted`); some captions name those, or where the shape is. Captions
that fit several images of a batch (every red image fits "red") are positives for all of them: the
targets of both cross-entropies are spread over every matching pair (a multi-positive CLIP loss),
instead of treating true matches as negatives.

Preprocessing during training is exactly `nada.clip`'s (the images are rendered at the model's input
size, so it reduces to [-1, 1] -> [0, 1] -> OpenAI mean/std), and the config carries no preprocess
section, so a loader uses open_clip's default (OpenAI) mean and std.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import tiny_clip_files, world

log = logging.getLogger(__name__)

# An open_clip model config (the schema of open_clip/model_configs/*.json). The text tower is narrow
# because its token table (49408 x width) dominates the file size.
TINY_CLIP_CONFIG: dict = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 64, "head_width": 16, "patch_size": 8, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3, "mlp_ratio": 2.0},
}

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# Which scene attributes a caption of each detail level names (for the multi-positive targets).
_ATTRS = {
    "full": ("colour", "shape", "background"),
    "object": ("colour", "shape"),
    "colour": ("colour",),
    "shape": ("shape",),
    "background": ("shape", "background"),
}
_DETAIL_P = {"full": 0.3, "object": 0.25, "colour": 0.25, "shape": 0.12, "background": 0.08}
_COLOUR_PHRASES = ("{}", "{}", "{} object", "{} shape", "something {}", "{} thing")

# Evaluation scenes use seeds from here on; training draws from np.random.default_rng([seed, step]),
# a different seed sequence, so evaluation images are never training images.
EVAL_SEED_BASE = 1_000_000_000


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 1500
    batch: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 100
    seed: int = 0
    threads: int = 2
    eval_count: int = 800
    colour_fields: float = 0.15  # share of images that are colour fields, not shapes (`_colour_field`)
    distracted: float = 0.4  # share of shape scenes drawn with a second colour that does not name them
    direction_pairs: int = 32  # scenes per step for the direction term (0 = off; see `_direction_batch`)
    direction_weight: float = 1.0


def _wrap(text: str, rng: np.random.Generator) -> str:
    """The text as typed, with an article, or inside one of the 79 ImageNet templates."""
    from ..templates import IMAGENET_TEMPLATES

    u = rng.random()
    if u < 0.35:
        return text  # as typed: "red", "red circle"
    if u < 0.5:
        return f"{world.article(text)} {text}"
    return IMAGENET_TEMPLATES[rng.integers(len(IMAGENET_TEMPLATES))].format(text)


_EXTRA_PHRASES = {"outline": "with {} {} outline", "glow": "with {} {} glow", "spot": "with {} {} spot"}


def _extras_phrase(distractors: list[world.Distractor]) -> str:
    """The distractors as words: "with a red outline", "on a red-tinted background", joined by "and"."""
    parts = []
    for d in distractors:
        if not d.colour:
            continue  # a colour no word names
        if d.kind == "tint":
            parts.append(f"on {world.article(d.colour)} {d.colour}-tinted background")
        else:
            parts.append(_EXTRA_PHRASES[d.kind].format(world.article(d.colour), d.colour))
    return " and ".join(parts)


def _position(scene: world.Scene) -> str:
    """The shape's place on a 3 x 3 grid, in words ("at the top left", "in the centre")."""
    row = ("top", "", "bottom")[min(2, int(scene.cy * 3))]
    col = ("left", "", "right")[min(2, int(scene.cx * 3))]
    words = " ".join(w for w in (row, col) if w)
    return f"at the {words}" if words else "in the centre"


def _caption(
    scene: world.Scene, distractors: list[world.Distractor], rng: np.random.Generator
) -> tuple[str, tuple[str, ...]]:
    """A caption and the attributes it names. Some captions also name the distractors (so the model
    tells a red outline from a red shape instead of ignoring outlines) or the shape's place (so that
    moving a shape changes the embedding): changes a prompt does not ask for then cost in a NADA run."""
    details = list(_DETAIL_P)
    detail = details[rng.choice(len(details), p=list(_DETAIL_P.values()))]
    text = world.phrase(scene, detail)
    attrs = _ATTRS[detail]
    if detail == "colour":
        text = _COLOUR_PHRASES[rng.integers(len(_COLOUR_PHRASES))].format(text)
    elif detail in ("full", "object"):
        if any(d.colour for d in distractors) and rng.random() < 0.6:
            text = f"{world.phrase(scene, 'object')} {_extras_phrase(distractors)}"
            attrs = ("colour", "shape", "extras")
        elif rng.random() < 0.3:
            text = f"{text} {_position(scene)}"
            attrs = (*attrs, "position")
    return _wrap(text, rng), attrs


def _colour_field(rng: np.random.Generator, size: int) -> tuple[torch.Tensor, str]:
    """An image dominated by one shape colour in a smooth random pattern, not a shape: it teaches the
    colour words on images unlike the shapes world (a generator's textures, early in training)."""
    colour = list(world.SHAPE_COLOURS)[rng.integers(len(world.SHAPE_COLOURS))]
    rgb = torch.tensor(world._jitter(rng, world.SHAPE_COLOURS[colour], 18), dtype=torch.float32) / 127.5 - 1
    other = torch.tensor(rng.uniform(-1, 1, 3), dtype=torch.float32) * float(rng.uniform(0.2, 1.0))
    cells = int(rng.integers(2, 7))
    field = torch.from_numpy(rng.random((1, 1, cells, cells), dtype=np.float32))
    field = F.interpolate(field, size=(size, size), mode="bicubic", align_corners=False)[0, 0].clamp(0, 1)
    share = float(rng.uniform(0.6, 0.9))  # the colour covers most of the image
    mix = (field < share).float() if rng.random() < 0.5 else (0.35 + 0.65 * field / share).clamp(0, 1)
    img = mix[None] * rgb[:, None, None] + (1 - mix[None]) * other[:, None, None]
    noise = torch.from_numpy(rng.standard_normal((3, size, size), dtype=np.float32)) * float(rng.uniform(0, 0.08))
    return (img + noise).clamp(-1, 1), colour


def _batch(cfg: TrainConfig, step: int, size: int) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """Images [B, 3, size, size] in [-1, 1], captions, and the match matrix [B images, B captions]."""
    rng = np.random.default_rng([cfg.seed, step])
    images, attrs_of, caps = [], [], []
    for _ in range(cfg.batch):
        if rng.random() < cfg.colour_fields:
            img, colour = _colour_field(rng, size)
            text = _COLOUR_PHRASES[rng.integers(len(_COLOUR_PHRASES))].format(colour)
            caps.append((_wrap(text, rng), _ATTRS["colour"]))
            attrs_of.append({"colour": colour, "shape": None, "background": None, "extras": None, "position": None})
            images.append(img)
            continue
        s = world.sample_scene(rng)
        # Some images are rendered smaller and upsampled, as a low-resolution generator's are.
        r = int(rng.choice([size, size, size, size // 2, (3 * size) // 4]))
        distractors = []
        if rng.random() < cfg.distracted:
            kinds = rng.choice(world.DISTRACTOR_KINDS, size=1 if rng.random() < 0.7 else 2, replace=False)
            unnamed = rng.random() < 0.3  # sometimes a colour outside the palette (a cyan tint, ...)
            distractors = [world.sample_distractor(s, rng, str(k), any_colour=unnamed) for k in kinds]
            img = world.render_distracted(s, distractors, r)
        else:
            img = world.render(s, r)
        if r != size:
            img = F.interpolate(img[None], size=(size, size), mode="bicubic", align_corners=False)[0]
        images.append(img)
        caps.append(_caption(s, distractors, rng))
        extras = frozenset((d.kind, d.colour) for d in distractors)
        attrs_of.append(
            {
                "colour": s.colour,
                "shape": s.shape,
                "background": s.background,
                "extras": extras,
                "position": _position(s),
            }
        )
    match = torch.ones(cfg.batch, cfg.batch)
    for a in ("colour", "shape", "background", "extras", "position"):
        values = [d[a] for d in attrs_of]
        same = torch.tensor([[vi is not None and vi == vj for vj in values] for vi in values], dtype=torch.float32)
        same.fill_diagonal_(1.0)
        named = torch.tensor([a in attrs for _, attrs in caps], dtype=torch.float32)  # caption j names a
        match *= 1 - named[None, :] * (1 - same)  # a named attribute must agree
    return torch.stack(images), [c for c, _ in caps], match


def _direction_batch(cfg: TrainConfig, step: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scenes for the direction term: images [3P, 3, size, size] (P scenes as drawn, the same scenes
    recoloured, the same scenes with a distractor: a palette colour or, half the time, any RGB colour)
    and colour indices [2, P] (fill, new fill) into `world.SHAPE_COLOURS`."""
    rng = np.random.default_rng([cfg.seed, step, 1])
    names = list(world.SHAPE_COLOURS)
    plain, recoloured, distracted, idx = [], [], [], []
    for _ in range(cfg.direction_pairs):
        s = world.sample_scene(rng)
        others = [c for c in names if c != s.colour and c != s.background]
        new = others[rng.integers(len(others))]
        d = world.sample_distractor(s, rng, any_colour=bool(rng.random() < 0.5))
        rgb = world._jitter(rng, world.SHAPE_COLOURS[new], 18)
        plain.append(world.render(s, size))
        recoloured.append(world.render(dataclasses.replace(s, colour=new, colour_rgb=rgb), size))
        distracted.append(world.render_distracted(s, [d], size))
        idx.append((names.index(s.colour), names.index(new)))
    return torch.stack(plain + recoloured + distracted), torch.tensor(idx).T


def _direction_loss(
    model, tokenizer, images: torch.Tensor, idx: torch.Tensor, rng: np.random.Generator
) -> torch.Tensor:
    """NADA reads a CLIP through directions: the change of an image's embedding is compared with the
    change between two texts. This term asks for what NADA needs of its CLIP: recolouring a shape moves
    the embedding along text(new colour) - text(old colour) (cosine toward 1), and adding a distractor
    moves it outside the span of the colour words' differences (the share of its squared length inside
    that span toward 0), so no halo or tint, of any colour, can stand in for a recolouring."""
    from ..templates import IMAGENET_TEMPLATES

    names = list(world.SHAPE_COLOURS)
    templates = ["{}"] + [IMAGENET_TEMPLATES[i] for i in rng.choice(len(IMAGENET_TEMPLATES), 3, replace=False)]
    texts = [t.format(c) for c in names for t in templates]
    t = F.normalize(model.encode_text(tokenizer(texts)), dim=-1).view(len(names), len(templates), -1)
    t = F.normalize(t.mean(1), dim=-1)  # [8, D], as a text direction averages templates
    e = F.normalize(model.encode_image(_normalise(images)), dim=-1).view(3, idx.shape[1], -1)
    cos_recolour = F.cosine_similarity(e[1] - e[0], t[idx[1]] - t[idx[0]], dim=-1)
    return (1 - cos_recolour).mean() + colour_share(e[2] - e[0], t.detach()).mean()


def colour_share(change: torch.Tensor, colour_texts: torch.Tensor) -> torch.Tensor:
    """The share of each change's squared length [N] that lies in the span of the differences between
    the colour texts [C, D] (the directions a colour prompt pair can ask for)."""
    q, _ = torch.linalg.qr((colour_texts - colour_texts.mean(0)).T)  # [D, C] orthonormal columns
    inside = change @ q[:, : colour_texts.shape[0] - 1]  # the span has C - 1 dimensions
    return inside.pow(2).sum(-1) / change.pow(2).sum(-1).clamp_min(1e-12)


def _normalise(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    return ((images + 1) / 2 - mean) / std


def train(cfg: TrainConfig, snapshot_dir: Path | None = None, snapshot_every: int = 250) -> torch.nn.Module:
    """The trained model (eval mode). With `snapshot_dir`, the model so far is also saved every
    `snapshot_every` steps to snapshot_dir/step-N/, to judge a long run before it ends."""
    import open_clip

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    model = open_clip.CLIP(**TINY_CLIP_CONFIG)
    model.train()
    tokenizer = open_clip.SimpleTokenizer(context_length=TINY_CLIP_CONFIG["text_cfg"]["context_length"])
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optim = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    size = TINY_CLIP_CONFIG["vision_cfg"]["image_size"]
    start = time.perf_counter()
    for step in range(cfg.steps):
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for g in optim.param_groups:
            g["lr"] = lr
        images, captions, match = _batch(cfg, step, size)
        img = F.normalize(model.encode_image(_normalise(images)), dim=-1)
        txt = F.normalize(model.encode_text(tokenizer(captions)), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T  # [B images, B captions]
        loss_i = -(F.log_softmax(logits, dim=1) * (match / match.sum(1, keepdim=True))).sum(1).mean()
        loss_t = -(F.log_softmax(logits, dim=0) * (match / match.sum(0, keepdim=True))).sum(0).mean()
        loss = (loss_i + loss_t) / 2
        if cfg.direction_pairs:
            pair_images, idx = _direction_batch(cfg, step, size)
            rng = np.random.default_rng([cfg.seed, step, 2])
            loss = loss + cfg.direction_weight * _direction_loss(model, tokenizer, pair_images, idx, rng)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        if snapshot_dir is not None and (step + 1) % snapshot_every == 0 and step + 1 < cfg.steps:
            save(model, snapshot_dir / f"step-{step + 1}", {"steps": str(step + 1)})
        if step % 100 == 0 or step == cfg.steps - 1:
            log.info(
                "step %d/%d loss %.4f scale %.1f lr %.2e (%.0f s)",
                step + 1, cfg.steps, loss.item(), model.logit_scale.exp().item(), lr, time.perf_counter() - start,
            )  # fmt: skip
    return model.eval()


@torch.no_grad()
def class_texts(clip, prompts: list[list[str]]) -> torch.Tensor:
    """Zero-shot class embeddings [classes, D]: each class's prompts encoded, averaged, normalised."""
    return torch.stack([F.normalize(clip.encode_text(p).mean(0), dim=-1) for p in prompts])


def evaluate(clip, count: int = 800, seed_base: int = EVAL_SEED_BASE) -> dict[str, float]:
    """Zero-shot accuracies of a loaded `nada` CLIP on `count` fresh scenes (seeds seed_base...).

    - colour: argmax over the 8 colours of the bare colour word averaged over the ImageNet templates
      (what a text direction "red" -> "blue" uses); chance 1/8.
    - colour_photo: the prompts "a photo of a {colour} object."; chance 1/8.
    - shape: the shape word averaged over the ImageNet templates; chance 1/5.
    - background: "a {shape-agnostic} ... on a {bg} background" is not asked; the prompts are
      "something on a {bg} background"; chance 1/3.
    - colour_distracted: the colour task on the same scenes drawn with a distractor of another colour
      (outline, glow, tint and spot in turn); chance 1/8.
    - fill_over_distractor: on those images, how often the fill's colour scores above the distractor's.
    - direction_recolour / direction_distractor: mean cosine between an image's embedding change and the
      text change from the fill's colour to another (recolouring the shape to it / adding the distractor
      of that colour): what a NADA text direction rewards. High / near 0 is what the demo needs.
    - distractor_colour_share: the share of a distractor's embedding change (squared length) inside the
      span of the colour texts' differences (`colour_share`); 0 = no colour prompt pair can reward it.
    """
    from ..templates import apply_templates

    def embed(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([clip.encode_images(images[i : i + 100]) for i in range(0, len(images), 100)])

    def classify(emb: torch.Tensor, names: list[str], prompts: list[list[str]], truth: list[str]) -> float:
        pred = (emb @ class_texts(clip, prompts).T).argmax(1)
        return float(np.mean([names[int(k)] == t for k, t in zip(pred, truth)]))

    scenes = [world.scene_for_seed(seed_base + i) for i in range(count)]
    emb = embed(world.render_batch(scenes, 64))
    colours, shapes, bgs = list(world.SHAPE_COLOURS), list(world.SHAPES), list(world.BACKGROUNDS)
    colour_prompts = [apply_templates(c, "imagenet") for c in colours]
    # The same scenes with a distractor of another colour (kinds in turn): the fill still names the colour.
    rng = np.random.default_rng(seed_base)
    extra = [world.sample_distractor(s, rng, world.DISTRACTOR_KINDS[i % 4]) for i, s in enumerate(scenes)]
    emb_d = embed(torch.stack([world.render_distracted(s, [d], 64) for s, d in zip(scenes, extra)]))
    text = class_texts(clip, colour_prompts)
    fill = torch.tensor([colours.index(s.colour) for s in scenes])
    other = torch.tensor([colours.index(d.colour) for d in extra])
    sims = emb_d @ text.T
    # NADA's view: the embedding change of a recolouring, and of adding the distractor, against the text
    # change from the fill's colour to the new one (cosines; a halo should not score like a recolouring).
    new_idx = torch.tensor([(colours.index(s.colour) + 1 + i % 7) % len(colours) for i, s in enumerate(scenes)])
    recoloured = []
    for s, k in zip(scenes, new_idx.tolist()):
        new = colours[k]
        recoloured.append(world.render(dataclasses.replace(s, colour=new, colour_rgb=world.SHAPE_COLOURS[new]), 64))
    emb_r = embed(torch.stack(recoloured))
    cos_r = F.cosine_similarity(emb_r - emb, text[new_idx] - text[fill], dim=-1)
    cos_d = F.cosine_similarity(emb_d - emb, text[other] - text[fill], dim=-1)
    share_d = colour_share(emb_d - emb, text)
    return {
        "colour": classify(emb, colours, colour_prompts, [s.colour for s in scenes]),
        "colour_photo": classify(
            emb, colours, [[f"a photo of a {c} object."] for c in colours], [s.colour for s in scenes]
        ),
        "shape": classify(emb, shapes, [apply_templates(s, "imagenet") for s in shapes], [s.shape for s in scenes]),
        "background": classify(
            emb, bgs, [[f"something on a {b} background"] for b in bgs], [s.background for s in scenes]
        ),
        "colour_distracted": classify(emb_d, colours, colour_prompts, [s.colour for s in scenes]),
        "fill_over_distractor": float((sims.gather(1, fill[:, None]) > sims.gather(1, other[:, None])).float().mean()),
        "direction_recolour": float(cos_r.mean()),
        "direction_distractor": float(cos_d.mean()),
        "distractor_colour_share": float(share_d.mean()),
    }


def save(model: torch.nn.Module, out: Path, info: dict[str, str]) -> tuple[Path, Path]:
    from safetensors.torch import save

    from ..io import atomic_write_bytes

    config_path, weights_path = tiny_clip_files(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    # The script is the one writer of this folder, so re-running it replaces its own outputs.
    atomic_write_bytes(weights_path, save(state, metadata={"format": "pt", "dtype": "float16", **info}), overwrite=True)
    atomic_write_bytes(config_path, (json.dumps(TINY_CLIP_CONFIG, indent=2) + "\n").encode(), overwrite=True)
    return config_path, weights_path


README = """# tiny CLIP (test fixture)

A small open_clip CLIP trained by this project on its synthetic shapes world (`nada/demo/world.py`:
one coloured shape on a plain background), so that the CLIP loading code, text directions and the
NADA adaptation can be tested on a CPU without downloading any weights. It understands colours and
shapes of that world and nothing else; it is not a general-purpose CLIP.

- `tiny-clip.json`: open_clip model config (ViT image tower, 64 px input, patch 8, width 64, 4 layers;
  text tower width 64, 3 layers, context 32, open_clip's standard tokenizer; embedding dim 64).
  No preprocess section, so loaders use open_clip's default (OpenAI) mean and std.
- `tiny-clip.safetensors`: the state dict in float16 ({size_mb:.1f} MB); loaders cast it to the
  precision they run in.

## How it was made

    python -m nada.demo.train_tiny_clip --out nada/assets/open_clip/nada-demo

{steps} steps of batch {batch} (AdamW, lr {lr}, cosine schedule, seed {seed}, {threads} CPU threads,
deterministic algorithms), {minutes:.1f} minutes on the build machine (torch {torch_version}). Captions name
the colour and shape, the colour alone ("red", "red object"), the shape alone, or the whole scene,
as typed or inside one of the 79 ImageNet templates; 15 % of the images are colour fields (a colour
covering most of the image in a random pattern) captioned with the colour only. {distracted_pct} of the
shape scenes carry one or two distractors of another colour that the captions do not name (an outline
around the shape, a soft glow, a tinted background, a spot on the shape; `world.render_distracted`),
so that a halo or a tint of a colour does not read as the shape having it: these are the hard negatives
that keep a NADA run on the demo generator from satisfying the model with a halo instead of recolouring
the shape. Some captions name the distractors ("blue circle with a red glow", "... on a red-tinted
background") and some the shape's place on a 3 x 3 grid ("... at the top left"), so that the model sees
those changes instead of ignoring them: in a NADA run a change the prompts do not ask for then moves
the embedding off the text direction and costs. Captions fitting several images of a batch count as
positives for all of them.

Contrastive training alone did not stop a NADA run from painting halos: a tint's small embedding change
still pointed along "red" - "blue", and a directional loss rewards direction, not size (naming the
distractors in captions made that cosine larger, 0.19 -> 0.36). So each step also shows the model
{pairs} scenes three ways (as drawn, with the shape recoloured, with a distractor of another colour)
and asks (weight {weight}) that recolouring moves the embedding along text(new) - text(old) and that a
distractor (a palette colour, or any RGB colour half the time) moves it outside the span of the colour
words' differences: the direction term in `train_tiny_clip.py`. (A first version asked only for a
cosine at most 0 with the distractor's own colour; the NADA run then painted cyan backgrounds for
"blue" -> "red", a tint outside the palette that still pointed along the text direction.)

## Measured zero-shot accuracy

On {count} fresh scenes (seeds {seed_base}..{seed_end}, never used in training), 64 px:

| task | prompts | accuracy | chance |
|---|---|---|---|
| shape colour (8) | the colour word, averaged over the ImageNet templates | {colour:.3f} | 0.125 |
| shape colour (8) | "a photo of a {{colour}} object." | {colour_photo:.3f} | 0.125 |
| shape (5) | the shape word, averaged over the ImageNet templates | {shape:.3f} | 0.200 |
| background (3) | "something on a {{bg}} background" | {background:.3f} | 0.333 |
| shape colour (8), with a distractor of another colour | as the first row | {colour_distracted:.3f} | 0.125 |
| fill over distractor (2) | the fill's colour scores above the distractor's | {fill_over_distractor:.3f} | 0.500 |

What a NADA text direction sees (mean cosine between an image's embedding change and the text change
from the fill's colour to another colour, template-averaged as `nada.text_direction` does):

| change to the image | cosine | wanted |
|---|---|---|
| the shape recoloured to the other colour | {direction_recolour:.3f} | high |
| a distractor of the other colour added (outline, glow, tint, spot) | {direction_distractor:.3f} | near 0 |

Share of a distractor's embedding change inside the span of the colour words' differences:
{distractor_colour_share:.3f} (0 = a halo or tint can never look like a colour change to a text direction).

`tests/test_tiny_clip.py` re-measures these numbers through `nada.load_clip` and fails when they drop.
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nada.demo.train_tiny_clip", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="nada/assets/open_clip/nada-demo", help="output folder")
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--threads", type=int, default=TrainConfig.threads)
    p.add_argument("--eval-only", action="store_true", help="only measure the model in --out and rewrite its README")
    p.add_argument("--snapshot-dir", type=Path, help="also save the model every 250 steps into DIR/step-N/")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = TrainConfig(steps=args.steps, threads=args.threads)
    out = Path(args.out)
    if not args.eval_only:
        start = time.perf_counter()
        model = train(cfg, args.snapshot_dir)
        info = {"train_minutes": f"{(time.perf_counter() - start) / 60:.2f}", "torch": torch.__version__}
        info.update({k: str(v) for k, v in dataclasses.asdict(cfg).items()})
        save(model, out, info)
    from safetensors import safe_open

    from ..clip import load_clip
    from ..io import atomic_write_bytes

    config_path, weights_path = tiny_clip_files(out)
    with safe_open(str(weights_path), "pt") as f:
        info = f.metadata()
    torch.set_num_threads(cfg.threads)
    clip = load_clip(config_path, weights=weights_path, device="cpu")
    acc = evaluate(clip, cfg.eval_count)
    log.info("zero-shot accuracy: %s", json.dumps(acc))
    readme = README.format(
        size_mb=weights_path.stat().st_size / 1e6, steps=info["steps"], batch=info["batch"],
        lr=info["lr"], seed=info["seed"], threads=info["threads"], minutes=float(info["train_minutes"]),
        torch_version=info["torch"], pairs=info.get("direction_pairs", 0), weight=info.get("direction_weight", 0),
        distracted_pct=f"{float(info.get('distracted', 0)):.0%}", count=cfg.eval_count, seed_base=EVAL_SEED_BASE,
        seed_end=EVAL_SEED_BASE + cfg.eval_count - 1, **acc,
    )  # fmt: skip
    atomic_write_bytes(out / "README.md", readme.encode(), overwrite=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
