"""Encoder files that are damaged, hostile or of another kind are refused with a clear FormatError."""

from __future__ import annotations

import os

import pytest
import torch

import nada
from nada.errors import FormatError
from tests.inversion.encoder_checkpoints import make_decoder, write_checkpoint
from tests.stylegan2.checkpoint_writers import rosinality_state_dict


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("good") / "e4e.pt", "Encoder4Editing", resolution=8)


def _rewrite(good, path, change):
    ckpt = torch.load(good, weights_only=True)
    change(ckpt)
    torch.save(ckpt, path)
    return path


class _RunsAShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_file_that_asks_to_run_code_is_refused_and_nothing_runs(good, tmp_path):
    marker = tmp_path / "executed"
    path = _rewrite(good, tmp_path / "hostile.pt", lambda c: c["opts"].update(exp_dir=_RunsAShellCommand(marker)))
    with pytest.raises(FormatError, match="refused: it asks to load .*system"):
        nada.load_encoder(path)
    assert not marker.exists()


def test_truncated_and_empty_files_are_refused(good, tmp_path):
    data = good.read_bytes()
    for name, cut in [("half.pt", data[: len(data) // 2]), ("head.pt", data[:100]), ("empty.pt", b"")]:
        (tmp_path / name).write_bytes(cut)
        with pytest.raises(FormatError, match="truncated|damaged|empty|not a PyTorch checkpoint"):
            nada.load_encoder(tmp_path / name)
    with pytest.raises(FormatError, match="does not exist"):
        nada.load_encoder(tmp_path / "missing.pt")


def test_a_generator_checkpoint_is_not_an_encoder(tmp_path):
    path = tmp_path / "ffhq.pt"
    torch.save({"g_ema": rosinality_state_dict(make_decoder(8, seed=0))}, path)
    with pytest.raises(FormatError, match="not a pSp/e4e/ReStyle encoder checkpoint.*load_generator"):
        nada.load_encoder(path)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.pop("opts"), "no training options"),
        (lambda c: c["opts"].update(encoder_type="FancyNewEncoder"), "not supported"),
        (lambda c: c["opts"].update(dataset_type="cars_encode"), "cars encoder"),
        (lambda c: c.pop("latent_avg"), "no 'latent_avg'"),
        (lambda c: c.update(latent_avg=torch.zeros(3, 7)), "latent_avg has shape"),
        (
            lambda c: c["state_dict"].update({"encoder.input_layer.0.weight": torch.zeros(64, 1, 3, 3)}),
            "takes 3 input channels but this one takes 1",
        ),
        (lambda c: c["state_dict"].pop("encoder.styles.3.linear.weight"), "missing"),
        (
            lambda c: c["state_dict"].__setitem__("encoder.styles.0.linear.bias", torch.full((512,), float("nan"))),
            "NaN or Inf",
        ),
        (lambda c: [c["state_dict"].pop(k) for k in list(c["state_dict"]) if k.startswith("decoder.")], "no 'decoder"),
        (
            lambda c: [c["state_dict"].pop(k) for k in list(c["state_dict"]) if k.startswith("decoder.convs.")],
            "decoder stored with the encoder|makes 4 x 512 W\\+ codes but its decoder",
        ),
    ],
)
def test_inconsistent_files_name_the_problem(good, tmp_path, change, message):
    with pytest.raises(FormatError, match=message):
        nada.load_encoder(_rewrite(good, tmp_path / "bad.pt", change))
