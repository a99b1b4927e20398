"""Listening benchmark: `amc master` on real released music vs Matchering 2.0 and ffmpeg loudnorm.

    python benchmarks/sound.py [--quick] [--amc "CMD"] [--keep DIR] [--json FILE]

Music: game soundtracks and a band's song from Debian packages, fetched by this script
with ``apt-get download`` (not by CI) into the cache (``--cache``, default
``$XDG_CACHE_HOME/amc-sound-bench``, shared by every worktree) and decoded by ffmpeg to
32-bit float WAV at the file's own rate, unchanged (no trim, no gain, nothing clipped).
See ``TRACKS`` for each file's package, licence, genre and the reference it is
mastered towards (another track of the set, of the nearest genre family).

Per track, four masters of the same source (all 24-bit WAV):

* ``amc``: ``amc master SRC -o OUT --target streaming --level moderate --format wav24
  --report R.json`` (-14 LUFS, -1 dBTP);
* ``amc+ref``: the same with ``--reference REF --amount-eq 100`` (the issue compares the
  reference match "with amounts at 100 %", as Matchering always matches; ``--ref-amount-eq``
  changes it);
* ``matchering``: Matchering 2.0.6 with REF (``benchmarks/.venv-matchering``, made by
  ``benchmarks/setup_matchering.sh``, run as a separate process; never imported);
* ``loudnorm``: ffmpeg two-pass ``loudnorm=I=-14:TP=-1:LRA=20``, ``linear=true`` (ffmpeg
  falls back to its dynamic mode where the gain would push the true peak over -1 dBTP;
  the table says which), ``-ar`` = the source's rate.

Measured on the source and every output (definitions: ``benchmarks/sound_metrics.py``):
integrated loudness and its error vs -14 LUFS, true peak, output rate, LRA, section
contrast, beat-rate gain modulation against the EQ-matched source, low-end (< 120 Hz)
L/R correlation, mid and side 1/3-octave distance to the reference, wall time; for amc,
from its report: limiter and glue-compressor gain reduction (``result.limiter_gr`` /
``result.compressor_gr``: max_db, mean_db, over_1db_pct; "n/a" where the report has
none) and the dynamics guard (``result.guard``).

PASS/FAIL lines (issue 13 targets, streaming, moderate, every track): limiter max
<= 3 dB and over 1 dB <= 5 % of the time; beat-rate modulation <= Matchering's; LRA
and section contrast within 1 LU of the source's (only where the source is within 4 LU
of -14 LUFS); amc+ref's mid and side distance to the reference <= Matchering's and
<= the untouched source's; loudness within +-0.2 LU (or below the target where the
report's guard says so); true peak <= -1 dBTP; the source's rate kept.

A PNG per track (``--keep DIR``/plots): short-term loudness of source and every master,
and the mid and side spectra against the reference.

Exit status 0 even when a target is missed (a measurement); 1 when a tool crashes or
writes nothing; 2 when a tool cannot be set up.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import sound_metrics as sm  # noqa: E402
from mastering import (  # noqa: E402
    CEILING_DBTP,
    LOUDNESS_TOLERANCE_LU,
    MATCHERING_DRIVER,
    MATCHERING_PYTHON,
    TARGET_LUFS,
    _finite,
    _tail,
    run_measured,
)

TOOLS = ("amc", "amc+ref", "matchering", "loudnorm")
MAX_LIMITER_DB = 3.0
MAX_OVER_1DB_PCT = 5.0
DYNAMICS_TOLERANCE_LU = 1.0
NEAR_TARGET_LU = 4.0  # dynamics targets only where the source is this close to -14 LUFS


@dataclass(frozen=True)
class Track:
    name: str
    genre: str
    package: str
    members: tuple[str, ...]  # files in the package, summed sample by sample (stems)
    licence: str
    reference: str  # name of another track


ETR = "usr/share/games/etr/music/"
FOF = "usr/share/games/fretsonfire/data/songs/muldjord/chaos_god/"
ETR_LICENCE = "GPL-2+ (Extreme Tux Racer team)"
# Genres judged from the title, a spectrogram and numbers (tempo-rate envelope
# modulation, bass share, width, loudness range); none of these packages says.
TRACKS = (
    Track("credits1-cp", "pop", "extremetuxracer-data", (ETR + "credits1-cp.ogg",), ETR_LICENCE, "race1-jt"),
    Track("race1-jt", "rock", "extremetuxracer-data", (ETR + "race1-jt.ogg",), ETR_LICENCE, "credits1-cp"),
    Track("chaos_god", "rock (metal, Muldjord)", "fretsonfire-songs-muldjord",
          (FOF + "song.ogg", FOF + "guitar.ogg"), "CC BY-SA 3.0 (El Senator / Muldjord)", "race1-jt"),
    Track("spunkyrace-ks", "electronic", "extremetuxracer-data", (ETR + "spunkyrace-ks.ogg",), ETR_LICENCE, "calmrace-ks"),
    Track("calmrace-ks", "electronic (ambient), 48 kHz", "extremetuxracer-data", (ETR + "calmrace-ks.ogg",), ETR_LICENCE, "spunkyrace-ks"),
    Track("start1-jt", "orchestral (epic)", "extremetuxracer-data", (ETR + "start1-jt.ogg",), ETR_LICENCE, "freezingpoint"),
    Track("freezingpoint", "orchestral (quiet)", "extremetuxracer-data", (ETR + "freezingpoint.ogg",), ETR_LICENCE, "start1-jt"),
)  # fmt: skip
QUICK_TRACKS = ("credits1-cp", "calmrace-ks", "start1-jt")
QUICK_EXCERPT_S = 60.0


# --- setup -----------------------------------------------------------------------------------


def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def ensure_ffmpeg() -> str | None:
    found = shutil.which("ffmpeg")
    if found:
        return found
    if os.geteuid() == 0:
        print("[sound] installing ffmpeg (apt-get)", file=sys.stderr)
        _run(["apt-get", "update"])
        _run(
            ["apt-get", "install", "-y", "ffmpeg"],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    return shutil.which("ffmpeg")


def ensure_package(package: str, cache: pathlib.Path) -> pathlib.Path:
    """The package's files, extracted under cache/pkgs/<package> (apt-get download + dpkg-deb -x)."""
    dest = cache / "pkgs" / package
    if (dest / ".done").is_file():
        return dest
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        print(f"[sound] apt-get download {package}", file=sys.stderr)
        r = _run(["apt-get", "download", package], cwd=debs)
        if r.returncode != 0:
            _run(["apt-get", "update"])
            r = _run(["apt-get", "download", package], cwd=debs)
        found = sorted(debs.glob(f"{package}_*.deb"))
        if r.returncode != 0 or not found:
            raise RuntimeError(f"apt-get download {package} failed: {r.stderr.strip()[-400:]}")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{package}.", dir=cache))
    r = _run(["dpkg-deb", "-x", str(found[-1]), str(tmp)])
    if r.returncode != 0:
        raise RuntimeError(f"dpkg-deb -x {found[-1]}: {r.stderr.strip()}")
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(dest)
    (dest / ".done").write_text(found[-1].name + "\n")
    return dest


