"""EQ: target curves, reference matching, the linear-phase mid/side FIR."""

from __future__ import annotations

import numpy as np
import pytest

from app.engine.errors import ParameterError
from app.engine.mastering.eq import (
    MidSideFIR,
    band_centers_hz,
    design_linear_phase,
    frequency_response_db,
    reference_moves_db,
    smooth_to_bands_db,
    style_moves_db,
    style_target_db,
)
from app.engine.mastering.plan import STYLES


@pytest.mark.parametrize("sr", [44100, 48000, 96000])
def test_fir_follows_the_curve_within_half_a_db(sr):
    c = band_centers_hz(sr)
    gains = 4.0 * np.sin(np.log2(c / 20.0))  # smooth ±4 dB wiggle, about one per 6 octaves
    taps = design_linear_phase(sr, c, gains)
    sel = (c >= 40) & (c <= 16000)
    got = frequency_response_db(taps, sr, c[sel])
    np.testing.assert_allclose(got, gains[sel], atol=0.5)
    assert len(taps) % 2 == 1
    np.testing.assert_allclose(taps, taps[::-1], atol=1e-12)  # linear phase: symmetric


def test_highpass_removes_dc_and_keeps_the_music():
    sr = 48000
    c = band_centers_hz(sr)
    taps = design_linear_phase(sr, c, np.zeros(len(c)), highpass_hz=20.0)
    assert abs(taps.sum()) < 1e-9  # DC gain exactly zero
    r = frequency_response_db(taps, sr, np.array([5.0, 20.0, 60.0, 1000.0, 15000.0]))
    assert r[0] < -18 and -4.5 < r[1] < -1.5
    np.testing.assert_allclose(r[2:], 0.0, atol=0.3)


@pytest.mark.parametrize("block", [1, 64, 65, 8192, 8193])
def test_streaming_fir_is_block_size_invariant_and_delayed_by_latency(block):
    rng = np.random.default_rng(7)
    sr = 44100
    c = band_centers_hz(sr)
    mid = design_linear_phase(sr, c, np.linspace(-3, 3, len(c)), numtaps=257)
    side = design_linear_phase(sr, c, np.zeros(len(c)), highpass_hz=120.0, highpass_order=4, numtaps=257)
    x = rng.standard_normal((2, 3000)).astype(np.float32) * 0.1
    ref = MidSideFIR(sr, 2, mid_taps=mid, side_taps=side).process(x)
    f = MidSideFIR(sr, 2, mid_taps=mid, side_taps=side)
    got = np.concatenate([f.process(x[:, i : i + block]) for i in range(0, x.shape[1], block)], axis=1)
    np.testing.assert_allclose(got, ref, atol=2e-6)
    # direct convolution of mid/side gives the same thing
    m, s = (x[0] + x[1]) / 2, (x[0] - x[1]) / 2
    ym, ys = np.convolve(m, mid)[: x.shape[1]], np.convolve(s, side)[: x.shape[1]]
    np.testing.assert_allclose(ref[0], ym + ys, atol=2e-5)
    np.testing.assert_allclose(ref[1], ym - ys, atol=2e-5)


def test_mono_bass_and_width_act_on_side_only():
    sr = 48000
    c = band_centers_hz(sr)
    mid = design_linear_phase(sr, c, np.zeros(len(c)))
    side = design_linear_phase(sr, c, np.zeros(len(c)), highpass_hz=120.0, highpass_order=4, gain=1.2)
    f = MidSideFIR(sr, 2, mid_taps=mid, side_taps=side)
    t = np.arange(sr * 2) / sr
    low_left_only = np.stack([np.sin(2 * np.pi * 50 * t), np.zeros_like(t)]).astype(np.float32)
    y = f.process(low_left_only)[:, sr:]  # past the latency
    # 50 Hz panned hard left comes out centred: its side is at least 25 dB down
    side_db = 20 * np.log10(np.std((y[0] - y[1]) / 2) / np.std(low_left_only[0] / 2))
    assert side_db < -25.0
    hi = np.stack([np.sin(2 * np.pi * 3000 * t), -np.sin(2 * np.pi * 3000 * t)]).astype(np.float32)
    y = MidSideFIR(sr, 2, mid_taps=mid, side_taps=side).process(hi)[:, sr:]
    np.testing.assert_allclose(np.std(y[0]) / np.std(hi[0]), 1.2, atol=0.01)  # pure side scaled by width


def test_style_targets_differ_in_the_promised_direction():
    c = band_centers_hz(48000)
    bal = style_target_db(c, "balanced")
    assert (style_target_db(c, "bright") - bal)[c >= 10000].mean() > 1.0
    assert (style_target_db(c, "warm") - bal)[c <= 100].mean() > 1.0
    assert (style_target_db(c, "warm") - bal)[c >= 10000].mean() < -1.0
    assert set(STYLES) <= {"balanced", "warm", "bright", "punchy", "professional", "creative"}
    with pytest.raises(ParameterError):
        style_target_db(c, "loud")


