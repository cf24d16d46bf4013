"""prepare_face does to a tensor what the authors' transforms (PIL Resize((256, 256)), ToTensor,
Normalize(0.5, 0.5)) do to an aligned face photo, and warns about crops that alignment never makes."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from nada.errors import InversionError
from nada.inversion import prepare_face


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:  # uint8 [H, W, 3] with edges and gradients
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.NEAREST))


def _as_tensor(arr: np.ndarray) -> torch.Tensor:  # ToTensor + Normalize(0.5, 0.5), batched
    return torch.from_numpy(np.array(arr)).permute(2, 0, 1)[None].float() / 255 * 2 - 1


@pytest.mark.parametrize("size", [1024, 512, 300, 256, 200])
def test_matches_the_authors_pil_transform_to_rounding(size):
    arr = _photo(size, size)
    theirs = _as_tensor(np.asarray(Image.fromarray(arr).resize((256, 256), Image.Resampling.BILINEAR)))
    ours = prepare_face(_as_tensor(arr))
    assert ours.shape == (1, 3, 256, 256) and ours.dtype == torch.float32
    # PIL filters in fixed point and rounds to uint8: at most one level (2/255 in [-1, 1]) apart.
    assert (ours - theirs).abs().max() <= 2 / 255 + 1e-6
    if size == 256:
        assert torch.equal(ours, _as_tensor(arr))  # already the right size: untouched


def test_non_square_crops_are_centre_cropped_with_a_warning(caplog):
    x = _as_tensor(_photo(300, 400))
    with caplog.at_level(logging.WARNING):
        out = prepare_face(x)
    assert "not square" in caplog.text
    expected = prepare_face(x[:, :, :, 50:350])
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_small_images_warn_and_grayscale_becomes_rgb(caplog):
    gray = _as_tensor(_photo(128, 128))[:, :1]
    with caplog.at_level(logging.WARNING):
        out = prepare_face(gray)
    assert "smaller than the encoder" in caplog.text
    assert out.shape == (1, 3, 256, 256) and torch.equal(out[:, 0], out[:, 2])


def test_input_is_not_changed_and_bad_inputs_are_refused():
    x = _as_tensor(_photo(512, 512))
    x0 = x.clone()
    prepare_face(x)
    assert torch.equal(x, x0)
    for bad, message in [
        (torch.zeros(1, 4, 256, 256), "4 channels"),
        (torch.zeros(0, 3, 256, 256), "empty"),
        (torch.zeros(3, 256, 256), "batch, channels"),
        (torch.full((1, 3, 8, 8), float("inf")), "NaN"),
    ]:
        with pytest.raises(InversionError, match=message):
            prepare_face(bad)