def decode(path: pathlib.Path) -> tuple[np.ndarray, int]:
    """Float decode at the file's own rate (ffmpeg), nothing clipped."""
    r = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "wav", "-c:a", "pcm_f32le", "-"],
        capture_output=True,
        check=True,
    )
    import io

    audio, sr = sf.read(io.BytesIO(r.stdout), dtype="float32", always_2d=True)
    return audio, int(sr)


def source_wav(track: Track, cache: pathlib.Path, excerpt_s: float | None) -> pathlib.Path:
    """cache/src/<name>[-<N>s].wav: the decoded track (stems summed), first N s with --quick."""
    out = cache / "src" / (f"{track.name}-{excerpt_s:g}s.wav" if excerpt_s else f"{track.name}.wav")
    if out.is_file():
        return out
    pkg = ensure_package(track.package, cache)
    parts = [decode(pkg / m) for m in track.members]
    sr = parts[0][1]
    if any(p[1] != sr for p in parts):
        raise RuntimeError(f"{track.name}: stems at different rates")
    n = max(len(p[0]) for p in parts)
    audio = np.zeros((n, 2), dtype=np.float32)
    for a, _ in parts:
        audio[: len(a)] += a if a.shape[1] == 2 else np.repeat(a, 2, axis=1)
    if excerpt_s:
        audio = audio[: round(excerpt_s * sr)]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".part.wav")
    sf.write(tmp, audio, sr, subtype="FLOAT")
    tmp.replace(out)
    return out