def test_style_moves_are_capped_and_scale_with_amount():
    c = band_centers_hz(48000)
    dull = style_target_db(c, "balanced") - 10.0 * (c > 3000)  # a mix missing its top end
    full = style_moves_db(c, dull, style="balanced", amount=1.0, max_move_db=4.0)
    half = style_moves_db(c, dull, style="balanced", amount=0.5, max_move_db=4.0)
    assert full.max() <= 4.0 + 1e-9 and full.min() >= -4.0 - 1e-9
    assert full[(c > 4000) & (c < 12000)].min() > 2.0  # the top end is lifted
    assert np.all(np.abs(half) <= np.abs(full) + 1e-9)
    flat = style_moves_db(c, style_target_db(c, "balanced"), style="balanced", amount=1.0, max_move_db=4.0)
    np.testing.assert_allclose(flat, 0.0, atol=1e-9)


def test_never_boosts_a_band_the_mix_does_not_have():
    c = band_centers_hz(48000)
    mix = style_target_db(c, "balanced").copy()
    mix[c >= 16000] -= 60.0  # MP3-style cut-off
    moves = style_moves_db(c, mix, style="balanced", amount=1.0, max_move_db=6.0)
    assert np.all(moves[c >= 16000] <= 0.0)


def test_reference_matching_matches_mid_shape_and_side_ratio_within_the_cap():
    c = band_centers_hz(48000)
    base = style_target_db(c, "balanced")
    ref_mid = base + 3.0 * (c > 5000)
    ref_side = base - 12.0
    in_mid = base + 7.0  # louder overall: level must not matter, only shape
    in_side = base + 7.0 - 20.0  # narrower than the reference by 8 dB
    mid, side = reference_moves_db(c, in_mid, in_side, ref_mid, ref_side, amount=1.0, max_move_db=6.0)
    assert np.abs(mid).max() <= 6.0 and np.abs(side).max() <= 6.0
    assert mid[c > 8000].mean() > 2.0 and abs(mid[(c > 200) & (c < 2000)].mean()) < 1.0
    assert side[(c > 200) & (c < 4000)].mean() > 5.0  # widen toward the reference (8 dB), capped at 6


def test_band_smoothing_of_a_sine_lands_in_its_band():
    sr = 48000
    freqs = np.fft.rfftfreq(8192, 1 / sr)
    power = np.full_like(freqs, 1e-12)
    power[np.argmin(np.abs(freqs - 1000))] = 1.0
    c = band_centers_hz(sr)
    levels = smooth_to_bands_db(freqs, power, c)
    assert c[np.argmax(levels)] == 1000


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_long_blocks_cut_into_segments_match_direct_convolution(channels):
    """Long blocks take the segmented (vectorised) overlap-save path; it must agree with
    a direct float64 convolution and with the one-segment path short blocks take."""
    rng = np.random.default_rng(channels)
    sr = 48000
    c = band_centers_hz(sr)
    mid = design_linear_phase(sr, c, np.linspace(-4, 4, len(c)), numtaps=1001)
    side = design_linear_phase(sr, c, np.linspace(3, -3, len(c)), highpass_hz=150.0, numtaps=1001)
    x = (rng.standard_normal((channels, 9001)) * 0.2).astype(np.float32)
    f = MidSideFIR(sr, channels, mid_taps=mid, side_taps=side)
    assert f._segments(channels, 8964) > 1  # the path under test
    got = np.concatenate([f.process(x[:, :8964]), f.process(x[:, 8964:])], axis=1)
    short = MidSideFIR(sr, channels, mid_taps=mid, side_taps=side)
    parts = [short.process(x[:, i : i + 999]) for i in range(0, 9001, 999)]
    one_segment = np.concatenate(parts, axis=1)
    np.testing.assert_allclose(got, one_segment, atol=2e-6)
    x64 = x.astype(np.float64)
    if channels == 2:
        m, s = (x64[0] + x64[1]) / 2, (x64[0] - x64[1]) / 2
        ym, ys = np.convolve(m, mid)[:9001], np.convolve(s, side)[:9001]
        want = np.stack([ym + ys, ym - ys])
    else:
        want = np.stack([np.convolve(row, mid)[:9001] for row in x64])
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_reference_match_lands_on_the_reference_as_judged_on_its_own_level():
    """Judged as the benchmark judges (each spectrum on its own 100 Hz-8 kHz mid level), a
    100 % match lands within a fraction of a dB wherever no cap binds, even when one band
    needs far more than the cap; a too-wide side is narrowed past the boost cap."""
    c = band_centers_hz(48000)
    base = style_target_db(c, "balanced")
    ref_mid, ref_side = base.copy(), base - 15.0
    in_mid = base + np.where((c > 300) & (c < 700), 18.0, 0.0)  # a 18 dB lump in the low mids
    in_side = base - 15.0 + np.where((c > 250) & (c < 1600), 22.0, 0.0)  # far wider there
    mid, side = reference_moves_db(c, in_mid, in_side, ref_mid, ref_side, amount=1.0, max_move_db=12.0)
    sel = (c >= 100) & (c <= 8000)
    out_mid, out_side = in_mid + mid, in_side + side
    a_out, a_ref = out_mid[sel].mean(), ref_mid[sel].mean()
    free = (c >= 100) & (c <= 8000) & ~((c > 250) & (c < 800))
    assert np.abs((out_mid - a_out) - (ref_mid - a_ref))[free].max() < 1.0
    assert side.min() < -16.0 and side.min() >= -24.0 and mid.max() <= 12.0
    wide = (c > 400) & (c < 1250)
    assert np.abs((out_side - a_out) - (ref_side - a_ref))[wide].max() < 3.0
