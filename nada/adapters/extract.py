"""Extracting an adapter from a full adaptation: (base, adapted) -> a small file that keeps the whole shift.

Every tensor the adaptation changed is kept. A changed weight matrix (a convolution weight as
[out, in*k*k], a style affine [in_channels, w_dim], a to-RGB, skip or mapping weight) is stored as its
rank-r truncated SVD, B = U_r sqrt(S_r) and A = sqrt(S_r) V_r^T, when that is smaller than the matrix
(r * (out + in) < out * in). Every other changed tensor is stored exactly: the constant input, biases,
noise strengths, changed buffers, and any weight whose factors would not be smaller. From a rank equal
to the smaller side of every matrix on, nothing is factored and the adapter reproduces the adapted
generator up to float rounding.

Image error (the metric `max_error` and the reports use): the mean absolute pixel difference, on the
[-1, 1] scale, between base + adapter at strength 1 and the adapted generator, over `ERROR_SEEDS` at
truncation 0.7 with the stored noise. 0.01 is 1.3 of 255 grey levels.

A pair that is not a base and an adaptation of it is refused: different architectures; an adapted
generator whose metadata names another base fingerprint; or weights that are not a shift of the base's,
measured by the root mean square over all weight matrices of their relative change ||W_a - W_b|| / ||W_b||
(per matrix, so the mapping network's large stored scale, 1 / lr_mul, does not drown the rest).
Independent weights of the same scale give about sqrt(2); a 100-step NADA run of the demo generator
gives 0.01 (bench/README.md), so `UNRELATED` = 1.0 leaves a wide margin on both sides.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import torch

from ..stylegan2 import Generator
from .adapter import DELTA, LORA_A, LORA_B, Adapter, AdapterError, apply_adapters

log = logging.getLogger(__name__)

UNRELATED = 1.0
ERROR_SEEDS = (0, 1, 2, 3)
ERROR_TRUNCATION = 0.7


@dataclasses.dataclass(frozen=True)
class Shift:
    """What an adaptation changed. deltas: tensor name -> adapted - base (changed tensors only);
    svd: weight name -> (U, S, Vh) of its delta as a matrix; relative_change: the relatedness measure."""

    deltas: dict[str, torch.Tensor]
    svd: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    relative_change: float
    metadata: dict[str, Any]

    @property
    def full_rank(self) -> int:
        """The smallest rank at which nothing is factored (the adapter is then exact)."""
        return max((s.numel() for _, s, _ in self.svd.values()), default=1)

    def adapter(self, rank: int) -> Adapter:
        """The rank-`rank` adapter of this shift (kind lora: factors where they pay, exact deltas elsewhere)."""
        if rank < 1:
            raise AdapterError(f"extraction rank must be at least 1, got {rank}")
        tensors = {}
        for name, d in self.deltas.items():
            if name in self.svd:
                u, s, vh = self.svd[name]
                r = min(rank, s.numel())
                if r * (u.shape[0] + vh.shape[1]) < u.shape[0] * vh.shape[1]:
                    root = s[:r].sqrt()
                    tensors[name + LORA_B] = u[:, :r] * root  # [out, r]
                    tensors[name + LORA_A] = root[:, None] * vh[:r]  # [r, in*k*k]
                    continue
            tensors[name + DELTA] = d.clone()
        return Adapter("lora", tensors, {**self.metadata, "rank": rank})


def measure_shift(base: Generator, adapted: Generator, atol: float = 0.0) -> Shift:
    """The changes from `base` to `adapted`, checked to be an adaptation (see the module docstring)."""
    if base.config != adapted.config:
        raise AdapterError(
            "the two generators have different architectures (resolution, channels, mapping, ...), so the "
            "second is not an adaptation of the first; give the generator it was adapted from as the base"
        )
    fp = base.fingerprint()
    recorded = (adapted.metadata.get("adaptation") or {}).get("base_fingerprint")
    if isinstance(recorded, str) and recorded and recorded != fp:
        raise AdapterError(
            f"the adapted generator was made from another base (fingerprint {recorded[:12]}...; this base is "
            f"{fp[:12]}...); give the generator it was adapted from as the base"
        )
    sb, sa = base.state_dict(), adapted.state_dict()
    deltas: dict[str, torch.Tensor] = {}
    relative_changes = []
    # A file without an average w (published NADA checkpoints) gets an estimate at load time: not a
    # change the adaptation made, so the base's stored average is kept.
    estimated = {"mapping.w_avg"} if "w_avg" in adapted.metadata else set()
    for name, b in sb.items():
        if not b.is_floating_point() or name in estimated:
            continue
        a = sa[name].detach().to(b.device, torch.float32)
        b = b.detach().float()
        d = a - b
        if _is_matrix(name, b) and float(b.norm()) > 0:
            relative_changes.append(float(d.norm() / b.norm()))
        if not torch.allclose(a, b, rtol=0, atol=atol):
            deltas[name] = d
    if not deltas:
        raise AdapterError("the two generators have identical weights: there is no adaptation to extract")
    relative = math.sqrt(sum(r * r for r in relative_changes) / max(len(relative_changes), 1))
    if relative > UNRELATED:
        raise AdapterError(
            f"the weights differ too much to be an adaptation of this base (relative change {relative:.2f}, "
            f"adaptations stay below {UNRELATED}; unrelated weights give about 1.4): give the generator it "
            "was adapted from as the base"
        )
    svd = {}
    for name, d in deltas.items():
        if _is_matrix(name, d):
            u, s, vh = torch.linalg.svd(d.reshape(d.shape[0], -1), full_matrices=False)
            svd[name] = (u, s, vh)
    return Shift(deltas, svd, relative, _metadata(base, adapted, fp, relative))


def _is_matrix(name: str, t: torch.Tensor) -> bool:
    return name.endswith("weight") and t.ndim >= 2


def _metadata(base: Generator, adapted: Generator, fp: str, relative: float) -> dict[str, Any]:
    run = adapted.metadata.get("adaptation") or {}
    meta: dict[str, Any] = {
        "base_fingerprint": fp,
        "base_config": base.config.to_dict(),
        "extracted_from": adapted.metadata.get("source_file", ""),
        "relative_change": round(relative, 6),
    }
    for k in ("direction", "clip", "steps"):
        if k in run:
            meta[k] = run[k]
    return meta


def image_error(
    base: Generator, adapter: Adapter, reference: torch.Tensor, seeds: tuple[int, ...] = ERROR_SEEDS
) -> float:
    """Mean |base + adapter - reference| over `seeds`; reference = the adapted generator's `render_seeds`."""
    images = render_seeds(apply_adapters(base, [(adapter, 1.0)], check_base=False), seeds)
    return float((images - reference).abs().mean())


