"""The StyleGAN3 generator: schedule, shapes, the input transform, determinism and the nada.Generator interface."""

from __future__ import annotations

import pytest
import torch

import nada
from nada.errors import ConfigError
from nada.stylegan3 import StyleGAN3Config, StyleGAN3Generator, layer_specs
from tests.stylegan3.writers import make_stylegan3

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="module", params=["t", "r"])
def G(request) -> StyleGAN3Generator:
    return make_stylegan3(variant=request.param)


def test_schedule_of_the_published_256px_t_config():
    # NVIDIA's defaults at 256 px (layer names of its networks: L{idx}_{size}_{channels}); the schedule
    # was checked against NVIDIA's code in a local harness, these sizes follow from the paper's formulas
    specs = layer_specs(StyleGAN3Config(img_resolution=256))
    assert [s.name for s in specs] == [
        "L0_36_512", "L1_36_512", "L2_36_512", "L3_52_512", "L4_52_512", "L5_84_512", "L6_84_512",
        "L7_148_512", "L8_148_512", "L9_148_362", "L10_276_256", "L11_276_181", "L12_276_128",
        "L13_256_128", "L14_256_3",
    ]  # fmt: skip
    assert [s.is_critically_sampled for s in specs] == [False] * 12 + [True] * 3
    last = specs[-2]  # critically sampled: cutoff at Nyquist of the output
    assert last.out_cutoff == pytest.approx(128) and last.out_sampling_rate == 256
    # every layer's padding gives exactly its output size
    for s in specs:
        up_size = (s.in_size + s.conv_kernel - 1) * s.up_factor + s.padding[0] + s.padding[1] - (s.up_taps - 1)
        assert (up_size - (s.down_taps - 1) + s.down_factor - 1) // s.down_factor == s.out_size


def test_variant_r_doubles_channels_and_filters_radially():
    cfg = StyleGAN3Config(
        img_resolution=256, conv_kernel=1, use_radial_filters=True, channel_base=65536, channel_max=1024
    )
    assert cfg.variant == "stylegan3-r"
    specs = layer_specs(cfg)
    assert specs[0].out_channels == 1024 and specs[0].conv_kernel == 1
    assert [s.down_radial for s in specs] == [True] * 12 + [False] * 3


def test_shapes_interface_and_consumers(G):
    cfg = G.config
    z = torch.randn(3, cfg.z_dim)
    with torch.no_grad():
        ws = G.mapping(z)
        img = G.synthesis(ws)
    assert ws.shape == (3, cfg.num_ws, cfg.w_dim) and G.num_ws == cfg.num_layers + 2
    assert img.shape == (3, 3, cfg.img_resolution, cfg.img_resolution) and torch.isfinite(img).all()
    assert isinstance(G, nada.Generator)
    consumers = G.synthesis.w_index_consumers()
    assert sorted(consumers) == list(range(cfg.num_ws))
    modules = dict(G.named_modules())
    assert all(len(v) == 1 and v[0] in modules for v in consumers.values())
    assert G.synthesis.make_noise(3) == [] and G.synthesis.noise_shapes() == []


def test_each_w_index_changes_only_what_reads_it(G):
    # W+ input: changing entry i changes the image (every entry is read), and through its consumer only
    ws = G.mapping(torch.randn(1, G.config.z_dim)).detach()
    with torch.no_grad():
        base = G.synthesis(ws)
        for i in range(G.num_ws):
            w2 = ws.clone()
            w2[:, i] += torch.randn(G.config.w_dim)
            assert not torch.allclose(G.synthesis(w2), base), i


def test_noise_modes_are_equal_and_noise_maps_are_refused(G):
    ws = G.mapping(torch.randn(2, G.config.z_dim)).detach()
    with torch.no_grad():
        imgs = [G.synthesis(ws, noise_mode=m) for m in ("const", "random", "none")]
    assert torch.equal(imgs[0], imgs[1]) and torch.equal(imgs[0], imgs[2])
    with pytest.raises(ConfigError, match="no noise inputs"):
        G.synthesis(ws, noise=[torch.zeros(1, 1, 4, 4)])
    with pytest.raises(ConfigError, match="noise_mode"):
        G.synthesis(ws, noise_mode="fancy")


