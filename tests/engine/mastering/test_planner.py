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
    assert p.compressor.enabled and not p.multiband.enabled and not p.soft_clip.enabled
    assert any("glue compressor" in n for n in p.notes) and any("limiter" in n for n in p.notes)


def test_a_mix_already_on_target_gets_no_eq():
    p = _plan(spectrum=_spec(tilt=0.0))
    assert max(abs(g) for g in p.eq.mid_gain_db) < 0.5


def test_a_dull_mix_gets_brighter():
    p = _plan(spectrum=_spec(tilt=-3.0))  # 3 dB/octave darker than the target
    c = np.asarray(p.eq.freqs_hz)
    g = np.asarray(p.eq.mid_gain_db)
    assert g[(c >= 4000) & (c <= 12000)].mean() > 2.0


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
    assert p.soft_clip.enabled == (target == "club")


def test_reference_mode_matches_width_and_caps_moves():
    ref = _spec(tilt=2.0, side_offset=-6.0)  # brighter and wider than the mix
    p = _plan(references=[ref], reference_names=["ref.wav"], settings=MasterSettings(level="aggressive"))
    assert p.eq.mode == "reference" and p.references == ["ref.wav"]
    assert max(abs(g) for g in (*p.eq.mid_gain_db, *p.eq.side_gain_db)) <= 6.0
    c = np.asarray(p.eq.freqs_hz)
    assert np.mean(np.asarray(p.eq.side_gain_db)[(c > 200) & (c < 4000)]) > 3.0


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
