"""Paths and environment: the one place that reads ``AMC_*`` variables for the desktop side.

User data (settings, the embedded service's database, model weights, caches, logs)
lives in the platform's user data dir (``platformdirs``), or under ``AMC_HOME`` when
that is set (tests set it to a temp folder so nothing touches the real home).
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "ai-music-mastering-chain"
APP_DISPLAY_NAME = "AMC Studio"
ORGANIZATION = "AI Music Mastering Chain"


def amc_home() -> Path:
    """Root of all user data; created on first use."""
    env = os.environ.get("AMC_HOME")
    root = Path(env).expanduser() if env else Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    root.mkdir(parents=True, exist_ok=True)
    return root


def _sub(name: str) -> Path:
    p = amc_home() / name
    p.mkdir(parents=True, exist_ok=True)
    return p


def autosave_interval_ms() -> int:
    """How often the Studio autosaves (``AMC_AUTOSAVE_MS``, default 60 s; tests shorten it)."""
    try:
        return max(200, int(os.environ.get("AMC_AUTOSAVE_MS", "60000")))
    except ValueError:
        return 60_000


def cache_dir() -> Path:
    """Rebuildable data (waveform peak pyramids, analysis caches)."""
    return _sub("cache")


def models_dir() -> Path:
    """The user's model weights folder (the Hugging Face cache is searched as well)."""
    return _sub("models")


def service_dir() -> Path:
    """The embedded account service's database and storage."""
    return _sub("service")


def log_dir() -> Path:
    """Rotating logs."""
    return _sub("logs")


def projects_dir() -> Path:
    """Default folder offered for new projects."""
    return _sub("projects")
