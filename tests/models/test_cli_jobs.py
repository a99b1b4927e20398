"""``amc generate``, ``amc process``, ``amc transcribe`` and ``amc analyze --notes``
in-process through ``app.cli.main`` (its error handling and exit codes)."""

from __future__ import annotations

import hashlib
import json
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app import cli
from app.engine import analysis
from app.models import cli_jobs
from tests.models.orchestra_backends import EXTRA, synth_music


@pytest.fixture
def amc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp AMC_HOME, the orchestra backends registered, and ``main`` knowing the job commands."""
    home = tmp_path / "home"
    monkeypatch.setenv("AMC_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads HF_HUB_OFFLINE once, when first imported: import it under the
    # real environment and patch its constant here, so neither leaks into later tests
    try:
        import huggingface_hub.constants as hf_constants
    except ImportError:
        pass
    else:
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("AMC_EXTRA_BACKENDS", EXTRA)
    monkeypatch.setenv("AMC_DEVICE", "cpu")
    monkeypatch.delenv("AMC_MODELS_PATH", raising=False)
    return tmp_path


def _lufs(path: Path) -> float:
    audio, sr = sf.read(path, dtype="float32", always_2d=True)
    return float(analysis.integrated_loudness(audio.T, sr))


def _noisy(path: Path) -> Path:
    rng = np.random.default_rng(2)
    x = synth_music(3.0, 9)
    x[:, 32_000:48_000] = 0.0
    x = x + 0.01 * rng.standard_normal(x.shape).astype(np.float32)
    sf.write(path, x.T, 32_000, subtype="FLOAT")
    return path


def test_process_enhance_end_to_end(amc: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _noisy(amc / "demo.wav")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    out, report = amc / "demo-enhanced.wav", amc / "run.json"
    rc = cli.main(["process", str(src), "--operation", "enhance", "--level", "light", "-o", str(out),
                   "--report", str(report)])
    assert rc == 0, capsys.readouterr().err
    assert abs(_lufs(out) + 14.0) <= 0.2
    plan = json.loads(report.read_text())
    assert [(s["name"], s["backend"]) for s in plan["steps"]] == [("enhance", "dsp-enhance"), ("master", "engine")]
    assert "workflow: enhance" in capsys.readouterr().out
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest


def test_process_enhance_leaves_a_clean_song_alone_and_says_why(amc: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests import material

    src = material.program(10.0, 44_100, seed=4, style="ballad")
    out, report = amc / "clean-enhanced.wav", amc / "run.json"
    rc = cli.main(["process", str(src), "--operation", "enhance", "-o", str(out), "--report", str(report)])
    assert rc == 0, capsys.readouterr().err
    enh = json.loads(report.read_text())["steps"][0]
    assert enh["metrics"]["repaired"] is False
    assert enh["metrics"]["clipped_samples_fixed"] == 0 and enh["metrics"]["clicks_fixed"] == 0
    assert "repair: no repair needed: no clipping found; no clicks found" in capsys.readouterr().out


def test_generate_with_a_tiny_backend(amc: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = amc / "gen.wav"
    rc = cli.main(["generate", "warm piano", "--duration", "2", "--seed", "10", "--slot", "musicgen",
                   "-o", str(out), "--json", "--target", "apple"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    gen = data["plan"]["steps"][0]
    assert [a["outcome"] for a in gen["attempts"]] == ["error", "gate_failed", "passed"]
    assert data["outputs"] == {"audio": str(out)}
    assert abs(_lufs(out) + 16.0) <= 0.2
    assert not list((amc / "home" / "cache").glob("run-*"))  # intermediates removed


def test_generate_no_master_and_plan_only(amc: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = amc / "raw.wav"
    assert cli.main(["generate", "x", "--backend", "tiny-gen", "--seed", "3", "--duration", "1",
                     "--no-master", "-o", str(out), "-q"]) == 0
    audio, sr = sf.read(out, always_2d=True)
    assert sr == 32_000 and audio.shape[0] == 32_000  # the generation itself, unmastered
    capsys.readouterr()
    assert cli.main(["generate", "x", "--plan-only", "-o", str(amc / "none.wav")]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["status"] == "planned" and plan["steps"][0]["backend"] == "tiny-broken-gen"
    assert not (amc / "none.wav").exists()


def test_exit_codes(amc: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _noisy(amc / "in.wav")
    assert cli.main(["process", str(src), "--operation", "master", "-o", str(src)]) == 4  # never the input
    assert cli.main(["process", str(src), "--operation", "style_transfer", "-o", str(amc / "o.wav")]) == 2
    assert cli.main(["generate", "x", "--slot", "suni", "-o", str(amc / "o.wav")]) == 2
    assert cli.main(["process", str(amc / "missing.wav"), "-o", str(amc / "o.wav")]) == 3
    report = amc / "failed.json"
    assert cli.main(["generate", "x", "--backend", "tiny-gen", "--seed", "2", "--retries", "0",
                     "-o", str(amc / "o.wav"), "--report", str(report)]) == 5  # every seed failed its gates
    assert not (amc / "o.wav").exists()
    failed = json.loads(report.read_text())
    assert failed["status"] == "failed" and failed["steps"][0]["attempts"][0]["outcome"] == "gate_failed"
    assert "amc: error:" in capsys.readouterr().err


def test_ctrl_c_cancels_and_writes_nothing(amc: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("SIGINT reaches only the main thread")
    sent = threading.Event()

    class InterruptingBar:
        """Presses Ctrl+C (SIGINT to this process) once the generation is under way."""

        def __call__(self, fraction: float, message: str) -> None:
            if "chunk 2" in message and not sent.is_set():
                sent.set()
                signal.raise_signal(signal.SIGINT)

        def close(self) -> None:
            pass

    monkeypatch.setattr(cli_jobs, "_progress_bar", lambda quiet: InterruptingBar())
    out = amc / "interrupted.wav"
    rc = cli.main(["generate", "slow", "--backend", "tiny-gen", "--seed", "1", "--duration", "4",
                   "--param", "step_s=0.25", "-o", str(out)])
    assert sent.is_set()
    assert rc == cli.EXIT_INTERRUPTED
    assert "interrupted" in capsys.readouterr().err
    assert not out.exists()
    assert not [p for p in amc.iterdir() if p.name.startswith(".interrupted")]
    assert not list((amc / "home" / "cache").glob("run-*"))


def test_transcribe_writes_midi_through_write_notes(amc: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pretty_midi")
    pytest.importorskip("librosa")
    sr = 22_050
    t = np.arange(int(1.2 * sr)) / sr
    f0 = np.where(t < 0.6, 220.0, 330.0)
    y = 0.4 * np.sin(2 * np.pi * np.cumsum(f0) / sr) * (np.mod(t, 0.6) < 0.5)
    src = amc / "melody.wav"
    sf.write(src, y.astype(np.float32), sr)
    out = amc / "notes.mid"
    rc = cli.main(["transcribe", str(src), "-o", str(out), "--method", "pyin", "--json"])
    assert rc == 0, capsys.readouterr().err
    m = json.loads(capsys.readouterr().out)
    assert out.is_file() and m["notes"] >= 2
    import pretty_midi

    pitches = sorted({n.pitch for inst in pretty_midi.PrettyMIDI(str(out)).instruments for n in inst.notes})
    assert 57 in pitches and 64 in pitches  # A3 and E4
    assert m["output"] == str(out)  # the --json figures are write_notes' return value
    assert not [p for p in amc.iterdir() if p.name.endswith(".tmp")]


def test_analyze_notes_writes_midi_next_to_the_analysis(amc: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sr = 22_050
    t = np.arange(int(1.2 * sr)) / sr
    y = 0.4 * np.sin(2 * np.pi * 440.0 * t) * (np.mod(t, 0.6) < 0.5)
    src = amc / "a4.wav"
    sf.write(src, y.astype(np.float32), sr)
    out = amc / "a4.mid"
    rc = cli.main(["analyze", str(src), "--no-musical", "--notes", str(out), "--json", "-q"])
    assert rc == 0, capsys.readouterr().err
    d = json.loads(capsys.readouterr().out)
    assert d["notes"]["output"] == str(out) and out.is_file()
    assert d["integrated_lufs"] < 0
