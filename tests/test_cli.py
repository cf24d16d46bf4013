"""`python -m nada`: sample and adapt end to end on small models the test writes itself."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from nada.adaptation import AdaptProgress
from nada.cli import build_parser, main
from nada.commands.common import ProgressLine
from tests.adapt_fixtures import make_generator
from tests.clip_fixtures import write_micro_clip

ROOT = Path(__file__).resolve().parent.parent


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


def adapt_parser():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices["adapt"]


def test_adapt_options_are_generated_from_the_config_fields():
    from nada.adaptation import AdaptConfig
    from nada.commands.adapt import NOT_ON_CLI
    from nada.commands.config_options import flag

    by_dest = {a.dest: a for a in adapt_parser()._actions}
    for name, (default, opt) in AdaptConfig.options().items():
        if name in NOT_ON_CLI:
            assert name not in by_dest
            continue
        action = by_dest[name]
        assert flag(name) in action.option_strings and opt.help in action.help
        if opt.kind != "checkpointing":
            assert action.default == default, name
    assert "--k" in by_dest["auto_k"].option_strings  # the flag of the first release still works


def test_config_from_args_round_trips_and_names_the_option_in_errors(tmp_path):
    from nada.adaptation import AdaptConfig
    from nada.commands.config_options import config_from_args
    from nada.errors import ConfigError

    base = ["adapt", "--generator", "g", "--out", "o"]
    options = "--layers b8,b16 --k 3 --gradient-checkpointing off --lambda-manifold 0.5 --select-every 4"
    cfg = config_from_args(adapt_parser().parse_args(base[1:] + options.split()), AdaptConfig)
    expected = AdaptConfig(
        layers=("b8", "b16"), auto_k=3, gradient_checkpointing=False, lambda_manifold=0.5, select_every=4
    )
    assert cfg == expected
    bad = adapt_parser().parse_args(base[1:] + ["--lr", "-1"])
    with pytest.raises(ConfigError, match=r"^--lr must be a finite number > 0") as info:
        config_from_args(bad, AdaptConfig)
    assert info.value.field == "lr"


def test_adapt_with_runs_dir_reuses_and_extends_a_run(tmp_path, generator_file, formats, capsys):
    path, _ = generator_file
    config, weights, _ = write_micro_clip(tmp_path / "clip")
    runs = tmp_path / "runs"

    def adapt(steps, out):
        return main(["adapt", "--generator", str(path), "--clip", str(config), "--pretrained", str(weights),
                     "--source", "red", "--target", "blue", "--templates", "none", "--steps", str(steps),
                     "--device", "cpu", "--out", str(tmp_path / out), "--runs-dir", str(runs)])  # fmt: skip

    assert adapt(2, "a.safetensors") == 0
    assert adapt(2, "b.safetensors") == 0 and "reused" in capsys.readouterr().out
    assert adapt(3, "c.safetensors") == 0 and "continued from step 2" in capsys.readouterr().out
    saved_steps = sorted(p.name.split("_step")[1] for p in runs.glob("*.safetensors"))
    assert saved_steps == ["000002.safetensors", "000003.safetensors"]
    a, b = formats.load_generator(tmp_path / "a.safetensors"), formats.load_generator(tmp_path / "b.safetensors")
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


@pytest.mark.slow  # two fresh interpreters importing torch and open_clip: ~25 s
def test_ctrl_c_stops_after_the_step_in_flight_and_a_later_run_continues(tmp_path, generator_file, formats):
    import signal

    path, _ = generator_file
    config, weights, _ = write_micro_clip(tmp_path / "clip")
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "nada", "adapt", "--generator", str(path), "--clip", str(config),
               "--pretrained", str(weights), "--source", "red", "--target", "blue", "--templates", "none",
               "--steps", "2000", "--device", "cpu", "--out", str(tmp_path / "a.safetensors"),
               "--runs-dir", str(runs)]  # fmt: skip
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    for line in proc.stderr:  # the first progress line: step 1 is done
        if line.startswith("step "):
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, rest
    assert "run the same command to continue" in rest
    (partial,) = runs.glob("*-partial.safetensors")
    stopped_at = int(partial.name.split("_step")[1][:6])
    assert 1 <= stopped_at < 2000 and partial.with_suffix(".state").is_file()
    G = formats.load_generator(partial)
    assert G.metadata["adaptation"]["interrupted"] and G.metadata["adaptation"]["steps"] == stopped_at
    command[command.index("2000")] = str(stopped_at + 1)
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0 and f"continued from step {stopped_at}" in done.stdout, done.stderr
