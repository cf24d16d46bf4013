"""A deterministic synthetic "shapes world": one coloured shape on a plain background, with captions.

It is the data of the project's own small models: the tiny CLIP (`nada.demo.train_tiny_clip`) learns
colours and shapes from it, and a small demo generator can be trained on it, so that the whole
adaptation can be proven on a CPU without downloading anything.

    rng = numpy.random.default_rng(7)
    scene = sample_scene(rng)               # Scene: shape, colour, background, position, size, ...
    image = render(scene, size=64)          # float32 tensor [3, 64, 64] in [-1, 1]
    caption(scene)                          # "a red circle on a white background"
    caption(scene, "a photo of a {}.", detail="object")   # "a photo of a red circle."

Everything is a pure function of its inputs: `render` of the same scene and size gives the same
pixels on every machine (PIL drawing + numpy), and `scene_for_seed(seed)` gives the same scene for a
seed. Shape colours and background colours are disjoint palettes (apart from white and black, which
never meet a background of their own colour), so a bare colour word ("red") always names the shape.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

# Colour name -> base RGB (0..255). Each scene jitters the base a little so that a colour is a region,
# not a single point, which a CLIP must generalise over.
SHAPE_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (35, 70, 215),
    "yellow": (235, 215, 35),
    "purple": (135, 45, 175),
    "orange": (240, 135, 25),
    "white": (240, 240, 240),
    "black": (22, 22, 22),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (235, 235, 235),
    "gray": (128, 128, 128),
    "black": (18, 18, 18),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "star")

_SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down: antialiased edges at any size


@dataclasses.dataclass(frozen=True)
class Scene:
    """Everything `render` needs; positions and sizes are fractions of the image side."""

    shape: str
    colour: str
    background: str
    colour_rgb: tuple[int, int, int]  # the jittered shape colour actually drawn
    background_rgb: tuple[int, int, int]  # the jittered background colour
    cx: float  # centre, 0..1 from the left
    cy: float  # centre, 0..1 from the top
    radius: float  # circumradius as a fraction of the side
    angle: float  # rotation in degrees
    blur: float  # Gaussian blur radius as a fraction of the side (0 = sharp)
    noise: float  # std of the additive pixel noise in [-1, 1] units
    noise_seed: int  # seeds the pixel noise, so rendering stays a pure function


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)  # type: ignore[return-value]


def sample_scene(
    rng: np.random.Generator,
    shapes: Sequence[str] = SHAPES,
    colours: Sequence[str] | None = None,
    backgrounds: Sequence[str] | None = None,
) -> Scene:
    """A random scene drawn from `rng` (numpy Generator); optional lists restrict the choices."""
    colours = list(colours or SHAPE_COLOURS)
    backgrounds = list(backgrounds or BACKGROUNDS)
    shape = str(shapes[rng.integers(len(shapes))])
    colour = str(colours[rng.integers(len(colours))])
    # A shape is never drawn on a background of its own colour (it would be invisible).
    allowed = [b for b in backgrounds if b != colour] or backgrounds
    background = str(allowed[rng.integers(len(allowed))])
    radius = float(rng.uniform(0.16, 0.34))
    return Scene(
        shape=shape,
        colour=colour,
        background=background,
        colour_rgb=_jitter(rng, SHAPE_COLOURS[colour], 18),
        background_rgb=_jitter(rng, BACKGROUNDS[background], 14),
        cx=float(rng.uniform(radius * 0.8, 1 - radius * 0.8)),
        cy=float(rng.uniform(radius * 0.8, 1 - radius * 0.8)),
        radius=radius,
        angle=float(rng.uniform(0.0, 360.0)),
        blur=float(rng.choice([0.0, 0.0, rng.uniform(0.0, 0.025)])),
        noise=float(rng.uniform(0.0, 0.06)),
        noise_seed=int(rng.integers(0, 2**31 - 1)),
    )


def scene_for_seed(seed: int, **choices) -> Scene:
    """The scene of an integer seed (the same on every machine)."""
    return sample_scene(np.random.default_rng(seed), **choices)


def _polygon(scene: Scene, n: int, inner: float | None, s: float) -> list[tuple[float, float]]:
    """Vertices of a regular polygon (or a star when `inner` is set) in supersampled pixels."""
    cx, cy, r = scene.cx * s, scene.cy * s, scene.radius * s
    a0 = math.radians(scene.angle)
    pts = []
    steps = 2 * n if inner is not None else n
    for k in range(steps):
        rad = r if inner is None or k % 2 == 0 else r * inner
        a = a0 + 2 * math.pi * k / steps
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def _cross(scene: Scene, s: float) -> list[tuple[float, float]]:
    """A plus sign with arms of half-width 0.33 r, rotated."""
    r, w = scene.radius * s, scene.radius * s * 0.33
    outline = [
        (-w, -r),
        (w, -r),
        (w, -w),
        (r, -w),
        (r, w),
        (w, w),
        (w, r),
        (-w, r),
        (-w, w),
        (-r, w),
        (-r, -w),
        (-w, -w),
    ]
    a = math.radians(scene.angle)
    ca, sa = math.cos(a), math.sin(a)
    cx, cy = scene.cx * s, scene.cy * s
    return [(cx + x * ca - y * sa, cy + x * sa + y * ca) for x, y in outline]


def render_pil(scene: Scene, size: int = 64) -> Image.Image:
    """The scene as an RGB PIL image of `size` x `size` pixels (before pixel noise)."""
    if size < 4:
        raise ValueError(f"size must be at least 4 pixels, got {size}")
    s = size * _SUPERSAMPLE
    img = Image.new("RGB", (s, s), scene.background_rgb)
    draw = ImageDraw.Draw(img)
    if scene.shape == "circle":
        cx, cy, r = scene.cx * s, scene.cy * s, scene.radius * s * 0.85  # similar area to the polygons
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=scene.colour_rgb)
    elif scene.shape == "square":
        draw.polygon(_polygon(scene, 4, None, s), fill=scene.colour_rgb)
    elif scene.shape == "triangle":
        draw.polygon(_polygon(scene, 3, None, s), fill=scene.colour_rgb)
    elif scene.shape == "star":
        draw.polygon(_polygon(scene, 5, 0.45, s), fill=scene.colour_rgb)
    elif scene.shape == "cross":
        draw.polygon(_cross(scene, s), fill=scene.colour_rgb)
    else:
        raise ValueError(f"unknown shape {scene.shape!r}; use one of {', '.join(SHAPES)}")
    img = img.resize((size, size), Image.Resampling.BOX)
    if scene.blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(scene.blur * size))
    return img


@dataclasses.dataclass(frozen=True)
class Distractor:
    """A second colour in a scene that does not change what the scene is: the shape's fill still names
    it. These are the tiny CLIP's hard negatives, so that a halo of the target colour around a shape, a
    tinted background or a spot on the shape does not read as the shape having that colour.

    kind: "outline" (a ring of width `amount` x side around the shape), "glow" (a soft halo, Gaussian
    of width `amount` x side, of strength `strength`), "tint" (the background blended toward the colour
    by `strength`, uniformly or as a ramp across the image when `amount` > 0) or "spot" (a disc of radius
    `amount` x the shape's radius on the shape, at `offset` from its centre in units of that radius).
    """

    kind: str
    colour: str
    rgb: tuple[int, int, int]
    amount: float
    strength: float = 1.0
    offset: tuple[float, float] = (0.0, 0.0)


DISTRACTOR_KINDS: tuple[str, ...] = ("outline", "glow", "tint", "spot")


def sample_distractor(
    scene: Scene, rng: np.random.Generator, kind: str | None = None, any_colour: bool = False
) -> Distractor:
    """A random distractor of another shape colour than the scene's (any kind unless `kind` is given), or
    with `any_colour` of a random RGB colour that no word names (its `colour` is "")."""
    kind = kind or DISTRACTOR_KINDS[rng.integers(len(DISTRACTOR_KINDS))]
    if any_colour:
        colour, rgb = "", tuple(int(v) for v in rng.integers(0, 256, 3))
    else:
        others = [c for c in SHAPE_COLOURS if c != scene.colour]
        colour = others[rng.integers(len(others))]
        rgb = _jitter(rng, SHAPE_COLOURS[colour], 18)
    if kind == "outline":
        return Distractor(kind, colour, rgb, amount=float(rng.uniform(0.015, 0.08)))
    if kind == "glow":
        return Distractor(
            kind, colour, rgb, amount=float(rng.uniform(0.03, 0.1)), strength=float(rng.uniform(0.3, 0.9))
        )
    if kind == "tint":
        ramp = float(rng.choice([0.0, rng.uniform(0.5, 1.0)]))
        return Distractor(kind, colour, rgb, amount=ramp, strength=float(rng.uniform(0.1, 0.45)))
    if kind == "spot":
        a = float(rng.uniform(0, 2 * math.pi))
        r = float(rng.uniform(0.0, 0.4))
        offset = (r * math.cos(a), r * math.sin(a))
        return Distractor(kind, colour, rgb, amount=float(rng.uniform(0.25, 0.45)), offset=offset)
    raise ValueError(f"unknown distractor kind {kind!r}; use one of {', '.join(DISTRACTOR_KINDS)}")


def _mask(scene: Scene, size: int, **change) -> np.ndarray:
    """The antialiased coverage [size, size] in 0..1 of the scene's shape (with fields changed)."""
    white = dataclasses.replace(scene, colour_rgb=(255, 255, 255), background_rgb=(0, 0, 0), blur=0.0, **change)
    return np.asarray(render_pil(white, size), dtype=np.float32)[..., 0] / 255.0


def render_distracted(scene: Scene, distractors: Sequence[Distractor], size: int = 64) -> torch.Tensor:
    """The scene with distractors, as `render` returns it ([3, size, size] in [-1, 1], a pure function)."""
    shape = _mask(scene, size)[..., None]  # [H, W, 1]
    img = np.broadcast_to(np.asarray(scene.background_rgb, np.float32), (size, size, 3)).copy()
    spots = []
    for d in distractors:
        rgb = np.asarray(d.rgb, np.float32)
        if d.kind == "tint":
            ramp = np.linspace(1.0 - d.amount, 1.0, size, dtype=np.float32)  # left to right; flat when 0
            alpha = d.strength * np.broadcast_to(ramp[None, :, None], (size, size, 1))
        elif d.kind == "outline":
            alpha = _mask(scene, size, radius=scene.radius + d.amount)[..., None]
        elif d.kind == "glow":
            glow = Image.fromarray((shape[..., 0] * 255).astype(np.uint8)).filter(
                ImageFilter.GaussianBlur(d.amount * size)
            )
            alpha = d.strength * np.minimum(1.0, 2.0 * np.asarray(glow, np.float32) / 255.0)[..., None]
        elif d.kind == "spot":
            spots.append(d)
            continue
        else:
            raise ValueError(f"unknown distractor kind {d.kind!r}; use one of {', '.join(DISTRACTOR_KINDS)}")
        img = img + alpha * (rgb - img)
    img = img + shape * (np.asarray(scene.colour_rgb, np.float32) - img)
    for d in spots:
        cx = scene.cx + d.offset[0] * scene.radius * 0.85
        cy = scene.cy + d.offset[1] * scene.radius * 0.85
        disc = _mask(scene, size, shape="circle", cx=cx, cy=cy, radius=scene.radius * d.amount)[..., None]
        img = img + np.minimum(disc, shape) * (np.asarray(d.rgb, np.float32) - img)
    pil = Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8))
    if scene.blur > 0:
        pil = pil.filter(ImageFilter.GaussianBlur(scene.blur * size))
    return _to_tensor(np.asarray(pil, dtype=np.float32), scene)


