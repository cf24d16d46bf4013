"""bench/gpu_selfcheck.py in its CPU quick mode: the script a CUDA user runs has run here end to end, and
its result files hold what an issue needs (issue 13)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "gpu_selfcheck.py"


def test_quick_mode_runs_on_the_cpu_and_writes_an_attachable_report(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_selfcheck", SCRIPT)
    selfcheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(selfcheck)
    out = tmp_path / "report"
    assert selfcheck.main(["--device", "cpu", "--quick", "--resolutions", "32", "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert set(report["checks"]) == set(selfcheck.CHECKS)
    assert all(v["ok"] for v in report["checks"].values()), report["checks"]
    # On the CPU the device paths are the CPU paths: exactly equal, except the deliberately lower precisions.
    assert report["checks"]["images const noise"]["value"] == 0.0
    assert all(
        v["value"] == 0.0 for k, v in report["checks"].items() if k.startswith("adaptation step") and "loss" in k
    )
    assert report["checks"]["half CLIP embeddings"]["value"] < 1.0  # bf16 really ran
    rows = report["performance"]
    assert [(r["clips"], r["checkpointing"]) for r in rows] == [(1, False), (1, True), (2, False), (2, True)]
    assert all(r["s_per_step"] > 0 and r["estimate_mb"] > 0 for r in rows)
    md = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "| half CLIP embeddings |" in md and md.count("| 32 |") == 4
