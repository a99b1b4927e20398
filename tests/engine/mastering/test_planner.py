"""Planner: each decision follows from the mix and the request, and says why."""

from __future__ import annotations

import numpy as np
import pytest

from app.engine.errors import ParameterError
from app.engine.mastering.eq import band_centers_hz, style_target_db
from app.engine.mastering.planner import MasterSettings, SpectrumBands, average_spectra, make_plan


def _spec(sr: int = 48000, tilt: float = 0.0, side_offset: float = -12.0) -> SpectrumBands:
    c = band_centers_hz(sr)
    mid = style_target_db(c, "balanced") + tilt * np.log2(c / 1000.0)
    return SpectrumBands(c, mid, mid + side_offset)


def _plan(settings: MasterSettings | None = None, **kw):
    args = dict(
        sample_rate=48000, channels=2, integrated_lufs=-18.0, loudness_range_lu=8.0,
        short_term_lufs=np.linspace(-24, -15, 200), correlation=0.7, spectrum=_spec(),
        settings=settings or MasterSettings(),
    )  # fmt: skip
    args.update(kw)
    return make_plan(**args)


def test_default_plan_is_valid_and_explains_itself():
    p = _plan()
    p.validate()
    assert p.loudness.target_lufs == -14.0 and p.limiter.ceiling_dbtp == -1.0
    assert p.compressor.enabled and not p.multiband.enabled
    # a full-band mix at a moderate level: the clipper takes transients, the guard is on
    assert p.genre == "rock-pop" and p.soft_clip.enabled and p.loudness.guard
    assert p.limiter.transient_release_ms is not None and p.limiter.transient_release_ms < p.limiter.release_ms
    assert p.compressor.section_window_ms and p.compressor.max_gr_db == 2.5
    assert any("glue compressor" in n for n in p.notes) and any("limiter" in n for n in p.notes)
    assert any(n.startswith("music family: rock-pop") for n in p.notes)
    assert any("dynamics guard on" in n for n in p.notes)


def test_a_mix_already_on_target_gets_no_eq():
    p = _plan(spectrum=_spec(tilt=0.0))
    assert max(abs(g) for g in p.eq.mid_gain_db) < 0.5


def test_a_dull_mix_gets_brighter():
    p = _plan(spectrum=_spec(tilt=-3.0))  # 3 dB/octave darker than the target
    c = np.asarray(p.eq.freqs_hz)
    g = np.asarray(p.eq.mid_gain_db)
    # the tilt change is capped at 1 dB/oct, x 70 % at the moderate level: ~2 dB at 8 kHz
    assert g[(c >= 4000) & (c <= 12000)].mean() > 1.5
    assert g[(c >= 100) & (c <= 250)].mean() < -1.0  # rotated around 1 kHz


def test_compressor_threshold_follows_the_loud_passages():
    quiet = _plan(short_term_lufs=np.full(100, -30.0), integrated_lufs=-30.0)
    loud = _plan(short_term_lufs=np.full(100, -12.0), integrated_lufs=-12.0)
    assert loud.compressor.threshold_db - quiet.compressor.threshold_db == pytest.approx(18.0, abs=0.01)


def test_dense_mix_gets_less_compression():
    open_mix = _plan(loudness_range_lu=10.0)
    dense = _plan(loudness_range_lu=2.0)
    assert dense.compressor.threshold_db > open_mix.compressor.threshold_db
    assert any("already dense" in n for n in dense.notes)


def test_levels_and_amounts_scale_the_work():
    light, aggressive = _plan(MasterSettings(level="light")), _plan(MasterSettings(level="aggressive"))
    assert aggressive.compressor.ratio > light.compressor.ratio
    assert aggressive.imager.width > light.imager.width
    assert aggressive.multiband.enabled and aggressive.soft_clip.enabled
    off = _plan(MasterSettings(amount_dynamics_pct=0, amount_width_pct=0, amount_eq_pct=0))
    assert not off.compressor.enabled and off.imager.width == 1.0 and off.imager.mono_bass_hz is None
    assert not off.eq.enabled


def test_stereo_safety():
    assert _plan(correlation=-0.3).imager.width < 1.0
    assert _plan(correlation=0.1, settings=MasterSettings(level="aggressive")).imager.width == 1.0
    mono = _plan(channels=1, correlation=None)
    assert mono.imager.width == 1.0 and mono.imager.mono_bass_hz is None


@pytest.mark.parametrize(("target", "lufs", "tp"), [("club", -8.0, -0.3), ("amazon", -14.0, -2.0)])
def test_targets_reach_the_plan(target, lufs, tp):
    p = _plan(MasterSettings(target=target))
    assert (p.loudness.target_lufs, p.limiter.ceiling_dbtp) == (lufs, tp)
    # club is loudness first (no guard) with a firmer clipper
    assert p.loudness.guard == (target != "club")
    assert p.soft_clip.enabled and p.soft_clip.ceiling_db == (0.5 if target == "club" else 1.0)


