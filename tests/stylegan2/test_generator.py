"""Behaviour of the generator that every other part relies on."""

from __future__ import annotations

import pytest
import torch

from nada.errors import ConfigError
from nada.stylegan2 import Generator, GeneratorConfig, channels_nvidia, channels_rosinality


def small_config(**kw) -> GeneratorConfig:
    base = dict(img_resolution=32, channels=(32, 32, 16, 8), z_dim=16, w_dim=16, mapping_layers=2)
    base.update(kw)
    return GeneratorConfig(**base)


def make_generator(seed: int = 0, **kw) -> Generator:
    torch.manual_seed(seed)
    G = Generator(small_config(**kw)).eval().requires_grad_(False)
    # Non-zero noise strengths and biases so that noise handling and biases are exercised.
    for name, p in G.named_parameters():
        if name.endswith("noise_strength") or name.endswith(".bias") and "affine" not in name:
            p.copy_(torch.randn_like(p) * 0.1)
    return G


def test_channel_tables():
    assert channels_rosinality(1024, 2) == (512, 512, 512, 512, 512, 256, 128, 64, 32)
    assert channels_rosinality(256, 1) == (512, 512, 512, 512, 256, 128, 64)
    assert channels_nvidia(256, 16384, 512) == (512, 512, 512, 512, 256, 128, 64)
    assert GeneratorConfig(img_resolution=1024).num_ws == 18
    assert GeneratorConfig(img_resolution=256).num_ws == 14


def test_config_1024_param_count_matches_config_f():
    G = Generator(GeneratorConfig(img_resolution=1024))
    n = sum(p.numel() for p in G.parameters())
    assert abs(n / 1e6 - 30.37) < 0.01  # the config-f figure (nada-spec 2.10)


@pytest.mark.parametrize("arch", ["skip", "resnet", "orig"])
def test_shapes_and_range_for_every_architecture(arch):
    G = make_generator(architecture=arch, conv_clamp=256.0)
    z = torch.randn(3, 16)
    ws = G.mapping(z)
    assert ws.shape == (3, G.num_ws, 16)
    img = G.synthesis(ws)
    assert img.shape == (3, 3, 32, 32)
    assert torch.isfinite(img).all()


@pytest.mark.parametrize("arch", ["skip", "resnet", "orig"])
def test_w_index_consumers_cover_every_styled_layer_once(arch):
    G = make_generator(architecture=arch)
    consumers = G.synthesis.w_index_consumers()
    names = [n for ns in consumers.values() for n in ns]
    styled = {n.rsplit(".affine", 1)[0] for n, _ in G.named_modules() if n.endswith(".affine")}
    assert sorted(names) == sorted(styled)
    # The W+ index each module reads is the one the forward pass gives it: perturbing index i changes
    # only the output of the modules consuming i (checked through the styles they compute).
    z = torch.randn(1, 16)
    ws = G.mapping(z)
    for i, mods in consumers.items():
        ws2 = ws.clone()
        ws2[:, i] += 1.0
        for name, module in G.named_modules():
            if name.endswith(".affine"):
                owner = name.rsplit(".affine", 1)[0]
                idx = [k for k, v in consumers.items() if owner in v][0]
                changed = not torch.equal(module(ws[:, idx]), module(ws2[:, idx]))
                assert changed == (owner in mods)


def test_truncation_psi_zero_gives_w_avg_and_cutoff():
    G = make_generator()
    G.mapping.w_avg.copy_(torch.randn(16))
    z = torch.randn(2, 16)
    ws = G.mapping(z, truncation_psi=0.0)
    torch.testing.assert_close(ws, G.mapping.w_avg.expand_as(ws))
    ws_cut = G.mapping(z, truncation_psi=0.0, truncation_cutoff=3)
    full = G.mapping(z)
    torch.testing.assert_close(ws_cut[:, :3], G.mapping.w_avg.expand(2, 3, 16))
    torch.testing.assert_close(ws_cut[:, 3:], full[:, 3:])


