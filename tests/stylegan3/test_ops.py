"""StyleGAN3 operators: the filter designs' known properties and the filtered leaky ReLU's algebra."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nada.stylegan2.ops import upfirdn2d
from nada.stylegan3.ops import (
    filtered_lrelu,
    kaiser_atten,
    kaiser_beta,
    lowpass_filter,
    radial_lowpass_filter,
)


def response(h: np.ndarray, freqs: np.ndarray, fs: float) -> np.ndarray:
    """|H(f)| of a symmetric FIR filter at the given frequencies."""
    m = np.arange(len(h)) - (len(h) - 1) / 2
    return np.abs(np.exp(-2j * np.pi * np.outer(freqs / fs, m)) @ h)


def test_kaiser_formulas_known_values():
    # Kaiser's formulas (Oppenheim & Schafer 7.62/7.63): beta at 21 dB is 0, above 50 dB linear
    assert kaiser_beta(20.0) == 0.0
    assert kaiser_beta(60.0) == pytest.approx(0.1102 * 51.3)
    assert kaiser_beta(30.0) == pytest.approx(0.5842 * 9**0.4 + 0.07886 * 9)
    assert kaiser_atten(13, 0.1) == pytest.approx(2.285 * 12 * math.pi * 0.1 + 7.95)


@pytest.mark.parametrize(
    "numtaps, cutoff, width, fs", [(12, 2.0, 2.4, 16.0), (24, 5.5, 3.0, 32.0), (12, 64.0, 40.0, 256.0)]
)
def test_lowpass_filter_is_a_lowpass(numtaps, cutoff, width, fs):
    h = lowpass_filter(numtaps, cutoff, width, fs).double().numpy()
    assert h.shape == (numtaps,)
    np.testing.assert_allclose(h, h[::-1], atol=1e-7)  # linear phase
    assert h.sum() == pytest.approx(1.0, abs=1e-6)  # unit gain at DC
    ripple = 10 ** (-kaiser_atten(numtaps, width / (fs / 2)) / 20)
    stop = np.linspace(cutoff + width / 2, fs / 2, 64)
    assert response(h, stop, fs).max() < 3 * ripple + 1e-6  # the design's attenuation, with slack
    assert response(h, np.array([cutoff]), fs)[0] == pytest.approx(0.5, abs=0.08)  # -6 dB at the cutoff


def test_lowpass_with_rectangular_window_is_the_plain_sinc():
    # a transition so narrow that the attenuation is below 21 dB gives beta = 0 (no window)
    numtaps, cutoff, fs = 8, 3.0, 16.0
    width = 0.01
    assert kaiser_beta(kaiser_atten(numtaps, width / (fs / 2))) == 0.0
    m = np.arange(numtaps) - (numtaps - 1) / 2
    sinc = np.sinc(2 * cutoff / fs * m)
    np.testing.assert_allclose(lowpass_filter(numtaps, cutoff, width, fs).numpy(), sinc / sinc.sum(), atol=1e-7)


def test_one_tap_is_the_identity():
    assert lowpass_filter(1, 2.0, 1.0, 8.0) is None
    assert radial_lowpass_filter(1, 2.0, 1.0, 8.0) is None


@pytest.mark.parametrize("numtaps", [12, 13])
def test_radial_filter_symmetries_and_gain(numtaps):
    f = radial_lowpass_filter(numtaps, 4.0, 3.0, 32.0)
    assert f.shape == (numtaps, numtaps) and torch.isfinite(f).all()
    assert f.sum().item() == pytest.approx(1.0, abs=1e-6)
    for g in (f.T, f.flip(0), f.flip(1), f.flip(0).T):  # the eight symmetries of the square
        torch.testing.assert_close(g, f, atol=1e-8, rtol=0)
    # DC gain 1, the stopband attenuated as the window promises, and about half the direction
    # dependence of the separable design with the same taps (axis vs diagonal at equal radius)
    m = np.arange(numtaps) - (numtaps - 1) / 2

    def resp(h: np.ndarray, fx: float, fy: float) -> float:
        return abs(np.exp(-2j * np.pi * fy / 32.0 * m) @ h @ np.exp(-2j * np.pi * fx / 32.0 * m))

    def anisotropy(h: np.ndarray) -> float:
        return max(abs(resp(h, r, 0) - resp(h, r / math.sqrt(2), r / math.sqrt(2))) for r in np.linspace(0, 8, 33))

    h = f.double().numpy()
    assert resp(h, 0, 0) == pytest.approx(1.0, abs=1e-6)
    ripple = 10 ** (-kaiser_atten(numtaps, 3.0 / 16.0) / 20)
    for r in np.linspace(4.0 + 1.5, 16, 12):
        assert max(resp(h, r, 0), resp(h, r / math.sqrt(2), r / math.sqrt(2))) < 3 * ripple
    sep = lowpass_filter(numtaps, 4.0, 3.0, 32.0).double().numpy()
    assert anisotropy(h) < 0.6 * anisotropy(np.outer(sep, sep))


def test_separable_filter_equals_its_outer_product():
    x = torch.randn(2, 3, 11, 9, dtype=torch.float64)
    f = torch.tensor([0.1, 0.4, 0.4, 0.1], dtype=torch.float64)
    a = upfirdn2d(x, f, up=2, padding=(2, 1, 2, 1), gain=4)
    b = upfirdn2d(x, f[:, None] * f[None, :], up=2, padding=(2, 1, 2, 1), gain=4)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@settings(max_examples=25, deadline=None)
@given(st.floats(-3, 3), st.floats(0.0, 1.0), st.sampled_from([None, 0.5, 2.0]))
def test_filtered_lrelu_without_filters_is_bias_lrelu_gain_clamp(b, slope, clamp):
    x = torch.randn(1, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    bias = torch.tensor([b, -b])
    y = filtered_lrelu(x, None, None, bias, gain=1.7, slope=slope, clamp=clamp)
    ref = torch.nn.functional.leaky_relu(x + bias[None, :, None, None], slope) * 1.7
    if clamp is not None:
        ref = ref.clamp(-clamp, clamp)
    torch.testing.assert_close(y, ref, atol=1e-6, rtol=0)


def test_filtered_lrelu_keeps_a_constant_signal_in_the_interior():
    # up-sampling (gain up**2 with a unit-DC filter) and down-sampling keep constants, so a constant
    # input comes out as lrelu(c + b) * gain away from the borders
    fu = lowpass_filter(12, 2.0, 2.0, 16.0)
    fd = lowpass_filter(12, 2.0, 2.0, 16.0)
    x = torch.full((1, 2, 20, 20), -1.5)
    b = torch.tensor([0.5, 3.0])
    y = filtered_lrelu(x, fu, fd, b, up=2, down=2, padding=(11, 10, 11, 10), gain=math.sqrt(2), slope=0.2)
    inner = y[:, :, 8:-8, 8:-8]
    expect = torch.tensor([-1.0 * 0.2, 1.5]) * math.sqrt(2)
    torch.testing.assert_close(inner, expect[None, :, None, None].expand_as(inner), atol=2e-5, rtol=0)


def test_filtered_lrelu_is_linear_when_the_slope_is_one():
    fu = lowpass_filter(12, 3.0, 2.0, 16.0)
    fd = radial_lowpass_filter(12, 3.0, 2.0, 16.0)
    x = torch.randn(2, 3, 10, 10, dtype=torch.float64)
    zero = torch.zeros(3, dtype=torch.float64)
    kw = dict(up=2, down=2, padding=(5, 5, 5, 5), gain=1.0, slope=1.0)
    y = filtered_lrelu(x, fu.double(), fd.double(), zero, **kw)
    torch.testing.assert_close(filtered_lrelu(-2.5 * x, fu.double(), fd.double(), zero, **kw), -2.5 * y)
