"""MasteringPlan: presets, JSON round trips, validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.engine.errors import ParameterError
from app.engine.mastering.plan import (
    LEVELS,
    TARGETS,
    MasteringPlan,
    MultibandStage,
    resolve_amounts,
    resolve_target,
)


@pytest.mark.parametrize(
    ("name", "lufs", "tp"),
    [("streaming", -14, -1), ("apple", -16, -1), ("amazon", -14, -2), ("deezer", -15, -1),
     ("broadcast", -23, -1), ("club", -8, -0.3)],
)  # fmt: skip
def test_targets_match_the_delivery_specs(name, lufs, tp):
    t = resolve_target(name)
    assert (t.lufs, t.ceiling_dbtp) == (lufs, tp)


def test_custom_target_needs_both_numbers():
    with pytest.raises(ParameterError, match="custom"):
        resolve_target("custom", lufs=-12)
    t = resolve_target("custom", lufs=-12.5, ceiling_dbtp=-0.5)
    assert (t.lufs, t.ceiling_dbtp) == (-12.5, -0.5)


def test_overrides_and_unknown_names():
    assert resolve_target("streaming", lufs=-13).lufs == -13
    with pytest.raises(ParameterError, match="unknown target"):
        resolve_target("spotify-ish")
    with pytest.raises(ParameterError, match="unknown level"):
        resolve_amounts("extreme")


def test_amounts_override_level_per_dimension():
    a = resolve_amounts("light", width_pct=0)
    assert a.eq_pct == LEVELS["light"].eq_pct and a.width_pct == 0
    with pytest.raises(ParameterError, match="0-200"):
        resolve_amounts("light", eq_pct=250)


def _plan() -> MasteringPlan:
    p = MasteringPlan(sample_rate=48000, channels=2)
    p.eq.freqs_hz = [100.0, 1000.0]
    p.eq.mid_gain_db = [1.0, -2.0]
    p.eq.side_gain_db = [0.5, 0.0]
    p.multiband = MultibandStage(enabled=True)
    p.notes = ["a note"]
    return p


def test_plan_json_round_trip_is_exact():
    p = _plan()
    q = MasteringPlan.from_json(p.to_json())
    assert q == p
    assert json.loads(q.to_json()) == json.loads(p.to_json())
    assert q.multiband.bands[1].ratio == p.multiband.bands[1].ratio


def test_plan_rejects_unknown_fields_and_versions():
    d = _plan().to_dict()
    d["compressor"]["tube_drive"] = 3
    with pytest.raises(ParameterError, match="tube_drive"):
        MasteringPlan.from_dict(d)
    d = _plan().to_dict()
    d["version"] = 99
    with pytest.raises(ParameterError, match="version"):
        MasteringPlan.from_dict(d)
    with pytest.raises(ParameterError, match="JSON"):
        MasteringPlan.from_json("{not json")
    with pytest.raises(ParameterError):
        MasteringPlan.from_json("[1, 2]")


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        (("limiter", "ceiling_dbtp"), 0.5, "ceiling"),
        (("loudness", "target_lufs"), -1.0, "target"),
        (("imager", "width"), 3.0, "width"),
        (("limiter", "oversample"), 2, "oversampling"),
        (("output", "format"), "mp3", "format"),
        (("filter", "highpass_hz"), 500.0, "high-pass"),
    ],
)
def test_validate_rejects_values_the_renderer_cannot_honour(path, value, match):
    p = _plan()
    setattr(getattr(p, path[0]), path[1], value)
    with pytest.raises(ParameterError, match=match):
        p.validate()


def test_every_target_is_valid_in_a_plan():
    for t in TARGETS.values():
        p = _plan()
        p.loudness.target_lufs, p.limiter.ceiling_dbtp = t.lufs, t.ceiling_dbtp
        p.validate()


def test_side_eq_may_cut_deeper_than_it_may_boost():
    from app.engine.mastering.eq import band_centers_hz, style_target_db
    from app.engine.mastering.planner import MasterSettings, SpectrumBands, make_plan

    c = band_centers_hz(48000)
    spec = SpectrumBands(c, style_target_db(c, "balanced"), style_target_db(c, "balanced") - 12.0)
    plan = make_plan(sample_rate=48000, channels=2, integrated_lufs=-18.0, loudness_range_lu=6.0,
                     short_term_lufs=np.full(50, -16.0), correlation=0.7, spectrum=spec,
                     settings=MasterSettings())  # fmt: skip
    n = len(plan.eq.freqs_hz)
    plan.eq.side_gain_db = [-20.0] * n
    plan.validate()
    plan.eq.side_gain_db = [-25.0] * n
    with pytest.raises(ParameterError, match="side EQ"):
        plan.validate()
    plan.eq.side_gain_db = [0.0] * n
    plan.eq.mid_gain_db = [-13.0] * n
    with pytest.raises(ParameterError, match="exceeds"):
        plan.validate()
