"""The two forms of the modulated convolution (fused for inference, non-fused for training) compute
the same function: outputs and gradients agree up to float reassociation, in the op and in whole
generators of several configurations."""

from __future__ import annotations

import pytest
import torch

from nada.stylegan2 import Generator, GeneratorConfig, ops

torch.set_num_threads(min(2, torch.get_num_threads()))

OP_CASES = [  # batch, in, out, kernel, up, demodulate
    (1, 8, 8, 3, 1, True),
    (3, 8, 5, 3, 1, True),
    (2, 6, 4, 1, 1, False),  # ToRGB
    (2, 8, 6, 3, 2, True),  # upsampling conv
    (3, 4, 8, 3, 2, False),
]


def op_grads(fused: bool, x, w, s, k: int, up: int, demod: bool, g_out: torch.Tensor | None):
    x, w, s = (t.detach().clone().requires_grad_(True) for t in (x, w, s))
    f = ops.make_filter(device="cpu").to(x.dtype) if up == 2 else None
    y, d = ops.modulated_conv2d(x, w, s, demodulate=demod, up=up, resample_filter=f, fused=fused)
    y = ops.bias_act(y, demod=d)  # the non-fused form leaves its demodulation to the layer's tail
    if g_out is None:
        g_out = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
    y.backward(g_out)
    return y.detach(), x.grad, w.grad, s.grad, g_out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", OP_CASES)
def test_fused_and_non_fused_ops_agree_with_gradients(case, dtype):
    b, cin, cout, k, up, demod = case
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, cin, 8, 8, generator=g, dtype=dtype)
    w = torch.randn(cout, cin, k, k, generator=g, dtype=dtype) / (cin * k * k) ** 0.5
    s = torch.randn(b, cin, generator=g, dtype=dtype) + 1.0
    fused = op_grads(True, x, w, s, k, up, demod, None)
    plain = op_grads(False, x, w, s, k, up, demod, fused[-1])
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    for name, a, c in zip(("output", "d input", "d weight", "d styles"), fused[:4], plain[:4], strict=True):
        torch.testing.assert_close(c, a, **tol, msg=lambda m, name=name: f"{name}: {m}")
    assert fused[0].abs().max() > 0.1  # the comparison is not between zeros


def make_generator(architecture: str, conv_clamp: float | None) -> Generator:
    cfg = GeneratorConfig(
        img_resolution=32, channels=(32, 32, 16, 8), z_dim=16, w_dim=16, mapping_layers=2,
        architecture=architecture, conv_clamp=conv_clamp,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        G = Generator(cfg).train()
        with torch.no_grad():  # non-zero noise strengths and biases, so every path carries signal
            for name, p in G.named_parameters():
                if name.endswith("noise_strength") or name.endswith(".bias") and "affine" not in name:
                    p.copy_(torch.randn_like(p) * 0.1)
    return G


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("architecture,conv_clamp", [("skip", None), ("resnet", None), ("skip", 0.5)])
def test_generators_agree_in_both_forms_with_gradients(architecture, conv_clamp, checkpointing, dtype):
    """Including the gradients of the noise maps, which the projector optimises."""
    G = make_generator(architecture, conv_clamp).to(dtype)
    G.synthesis.gradient_checkpointing = checkpointing
    assert G.synthesis.fused_modconv is True  # the default: inference stays on the grouped form
    ws = G.mapping(torch.randn(3, 16, generator=torch.Generator().manual_seed(2), dtype=dtype)).detach()
    noise = G.synthesis.make_noise(3, torch.Generator().manual_seed(3))
    out, grads = {}, {}
    for fused in (True, False):
        G.zero_grad(set_to_none=True)
        G.synthesis.fused_modconv = fused
        w = ws.clone().requires_grad_(True)
        n = [t.to(dtype).requires_grad_(True) for t in noise]
        img = G.synthesis(w, noise=n)
        img.square().mean().backward()
        out[fused] = img.detach()
        grads[fused] = {"ws": w.grad, **{f"noise{i}": t.grad for i, t in enumerate(n)},
                        **{k: p.grad for k, p in G.synthesis.named_parameters() if p.grad is not None}}  # fmt: skip
    assert out[True].std() > 0.01
    exact = dtype == torch.float64
    torch.testing.assert_close(
        out[False], out[True], **(dict(rtol=1e-10, atol=1e-12) if exact else dict(rtol=1e-4, atol=1e-5))
    )
    assert grads[True].keys() == grads[False].keys()
    for name, g in grads[True].items():
        scale = g.abs().max().item()
        assert scale > 0, name
        tol = dict(rtol=1e-9, atol=1e-9 * scale) if exact else dict(rtol=1e-3, atol=1e-4 * scale + 1e-9)
        torch.testing.assert_close(grads[False][name], g, **tol, msg=name)
