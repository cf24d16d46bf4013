"""Seeds -> z -> w / W+ -> images; latent interpolation; weight blending between generators.

Seed -> z is a fixed, documented mapping so that "seed 7" is the same image in Python, the CLI, the
ComfyUI nodes and the adaptation previews, on every device:

    z = torch.randn(z_dim, generator=torch.Generator("cpu").manual_seed(seed))

(drawn on the CPU, in float32, then moved). With `noise_mode="random"` the per-layer noise maps of
seed N are drawn from the same CPU generator right after z, so they are reproducible too.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from .cpu_memory import reuse_freed_memory
from .errors import ConfigError

MAX_SEED = 2**64 - 1
RENDER_BATCH = 8  # images rendered at once (a chunk): bounds memory, and a cancel is honoured between chunks
ChunkProgress = Callable[[int, int], None]  # (done, total), called between chunks of work


def parse_seeds(spec: str | int | Iterable[int]) -> list[int]:
    """`"0-3,10"` -> [0, 1, 2, 3, 10]; an int or a list of ints passes through (validated)."""
    if isinstance(spec, int):
        seeds = [spec]
    elif isinstance(spec, str):
        seeds = []
        for part in spec.replace(" ", "").split(","):
            if not part:
                continue
            try:
                if "-" in part:
                    a, b = part.split("-", 1)
                    lo, hi = int(a), int(b)
                    if hi < lo:
                        raise ConfigError(f"seed range {part!r} runs backwards; write it as {hi}-{lo}")
                    if hi - lo >= 100_000:
                        raise ConfigError(f"seed range {part!r} has more than 100000 seeds")
                    seeds.extend(range(lo, hi + 1))
                else:
                    seeds.append(int(part))
            except ValueError as e:
                raise ConfigError(f"cannot read seeds {spec!r}: write them like '0-7' or '1,5,9'") from e
    else:
        seeds = [int(s) for s in spec]
    if not seeds:
        raise ConfigError(f"no seeds in {spec!r}: write them like '0-7' or '1,5,9'")
    for s in seeds:
        if not 0 <= s <= MAX_SEED:
            raise ConfigError(f"seed {s} is outside 0..2**64-1")
    return seeds


def _seed_rng(seed: int) -> torch.Generator:
    if not 0 <= int(seed) <= MAX_SEED:
        raise ConfigError(f"seed {seed} is outside 0..2**64-1")
    return torch.Generator(device="cpu").manual_seed(int(seed))


def seed_to_z(seed: int, z_dim: int) -> torch.Tensor:
    """The z of a seed: [z_dim] float32 on the CPU (see the module docstring)."""
    return torch.randn(z_dim, generator=_seed_rng(seed))


def seeds_to_z(seeds: Sequence[int], z_dim: int) -> torch.Tensor:
    """[len(seeds), z_dim] float32 on the CPU."""
    return torch.stack([seed_to_z(s, z_dim) for s in seeds])


def class_labels(G: nn.Module, batch: int, class_index: int | None) -> torch.Tensor | None:
    """One-hot labels for a conditional generator (None for an unconditional one)."""
    c_dim = G.config.c_dim
    if c_dim == 0:
        if class_index is not None:
            raise ConfigError("class_index was given but this generator is unconditional (c_dim = 0)")
        return None
    if class_index is None or not 0 <= class_index < c_dim:
        raise ConfigError(f"this generator is conditional: pass class_index in 0..{c_dim - 1}")
    c = torch.zeros(batch, c_dim, device=G.device)
    c[:, class_index] = 1
    return c


@torch.no_grad()
def z_to_w(
    G: nn.Module,
    z: torch.Tensor,  # [B, z_dim]
    truncation_psi: float = 1.0,
    truncation_cutoff: int | None = None,
    class_index: int | None = None,
) -> torch.Tensor:  # [B, num_ws, w_dim] (W+, every entry equal unless truncation_cutoff)
    """Map z to W+ with truncation toward the generator's w_avg."""
    c = class_labels(G, z.shape[0], class_index)
    return G.mapping(z.to(G.device), c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)


def seed_noise(G: nn.Module, seeds: Sequence[int]) -> list[torch.Tensor]:
    """The per-seed noise maps of `noise_mode="random"` (drawn after z from the seed's generator)."""
    per_seed = []
    for s in seeds:
        rng = _seed_rng(s)
        torch.randn(G.config.z_dim, generator=rng)  # z comes first from this stream
        per_seed.append(G.synthesis.make_noise(1, rng, device=G.device))
    return [torch.cat(maps) for maps in zip(*per_seed)]


@torch.no_grad()
def render(
    G: nn.Module,
    ws: torch.Tensor,  # [B, num_ws, w_dim]
    noise_mode: str = "const",
    seeds: Sequence[int] | None = None,  # for noise_mode="random": per-image noise of these seeds
    batch_size: int = RENDER_BATCH,
    progress: ChunkProgress | None = None,
) -> torch.Tensor:  # [B, C, H, W] float32 on the CPU, roughly in [-1, 1] (unclamped)
    """W+ -> images, in chunks of `batch_size`. `progress(done, total)` runs before the first chunk and
    after each one (images done so far); an exception it raises (a cancel) stops between chunks."""
    if noise_mode == "random" and seeds is not None and len(seeds) != ws.shape[0]:
        raise ConfigError(f"{len(seeds)} seeds for {ws.shape[0]} latents")
    out = []
    if progress is not None:
        progress(0, ws.shape[0])
    with reuse_freed_memory(G.device):
        for i in range(0, ws.shape[0], max(1, batch_size)):
            chunk = ws[i : i + batch_size].to(G.device)
            noise = None
            if noise_mode == "random":
                chunk_seeds = seeds[i : i + batch_size] if seeds is not None else range(i, i + chunk.shape[0])
                noise = seed_noise(G, chunk_seeds)
            out.append(G.synthesis(chunk, noise_mode=noise_mode, noise=noise).float().cpu())
            if progress is not None:
                progress(i + chunk.shape[0], ws.shape[0])
    return torch.cat(out)


