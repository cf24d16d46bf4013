"""Which parts of the generator an adaptation trains: layer groups, presets and adaptive top-k selection.

A *unit* is the name of a trainable piece of the synthesis network, as `Generator.named_modules()` /
`named_parameters()` spell it: `synthesis.b4.const` (the learned 4x4 input), `synthesis.b{res}.conv0`
(the upsampling conv of a block, res >= 8), `synthesis.b{res}.conv1`, `synthesis.b{res}.torgb`, and
`synthesis.b{res}.skip` (resnet shortcut). Training a conv unit trains everything inside it: the style
affine, the weight, the bias and the noise strength (as the official code does for SG2). The mapping
network is never trained: w comes from the frozen generator, so it would get no gradient anyway.

Presets are the official `--phase` values (nada-spec 2.10), rewritten from rosinality's list indices
to block resolutions so that the same name means the same layers at every resolution:

| preset           | official phase           | units                                                  |
|------------------|--------------------------|--------------------------------------------------------|
| `all` (default)  | None / unknown phase     | const + every conv0/conv1 (+ resnet skip); no ToRGB    |
| `all_with_torgb` | `all` (minus the mapping)| `all` + every ToRGB                                    |
| `texture`        | `texture` = convs[2:10]  | const, b4.conv1, blocks 16..128                        |
| `shape`          | `shape` = convs[0:2]     | const, b4.conv1, block 8                               |
| `shape_expanded` | convs[0:3]               | const, b4.conv1, block 8, b16.conv0                    |
| `no_fine`        | convs[:10]               | const, b4.conv1, blocks 8..128                         |

rosinality's `convs[2j]` / `convs[2j+1]` are the conv0 / conv1 of the block at 8 * 2**j, so these
tables are equal at 256, 512 and 1024 px. Blocks a generator does not have are simply absent (a 64 px
generator's `texture` is const, b4.conv1 and blocks 16..64).

StyleGAN3 (the official code offers no presets for it): units are `synthesis.input` (the Fourier
features: their channel mix and the affine that turns w[0] into a rotation/translation) and the
layers `synthesis.L{i}_{size}_{channels}`. Each layer counts at the StyleGAN2 resolution with the same
frequency content (the power of two at or above twice its cutoff), the input as the `const`, the first
layer at a resolution as `conv0`, so the same rules give the same band of detail
(`G.synthesis.units()`). At 256 px (NVIDIA's 14 layers):

| preset           | StyleGAN3-T/R 256 px units                 |
|------------------|--------------------------------------------|
| `all` (default)  | input, L0 .. L13 (no ToRGB L14)            |
| `all_with_torgb` | `all` + L14                                |
| `texture`        | input, L0, L3 .. L10 (resolutions 16..128) |
| `shape`          | input, L0, L1, L2 (resolutions 4..8)       |
| `shape_expanded` | `shape` + L3                               |
| `no_fine`        | input, L0 .. L10                           |

Adaptive selection needs no table: W+ index 0 is read by the input, index i by layer L{i-1}.

Adaptive selection (`select_w_indices`) follows nada-spec 2.9 with one deliberate fix. The official
code maps W+ index 0 to conv1, 1 to to_rgb1 and i >= 2 to convs[i - 2], but convs[i - 2] actually
reads W+ index i - 1: its mapping is shifted by one. Here each index selects the modules that really
read it in the forward pass (`G.synthesis.w_index_consumers()`), restricted to the candidate units
(by default `all`, so no ToRGB, like the official code apart from its to_rgb1 quirk). Units that read
no W+ index (the const, the resnet skip) are never trained in adaptive mode, as in the official code.
An index none of whose consumers is a candidate (e.g. the last one, read only by the final ToRGB)
cannot be selected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .errors import ConfigError

AUTO = "auto"

# preset -> rules (first block resolution, last block resolution or None = up to the output, kinds).
_ALL_KINDS = ("const", "conv0", "conv1", "skip")
_PRESET_RULES: dict[str, tuple[tuple[int, int | None, tuple[str, ...]], ...]] = {
    "all": ((4, None, _ALL_KINDS),),
    "all_with_torgb": ((4, None, _ALL_KINDS + ("torgb",)),),
    "texture": ((4, 4, _ALL_KINDS), (16, 128, _ALL_KINDS)),
    "shape": ((4, 8, _ALL_KINDS),),
    "shape_expanded": ((4, 8, _ALL_KINDS), (16, 16, ("conv0", "skip"))),
    "no_fine": ((4, 128, _ALL_KINDS),),
}
PRESETS: tuple[str, ...] = tuple(_PRESET_RULES)


def all_units(G: nn.Module) -> list[str]:
    """Every trainable unit of the synthesis network, in forward order."""
    params = dict(G.named_parameters())
    return [full for full, _, _ in G.synthesis.units()
            if full in params or any(p.startswith(full + ".") for p in params)]  # fmt: skip


def preset_units(G: nn.Module, preset: str) -> list[str]:
    """The units of a named preset for this generator."""
    if preset not in _PRESET_RULES:
        raise ConfigError(f"unknown layer preset {preset!r}; choose one of {', '.join(PRESETS)} or 'auto'")
    res_kind = {full: (res, kind) for full, kind, res in G.synthesis.units()}
    out = []
    for unit in all_units(G):
        res, kind = res_kind[unit]
        for lo, hi, kinds in _PRESET_RULES[preset]:
            if kind in kinds and res >= lo and (hi is None or res <= hi):
                out.append(unit)
                break
    return out


def resolve_units(G: nn.Module, layers: str | Sequence[str]) -> list[str]:
    """Units for `layers`: a preset name, or a list of unit names / block names (`b8`, `synthesis.b8`).

    `"auto"` resolves to the candidates of adaptive selection (the `all` preset).
    """
    if isinstance(layers, str):
        return preset_units(G, "all" if layers == AUTO else layers)
    units = all_units(G)
    chosen: list[str] = []
    for item in layers:
        key = item if item.startswith("synthesis.") else f"synthesis.{item}"
        match = [u for u in units if u == key or u.startswith(key + ".")]
        if not match:
            raise ConfigError(
                f"layer {item!r} is not part of this generator's synthesis network; use a preset "
                f"({', '.join(PRESETS)}), 'auto', or names such as 'b8', 'b8.conv0', 'b4.const' (StyleGAN2) "
                "or 'input', 'L3_52_512' (StyleGAN3)"
            )
        chosen.extend(u for u in match if u not in chosen)
    return [u for u in units if u in chosen]


def unit_parameters(G: nn.Module, units: Sequence[str]) -> dict[str, nn.Parameter]:
    """All parameters (by full name) inside the given units."""
    out = {}
    for name, p in G.named_parameters():
        if any(name == u or name.startswith(u + ".") for u in units):
            out[name] = p
    return out


def w_index_units(G: nn.Module, candidates: Sequence[str], mapping: str = "consumers") -> dict[int, list[str]]:
    """For each W+ index, the candidate units it selects.

    mapping "consumers": the units that read it (our corrected mapping, see module doc). "official"
    (StyleGAN2 only): the official code's list [conv1, to_rgb1] + convs, index i -> item i, which is
    one index ahead of the conv that reads it (b8.conv0 reads index 1 but is chosen by index 2) and
    can pick the first ToRGB. Its length is num_ws, so every index maps to exactly one unit.
    """
    cand = set(candidates)
    consumers = G.synthesis.w_index_consumers()
    if mapping == "official":
        flat = [m for i in sorted(consumers) for m in consumers[i]]  # forward order
        convs = [m for m in flat if not m.endswith(".torgb")]
        torgbs = [m for m in flat if m.endswith(".torgb")]
        if not torgbs or len(convs) + 1 != len(consumers):
            raise ConfigError("w_mapping='official' exists for StyleGAN2 generators only; use w_mapping='consumers'")
        order = [convs[0], torgbs[0], *convs[1:]]
        return {i: [m] if m in cand else [] for i, m in enumerate(order)}
    return {i: [m for m in mods if m in cand] for i, mods in consumers.items()}


@dataclasses.dataclass(frozen=True)
class Selection:
    """One run of adaptive selection."""

    indices: tuple[int, ...]  # chosen W+ indices, ascending
    units: tuple[str, ...]  # the units they map to, in forward order
    scores: tuple[float, ...]  # movement score of every W+ index (the ranking criterion)


def select_w_indices(
    G_train: nn.Module,
    ws: torch.Tensor,  # [B, num_ws, w_dim] from the frozen mapping, truncation 1
    noise: list[torch.Tensor],  # one map per conv layer, shared with nothing else
    loss_fn: Callable[[torch.Tensor], torch.Tensor],  # images [B, C, H, W] -> scalar (the global loss)
    k: int,
    candidates: Sequence[str],
    lr: float = 0.01,
    iters: int = 1,
    synthesize: Callable[[torch.Tensor, list[torch.Tensor]], torch.Tensor] | None = None,
    mapping: str = "consumers",
    chunk: int | None = None,
) -> Selection:
    """nada-spec 2.9: move W+ codes with `iters` SGD steps on `loss_fn`; pick the k most moved indices.

    The score of index i is mean |w_i - w_i(init)| over batch and channels. Only the W+ codes get
    gradients (the generator's parameter gradients are never computed here), so no parameter
    gradient is left behind for the main step. Ties are broken toward the lower index so the
    result does not depend on `topk`'s tie order. `synthesize(ws, noise)` renders with the trainable
    weights (default `G_train.synthesis`; a parameterised run passes its own). `mapping`: see
    `w_index_units`.

    `chunk`: latents per forward/backward pass (None = the whole batch at once). `loss_fn` must be a
    mean of per-image terms (as the global loss is), and each image depends only on its own latent
    and noise, so each latent's SGD path is its own: a chunk's loss is weighted by its share of the
    batch and the chunks' results are the whole batch's up to float rounding, with the activation
    memory of one chunk.
    """
    index_units = w_index_units(G_train, candidates, mapping)
    eligible = [i for i, units in index_units.items() if units]
    if not 1 <= k <= len(eligible):
        raise ConfigError(
            f"auto_k must be in 1..{len(eligible)} for this generator and layer set (W+ indices whose "
            f"layers can be trained), got {k}"
        )
    if synthesize is None:

        def synthesize(w_plus: torch.Tensor, maps: list[torch.Tensor]) -> torch.Tensor:
            return G_train.synthesis(w_plus, noise=maps)

    w_init = ws.detach()
    batch = w_init.shape[0]
    size = batch if chunk is None else chunk
    if size < 1:
        raise ConfigError(f"the selection chunk must be at least 1 latent, got {chunk}")
    moved = []  # per chunk: w - w_init [n, num_ws, w_dim]
    for start in range(0, batch, size):
        w = w_init[start : start + size].clone().requires_grad_(True)
        maps = [n[start : start + size] for n in noise]
        share = w.shape[0] / batch  # exactly 1.0 for one chunk: the unchunked result keeps its bits
        for _ in range(iters):
            loss = loss_fn(synthesize(w, maps)) * share
            if not torch.isfinite(loss):
                raise FloatingPointError(f"layer-selection loss is {loss.item()}")
            (grad,) = torch.autograd.grad(loss, [w])
            with torch.no_grad():
                w -= lr * grad
        moved.append(w.detach() - w_init[start : start + size])
    scores = torch.cat(moved).abs().mean(dim=(0, 2)).float().cpu().tolist()
    ranked = sorted(eligible, key=lambda i: (-scores[i], i))
    indices = tuple(sorted(ranked[:k]))
    chosen = {u for i in indices for u in index_units[i]}
    units = tuple(u for u in all_units(G_train) if u in chosen)
    return Selection(indices=indices, units=units, scores=tuple(scores))


def default_auto_k(num_ws: int) -> int:
    """The official Colab's "improve shape" k: int(2 * num_ws / 3), i.e. 9, 10, 12 at 256, 512, 1024."""
    return max(1, int(2 * num_ws / 3))
