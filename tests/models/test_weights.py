"""Finding, downloading (resume + verify), measuring and deleting weights against a local hub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.models import weights
from app.models.backends.base import WeightsSpec
from app.models.weights import WeightsError
from tests.models.hub_server import COMMIT, HubServer, HubState

REPO_ID = "amc-test/tiny-weights"


@pytest.fixture
def payload() -> dict[str, bytes]:
    rng = __import__("numpy").random.default_rng(5)
    return {"config.json": b'{"model_type": "tiny"}', "model.safetensors": rng.bytes(300_000),
            "extra/readme.txt": b"not wanted"}


def test_find_in_models_dir_then_models_path_then_hf_cache(amc_env: Path, tmp_path: Path, monkeypatch) -> None:
    repo_id = "amc-test/found"
    spec = WeightsSpec(repo_id, 10, "MIT", "u", files=("config.json",))
    assert weights.find_weights(spec) is None
    # 3. the Hugging Face cache layout
    snap = tmp_path / "hf" / "hub" / "models--amc-test--found" / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    refs = snap.parents[1] / "refs"
    refs.mkdir()
    (refs / "main").write_text(COMMIT)
    assert weights.find_weights(spec) == snap
    assert weights.find_weights(WeightsSpec(repo_id, 10, "MIT", "u", files=("config.json", "missing.bin"))) is None
    assert weights.find_weights(WeightsSpec(repo_id, 10, "MIT", "u")) == snap  # config.json marker
    # 2. a user folder
    user = tmp_path / "user_models"
    (user / repo_id).mkdir(parents=True)
    (user / repo_id / "config.json").write_text("{}")
    monkeypatch.setenv("AMC_MODELS_PATH", str(user))
    assert weights.find_weights(spec) == user / repo_id
    # 1. the app's models dir wins
    ours = amc_env / "models" / repo_id
    ours.mkdir(parents=True)
    (ours / "config.json").write_text("{}")
    assert weights.find_weights(spec) == ours


def test_download_resumes_verifies_and_deletes(amc_env: Path, payload: dict[str, bytes], monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 16_384)  # so a cut leaves bytes to resume from
    state = HubState({REPO_ID: payload}, cut_after=100_000)
    spec = WeightsSpec(REPO_ID, 300_022, "MIT", "u", files=("config.json", "model.safetensors"))
    seen: list[tuple[int, int, str]] = []
    with HubServer(state) as hub:
        folder = weights.download(spec, endpoint=hub.url, progress=lambda d, t, m: seen.append((d, t, m)))
    assert folder == amc_env / "models" / REPO_ID
    assert (folder / "model.safetensors").read_bytes() == payload["model.safetensors"]
    assert not (folder / "extra").exists()  # only the spec's files
    gets = [r for r in state.requests if r[0] == "GET" and r[1].endswith("model.safetensors")]
    assert len(gets) == 2 and gets[0][2] is None
    assert gets[1][2] is not None and gets[1][2].startswith("bytes=") and int(gets[1][2][6:].split("-")[0]) > 0
    assert seen[0] == (0, 300_022, "starting") and seen[-1] == (300_022, 300_022, "verified")
    assert weights.find_weights(spec) == folder
    assert weights.verify(folder) == []
    size = weights.disk_usage(folder)
    assert size >= 300_022
    # a changed file is caught by verify and makes the folder incomplete
    (folder / "config.json").write_text('{"model_type": "other!"}')
    assert weights.verify(folder) == ["config.json"]
    assert weights.find_weights(spec) is None
    before = weights.disk_usage(folder)
    assert weights.delete(REPO_ID) == before
    assert not folder.exists() and not (amc_env / "models" / "amc-test").exists()
    assert weights.delete(REPO_ID) == 0


def test_corrupt_download_is_rejected_and_removed(amc_env: Path, payload: dict[str, bytes]) -> None:
    state = HubState({REPO_ID: payload}, corrupt={"model.safetensors"})
    spec = WeightsSpec(REPO_ID, 300_022, "MIT", "u", files=("config.json", "model.safetensors"))
    with HubServer(state) as hub, pytest.raises(WeightsError, match=r"model\.safetensors is corrupt"):
        weights.download(spec, endpoint=hub.url)
    assert not (amc_env / "models" / REPO_ID / "model.safetensors").exists()
    assert weights.find_weights(spec) is None


def test_download_errors_say_what_is_wrong(amc_env: Path, payload: dict[str, bytes]) -> None:
    with HubServer(HubState({REPO_ID: payload})) as hub:
        with pytest.raises(WeightsError, match="has no file"):
            weights.download(WeightsSpec(REPO_ID, 1, "MIT", "u", files=("nope.bin",)), endpoint=hub.url)
        with pytest.raises(WeightsError, match="cannot reach the model hub for amc-test/absent"):
            weights.download(WeightsSpec("amc-test/absent", 1, "MIT", "u"), endpoint=hub.url)


def test_delete_refuses_paths_outside_the_models_dir(amc_env: Path) -> None:
    for bad in ("../logs", ".", "a/../../x"):
        with pytest.raises(WeightsError, match="refusing"):
            weights.delete(bad)
    assert (amc_env / "logs").exists() or True
    assert os.path.isdir(amc_env)
