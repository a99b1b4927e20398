"""Output meters against app.engine.analysis; the live master chain against the offline stages."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.engine import analysis
from app.engine.errors import ParameterError
from app.engine.mastering.chain import FinalStage, PreChain
from app.engine.mastering.plan import MasteringPlan
from app.engine.playback import (
    AddTrack,
    AudioTrack,
    Engine,
    LiveMasterChain,
    OutputMeters,
    Play,
    ResetMeters,
    SetMasterChain,
    ThreadedMasterChain,
)
from tests.engine.playback.helpers import noise, plan


@pytest.mark.parametrize("sr", [44100, 48000, 96000])
@pytest.mark.parametrize("block", [64, 65, 8193])
def test_meters_agree_with_the_analysis_module(sr, block, rng):
    seconds = 4
    x = noise(rng, seconds * sr, level=0.2, corr=0.6)
    x[:, sr : sr + 10] *= 3.0  # a peak to find
    meters = OutputMeters(sr, 8193)
    for i in range(0, x.shape[1], block):
        meters.process(x[:, i : i + block])
    r = meters.reading
    assert r.frames == seconds * sr
    lm = analysis.LoudnessMeter(sr, 2)
    lm.process(x)
    assert r.momentary_lufs == pytest.approx(lm.momentary_lufs[-1], abs=1e-6)
    assert r.short_term_lufs == pytest.approx(lm.short_term_lufs[-1], abs=1e-6)
    last = x[:, -(sr // 10) :]
    assert r.sample_peak_dbfs == pytest.approx(tuple(20 * np.log10(np.abs(last).max(axis=1))), abs=1e-6)
    # true peak: the meter lags its 8-frame look-ahead, so the hold covers all but the last 8 frames
    tp = analysis.true_peak(x[:, : -8], sr)
    assert r.true_peak_max_dbtp == pytest.approx(20 * math.log10(tp), abs=1e-4)
    window = x[:, -(4 * sr // 10) :]
    assert r.correlation == pytest.approx(analysis.analyze(window, sr).correlation, abs=1e-6)


def test_meters_in_the_engine_snapshot_and_reset(rng):
    sr = 48000
    x = np.zeros((2, sr), dtype=np.float32)
    t = np.arange(sr) / sr
    x[0] = x[1] = 0.5 * np.sin(2 * np.pi * 997 * t)
    eng = Engine(sr)
    eng.send(AddTrack(AudioTrack("a", x)))
    eng.send(Play())
    eng.render(sr // 2)
    m = eng.snapshot().meters
    assert m.sample_peak_dbfs[0] == pytest.approx(-6.02, abs=0.01)
    assert m.correlation == pytest.approx(1.0, abs=1e-9)
    # a 997 Hz sine at -6 dBFS on both channels: about -6 + 3 (two channels) - 3 (sine) -0.69 + K-weighting
    assert m.momentary_lufs == pytest.approx(analysis.integrated_loudness(x[:, :19200], sr), abs=0.05)
    eng.send(ResetMeters())
    eng.render(10)
    assert eng.snapshot().meters.true_peak_max_dbtp == -math.inf


# ------------------------------------------------------------------ live master chain


def _offline(p: MasteringPlan, gain_db: float, x: np.ndarray) -> np.ndarray:
    pre = PreChain(p)
    y = np.concatenate([pre.process(x), pre.flush()], axis=1)
    final = FinalStage(p, gain_db)
    return np.concatenate([final.process(y), final.flush()], axis=1)


@pytest.mark.parametrize("internal", [256, 1024])
def test_live_chain_is_the_offline_chain_delayed_by_its_latency(internal, rng):
    sr = 48000
    p = plan(sr)
    x = noise(rng, sr, level=0.3)
    ref = _offline(p, 6.0, x)
    chain = LiveMasterChain(p, 6.0, internal_block_frames=internal)
    d = chain.latency_frames
    src = np.concatenate([x, np.zeros((2, d), np.float32)], axis=1)
    out = np.zeros_like(src)
    for i in range(0, src.shape[1], 300):
        chain.process(src[:, i : i + 300], out[:, i : i + 300])
    assert chain.underflows == 0
    assert np.all(out[:, :d] == 0)
    # same stages, different FFT sizes for the FIR: equal to float32 rounding
    np.testing.assert_allclose(out[:, d:], ref, atol=2e-5)
    assert analysis.true_peak(out, sr) <= 10 ** (p.limiter.ceiling_dbtp / 20) * 1.001


def test_live_chain_output_does_not_depend_on_callback_size(rng):
    p = plan(48000)
    x = noise(rng, 30000, level=0.3)

    def run(block: int) -> np.ndarray:
        chain = LiveMasterChain(p, 3.0)
        out = np.zeros_like(x)
        for i in range(0, x.shape[1], block):
            chain.process(x[:, i : i + block], out[:, i : i + block])
        return out

    ref = run(30000)
    for block in (1, 64, 65, 8193):
        np.testing.assert_array_equal(run(block), ref)


def test_live_chain_checks_its_input():
    with pytest.raises(ParameterError):
        LiveMasterChain(plan(48000), 0.0, internal_block_frames=10)
    bad = plan(48000)
    bad.limiter.ceiling_dbtp = 3.0
    with pytest.raises(ParameterError):
        LiveMasterChain(bad, 0.0)
    mono = MasteringPlan(sample_rate=44100, channels=1)
    assert LiveMasterChain(mono).plan.channels == 2


def test_threaded_chain_is_the_inline_chain_delayed_by_its_slack(rng):
    p = plan(48000)
    x = noise(rng, 40000, level=0.3)
    inline = LiveMasterChain(p, 3.0)
    ref = np.zeros_like(x)
    inline.process(x, ref)
    th = ThreadedMasterChain(LiveMasterChain(p, 3.0), slack_frames=1000)
    try:
        assert th.latency_frames == inline.latency_frames + 1000
        out = np.zeros_like(x)
        for i in range(0, x.shape[1], 256):
            th.process(x[:, i : i + 256], out[:, i : i + 256])
            assert th.wait_idle()  # a paced "device": the worker always keeps up
        assert th.underflows == 0 and th.lost_frames == 0
        np.testing.assert_array_equal(out[:, 1000:], ref[:, :-1000])
        assert np.all(out[:, :1000] == 0)
    finally:
        th.close()
    # a stopped worker: the callback still returns at once; the slack's worth of frames
    # already processed plays, the rest is silence, counted
    blk = np.ones((2, 2000), np.float32)
    th.process(blk, blk)
    assert th.underflows == 1 and np.all(blk[:, 1000:] == 0) and np.any(blk[:, :1000] != 0)


def test_engine_closes_a_replaced_threaded_chain_off_the_audio_thread():
    eng = Engine(48000)
    th = ThreadedMasterChain(LiveMasterChain(plan(48000), 0.0))
    eng.send(SetMasterChain(th))
    eng.render(256)
    assert eng.snapshot().latency_frames == th.latency_frames
    eng.send(SetMasterChain(None))
    eng.render(256)
    assert th._thread.is_alive()  # dropped on the audio thread, not closed there
    eng.snapshot()  # the UI's timer collects it
    assert not th._thread.is_alive() and eng.snapshot().latency_frames == 0


def test_live_chain_memory_does_not_grow_with_playback_time(rng):
    chain = LiveMasterChain(plan(48000), 3.0)
    x = noise(rng, 4096, level=0.3)
    for _ in range(40):
        chain.process(x, x.copy())
    assert chain._pre.compressor_gr_db == [] and chain._final.limiter_gr_db == []
    assert len(chain._final._pending) <= 2
