"""`amc` command line: help a musician understands, exit codes, outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.cli import main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, timeout=300)


def test_help_explains_targets_styles_and_examples():
    r = _run("master", "--help")
    assert r.returncode == 0
    for word in ("streaming", "-14 LUFS", "apple", "broadcast", "club", "warm", "professional", "--reference",
                 "--album", "wav16", "examples"):  # fmt: skip
        assert word in r.stdout


def test_master_writes_output_report_plot_and_plan(program_44k_30s, tmp_path, capsys):
    out, rep, plot, plan = (tmp_path / n for n in ("m.wav", "r.json", "p.png", "plan.json"))
    code = main(["master", str(program_44k_30s), "-o", str(out), "--report", str(rep), "--plot", str(plot),
                 "--save-plan", str(plan), "--target", "apple", "-q"])  # fmt: skip
    assert code == 0
    report = json.loads(rep.read_text())
    assert report["target"] == {"name": "apple", "lufs": -16.0, "ceiling_dbtp": -1.0}
    assert abs(report["after"]["integrated_lufs"] - -16.0) <= 0.2
    assert report["before"]["integrated_lufs"] != report["after"]["integrated_lufs"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(plan.read_text())["loudness"]["gain_db"] is not None
    # the saved plan renders again
    assert main(["master", str(program_44k_30s), "-o", str(tmp_path / "again.wav"), "--plan", str(plan), "-q"]) == 0


def test_source_format_is_kept_unless_asked(program_44k_30s, tmp_path):
    x, sr = sf.read(program_44k_30s, dtype="float32")
    src = tmp_path / "mix16.wav"
    sf.write(src, x, sr, subtype="PCM_16")
    assert main(["master", str(src), "-o", str(tmp_path / "o.wav"), "-q"]) == 0
    assert sf.info(tmp_path / "o.wav").subtype == "PCM_16"
    assert main(["master", str(src), "-o", str(tmp_path / "o.flac"), "--format", "flac", "-q"]) == 0
    assert sf.info(tmp_path / "o.flac").format == "FLAC"


def test_analyze_json(program_44k_30s, capsys):
    assert main(["analyze", str(program_44k_30s), "--json", "-q", "--musical"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["sample_rate"] == 44100 and -30 < d["integrated_lufs"] < -5
    assert d["tempo_bpm"] is not None and d["key"]


def test_analyze_measures_the_meters_only_unless_asked(program_44k_30s, capsys):
    # tempo and key (librosa: seconds and ~800 MB more on a 4-minute file) only with --musical;
    # the old --no-musical is still accepted
    for extra in ([], ["--no-musical"]):
        assert main(["analyze", str(program_44k_30s), "--json", "-q", *extra]) == 0
        d = json.loads(capsys.readouterr().out)
        assert -30 < d["integrated_lufs"] < -5 and d["true_peak_dbtp"] is not None
        assert d["tempo_bpm"] is None and d["key"] is None and d["beats_s"] is None
    assert main(["analyze", str(program_44k_30s), "-q"]) == 0
    out = capsys.readouterr().out
    assert "integrated loudness" in out and "--musical" in out
    r = _run("analyze", "--help")
    help_text = " ".join(r.stdout.split())
    assert "--musical also tempo and key" in help_text and "tempo, beats and key" in help_text


@pytest.mark.parametrize(
    ("setup", "code", "match"),
    [
        (lambda p: p.write_bytes(b""), 3, "in.wav"),
        (lambda p: p.write_text("these are lyrics, not audio\n" * 50), 3, "in.wav"),
        (lambda p: sf.write(p, np.zeros((44100, 2)), 44100), 3, "silent"),
    ],
)
def test_bad_input_gives_one_line_and_exit_code(tmp_path, setup, code, match):
    src = tmp_path / "in.wav"
    setup(src)
    r = _run("master", str(src), "-o", str(tmp_path / "out.wav"))
    assert r.returncode == code
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and match in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "out.wav").exists()


def test_unwritable_output_and_input_protection(program_44k_30s, tmp_path):
    r = _run("master", str(program_44k_30s), "-o", str(tmp_path / "nope" / "o.wav"))
    assert r.returncode == 4 and "nope" in r.stderr
    copy = tmp_path / "mix.wav"
    copy.write_bytes(Path(program_44k_30s).read_bytes())
    before = copy.read_bytes()
    r = _run("master", str(copy), "-o", str(copy))
    assert r.returncode == 4 and copy.read_bytes() == before


def test_bad_options_exit_2(program_44k_30s, tmp_path):
    for extra in (["--target", "spotify"], ["--style", "loud"], ["--target", "custom", "--lufs", "-10"],
                  ["--amount-eq", "500"]):  # fmt: skip
        r = _run("master", str(program_44k_30s), "-o", str(tmp_path / "o.wav"), *extra)
        assert r.returncode == 2, (extra, r.stderr)
    assert not (tmp_path / "o.wav").exists()


@pytest.mark.parametrize("args", [["analyze", "{src}", "--json"], ["analyze", "{src}"], ["master", "--help"]])
def test_closed_stdout_pipe_exits_quietly(tmp_path, args):
    """`amc ... | head -1`: the reader is gone before amc writes; no traceback, status 141
    (or 0 where argparse itself swallows the error, printing help to an unbuffered stdout)."""
    src = tmp_path / "tone.wav"
    sf.write(src, 0.1 * np.sin(2 * np.pi * 440 * np.arange(3 * 44100) / 44100), 44100)
    cmd = [sys.executable, "-m", "app.cli", *(a.format(src=src) for a in args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the pipe's only reader closes it before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) in ((0, 141) if "--help" in args else (141,))
    assert err == ""


def test_head_of_analyze_json_has_no_traceback(tmp_path):
    src = tmp_path / "tone.wav"
    sf.write(src, 0.1 * np.sin(2 * np.pi * 440 * np.arange(3 * 44100) / 44100), 44100)
    r = subprocess.run(f'"{sys.executable}" -m app.cli analyze --json "{src}" | head -1', shell=True,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.stdout == "{\n" and r.stderr == "" and r.returncode == 0


def test_analyze_by_default_imports_neither_librosa_nor_the_mastering_chain(tmp_path):
    # librosa was most of the old default's 8 s and 1 GB; the chain's stages are not meters
    src = tmp_path / "tone.wav"
    sf.write(src, 0.1 * np.sin(2 * np.pi * 440 * np.arange(3 * 44100) / 44100), 44100)
    code = ("import sys; from app.cli import main; rc = main(['analyze', sys.argv[1], '--json', '-q']); "
            "print(rc, sorted(m for m in ('librosa', 'app.engine.mastering.chain') if m in sys.modules))")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code, str(src)], capture_output=True, text=True, timeout=300)
    assert r.stdout.splitlines()[-1] == "0 []", r.stderr
