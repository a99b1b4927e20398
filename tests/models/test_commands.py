"""`amc models` through a tiny argparse harness (the lead wires add_commands into app/cli.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from app.models.commands import UnknownModel, add_commands, resolve_weights
from tests.models.hub_server import HubServer, HubState
from tests.models.tiny_backend import TINY_WEIGHTS


def amc(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="amc")
    sub = parser.add_subparsers(dest="command")
    add_commands(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


def _rows(capsys) -> dict[str, dict]:
    assert amc(["models", "--json"]) == 0
    return {r["slot"]: r for r in json.loads(capsys.readouterr().out)}


def test_models_lists_the_twelve_slots(amc_env: Path, capsys) -> None:
    assert amc(["models"]) == 0
    text = capsys.readouterr().out
    for n, title in enumerate(["MusicGen", "Stable Audio", "MusicLM", "AudioCraft", "Jukebox", "Melody RNN",
                               "Music VAE", "ACES", "Diff Rhythm", "Suni", "Beethoven AI", "Mureka"], start=1):
        assert f"{n:>2}. {title} [" in text
    assert "not_available - not available yet" in text
    assert "arrives with" not in text and "issue" not in text
    rows = _rows(capsys)
    assert len([r for r in rows.values() if r["number"] <= 12]) == 12
    assert rows["test"]["ready"] is True


def test_download_then_delete_by_repo_backend_or_slot(amc_env: Path, capsys) -> None:
    payload = {"config.json": b"{}", "model.safetensors": bytes(range(256)) * 1172}
    assert resolve_weights("tiny-weights") == [TINY_WEIGHTS] == resolve_weights("test-weights")
    with pytest.raises(UnknownModel, match=r"no weights named 'nope'.*amc-test/tiny-weights"):
        resolve_weights("nope")
    before = _rows(capsys)["test-weights"]["backends"][0]
    assert before["state"] == "weights_missing" and before["weights"][0]["present"] is False
    assert amc(["models"]) == 0
    assert "amc models download amc-test/tiny-weights" in capsys.readouterr().out
    with HubServer(HubState({"amc-test/tiny-weights": payload})) as hub:
        assert amc(["models", "download", "tiny-weights", "--endpoint", hub.url, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "amc-test/tiny-weights:" in out and "verified" in out
    after = _rows(capsys)["test-weights"]["backends"][0]
    assert after["state"] == "ready" and after["weights"][0]["present"] is True
    assert after["weights"][0]["disk_bytes"] >= len(payload["model.safetensors"])
    assert amc(["models", "delete", "amc-test/tiny-weights"]) == 0
    assert "freed" in capsys.readouterr().out
    assert _rows(capsys)["test-weights"]["backends"][0]["state"] == "weights_missing"
    assert amc(["models", "delete", "amc-test/tiny-weights"]) == 0
    assert "nothing in" in capsys.readouterr().out