def default_amc() -> str:
    return f"{ROOT / '.venv' / 'bin' / 'python'} -m app.cli"


def amc_command(
    spec: str, shim: pathlib.Path | None = None
) -> tuple[list[str], pathlib.Path | None]:
    """(argv prefix, repo) for --amc. ``<repo>/.venv/bin/python -m app.cli`` runs <repo>'s code:
    it is started as ``env -C <repo> PYTHONPATH=<repo> ...``, whatever this process's
    PYTHONPATH or working folder; with ``shim``, as ``python SHIM`` instead of ``-m app.cli``
    (AMC_GR_SHIM). Any other command runs as given."""
    argv = shlex.split(spec)
    parts = pathlib.PurePath(argv[0]).parts if argv else ()
    if len(parts) >= 4 and parts[-3:-1] == (".venv", "bin") and argv[1:] == ["-m", "app.cli"]:
        repo = pathlib.Path(*parts[:-3])
        run = [argv[0], str(shim)] if shim else argv
        return ["env", "-C", str(repo), f"PYTHONPATH={repo}", *run], repo
    return argv, None


# Runs in amc's own environment instead of ``-m app.cli`` (argv = amc's arguments): the
# same CLI, with the report's result given ``limiter_gr`` / ``compressor_gr`` computed from
# MasterResult's 100 ms maxima where amc does not write them itself (today's code); keys
# that amc writes are left alone. Marked "by": "sound.py shim" in the JSON.
AMC_GR_SHIM = """\
import sys

import numpy as np


def _stats(gr):
    gr = np.asarray(gr, dtype=float)
    if gr.size == 0:
        return {"max_db": 0.0, "mean_db": 0.0, "over_1db_pct": 0.0, "by": "sound.py shim"}
    return {"max_db": float(gr.max()), "mean_db": float(gr.mean()),
            "over_1db_pct": float(100.0 * (gr > 1.0).mean()), "by": "sound.py shim"}


try:
    from app.engine.mastering import chain

    _orig = chain.MasterResult.to_report

    def _to_report(self):
        report = _orig(self)
        result = report.setdefault("result", {})
        for key, attr in (("limiter_gr", "limiter_gr_db"), ("compressor_gr", "compressor_gr_db")):
            if key not in result and getattr(self, attr, None) is not None:
                result[key] = _stats(getattr(self, attr))
        return report

    chain.MasterResult.to_report = _to_report
except Exception as exc:  # the benchmark then prints n/a
    print(f"sound.py shim not applied: {exc!r}", file=sys.stderr)

from app.cli import main

sys.exit(main(sys.argv[1:]))
"""


# --- running the tools -----------------------------------------------------------------------


@dataclass
class Output:
    tool: str
    path: pathlib.Path | None = None
    wall_s: float = float("nan")
    peak_rss_mb: float = float("nan")
    report: dict | None = None
    note: str = ""
    error: str = ""


def run_amc(
    amc: list[str],
    src: pathlib.Path,
    ref: pathlib.Path | None,
    work: pathlib.Path,
    stem: str,
    ref_amount_eq: float | None = 100.0,
) -> Output:
    tool = "amc+ref" if ref else "amc"
    out, rep, log = work / f"{stem}.wav", work / f"{stem}.json", work / f"{stem}.log"
    for p in (out, rep):
        p.unlink(missing_ok=True)
    cmd = [*amc, "master", str(src), "-o", str(out), "--target", "streaming",
           "--level", "moderate", "--format", "wav24", "--report", str(rep), "-q"]  # fmt: skip
    if ref:
        cmd += ["--reference", str(ref)]
        if ref_amount_eq is not None:
            cmd += ["--amount-eq", f"{ref_amount_eq:g}"]
    code, wall, rss = run_measured(cmd, log)
    result = Output(tool, out, wall, rss)
    if code != 0 or not out.is_file():
        result.error = f"exit {code}: {shlex.join(cmd)}\n{_tail(log)}"
        return result
    try:
        result.report = json.loads(rep.read_text())
    except (OSError, ValueError) as exc:
        result.error = f"no valid --report JSON ({exc})"
    return result


