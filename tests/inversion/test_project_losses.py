"""The projector's losses: VGG16 rebuilt to load torchvision's weights file, LPIPS calibration, the
no-download pixel + CLIP loss, and weights files read without executing anything."""

from __future__ import annotations

import pickle

import pytest
import torch

import nada
from nada.errors import ProjectionError
from nada.inversion import perceptual
from nada.inversion.project import project
from tests.nodes.fixtures import make_tiny_generator

torch.set_num_threads(min(2, torch.get_num_threads()))
LPIPS_CHANNELS = (64, 128, 256, 512, 512)


@pytest.fixture(scope="module")
def torchvision_vgg():
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    return tv.models.vgg16(weights=None).features.eval()


@pytest.fixture(scope="module")
def vgg_file(torchvision_vgg, tmp_path_factory):
    """torchvision's VGG16 state dict layout (features.*, plus a classifier key the loader ignores)."""
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    sd = {f"features.{k}": v for k, v in torchvision_vgg.state_dict().items()}
    torch.save({**sd, "classifier.6.bias": torch.zeros(1000)}, path)
    return path


@pytest.fixture(scope="module")
def lpips_file(tmp_path_factory):
    """The lpips package's vgg.pth layout: lin{i}.model.1.weight [1, C, 1, 1], non-negative."""
    path = tmp_path_factory.mktemp("lpips") / "vgg.pth"
    g = torch.Generator().manual_seed(1)
    torch.save(
        {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for i, c in enumerate(LPIPS_CHANNELS)}, path
    )
    return path


def test_our_vgg16_taps_equal_torchvision_vgg16_on_the_same_weights(torchvision_vgg, vgg_file):
    ours = perceptual.load_vgg16(vgg_file)
    x = torch.rand(2, 3, 40, 40) * 2 - 1
    taps = ours(x)
    scaled = (x - torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)) / torch.tensor([0.458, 0.448, 0.450]).view(
        1, 3, 1, 1
    )
    want, h = [], scaled
    with torch.no_grad():
        for i, layer in enumerate(torchvision_vgg):
            h = layer(h)
            if i in (3, 8, 15, 22, 29):
                want.append(h)
    assert [t.shape[1] for t in taps] == list(LPIPS_CHANNELS)
    for a, b in zip(taps, want):
        torch.testing.assert_close(a, b)
    assert ours.name == "vgg16" and not any(p.requires_grad for p in ours.parameters())


def test_lpips_is_zero_for_equal_images_and_weights_channels_by_the_calibration(vgg_file, lpips_file):
    lp = perceptual.load_vgg16(vgg_file, lpips=lpips_file)
    plain = perceptual.load_vgg16(vgg_file)
    assert lp.name == "lpips"
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = x.flip(-1)
    assert torch.equal(lp.distance(lp(x), lp(x)), torch.zeros(2))
    assert (lp.distance(lp(x), lp(y)) > 0).all()
    assert not torch.allclose(lp.distance(lp(x), lp(y)), plain.distance(plain(x), plain(y)))


def test_projection_with_local_vgg_weights_uses_lpips_and_says_so(vgg_file, lpips_file):
    G = make_tiny_generator(nada)
    x = G(torch.randn(1, G.config.z_dim, generator=torch.Generator().manual_seed(5)))
    r = project(G, x, steps=3, perceptual_weights=[vgg_file, lpips_file])
    assert r.loss_name == "lpips"
    assert project(G, x, steps=1, perceptual_weights=vgg_file).loss_name == "vgg16"
    assert project(G, x, steps=1, perceptual_weights=vgg_file, loss="pixels").loss_name == "pixels"


def test_without_weights_the_loss_is_pixels_and_clip_joins_when_given():
    from nada.demo import load_tiny_clip

    G = make_tiny_generator(nada)
    x = G(torch.randn(1, G.config.z_dim, generator=torch.Generator().manual_seed(5)))
    clip = load_tiny_clip()
    r = project(G, x, steps=2, clip=clip)
    assert r.loss_name == "pixels+clip"
    pixels_only = perceptual.make_objective(x, clip=None)
    with_clip = perceptual.make_objective(x, clip=clip, clip_weight=1.0)
    other = x.flip(-1)
    expected = 1 - (clip.encode_images(other) * clip.encode_images(x)).sum(-1)
    torch.testing.assert_close(with_clip(other) - pixels_only(other), expected, atol=1e-5, rtol=1e-4)
    assert with_clip(x).abs().max() < 1e-5


def test_pixel_distance_sees_coarse_and_fine_differences():
    a = torch.zeros(1, 3, 32, 32)
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None]) % 2 * 0.2 - 0.1  # fine detail, mean 0
    assert perceptual.pixel_distance(a, a + checker).item() == pytest.approx(0.01, rel=1e-5)  # full scale only
    assert perceptual.pixel_distance(a, a + 0.1).item() == pytest.approx(4 * 0.01, rel=1e-5)  # every scale


class _RunsCode:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the hostile pickle
def test_weights_files_are_read_without_running_code(tmp_path, monkeypatch, vgg_file):
    monkeypatch.chdir(tmp_path)
    hostile = tmp_path / "vgg16.pth"
    with open(hostile, "wb") as f:
        pickle.dump({"features.0.weight": _RunsCode()}, f)
    with pytest.raises(ProjectionError, match="safely"):
        perceptual.load_vgg16(hostile)
    assert not (tmp_path / "PWNED").exists()
    wrong = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(ProjectionError, match="not torchvision's VGG16"):
        perceptual.load_vgg16(wrong)
    with pytest.raises(ProjectionError, match="not LPIPS's VGG calibration"):
        perceptual.load_vgg16(vgg_file, lpips=wrong)
    with pytest.raises(ProjectionError, match="does not exist"):
        perceptual.load_vgg16(tmp_path / "missing.pth")
