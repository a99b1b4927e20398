"""A real PortAudio stream on ALSA's ``null`` PCM (no sound card needed), plus error paths.

ALSA reads ``~/.asoundrc`` when PortAudio initialises, so the device tests run in a
child process whose HOME holds an asoundrc defining a ``null`` output. The null PCM
consumes audio as fast as it is rendered (it has no clock), so these tests check
the stream path (open, callback -> engine.render -> device, counters, close), not
real-time timing; ``benchmarks/playback.py`` measures timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from app.engine.errors import AudioOutputError
from app.engine.playback import Engine

ASOUNDRC = """
pcm.!default { type plug slave.pcm "amc_null" }
pcm.amc_null { type null }
"""

CHILD = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from app.engine.playback import AddTrack, AudioOutput, AudioTrack, Engine, Play, list_output_devices
    names = [d.name for d in list_output_devices()]
    if "amc_null" not in names:
        print(json.dumps({"skip": f"no ALSA null PCM offered by PortAudio (devices: {names})"}))
        sys.exit(0)
    eng = Engine(48000)
    eng.send(AddTrack(AudioTrack("a", np.full((2, 48000 * 60), 0.1, np.float32))))
    eng.render(256)  # load the compiled kernels before the stream starts
    eng.send(Play())
    with AudioOutput(eng, "amc_null", blocksize=256) as out:
        time.sleep(0.5)
        active = out.active
    s = eng.snapshot()
    print(json.dumps({
        "callbacks": out.callbacks, "errors": out.errors, "underruns": out.underruns,
        "position": s.position_frame, "active": active, "loads": len(out.load_history()),
        "load_max": s.callback_load_max, "latency_s": out.latency_s,
    }))
    """
)


def _child(tmp_path: Path, code: str) -> dict:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".asoundrc").write_text(ASOUNDRC)
    env = {**os.environ, "HOME": str(home)}
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        if "AudioOutputError" in proc.stderr and "PortAudio" in proc.stderr:
            pytest.skip(f"PortAudio is not usable here: {proc.stderr.strip().splitlines()[-1]}")
        raise AssertionError(f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return json.loads(lines[-1])


@pytest.mark.audio_device
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ALSA's null PCM exists on Linux only")
def test_real_stream_on_the_alsa_null_device_renders_the_engine(tmp_path):
    r = _child(tmp_path, CHILD)
    if "skip" in r:
        pytest.skip(r["skip"])
    assert r["active"] and r["errors"] == 0
    assert r["callbacks"] > 10
    # every callback rendered exactly one 256-frame block of the playing transport
    assert r["position"] == 256 * r["callbacks"]
    assert r["loads"] == min(r["callbacks"], 8192) and r["load_max"] > 0
    assert r["latency_s"] > 0


def test_unknown_device_is_a_clear_amc_error():
    pytest.importorskip("sounddevice", exc_type=OSError)
    with pytest.raises(AudioOutputError, match="cannot open audio output"):
        from app.engine.playback import AudioOutput

        AudioOutput(Engine(48000), device=987654)


def test_callback_timing_reaches_the_snapshot():
    eng = Engine(48000)
    eng.report_callback(0.1, False)
    eng.report_callback(1.5, True)  # too slow and the device ran dry
    eng.report_callback(0.2, False)
    eng.render(1)
    s = eng.snapshot()
    assert (s.underruns, s.overloads) == (1, 1)
    assert s.callback_load == pytest.approx(0.2) and s.callback_load_max == pytest.approx(1.5)
    assert np.isfinite(s.timestamp_s)
