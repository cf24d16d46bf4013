"""bias_act, the layer tail clamp(lrelu(c * d + noise * strength + bias) * gain) in one autograd
function: the same forward, bit for bit, as the separate ops it replaces; the gradients of their
autograd; and fewer saved tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nada.stylegan2 import ops

B, CIN, COUT, RES = 2, 6, 5, 8


def separate_ops(c, d, noise, strength, b, act, gain, clamp):
    """The tail as the layers computed it before, op by op (a new tensor first, then in place)."""
    y = c * d.to(c.dtype)[:, :, None, None] if d is not None else c.clone()
    if noise is not None:
        y.add_(noise.to(y.dtype) * strength)
    if b is not None:
        y.add_(b.reshape(1, -1, 1, 1).to(y.dtype))
    if act == "lrelu":
        y = F.leaky_relu(y, ops.LRELU_SLOPE, inplace=True)
    if gain != 1:
        y = y * gain
    if clamp is not None:
        y = y.clamp(-clamp, clamp)
    return y


def layer_inputs(up: int, noise_kind: str, with_bias: bool, dtype: torch.dtype, seed: int = 0):
    """A real layer's tail inputs: c and d from the non-fused modulated convolution, noise, strength, bias."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, CIN, RES, RES, generator=g, dtype=dtype)
    w = torch.randn(COUT, CIN, 3, 3, generator=g, dtype=dtype) / math.sqrt(CIN * 9)
    s = torch.randn(B, CIN, generator=g, dtype=dtype) + 1.0
    f = ops.make_filter().to(dtype) if up == 2 else None
    leaves = {"x": x, "w": w, "s": s}
    if noise_kind != "none":
        shape = [1 if noise_kind == "broadcast" else B, 1, RES * up, RES * up]
        leaves["noise"] = torch.randn(shape, generator=g, dtype=dtype)
        leaves["strength"] = torch.tensor(0.7, dtype=dtype)
    if with_bias:
        leaves["b"] = torch.randn(COUT, generator=g, dtype=dtype) * 0.5
    return leaves, f


def run_layer(tail, leaves, f, up, act, gain, clamp, noise_grad: bool):
    """x -> non-fused modulated conv -> tail; returns the output and the gradients of every leaf."""
    leaves = {k: v.clone().requires_grad_(k != "noise" or noise_grad) for k, v in leaves.items()}
    c, d = ops.modulated_conv2d(leaves["x"], leaves["w"], leaves["s"], up=up, resample_filter=f, fused=False)
    args = (c, d, leaves.get("noise"), leaves.get("strength"), leaves.get("b"))
    z = tail(*args, act, gain, clamp)
    g_out = torch.randn(z.shape, generator=torch.Generator().manual_seed(9), dtype=z.dtype)
    z.backward(g_out)
    return z.detach(), {k: v.grad for k, v in leaves.items() if v.requires_grad}


def bias_act_tail(c, d, noise, strength, b, act, gain, clamp):
    return ops.bias_act(c, b, act=act, gain=gain, clamp=clamp, inplace=True, demod=d, noise=noise,
                        noise_strength=strength)  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("clamp", [None, 0.6])
@pytest.mark.parametrize("noise_kind,noise_grad", [("none", False), ("batch", True), ("broadcast", True),
                                                   ("batch", False)])  # fmt: skip
