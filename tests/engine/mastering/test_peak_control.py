"""Peak control that does not pump: the oversampled clipper, the program-dependent limiter
release, the section-following glue and the dynamics guard."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from app.engine import analysis
from app.engine.errors import ParameterError
from app.engine.mastering.chain import gr_stats, master_file, spectrum_of
from app.engine.mastering.dynamics import LinkedCompressor, OversampledClipper, soft_clip
from app.engine.mastering.limiter import LimiterEnvelope
from app.engine.mastering.planner import MasterSettings

SR = 48000


def _run_clipper(x: np.ndarray, block: int, **kw) -> np.ndarray:
    c = OversampledClipper(SR, x.shape[0], **kw)
    parts = [c.process(x[:, i : i + block]) for i in range(0, x.shape[1], block)]
    return np.concatenate([*parts, c.flush()], axis=1)[:, c.latency_frames :]


def _transients(seconds: float = 4.0, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = 0.25 * np.sin(2 * np.pi * 110 * t) + 0.03 * rng.standard_normal(t.size)
    for k in range(int(seconds * 2.66)):  # a snare-like burst at the beat rate
        i = int(k / 2.66 * SR)
        n = min(240, x.size - i)
        x[i : i + n] += 0.9 * np.exp(-np.arange(n) / 40.0) * rng.standard_normal(n)
    return np.stack([x, 0.9 * x]).astype(np.float32)


@pytest.mark.parametrize("block", [1, 65, 8193])
def test_clipper_streams_exactly_and_passes_quiet_audio_untouched(block):
    x = _transients(1.0)
    whole = _run_clipper(x, x.shape[1], threshold_db=-3.0, ceiling_db=-1.0)
    assert whole.shape == x.shape
    np.testing.assert_array_equal(_run_clipper(x, block, threshold_db=-3.0, ceiling_db=-1.0), whole)
    quiet = (x * 0.1).astype(np.float32)
    np.testing.assert_array_equal(_run_clipper(quiet, 4096, threshold_db=-3.0, ceiling_db=-1.0), quiet)


def test_clipper_takes_peaks_down_without_dc():
    x = _transients(4.0)
    x = np.where(x > 0, x * 1.6, x).astype(np.float32)  # asymmetric: positive peaks only get clipped
    y = _run_clipper(x, 65536, threshold_db=-3.0, ceiling_db=-1.0)
    tp_in = analysis.true_peak_frames(x, SR).max()
    tp_out = analysis.true_peak_frames(y, SR).max()
    assert 20 * np.log10(tp_in / tp_out) > 2.0
    # the memoryless clipper shifts the mean (a DC step); the oversampled one's correction is DC-blocked
    naive = soft_clip(x, threshold_db=-3.0, ceiling_db=-1.0)
    tail = slice(SR, None)  # after the DC blocker's settling time
    dc_naive = abs(float((naive - x)[:, tail].astype(np.float64).mean()))
    dc_ours = abs(float((y - x)[:, tail].astype(np.float64).mean()))
    assert dc_naive > 1e-4 and dc_ours < 0.05 * dc_naive


def test_clipper_aliasing_is_bounded():
    t = np.arange(SR) / SR
    f0 = 7000.0  # 3rd harmonic 21 kHz stays, 5th (35 kHz) folds to 13 kHz without oversampling
    x = np.stack([0.9 * np.sin(2 * np.pi * f0 * t)] * 2).astype(np.float32)
    y = _run_clipper(x, 65536, threshold_db=-8.0, ceiling_db=-4.0)
    naive = soft_clip(x, threshold_db=-8.0, ceiling_db=-4.0)

    def level_at(sig: np.ndarray, f: float) -> float:
        spec = np.abs(np.fft.rfft(sig[0] * np.hanning(sig.shape[1])))
        k = round(f * sig.shape[1] / SR)
        return 20 * np.log10(spec[k - 3 : k + 4].max() / spec.max())

    assert level_at(naive, 13000.0) > -60.0  # the alias is there without oversampling
    assert level_at(y, 13000.0) < level_at(naive, 13000.0) - 20.0


def test_clipper_refuses_bad_curves():
    with pytest.raises(ParameterError):
        OversampledClipper(SR, 2, threshold_db=-1.0, ceiling_db=-3.0)


def _beats(seconds: float = 6.0) -> np.ndarray:
    """Per-frame peaks: a body that needs no reduction, and 2 ms hits needing 6 dB at 2.66 Hz."""
    p = np.full(int(seconds * SR), 0.5)
    for k in range(int(seconds * 2.66)):
        i = int(k / 2.66 * SR)
        p[i : i + 96] = 0.89 * 10 ** (6 / 20)
    return p


def test_program_dependent_release_recovers_fast_after_transients_and_stays_safe():
    peaks = _beats()
    classic = LimiterEnvelope(SR, ceiling_dbtp=-1.0, release_ms=120.0)
    dual = LimiterEnvelope(SR, ceiling_dbtp=-1.0, release_ms=500.0, transient_release_ms=30.0, sustain_ms=1000.0)
    g_classic, g_dual = classic.process(peaks), dual.process(peaks)
    over = [float(np.mean(-20 * np.log10(g) > 1.0)) for g in (g_classic, g_dual)]
    assert over[1] < 0.5 * over[0]  # the dips are short: far less time spent ducked
    # safety: every frame comes out at or under the ceiling (gains are for frames ``latency`` earlier)
    d = dual.latency_frames
    out = peaks[: peaks.size - d] * g_dual[d:]
    assert out.max() <= dual.ceiling * (1 + 1e-12)


def test_dense_hits_cost_less_reduction_than_the_classic_release():
    """Hits at 8 Hz (a busy loud passage): the classic release never recovers between hits;
    the program-dependent one recovers quickly after each, so less is taken off overall."""
    p = np.full(int(6 * SR), 0.5)
    for k in range(6 * 8):
        i = int(k / 8 * SR)
        p[i : i + 96] = 0.89 * 10 ** (4 / 20)
    classic = LimiterEnvelope(SR, ceiling_dbtp=-1.0, release_ms=120.0).process(p)
    dual = LimiterEnvelope(SR, ceiling_dbtp=-1.0, release_ms=500.0, transient_release_ms=30.0, sustain_ms=1000.0).process(p)
    mean_gr = [float(np.mean(-20 * np.log10(g[SR:]))) for g in (classic, dual)]
    assert mean_gr[1] < mean_gr[0] - 0.5


def test_section_following_glue_keeps_a_quiet_intro_quiet():
    x = _transients(20.0)
    x[:, : 10 * SR] *= 10 ** (-10 / 20)  # a quiet first half, same crest
    loud_db = float(10 * np.log10(np.mean(x[:, 10 * SR :].astype(np.float64) ** 2)))
    kw = dict(threshold_db=loud_db - 3.0, ratio=3.0, attack_ms=5.0, release_ms=100.0, detector="rms")
    fixed = LinkedCompressor(SR, 2, **kw)
    follow = LinkedCompressor(SR, 2, **kw, section_window_ms=1000.0, section_ref_db=loud_db, max_gr_db=4.0)
    gr = {}
    for name, comp in (("fixed", fixed), ("follow", follow)):
        comp.process(x)
        g = comp.last_gain_reduction_db
        # each half once the 1 s section level has settled on it
        gr[name] = (float(g[5 * SR : 10 * SR].mean()), float(g[15 * SR :].mean()), float(g.max()))
    # fixed threshold: the loud half is compressed, the quiet half not -> contrast shrinks
    assert gr["fixed"][1] > gr["fixed"][0] + 1.0
    # following: both halves get about the same treatment, within the range
    assert abs(gr["follow"][1] - gr["follow"][0]) < 0.5 * abs(gr["fixed"][1] - gr["fixed"][0])
    assert gr["follow"][2] <= 4.0 + 1e-6


def _high_crest_song(path, seconds: float = 12.0) -> None:
    x = _transients(seconds, seed=7) * 0.35
    sf.write(path, x.T, SR, subtype="FLOAT")


def test_guard_lands_below_the_target_rather_than_pump(tmp_path):
    src = tmp_path / "drums.wav"
    _high_crest_song(src)
    out = tmp_path / "m.wav"
    r = master_file(src, out, MasterSettings())
    rep = r.to_report()["result"]
    assert rep["guard"]["engaged"] and "dynamics guard" in rep["guard"]["reason"]
    assert r.after.integrated_lufs < -14.2  # below the target, as the guard said
    assert abs(r.after.integrated_lufs - r.plan.loudness.aim_lufs) <= 0.2
    assert rep["limiter_gr"]["max_db"] <= r.plan.loudness.max_limiter_gr_db + 0.3
    assert rep["limiter_gr"]["over_1db_pct"] <= r.plan.loudness.max_limiter_over_1db_pct + 1.0
    assert r.after.true_peak_dbtp <= -1.0 + 1e-9
    assert not rep["within_spec"]
    # asked for loudness first, the target is met whatever it takes
    out2 = tmp_path / "loud.wav"
    r2 = master_file(src, out2, MasterSettings(loudness_first=True))
    assert abs(r2.loudness_error_lu) <= 0.2 and r2.after.true_peak_dbtp <= -1.0 + 1e-9
    assert not r2.to_report()["result"]["guard"]["engaged"]
    assert r2.to_report()["result"]["limiter_gr"]["max_db"] > rep["limiter_gr"]["max_db"]
    # the recorded plan renders the same landing again
    out3 = tmp_path / "again.wav"
    r3 = master_file(src, out3, plan=r.plan)
    assert abs(r3.after.integrated_lufs - r.after.integrated_lufs) <= 0.05


def test_gr_stats():
    s = gr_stats(np.array([0.0, 0.5, 2.0, 3.0]))
    assert s == {"max_db": 3.0, "mean_db": 1.375, "over_1db_pct": 50.0}
    assert gr_stats(np.zeros(0))["max_db"] == 0.0


def test_section_ride_puts_sections_back_where_they_were():
    from app.engine.mastering.chain import RideCurve, section_ride_db

    src = np.r_[np.full(100, -24.0), np.full(100, -14.0)]
    pre = np.r_[np.full(100, -22.0), np.full(100, -14.0)]  # the processing lifted the intro 2 dB
    d = section_ride_db(src, pre, max_db=3.0)
    assert d[20:80].mean() - d[120:180].mean() == pytest.approx(-2.0, abs=0.05)
    assert np.all(np.abs(d) <= 3.0)
    # a 10 dB change is beyond the ride's range: clamped, never more
    assert np.all(np.abs(section_ride_db(src, src + np.r_[np.full(100, 10.0), np.zeros(100)], max_db=3.0)) <= 3.0)
    # silence and windows 20 LU under the loudest do not steer it
    quiet = src.copy()
    quiet[:30] = -np.inf
    quiet[30:60] = -60.0
    assert np.all(np.isfinite(section_ride_db(quiet, pre, max_db=3.0)))
    r = RideCurve(np.array([0.0, 6.0, 0.0]), SR, 2 * SR)  # centres at 1.5, 1.6 and 1.7 s
    f = np.arange(0, 2 * SR)
    want = np.interp(f, (np.arange(3) / 10 + 1.5) * SR, [0.0, 6.0, 0.0])
    got = 20 * np.log10(np.concatenate([r.gains(i, 1000) for i in range(0, 2 * SR, 1000)]))
    assert np.max(np.abs(got - want)) < 6.0 * 64 / (0.1 * SR) + 1e-4  # one 64-frame step of the slope
    np.testing.assert_array_equal(np.concatenate([r.gains(0, 777), r.gains(777, 5000)]), r.gains(0, 5777))
    assert np.all(r.gains(2 * SR - 10, 500) == r.gains(2 * SR - 10, 1)[0])  # held past the end


def test_section_ride_in_memory_restores_the_balance_an_eq_moved():
    from app.engine.mastering.chain import ride_in_memory
    from app.engine.mastering.planner import make_plan

    x = _transients(24.0)
    x[:, : 12 * SR] *= 10 ** (-6 / 20)
    moved = x.copy()
    moved[:, 12 * SR :] *= 10 ** (2.5 / 20)  # as if the EQ had lifted the loud half's content

    def contrast(a: np.ndarray) -> float:
        return analysis.integrated_loudness(a[:, 14 * SR :], SR) - analysis.integrated_loudness(a[:, 2 * SR : 10 * SR], SR)

    plan = make_plan(
        sample_rate=SR, channels=2, integrated_lufs=-16.0, loudness_range_lu=6.0,
        short_term_lufs=np.linspace(-22, -14, 100), correlation=0.8,
        spectrum=spectrum_of(analysis.analyze(x, SR)),
        settings=MasterSettings(),
    )  # fmt: skip
    assert plan.section_ride.enabled
    fixed = ride_in_memory(x, moved, plan)
    assert abs(contrast(moved) - contrast(x)) > 2.0
    assert abs(contrast(fixed) - contrast(x)) < 0.5


def test_report_gives_section_dynamics_before_and_after(tmp_path):
    from app.engine.mastering.chain import section_contrast_lu

    st = [-30.0] * 100 + [-20.0] * 100 + [None] * 5 + [-24.0] * 100
    assert section_contrast_lu(st, -22.0) == pytest.approx(10.0, abs=0.01)
    assert section_contrast_lu(st[:150], -22.0) is None  # one whole section only
    src = tmp_path / "song.wav"
    x = _transients(25.0)
    x[:, : 10 * SR] *= 10 ** (-8 / 20)
    sf.write(src, x.T, SR, subtype="FLOAT")
    sec = master_file(src, tmp_path / "m.wav").to_report()["result"]["sections"]
    assert sec["contrast_before_lu"] > 5.0
    assert abs(sec["contrast_after_lu"] - sec["contrast_before_lu"]) < 1.0
    assert abs(sec["lra_after_lu"] - sec["lra_before_lu"]) < 1.0
