"""Prompt templates for text directions (nada-spec 2.5, 2.7).

`IMAGENET_TEMPLATES` are the 79 ImageNet prompt templates used by StyleGAN-NADA and StyleCLIP: the
80 templates CLIP's authors published for zero-shot ImageNet, without "a photo of many {}.".
`PART_TEMPLATES` are the 15 templates of the patch-directional loss. `resolve_templates` turns a
user's choice ("imagenet", "none", or a list of strings with "{}") into a validated tuple.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import ClipError

IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

# The official list, including its missing full stops and "{}s fangs".
PART_TEMPLATES: tuple[str, ...] = (
    "the paw of a {}.",
    "the nose of a {}.",
    "the eye of the {}.",
    "the ears of a {}.",
    "an eye of a {}.",
    "the tongue of a {}.",
    "the fur of the {}.",
    "colorful {} fur.",
    "a snout of a {}.",
    "the teeth of the {}.",
    "the {}s fangs.",
    "a claw of the {}.",
    "the face of the {}",
    "a neck of a {}",
    "the head of the {}",
)

NAMED_TEMPLATES: dict[str, tuple[str, ...]] = {
    "imagenet": IMAGENET_TEMPLATES,
    "none": ("{}",),
    "part": PART_TEMPLATES,
}

Templates = str | Sequence[str] | None


def resolve_templates(templates: Templates) -> tuple[str, ...]:
    """ "imagenet" -> the 79 templates; "none" or None -> ("{}",) (the text as typed); "part" -> the 15
    part templates; a list of strings -> that list (each must contain "{}" exactly once).

    A single string with "{}" is a one-template list. Custom lists keep their order; empty entries
    (e.g. blank lines of a node's text box) are dropped.
    """
    if templates is None:
        return NAMED_TEMPLATES["none"]
    if isinstance(templates, str):
        key = templates.strip().lower()
        if key in NAMED_TEMPLATES:
            return NAMED_TEMPLATES[key]
        if "{}" not in templates:
            raise ClipError(
                f"unknown templates {templates!r}: use 'imagenet', 'none', or templates with '{{}}' "
                "where the text goes, e.g. 'a painting of a {}.'"
            )
        templates = [templates]
    out = []
    for t in templates:
        if not isinstance(t, str):
            raise ClipError(f"a template must be a string, got {type(t).__name__}")
        t = t.strip()
        if not t:
            continue
        if t.count("{}") != 1:
            raise ClipError(f"template {t!r} must contain '{{}}' exactly once (where the text goes)")
        out.append(t)
    if not out:
        raise ClipError("the template list is empty: give at least one template with '{}', or use 'none'")
    return tuple(out)


def apply_templates(text: str, templates: Templates) -> list[str]:
    """The prompts of `text` under `templates` (see `resolve_templates`)."""
    return [t.format(text) for t in resolve_templates(templates)]