def test_deterministic_and_nearly_batch_independent(G):
    z = torch.randn(4, G.config.z_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a, b = G(z, truncation_psi=0.7), G(z, truncation_psi=0.7)
        single = G(z[1:2], truncation_psi=0.7)
    assert torch.equal(a, b)
    # styles are pre-normalised over the batch (as NVIDIA does); demodulation cancels it up to 1e-8
    torch.testing.assert_close(single[0], a[1], atol=1e-5, rtol=0)


def test_truncation_zero_renders_the_average_w(G):
    z = torch.randn(2, G.config.z_dim)
    with torch.no_grad():
        img = G(z, truncation_psi=0.0)
        avg = G.synthesis(G.mapping.w_avg.expand(1, G.num_ws, -1))
    torch.testing.assert_close(img, avg.expand_as(img), atol=1e-6, rtol=0)


def test_input_transform_translates_and_rotates_the_features():
    G = make_stylegan3()
    G = G.with_tensors({"synthesis.input.transform": torch.eye(3)})  # never mutate the shared fixture
    inp, sr = G.synthesis.input, G.synthesis.input.sampling_rate
    w = torch.randn(2, G.config.w_dim)
    with torch.no_grad():
        base = inp(w)
        G.synthesis.set_transform(translate=(2 / sr, 0))  # two samples to the right
        moved = inp(w)
        G.synthesis.set_transform(angle_deg=90)
        turned = inp(w)
    torch.testing.assert_close(moved[..., 3:-3, 3:-3], base.roll(2, dims=3)[..., 3:-3, 3:-3], atol=1e-5, rtol=0)
    torch.testing.assert_close(turned, base.rot90(1, dims=(2, 3)), atol=1e-5, rtol=0)


def test_transform_is_part_of_the_weights_and_identity_by_default():
    G = make_stylegan3()
    assert torch.equal(G.synthesis.input.transform, torch.eye(3))
    H = G.with_tensors({"synthesis.input.transform": torch.eye(3)})
    H.synthesis.set_transform(angle_deg=30, translate=(0.1, -0.2))
    assert H.fingerprint() != G.fingerprint()  # a transformed generator is a different generator
    z = torch.randn(1, G.config.z_dim)
    with torch.no_grad():
        assert not torch.allclose(G(z), H(z))
    H.synthesis.set_transform()
    torch.testing.assert_close(H.synthesis.input.transform, torch.eye(3), atol=1e-7, rtol=0)


def test_with_tensors_keeps_the_family_and_shares_storage(G):
    H = G.with_tensors()
    assert type(H) is StyleGAN3Generator and H.config == G.config
    assert H.fingerprint() == G.fingerprint()
    name = next(n for n in H.state_dict() if n.endswith("up_filter"))
    assert H.state_dict()[name].data_ptr() == G.state_dict()[name].data_ptr()


def test_gradient_checkpointing_gives_the_same_gradients():
    G = make_stylegan3(variant="r").requires_grad_(True)
    ws = G.mapping(torch.randn(2, G.config.z_dim)).detach()
    grads = []
    for ckpt in (False, True):
        G.zero_grad()
        G.synthesis.gradient_checkpointing = ckpt
        G.synthesis(ws).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in G.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-6, rtol=1e-5)


def test_conditional_mapping_needs_labels():
    G = make_stylegan3(c_dim=4)
    z = torch.randn(2, G.config.z_dim)
    with pytest.raises(ConfigError, match="conditional"):
        G(z)
    with torch.no_grad():
        a = G(z, torch.eye(4)[[0, 1]])
        b = G(z, torch.eye(4)[[2, 3]])
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("bad", [dict(img_resolution=24), dict(num_critical=6), dict(conv_kernel=2),
                                 dict(family="stylegan2"), dict(z_dim=0)])  # fmt: skip
def test_bad_configs_are_refused(bad):
    with pytest.raises(ConfigError):
        StyleGAN3Config(**{**dict(img_resolution=16, num_layers=6), **bad})
