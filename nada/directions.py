"""CLIP directions: where the adaptation should move the images, one unit vector per CLIP model.

    d = text_direction(clip, "photo", "pencil sketch")                 # nada-spec 2.5
    d = image_direction(clip, style_images, source=G)                  # nada-spec 2.12 (+ source images)
    d = combine_directions([(d_text, 1.0), (d_image, 0.5)])            # weighted, renormalised

Formulas (per CLIP model m of the ensemble; n(v) = v / ||v||):

- text: t_s,i = n(E_T(template_i(source))), t_t,i = n(E_T(template_i(target))) over the templates i;
  dT = n(mean_i (t_t,i - t_s,i)).
- image: e_tgt = mean_j n(E_I(target_j)), e_src = mean_k n(E_I(source_k)); dT = n(e_tgt - e_src).
  The means are not renormalised before subtracting, as in the official code. The source is either
  images or generator samples (seeds 0..N-1, truncation 1, per-seed random noise; the official code
  uses 16 random samples). All images go through the same differentiable preprocessing as the
  generator images of the loss (`ClipModel.preprocess`); the official code uses PIL's resize for the
  target images, which differs only by resampling details.
- combined: dT = n(sum_k w_k dT_k).

Besides dT, a `Direction` keeps, per model, the unit source and target embeddings (for the global
and manifold losses and layer selection) and the directions of the patch loss: one per part template
for text (nada-spec 2.7), the direction itself otherwise. A direction whose vector is zero or not
finite (identical prompts, identical image sets) is an error, never NaN.

Every tensor of a `Direction` is float32 on the CPU and made outside inference mode, so it can be
used in a training graph even when it was computed inside `torch.inference_mode()` (ComfyUI).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .clip import ClipEnsemble, ClipModel, as_ensemble
from .errors import DirectionError
from .images import pil_to_tensor
from .sampling import ChunkProgress, sample
from .templates import PART_TEMPLATES, Templates, apply_templates, resolve_templates

# A direction shorter than this (a difference of unit vectors) is treated as zero: the two sides
# are the same for this CLIP, and normalising it would amplify rounding noise into a direction.
MIN_NORM = 1e-6

DEFAULT_SOURCE_SAMPLES = 16  # generator samples standing for the source domain (official: 16)


@dataclasses.dataclass(frozen=True)
class Direction:
    """A CLIP direction per ensemble member (keyed by member name), with provenance.

    vectors[name]: [D] unit direction dT; targets[name] / sources[name]: [D] unit target / source
    embeddings; patch[name]: [P, D] unit directions of the patch loss. `kind` is "text", "image" or
    "combined"; `provenance` is JSON-able (texts, templates, image counts, parts).
    """

    vectors: Mapping[str, torch.Tensor]
    targets: Mapping[str, torch.Tensor]
    sources: Mapping[str, torch.Tensor]
    patch: Mapping[str, torch.Tensor]
    kind: str
    provenance: Mapping[str, Any]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.vectors)

    def vector(self, name: str) -> torch.Tensor:
        if name not in self.vectors:
            raise DirectionError(
                f"this direction has no vector for CLIP {name!r} (it has {', '.join(self.vectors)}); "
                "make the direction with the same CLIP models the adaptation uses"
            )
        return self.vectors[name]

    def check(self, clip: ClipModel | ClipEnsemble) -> None:
        """Raise `DirectionError` unless every member of `clip` has a vector of its embedding size."""
        for m in as_ensemble(clip):
            v = self.vector(m.name)
            if v.shape[-1] != m.model.embed_dim:
                raise DirectionError(
                    f"the direction for {m.name!r} has {v.shape[-1]} dimensions but that CLIP embeds in "
                    f"{m.model.embed_dim}; make the direction with this CLIP"
                )

    def describe(self) -> dict[str, Any]:
        """JSON-able summary (for metadata): kind, provenance and the CLIP members."""
        return {"kind": self.kind, **dict(self.provenance), "clip": list(self.vectors)}


def _unit(v: torch.Tensor, what: str) -> torch.Tensor:
    norm = v.norm(dim=-1, keepdim=True)
    if not torch.isfinite(v).all() or (norm < MIN_NORM).any():
        raise DirectionError(f"{what} is zero or not finite, so it has no direction; {_ZERO_HINT}")
    return v / norm


_ZERO_HINT = "the two sides look the same to this CLIP: make source and target differ"


def _plain(t: torch.Tensor) -> torch.Tensor:
    """float32 CPU copy, made outside inference mode (usable in autograd graphs)."""
    with torch.inference_mode(False):
        return t.detach().float().cpu().clone()


def _check_text(text: Any, what: str) -> str:
    if not isinstance(text, str):
        raise DirectionError(f"the {what} text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise DirectionError(f"the {what} text is empty; describe the {what} domain, e.g. 'photo'")
    return text.strip()


def text_direction(
    clip: ClipModel | ClipEnsemble,
    source: str,
    target: str,
    templates: Templates = "imagenet",
) -> Direction:
    """dT = n(mean_i (n(E_T(template_i(target))) - n(E_T(template_i(source))))) per CLIP member.

    `templates`: "imagenet" (the 79 templates, as the paper), "none"/None (the texts as typed), or a
    list of templates with "{}". Empty or identical texts raise `DirectionError`.
    """
    source, target = _check_text(source, "source"), _check_text(target, "target")
    if " ".join(source.lower().split()) == " ".join(target.lower().split()):
        raise DirectionError(f"source and target are the same text ({source!r}); the target must differ")
    tpl = resolve_templates(templates)
    vectors, targets, sources, patch = {}, {}, {}, {}
    with torch.inference_mode(False), torch.no_grad():
        for m in as_ensemble(clip):
            ts = m.model.encode_text(apply_templates(source, tpl))  # [T, D]
            tt = m.model.encode_text(apply_templates(target, tpl))
            vectors[m.name] = _plain(_unit((tt - ts).mean(0), f"the text direction {source!r} -> {target!r}"))
            targets[m.name] = _plain(F.normalize(tt.mean(0), dim=-1))
            sources[m.name] = _plain(F.normalize(ts.mean(0), dim=-1))
            ps = m.model.encode_text(apply_templates(source, PART_TEMPLATES))  # [P, D]
            pt = m.model.encode_text(apply_templates(target, PART_TEMPLATES))
            patch[m.name] = _plain(_part_directions(pt - ps, vectors[m.name]))
    provenance = {
        "source": source,
        "target": target,
        "templates": templates if isinstance(templates, str) or templates is None else list(tpl),
        "template_count": len(tpl),
    }
    if provenance["templates"] is None:
        provenance["templates"] = "none"
    return Direction(vectors, targets, sources, patch, "text", provenance)


def _part_directions(deltas: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Normalise each row; a row that is zero (a template the CLIP cannot tell apart) takes the
    main direction instead of becoming NaN."""
    norms = deltas.norm(dim=-1, keepdim=True)
    ok = torch.isfinite(deltas).all(-1, keepdim=True) & (norms >= MIN_NORM)
    safe = torch.where(ok, deltas / norms.clamp_min(MIN_NORM), fallback.to(deltas)[None])
    return safe


