"""Fixtures for the model worker/client tests: an isolated user data dir and a shared client.

The shared client's worker runs the tiny test backends from :mod:`tests.models.tiny_backend`
(registered through ``AMC_EXTRA_BACKENDS``); spawning a worker costs about a second, so
tests that leave the worker usable share one per session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.models.client import ModelClient

TINY = "tests.models.tiny_backend:TinyBackend,tests.models.tiny_backend:TinyWeightsBackend"


@pytest.fixture
def amc_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """AMC_HOME and the Hugging Face cache in a temp folder; the tiny backends registered."""
    home = tmp_path / "amc_home"
    monkeypatch.setenv("AMC_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("AMC_EXTRA_BACKENDS", TINY)
    monkeypatch.delenv("AMC_MODELS_PATH", raising=False)
    for key in ("AMC_SUNO_API_KEY", "AMC_MUREKA_API_KEY", "AMC_STABILITY_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    return home


def worker_env(home: Path) -> dict[str, str]:
    return {"AMC_EXTRA_BACKENDS": TINY, "AMC_HOME": str(home), "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="session")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelClient]:
    """One CPU worker for the whole session (tests must leave it ready)."""
    home = tmp_path_factory.mktemp("shared_home")
    c = ModelClient(device="cpu", log_path=home / "worker.log", ram_budget_bytes=20_000, env=worker_env(home))
    c.wait_ready(60)
    yield c
    c.close()