def _to_tensor(rgb: np.ndarray, scene: Scene) -> torch.Tensor:
    """[H, W, 3] 0..255 -> [3, H, W] in [-1, 1] with the scene's pixel noise."""
    arr = rgb / 127.5 - 1.0
    if scene.noise > 0:
        noise = np.random.default_rng(scene.noise_seed).standard_normal(arr.shape).astype(np.float32)
        arr = np.clip(arr + scene.noise * noise, -1.0, 1.0)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def render(scene: Scene, size: int = 64) -> torch.Tensor:
    """The scene as a float32 tensor [3, size, size] in [-1, 1] (the generators' convention)."""
    return _to_tensor(np.asarray(render_pil(scene, size), dtype=np.float32), scene)


def render_batch(scenes: Sequence[Scene], size: int = 64) -> torch.Tensor:
    """[B, 3, size, size] in [-1, 1]."""
    return torch.stack([render(s, size) for s in scenes])


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def phrase(scene: Scene, detail: str = "full") -> str:
    """The description of a scene at a level of detail.

    "full": "red circle on a white background"; "object": "red circle"; "colour": "red";
    "shape": "circle"; "background": "circle on a white background".
    """
    if detail == "full":
        return f"{scene.colour} {scene.shape} on {article(scene.background)} {scene.background} background"
    if detail == "object":
        return f"{scene.colour} {scene.shape}"
    if detail == "colour":
        return scene.colour
    if detail == "shape":
        return scene.shape
    if detail == "background":
        return f"{scene.shape} on {article(scene.background)} {scene.background} background"
    raise ValueError(f"unknown detail {detail!r}; use full, object, colour, shape or background")


def caption(scene: Scene, template: str = "a {}", detail: str = "full") -> str:
    """A caption: `template` (with "{}") filled with `phrase(scene, detail)`.

    With the default template the article follows the phrase ("an orange star on a gray background").
    """
    text = phrase(scene, detail)
    if template == "a {}":
        return f"{article(text)} {text}"
    return template.format(text)