def run_matchering(src: pathlib.Path, ref: pathlib.Path, work: pathlib.Path, stem: str) -> Output:
    driver = work / "matchering_driver.py"
    driver.write_text(MATCHERING_DRIVER)
    out, log = work / f"{stem}.wav", work / f"{stem}.log"
    out.unlink(missing_ok=True)
    cmd = [str(MATCHERING_PYTHON), str(driver), str(src), str(ref), str(out)]
    code, wall, rss = run_measured(cmd, log)
    result = Output("matchering", out, wall, rss)
    if code != 0 or not out.is_file():
        result.error = f"exit {code}: {shlex.join(cmd)}\n{_tail(log)}"
    return result


def _loudnorm_json(stderr: str) -> dict:
    found = re.findall(r"\{[^{}]*\"input_i\"[^{}]*\}", stderr)
    if not found:
        raise ValueError("no loudnorm JSON in ffmpeg's output")
    return json.loads(found[-1])


def run_loudnorm(src: pathlib.Path, sr: int, work: pathlib.Path, stem: str) -> Output:
    out, log = work / f"{stem}.wav", work / f"{stem}.log"
    out.unlink(missing_ok=True)
    base = f"loudnorm=I={TARGET_LUFS:g}:TP={CEILING_DBTP:g}:LRA=20"
    started = time.perf_counter()
    first = _run(["ffmpeg", "-hide_banner", "-nostats", "-i", str(src), "-af",
                  base + ":print_format=json", "-f", "null", "-"])  # fmt: skip
    result = Output("loudnorm", out)
    try:
        m = _loudnorm_json(first.stderr)
        af = (f"{base}:measured_I={m['input_i']}:measured_TP={m['input_tp']}:measured_LRA={m['input_lra']}"
              f":measured_thresh={m['input_thresh']}:offset={m['target_offset']}:linear=true:print_format=json")  # fmt: skip
        second = _run(["ffmpeg", "-hide_banner", "-nostats", "-y", "-i", str(src), "-af", af,
                       "-ar", str(sr), "-c:a", "pcm_s24le", str(out)])  # fmt: skip
        log.write_text(first.stderr + "\n" + second.stderr)
        result.note = _loudnorm_json(second.stderr).get("normalization_type", "")
        if second.returncode != 0:
            raise ValueError(f"exit {second.returncode}")
    except (ValueError, KeyError) as exc:
        result.error = f"ffmpeg loudnorm: {exc}\n{first.stderr[-600:]}"
    result.wall_s = time.perf_counter() - started
    if not result.error and not out.is_file():
        result.error = "ffmpeg wrote no output"
    return result


# --- measuring -------------------------------------------------------------------------------


def read(path: pathlib.Path) -> tuple[np.ndarray, int]:
    audio, sr = sf.read(path, dtype="float64", always_2d=True)
    return audio, int(sr)


def _gr(report: dict | None, key: str) -> dict | None:
    value = ((report or {}).get("result") or {}).get(key)
    return value if isinstance(value, dict) else None


def measure(
    audio: np.ndarray,
    sr: int,
    src: tuple[np.ndarray, int] | None,
    ref_spectra: tuple[np.ndarray, np.ndarray],
) -> dict[str, Any]:
    loud = sm.loudness(audio, sr)
    spectra = sm.band_spectra(audio, sr)
    mid, side = sm.spectrum_distance(spectra, ref_spectra)
    row: dict[str, Any] = {
        "integrated_lufs": loud.integrated_lufs,
        "error_lu": loud.integrated_lufs - TARGET_LUFS,
        "true_peak_dbtp": loud.true_peak_dbtp,
        "sample_rate": sr,
        "lra_lu": loud.lra_lu,
        "section_contrast_lu": sm.section_contrast(audio, sr),
        "low_end_correlation": sm.low_end_correlation(audio, sr),
        "ref_distance_mid_db": mid,
        "ref_distance_side_db": side,
        "spectra": {"mid_db": spectra[0].tolist(), "side_db": spectra[1].tolist()},
        "beat_rate_modulation_db": float("nan"),
    }
    if src is not None:
        row["beat_rate_modulation_db"] = sm.beat_rate_modulation(src[0], src[1], audio, sr)
    return row


# --- printing --------------------------------------------------------------------------------


