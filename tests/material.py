"""Realistic program material for tests and benchmarks, synthesized locally.

A song is composed deterministically from a seed as a General MIDI arrangement
(drums with fills, bass, keys, pads, guitar, a lead melody over
intro/verse/chorus/bridge sections with their own density and dynamics),
written as a ``.mid`` with pretty_midi, rendered by the ``fluidsynth`` CLI with
a GM SoundFont, and levelled like an unmastered mix (peaks about -6..-3 dBFS,
integrated loudness about -20..-16 LUFS). :func:`reference` adds a crude
"commercial master" on top (EQ, bus compression, saturation, limiting) to about
-8.5 LUFS.

Files are cached under ``tests/.material/`` keyed by every parameter and
:data:`MATERIAL_VERSION`; writes are atomic so parallel test workers may race.

Needs: ``fluidsynth`` and ``fluid-soundfont-gm`` (``scripts/setup.sh --test``),
pretty_midi, numpy, scipy, soundfile, pyebur128.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import soundfile as sf
from scipy import ndimage, signal

__all__ = [
    "CACHE_DIR",
    "MATERIAL_VERSION",
    "STYLES",
    "find_soundfont",
    "program",
    "reference",
]

#: Bump when the composition, rendering or levelling changes: it invalidates the cache.
MATERIAL_VERSION = 1
CACHE_DIR = pathlib.Path(__file__).resolve().parent / ".material"
SOUNDFONT_ENV = "AMC_TEST_SOUNDFONT"
SOUNDFONT_CANDIDATES = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",  # Debian fluid-soundfont-gm
    "/usr/share/soundfonts/FluidR3_GM.sf2",  # Fedora/Arch layout
    "/usr/share/sounds/sf2/TimGM6mb.sf2",  # Debian timgm6mb-soundfont
    "/usr/share/sounds/sf2/default-GM.sf2",
)
_SETUP_HINT = "run `scripts/setup.sh --test` (apt-installs fluidsynth and fluid-soundfont-gm)"

# Seconds rendered past the requested duration and the tail that is faded out:
# the song's last hit lands FINAL_HIT_BEFORE_END_S before the end and rings out.
FINAL_HIT_BEFORE_END_S = 2.5
FADE_OUT_S = 1.5
LEAD_IN_S = 0.05
REFERENCE_TARGET_LUFS = -8.5
REFERENCE_CEILING_DBFS = -0.3

# General MIDI percussion keys (channel 10).
KICK, SIDE_STICK, SNARE, CLAP = 36, 37, 38, 39
TOM_LOW, TOM_MID, TOM_HIGH = 45, 47, 50
HAT_CLOSED, HAT_PEDAL, HAT_OPEN = 42, 44, 46
CRASH, RIDE = 49, 51

MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)
# Scale-degree progressions (0 = tonic), one chord per bar.
MAJOR_PROGRESSIONS = (
    (0, 4, 5, 3),
    (0, 5, 3, 4),
    (5, 3, 0, 4),
    (0, 3, 0, 4),
    (3, 4, 0, 5),
    (0, 2, 3, 4),
)
MINOR_PROGRESSIONS = (
    (0, 5, 2, 6),
    (0, 3, 6, 2),
    (0, 6, 5, 6),
    (5, 6, 0, 0),
    (0, 3, 4, 0),
    (3, 6, 0, 5),
)

# Melody rhythms, one bar each: (onset_beats, duration_beats).
MELODY_RHYTHMS = (
    ((0, 1), (1, 0.5), (1.5, 0.5), (2, 1.5)),
    ((0, 0.5), (0.5, 0.5), (1, 1), (2.5, 0.5), (3, 1)),
    ((0.5, 0.5), (1, 0.5), (1.5, 1), (3, 1)),
    ((0, 1.5), (1.5, 0.5), (2, 0.5), (2.5, 0.5), (3, 1)),
    ((0, 2), (2, 1), (3, 0.5), (3.5, 0.5)),
    ((1, 1), (2, 0.5), (2.5, 1.5)),
)
BALLAD_RHYTHMS = (
    ((0, 1.5), (1.5, 0.5), (2, 2)),
    ((0, 1), (1, 1), (2, 1.5), (3.5, 0.5)),
    ((0.5, 0.5), (1, 2), (3, 1)),
    ((0, 3), (3, 1)),
)
PHRASE_END_RHYTHMS = (((0, 1), (1, 3)), ((0, 0.5), (0.5, 0.5), (1, 3)), ((0, 4),))


@dataclass(frozen=True)
class _Style:
    """How a style sounds: tempo, GM programs (0-based), feel and mix level."""

    tempo_bpm: tuple[int, int]
    bass_programs: tuple[int, ...]
    keys_programs: tuple[int, ...]
    pad_programs: tuple[int, ...]
    lead_programs: tuple[int, ...]
    guitar_programs: tuple[int, ...]
    drum_kit: int
    minor_probability: float
    mix_lufs: float  # integrated loudness of the levelled, unmastered mix
    mix_peak_dbfs: float  # sample-peak ceiling of the mix bus


STYLES: dict[str, _Style] = {
    "pop": _Style(
        (96, 124), (33, 38), (0, 4), (89, 88, 48), (80, 81, 73), (27, 26), 0, 0.35, -17.5, -4.0
    ),
    "ballad": _Style(
        (66, 80), (32, 33), (0, 1), (48, 49, 89), (73, 65, 71), (24, 25), 0, 0.5, -19.5, -5.0
    ),
    "rock": _Style(
        (118, 142), (34, 33), (16, 17), (48, 18), (29, 30, 81), (30, 29), 16, 0.45, -16.5, -3.5
    ),
}

# Section kinds -> relative intensity (scales every velocity): verse quieter than chorus.
_SECTION_INTENSITY = {"intro": 0.65, "verse": 0.8, "chorus": 1.0, "bridge": 0.7}


def find_soundfont() -> pathlib.Path:
    """Return the GM SoundFont to render with (``$AMC_TEST_SOUNDFONT`` first).

    Raises
    ------
    RuntimeError
        If none of the known SoundFont files exists.
    """
    override = os.environ.get(SOUNDFONT_ENV)
    candidates = ([override] if override else []) + list(SOUNDFONT_CANDIDATES)
    for candidate in candidates:
        path = pathlib.Path(candidate)
        if path.is_file():
            return path.resolve()
    raise RuntimeError(
        f"no General MIDI SoundFont found (looked at {', '.join(candidates)}): {_SETUP_HINT}"
    )


def _find_fluidsynth() -> str:
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise RuntimeError(f"the `fluidsynth` program is not installed: {_SETUP_HINT}")
    return exe


def program(
    duration_s: float, sample_rate: int, *, seed: int = 0, style: str = "pop"
) -> pathlib.Path:
    """Return the path of a cached, unmastered stereo mix.

    Parameters
    ----------
    duration_s : float
        Length in seconds; the file has exactly ``round(duration_s * sample_rate)`` frames.
    sample_rate : int
        Sample rate in Hz the song is rendered at (not resampled).
    seed : int
        Composition seed (key, tempo, progressions, melody, instruments).
    style : str
        One of :data:`STYLES`: ``"pop"``, ``"ballad"``, ``"rock"``.

    Returns
    -------
    pathlib.Path
        A float32 WAV, shape (frames, 2) on disk; peaks about -6..-3 dBFS and
        integrated loudness about -20..-16 LUFS, like a mix sent to mastering.

    Raises
    ------
    RuntimeError
        If fluidsynth or a GM SoundFont is missing, or rendering fails.
    """
    _check_args(duration_s, sample_rate, style)
    key = {
        "kind": "program",
        "duration_s": float(duration_s),
        "sample_rate": int(sample_rate),
        "seed": int(seed),
        "style": style,
    }
    return _cached(
        key, lambda tmp, final: _render_program(tmp, final, duration_s, sample_rate, seed, style)
    )


def reference(
    duration_s: float, sample_rate: int, *, seed: int = 7, style: str = "rock"
) -> pathlib.Path:
    """Return the path of a cached, mastered-sounding reference track.

    A different song from :func:`program`'s defaults, made brighter, bus-compressed,
    saturated and limited to about -8.5 LUFS integrated with sample peaks at
    -0.3 dBFS, like a loud commercial release. Same file format as :func:`program`.
    """
    _check_args(duration_s, sample_rate, style)
    key = {
        "kind": "reference",
        "duration_s": float(duration_s),
        "sample_rate": int(sample_rate),
        "seed": int(seed),
        "style": style,
    }

    def make(tmp: pathlib.Path, final: pathlib.Path) -> None:
        mix_path = program(duration_s, sample_rate, seed=seed, style=style)
        audio, sr = sf.read(mix_path, dtype="float32", always_2d=True)
        sf.write(tmp, _master_like_a_release(audio.T.astype(np.float64), sr).T, sr, subtype="FLOAT")

    return _cached(key, make)


def _check_args(duration_s: float, sample_rate: int, style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose from {sorted(STYLES)}")
    if not duration_s >= 5.0:
        raise ValueError(f"duration_s must be at least 5 s, got {duration_s}")
    if not 8000 <= sample_rate <= 192000:
        raise ValueError(f"sample_rate must be within 8000..192000 Hz, got {sample_rate}")


def _cached(
    key: dict[str, object], make: Callable[[pathlib.Path, pathlib.Path], None]
) -> pathlib.Path:
    """Return CACHE_DIR/<name>.wav, creating it with ``make(tmp_path, final_path)`` when absent."""
    soundfont = find_soundfont()
    full_key = dict(
        key,
        version=MATERIAL_VERSION,
        soundfont=str(soundfont),
        soundfont_bytes=soundfont.stat().st_size,
    )
    digest = hashlib.sha256(json.dumps(full_key, sort_keys=True).encode()).hexdigest()[:12]
    name = f"{key['kind']}-{key['style']}-s{key['seed']}-{key['sample_rate']}Hz-{key['duration_s']:g}s-{digest}.wav"
    path = CACHE_DIR / name
    if path.is_file():
        return path
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=CACHE_DIR, prefix=".tmp-", suffix=".wav")
    os.close(fd)
    tmp = pathlib.Path(tmp_name)
    try:
        make(tmp, path)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic: readers never see a half-written file
    finally:
        tmp.unlink(missing_ok=True)
    return path


# --------------------------------------------------------------------------- composition


@dataclass(frozen=True)
class _Section:
    kind: str
    first_bar: int
    bars: int


def _song_form(n_bars: int) -> list[_Section]:
    """Intro, then verse/chorus pairs with a bridge, cut to ``n_bars`` bars."""
    unit = 4 if n_bars < 40 else 8
    plan = [("intro", unit // 2 if n_bars < 40 else 4)]
    cycle = ["verse", "chorus", "verse", "chorus", "bridge", "chorus", "chorus"]
    i = 0
    while sum(b for _, b in plan) < n_bars:
        kind = cycle[i % len(cycle)]
        plan.append((kind, unit // 2 if kind == "bridge" and unit == 4 else unit))
        i += 1
    sections, bar = [], 0
    for kind, bars in plan:
        bars = min(bars, n_bars - bar)
        if bars > 0:
            sections.append(_Section(kind, bar, bars))
        bar += bars
    return sections


def _chord_pitch_classes(degree: int, key_pc: int, scale: Sequence[int]) -> list[int]:
    return [(key_pc + scale[(degree + k) % 7]) % 12 for k in (0, 2, 4)]


def _voice(pcs: Sequence[int], previous: Sequence[int] | None, low: int, high: int) -> list[int]:
    """Close-position triad in [low, high] nearest the previous voicing (smooth voice leading)."""
    options = []
    for inversion in range(3):
        order = list(pcs[inversion:]) + list(pcs[:inversion])
        for base in range(low, high - 7):
            if base % 12 != order[0]:
                continue
            notes = [base]
            for pc in order[1:]:
                n = notes[-1] + 1
                while n % 12 != pc:
                    n += 1
                notes.append(n)
            if notes[-1] <= high:
                options.append(notes)
    centre = (low + high) / 2
    ref = previous if previous is not None else [centre] * 3
    return min(
        options, key=lambda v: sum(abs(a - b) for a, b in zip(sorted(v), sorted(ref), strict=True))
    )


def _grid(pattern: str) -> list[tuple[float, float]]:
    """16-step pattern ('X' accent, 'x' normal, 'o' ghost) -> [(onset_beats, velocity_scale)]."""
    levels = {"X": 1.0, "x": 0.78, "o": 0.45}
    return [(i / 4, levels[ch]) for i, ch in enumerate(pattern) if ch in levels]


# Drum grooves per style and section: {drum key: 16-step pattern}.
_GROOVES: dict[str, dict[str, dict[int, str]]] = {
    "pop": {
        "intro": {KICK: "x.......x.......", HAT_CLOSED: "x.x.x.x.x.x.x.x."},
        "verse": {
            KICK: "x.....x.x.......",
            SNARE: "....x.......x...",
            HAT_CLOSED: "x.o.x.o.x.o.x.oo",
        },
        "chorus": {
            KICK: "X.....x.x.x.....",
            SNARE: "....X.......X...",
            CLAP: "....x.......x...",
            HAT_CLOSED: "x.x.x.x.x.x.x...",
            HAT_OPEN: "..............x.",
        },
        "bridge": {
            KICK: "x.........x.....",
            SIDE_STICK: "....x.......x...",
            RIDE: "x.x.x.x.x.x.x.x.",
        },
    },
    "ballad": {
        "intro": {HAT_PEDAL: "....x.......x..."},
        "verse": {
            KICK: "x.....x.........",
            SIDE_STICK: "....x.......x...",
            HAT_CLOSED: "o.o.o.o.o.o.o.o.",
        },
        "chorus": {KICK: "x.....x.x.......", SNARE: "....x.......x...", RIDE: "x.x.x.x.x.x.x.x."},
        "bridge": {
            KICK: "x...............",
            SIDE_STICK: "....x.......x...",
            HAT_CLOSED: "o...o...o...o...",
        },
    },
    "rock": {
        "intro": {KICK: "x.......x.......", RIDE: "x.x.x.x.x.x.x.x."},
        "verse": {
            KICK: "x.....x.x.......",
            SNARE: "....X.......X...",
            HAT_CLOSED: "x.x.x.x.x.x.x.x.",
        },
        "chorus": {
            KICK: "X.x...x.x.x...x.",
            SNARE: "....X.......X...",
            HAT_OPEN: "x.x.x.x.x.x.x.x.",
        },
        "bridge": {
            KICK: "x.......x.......",
            SNARE: "....x.......x...",
            TOM_LOW: "..x.......x....x",
            RIDE: "x...x...x...x...",
        },
    },
}

# Bass patterns: (onset_beats, duration_beats, semitones above the root).
_BASS: dict[str, dict[str, tuple[tuple[float, float, int], ...]]] = {
    "pop": {
        "intro": ((0, 3.5, 0),),
        "verse": ((0, 1.5, 0), (1.5, 0.5, 0), (2.5, 1.0, 0), (3.5, 0.5, 7)),
        "chorus": (
            (0, 0.75, 0),
            (0.75, 0.75, 0),
            (1.5, 0.5, 12),
            (2, 1, 7),
            (3, 0.5, 0),
            (3.5, 0.5, 0),
        ),
        "bridge": ((0, 2, 0), (2, 2, 7)),
    },
    "ballad": {
        "intro": ((0, 4, 0),),
        "verse": ((0, 3, 0), (3, 1, 7)),
        "chorus": ((0, 1.5, 0), (1.5, 0.5, 7), (2, 2, 12)),
        "bridge": ((0, 4, 0),),
    },
    "rock": {
        "intro": ((0, 2, 0), (2, 2, 0)),
        "verse": tuple((i / 2, 0.45, 0) for i in range(8)),
        "chorus": tuple((i / 2, 0.45, 12 if i in (3, 7) else 0) for i in range(8)),
        "bridge": ((0, 1, 0), (1, 1, 7), (2, 1, 5), (3, 1, 7)),
    },
}

# Keys comping rhythms: (onset_beats, duration_beats).
_COMP: dict[str, dict[str, tuple[tuple[float, float], ...]]] = {
    "pop": {
        "intro": ((0, 4),),
        "verse": ((0, 1.5), (1.5, 1), (2.5, 1.5)),
        "chorus": ((0, 0.5), (0.5, 0.5), (1.5, 0.5), (2, 0.5), (2.5, 0.5), (3.5, 0.5)),
        "bridge": ((0, 4),),
    },
    "rock": {
        "intro": ((0, 4),),
        "verse": ((0, 4),),
        "chorus": ((0, 2), (2, 2)),
        "bridge": ((0, 4),),
    },
}


class _Composer:
    """Builds one song as a pretty_midi.PrettyMIDI; all randomness from one seeded Generator."""

    def __init__(self, duration_s: float, seed: int, style: str) -> None:
        import pretty_midi  # test-only dependency; imported here so the module imports without it

        self.pm_mod = pretty_midi
        self.style_name = style
        self.style = STYLES[style]
        self.rng = np.random.default_rng([seed, zlib.crc32(style.encode())])
        rng = self.rng
        self.bpm = float(rng.integers(self.style.tempo_bpm[0], self.style.tempo_bpm[1] + 1))
        self.beat_s = 60.0 / self.bpm
        self.duration_s = duration_s
        self.key_pc = int(rng.integers(0, 12))
        self.minor = bool(rng.random() < self.style.minor_probability)
        self.scale = MINOR_SCALE if self.minor else MAJOR_SCALE
        progressions = MINOR_PROGRESSIONS if self.minor else MAJOR_PROGRESSIONS
        picks = rng.choice(len(progressions), size=3, replace=False)
        self.progression = {
            "intro": progressions[picks[0]],
            "verse": progressions[picks[0]],
            "chorus": progressions[picks[1]],
            "bridge": progressions[picks[2]],
        }
        self.pm = pretty_midi.PrettyMIDI(initial_tempo=self.bpm)
        self.pm.time_signature_changes.append(pretty_midi.TimeSignature(4, 4, 0.0))
        pm_key = self.key_pc + (12 if self.minor else 0)
        self.pm.key_signature_changes.append(pretty_midi.KeySignature(pm_key, 0.0))

    # -- helpers

    def _instrument(
        self, program_choices: Sequence[int], name: str, *, volume: int, pan: int, reverb: int
    ):
        inst = self.pm_mod.Instrument(program=int(self.rng.choice(program_choices)), name=name)
        for number, value in ((7, volume), (10, pan), (91, reverb), (11, 127)):
            inst.control_changes.append(self.pm_mod.ControlChange(number, value, 0.0))
        self.pm.instruments.append(inst)
        return inst

    def _time(self, bar: int, beat: float) -> float:
        jitter = self.rng.normal(0.0, 0.004)  # a few ms of human timing
        return max(0.0, LEAD_IN_S + (bar * 4 + beat) * self.beat_s + jitter)

    def _note(
        self, inst, pitch: int, velocity: float, bar: int, beat: float, dur_beats: float
    ) -> None:
        start = self._time(bar, beat)
        end = max(start + 0.03, LEAD_IN_S + (bar * 4 + beat + dur_beats) * self.beat_s - 0.01)
        vel = int(np.clip(round(velocity + self.rng.normal(0, 4)), 1, 127))
        inst.notes.append(self.pm_mod.Note(velocity=vel, pitch=int(pitch), start=start, end=end))

    def _chord_root(self, kind: str, bar_in_section: int) -> tuple[int, list[int]]:
        degree = self.progression[kind][bar_in_section % 4]
        pcs = _chord_pitch_classes(degree, self.key_pc, self.scale)
        return pcs[0], pcs

    # -- parts

    def compose(self):
        bar_s = 4 * self.beat_s
        n_bars = max(2, int((self.duration_s - FINAL_HIT_BEFORE_END_S - LEAD_IN_S) // bar_s))
        sections = _song_form(n_bars)
        s = self.style
        drums = self.pm_mod.Instrument(program=s.drum_kit, is_drum=True, name="drums")
        for number, value in ((7, 118), (10, 64), (91, 30)):
            drums.control_changes.append(self.pm_mod.ControlChange(number, value, 0.0))
        self.pm.instruments.append(drums)
        bass = self._instrument(s.bass_programs, "bass", volume=112, pan=64, reverb=10)
        keys = self._instrument(s.keys_programs, "keys", volume=92, pan=44, reverb=45)
        pad = self._instrument(s.pad_programs, "pad", volume=72, pan=84, reverb=70)
        guitar = self._instrument(
            s.guitar_programs,
            "guitar",
            volume=88 if self.style_name == "rock" else 72,
            pan=92,
            reverb=35,
        )
        lead = self._instrument(s.lead_programs, "lead", volume=96, pan=58, reverb=55)
        if self.style_name == "rock":  # a second, panned-opposite rhythm guitar makes the wall
            guitar2 = self._instrument(s.guitar_programs, "guitar 2", volume=84, pan=30, reverb=35)
        else:
            guitar2 = None

        voicing: list[int] | None = None
        for index, sec in enumerate(sections):
            intensity = _SECTION_INTENSITY[sec.kind]
            motif = self._new_motif(sec.kind)
            for b in range(sec.bars):
                bar = sec.first_bar + b
                root_pc, pcs = self._chord_root(sec.kind, b)
                next_root_pc = self._chord_root(sec.kind, b + 1)[0]
                voicing = _voice(pcs, voicing, 55, 76)
                last_bar_of_section = b == sec.bars - 1 and index < len(sections) - 1
                self._drums(
                    drums,
                    sec.kind,
                    bar,
                    intensity,
                    fill=last_bar_of_section and sec.bars >= 2,
                    crash=b == 0 and index > 0,
                )
                self._bass(bass, sec.kind, bar, root_pc, next_root_pc, intensity, b)
                self._keys(keys, sec.kind, bar, voicing, intensity)
                if sec.kind in ("chorus", "bridge") or (
                    self.style_name == "ballad" and sec.kind != "intro"
                ):
                    for p in voicing:
                        self._note(
                            pad,
                            p - 12 if self.style_name == "rock" else p,
                            70 * intensity + 20,
                            bar,
                            0,
                            4,
                        )
                if sec.kind == "chorus" or (self.style_name == "rock" and sec.kind == "verse"):
                    self._guitar(guitar, sec.kind, bar, root_pc, voicing, intensity)
                    if guitar2 is not None:
                        self._guitar(guitar2, sec.kind, bar, root_pc, voicing, intensity)
                if sec.kind in ("verse", "chorus"):
                    self._melody_bar(lead, sec.kind, bar, b, pcs, motif, intensity)
        self._final_hit(drums, bass, keys, pad, lead, n_bars, voicing)
        return self.pm

    def _drums(
        self, drums, kind: str, bar: int, intensity: float, *, fill: bool, crash: bool
    ) -> None:
        groove = _GROOVES[self.style_name][kind]
        base_velocity = 100 * intensity + 12
        for key, pattern in groove.items():
            for beat, level in _grid(pattern):
                if fill and beat >= 2:
                    break
                self._note(drums, key, base_velocity * level, bar, beat, 0.25)
        if crash:
            self._note(drums, CRASH, 112 * intensity + 8, bar, 0, 2)
            self._note(drums, KICK, 112 * intensity, bar, 0, 0.25)
        if fill:
            toms = [SNARE, SNARE, TOM_HIGH, TOM_HIGH, TOM_MID, TOM_MID, TOM_LOW, TOM_LOW]
            if self.rng.random() < 0.4:
                toms = [SNARE] * 6 + [TOM_LOW, TOM_LOW]
            for i, key in enumerate(toms):
                self._note(drums, key, (70 + 6 * i) * (0.6 + 0.4 * intensity), bar, 2 + i / 4, 0.25)
            self._note(drums, KICK, 90 * intensity, bar, 2, 0.25)

    def _bass(
        self, bass, kind: str, bar: int, root_pc: int, next_root_pc: int, intensity: float, b: int
    ) -> None:
        root = 36 + ((root_pc - 36) % 12)  # then folded to G#1..G2, a bass guitar's low register
        if root > 43:
            root -= 12
        pattern = list(_BASS[self.style_name][kind])
        if kind == "intro" and b == 0 and self.style_name != "rock":
            return  # let the intro breathe before the bass comes in
        for i, (beat, dur, interval) in enumerate(pattern):
            pitch = root + interval
            is_last = i == len(pattern) - 1
            if is_last and beat >= 3 and next_root_pc != root_pc and self.rng.random() < 0.5:
                target = root + ((next_root_pc - root_pc) % 12)
                pitch = target - 1 if target - 1 >= 28 else target + 1  # chromatic approach note
            accent = 1.0 if beat == 0 else 0.85
            self._note(bass, pitch, (92 * intensity + 22) * accent, bar, beat, dur)

    def _keys(self, keys, kind: str, bar: int, voicing: list[int], intensity: float) -> None:
        velocity = 70 * intensity + 18
        if self.style_name == "ballad":  # broken-chord piano: the ballad's motor
            arpeggio = [
                voicing[0] - 12,
                voicing[0],
                voicing[1],
                voicing[2],
                voicing[0] + 12,
                voicing[2],
                voicing[1],
                voicing[0],
            ]
            for i, pitch in enumerate(arpeggio):
                self._note(keys, pitch, velocity * (1.0 if i % 4 == 0 else 0.8), bar, i / 2, 0.9)
            return
        for beat, dur in _COMP[self.style_name][kind]:
            start_jitter = 0.0
            for pitch in voicing:
                self._note(keys, pitch, velocity, bar, beat + start_jitter, dur)
                start_jitter += 0.01

    def _guitar(
        self, guitar, kind: str, bar: int, root_pc: int, voicing: list[int], intensity: float
    ) -> None:
        velocity = 80 * intensity + 20
        if self.style_name == "rock":  # power chords, eighth notes, muted-short in the verse
            root = 40 + ((root_pc - 40) % 12)
            chord = [root, root + 7, root + 12]
            length = 0.45 if kind == "chorus" else 0.25
            for i in range(8):
                for j, pitch in enumerate(chord):
                    self._note(
                        guitar,
                        pitch,
                        velocity * (1.0 if i % 2 == 0 else 0.85),
                        bar,
                        i / 2 + 0.006 * j,
                        length,
                    )
            return
        for beat in (0.5, 1.5, 2.5, 3.5):  # off-beat strums
            for j, pitch in enumerate([*voicing, voicing[0] + 12]):
                self._note(guitar, pitch, velocity * 0.9, bar, beat + 0.008 * j, 0.4)

    def _new_motif(self, kind: str) -> dict[str, object]:
        rng = self.rng
        rhythms = BALLAD_RHYTHMS if self.style_name == "ballad" else MELODY_RHYTHMS
        a, b = (rhythms[i] for i in rng.choice(len(rhythms), size=2, replace=False))
        end = PHRASE_END_RHYTHMS[int(rng.integers(len(PHRASE_END_RHYTHMS)))]
        steps = [int(x) for x in rng.choice([-3, -2, -1, 1, 2, 3, 4, -5, 0], size=16)]
        low, high = (67, 86) if kind == "chorus" else (60, 79)
        return {
            "rhythms": (a, b, a, end),
            "steps": steps,
            "low": low,
            "high": high,
            "pitch": (low + high) // 2,
        }

    def _melody_bar(
        self, lead, kind: str, bar: int, b: int, chord_pcs: list[int], motif: dict, intensity: float
    ) -> None:
        rhythm = motif["rhythms"][b % 4]
        if self.style_name == "rock" and kind == "verse" and b % 2 == 1:
            return  # leave space for the guitars
        scale_pcs = [(self.key_pc + d) % 12 for d in self.scale]
        low, high = motif["low"], motif["high"]
        pitch = motif["pitch"]
        for i, (beat, dur) in enumerate(rhythm):
            target = pitch + motif["steps"][i % len(motif["steps"])]
            if target < low or target > high:
                target = 2 * (low if target < low else high) - target  # reflect back into range
            strong = float(beat) in (0.0, 2.0) or dur >= 2
            allowed = chord_pcs if strong else scale_pcs
            candidates = [p for p in range(low, high + 1) if p % 12 in allowed]
            pitch = min(candidates, key=lambda p, t=target: (abs(p - t), p))
            velocity = (85 * intensity + 25) * (1.0 if strong else 0.88)
            self._note(lead, pitch, velocity, bar, beat, dur)
        motif["pitch"] = pitch

    def _final_hit(self, drums, bass, keys, pad, lead, bar: int, voicing: list[int] | None) -> None:
        root_pc = self.key_pc
        pcs = _chord_pitch_classes(0, self.key_pc, self.scale)
        final_voicing = _voice(pcs, voicing, 55, 76)
        ring = (self.duration_s - LEAD_IN_S) / self.beat_s - bar * 4  # beats until the end
        self._note(drums, CRASH, 118, bar, 0, ring)
        self._note(drums, KICK, 115, bar, 0, 0.5)
        root = 36 + ((root_pc - 36) % 12)
        self._note(bass, root if root <= 43 else root - 12, 110, bar, 0, ring)
        for p in final_voicing:
            self._note(keys, p, 95, bar, 0, ring)
            self._note(pad, p, 80, bar, 0, ring)
        self._note(lead, final_voicing[-1] + 12, 90, bar, 0, ring * 0.6)


# --------------------------------------------------------------------------- rendering


def _render_program(
    out: pathlib.Path,
    final: pathlib.Path,
    duration_s: float,
    sample_rate: int,
    seed: int,
    style: str,
) -> None:
    exe = _find_fluidsynth()
    soundfont = find_soundfont()
    pm = _Composer(duration_s, seed, style).compose()
    with tempfile.TemporaryDirectory(prefix="amc-material-") as tmp_dir:
        tmp = pathlib.Path(tmp_dir)
        mid = tmp / "song.mid"
        raw = tmp / "render.wav"
        pm.write(str(mid))
        cmd = [
            exe, "-ni", "-q",
            "-g", "0.5",
            "-r", str(int(sample_rate)),
            "-o", f"synth.sample-rate={int(sample_rate)}",
            "-o", "synth.audio-channels=1",  # one stereo pair
            "-o", "synth.polyphony=512",
            # FluidSynth's chorus sums to a strongly anti-phase stereo image (L/R correlation
            # about -0.5): nothing like a real mix, so it stays off; reverb is kept.
            "-C", "0",
            "-T", "wav", "-O", "float",
            "-F", str(raw),
            str(soundfont), str(mid),
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        if result.returncode != 0 or not raw.is_file():
            raise RuntimeError(
                f"fluidsynth failed ({result.returncode}): {result.stderr.strip()[-2000:]}"
            )
        audio, sr = sf.read(raw, dtype="float64", always_2d=True)
        shutil.copyfile(mid, final.with_suffix(".mid"))  # the score, kept for debugging
    if sr != sample_rate or audio.shape[1] != 2:
        raise RuntimeError(
            f"fluidsynth rendered {audio.shape[1]} channel(s) at {sr} Hz, wanted 2 at {sample_rate} Hz"
        )
    mix = _fit_length(audio.T, round(duration_s * sample_rate), sample_rate)
    style_spec = STYLES[style]
    jitter_db = float(np.random.default_rng([seed, 99]).uniform(-0.5, 0.5))
    mix = _level_mix(
        mix, sample_rate, style_spec.mix_lufs + jitter_db, style_spec.mix_peak_dbfs + jitter_db / 2
    )
    sf.write(out, mix.T.astype(np.float32), sample_rate, subtype="FLOAT")


def _fit_length(audio: np.ndarray, frames: int, sample_rate: int) -> np.ndarray:
    """(2, n) -> (2, frames): cut the reverb tail, fade the end out with a raised cosine."""
    out = np.zeros((audio.shape[0], frames))
    n = min(frames, audio.shape[1])
    out[:, :n] = audio[:, :n]
    out[:, :n] -= out[:, :n].mean(axis=1, keepdims=True)  # fluidsynth leaves a tiny DC offset
    fade = min(frames, int(FADE_OUT_S * sample_rate))
    out[:, frames - fade :] *= 0.5 * (1 + np.cos(np.linspace(0, np.pi, fade)))
    return out


def _integrated_lufs(audio: np.ndarray, sample_rate: int) -> float:
    """BS.1770 integrated loudness of (channels, frames) via pyebur128."""
    import pyebur128

    meter = pyebur128.R128State(audio.shape[0], sample_rate, pyebur128.MeasurementMode.MODE_I)
    meter.add_frames(
        np.ascontiguousarray(audio.T, dtype=np.float64).ravel(), audio.shape[1]
    )  # interleaved
    return float(pyebur128.get_loudness_global(meter))


def _limit(
    audio: np.ndarray, sample_rate: int, ceiling: float, *, release_ms: float = 40.0
) -> np.ndarray:
    """Stereo-linked look-ahead peak limiter: never exceeds ``ceiling`` (linear) in sample peak.

    A running minimum of the required gain over +-W followed by a W-long moving average
    stays below the required gain at every sample, so ramps are smooth yet safe.
    """
    peak = np.max(np.abs(audio), axis=0)
    need = np.minimum(1.0, ceiling / np.maximum(peak, 1e-12))
    half = max(1, int(release_ms * 1e-3 * sample_rate / 2))
    gain = ndimage.minimum_filter1d(need, size=4 * half + 1, mode="nearest")
    gain = ndimage.uniform_filter1d(gain, size=2 * half + 1, mode="nearest")
    return np.clip(audio * np.minimum(gain, need), -ceiling, ceiling)


def _level_mix(
    audio: np.ndarray, sample_rate: int, target_lufs: float, peak_dbfs: float
) -> np.ndarray:
    """Set loudness like a mix engineer's bus: gain to target, transients shaved at the bus ceiling."""
    ceiling = 10 ** (peak_dbfs / 20)
    out = audio
    gain_db = target_lufs - _integrated_lufs(audio, sample_rate)
    for _ in range(3):
        out = _limit(audio * 10 ** (gain_db / 20), sample_rate, ceiling, release_ms=80.0)
        error_db = target_lufs - _integrated_lufs(out, sample_rate)
        if abs(error_db) < 0.1:
            break
        gain_db += error_db
    return out


