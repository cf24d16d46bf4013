"""The StyleGAN2 operators against direct formulas on small inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nada.stylegan2 import ops


def direct_upfirdn2d(x, f, up, down, pad):
    """Literal definition: zero-insert, pad, sum_{i,j} f[i,j] * x[y - i, x - j] (true convolution), decimate."""
    x = x.numpy().astype(np.float64)
    f = f.numpy().astype(np.float64)
    b, c, h, w = x.shape
    u = np.zeros((b, c, h * up, w * up))
    u[:, :, ::up, ::up] = x
    px0, px1, py0, py1 = pad
    u = np.pad(u, ((0, 0), (0, 0), (py0, py1), (px0, px1)))
    fh, fw = f.shape
    oh, ow = u.shape[2] - fh + 1, u.shape[3] - fw + 1
    out = np.zeros((b, c, oh, ow))
    for oy in range(oh):
        for ox in range(ow):
            patch = u[:, :, oy : oy + fh, ox : ox + fw]
            out[:, :, oy, ox] = (patch * f[::-1, ::-1]).sum(axis=(2, 3))
    return torch.from_numpy(out[:, :, ::down, ::down]).float()


@pytest.mark.parametrize("up,down,pad", [(1, 1, (1, 2, 1, 2)), (2, 1, (2, 1, 2, 1)), (1, 2, (1, 1, 1, 1))])
def test_upfirdn2d_matches_direct_convolution(up, down, pad):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 6, generator=g)
    f = torch.rand(4, 4, generator=g)  # asymmetric, so a missing flip would show
    got = ops.upfirdn2d(x, f, up=up, down=down, padding=pad)
    want = direct_upfirdn2d(x, f, up, down, pad)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_upsample2d_keeps_size_and_dc():
    x = torch.full((1, 2, 8, 8), 0.5)
    y = ops.upsample2d(x, ops.make_filter())
    assert y.shape == (1, 2, 16, 16)
    # A constant image stays constant away from the border: the filter has unit DC gain per phase.
    torch.testing.assert_close(y[:, :, 2:-2, 2:-2], torch.full_like(y[:, :, 2:-2, 2:-2], 0.5))


def test_bias_act_formula():
    x = torch.tensor([[-2.0, 3.0]]).reshape(1, 2, 1, 1)
    b = torch.tensor([1.0, -1.0])
    y = ops.bias_act(x, b, act="lrelu", clamp=2.0)
    want = torch.tensor([-1.0 * 0.2 * math.sqrt(2), min(2.0 * math.sqrt(2), 2.0)]).reshape(1, 2, 1, 1)
    torch.testing.assert_close(y, want)
    with pytest.raises(ValueError):
        ops.bias_act(x, b, act="gelu")


def per_sample_modconv(x, weight, styles, demodulate, up, f):
    outs = []
    for i in range(x.shape[0]):
        w = weight * styles[i][None, :, None, None]
        if demodulate:
            w = w / torch.sqrt((w**2).sum(dim=[1, 2, 3], keepdim=True) + ops.DEMOD_EPS)
        if up == 1:
            outs.append(F.conv2d(x[i : i + 1], w, padding=w.shape[-1] // 2))
        else:
            # Transposed conv written as zero insertion + padding + correlation with the flipped kernel.
            k = w.shape[-1]
            u = torch.zeros(1, x.shape[1], x.shape[2] * 2 - 1, x.shape[3] * 2 - 1)
            u[:, :, ::2, ::2] = x[i : i + 1]
            u = F.pad(u, [k - 1] * 4)
            y = F.conv2d(u, w.flip([2, 3]))
            outs.append(ops.upfirdn2d(y, f, padding=(1, 1, 1, 1), gain=4))
    return torch.cat(outs)


@pytest.mark.parametrize("demodulate,up", [(True, 1), (False, 1), (True, 2)])
def test_modulated_conv_grouped_equals_per_sample(demodulate, up):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 6, 6, generator=g)
    weight = torch.randn(5, 4, 3, 3, generator=g)
    styles = torch.rand(3, 4, generator=g) + 0.5
    f = ops.make_filter()
    got, d = ops.modulated_conv2d(x, weight, styles, demodulate=demodulate, up=up, resample_filter=f)
    assert d is None  # the grouped form folds the demodulation into its weights
    want = per_sample_modconv(x, weight, styles, demodulate, up, f)
    assert got.shape == (3, 5, 6 * up, 6 * up)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_demodulation_normalises_output_filters():
    g = torch.Generator().manual_seed(2)
    weight = torch.randn(8, 16, 3, 3, generator=g)
    styles = torch.rand(1, 16, generator=g) * 10
    # A single input pixel of 1 at the centre of a 3x3 image picks one kernel tap per output channel;
    # summing over every one-hot input recovers the squared norm of each demodulated filter.
    total = torch.zeros(8)
    for c in range(16):
        for i in range(3):
            for j in range(3):
                x = torch.zeros(1, 16, 3, 3)
                x[0, c, i, j] = 1
                y, _ = ops.modulated_conv2d(x, weight, styles)
                total += y[0, :, 1, 1] ** 2
    torch.testing.assert_close(total, torch.ones(8), atol=1e-5, rtol=1e-5)