def _f(value: Any, digits: int = 1, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if abs(value) < 0.5 * 10.0**-digits:
        value = 0.0  # no "-0.0"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _gr_cells(gr: dict | None, with_pct: bool) -> list[str]:
    if gr is None:
        return ["n/a"] * (3 if with_pct else 2)
    cells = [_f(gr.get("max_db")), _f(gr.get("mean_db"), 2)]
    if with_pct:
        cells.append(_f(gr.get("over_1db_pct")))
    return cells


def print_table(rows: list[dict]) -> None:
    header = ["track", "tool", "wall s", "LUFS", "err LU", "dBTP", "Hz", "LRA", "contr", "lim max",
              "lim mean", "lim>1dB%", "comp max", "comp mean", "beat dB", "low corr", "mid dist", "side dist", "note"]  # fmt: skip
    body = []
    for r in rows:
        is_amc = r["tool"].startswith("amc")
        body.append([
            r["track"], r["tool"], _f(r.get("wall_s")), _f(r.get("integrated_lufs"), 2),
            _f(r.get("error_lu"), 2, True), _f(r.get("true_peak_dbtp"), 2), str(r.get("sample_rate") or "-"),
            _f(r.get("lra_lu")), _f(r.get("section_contrast_lu")),
            *(_gr_cells(r.get("limiter_gr"), True) if is_amc else ["", "", ""]),
            *(_gr_cells(r.get("compressor_gr"), False) if is_amc else ["", ""]),
            _f(r.get("beat_rate_modulation_db"), 2), _f(r.get("low_end_correlation"), 2),
            _f(r.get("ref_distance_mid_db"), 2), _f(r.get("ref_distance_side_db"), 2),
            r.get("note", "") or r.get("error", "").split("\n")[0][:60],
        ])  # fmt: skip
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    last = None
    for i, row in enumerate([header, *body]):
        if i > 0 and row[0] != last:
            print("  ".join("-" * w for w in widths) if i > 1 else "", end="\n" if i > 1 else "")
        last = row[0] if i > 0 else None
        print("  ".join(c.rjust(w) if 1 < j < len(row) - 1 else c.ljust(w)
                        for j, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip())  # fmt: skip
        if i == 0:
            print("  ".join("=" * w for w in widths))


def verdicts(track: Track, rows: dict[str, dict]) -> list[tuple[str, str]]:
    """(PASS|FAIL|N/A, line) for one track."""
    out: list[tuple[str, str]] = []
    src = rows.get("source")
    mt = rows.get("matchering")
    if src is None:
        return out

    def add(ok: bool | None, line: str) -> None:
        out.append(("N/A" if ok is None else "PASS" if ok else "FAIL", f"{track.name}: {line}"))

    near = abs(src["integrated_lufs"] - TARGET_LUFS) <= NEAR_TARGET_LU
    for tool in ("amc", "amc+ref"):
        r = rows.get(tool)
        if r is None or r.get("error"):
            continue
        lim = r.get("limiter_gr")
        if lim is None:
            add(None, f"{tool} limiter: no result.limiter_gr in the report")
        else:
            add(lim.get("max_db", 99) <= MAX_LIMITER_DB and lim.get("over_1db_pct", 100) <= MAX_OVER_1DB_PCT,
                f"{tool} limiter max {_f(lim.get('max_db'), 2)} dB (<= {MAX_LIMITER_DB:g}), over 1 dB "
                f"{_f(lim.get('over_1db_pct'))} % of the time (<= {MAX_OVER_1DB_PCT:g})")  # fmt: skip
        if mt is not None and not mt.get("error"):
            a, b = r["beat_rate_modulation_db"], mt["beat_rate_modulation_db"]
            add(a <= b, f"{tool} beat-rate modulation {_f(a, 2)} dB rms (Matchering {_f(b, 2)})")
        if near:
            for key, what in (("lra_lu", "LRA"), ("section_contrast_lu", "section contrast")):
                a, s = r[key], src[key]
                add(bool(np.isfinite(a) and np.isfinite(s) and abs(a - s) <= DYNAMICS_TOLERANCE_LU),
                    f"{tool} {what} {_f(s)} -> {_f(a)} LU (within {DYNAMICS_TOLERANCE_LU:g} LU)")  # fmt: skip
        guard = ((r.get("report") or {}).get("result") or {}).get("guard")
        err = r["error_lu"]
        if abs(err) <= LOUDNESS_TOLERANCE_LU:
            add(
                True,
                f"{tool} loudness {r['integrated_lufs']:.2f} LUFS, error {err:+.2f} LU (±{LOUDNESS_TOLERANCE_LU:g})",
            )
        elif guard and err < 0:
            add(
                True,
                f"{tool} loudness {err:+.2f} LU, below the target by the dynamics guard: {json.dumps(guard)[:300]}",
            )
        else:
            add(False, f"{tool} loudness {r['integrated_lufs']:.2f} LUFS, error {err:+.2f} LU (±{LOUDNESS_TOLERANCE_LU:g})"
                + (f"; guard: {json.dumps(guard)[:300]}" if guard else ""))  # fmt: skip
        if guard and abs(err) <= LOUDNESS_TOLERANCE_LU:
            out.append(("INFO", f"{track.name}: {tool} guard: {json.dumps(guard)[:300]}"))
        add(
            r["true_peak_dbtp"] <= CEILING_DBTP,
            f"{tool} true peak {r['true_peak_dbtp']:.2f} dBTP (<= {CEILING_DBTP:g})",
        )
        add(
            r["sample_rate"] == src["sample_rate"],
            f"{tool} output {r['sample_rate']} Hz, source {src['sample_rate']} Hz",
        )
    r = rows.get("amc+ref")
    if r is not None and not r.get("error"):
        for key, what in (("ref_distance_mid_db", "mid"), ("ref_distance_side_db", "side")):
            a, s = r[key], src[key]
            b = mt[key] if mt is not None and not mt.get("error") else float("nan")
            add(a <= s and not (a > b), f"amc+ref {what} distance to {track.reference} {a:.2f} dB "
                f"(Matchering {_f(b, 2)}, untouched source {s:.2f})")  # fmt: skip
    return out


# --- plots -----------------------------------------------------------------------------------

COLOURS = {"source": "#888888", "amc": "#1f77b4", "amc+ref": "#17becf", "matchering": "#d62728",
           "loudnorm": "#2ca02c", "reference": "#000000"}  # fmt: skip


def plot_track(track: Track, audio: dict[str, tuple[np.ndarray, int]], rows: dict[str, dict],
               ref_spectra: tuple[np.ndarray, np.ndarray], path: pathlib.Path) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(12, 11), constrained_layout=True)
    src = rows["source"]
    fig.suptitle(f"{track.name} ({track.genre}): source {src['integrated_lufs']:.1f} LUFS, "
                 f"LRA {src['lra_lu']:.1f} LU; reference {track.reference}", fontsize=12)  # fmt: skip
    ax = axes[0]
    for name, (x, sr) in audio.items():
        t, st = sm.short_term_loudness(x, sr)
        r = rows[name]
        label = (f"{name}: LRA {_f(r['lra_lu'])}, contrast {_f(r['section_contrast_lu'])}"
                 + ("" if name == "source" else f", beat {_f(r['beat_rate_modulation_db'], 2)} dB"))  # fmt: skip
        ax.plot(t, st, color=COLOURS[name], lw=1.6 if name == "source" else 1.1, label=label)
    ax.axhline(TARGET_LUFS, color="k", ls=":", lw=0.8)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("short-term loudness (LUFS, 3 s)")
    ax.set_ylim(bottom=max(ax.get_ylim()[0], -45))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    c = sm.THIRD_OCTAVE_CENTERS
    for ax, idx, what in ((axes[1], 0, "mid"), (axes[2], 1, "side")):
        ax.semilogx(c, ref_spectra[idx], "-", color=COLOURS["reference"], lw=2.2, alpha=0.6,
                    label=f"reference {track.reference}")  # fmt: skip
        for name in audio:
            r = rows[name]
            key = f"ref_distance_{what}_db"
            style = (
                dict(ls="--", lw=2.0, marker=None)
                if name == "source"
                else dict(ls="-", lw=1.0, marker="o", ms=2.5)
            )
            ax.semilogx(c, r["spectra"][f"{what}_db"], color=COLOURS[name], **style,
                        label=f"{name} ({_f(r[key], 2)} dB from reference)")  # fmt: skip
        ax.set_ylabel(f"{what} (dB, rel. mid 100 Hz-8 kHz)")
        ax.set_xlabel("1/3-octave band (Hz)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="lower left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _describe(repo: pathlib.Path | None) -> str:
    """``git describe --always --dirty`` of the amc checkout ("" when unknown)."""
    if repo is None:
        return ""
    described = _run(["git", "-C", str(repo), "describe", "--always", "--dirty"])
    return described.stdout.strip() if described.returncode == 0 else ""


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{len(QUICK_TRACKS)} tracks, first {QUICK_EXCERPT_S:g} s of each (references too)")  # fmt: skip
    parser.add_argument(
        "--tracks", help="comma-separated track names (default: all, or the quick set)"
    )
    parser.add_argument(
        "--excerpt", type=float, help="seconds from the start of each track and reference"
    )
    parser.add_argument("--amc", default=default_amc(),
                        help="command that runs amc (default: %(default)s, with PYTHONPATH and cwd = that repo)")  # fmt: skip
    parser.add_argument(
        "--skip", choices=TOOLS, action="append", default=[], help="leave a tool out"
    )
    parser.add_argument("--cache", type=pathlib.Path,
                        default=pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "amc-sound-bench")  # fmt: skip
    parser.add_argument(
        "--keep", type=pathlib.Path, help="keep masters, reports, logs and plots here"
    )
    parser.add_argument("--json", type=pathlib.Path, help="write every figure here")
    parser.add_argument("--ref-amount-eq", type=float, default=100.0,
                        help="amc+ref's --amount-eq (default: %(default)s %%, a full match like Matchering's)")  # fmt: skip
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument(
        "--no-gr-shim",
        action="store_true",
        help="run amc as given: no limiter/compressor figures from today's reports (see AMC_GR_SHIM)",
    )
    args = parser.parse_args(argv)

    names = [t.name for t in TRACKS]
    wanted = args.tracks.split(",") if args.tracks else list(QUICK_TRACKS if args.quick else names)
    unknown = [w for w in wanted if w not in names]
    if unknown:
        parser.error(f"unknown track(s) {unknown}; known: {', '.join(names)}")
    excerpt = args.excerpt or (QUICK_EXCERPT_S if args.quick else None)
    by_name = {t.name: t for t in TRACKS}

    if ensure_ffmpeg() is None:
        print("ffmpeg missing (apt-get install ffmpeg)", file=sys.stderr)
        return 2
    if "matchering" not in args.skip and not MATCHERING_PYTHON.is_file():
        r = subprocess.run([str(HERE / "setup_matchering.sh")])
        if r.returncode != 0 or not MATCHERING_PYTHON.is_file():
            print("Matchering setup failed (benchmarks/setup_matchering.sh)", file=sys.stderr)
            return 2
    args.cache.mkdir(parents=True, exist_ok=True)
    shim = None
    if not args.no_gr_shim:
        shim = args.cache / "amc_gr_shim.py"
        shim.write_text(AMC_GR_SHIM)
    amc, amc_repo = amc_command(args.amc, shim)
    version = subprocess.run([*amc, "--version"], capture_output=True, text=True)
    if version.returncode != 0:
        print(f"amc does not run: {args.amc}\n{version.stderr[-800:]}", file=sys.stderr)
    commit = _describe(amc_repo)
    where = [version.stdout.strip()]
    if commit:
        where.append(f"commit {commit}")
    if amc_repo:
        where.append(f"code from {amc_repo}" + (", GR shim" if shim else ""))
    print(
        f"machine: {os.cpu_count()} CPUs; amc: {args.amc} ({', '.join(where)}); cache {args.cache}"
    )

    args.cache.mkdir(parents=True, exist_ok=True)
    work_ctx = tempfile.TemporaryDirectory(prefix="amc-sound-") if args.keep is None else None
    work = pathlib.Path(work_ctx.name) if work_ctx else args.keep
    work.mkdir(parents=True, exist_ok=True)
    all_rows: list[dict] = []
    lines: list[tuple[str, str]] = []
    crashed = False
    moved: list[str] = []
    started_all = time.perf_counter()
    try:
        for name in wanted:
            track = by_name[name]
            ref_track = by_name[track.reference]
            src_path = source_wav(track, args.cache, excerpt)
            ref_path = source_wav(ref_track, args.cache, excerpt)
            src = read(src_path)
            ref = read(ref_path)
            ref_spectra = sm.band_spectra(*ref)
            folder = work / track.name
            folder.mkdir(parents=True, exist_ok=True)
            print(f"[{track.name}] {track.genre}; {len(src[0]) / src[1]:.0f} s at {src[1]} Hz; "
                  f"reference {ref_track.name}", flush=True)  # fmt: skip
            rows: dict[str, dict] = {}
            now = _describe(amc_repo)
            if now != commit:  # someone committed or edited in that checkout mid-run
                moved.append(
                    f"{track.name}: amc checkout at {now or '?'}, the run began at {commit}"
                )
                print(f"[{track.name}] WARNING {moved[-1]}", flush=True)
            base = {"track": track.name, "genre": track.genre, "package": track.package,
                    "files": list(track.members), "licence": track.licence, "reference": ref_track.name}  # fmt: skip
            rows["source"] = (
                base | {"tool": "source", "path": str(src_path)} | measure(*src, None, ref_spectra)
            )
            audio: dict[str, tuple[np.ndarray, int]] = {"source": src}
            for tool in TOOLS:
                if tool in args.skip:
                    continue
                if tool == "amc":
                    o = run_amc(amc, src_path, None, folder, "amc")
                elif tool == "amc+ref":
                    o = run_amc(amc, src_path, ref_path, folder, "amc-ref", args.ref_amount_eq)
                elif tool == "matchering":
                    o = run_matchering(src_path, ref_path, folder, "matchering")
                else:
                    o = run_loudnorm(src_path, src[1], folder, "loudnorm")
                row = base | {"tool": tool, "path": str(o.path), "wall_s": o.wall_s,
                              "peak_rss_mb": o.peak_rss_mb, "note": o.note, "error": o.error}  # fmt: skip
                if o.error:
                    crashed = True
                    print(f"[{track.name}] {tool}: FAILED {o.error}", flush=True)
                else:
                    out_audio = read(o.path)
                    audio[tool] = out_audio
                    row |= measure(*out_audio, src, ref_spectra)
                    if tool.startswith("amc"):
                        row["amc_commit"] = now
                    if o.report is not None:
                        row["report"] = {"result": o.report.get("result")}
                        row["limiter_gr"] = _gr(o.report, "limiter_gr")
                        row["compressor_gr"] = _gr(o.report, "compressor_gr")
                    print(f"[{track.name}] {tool}: {o.wall_s:.1f} s, {row['integrated_lufs']:.2f} LUFS, "
                          f"beat {row['beat_rate_modulation_db']:.2f} dB", flush=True)  # fmt: skip
                rows[tool] = row
            if not args.no_plots:
                png = work / "plots" / f"{track.name}.png"
                plot_track(track, audio, rows, ref_spectra, png)
                for r in rows.values():
                    r["plot"] = str(png)
            lines += verdicts(track, rows)
            all_rows += rows.values()
    finally:
        if work_ctx is not None:
            work_ctx.cleanup()

    print()
    print_table(all_rows)
    print()
    print("Tracks (Debian package, files, licence, reference):")
    for name in wanted:
        t = by_name[name]
        print(f"  {t.name:14s} {t.genre:30s} {t.package}: {', '.join(m.rsplit('/', 1)[-1] for m in t.members)}; "
              f"{t.licence}; reference {t.reference}")  # fmt: skip
    print()
    for verdict, line in lines:
        print(f"{verdict:4s}  {line}")
    for line in moved:
        print(f"WARNING  {line}: the amc figures mix versions")
    counts = {v: sum(1 for x, _ in lines if x == v) for v in ("PASS", "FAIL", "N/A")}
    print(f"\n{counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['N/A']} N/A; "
          f"{time.perf_counter() - started_all:.0f} s in all" + (f"; plots in {work / 'plots'}" if args.keep and not args.no_plots else ""))  # fmt: skip
    if args.json:
        payload = {
            "amc": args.amc,
            "amc_version": version.stdout.strip(),
            "amc_commit": commit,
            "excerpt_s": excerpt,
            "bands_hz": sm.THIRD_OCTAVE_CENTERS.tolist(),
            "rows": all_rows,
            "verdicts": [{"verdict": v, "what": line} for v, line in lines],
        }
        args.json.write_text(json.dumps(_finite(payload), indent=1, default=str))
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
