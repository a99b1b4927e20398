"""Shared fixtures: program material rendered once per session, a seeded RNG.

Program material comes from :mod:`tests.material` (fluidsynth + a GM SoundFont,
installed by ``scripts/setup.sh --test``). Where those are missing on a system
without apt-get the material tests are skipped with the reason; on Debian/Ubuntu
a missing install is an error that says what to run.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

# Before anything imports Qt: widgets render offscreen in tests (no display needed).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# User data (settings, caches, sessions, weights) goes to a throw-away folder, never ~.
os.environ.setdefault("AMC_HOME", tempfile.mkdtemp(prefix="amc-test-home-"))
os.environ.setdefault("XDG_CONFIG_HOME", os.path.join(os.environ["AMC_HOME"], "xdg-config"))

import numpy as np
import pytest

from tests import material


def _material(make, *args: object, **kwargs: object) -> pathlib.Path:
    have_synth = shutil.which("fluidsynth") is not None
    try:
        material.find_soundfont()
        have_font = True
    except RuntimeError:
        have_font = False
    if not (have_synth and have_font) and shutil.which("apt-get") is None:
        pytest.skip(
            "program material needs the fluidsynth program and a General MIDI SoundFont, "
            "which scripts/setup.sh --test can only install on Debian/Ubuntu; install them "
            "with this OS's package manager (or set AMC_TEST_SOUNDFONT) to run these tests"
        )
    return make(*args, **kwargs)  # on Debian a missing install raises RuntimeError with the fix


@pytest.fixture(scope="session")
def program_44k_30s() -> pathlib.Path:
    """30 s unmastered pop mix, 44.1 kHz stereo float32 WAV."""
    return _material(material.program, 30.0, 44100)


@pytest.fixture(scope="session")
def program_48k_30s() -> pathlib.Path:
    """30 s unmastered pop mix, 48 kHz stereo float32 WAV."""
    return _material(material.program, 30.0, 48000)


@pytest.fixture(scope="session")
def reference_48k_30s() -> pathlib.Path:
    """30 s loud, bright, mastered-sounding reference (about -8.5 LUFS), 48 kHz stereo."""
    return _material(material.reference, 30.0, 48000)


@pytest.fixture
def rng() -> np.random.Generator:
    """A freshly seeded generator per test, so tests stay reproducible in any order."""
    return np.random.default_rng(1234)
