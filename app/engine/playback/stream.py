"""The sound card: a PortAudio output stream (sounddevice) whose callback renders the engine.

``sounddevice`` is imported lazily, so importing the engine works on a machine
without PortAudio; opening a stream there raises :class:`AudioOutputError` with
the reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from app.engine.errors import AudioOutputError, ParameterError
from app.engine.playback.engine import Engine

__all__ = ["AudioOutput", "OutputDevice", "list_output_devices"]

#: Callback loads kept for statistics (about 45 s of 256-frame blocks at 48 kHz).
LOAD_HISTORY = 8192


@njit(cache=True)  # GIL held: see engine._copy_kernel
def _interleave(buf, outdata, frames):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """outdata (frames, 2) = buf (2, frames) transposed."""
    for i in range(frames):
        outdata[i, 0] = buf[0, i]
        outdata[i, 1] = buf[1, i]


@dataclass(frozen=True, slots=True)
class OutputDevice:
    """One PortAudio output device."""

    index: int
    name: str
    host_api: str
    max_output_channels: int
    default_sample_rate: float
    is_default: bool


def _sounddevice() -> Any:
    try:
        import sounddevice
    except (ImportError, OSError) as exc:  # OSError: the PortAudio library is missing
        raise AudioOutputError(f"audio output is unavailable: {exc}") from exc
    return sounddevice


def list_output_devices() -> list[OutputDevice]:
    """Output devices PortAudio offers now ([] when none; ``AudioOutputError`` without PortAudio)."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
        apis = sd.query_hostapis()
        try:
            default_out = int(sd.default.device[1])
        except (TypeError, ValueError, IndexError):
            default_out = -1
    except sd.PortAudioError as exc:
        raise AudioOutputError(f"cannot list audio devices: {exc}") from exc
    out = []
    for i, d in enumerate(devices):
        if d["max_output_channels"] > 0:
            out.append(OutputDevice(
                index=i, name=str(d["name"]), host_api=str(apis[d["hostapi"]]["name"]),
                max_output_channels=int(d["max_output_channels"]),
                default_sample_rate=float(d["default_samplerate"]), is_default=i == default_out,
            ))  # fmt: skip
    return out


class AudioOutput:
    """Plays an :class:`Engine` on an output device.

    Parameters
    ----------
    engine : Engine
        Rendered from the callback (the PortAudio thread). Nothing else may call its
        ``render`` while the stream runs.
    device : int or str, optional
        PortAudio device index or name substring; default: the system default output.
    blocksize : int, keyword-only
        Frames per callback (fixed), default 256.
    latency : float or {"low", "high"}, keyword-only
        Suggested output latency in seconds, or PortAudio's low/high default.

    Raises
    ------
    AudioOutputError
        No PortAudio, no such/any output device, or the device refuses the format.

    Notes
    -----
    The callback counts device underflows (``status.output_underflow``) and measures its
    own time as a fraction of the buffer period; both reach the engine's snapshot and
    :meth:`load_history`. It never raises into PortAudio: an exception inside the
    render is counted in :attr:`errors` and the block is silent.
    """

    def __init__(self, engine: Engine, device: int | str | None = None, *, blocksize: int = 256,
                 latency: float | str = "low") -> None:  # fmt: skip
        if not 16 <= int(blocksize) <= engine.max_chunk_frames:
            raise ParameterError(f"blocksize must be 16..{engine.max_chunk_frames}, got {blocksize}")
        sd = _sounddevice()
        self.engine = engine
        self.blocksize = int(blocksize)
        self._period_s = self.blocksize / engine.sample_rate
        self._buf = np.zeros((2, engine.max_chunk_frames), dtype=np.float32)
        self._loads = np.zeros(LOAD_HISTORY, dtype=np.float64)
        self._n_loads = 0
        self.callbacks = 0
        self.underruns = 0
        self.errors = 0
        try:
            self._stream = sd.OutputStream(
                samplerate=engine.sample_rate, blocksize=self.blocksize, device=device, channels=2,
                dtype="float32", latency=latency, callback=self._callback,
            )  # fmt: skip
        except (sd.PortAudioError, ValueError) as exc:
            raise AudioOutputError(f"cannot open audio output {device if device is not None else '(default)'}: {exc}") from exc
        self.device = device
        self.latency_s = float(self._stream.latency)

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        t0 = time.perf_counter()
        self.callbacks += 1
        under = bool(status.output_underflow)
        if under:
            self.underruns += 1
        try:
            buf = self.engine.render(frames, out=self._buf[:, :frames])
            _interleave(buf, outdata, frames)
        except Exception:  # never into PortAudio; counted, silence instead
            self.errors += 1
            outdata.fill(0.0)
        load = (time.perf_counter() - t0) / (frames / self.engine.sample_rate)
        self._loads[self._n_loads % LOAD_HISTORY] = load
        self._n_loads += 1
        self.engine.report_callback(load, under)

    # ---- control (any thread but the callback)

    def start(self) -> None:
        try:
            self._stream.start()
        except Exception as exc:
            raise AudioOutputError(f"cannot start audio output: {exc}") from exc

    def stop(self) -> None:
        self._stream.stop()

    def close(self) -> None:
        self._stream.close()

    @property
    def active(self) -> bool:
        return bool(self._stream.active)

    def load_history(self) -> np.ndarray:
        """The most recent callback loads (fraction of the buffer period), oldest first (a copy)."""
        n = min(self._n_loads, LOAD_HISTORY)
        k = self._n_loads % LOAD_HISTORY
        h = self._loads.copy()
        return np.concatenate([h[k:n], h[:k]]) if self._n_loads > LOAD_HISTORY else h[:n]

    def __enter__(self) -> AudioOutput:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.close()
