"""Report and plot of a master: spectra, loudness over time, gain reduction."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.engine.errors import AudioOutputError
from app.engine.mastering.eq import style_target_db

if TYPE_CHECKING:
    from app.engine.mastering.chain import MasterResult


def _atomic_bytes(path: Path, data: bytes) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise AudioOutputError(f"cannot write {path}: folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=folder)
    except OSError as exc:
        raise AudioOutputError(f"cannot write {path}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(results: list[MasterResult], path: Path) -> None:
    """JSON report (before/after metrics and the plan of every track), written atomically."""
    body = results[0].to_report() if len(results) == 1 else {"tracks": [r.to_report() for r in results]}
    _atomic_bytes(Path(path), (json.dumps(body, indent=2) + "\n").encode())


def plot_master(result: MasterResult, path: Path) -> None:
    """PNG with three panels: mid spectra (before / after / target), short-term loudness, gain reduction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plan = result.plan
    fig, axes = plt.subplots(3, 1, figsize=(11, 10), constrained_layout=True)
    fig.suptitle(
        f"{result.input.name if result.input else 'master'} -> {plan.target} "
        f"({plan.loudness.target_lufs:g} LUFS, {plan.limiter.ceiling_dbtp:g} dBTP), {plan.style}/{plan.level}",
        fontsize=12,
    )

    # spectra, aligned on their 100 Hz - 8 kHz mean so shapes compare
    ax = axes[0]
    c = np.asarray(result.before.spectrum["centers_hz"], dtype=float)

    sel = (c >= 100) & (c <= 8000)

    def levels(v: list) -> np.ndarray:
        return np.asarray([x if x is not None else np.nan for x in v], dtype=float)

    # each track's mid and side share the mid's anchor, so side shows the width per band
    for a, lab, col in ((result.before, "before", "#888"), (result.after, "after", "#1f77b4")):
        mid, side = levels(a.spectrum["mid_db"]), levels(a.spectrum["side_db"])
        anchor = np.nanmean(mid[sel])
        ax.semilogx(c, mid - anchor, "-o", ms=3, label=f"{lab} (mid)", color=col)
        ax.semilogx(c, side - anchor, "--", lw=1, label=f"{lab} (side)", color=col, alpha=0.8)
    if result.target_spectrum is not None:
        t = result.target_spectrum.on(c)
        ax.semilogx(c, t.mid_db - t.mid_db[sel].mean(), "-", lw=2, color="#d62728", alpha=0.7, label="reference (mid)")
    else:
        tgt = style_target_db(c, plan.style)
        ax.semilogx(c, tgt - tgt[sel].mean(), "-", lw=2, color="#d62728", alpha=0.7, label=f"{plan.style} target")
    ax.set_xlim(20, min(20000, plan.sample_rate / 2))
    ax.set_ylim(-40, 20)
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("1/3-octave level (dB, aligned)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title("Tonal balance")

    # short-term loudness
    ax = axes[1]
    for a, lab, col in ((result.before, "before", "#888"), (result.after, "after", "#1f77b4")):
        st = np.asarray([x if x is not None else np.nan for x in a.short_term_series], dtype=float)
        ax.plot(3.0 + np.arange(len(st)) / 10.0, st, label=f"{lab} (I = {a.integrated_lufs:.1f} LUFS)", color=col)
    ax.axhline(plan.loudness.target_lufs, color="#d62728", ls="--", lw=1, label="target")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("short-term loudness (LUFS)")
    ax.set_ylim(bottom=max(-60, plan.loudness.target_lufs - 30), top=plan.loudness.target_lufs + 6)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(
        f"Loudness: after {result.after.integrated_lufs:.2f} LUFS, true peak {result.after.true_peak_dbtp:.2f} dBTP"
    )

    # gain reduction
    ax = axes[2]
    if result.compressor_gr_db.size:
        ax.plot(np.arange(len(result.compressor_gr_db)) / 10.0, -result.compressor_gr_db, label="glue compressor", color="#2ca02c")
    if result.limiter_gr_db.size:
        ax.plot(np.arange(len(result.limiter_gr_db)) / 10.0, -result.limiter_gr_db, label="limiter", color="#ff7f0e")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("gain reduction (dB, max per 100 ms)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Gain reduction")

    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    _atomic_bytes(Path(path), buf.getvalue())
