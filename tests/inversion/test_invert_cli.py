"""`python -m nada invert` (projector path): PNG in, W+ latent file + reconstruction PNG out, nothing overwritten."""

from __future__ import annotations

import argparse
import json
import re

import pytest
import torch
from PIL import Image

from nada.commands import invert as cli
from nada.demo.run import DEMO_GENERATOR
from nada.errors import NadaError
from nada.images import to_pil
from nada.stylegan2.formats import load_generator

torch.set_num_threads(min(2, torch.get_num_threads()))


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m nada")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["invert", *argv])


@pytest.fixture(scope="module")
def demo_png(tmp_path_factory):
    """A demo-world image rendered from a latent no other test uses, as a PNG."""
    G = load_generator(DEMO_GENERATOR)
    z = torch.randn(1, G.config.z_dim, generator=torch.Generator().manual_seed(777001))
    with torch.no_grad():
        x = G(z, noise_mode="const")
    path = tmp_path_factory.mktemp("photos") / "shape.png"
    to_pil(x)[0].save(path)
    return path


def test_projects_a_png_and_writes_the_latent_and_the_reconstruction(demo_png, tmp_path, capsys):
    path = demo_png
    args = parse([str(path), "--generator", str(DEMO_GENERATOR), "--steps", "60", "--out", str(tmp_path)])
    assert args.run(args) == 0
    out = capsys.readouterr().out
    m = re.search(r"PSNR ([0-9.]+) dB", out)
    assert m and float(m.group(1)) > 30, out  # 8-bit PNG target; measured 36.4 dB
    ws = torch.load(tmp_path / "shape.pt", weights_only=True)
    assert ws.shape == (1, 8, 64)
    recon = Image.open(tmp_path / "shape_reconstruction.png")
    assert recon.size == (32, 32)
    # Again into the same folder: new names, the first files stay.
    args = parse(
        [
            str(path.parent),
            "--generator",
            str(DEMO_GENERATOR),
            "--steps",
            "1",
            "--out",
            str(tmp_path),
            "--format",
            "safetensors",
        ]
    )
    assert args.run(args) == 0
    assert torch.equal(torch.load(tmp_path / "shape.pt", weights_only=True), ws)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "shape.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["nada_inversion"])
        assert f.get_tensor("ws").shape == (1, 8, 64)
    assert meta["steps"] == 1 and meta["loss"] == "pixels" and meta["image"] == "shape.png"
    assert (tmp_path / "shape_reconstruction_00001.png").is_file()


def test_grayscale_png_is_converted(demo_png, tmp_path, caplog):
    path = demo_png
    gray = tmp_path / "gray.png"
    Image.open(path).convert("L").save(gray)
    args = parse([str(gray), "--generator", str(DEMO_GENERATOR), "--steps", "2", "--out", str(tmp_path / "o")])
    assert args.run(args) == 0
    assert "converted to RGB" in caplog.text


def test_usage_errors_name_the_fix(demo_png, tmp_path):
    path = demo_png
    with pytest.raises(NadaError, match="--generator"):
        cli.run(parse([str(path)]))
    with pytest.raises(NadaError, match="give --vgg16 too"):
        cli.run(parse([str(path), "--generator", str(DEMO_GENERATOR), "--lpips", "vgg.pth"]))
    with pytest.raises(NadaError, match="neither an image file nor a folder"):
        cli.run(parse([str(tmp_path / "missing.png"), "--generator", str(DEMO_GENERATOR)]))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(NadaError, match="cannot read"):
        cli.run(parse([str(broken), "--generator", str(DEMO_GENERATOR), "--steps", "1"]))


def test_encoder_then_projector_refines_the_encoders_latent(tmp_path, capsys):
    """--encoder alone writes the encoder's W+; --steps on top refines it (the decoder comes from the file)."""
    from tests.inversion.encoder_checkpoints import write_checkpoint

    ckpt = write_checkpoint(tmp_path / "e4e.pt", resolution=16)
    G = load_generator(ckpt)
    with torch.no_grad():
        x = G(torch.randn(1, G.config.z_dim, generator=torch.Generator().manual_seed(4)), noise_mode="const")
    photo = tmp_path / "photo.png"
    to_pil(x)[0].save(photo)
    args = parse([str(photo), "--encoder", str(ckpt), "--out", str(tmp_path / "out")])
    assert args.run(args) == 0
    args = parse([str(photo), "--encoder", str(ckpt), "--steps", "30", "--out", str(tmp_path / "out")])
    assert args.run(args) == 0
    out = capsys.readouterr().out
    encoder_only, refined = (float(v) for v in re.findall(r"PSNR ([0-9.]+) dB", out))
    assert "photo.png: encoder;" in out and "encoder + 30 projector steps" in out
    assert refined > encoder_only + 1, out
    assert torch.load(tmp_path / "out" / "photo.pt", weights_only=True).shape == (1, G.num_ws, 512)
