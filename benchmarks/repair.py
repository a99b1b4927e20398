"""ACES repair on documented damage: SNR and log-spectral distance to the clean source.

    python benchmarks/repair.py                      # 3 songs + 1 release, 20 s each
    python benchmarks/repair.py --seconds 30 --json out.json
    python benchmarks/repair.py --legacy 6ff99f5     # + the repair of that git revision, same cases
    python benchmarks/repair.py --memory 420         # + peak RSS / time of a 7-minute repair (child process)
    python benchmarks/repair.py --skip-cases --speed 195   # time/RSS vs the repair at 6ff99f5

Material (``tests/material.py``, fluidsynth + FluidR3 GM): three unmastered mixes
(``program()``: pop seed 0, ballad seed 1, rock seed 2) and one loud "release"
(``reference()``: bus-compressed, limited to about -8.5 LUFS).  Stereo, 44.1 kHz.

Damage recipes (seeded; every noise is independent per channel):

| recipe | what is done to the clean source |
|---|---|
| ``clip{L}`` | source scaled to a 0 dBFS sample peak, then hard-clipped at ``L`` dBFS (-3, -6, -12) |
| ``clip{L}+noise`` | clipped as above, then white noise at -40 dBFS RMS added (noisy plateaus) |
| ``noise+clip{L}`` | white noise at -40 dBFS RMS added to the scaled source, then clipped |
| ``white{N}`` / ``pink{N}`` | white / pink (1/f power, 20 Hz-20 kHz) noise at ``N`` dBFS RMS (-30, -40, -50) |
| ``hum`` | 50 Hz mains hum at -30 dBFS RMS with harmonics 2 and 3 at -6 and -12 dB |
| ``clicks`` | 60 clicks (1-8 samples, 0.1-0.5 peak, random sign, same in both channels) |
| ``dc`` | a +0.05 DC offset on both channels |
| ``clean`` | nothing: the repair must leave it alone |

Figures, per case: SNR (dB) of the damaged and of the repaired file against the clean
source, gain-matched (the least-squares gain of the estimate, so a level change alone is
not an error); log-spectral distance (dB; STFT 2048/512, frames within 60 dB of the
loudest, spectra floored at -100 dB) before and after.  For clean inputs: the output's
broadband level change and the largest third-octave band change (25 Hz-16 kHz, Welch
PSD) against the input, and the workflow ``--operation auto`` picks for the file.

Targets (PASS/FAIL lines): every damaged case improves its SNR and its LSD; clipping and
noise cases by at least 3 dB SNR; every clean input within 0.5 dB broadband and 0.2 dB
per third-octave band of itself; ``auto`` routes every clean input to ``master``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from app.models.backends import aces  # noqa: E402
from tests import material  # noqa: E402

SR = 44100
SOURCES = (("pop", 0, "program"), ("ballad", 1, "program"), ("rock", 2, "program"), ("rock", 7, "reference"))
CLIP_LEVELS_DB = (-3, -6, -12)
NOISE_LEVELS_DB = (-30, -40, -50)
CLIP_NOISE_DB = -40


# ----------------------------------------------------------------------------- damage


def _db_to_amp(db: float) -> float:
    return float(10 ** (db / 20))


def white(shape: tuple[int, int], rms_db: float, rng: np.random.Generator) -> np.ndarray:
    return (rng.standard_normal(shape) * _db_to_amp(rms_db)).astype(np.float32)


def pink(shape: tuple[int, int], rms_db: float, rng: np.random.Generator) -> np.ndarray:
    """1/f power noise between 20 Hz and 20 kHz, shaped in the frequency domain, ``rms_db`` RMS."""
    _ch, n = shape
    spec = np.fft.rfft(rng.standard_normal(shape), axis=1)
    f = np.fft.rfftfreq(n, 1 / SR)
    shape_f = np.where((f >= 20) & (f <= 20000), 1 / np.sqrt(np.maximum(f, 1.0)), 0.0)
    y = np.fft.irfft(spec * shape_f, n=n, axis=1)
    y /= np.sqrt(np.mean(y**2, axis=1, keepdims=True))
    return (y * _db_to_amp(rms_db)).astype(np.float32)


def damage(clean: np.ndarray, recipe: str, seed: int) -> np.ndarray:
    """The damaged copy of ``clean (channels, frames)`` for ``recipe`` (see the module table)."""
    rng = np.random.default_rng(seed)
    x = clean.astype(np.float32)
    if recipe == "clean":
        return x.copy()
    if recipe.startswith(("clip", "noise+clip")):
        level = _db_to_amp(float(recipe.split("clip")[1].split("+")[0]))
        if recipe.startswith("noise+"):
            return np.clip(x + white(x.shape, CLIP_NOISE_DB, rng), -level, level)
        y = np.clip(x, -level, level)
        if recipe.endswith("+noise"):
            y = y + white(x.shape, CLIP_NOISE_DB, rng)
        return y
    if recipe.startswith("white"):
        return x + white(x.shape, float(recipe[5:]), rng)
    if recipe.startswith("pink"):
        return x + pink(x.shape, float(recipe[4:]), rng)
    if recipe == "hum":
        t = np.arange(x.shape[1]) / SR
        amp = _db_to_amp(-30) * math.sqrt(2)
        h = sum(amp * _db_to_amp(-6 * (k - 1)) * np.sin(2 * np.pi * 50 * k * t + k) for k in (1, 2, 3))
        return (x + h[None]).astype(np.float32)
    if recipe == "clicks":
        y = x.copy()
        starts = rng.choice(np.arange(2000, x.shape[1] - 2000, 300), 60, replace=False)
        for s in starts:
            length = int(rng.integers(1, 9))
            y[:, s : s + length] += rng.choice([-1, 1]) * rng.uniform(0.1, 0.5) * rng.uniform(0.5, 1.0, length)
        return y
    if recipe == "dc":
        return x + np.float32(0.05)
    raise ValueError(f"unknown recipe {recipe}")


def recipes() -> list[str]:
    out = ["clean"]
    for lv in CLIP_LEVELS_DB:
        out += [f"clip{lv}", f"clip{lv}+noise", f"noise+clip{lv}"]
    for kind in ("white", "pink"):
        out += [f"{kind}{lv}" for lv in NOISE_LEVELS_DB]
    return [*out, "hum", "clicks", "dc"]


# ----------------------------------------------------------------------------- figures


def snr_db(ref: np.ndarray, est: np.ndarray) -> float:
    """SNR of ``est`` against ``ref`` after the least-squares gain on ``est``; inf when identical."""
    r = ref.astype(np.float64).ravel()
    e = est.astype(np.float64).ravel()
    g = float(r @ e) / max(float(e @ e), 1e-30)
    err = float(np.sum((r - g * e) ** 2))
    return math.inf if err == 0 else 10 * math.log10(float(np.sum(r**2)) / err)


def lsd_db(ref: np.ndarray, est: np.ndarray) -> float:
    from scipy.signal import stft

    _, _, s = stft(ref, nperseg=2048, noverlap=1536)
    _, _, e = stft(est, nperseg=2048, noverlap=1536)
    ps = np.abs(s) ** 2
    pe = np.abs(e) ** 2
    frame_e = ps.sum(axis=1)  # (channels, frames)
    keep = frame_e > frame_e.max() * 1e-6
    floor = 1e-10
    d = 10 * np.log10((ps + floor) / (pe + floor))
    per_frame = np.sqrt(np.mean(d**2, axis=1))  # (channels, frames)
    return float(np.mean(per_frame[keep]))


def third_octave_db(x: np.ndarray) -> np.ndarray:
    from scipy.signal import welch

    f, p = welch(x.mean(axis=0), fs=SR, nperseg=8192)
    centers = 1000 * 2 ** (np.arange(-16, 13) / 3)  # 25 Hz .. 16 kHz
    out = []
    for fc in centers:
        band = (f >= fc * 2 ** (-1 / 6)) & (f < fc * 2 ** (1 / 6))
        out.append(10 * math.log10(max(float(p[band].sum()), 1e-30)))
    return np.array(out)


def level_db(x: np.ndarray) -> float:
    return 10 * math.log10(max(float(np.mean(np.square(x, dtype=np.float64))), 1e-30))


# ----------------------------------------------------------------------------- runs


def load_legacy(rev: str) -> Any:
    """The ACES module as of git revision ``rev`` (for the before/after comparison)."""
    src = subprocess.run(
        ["git", "show", f"{rev}:app/models/backends/aces.py"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "aces_legacy.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("aces_legacy", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["aces_legacy"] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def legacy_repair(mod: Any, x: np.ndarray) -> np.ndarray:
    y, _ = mod.declip(x)
    y, _ = mod.declick(y, SR)
    y = mod.denoise(y, SR).audio
    y, _ = mod.corrective_eq(y, SR)
    return np.asarray(y, dtype=np.float32)


def auto_choice(x: np.ndarray) -> str:
    from app.models import orchestrator

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "in.wav"
        sf.write(p, x.T, SR, subtype="FLOAT")
        return orchestrator._auto_input_choice(p)[0]


def run_cases(seconds: float, legacy: Any | None, only: list[str] | None) -> list[dict[str, Any]]:
    rows = []
    for style, seed, kind in SOURCES:
        path = (material.program if kind == "program" else material.reference)(seconds, SR, seed=seed, style=style)
        clean, _sr = sf.read(path, dtype="float32", always_2d=True)
        clean = np.ascontiguousarray(clean.T)
        name = f"{kind}-{style}"
        for recipe in recipes():
            if only and not any(o in recipe for o in only):
                continue
            src = clean
            if recipe.startswith(("clip", "noise+clip")):
                src = (clean / np.abs(clean).max()).astype(np.float32)
            d = damage(src, recipe, seed=zlib.crc32(f"{name}/{recipe}".encode()))  # same noise every run
            t0 = time.perf_counter()
            y, rep = aces.repair(d, SR)
            el = time.perf_counter() - t0
            row: dict[str, Any] = {
                "source": name, "recipe": recipe, "seconds": round(el, 2),
                "snr_before": snr_db(src, d), "snr_after": snr_db(src, y),
                "lsd_before": lsd_db(src, d), "lsd_after": lsd_db(src, y),
                "changed": rep.changed, "notes": [n for n in rep.notes if not n.startswith("no ")],
            }
            if recipe == "clean":
                row["level_change_db"] = level_db(y) - level_db(d)
                row["max_band_change_db"] = float(np.max(np.abs(third_octave_db(y) - third_octave_db(d))))
                row["auto"] = auto_choice(d)
            if legacy is not None:
                t0 = time.perf_counter()
                ly = legacy_repair(legacy, d)
                row["legacy_seconds"] = round(time.perf_counter() - t0, 2)
                row["legacy_snr_after"] = snr_db(src, ly)
            rows.append(row)
            print(_line(row), flush=True)
    return rows


def _f(v: float) -> str:
    return "  inf" if v == math.inf else f"{v:5.1f}"


def _line(r: dict[str, Any]) -> str:
    s = (f"| {r['source']:<17} | {r['recipe']:<14} | {_f(r['snr_before'])} | {_f(r['snr_after'])} | "
         f"{r['snr_after'] - r['snr_before'] if math.isfinite(r['snr_after']) else math.inf:+6.1f} | "
         f"{r['lsd_before']:5.2f} | {r['lsd_after']:5.2f} | {r['seconds']:5.2f} |")
    if "legacy_snr_after" in r:
        s += f" {_f(r['legacy_snr_after'])} | {r['legacy_seconds']:5.2f} |"
    if r["recipe"] == "clean":
        s += f" level {r['level_change_db']:+.3f} dB, bands <= {r['max_band_change_db']:.3f} dB, auto -> {r['auto']}"
    elif not r["changed"]:
        s += " (left unchanged)"
    return s


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        tag = f"{r['source']}/{r['recipe']}"
        if r["recipe"] == "clean":
            ok = (abs(r["level_change_db"]) <= 0.5 and r["max_band_change_db"] <= 0.2 and r["auto"] == "master")
            out.append(f"{'PASS' if ok else 'FAIL'} {tag}: clean input kept (level {r['level_change_db']:+.3f} dB, "
                       f"bands <= {r['max_band_change_db']:.3f} dB, SNR vs itself {_f(r['snr_after'])}), auto -> {r['auto']}")
            continue
        gain = r["snr_after"] - r["snr_before"]
        need = 3.0 if r["recipe"].startswith(("clip", "noise+clip", "white", "pink")) else 0.0
        ok = gain >= need and gain > 0 and r["lsd_after"] < r["lsd_before"]
        out.append(f"{'PASS' if ok else 'FAIL'} {tag}: SNR {gain:+.1f} dB (need > {need:g}), "
                   f"LSD {r['lsd_before']:.2f} -> {r['lsd_after']:.2f} dB")
    return out


def memory_run(seconds: float, legacy_rev: str | None = None) -> dict[str, Any]:
    """Peak RSS and time of repairing a damaged ``seconds`` song in a fresh child process.

    The damage is the issue's measurement: the mix scaled to a 0 dBFS peak, clipped at
    -6 dBFS, white noise at -40 dBFS, DC +0.05.  With ``legacy_rev`` the child runs the
    repair steps of that git revision's ACES module instead (declip, declick, denoise, EQ).
    """
    damaged = Path(tempfile.gettempdir()) / f"amc-repair-bench-{int(seconds)}s.wav"
    if not damaged.is_file():  # made here, so the child's peak RSS is the repair's own
        x, _ = sf.read(material.program(seconds, SR, seed=3, style="pop"), dtype="float32", always_2d=True)
        x = np.ascontiguousarray(x.T)
        x /= np.abs(x).max()
        rng = np.random.default_rng(0)
        x = np.clip(x, -0.5, 0.5) + (rng.standard_normal(x.shape) * 0.01).astype(np.float32) + np.float32(0.05)
        sf.write(damaged, x.T, SR, subtype="FLOAT")
        del x
    if legacy_rev:
        src = subprocess.run(["git", "show", f"{legacy_rev}:app/models/backends/aces.py"], cwd=REPO, check=True,
                             capture_output=True, text=True).stdout
        mod_path = Path(tempfile.mkdtemp()) / "aces_legacy.py"
        mod_path.write_text(src)
        load = (f"import importlib.util; spec = importlib.util.spec_from_file_location('aces_legacy', {str(mod_path)!r}); "
                "mod = importlib.util.module_from_spec(spec); sys.modules['aces_legacy'] = mod; spec.loader.exec_module(mod)")
        run = ("y, _ = mod.declip(x); y, _ = mod.declick(y, sr); y = mod.denoise(y, sr).audio; "
               "y, _ = mod.corrective_eq(y, sr); notes = ''")
    else:
        load = "from app.models.backends import aces as mod"
        run = "y, rep = mod.repair(x, sr, inplace=True); notes = rep.notes  # as the backend runs it"
    code = f"""