def sample(
    G: nn.Module,
    seeds: str | int | Sequence[int],
    truncation_psi: float = 0.7,
    noise_mode: str = "const",
    truncation_cutoff: int | None = None,
    class_index: int | None = None,
    batch_size: int = RENDER_BATCH,
    progress: ChunkProgress | None = None,
) -> torch.Tensor:  # [B, C, H, W] float32 on the CPU, roughly in [-1, 1] (unclamped)
    """Images of the given seeds. truncation_psi 0.7 is the official preview default. `progress`: see `render`."""
    seed_list = parse_seeds(seeds)
    z = seeds_to_z(seed_list, G.config.z_dim)
    ws = z_to_w(G, z, truncation_psi, truncation_cutoff, class_index)
    return render(G, ws, noise_mode=noise_mode, seeds=seed_list, batch_size=batch_size, progress=progress)


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    return a + (b - a) * t


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation of the directions over the last dim, with linearly interpolated norms.

    This keeps Gaussian z at a typical radius (a straight line between two z passes near the
    origin, where the mapping's inputs are atypical). Falls back to lerp for (anti)parallel vectors.
    """
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = a / na.clamp_min(eps), b / nb.clamp_min(eps)
    cos = (ua * ub).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    theta = torch.acos(cos)
    sin = torch.sin(theta)
    safe = sin.abs() > 1e-6
    s = torch.where(safe, sin, torch.ones_like(sin))
    wa = torch.where(safe, torch.sin((1 - t) * theta) / s, torch.full_like(sin, 1 - t))
    wb = torch.where(safe, torch.sin(t * theta) / s, torch.full_like(sin, t))
    direction = wa * ua + wb * ub
    direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(eps)
    return direction * lerp(na, nb, t)


def interpolate(
    keyframes: torch.Tensor,  # [K, ...] latents (K >= 2): z [K, z_dim] or w [K, num_ws, w_dim]
    frames: int,
    mode: str = "lerp",  # "lerp" (for W / W+) or "slerp" (for Z)
    loop: bool = False,  # also go from the last keyframe back to the first
) -> torch.Tensor:  # [frames, ...]
    """`frames` latents evenly spaced along the path through the keyframes (ends included)."""
    if mode not in ("lerp", "slerp"):
        raise ConfigError(f"interpolation mode must be 'lerp' (W) or 'slerp' (Z), got {mode!r}")
    if keyframes.shape[0] < 2:
        raise ConfigError("interpolation needs at least two keyframes")
    if frames < 2:
        raise ConfigError(f"frames must be at least 2, got {frames}")
    points = torch.cat([keyframes, keyframes[:1]]) if loop else keyframes
    segments = points.shape[0] - 1
    fn = lerp if mode == "lerp" else slerp
    out = []
    # With loop, the last frame would repeat the first, so the path is divided into `frames` steps.
    steps = frames if loop else frames - 1
    for f in range(frames):
        pos = f * segments / steps
        seg = min(int(math.floor(pos)), segments - 1)
        t = pos - seg
        a, b = points[seg], points[seg + 1]
        if mode == "slerp":
            out.append(fn(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]), t).reshape(a.shape))
        else:
            out.append(fn(a, b, t))
    return torch.stack(out)


def blend_generators(G_a: nn.Module, G_b: nn.Module, alpha: float) -> nn.Module:
    """A new generator whose parameters are lerp(G_a, G_b, alpha); buffers come from G_a.

    alpha 0 gives G_a's parameters exactly, 1 gives G_b's exactly; values outside [0, 1]
    extrapolate (e.g. 1.5 exaggerates an adaptation). The configs must be equal. Neither input
    is modified; the result lives on G_a's device, in eval mode with gradients off.
    """
    if G_a.config != G_b.config:
        raise ConfigError(
            "cannot blend generators with different architectures (configs differ); blend a generator "
            "only with one adapted from it"
        )
    pa, pb = dict(G_a.named_parameters()), dict(G_b.named_parameters())
    if pa.keys() != pb.keys() or any(pa[k].shape != pb[k].shape for k in pa):
        raise ConfigError("cannot blend: the generators' parameters differ in names or shapes")
    alpha = float(alpha)
    if not math.isfinite(alpha):
        raise ConfigError(f"alpha must be a finite number, got {alpha}")
    with torch.inference_mode(False), torch.no_grad():
        out = copy.deepcopy(G_a)
        for name, p in out.named_parameters():
            p.copy_(torch.lerp(pa[name].detach(), pb[name].detach().to(p.device, p.dtype), alpha))
    out.eval().requires_grad_(False)
    out.metadata = dict(getattr(G_a, "metadata", {}))
    out.metadata["blend"] = {
        "alpha": alpha,
        "a": _provenance(G_a),
        "b": _provenance(G_b),
    }
    return out


def _provenance(G: nn.Module) -> dict:
    meta = getattr(G, "metadata", {}) or {}
    return {k: meta[k] for k in ("name", "sha256", "source_sha256", "prompts") if k in meta}