ImageSource = Any  # images ([B, 3, H, W] in [-1, 1], a list of such tensors or PIL images), a generator, or a callable


def _image_list(images: Any, what: str) -> list[torch.Tensor]:
    """Images in any accepted form -> list of [3, H, W] float tensors in [-1, 1]."""
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[1] != 3:
            hint = ""
            if images.ndim == 4 and images.shape[-1] == 3:
                hint = "; ComfyUI IMAGE tensors [B, H, W, 3] in [0, 1] convert with x.permute(0, 3, 1, 2) * 2 - 1"
            raise DirectionError(f"{what} must be RGB images [B, 3, H, W] in [-1, 1], got {list(images.shape)}{hint}")
        out = list(images)
    elif isinstance(images, Sequence) and not isinstance(images, str):
        out = []
        for im in images:
            if isinstance(im, torch.Tensor):
                out.extend(_image_list(im, what))
            elif hasattr(im, "convert"):  # a PIL image
                out.append(pil_to_tensor(im))
            else:
                raise DirectionError(f"{what}: cannot use a {type(im).__name__} as an image")
    elif hasattr(images, "convert"):
        out = [pil_to_tensor(images)]
    else:
        raise DirectionError(f"{what} must be images (a tensor or a list of images), got {type(images).__name__}")
    if not out:
        raise DirectionError(f"{what}: no images were given; give at least one image")
    return out


def _mean_embedding(
    model: ClipModel, images: list[torch.Tensor], batch_size: int, tick: Callable[[int], None]
) -> torch.Tensor:
    """mean_j n(E_I(image_j)) [D]; images of one size are encoded in batches."""
    total, count = None, 0
    by_size: dict[tuple[int, int], list[torch.Tensor]] = {}
    for im in images:
        by_size.setdefault(tuple(im.shape[-2:]), []).append(im)
    for group in by_size.values():
        for i in range(0, len(group), batch_size):
            e = model.encode_images(torch.stack(group[i : i + batch_size]).float())
            tick(len(group[i : i + batch_size]))
            total = e.sum(0) if total is None else total + e.sum(0)
            count += e.shape[0]
    return total / count


def _is_generator(obj: Any) -> bool:
    return all(hasattr(obj, a) for a in ("mapping", "synthesis", "config"))


def generator_samples(
    G: Any, count: int = DEFAULT_SOURCE_SAMPLES, progress: ChunkProgress | None = None
) -> torch.Tensor:
    """The source samples of an image direction: seeds 0..count-1, truncation 1, per-seed noise."""
    if count < 1:
        raise DirectionError(f"source_samples must be at least 1, got {count}")
    return sample(G, list(range(count)), truncation_psi=1.0, noise_mode="random", progress=progress)


