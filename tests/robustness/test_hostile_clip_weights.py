"""CLIP weights (.pt/.pth/.bin/.ckpt) get the same resource checks as generator checkpoints.

`torch.load(weights_only=True)` runs no code, but a small file can still make it allocate far more
than it holds. Each hostile file here is refused with a ClipError and without the memory.
"""

from __future__ import annotations

import pytest

from nada.clip import read_state_dict
from nada.errors import ClipError
from tests.robustness.robust_fixtures import peak_rss_bytes
from tests.robustness.test_hostile_files import _deflated_zip, strided_bombs, unfilled_storages


def _cases():
    for name, data in strided_bombs():
        if name.startswith("torch"):  # the plain state dicts; the rest are generator-only layouts
            yield name, data, "overlapping strides"
    for name, data in unfilled_storages():
        if not name.startswith("nvidia"):
            yield name, data, "declares|overlapping|cannot load"
    yield "zip bomb", _deflated_zip(300 * 2**20), "expands to"


@pytest.mark.parametrize("suffix", [".pt", ".bin"])
def test_hostile_clip_weight_files_are_refused_without_the_memory(tmp_path, suffix):
    before = peak_rss_bytes()
    seen = 0
    for name, data, message in _cases():
        assert len(data) < 2_000_000, name
        path = tmp_path / f"clip{suffix}"
        path.write_bytes(data)
        with pytest.raises(ClipError, match=message):
            read_state_dict(path)
        seen += 1
    assert seen == 19
    assert peak_rss_bytes() - before < 300 * 2**20