@pytest.mark.parametrize("with_bias", [True, False])
def test_layer_gradients_match_autograd_of_the_separate_ops(dtype, up, clamp, noise_kind, noise_grad, with_bias):
    leaves, f = layer_inputs(up, noise_kind, with_bias, dtype)
    gain = ops.LRELU_GAIN
    want_z, want = run_layer(separate_ops, leaves, f, up, "lrelu", gain, clamp, noise_grad)
    got_z, got = run_layer(bias_act_tail, leaves, f, up, "lrelu", gain, clamp, noise_grad)
    assert torch.equal(got_z, want_z)  # same ops in the same order
    if clamp is not None:
        assert (want_z.abs() == clamp).float().mean() > 0.05  # the clamp cuts
    assert want.keys() == got.keys() and ("noise" in got) == noise_grad
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    for name, g in want.items():
        assert got[name].dtype == g.dtype
        torch.testing.assert_close(got[name], g, **tol, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("up,clamp", [(1, None), (2, 0.6), (1, 0.6)])
def test_forward_is_bit_identical_to_the_separate_ops(dtype, grad, up, clamp):
    """With and without autograd (the no-grad path runs the same body in place, outside autograd)."""
    leaves, f = layer_inputs(up, "batch", True, torch.float32, seed=3)
    x, w, s = (leaves[k].to(dtype) for k in ("x", "w", "s"))
    c, d = ops.modulated_conv2d(x, w, s, up=up, resample_filter=f if f is None else f.to(dtype), fused=False)
    # The parameters stay float32 as under autocast: the tail casts them to c's dtype.
    args = (d, leaves["noise"], leaves["strength"].float(), leaves["b"])
    want = separate_ops(c, *args, "lrelu", ops.LRELU_GAIN, clamp)
    with torch.set_grad_enabled(grad):
        inputs = [c.clone().requires_grad_(grad)] + [t.clone().requires_grad_(grad) for t in args]
        got = bias_act_tail(inputs[0] * 1 if grad else inputs[0], *inputs[1:], "lrelu", ops.LRELU_GAIN, clamp)
    assert got.dtype == dtype and got.requires_grad == grad
    assert torch.equal(got.detach(), want)


def edge_values(dtype, gain: float, clamp: float) -> torch.Tensor:
    """Pre-activations exactly 0, landing exactly on +-clamp after the activation and gain, infinite, NaN."""
    base = torch.randn(B, COUT, 4, 4, generator=torch.Generator().manual_seed(5), dtype=dtype)
    at = [0.0, clamp / gain, -clamp / gain / ops.LRELU_SLOPE, -0.0, math.inf, -math.inf, math.nan]
    base.view(-1)[: len(at) * 7 : 7] = torch.tensor(at, dtype=dtype)
    return base


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("gain", [2.0, 0.5])  # 0.5: below 1 the activation itself is kept for its sign
@pytest.mark.parametrize("act", ["lrelu", "linear"])
def test_gradients_at_zero_and_exactly_at_the_clamp(dtype, gain, act):
    clamp = 1.0
    c0 = edge_values(dtype, gain, clamp)
    pre = separate_ops(c0, None, None, None, None, act, gain, None)
    assert (c0 == 0).any() and (pre == clamp).any()
    if act == "lrelu":
        assert (pre == -clamp).any()
    grads, outs = [], []
    for tail in (separate_ops, bias_act_tail):
        c = c0.clone().requires_grad_(True)
        b = torch.zeros(COUT, dtype=dtype, requires_grad=True)
        z = tail(c * 1, None, None, None, b, act, gain, clamp)  # c * 1: an own temporary, as a conv's output
        z.backward(torch.linspace(-1, 2, z.numel(), dtype=dtype).reshape(z.shape))
        assert c.grad.isfinite().all()
        outs.append(z.detach())
        grads.append((c.grad, b.grad))
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0, equal_nan=True)
    assert torch.equal(grads[1][0], grads[0][0])  # elementwise: the same products
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-10 if dtype == torch.float64 else 1e-5, atol=0)


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("demod_grad", [True, False])
def test_inplace_overwrites_the_input_only_when_the_backward_does_not_need_it(grad, demod_grad):
    c = torch.randn(B, COUT, RES, RES, requires_grad=grad) * 1  # a temporary, like a convolution's output
    d = torch.rand(B, COUT, requires_grad=demod_grad) + 0.5
    with torch.set_grad_enabled(grad):
        for demod in (None, d):
            x = c.detach().clone().requires_grad_(grad) * 1 if grad else c.clone()
            z = ops.bias_act(x, act="lrelu", clamp=0.5, inplace=True, demod=demod)
            needs_x = grad and demod is not None and demod_grad  # for the demodulation's gradient
            assert (z.data_ptr() == x.data_ptr()) != needs_x


def saved_bytes(fn) -> int:
    """Run fn under autograd; the total bytes of the distinct storages it saves for the backward."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


@pytest.mark.parametrize("clamp", [None, 0.6])
def test_the_tail_saves_only_its_input_and_its_output(clamp):
    leaves, _ = layer_inputs(1, "batch", True, torch.float32)
    c = torch.randn(B, COUT, RES, RES, requires_grad=True)
    d = torch.rand(B, COUT, requires_grad=True) + 0.5
    s_next = torch.rand(B, COUT, 1, 1, requires_grad=True)  # the next layer's styles: it saves our output
    noise, strength, b = leaves["noise"], leaves["strength"].requires_grad_(True), leaves["b"].requires_grad_(True)
    saved = {}
    for name, tail in (("separate", separate_ops), ("bias_act", bias_act_tail)):
        saved[name] = saved_bytes(lambda t=tail: t(c * 1, d, noise, strength, b, "lrelu", 2.0, clamp) * s_next)
    full, small = c.nbytes, d.nbytes + noise.nbytes + s_next.nbytes
    # c (for d's gradient) and the output (which the next layer keeps anyway); the separate ops also
    # keep the activation, and with a clamp the value before it.
    assert saved["bias_act"] == 2 * full + small
    assert saved["separate"] == (4 if clamp is not None else 3) * full + small