def test_noise_modes():
    G = make_generator()
    ws = G.mapping(torch.randn(2, 16))
    const1, const2 = G.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const")
    assert torch.equal(const1, const2)
    none = G.synthesis(ws, noise_mode="none")
    assert not torch.equal(const1, none)
    r1 = G.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(5))
    r2 = G.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(5))
    r3 = G.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(6))
    assert torch.equal(r1, r2) and not torch.equal(r1, r3)
    noise = G.synthesis.make_noise(2, torch.Generator().manual_seed(5))
    assert torch.equal(G.synthesis(ws, noise=noise), r1)
    with pytest.raises(ConfigError, match="noise_mode"):
        G.synthesis(ws, noise_mode="bogus")


def test_gradient_checkpointing_gives_same_output_and_gradients():
    G = make_generator().train().requires_grad_(True)
    ws = G.mapping(torch.randn(2, 16)).detach()
    noise = G.synthesis.make_noise(2, torch.Generator().manual_seed(0))
    out1 = G.synthesis(ws, noise=noise)
    out1.square().mean().backward()
    g1 = {n: p.grad.clone() for n, p in G.named_parameters() if p.grad is not None}
    G.zero_grad()
    G.synthesis.gradient_checkpointing = True
    out2 = G.synthesis(ws, noise=noise)
    out2.square().mean().backward()
    torch.testing.assert_close(out1, out2)
    for n, p in G.named_parameters():
        if n in g1:
            torch.testing.assert_close(p.grad, g1[n], atol=1e-6, rtol=1e-5)


def test_conditional_mapping_requires_labels():
    G = make_generator(c_dim=4)
    z = torch.randn(2, 16)
    with pytest.raises(ConfigError, match="conditional"):
        G.mapping(z)
    c = torch.eye(4)[:2]
    a, b = G.mapping(z, c), G.mapping(z, torch.eye(4)[2:])
    assert not torch.equal(a, b)


def test_bad_inputs_and_configs_raise_config_error():
    G = make_generator()
    with pytest.raises(ConfigError, match="z must have shape"):
        G.mapping(torch.randn(2, 15))
    with pytest.raises(ConfigError, match="ws must have shape"):
        G.synthesis(torch.randn(2, 3, 16))
    with pytest.raises(ConfigError, match="power of two"):
        GeneratorConfig(img_resolution=48)
    with pytest.raises(ConfigError, match="channels must list"):
        GeneratorConfig(img_resolution=32, channels=(8, 8))
    with pytest.raises(ConfigError, match="architecture"):
        small_config(architecture="unet")
    with pytest.raises(ConfigError, match="unknown generator config keys"):
        GeneratorConfig.from_dict({**small_config().to_dict(), "wings": 2})
    assert GeneratorConfig.from_dict(small_config().to_dict()) == small_config()


def test_same_seed_same_bits():
    a = make_generator(seed=3)
    b = make_generator(seed=3)
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a(z, noise_mode="const"), b(z, noise_mode="const"))


def test_fingerprint_identifies_weights():
    a, b = make_generator(seed=1), make_generator(seed=1)
    assert a.fingerprint() == b.fingerprint()
    b.synthesis.b8.conv0.bias[0] += 1e-3
    assert a.fingerprint() != b.fingerprint()


def test_with_tensors_shares_storage_and_replaces():
    G = make_generator(seed=2)
    new_bias = torch.randn_like(G.synthesis.b8.conv1.bias)
    H = G.with_tensors({"synthesis.b8.conv1.bias": new_bias})
    assert H.synthesis.b8.conv0.weight.data_ptr() == G.synthesis.b8.conv0.weight.data_ptr()
    assert torch.equal(H.synthesis.b8.conv1.bias, new_bias)
    assert not torch.equal(G.synthesis.b8.conv1.bias, new_bias)
    z = torch.randn(1, 16)
    assert torch.equal(G.with_tensors()(z), G(z))
    with pytest.raises(ConfigError, match="no such generator tensors"):
        G.with_tensors({"synthesis.b8.nope": new_bias})
    with torch.inference_mode():
        Gi = make_generator(seed=2)
        Hi = Gi.with_tensors({"synthesis.b8.conv1.bias": new_bias})
        assert torch.equal(Hi(z), H(z))
