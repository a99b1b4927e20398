"""True-peak look-ahead limiter: the ceiling holds, for anything."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.engine import analysis
from app.engine.errors import ParameterError
from app.engine.mastering.limiter import DelayLine, LimiterEnvelope, limit


def _tp_db(x: np.ndarray, sr: int) -> float:
    return 20 * np.log10(analysis.true_peak(x, sr))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    gain_db=st.floats(-6.0, 30.0),
    ceiling=st.floats(-6.0, 0.0),
    sr=st.sampled_from([44100, 48000, 96000]),
    kind=st.sampled_from(["noise", "clicks", "hf", "bursts"]),
    lookahead_ms=st.floats(1.0, 10.0),
    release_ms=st.floats(5.0, 500.0),
)
def test_output_true_peak_never_exceeds_the_ceiling(seed, gain_db, ceiling, sr, kind, lookahead_ms, release_ms):
    rng = np.random.default_rng(seed)
    n = 6000
    if kind == "noise":
        x = rng.standard_normal((2, n)) * 0.3
    elif kind == "clicks":
        x = np.zeros((2, n))
        idx = rng.integers(0, n, 40)
        x[:, idx] = rng.choice([-1.0, 1.0], size=(2, 40))
    elif kind == "hf":  # near-Nyquist tones: the worst inter-sample overs
        t = np.arange(n) / sr
        x = np.stack([np.sin(2 * np.pi * sr * 0.45 * t + 0.7), np.sin(2 * np.pi * sr / 4 * t + np.pi / 4)])
    else:
        x = rng.standard_normal((2, n)) * (rng.random((1, n)) > 0.97) * 0.8
    x = (x * 10 ** (gain_db / 20)).astype(np.float32)
    y, gr = limit(x, sr, ceiling_dbtp=ceiling, lookahead_ms=lookahead_ms, release_ms=release_ms)
    assert y.shape == x.shape and gr.shape == (n,)
    assert _tp_db(y, sr) <= ceiling + 1e-6
    assert np.all(gr >= 0)


def test_quiet_material_passes_untouched():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((2, 48000)) * 0.01).astype(np.float32)
    y, gr = limit(x, 48000, ceiling_dbtp=-1.0)
    np.testing.assert_array_equal(y, x)
    assert gr.max() == 0.0


def test_gain_reduction_matches_the_overshoot_and_releases():
    sr = 48000
    t = np.arange(sr) / sr
    x = np.zeros((2, sr * 2), dtype=np.float32)
    x[:, :sr] = 0.5 * np.sin(2 * np.pi * 1000 * t)  # -6 dBFS for 1 s, then silence
    x[:, sr // 2 : sr // 2 + 480] *= 4.0  # a 10 ms burst 12 dB louder (+6 dBFS)
    y, gr = limit(x, sr, ceiling_dbtp=-1.0, release_ms=50.0)
    peak_gr = gr.max()
    assert 6.5 < peak_gr < 7.6  # +6 dB -> -1 dB (+ margin)
    # 0.5 s after the burst the limiter is back to unity (release 50 ms)
    assert gr[sr // 2 + 480 + sr // 4 : sr].max() < 0.05
    assert _tp_db(y, sr) <= -1.0


@pytest.mark.parametrize("block", [1, 64, 65, 8192, 8193])
def test_envelope_is_block_size_invariant(block):
    rng = np.random.default_rng(11)
    peaks = np.abs(rng.standard_normal(20000)) * 1.5
    ref = LimiterEnvelope(48000, ceiling_dbtp=-1.0).process(peaks)
    env = LimiterEnvelope(48000, ceiling_dbtp=-1.0)
    got = np.concatenate([env.process(peaks[i : i + block]) for i in range(0, len(peaks), block)])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_envelope_gain_is_under_every_peaks_requirement_around_it():
    rng = np.random.default_rng(5)
    env = LimiterEnvelope(44100, ceiling_dbtp=-2.0, lookahead_ms=3.0)
    peaks = np.abs(rng.standard_normal(30000)) * 2
    d = env.latency_frames
    g = np.concatenate([env.process(peaks), env.process(np.zeros(d))])[d:]
    req = env.required_gain(peaks)
    k = env.guard_frames
    for q in np.argsort(req)[:200]:  # the 200 hardest peaks
        lo, hi = max(0, q - k), min(len(g), q + k + 1)
        assert g[lo:hi].max() <= req[q] + 1e-12


def test_delay_line_delays_exactly():
    d = DelayLine(2, 5)
    x = np.arange(20, dtype=np.float32).reshape(2, 10)
    y = np.concatenate([d.process(x[:, :3]), d.process(x[:, 3:])], axis=1)
    np.testing.assert_array_equal(y[:, 5:], x[:, :5])
    np.testing.assert_array_equal(y[:, :5], 0)


@pytest.mark.parametrize(
    "kwargs", [dict(lookahead_ms=0.1), dict(release_ms=0), dict(ceiling_dbtp=1.0), dict(margin_db=-1)]
)
def test_bad_parameters_are_refused(kwargs):
    with pytest.raises(ParameterError):
        LimiterEnvelope(48000, **kwargs)
    with pytest.raises(ParameterError):
        LimiterEnvelope(4000)


def _reference_envelope(req: np.ndarray, env: LimiterEnvelope) -> np.ndarray:
    """The envelope written out directly: an explicit window minimum (unity before the
    signal), the release recursion and a running box sum, frame by frame."""
    window, box_len = env._window, env._box_len
    padded = np.concatenate([np.ones(window - 1), req])
    out = np.empty_like(req)
    g_prev, box_sum = 1.0, float(box_len)
    box = np.ones(box_len)
    for i in range(len(req)):
        h = padded[i : i + window].min()
        rel = 1.0 - (1.0 - g_prev) * env._release
        g = h if h < rel else rel
        g_prev = g
        box_sum += g - box[i % box_len]
        box[i % box_len] = g
        out[i] = min(box_sum / box_len, 1.0)
    return out


@pytest.mark.parametrize("kind", ["noise", "bursts", "ramps"])
@pytest.mark.parametrize("block", [1, 257, 4096])
def test_envelope_kernel_equals_a_direct_sliding_minimum(kind, block):
    """The streaming kernel (monotonic deque in a ring buffer) against a plain window
    minimum: bit for bit, across block edges and ring wrap-arounds."""
    rng = np.random.default_rng(len(kind) * 1000 + block)
    n = 12000
    if kind == "noise":
        peaks = np.abs(rng.standard_normal(n)) * 1.5
    elif kind == "bursts":
        peaks = np.where(rng.random(n) < 0.01, 3.0 * rng.random(n), 0.2)
    else:  # long monotonic runs: the deque grows to the whole window, then empties
        peaks = np.abs(np.sin(np.arange(n) / 700.0)) * 2.5
    env = LimiterEnvelope(48000, ceiling_dbtp=-1.0, lookahead_ms=5.0, release_ms=20.0)
    want = _reference_envelope(env.required_gain(peaks), env)
    got = np.concatenate([env.process(peaks[i : i + block]) for i in range(0, n, block)])
    np.testing.assert_array_equal(got, want)
    assert got.min() < 0.5  # the limiter did work


def test_envelope_takes_float32_peaks_like_float64():
    rng = np.random.default_rng(2)
    peaks = (np.abs(rng.standard_normal(5000)) * 2).astype(np.float32)
    a = LimiterEnvelope(44100).process(peaks)
    b = LimiterEnvelope(44100).process(peaks.astype(np.float64))
    np.testing.assert_array_equal(a, b)