def test_reference_mode_matches_width_and_caps_moves():
    ref = _spec(tilt=2.0, side_offset=-6.0)  # brighter and wider than the mix
    p = _plan(references=[ref], reference_names=["ref.wav"], settings=MasterSettings(level="aggressive"))
    assert p.eq.mode == "reference" and p.references == ["ref.wav"]
    assert max(abs(g) for g in (*p.eq.mid_gain_db, *p.eq.side_gain_db)) <= 12.0
    c = np.asarray(p.eq.freqs_hz)
    assert np.mean(np.asarray(p.eq.side_gain_db)[(c > 200) & (c < 4000)]) > 3.0
    # the reference shapes the low end's width: no forced mono bass, no extra widening
    assert p.imager.mono_bass_hz is None and p.imager.width == 1.0


def test_average_of_references_ignores_their_levels():
    a = _spec()
    b = SpectrumBands(a.centers_hz, a.mid_db + 20.0, a.side_db + 20.0)
    avg = average_spectra([a, b], a.centers_hz)
    np.testing.assert_allclose(avg.mid_db - avg.mid_db.mean(), a.mid_db - a.mid_db.mean(), atol=1e-9)


def test_silence_and_unknown_style_are_refused():
    with pytest.raises(ParameterError, match="silent"):
        _plan(integrated_lufs=-np.inf)
    with pytest.raises(ParameterError, match="style"):
        _plan(MasterSettings(style="loud"))


def _orchestral_spec(sr: int = 48000, low_side_db: float = -3.0) -> SpectrumBands:
    """A natural recording: little below 60 Hz, a wide (uncorrelated) low end."""
    c = band_centers_hz(sr)
    mid = style_target_db(c, "balanced") - np.where(c < 60, 18.0, 0.0)
    side = mid - 8.0 + np.where(c < 150, 8.0 + low_side_db, 0.0)
    return SpectrumBands(c, mid, side)


def test_acoustic_material_is_recognised_and_left_natural():
    p = _plan(spectrum=_orchestral_spec(), loudness_range_lu=11.0, true_peak_dbtp=-1.0)
    assert p.genre == "acoustic-orchestral"
    c, g = np.asarray(p.eq.freqs_hz), np.asarray(p.eq.mid_gain_db)
    assert np.all(g[c < 60] <= 0.0)  # no boost into sub-bass it does not have
    assert p.imager.mono_bass_hz is None and p.imager.width == 1.0  # wide-miked lows stay wide
    assert not p.soft_clip.enabled and not p.multiband.enabled
    assert p.compressor.max_gr_db < 2.5
    # unless asked
    forced = _plan(spectrum=_orchestral_spec(), loudness_range_lu=11.0,
                   settings=MasterSettings(mono_bass=True, genre="rock-pop"))  # fmt: skip
    assert forced.genre == "rock-pop" and forced.imager.mono_bass_hz == 120.0


@pytest.mark.parametrize(("low_side_db", "mono"), [(-1.0, True), (-25.0, False)])
def test_mono_bass_only_for_a_phasey_low_end(low_side_db, mono):
    c = band_centers_hz(48000)
    mid = style_target_db(c, "balanced")
    side = mid - 12.0 + np.where(c < 150, 12.0 + low_side_db, 0.0)
    p = _plan(spectrum=SpectrumBands(c, mid, side), loudness_range_lu=6.0)
    assert p.genre != "acoustic-orchestral"
    assert (p.imager.mono_bass_hz is not None) == mono
    assert any(("bass mono" in n) if mono else ("low end kept stereo" in n) for n in p.notes)


def test_loudness_first_turns_the_guard_off_and_genre_is_checked():
    assert not _plan(MasterSettings(loudness_first=True)).loudness.guard
    assert _plan(MasterSettings(genre="electronic")).genre == "electronic"
    with pytest.raises(ParameterError, match="genre"):
        _plan(MasterSettings(genre="polka"))


def test_guard_budgets_grow_with_the_level():
    light, moderate, aggressive = (_plan(MasterSettings(level=lv)).loudness for lv in ("light", "moderate", "aggressive"))
    assert light.max_limiter_gr_db < moderate.max_limiter_gr_db < aggressive.max_limiter_gr_db
    assert moderate.max_limiter_gr_db == 3.0 and moderate.max_limiter_over_1db_pct == 5.0


def test_a_finished_master_gets_no_glue_unless_aggressive():
    done = _plan(loudness_range_lu=3.0, integrated_lufs=-9.0, true_peak_dbtp=0.5,
                 short_term_lufs=np.linspace(-11, -8, 100))  # fmt: skip
    assert not done.compressor.enabled and any("finished master" in n for n in done.notes)
    assert _plan(MasterSettings(level="aggressive"), loudness_range_lu=3.0, integrated_lufs=-9.0,
                 true_peak_dbtp=0.5).compressor.enabled  # fmt: skip
    assert _plan(loudness_range_lu=3.0, integrated_lufs=-20.0, true_peak_dbtp=-2.0).compressor.enabled
