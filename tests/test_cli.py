"""`python -m nada`: sample and adapt end to end on small models the test writes itself."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
import torch
from PIL import Image

from nada.adapt import AdaptProgress
from nada.cli import ProgressLine, build_parser, main
from tests.adapt_fixtures import make_generator
from tests.clip_fixtures import write_micro_clip


@pytest.fixture
def formats():
    return pytest.importorskip("nada.stylegan2.formats", reason="the generator formats are not in this checkout")


@pytest.fixture
def generator_file(tmp_path, formats):
    G = make_generator(seed=0, resolution=16)
    path = tmp_path / "g.safetensors"
    formats.save_generator(G, path)
    return path, G


def test_subcommands_are_registered():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"adapt", "sample"} <= set(sub.choices)


def test_sample_writes_a_grid_of_the_seeds(tmp_path, generator_file):
    path, G = generator_file
    out = tmp_path / "grid.png"
    assert main(["sample", "--generator", str(path), "--seeds", "0-3", "--nrow", "2", "--out", str(out),
                 "--device", "cpu"]) == 0  # fmt: skip
    img = Image.open(out)
    assert img.size == (2 * 16 + 2, 2 * 16 + 2)
    # Refuses to overwrite without --overwrite (exit code 2, a message naming the fix).
    assert main(["sample", "--generator", str(path), "--out", str(out), "--device", "cpu"]) == 2


def test_adapt_writes_the_generator_and_a_before_after_grid(tmp_path, generator_file, formats):
    path, G = generator_file
    config, weights, _ = write_micro_clip(tmp_path / "clip")
    out = tmp_path / "adapted.safetensors"
    code = main([
        "adapt", "--generator", str(path), "--clip", str(config), "--pretrained", str(weights),
        "--source", "red", "--target", "blue", "--templates", "none", "--steps", "2", "--layers", "b8,b16",
        "--device", "cpu", "--out", str(out), "--grid-seeds", "0-2",
    ])  # fmt: skip
    assert code == 0
    G2 = formats.load_generator(out)
    assert G2.metadata["adaptation"]["steps"] == 2
    assert G2.metadata["adaptation"]["direction"]["target"] == "blue"
    changed = [k for k, v in G2.state_dict().items() if not torch.equal(v, G.state_dict()[k])]
    assert changed and all(k.startswith(("synthesis.b8.", "synthesis.b16.")) for k in changed)
    grid = Image.open(out.with_suffix(".png"))
    assert grid.size == (3 * 16 + 4, 2 * 16 + 2)  # top row before, bottom row after


def test_adapt_without_a_direction_is_a_clear_error(tmp_path, generator_file, capsys):
    path, _ = generator_file
    config, weights, _ = write_micro_clip(tmp_path / "clip")
    code = main(["adapt", "--generator", str(path), "--clip", str(config), "--pretrained", str(weights),
                 "--target", "blue", "--out", str(tmp_path / "x.safetensors"), "--device", "cpu"])  # fmt: skip
    assert code == 2 and "--source and --target" in capsys.readouterr().err


def test_progress_line_plain_text():
    buf = io.StringIO()
    line = ProgressLine(10, stream=buf)
    for step in range(1, 11):
        line(AdaptProgress(step, 10, 0.5, {"direction": 0.5}, 2.0, step / 2, ("synthesis.b8.conv0",), None))
    lines = buf.getvalue().splitlines()
    assert lines[-1].startswith("step 10/10  loss 0.5000  2.00 it/s")
    assert 2 <= len(lines) <= 10


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "nada", "--help"], capture_output=True, text=True, check=True)
    assert "adapt" in out.stdout and "sample" in out.stdout