def image_direction(
    clip: ClipModel | ClipEnsemble,
    target_images: Any,
    source: ImageSource = None,
    source_samples: int = DEFAULT_SOURCE_SAMPLES,
    batch_size: int = 16,
    progress: ChunkProgress | None = None,
) -> Direction:
    """dT = n(mean_j n(E_I(target_j)) - mean_k n(E_I(source_k))) per CLIP member (nada-spec 2.12).

    `progress(done, total)` runs between chunks (generator samples rendered, then images encoded per
    CLIP member); an exception it raises (a cancel) stops the work there.

    `target_images` / image `source`: a tensor [B, 3, H, W] in [-1, 1], or a list of such tensors
    ([3, H, W] each, any sizes) or PIL images. `source` may instead be a generator (its samples of
    seeds 0..source_samples-1 at truncation 1 stand for the source domain, as in the official code)
    or a callable `source(n) -> images [n, 3, H, W]`.
    """
    targets_in = _image_list(target_images, "target images")
    if source is None:
        raise DirectionError(
            "an image direction needs a source: source images, or the generator being adapted "
            "(its samples stand for the source domain)"
        )
    members = list(as_ensemble(clip))
    rendered = source_samples if _is_generator(source) else 0
    done = [0]

    def tick(n: int) -> None:  # work units: images rendered, then images encoded by each member
        done[0] += n
        if progress is not None:
            progress(done[0], rendered + len(members) * (len(targets_in) + len(sources_in)))

    def on_render(n: int, _total: int) -> None:
        if progress is not None:
            progress(n, rendered + len(members) * (len(targets_in) + source_samples))

    with torch.inference_mode(False), torch.no_grad():
        if _is_generator(source):
            samples = generator_samples(source, source_samples, progress=on_render)
            done[0] = source_samples
            sources_in = _image_list(samples, "generator samples")
            source_desc: dict[str, Any] = {"source": "generator samples", "source_count": source_samples}
        elif callable(source) and not isinstance(source, torch.Tensor):
            sources_in = _image_list(source(source_samples), "generated source images")
            source_desc = {"source": "generated samples", "source_count": len(sources_in)}
        else:
            sources_in = _image_list(source, "source images")
            source_desc = {"source": "images", "source_count": len(sources_in)}
        vectors, targets, sources, patch = {}, {}, {}, {}
        for m in members:
            e_t = _mean_embedding(m.model, targets_in, batch_size, tick)
            e_s = _mean_embedding(m.model, sources_in, batch_size, tick)
            d = _unit(e_t - e_s, "the image direction (mean target minus mean source embedding)")
            vectors[m.name] = _plain(d)
            targets[m.name] = _plain(_unit(e_t, "the mean target image embedding"))
            sources[m.name] = _plain(_unit(e_s, "the mean source image embedding"))
            patch[m.name] = _plain(d[None])
    provenance = {"target": "images", "target_count": len(targets_in), **source_desc}
    return Direction(vectors, targets, sources, patch, "image", provenance)


def combine_directions(items: Sequence[tuple[Direction, float]]) -> Direction:
    """dT = n(sum_k w_k dT_k) per CLIP member, for directions made with the same CLIP models.

    A negative weight moves away from that direction (its source and target swap roles in the
    combined source/target embeddings). Items of weight 0 are ignored. The combined target embedding
    is n(sum_k |w_k| target_k) (source for negative weights), and the source likewise. Patch
    directions combine row by row when every part has the same number; otherwise the patch loss
    uses the combined direction.
    """
    used: list[tuple[Direction, float]] = []
    for i, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) != 2 or not isinstance(item[0], Direction):
            raise DirectionError(f"item {i + 1} must be a (direction, weight) pair")
        d, w = item
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise DirectionError(f"the weight of direction {i + 1} must be a finite number, got {w!r}")
        if w != 0:
            used.append((d, float(w)))
    if not used:
        raise DirectionError("no direction to combine: give at least one direction with a nonzero weight")
    names = used[0][0].names
    for d, _ in used[1:]:
        if set(d.names) != set(names):
            raise DirectionError(
                f"directions made with different CLIP models cannot be combined ({', '.join(names)} vs "
                f"{', '.join(d.names)}); make them with the same CLIP"
            )
    vectors, targets, sources, patch = {}, {}, {}, {}
    for n in names:
        vec = sum(w * d.vectors[n] for d, w in used)
        vectors[n] = _plain(_unit(vec, "the combined direction (the weighted directions cancel out)"))
        tgt = sum(abs(w) * (d.targets[n] if w > 0 else d.sources[n]) for d, w in used)
        src = sum(abs(w) * (d.sources[n] if w > 0 else d.targets[n]) for d, w in used)
        targets[n] = _plain(F.normalize(tgt, dim=-1))
        sources[n] = _plain(F.normalize(src, dim=-1))
        shapes = {tuple(d.patch[n].shape) for d, _ in used}
        if len(shapes) == 1:
            patch[n] = _plain(_part_directions(sum(w * d.patch[n] for d, w in used), vectors[n]))
        else:
            patch[n] = vectors[n][None].clone()
    provenance = {"parts": [{"weight": w, **d.describe()} for d, w in used]}
    return Direction(vectors, targets, sources, patch, "combined", provenance)
