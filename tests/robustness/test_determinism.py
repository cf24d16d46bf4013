"""Same inputs and seed give the same bits on the CPU: sampling and a short adaptation, in one process
and across separate processes. (CUDA: see docs/determinism.md.)"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore")


def _digest(t: torch.Tensor | dict) -> str:
    h = hashlib.sha256()
    items = sorted(t.items()) if isinstance(t, dict) else [("", t)]
    for k, v in items:
        h.update(k.encode())
        h.update(v.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def models():
    """The tiny generator and micro CLIP, built from seeds (each process makes its own)."""
    import nada
    from nada.clip import load_clip
    from tests.clip_fixtures import write_micro_clip
    from tests.nodes.fixtures import make_tiny_generator

    G = make_tiny_generator(nada)
    folder = Path(tempfile.mkdtemp(prefix="nada-det-"))
    config, weights, _ = write_micro_clip(folder)
    clip = load_clip(config, weights=weights, name="micro")
    return G, clip


def digests(G=None, clip=None, seed: int = 0) -> dict[str, str]:
    """Hashes of: sampled images (const and random noise), an adaptation's weights and loss history."""
    from nada.adaptation import AdaptConfig, adapt
    from nada.directions import text_direction
    from nada.sampling import sample

    if G is None:
        G, clip = models()
    direction = text_direction(clip, "red circle", "blue square", templates="none")
    out = {
        "sample_const": _digest(sample(G, "0-3", 0.7, "const")),
        "sample_random": _digest(sample(G, "5,9", 1.0, "random")),
        "direction": _digest(dict(direction.vectors)),
    }
    for layers in ("all", "auto"):
        cfg = AdaptConfig(steps=3, batch=2, seed=seed, layers=layers, mixing=0.5, preview_count=0)
        G2 = adapt(G, clip, direction, cfg, device="cpu").generator
        out[f"adapt_{layers}"] = _digest(G2.state_dict())
        out[f"loss_{layers}"] = json.dumps(G2.metadata["adaptation"]["loss_history"])
        out[f"adapted_sample_{layers}"] = _digest(sample(G2, "0-1", 0.7, "const"))
    return out


def test_same_seed_same_bits_in_one_process():
    G, clip = models()
    a = digests(G, clip)
    b = digests(G, clip)
    assert a == b
    c = digests(G, clip, seed=1)
    assert c["adapt_all"] != a["adapt_all"] and c["sample_const"] == a["sample_const"]


def test_same_bits_across_processes():
    """Two fresh interpreters (same thread count) produce exactly what this process produces."""
    script = (
        "import json, torch; torch.set_num_threads(1); "
        "from tests.robustness.test_determinism import digests; print(json.dumps(digests()))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "random"}
    runs = []
    for _ in range(2):
        p = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert p.returncode == 0, p.stderr[-2000:]
        runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    here = digests()  # this process runs with one torch thread too (conftest)
    assert runs[0] == runs[1] == here