def _biquad_shelf(
    sample_rate: int, freq_hz: float, gain_db: float, *, high: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Second-order shelving filter (Audio EQ Cookbook form, shelf slope 1)."""
    a_gain = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * freq_hz / sample_rate
    alpha = np.sin(w0) / 2 * np.sqrt(2)
    cos_w0, sq = np.cos(w0), 2 * np.sqrt(a_gain) * alpha
    sign = 1 if high else -1
    b = a_gain * np.array([
        (a_gain + 1) + sign * (a_gain - 1) * cos_w0 + sq,
        -sign * 2 * ((a_gain - 1) + sign * (a_gain + 1) * cos_w0),
        (a_gain + 1) + sign * (a_gain - 1) * cos_w0 - sq,
    ])  # fmt: skip
    a = np.array([
        (a_gain + 1) - sign * (a_gain - 1) * cos_w0 + sq,
        sign * 2 * ((a_gain - 1) - sign * (a_gain + 1) * cos_w0),
        (a_gain + 1) - sign * (a_gain - 1) * cos_w0 - sq,
    ])  # fmt: skip
    return b / a[0], a / a[0]


def _master_like_a_release(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """(2, n) mix -> loud, bright "commercial" master around REFERENCE_TARGET_LUFS."""
    x = audio
    for freq, gain_db, high in ((90.0, 2.0, False), (7000.0, 3.5, True)):
        b, a = _biquad_shelf(sample_rate, freq, gain_db, high=high)
        x = signal.lfilter(b, a, x, axis=1)
    # Bus compressor: 2.5:1 above -28 dBFS RMS (30 ms), gain smoothed over 100 ms: evens
    # out verse and chorus like a release (LRA about 5 LU).
    mean_square = signal.lfilter(
        [1 - np.exp(-1 / (0.03 * sample_rate))],
        [1, -np.exp(-1 / (0.03 * sample_rate))],
        np.mean(x**2, axis=0),
    )
    level_db = 10 * np.log10(np.maximum(mean_square, 1e-12))
    reduction_db = np.maximum(0.0, level_db + 28.0) * (1 - 1 / 2.5)
    smooth = np.exp(-1 / (0.1 * sample_rate))
    reduction_db = signal.filtfilt([1 - smooth], [1, -smooth], reduction_db)
    x = x * 10 ** (-reduction_db / 20)
    ceiling = 10 ** (REFERENCE_CEILING_DBFS / 20)

    def finish(drive_db: float) -> np.ndarray:
        driven = x * 10 ** (drive_db / 20)
        saturated = np.tanh(driven * 0.8) / 0.8  # soft clipping adds density and harmonics
        return _limit(saturated, sample_rate, ceiling, release_ms=30.0)

    low, high = 0.0, 30.0  # bisection on drive: loudness rises monotonically with it
    drive = 10.0
    for _ in range(14):
        drive = (low + high) / 2
        loudness = _integrated_lufs(finish(drive), sample_rate)
        if abs(loudness - REFERENCE_TARGET_LUFS) < 0.1:
            break
        low, high = (drive, high) if loudness < REFERENCE_TARGET_LUFS else (low, drive)
    return finish(drive)


if (
    __name__ == "__main__"
):  # python tests/material.py 30 48000 [seed] [style]: render and print the path
    import sys
    import time

    args = sys.argv[1:]
    started = time.perf_counter()
    kind = os.environ.get("AMC_MATERIAL_KIND", "program")
    fn = reference if kind == "reference" else program
    path = fn(float(args[0]) if args else 30.0, int(args[1]) if len(args) > 1 else 48000,
              seed=int(args[2]) if len(args) > 2 else (7 if kind == "reference" else 0),
              style=args[3] if len(args) > 3 else ("rock" if kind == "reference" else "pop"))  # fmt: skip
    print(f"{path} ({time.perf_counter() - started:.1f} s)")