import resource, sys, time, numpy as np, soundfile as sf
sys.path.insert(0, {str(REPO)!r})
{load}
x, sr = sf.read({str(damaged)!r}, dtype='float32', always_2d=True)
x = np.ascontiguousarray(x.T)
load_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
# reset the high-water mark (Linux: clear_refs 5), so the peak is the repair's own
# (with the interpreter and the audio it holds), not the file read's transient
try:
    open('/proc/self/clear_refs', 'w').write('5')
except OSError:
    pass
t0 = time.perf_counter()
{run}
el = time.perf_counter() - t0
hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]
peak = int(hwm[0].split()[1]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(el, peak, load_peak, notes)
"""
    out = [*subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}).stdout.strip().splitlines()[-1].split(" ", 3), ""]
    return {"seconds": seconds, "repair_s": float(out[0]), "peak_rss_mb": float(out[1]),
            "load_peak_rss_mb": float(out[2]), "notes": out[3].strip(), "revision": legacy_rev or "this tree"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each source (default 20)")
    ap.add_argument("--legacy", metavar="REV", help="also run the ACES repair of this git revision")
    ap.add_argument("--only", nargs="*", help="recipes containing any of these strings")
    ap.add_argument("--memory", type=float, metavar="SECONDS", help="peak RSS of one long repair (child process)")
    ap.add_argument("--speed", type=float, metavar="SECONDS",
                    help="time and peak RSS of this repair vs --legacy (default 6ff99f5), child processes")
    ap.add_argument("--skip-cases", action="store_true", help="only the --memory / --speed runs")
    ap.add_argument("--json", type=Path, help="write every figure here")
    args = ap.parse_args(argv)
    legacy = load_legacy(args.legacy) if args.legacy else None
    head = "| source | recipe | SNR in | SNR out | gain | LSD in | LSD out | s |"
    if legacy is not None:
        head += f" SNR out @{args.legacy} | s @{args.legacy} |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    rows = [] if args.skip_cases else run_cases(args.seconds, legacy, args.only)
    lines = verdicts(rows)
    print()
    print("\n".join(lines))
    result: dict[str, Any] = {"rows": rows, "verdicts": lines}
    if args.memory:
        mem = memory_run(args.memory)
        result["memory"] = mem
        ok = mem["peak_rss_mb"] <= 500
        print(f"{'PASS' if ok else 'FAIL'} {args.memory:g} s song: repair {mem['repair_s']:.1f} s, "
              f"peak RSS during the repair {mem['peak_rss_mb']:.0f} MB (at most 500; reading the file "
              f"peaked at {mem['load_peak_rss_mb']:.0f} MB before it)")
    if args.speed:
        new = memory_run(args.speed)
        old = memory_run(args.speed, args.legacy or "6ff99f5")
        result["speed"] = {"new": new, "legacy": old}
        ratio = old["repair_s"] / new["repair_s"]
        print(f"{'PASS' if ratio >= 5 else 'FAIL'} {args.speed:g} s song: repair {new['repair_s']:.1f} s "
              f"({new['peak_rss_mb']:.0f} MB) vs {old['repair_s']:.1f} s ({old['peak_rss_mb']:.0f} MB) at "
              f"{old['revision']}: {ratio:.1f}x faster (at least 5x)")
    print(f"\n{sum(v.startswith('PASS') for v in lines)}/{len(lines)} cases pass")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
