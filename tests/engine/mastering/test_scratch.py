"""Scratch space of a master: bounded, removed on SIGTERM, swept after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.engine.mastering import chain
from app.engine.mastering.chain import ScratchTrack, master_file, sweep_stale_scratch

REPO = Path(__file__).resolve().parents[3]


def test_long_mixes_run_the_pre_chain_again_with_the_same_result(program_48k_30s, tmp_path, monkeypatch):
    kept = master_file(program_48k_30s, tmp_path / "kept.wav")
    sizes = []
    real_close = ScratchTrack.close

    def close(self):  # the size of the scratch just before it goes
        sizes.append((self.has_audio, self.nbytes, self.frames))
        real_close(self)

    monkeypatch.setattr(ScratchTrack, "close", close)
    monkeypatch.setattr(chain, "SCRATCH_AUDIO_BUDGET_BYTES", 0)
    held = []

    class Recording(chain.PreChain):
        def process(self, block):
            held.append(len(self.compressor_gr_db))  # what is still kept from earlier blocks
            return super().process(block)

    monkeypatch.setattr(chain, "PreChain", Recording)
    again = master_file(program_48k_30s, tmp_path / "again.wav")
    a, _ = sf.read(tmp_path / "kept.wav", dtype="float32")
    b, _ = sf.read(tmp_path / "again.wav", dtype="float32")
    # the same samples up to the solve's choice of gain, which sees float16 peaks here
    # instead of float32 ones (a few thousandths of a dB)
    dg = again.plan.loudness.gain_db - kept.plan.loudness.gain_db
    assert abs(dg) < 0.02
    np.testing.assert_allclose(b, a * np.float32(10 ** (dg / 20)), atol=2e-4)
    assert abs(again.after.integrated_lufs - kept.after.integrated_lufs) < 0.03
    assert held and max(held) <= 1  # nothing piles up block after block
    has_audio, nbytes, frames = sizes[-1]
    assert not has_audio
    assert nbytes <= frames * (2 + 4 / chain.POWER_GROUP_FRAMES) + 64  # 2.25 bytes a frame
    # 60 minutes of 48 kHz stereo: within the 500 MB budget
    assert 3600 * 48000 * (2 + 4 / chain.POWER_GROUP_FRAMES) < 500e6


def test_peaks_are_stored_rounded_up(tmp_path):
    s = ScratchTrack(2, tmp_path, keep_audio=False)
    try:
        rng = np.random.default_rng(0)
        p = rng.random(10000) * 2.0
        s.write("x", np.zeros((2, p.size), dtype=np.float32))
        s.write("p", p)
        s.write("w", p)
        s.finish()
        got = np.concatenate(list(s.blocks("p", 4096)))
        assert np.all(got >= p.astype(np.float32) * (1 - 1e-7)) and np.max(got / p) < 1.002
        w = np.concatenate(list(s.blocks("w", 4096)))
        assert w.size == p.size
        np.testing.assert_allclose(w.sum(), p.sum(), rtol=1e-5)
    finally:
        s.close()
    assert not list(tmp_path.glob("amc-scratch-*"))


def test_stale_scratch_is_swept_and_live_scratch_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / "amc-scratch-stale"
    stale.mkdir()
    (stale / "owner.pid").write_text(str(dead.pid))
    (stale / "x0.f32").write_bytes(b"\0" * 1024)
    live = tmp_path / "amc-scratch-live"
    live.mkdir()
    (live / "owner.pid").write_text(str(os.getppid()))
    assert sweep_stale_scratch(tmp_path) == 1
    assert not stale.exists() and live.exists()


@pytest.mark.slow
def test_sigterm_removes_the_scratch_and_the_partial_output(tmp_path):
    sr = 48000
    rng = np.random.default_rng(1)
    x = (0.1 * rng.standard_normal((sr * 600, 2))).astype(np.float32)  # 10 minutes
    src = tmp_path / "long.wav"
    sf.write(src, x, sr, subtype="FLOAT")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "master", str(src), "-o", str(tmp_path / "m.wav"), "-q"],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(tmp.glob("amc-scratch-*/p.f*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the master ended before it could be interrupted"
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert not list(tmp.glob("amc-scratch-*"))
    assert not (tmp_path / "m.wav").exists() and not list(tmp_path.glob(".m.wav*"))