def render_seeds(G: Generator, seeds: tuple[int, ...] = ERROR_SEEDS) -> torch.Tensor:  # [N, C, H, W]
    from ..sampling import sample

    with torch.no_grad():
        return sample(G, list(seeds), ERROR_TRUNCATION, "const")


def extract_adapter(
    base: Generator,
    adapted: Generator,
    rank: int | None = None,
    max_error: float | None = None,
    name: str = "",
    seeds: tuple[int, ...] = ERROR_SEEDS,
    atol: float = 0.0,
) -> Adapter:
    """An adapter that turns `base` into `adapted`.

    No rank and no max_error: the exact differences (kind delta). `rank`: factors of that rank where
    they pay, exact deltas for the rest. `max_error`: the smallest rank whose image error is at most
    that (ranks 1, 2, 4, ... until one is good enough, then bisection, which assumes the error falls
    with the rank); `rank` is then the highest rank tried. The adapter is named `name`, else after the
    adaptation's target prompt. The image error, when measured, is in its metadata.
    """
    shift = measure_shift(base, adapted, atol=atol)
    if rank is None and max_error is None:
        adapter = Adapter("delta", dict(shift.deltas), dict(shift.metadata))
    elif max_error is None:
        adapter = shift.adapter(rank)
    else:
        adapter = _smallest_good_rank(shift, base, render_seeds(adapted, seeds), max_error, rank, seeds)
    if name:
        adapter.metadata["name"] = name
    return adapter


def _smallest_good_rank(
    shift: Shift, base: Generator, reference: torch.Tensor, max_error: float, cap: int | None, seeds: tuple[int, ...]
) -> Adapter:
    if not max_error > 0:
        raise AdapterError(f"max_error must be a positive image error (e.g. 0.01), got {max_error}")
    top = min(cap or shift.full_rank, shift.full_rank)
    tried: dict[int, float] = {}  # rank -> image error (adapters are rebuilt, not kept: they can be large)

    def error(r: int) -> float:
        tried[r] = image_error(base, shift.adapter(r), reference, seeds)
        log.info("rank %d: image error %.5f", r, tried[r])
        return tried[r]

    low, r = 0, 1  # invariant: every rank <= low misses the target
    while error(r) > max_error and r < top:
        low, r = r, min(2 * r, top)
    if tried[r] <= max_error:
        high = r
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (low, mid) if error(mid) <= max_error else (mid, high)
        r = high
    else:
        log.warning("no rank up to %d reaches image error %g (best %.5f)", top, max_error, tried[r])
    adapter = shift.adapter(r)
    adapter.metadata["image_error"] = {
        "value": round(tried[r], 6),
        "target": max_error,
        "seeds": list(seeds),
        "truncation": ERROR_TRUNCATION,
        "metric": "mean |pixel difference| in [-1, 1]",
    }
    return adapter
