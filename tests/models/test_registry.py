"""The twelve slots, backend discovery and honest statuses."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app.models import registry
from app.models.backends.base import Backend, BackendStatus
from app.models.registry import BackendUnavailable, PlannedBackend
from tests.models.tiny_backend import TinyBackend

REPO = Path(__file__).resolve().parents[2]
TWELVE = ["musicgen", "stable-audio", "musiclm", "audiocraft", "jukebox", "melody-rnn", "music-vae",
          "aces", "diff-rhythm", "suni", "beethoven-ai", "mureka"]


def test_the_twelve_slots_in_order_with_roles() -> None:
    assert list(registry.SLOT_KEYS) == TWELVE
    assert [s.number for s in registry.SLOTS] == list(range(1, 13))
    for spec in registry.SLOTS:
        assert spec.title and spec.role and spec.capabilities and spec.backends


def test_slot_status_lists_every_slot_and_never_claims_ready_for_planned(amc_env: Path, monkeypatch) -> None:
    monkeypatch.delenv("AMC_EXTRA_BACKENDS")
    rows = registry.slot_status(device="cpu")
    assert [r["slot"] for r in rows] == TWELVE
    by_slot = {r["slot"]: r for r in rows}
    for key in ("melody-rnn", "music-vae", "beethoven-ai", "diff-rhythm"):
        (b,) = by_slot[key]["backends"]
        assert b["state"] == "not_available" and b["detail"].startswith("not available yet")
        assert by_slot[key]["ready"] is False
    for key, env in (("suni", "AMC_SUNO_API_KEY"), ("mureka", "AMC_MUREKA_API_KEY")):
        # no client in this build: a key is not all that is missing, so never "needs API key"
        for with_key in (False, True):
            if with_key:
                monkeypatch.setenv(env, "k")
            else:
                monkeypatch.delenv(env, raising=False)
            (b,) = registry.slot_status(device="cpu", slots=[key])[0]["backends"]
            assert b["state"] == "not_available" and "API key will not change that" in b["detail"]
    rest = [b for b in by_slot["stable-audio"]["backends"] if b["name"] == "stability-rest"]
    assert rest and rest[0]["state"] == "not_available"
    internal = ("issue", "arrives with", "symbolic-models", "cloud-models")
    for row in rows:
        for b in row["backends"]:
            assert b["state"] in ("ready", "degraded", "weights_missing", "package_missing", "needs_api_key",
                                  "not_available", "unsupported_device", "error")
            assert b["detail"] and not any(w in b["detail"] for w in internal), b["detail"]
            if b["state"] == "weights_missing":
                assert b["detail"].startswith("needs download") and "amc models download" in b["detail"]


def test_cloud_key_present_is_still_not_ready(amc_env: Path, monkeypatch) -> None:
    monkeypatch.setenv("AMC_SUNO_API_KEY", "k")
    (row,) = registry.slot_status(slots=["suni"])
    (b,) = row["backends"]
    assert b["state"] == "not_available" and "API key will not change that" in b["detail"]
    planned = PlannedBackend("x", "X", "not_available", "not available yet")
    assert planned.status() == BackendStatus("not_available", "not available yet")
    keyed = PlannedBackend("y", "Y", "needs_api_key", "a client that runs", api_key_env="AMC_Y_KEY")
    monkeypatch.delenv("AMC_Y_KEY", raising=False)
    assert keyed.status().state == "needs_api_key" and "set AMC_Y_KEY" in keyed.status().detail


def test_extra_and_broken_backends_are_reported_not_raised(amc_env: Path, monkeypatch) -> None:
    monkeypatch.setenv("AMC_EXTRA_BACKENDS",
                       "tests.models.tiny_backend:TinyBackend, tests.models.no_such_module, app.models.backends.base:Cancelled")
    rows = {r["slot"]: r for r in registry.slot_status()}
    assert list(rows)[:12] == TWELVE
    assert rows["test"]["ready"] and rows["test"]["backends"][0]["name"] == "tiny"
    broken = rows["extra"]["backends"]
    assert broken[0]["state"] == "package_missing" and "No module named 'tests.models.no_such_module'" in broken[0]["detail"]
    assert broken[1]["state"] == "error" and "not a Backend subclass" in broken[1]["detail"]


def test_module_scan_finds_concrete_subclasses_in_definition_order(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "amc_scan_mod.py").write_text(textwrap.dedent("""
        from app.models.backends.base import Backend, BackendStatus
        from tests.models.tiny_backend import TinyBackend  # imported: not this module's own

        class Zeta(Backend):
            name = "zeta"
            slot = "musicgen"
            def status(self, *, device, find_weights):
                return BackendStatus("weights_missing", "no weights")
            def run(self, task, params, inputs, ctx):
                raise NotImplementedError

        class Abstract(Backend):
            pass

        class Alpha(Zeta):
            name = "alpha"
            def status(self, *, device, find_weights):
                return BackendStatus("ready", "ok")

        class Other(Alpha):
            name = "other"
            slot = "jukebox"
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    classes = registry._classes_in("amc_scan_mod")
    assert [c.name for c in classes] == ["zeta", "alpha", "other"]
    monkeypatch.setenv("AMC_EXTRA_BACKENDS", "amc_scan_mod")
    _, entries = registry.get_slot("musicgen")
    assert [registry.entry_name(e) for e in entries[:2]] == ["zeta", "alpha"]
    backend, why = registry.resolve("musicgen", device="cpu", find_weights=lambda spec: None)
    assert backend.name == "alpha" and "skipped zeta: weights_missing (no weights)" in why
    with pytest.raises(BackendUnavailable, match="zeta: weights_missing"):
        registry.resolve("musicgen", device="cpu", backend="zeta", find_weights=lambda spec: None)
    with pytest.raises(BackendUnavailable, match="no backend 'ghost'"):
        registry.resolve("musicgen", device="cpu", backend="ghost", find_weights=lambda spec: None)
    with pytest.raises(BackendUnavailable, match="unknown model slot"):
        registry.get_slot("nope")
    # One slot looked up alone is the same as in the full listing (extras included), and an
    # extra's own slot ("other" declares jukebox) is found too.
    for spec, listed in registry.slot_entries():
        assert registry.get_slot(spec.key) == (spec, listed), spec.key
    assert "other" in [registry.entry_name(e) for e in registry.get_slot("jukebox")[1]]


def test_backends_list_override_and_instances_shared(amc_env: Path) -> None:
    assert registry.backend_instance(TinyBackend) is registry.backend_instance(TinyBackend)
    assert issubclass(TinyBackend, Backend) and TinyBackend.key() == "tiny"


def test_slot_status_does_not_import_torch(tmp_path: Path) -> None:
    """Statuses come from cheap checks: listing them (all real backend modules) loads no torch."""
    code = (
        "import sys\n"
        "from app.models import registry\n"
        "rows = registry.slot_status(device='cpu')\n"
        "assert len(rows) >= 12\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "AMC_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
