"""pSp / e4e / ReStyle encoders: read from the authors' checkpoint layout, run as their inference does.

Checkpoints are written by `encoder_checkpoints` in the layout the authors' coaches save. Exactness
against the authors' code itself was measured outside the repository (their code, random weights;
see the issue notes); here the tests check what follows from the method's definitions.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import nada
from nada.errors import ConfigError, InversionError
from tests.inversion.encoder_checkpoints import make_decoder, write_checkpoint


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("encoders")
    return {
        "e4e": write_checkpoint(d / "e4e.pt", "Encoder4Editing", resolution=32, seed=1),
        "psp": write_checkpoint(d / "psp.pt", "GradualStyleEncoder", resolution=32, seed=1),
        "restyle": write_checkpoint(d / "restyle.pt", "ResNetProgressiveBackboneEncoder", resolution=16, seed=2),
    }


def photo(n: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.avg_pool2d(torch.rand(n, 3, 256 * 4, 256 * 4, generator=g) * 2 - 1, 4)  # smooth-ish, in [-1, 1]


@pytest.mark.parametrize(
    "encoder_type, opts, kind, backbone, channels",
    [
        ("Encoder4Editing", None, "e4e", "ir_se50", 3),
        ("GradualStyleEncoder", None, "psp", "ir_se50", 3),
        ("SingleStyleCodeEncoder", None, "psp", "ir_se50", 3),
        ("BackboneEncoderUsingLastLayerIntoWPlus", None, "psp", "ir_se50", 3),
        ("GradualStyleEncoder", {"input_nc": 6}, "restyle_psp", "ir_se50", 6),  # ReStyle's FPN variant
        ("BackboneEncoder", None, "restyle_psp", "ir_se50", 6),
        ("ResNetGradualStyleEncoder", None, "restyle_psp", "resnet34", 6),
        ("ProgressiveBackboneEncoder", None, "restyle_e4e", "ir_se50", 6),
        ("ResNetBackboneEncoder", None, "restyle_psp", "resnet34", 6),
    ],
)
def test_architecture_is_inferred_from_the_file(tmp_path, encoder_type, opts, kind, backbone, channels):
    path = write_checkpoint(tmp_path / "enc.pt", encoder_type, resolution=8, opts=opts)
    enc = nada.load_encoder(path)
    assert (enc.kind, enc.spec.backbone, enc.input_channels) == (kind, backbone, channels)
    assert (enc.num_ws, enc.w_dim, enc.input_size, enc.decoder_path) == (4, 512, 256, path)
    assert enc(torch.zeros(2, channels, 256, 256)).shape == (2, 4, 512)
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    G = nada.load_generator(path)  # the decoder stored next to the encoder
    assert (G.num_ws, G.config.img_resolution) == (enc.num_ws, 8)
    torch.testing.assert_close(enc.latent_avg, G.mapping.w_avg.expand(4, 512), rtol=0, atol=0)


def test_e4e_adds_per_entry_deltas_to_one_w_where_psp_has_one_style_per_entry(files):
    # Same tensors, saved once as e4e and once as pSp: e4e's entry i is w0 + delta_i where pSp's is
    # delta_i itself, both offset by the average latent (the two papers' definitions).
    x = photo()
    e4e, psp = nada.load_encoder(files["e4e"]), nada.load_encoder(files["psp"])
    we, wp = nada.invert(e4e, x).latents, nada.invert(psp, x).latents
    avg = e4e.latent_avg
    assert we.shape == wp.shape == (1, 8, 512)
    torch.testing.assert_close(we[:, 0], wp[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(we[:, 1:] - avg[1:], (wp[:, :1] - avg[:1]) + (wp[:, 1:] - avg[1:]), rtol=1e-5, atol=1e-5)
    assert (wp[:, 1:] - wp[:, :1]).abs().max() > 1e-2, "the entries differ: 8 real style heads, not one"


def test_psp_and_e4e_render_their_codes_with_stored_noise_in_one_pass(files):
    enc = nada.load_encoder(files["e4e"])
    G = nada.load_generator(files["e4e"])
    res = nada.invert(enc, photo(2), generator=G)
    assert res.n_iters == 1 and res.latents.dtype == torch.float32 and res.images.shape == (2, 3, 32, 32)
    torch.testing.assert_close(res.images, G.synthesis(res.latents, noise_mode="const"), rtol=0, atol=0)
    with pytest.raises(ConfigError, match="n_iters must be 1"):
        nada.invert(enc, photo(), n_iters=5, generator=G)


def test_restyle_starts_from_the_average_image_and_refines_deterministically(files):
    enc = nada.load_encoder(files["restyle"])
    G = nada.load_generator(files["restyle"])
    inputs = []
    hook = enc.net.register_forward_pre_hook(lambda m, args: inputs.append(args[0].clone()))
    steps = []
    try:
        res5 = nada.invert(enc, photo(), n_iters=5, generator=G, callback=lambda s, t, im: steps.append((s, t, im)))
    finally:
        hook.remove()
    assert res5.n_iters == 5 and [(s, t) for s, t, _ in steps] == [(i, 5) for i in range(1, 6)]
    # Step 0 sees [photo, image of the average latent pooled to 256]; step k sees step k-1's image.
    avg_image = F.adaptive_avg_pool2d(G.synthesis(enc.latent_avg[None], noise_mode="const"), (256, 256))
    torch.testing.assert_close(inputs[0][:, 3:], avg_image, rtol=0, atol=0)
    torch.testing.assert_close(inputs[0][:, :3], photo(), rtol=0, atol=0)
    for k in range(1, 5):
        torch.testing.assert_close(inputs[k][:, 3:], F.adaptive_avg_pool2d(steps[k - 1][2], (256, 256)), rtol=0, atol=0)
    res1 = nada.invert(enc, photo(), n_iters=1, generator=G)
    torch.testing.assert_close(res1.images, steps[0][2], rtol=0, atol=0)  # same first step, bit for bit
    assert (res1.latents - res5.latents).abs().max() > 1e-3, "refinement changes the latent"
    again = nada.invert(enc, photo(), n_iters=5, generator=G)
    assert torch.equal(again.latents, res5.latents) and torch.equal(again.images, res5.images)


def test_restyle_stops_between_steps_when_asked(files):
    enc = nada.load_encoder(files["restyle"])
    done = []
    res = nada.invert(
        enc, photo(), n_iters=5, callback=lambda s, t, im: done.append(s), should_stop=lambda: len(done) >= 2
    )
    assert res.n_iters == 2 and done == [1, 2]
    assert res.images.shape == (1, 3, 16, 16)  # default generator: the decoder in the same file


def test_inversion_changes_neither_the_encoder_nor_the_generator_nor_the_images(files):
    enc = nada.load_encoder(files["restyle"])
    G = nada.load_generator(files["restyle"])
    before = {k: v.clone() for k, v in [*enc.state_dict().items(), *G.state_dict().items()]}
    x = photo()
    x0 = x.clone()
    with torch.inference_mode():  # as ComfyUI runs nodes
        res = nada.invert(enc, x, n_iters=2, generator=G)
    assert torch.equal(x, x0) and torch.isfinite(res.latents).all()
    after = {k: v for k, v in [*enc.state_dict().items(), *G.state_dict().items()]}
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    "images, message",
    [
        (torch.zeros(1, 3, 128, 128), "256x256 images, got 128x128"),
        (torch.zeros(1, 1, 256, 256), "grayscale"),
        (torch.zeros(0, 3, 256, 256), "batch is empty"),
        (torch.zeros(3, 256, 256), "tensor \\[batch, 3, 256, 256\\]"),
        (torch.full((1, 3, 256, 256), math.nan), "finite"),
    ],
)
def test_bad_images_are_refused_with_the_fix(files, images, message):
    enc = nada.load_encoder(files["e4e"])
    with pytest.raises(InversionError, match=message):
        nada.invert(enc, images)


def test_a_generator_that_does_not_fit_the_encoder_is_refused(files):
    enc = nada.load_encoder(files["restyle"])  # trained with a 16 px decoder (6 W+ entries)
    with pytest.raises(InversionError, match="does not fit the encoder"):
        nada.invert(enc, photo(), generator=make_decoder(32, seed=0))


def test_a_psp_trained_without_the_average_latent_outputs_its_raw_codes(tmp_path):
    path = write_checkpoint(tmp_path / "psp.pt", "GradualStyleEncoder", resolution=8, start_from_latent_avg=False)
    enc = nada.load_encoder(path)
    assert enc.latent_avg is None and not enc.spec.adds_latent_avg
    x = photo()
    res = nada.invert(enc, x)
    with torch.no_grad():
        torch.testing.assert_close(res.latents, enc(x), rtol=0, atol=0)
