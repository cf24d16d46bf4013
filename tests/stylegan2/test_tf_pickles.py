"""TensorFlow StyleGAN2 pickles as TensorFlow wrote them: numpy scalars for 0-d variables, the
(G, D, Gs) tuple, numpy 1.x names, the protocols of Python 3.6/3.7 (3 by default, 4 = HIGHEST)."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
import torch

from nada.errors import FormatError
from nada.stylegan2.formats import load_generator
from nada.stylegan2.formats.safe_pickle import safe_load
from tests.stylegan2 import checkpoint_writers as cw
from tests.stylegan2.format_fixtures import make_generator


def render(G, seed: int = 1) -> torch.Tensor:
    z = torch.randn(2, G.config.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return G(z, truncation_psi=0.7, noise_mode="const")


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_tf_pickle_with_numpy_scalars_loads_gs(tmp_path, protocol):
    G = make_generator()
    data = cw.tf_pickle_bytes(G, tmp_path / "executed", protocol=protocol)
    assert b"numpy.core.multiarray" in data and b"numpy._core" not in data  # the names TF-era numpy wrote
    raw = safe_load(data)
    noise_strength = dict(raw[2].components["synthesis"].variables)["8x8/Conv0_up/noise_strength"]
    assert type(noise_strength) is np.float32  # stored as TF's session returned it
    path = tmp_path / "network-snapshot.pkl"
    path.write_bytes(data)
    H = load_generator(path)
    assert not (tmp_path / "executed").exists()
    assert H.metadata["nvidia"]["tf_networks"] == ["G", "D", "Gs"]
    # Gs, not the trained G (whose values the writer shifted by 0.5)
    torch.testing.assert_close(H.synthesis.b8.conv0.noise_strength, G.synthesis.b8.conv0.noise_strength)
    torch.testing.assert_close(render(H), render(G), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "name, value",
    [("8x8/Conv0_up/noise_strength", "0.1"), ("8x8/Conv1/mod_bias", np.array(["a", "b"])),
     ("16x16/ToRGB/weight", None), ("noise2", np.bool_(True))],
)  # fmt: skip
def test_bad_tf_variable_is_named_in_the_error(tmp_path, name, value):
    path = tmp_path / "bad.pkl"
    path.write_bytes(cw.tf_pickle_bytes(make_generator(), tmp_path / "executed", replace={name: value}))
    with pytest.raises(FormatError, match=re.escape(f"TensorFlow variable {name} ")):
        load_generator(path)


def test_numpy_scalars_unpickle_as_data_only():
    for value in (np.float32(0.25), np.float64(-3.5), np.int32(7), np.float16(1.5)):
        for protocol in (2, 3, 4):
            back = safe_load(cw.era_pickle_dumps(value, protocol))
            assert type(back) is type(value) and back == value
    # a scalar whose bytes do not match its dtype, and one of an object dtype, are refused
    good = cw.era_pickle_dumps(np.float32(0.25), 3)
    short = good.replace(b"C\x04\x00\x00\x80>", b"C\x02\x00\x00")
    assert short != good
    with pytest.raises(FormatError, match="does not hold 4 bytes"):
        safe_load(short)
    with pytest.raises(FormatError):
        safe_load(pickle.dumps(np.array([object()], dtype=object)[0:1], protocol=3))
