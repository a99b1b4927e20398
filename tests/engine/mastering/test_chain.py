"""The renderer end to end on real program material: on spec, safe, streamed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyebur128
import pytest
import soundfile as sf

from app.engine import analysis, audio_io
from app.engine.errors import AudioInputError, AudioOutputError, ParameterError
from app.engine.mastering import chain
from app.engine.mastering.chain import master_album, master_file, preview, render_array
from app.engine.mastering.plan import MasteringPlan
from app.engine.mastering.planner import MasterSettings


def _ebur128(path: Path) -> tuple[float, float]:
    """Integrated loudness and true peak (dBTP) by an independent meter (libebur128)."""
    x, sr = sf.read(path, dtype="float64", always_2d=True)
    m = pyebur128.R128State(x.shape[1], sr, pyebur128.MeasurementMode.MODE_I | pyebur128.MeasurementMode.MODE_TRUE_PEAK)
    m.add_frames(np.ascontiguousarray(x).ravel(), x.shape[0])
    tp = max(pyebur128.get_true_peak(m, c) for c in range(x.shape[1]))
    return pyebur128.get_loudness_global(m), 20 * np.log10(tp)


def _check_on_spec(r, out: Path, *, sr: int) -> None:
    lufs, ceiling = r.plan.loudness.target_lufs, r.plan.limiter.ceiling_dbtp
    assert sf.info(out).samplerate == sr
    ours = analysis.analyze(audio_io.read(out)[0], sr)
    assert abs(ours.integrated_lufs - lufs) <= 0.2
    assert ours.true_peak_dbtp <= ceiling + 1e-9
    i_ref, tp_ref = _ebur128(out)
    assert abs(i_ref - lufs) <= 0.2
    assert tp_ref <= ceiling + 0.1  # another meter's interpolator: within its own tolerance


def test_master_streaming_target_on_program_material(program_48k_30s, tmp_path):
    out = tmp_path / "m.wav"
    r = master_file(program_48k_30s, out)
    _check_on_spec(r, out, sr=48000)
    assert r.plan.loudness.gain_db is not None
    assert abs(r.loudness_error_lu) <= 0.2 and r.true_peak_margin_db >= 0
    rep = r.to_report()
    assert rep["result"]["within_spec"] and rep["plan"]["loudness"]["target_lufs"] == -14.0
    assert r.limiter_gr_db.size > 0 and r.compressor_gr_db.size > 0
    assert not list(tmp_path.glob(".*part"))  # no temp left behind


@pytest.mark.parametrize(
    ("target", "fmt"), [("apple", "wav16"), ("amazon", "flac"), ("broadcast", "wav32f"), ("club", "wav24")]
)
def test_every_target_lands_on_spec(program_44k_30s, tmp_path, target, fmt):
    out = tmp_path / f"m.{'flac' if fmt == 'flac' else 'wav'}"
    r = master_file(program_44k_30s, out, MasterSettings(target=target, output_format=fmt))
    _check_on_spec(r, out, sr=44100)
    assert sf.info(out).subtype == audio_io.OUTPUT_FORMATS[fmt].subtype


def test_styles_move_the_tone_the_way_they_promise(program_44k_30s, tmp_path):
    def high_minus_low(style: str) -> float:
        r = master_file(program_44k_30s, tmp_path / f"{style}.wav", MasterSettings(style=style, level="aggressive"))
        c = np.asarray(r.after.spectrum["centers_hz"])
        mid = np.asarray(r.after.spectrum["mid_db"], dtype=float)
        return float(mid[(c >= 6000) & (c <= 12000)].mean() - mid[(c >= 60) & (c <= 200)].mean())

    assert high_minus_low("bright") > high_minus_low("warm") + 1.5


def test_reference_matching_moves_the_tone_toward_the_reference(program_48k_30s, reference_48k_30s, tmp_path):
    r = master_file(program_48k_30s, tmp_path / "m.wav", references=[reference_48k_30s],
                    settings=MasterSettings(level="aggressive"))  # fmt: skip
    assert r.plan.eq.mode == "reference" and r.plan.references == [reference_48k_30s.name]
    ref = chain.spectrum_of(analysis.analyze(audio_io.read(reference_48k_30s)[0], 48000))

    def distance(a: analysis.Analysis) -> float:
        s = chain.spectrum_of(a).on(ref.centers_hz)
        sel = (ref.centers_hz >= 40) & (ref.centers_hz <= 16000)
        d = (s.mid_db - ref.mid_db)[sel]
        return float(np.sqrt(np.mean((d - d.mean()) ** 2)))

    assert distance(r.after) < 0.8 * distance(r.before)
    assert max(abs(g) for g in r.plan.eq.mid_gain_db) <= r.plan.eq.max_move_db == 12.0
    # the reference's width comes with its side EQ: no extra widening, no forced mono bass
    assert r.plan.imager.width == 1.0 and r.plan.imager.mono_bass_hz is None


def test_edited_plan_renders_exactly_the_same_twice(program_44k_30s, tmp_path):
    r1 = master_file(program_44k_30s, tmp_path / "a.wav")
    plan = MasteringPlan.from_json(r1.plan.to_json())
    r2 = master_file(program_44k_30s, tmp_path / "b.wav", plan=plan)
    np.testing.assert_array_equal(sf.read(tmp_path / "a.wav")[0], sf.read(tmp_path / "b.wav")[0])
    plan.compressor.enabled = False
    plan.loudness.gain_db = None
    r3 = master_file(program_44k_30s, tmp_path / "c.wav", plan=plan)
    assert r3.compressor_gr_db.size == 0 and abs(r3.loudness_error_lu) <= 0.2
    assert r2.passes >= 1


def test_block_size_does_not_change_the_master(program_44k_30s, tmp_path, monkeypatch):
    a = master_file(program_44k_30s, tmp_path / "a.wav", MasterSettings(output_format="wav32f"))
    monkeypatch.setattr(chain, "BLOCK_FRAMES", 8193)
    monkeypatch.setattr(audio_io, "iter_blocks", _small_blocks(audio_io.iter_blocks))
    b = master_file(program_44k_30s, tmp_path / "b.wav", MasterSettings(output_format="wav32f"), plan=a.plan)
    x, y = sf.read(tmp_path / "a.wav")[0], sf.read(tmp_path / "b.wav")[0]
    assert np.max(np.abs(x - y)) < 1e-5
    assert b.plan.loudness.gain_db == a.plan.loudness.gain_db


def _small_blocks(orig):
    def it(path, *, block_frames=65536, check_finite=True):
        return orig(path, block_frames=8193, check_finite=check_finite)

    return it


def test_album_keeps_relative_loudness_and_one_tone(program_44k_30s, tmp_path):
    x, sr = sf.read(program_44k_30s, dtype="float32")
    quiet = tmp_path / "ballad.wav"
    sf.write(quiet, x * 10 ** (-4 / 20), sr, subtype="PCM_24")
    loud = tmp_path / "single.wav"
    sf.write(loud, x, sr, subtype="PCM_24")
    out = tmp_path / "album"
    out.mkdir()
    rs = master_album([loud, quiet], out, MasterSettings(target="streaming"))
    assert [r.output.name for r in rs] == ["single-master.wav", "ballad-master.wav"]
    lu = [r.after.integrated_lufs for r in rs]
    assert abs(lu[0] - -14.0) <= 0.2
    assert abs((lu[0] - lu[1]) - 4.0) <= 0.3
    assert rs[0].plan.eq == rs[1].plan.eq


def test_preview_renders_the_loudest_part_near_the_masters_loudness(program_48k_30s, tmp_path):
    r = master_file(program_48k_30s, tmp_path / "m.wav")
    src, out, _start = preview(program_48k_30s, r.plan, r.before, seconds=10.0)
    assert src.shape == out.shape and src.shape[1] == 10 * 48000
    lu = analysis.integrated_loudness(out, 48000)
    assert abs(lu - r.after.integrated_lufs) < 2.0
    assert analysis.true_peak(out, 48000) <= 10 ** (-1 / 20)


def test_render_array_solves_its_own_gain(program_44k_30s):
    x, sr = audio_io.read(program_44k_30s)
    plan, _, _ = chain.plan_for_file(program_44k_30s, MasterSettings(target="deezer"))
    y, _g = render_array(x[:, : sr * 10], plan)
    assert abs(analysis.integrated_loudness(y, sr) - -15.0) <= 0.1
    assert analysis.true_peak(y, sr) <= 10 ** (-1 / 20)


# ------------------------------------------------------------------ awkward and bad input


def _write(path: Path, x: np.ndarray, sr: int, subtype: str = "PCM_24") -> Path:
    sf.write(path, np.asarray(x).T, sr, subtype=subtype)
    return path


def _music_like(sr: int, seconds: float, channels: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(sr * seconds)
    t = np.arange(n) / sr
    beat = (np.sin(2 * np.pi * 2 * t) > 0.6).astype(float)
    tone = 0.3 * np.sin(2 * np.pi * 110 * t) + 0.1 * np.sin(2 * np.pi * min(3000, sr / 5) * t)
    x = np.stack([tone * (0.5 + beat) + 0.02 * rng.standard_normal(n) for _ in range(channels)])
    return (x * 0.5).astype(np.float32)


@pytest.mark.parametrize(
    ("sr", "ch", "subtype"),
    [(8000, 1, "PCM_16"), (192000, 6, "PCM_24"), (22050, 2, "PCM_U8"), (48000, 2, "FLOAT")],
)
def test_odd_rates_channels_and_depths_master_on_spec(tmp_path, sr, ch, subtype):
    src = _write(tmp_path / "in.wav", _music_like(sr, 4.0, ch), sr, subtype)
    out = tmp_path / "out.wav"
    r = master_file(src, out, MasterSettings(output_format="wav24"))
    info = sf.info(out)
    assert (info.samplerate, info.channels) == (sr, ch)
    assert abs(r.loudness_error_lu) <= 0.2 and r.true_peak_margin_db >= 0


def test_float_mix_above_full_scale_is_mastered_not_clipped(tmp_path):
    x = _music_like(48000, 4.0, 2) * 4.0  # peaks around +6 dBFS in a float file
    assert np.abs(x).max() > 1.0
    src = _write(tmp_path / "hot.wav", x, 48000, "FLOAT")
    r = master_file(src, tmp_path / "out.wav")
    assert r.before.sample_peak_dbfs > 0 and r.true_peak_margin_db >= 0


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: _write(p, _music_like(48000, 0.3, 2), 48000), "too short"),
        (lambda p: _write(p, np.zeros((2, 48000 * 3)), 48000), "silent"),
        (lambda p: _write(p, np.zeros((2, 1)), 48000), "too short"),
    ],
)
def test_unmasterable_input_is_a_clear_error_and_writes_nothing(tmp_path, make, match):
    src = make(tmp_path / "in.wav")
    out = tmp_path / "out.wav"
    with pytest.raises(AudioInputError, match=match):
        master_file(src, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_nan_samples_are_refused_and_nothing_is_written(tmp_path):
    x = _music_like(48000, 3.0, 2)
    x[1, 50000] = np.nan
    src = _write(tmp_path / "in.wav", x, 48000, "FLOAT")
    with pytest.raises(AudioInputError, match="NaN"):
        master_file(src, tmp_path / "out.wav")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_outputs_that_cannot_be_written_fail_before_any_work(tmp_path, monkeypatch):
    src = _write(tmp_path / "in.wav", _music_like(48000, 2.0, 2), 48000)
    called = []
    monkeypatch.setattr(chain, "analyze_file", lambda *a, **k: called.append(1))
    with pytest.raises(AudioOutputError):
        master_file(src, tmp_path / "missing" / "out.wav")
    with pytest.raises(AudioOutputError):
        master_file(src, src)  # never overwrite the input
    assert not called


def test_plan_for_another_format_is_refused(program_44k_30s, tmp_path):
    plan = MasteringPlan(sample_rate=48000, channels=2)
    plan.eq.freqs_hz, plan.eq.mid_gain_db, plan.eq.side_gain_db = [], [], []
    with pytest.raises(ParameterError, match="plan is for"):
        master_file(program_44k_30s, tmp_path / "o.wav", plan=plan)


@pytest.mark.parametrize(("sr", "ch"), [(44100, 2), (48000, 6), (8000, 1)])
def test_k_weighted_power_matches_a_reference_filter(sr, ch):
    from scipy import signal

    rng = np.random.default_rng(2)
    x = (rng.standard_normal((ch, 9000)) * 0.2).astype(np.float32)
    sos = analysis.k_weighting_sos(sr)
    y = signal.sosfilt(sos, x.astype(np.float64), axis=1)
    want = np.einsum("c,cn->n", analysis.channel_weights(ch), y * y)
    kw = analysis.KWeightedPower(sr, ch)
    got = np.concatenate([kw.process(x[:, :4000]), kw.process(x[:, 4000:])])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)


def test_preview_before_mastering_keeps_the_excerpts_place_in_the_track(program_48k_30s):
    plan, before, _ = chain.plan_for_file(program_48k_30s, MasterSettings())
    src, out, _ = preview(program_48k_30s, plan, before, seconds=10.0)
    excerpt_above_track = analysis.integrated_loudness(src, 48000) - before.integrated_lufs
    assert excerpt_above_track > 0.5  # the loudest part really is louder than the whole
    got = analysis.integrated_loudness(out, 48000)
    assert abs(got - (-14.0 + excerpt_above_track)) <= 0.1


@pytest.mark.parametrize("stop_at", [0.1, 0.4, 0.7])
def test_cancel_through_progress_leaves_nothing_behind(program_44k_30s, tmp_path, stop_at):
    def progress(fraction: float, message: str) -> None:
        if fraction >= stop_at:
            raise chain.Cancelled()

    out = tmp_path / "m.wav"
    with pytest.raises(chain.Cancelled):
        master_file(program_44k_30s, out, progress=progress, scratch_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # no output, no temp file, no scratch folder


def test_scratch_track_gives_back_what_was_written_in_any_block_sizes(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 10007)).astype(np.float32)
    p = rng.random(10007).astype(np.float32)
    scratch = chain.ScratchTrack(2, tmp_path)
    try:
        for lo, hi in [(0, 1), (1, 4000), (4000, 4001), (4001, 10007)]:
            scratch.write("x", x[:, lo:hi])
            scratch.write("p", p[lo:hi])
        scratch.finish()
        assert scratch.frames == 10007
        blocks = list(scratch.blocks("x", block_frames=3000))
        assert [b.shape for b in blocks] == [(2, 3000)] * 3 + [(2, 1007)]
        assert all(b.flags.c_contiguous and b.dtype == np.float32 for b in blocks)
        np.testing.assert_array_equal(np.concatenate(blocks, axis=1), x)
        # peaks are kept as float16, rounded up (never below what was written)
        got = np.concatenate(list(scratch.blocks("p", 3000)))
        assert np.all(got >= p) and np.all(got <= p * 1.002 + 1e-7)
    finally:
        scratch.close()
    assert not any(tmp_path.iterdir())


def test_gain_reduction_tracker_from_gains_equals_converting_every_frame():
    rng = np.random.default_rng(8)
    gains = np.clip(1.0 - 0.5 * rng.random(48000 * 13 + 123) ** 8, 0.0, 1.0).astype(np.float32)
    from_gains = chain._GrTracker(48000, from_gains=True)
    from_db = chain._GrTracker(48000)
    for lo in range(0, len(gains), 7777):
        from_gains.add(gains[lo : lo + 7777])
        from_db.add(chain._gains_to_gr_db(gains[lo : lo + 7777]))
    want = from_db.result()
    got = from_gains.result()
    assert got.dtype == want.dtype == np.float32 and len(want) == 131
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("sample_rate", [11025, 44100, 48000])
def test_subblock_accumulator_matches_cumulative_sums_in_any_block_sizes(sample_rate):
    """Per-100 ms sums against a plain numpy cumulative-sum version, bit for bit."""
    rng = np.random.default_rng(sample_rate)
    total = sample_rate * 3 + 777
    energy = (rng.random(total) ** 4).astype(np.float32)
    acc = chain.SubblockAccumulator(total, sample_rate)
    edges = acc.edges
    cum = np.zeros(len(edges))
    running, pos = 0.0, 0
    while pos < total:
        n = int(rng.integers(1, sample_rate // 3))
        block = energy[pos : pos + n]
        acc.add(block)
        c = np.cumsum(block, dtype=np.float64)
        for k in range(len(edges)):
            if pos < edges[k] <= pos + len(block):
                cum[k] = running + c[edges[k] - pos - 1]
        running += float(c[-1])
        pos += len(block)
    want = np.diff(cum) / np.maximum(np.diff(edges), 1)
    np.testing.assert_array_equal(acc.mean_power(), want)
    assert len(want) == 30
