"""Waveform peaks and view: build speed, cache, first paint, redraw time on a long file.

    python benchmarks/waveform.py [--minutes 60] [--rate 48000] [--keep DIR]

Writes a stereo 24-bit WAV of noise + sines (block-wise, never held in memory)
to a temporary folder, then prints:

* SHA-256 and BLAKE2b throughput on that file (the cache key's cost);
* pyramid build time through ``PeakCache.load_or_build`` (cache miss: decode,
  hash on a thread, peaks, atomic cache write) as x real time, and the
  cache-hit load time;
* first paint: time from ``WaveformView.open_file`` to the first frame drawn
  with audio in it (progressive build), with a cold and a warm cache;
* redraw: ``set_view`` (envelope fetch + curve update) plus a synchronous
  render of the whole widget (``QWidget.grab``) while panning at several zoom
  levels, one track with a master overlay; median / p99 / max in ms.

Targets (issue "Studio v1", item 3): build >= 200x real time, first paint
<= 1 s, every redraw <= 16 ms.  The file is in the page cache when it is read
(it was just written), as it is for a file the user just opened.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import soundfile as sf

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.engine.peaks import PeakCache, build_from_file  # noqa: E402


def write_long_file(path: pathlib.Path, minutes: float, rate: int) -> int:
    total = int(minutes * 60 * rate)
    block = 1 << 18
    rng = np.random.default_rng(7)
    t_block = np.arange(block) / rate
    with sf.SoundFile(path, "w", rate, 2, subtype="PCM_24") as out:
        done = 0
        while done < total:
            n = min(block, total - done)
            t = (done / rate) + t_block[:n]
            swell = 0.5 + 0.45 * np.sin(2 * np.pi * t / 37.0)
            left = swell * (0.4 * np.sin(2 * np.pi * 110 * t) + 0.1 * rng.standard_normal(n))
            right = swell * (0.4 * np.sin(2 * np.pi * 164.8 * t) + 0.1 * rng.standard_normal(n))
            out.write(np.stack([left, right], axis=1).astype(np.float32))
            done += n
    return total


def hash_rate(path: pathlib.Path, name: str) -> float:
    h = hashlib.new(name)
    t = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return time.perf_counter() - t


def stats_ms(samples: list[float]) -> str:
    a = np.asarray(samples) * 1000
    return f"median {np.median(a):6.2f}  p99 {np.percentile(a, 99):6.2f}  max {a.max():6.2f} ms"


def timed(samples: list[float], cpu: list[float], action) -> None:  # type: ignore[no-untyped-def]
    """Wall time and this thread's CPU time of one redraw (CPU time is immune to other
    processes stealing the cores; wall time is what the user sees)."""
    c, t = time.thread_time(), time.perf_counter()
    action()
    samples.append(time.perf_counter() - t)
    cpu.append(time.thread_time() - c)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--rate", type=int, default=48000)
    ap.add_argument("--pans", type=int, default=60, help="redraws measured per zoom level")
    ap.add_argument("--keep", type=pathlib.Path, help="reuse/keep the long file in this folder")
    args = ap.parse_args()

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="amc-wave-"))
    folder = args.keep or tmp
    folder.mkdir(parents=True, exist_ok=True)
    try:
        src = folder / f"long-{args.minutes:g}min-{args.rate}.wav"
        if not src.exists():
            t = time.perf_counter()
            write_long_file(src, args.minutes, args.rate)
            print(
                f"wrote {src.name}: {src.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - t:.1f} s"
            )
        audio_s = sf.info(str(src)).duration
        size_gb = src.stat().st_size / 1e9
        print(f"file: {audio_s / 60:.1f} min stereo 24-bit {args.rate} Hz, {size_gb:.2f} GB")

        code = "import time; t = time.perf_counter(); from app.engine import peaks; t1 = time.perf_counter(); peaks.warm_up(); print(f'{t1 - t:.2f} {time.perf_counter() - t1:.2f}')"
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
        )
        imp, warm = out.stdout.split()
        print(f"fresh process: import app.engine.peaks {imp} s, peaks.warm_up() {warm} s "
              "(numba's first call; PeakLoader() runs it in the background at app start)")  # fmt: skip
        # warm-up: numba kernels load from their cache; the file enters the page cache
        build_from_file(_short_copy(src, tmp / "warm.wav"))
        hash_rate(src, "sha256")

        for name in ("sha256", "blake2b"):
            dt = hash_rate(src, name)
            print(f"hash {name:8s}: {dt:5.2f} s  ({size_gb / dt:.2f} GB/s)")

        t = time.perf_counter()
        plain = build_from_file(src)
        dt_plain = time.perf_counter() - t
        print(
            f"build_from_file (no hash, no cache): {dt_plain:5.2f} s = {audio_s / dt_plain:6.0f}x real time"
        )

        cache = PeakCache(tmp / "peaks")
        t = time.perf_counter()
        pyr = cache.load_or_build(src)
        dt_miss = time.perf_counter() - t
        cache_file = next(cache.folder.iterdir())
        print(f"load_or_build, cache miss (decode + sha256 + peaks + write): {dt_miss:5.2f} s "
              f"= {audio_s / dt_miss:6.0f}x real time")  # fmt: skip
        t = time.perf_counter()
        hit = cache.load_or_build(src)
        dt_hit = time.perf_counter() - t
        print(f"load_or_build, cache hit, file seen before (no hash): {dt_hit:5.2f} s "
              f"(reads + verifies the {cache_file.stat().st_size / 1e6:.1f} MB peak file)")  # fmt: skip
        alias = tmp / "same-content-other-name.wav"
        os.link(src, alias)
        t = time.perf_counter()
        hit2 = cache.load_or_build(alias)
        dt_hit2 = time.perf_counter() - t
        print(
            f"load_or_build, cache hit by content (new name: sha256 while decoding): {dt_hit2:5.2f} s"
        )
        assert np.array_equal(hit2.data, pyr.data)
        assert np.array_equal(hit.data, pyr.data) and np.array_equal(plain.data, pyr.data)
        print(f"pyramid: {len(pyr.lengths)} levels, {pyr.nbytes / 1e6:.1f} MB in memory")
        del plain, hit

        paint_and_redraw(src, tmp, pyr, args.pans)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of this process: {rss:.0f} MB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _short_copy(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    data, rate = sf.read(str(src), frames=200_000, dtype="float32")
    sf.write(dst, data, rate, subtype="PCM_24")
    return dst


def paint_and_redraw(src: pathlib.Path, tmp: pathlib.Path, pyr, pans: int) -> None:
    from PySide6.QtWidgets import QApplication

    from app.ui import theme
    from app.ui.waveform_view import PeakLoader, WaveformView

    app = QApplication.instance() or QApplication([])
    theme.apply(app)
    sr = pyr.sample_rate

    for label, cache_dir in (("cold cache", tmp / "peaks-cold"), ("warm cache", tmp / "peaks")):
        view = WaveformView()
        view.resize(1600, 400)
        view.show()
        app.processEvents()
        loader = PeakLoader(PeakCache(cache_dir))
        view.set_loader(loader)
        done: list[float] = []
        view.track_loaded.connect(lambda _tid, done=done: done.append(time.perf_counter()))
        t0 = time.perf_counter()
        view.open_file("t", "Long", src, sr)  # the first lane zooms to fit once its length is known
        while view.frames_shown("t") == 0 and not done:
            app.processEvents()
            time.sleep(0.001)
        view.grab()
        assert view.view_range()[1] >= pyr.duration_s * 0.99
        first = time.perf_counter() - t0
        shown = view.frames_shown("t") / pyr.frames
        while not done:
            app.processEvents()
            time.sleep(0.005)
        print(f"first paint ({label}): {first * 1000:6.0f} ms after open_file "
              f"({shown * 100:.1f} % of the file drawn then); complete after {done[0] - t0:5.2f} s")  # fmt: skip
        loader.wait(5)
        view.close()
        view.deleteLater()
        app.processEvents()

    view = WaveformView()
    view.resize(1600, 400)
    view.show()
    app.processEvents()
    view.add_track("mix", "Mix", pyr, sr)
    view.set_overlay("mix", pyr)  # a master of the same length: twice the work of one waveform
    view.zoom_to_fit()
    app.processEvents()
    total_s = pyr.duration_s
    print(f"redraw, {view._lanes['mix'].vb.width():.0f} px lane, stereo + stereo overlay:")
    print(
        f"  (load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: wall times include waiting for a core)"
    )
    all_wall: list[float] = []
    all_cpu: list[float] = []

    def pan(span: float, k: int) -> None:
        step = span * 0.05 * (1 if (k // 10) % 2 == 0 else -1)
        if span < total_s:
            view.scroll_by(step)
        else:
            view.set_view(0.0, total_s * (1 - 0.001 * (k % 3)))
        view.grab()

    for span in (total_s, 600.0, 60.0, 10.0, 1.0, 0.05):
        start = total_s * 0.3
        view.set_view(start, start + span)
        view.grab()
        wall: list[float] = []
        cpu: list[float] = []
        for k in range(pans):
            timed(wall, cpu, lambda span=span, k=k: pan(span, k))
        all_wall += wall
        all_cpu += cpu
        print(f"  pan, view {span:7.2f} s: wall {stats_ms(wall)} | cpu {stats_ms(cpu)}")
    wall, cpu = [], []
    for k in range(pans):
        timed(
            wall,
            cpu,
            lambda k=k: (view.zoom_in() if (k // 8) % 2 == 0 else view.zoom_out(), view.grab()),
        )
    all_wall += wall
    all_cpu += cpu
    print(f"  zoom in/out steps  : wall {stats_ms(wall)} | cpu {stats_ms(cpu)}")
    print(f"  all {len(all_wall)} redraws  : wall {stats_ms(all_wall)} | cpu {stats_ms(all_cpu)}")
    view.close()


if __name__ == "__main__":
    sys.exit(main())
