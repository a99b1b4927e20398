"""The orchestrator: plans for each workflow, and real runs through the model worker.

Tiny real backends (:mod:`tests.models.orchestra_backends`) stand in for the generators:
``tiny-broken-gen`` always fails (fallback), ``tiny-gen`` is silent for even seeds (gate
-> seed retry).  The enhance workflow runs the real ``aces`` DSP backend.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.engine import analysis
from app.engine.errors import AudioOutputError, ParameterError
from app.models import orchestrator as orch_mod
from app.models.client import ModelClient
from app.models.orchestrator import Orchestrator, Request, RunCancelled, RunFailed
from app.models.registry import BackendUnavailable
from tests.models.orchestra_backends import EXTRA, synth_music

LOUDNESS_TOLERANCE_LU = 0.2


def orch_env(home: Path) -> dict[str, str]:
    return {"AMC_EXTRA_BACKENDS": EXTRA, "AMC_HOME": str(home), "HF_HOME": str(home / "hf"),
            "HF_HUB_CACHE": str(home / "hf" / "hub"), "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """AMC_HOME and the HF cache in a temp folder, the orchestra backends registered (this process too)."""
    h = tmp_path_factory.mktemp("orch_home")
    mp = pytest.MonkeyPatch()
    for k, v in orch_env(h).items():
        mp.setenv(k, v)
    mp.delenv("AMC_MODELS_PATH", raising=False)
    yield h
    mp.undo()


@pytest.fixture(scope="module")
def oclient(home: Path) -> Iterator[ModelClient]:
    c = ModelClient(device="cpu", log_path=home / "worker.log", env=orch_env(home))
    c.wait_ready(60)
    yield c
    c.close()


@pytest.fixture(scope="module")
def orch(oclient: ModelClient) -> Orchestrator:
    return Orchestrator(oclient)


def _write(path: Path, audio: np.ndarray, sr: int) -> Path:
    sf.write(path, audio.T, sr, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def clean_mix(home: Path) -> Path:
    return _write(home / "clean.wav", synth_music(4.0, 3), 32_000)


@pytest.fixture(scope="module")
def noisy_mix(home: Path) -> Path:
    """A 44.1 kHz mix with hiss (noise floor well above -60 dBFS) and a few clipped runs."""
    rng = np.random.default_rng(5)
    sr = 44_100
    from app.engine.audio_io import resample

    x = resample(synth_music(8.0, 7), 32_000, sr).astype(np.float32)
    x[:, int(1.0 * sr):int(1.6 * sr)] = 0.0  # pauses, where the hiss shows
    x[:, int(3.0 * sr):int(3.6 * sr)] = 0.0
    x[:, int(6.0 * sr):int(6.6 * sr)] = 0.0
    x = x * 2.5 + 0.02 * rng.standard_normal(x.shape).astype(np.float32)
    return _write(home / "noisy.wav", np.clip(x, -1.0, 1.0), sr)


def _lufs(path: Path) -> float:
    audio, sr = sf.read(path, dtype="float32", always_2d=True)
    return float(analysis.integrated_loudness(audio.T, sr))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- plan -----------------------------------------------------------------------------------


def test_plan_generate_lists_backend_reason_and_fallbacks(orch: Orchestrator) -> None:
    plan = orch.plan(Request(prompt="warm lo-fi piano", genre="jazz", duration_s=2.0))
    d = plan.to_dict()
    json.dumps(d)  # serialisable
    assert d["workflow"] == "generate" and d["status"] == "planned"
    gen, master = d["steps"]
    assert (gen["slot"], gen["backend"], gen["task"]) == ("musicgen", "tiny-broken-gen", "text_to_audio")
    assert "first ready backend" in gen["reason"] and gen["gated"]
    assert gen["params"]["prompt"] == "warm lo-fi piano, jazz style" and gen["params"]["duration_s"] == 2.0
    assert {"slot": "musicgen", "backend": "tiny-gen"} in gen["fallbacks"]
    assert (master["name"], master["backend"], master["slot"]) == ("master", "engine", None)
    assert master["params"]["lufs"] == -14.0 and master["params"]["ceiling_dbtp"] == -1.0
    assert all(s["attempts"] == [] and s["status"] == "planned" for s in d["steps"])


def test_plan_sound_design_prompt_prefers_stable_audio_and_says_why_it_was_skipped(orch: Orchestrator) -> None:
    step = orch.plan(Request(prompt="drum loop 120 bpm, 4 seconds")).steps[0]
    assert step.slot == "musicgen"  # stable-audio has no weights here
    assert "Stable Audio first" in step.reason and "stable-audio" in step.reason
    assert step.params["duration_s"] == 4.0  # read from the prompt


def test_plan_enhance_and_style_transfer(orch: Orchestrator, noisy_mix: Path) -> None:
    enh = orch.plan(Request(workflow="enhance", input_path=str(noisy_mix), level="light")).steps
    assert [(s.name, s.slot, s.backend) for s in enh] == [("enhance", "aces", "dsp-enhance"), ("master", None, "engine")]
    assert "master" not in enh[0].params["steps"]  # mastered once, by the engine step
    assert enh[0].params["denoise_strength"] == orch_mod.ENHANCE_LEVELS["light"]["denoise_strength"]
    st = orch.plan(Request(workflow="style_transfer", input_path=str(noisy_mix), target_genre="jazz")).steps
    assert [(s.name, s.slot, s.backend) for s in st] == [("style_transfer", "jukebox", "tiny-style"), ("master", None, "engine")]
    assert st[0].params["target_genre"] == "jazz"


def test_auto_chooses_from_the_request(orch: Orchestrator, clean_mix: Path, noisy_mix: Path) -> None:
    assert orch.plan(Request(prompt="calm piano")).workflow == "generate"
    p = orch.plan(Request(input_path=str(clean_mix), target_genre="jazz"))
    assert p.workflow == "style_transfer" and "target genre" in p.reason
    p = orch.plan(Request(input_path=str(noisy_mix)))
    assert p.workflow == "enhance" and "clipping at" in p.reason and "steady noise" in p.reason, p.reason
    p = orch.plan(Request(input_path=str(clean_mix)))
    assert p.workflow == "master" and [s.name for s in p.steps] == ["master"]


def test_plan_refuses_bad_requests(orch: Orchestrator, clean_mix: Path) -> None:
    with pytest.raises(ParameterError, match="target genre"):
        orch.plan(Request(workflow="style_transfer", input_path=str(clean_mix)))
    with pytest.raises(ParameterError, match="prompt or an input"):
        orch.plan(Request())
    with pytest.raises(ParameterError, match="needs an input"):
        orch.plan(Request(workflow="enhance"))
    with pytest.raises(BackendUnavailable, match="suni"):
        orch.plan(Request(prompt="song", slot="suni"))
    with pytest.raises(ParameterError, match="unknown target"):
        orch.plan(Request(prompt="song", target="vinyl"))


@pytest.mark.parametrize(("prompt", "seconds"), [
    ("30 seconds of calm piano", 30.0), ("2 min ambient", 120.0), ("90s hip hop beat", None),
    ("lo-fi, 80 bpm", None), ("1.5 sec riser", 1.5),
])
def test_duration_from_prompt(prompt: str, seconds: float | None) -> None:
    assert orch_mod.duration_from_prompt(prompt) == seconds


# --- run ------------------------------------------------------------------------------------


def test_generate_falls_back_retries_seeds_and_masters_on_target(orch: Orchestrator, tmp_path: Path) -> None:
    out = tmp_path / "song.wav"
    seen: list[tuple[float, str]] = []
    res = orch.run(Request(prompt="warm piano", duration_s=2.0, seed=10, output_path=str(out)),
                   progress=lambda f, m: seen.append((f, m)))
    plan = res.plan
    gen, master = plan["steps"]
    tries = [(a["backend"], a["seed"], a["outcome"]) for a in gen["attempts"]]
    assert tries == [("tiny-broken-gen", 10, "error"), ("tiny-gen", 10, "gate_failed"), ("tiny-gen", 11, "passed")]
    assert "always fails" in gen["attempts"][0]["error"]
    failed = {x["name"] for x in gen["attempts"][1]["gates"] if not x["passed"]}
    assert "silence" in failed
    assert gen["backend"] == "tiny-gen" and gen["metrics"]["chosen"]["seed"] == 11
    assert all(x["passed"] or x["skipped"] for x in gen["gates"])
    assert {x["name"] for x in gen["gates"] if x["skipped"]} == {"prompt_adherence"}  # no CLAP here
    assert plan["status"] == "done" and gen["status"] == master["status"] == "done"
    assert gen["elapsed_s"] > 0 and master["elapsed_s"] > 0
    # the master: on target (measured here, independently of the engine's report)
    assert res.outputs["audio"] == str(out) and Path(res.outputs["raw"]).is_file()
    assert abs(_lufs(out) + 14.0) <= LOUDNESS_TOLERANCE_LU
    assert {x["name"]: x["passed"] for x in master["gates"]}["loudness_target"]
    assert master["metrics"]["true_peak_dbtp"] <= -1.0 + 1e-6
    fr = [f for f, _ in seen]
    assert fr == sorted(fr) and fr[-1] == 1.0
    assert any(m.startswith("generate:") for _, m in seen) and any(m.startswith("master:") for _, m in seen)


def test_gate_failures_exhaust_seeds_then_fail_with_the_plan(orch: Orchestrator, tmp_path: Path) -> None:
    out = tmp_path / "never.wav"
    req = Request(prompt="x", duration_s=1.0, seed=4, backend="tiny-gen", max_seed_retries=1, output_path=str(out))
    # seeds 4 then 5: 5 is odd and passes; with retries=0 only the silent seed 4 is tried
    with pytest.raises(RunFailed, match="every seed") as ei:
        orch.run(Request(**{**req.to_dict(), "max_seed_retries": 0}))
    gen = ei.value.plan["steps"][0] if ei.value.plan else None
    assert gen is not None and [a["outcome"] for a in gen["attempts"]] == ["gate_failed"]
    assert gen["fallbacks"] == []  # a pinned backend has none
    assert not out.exists()


def test_enhance_with_the_real_aces_backend(orch: Orchestrator, noisy_mix: Path, tmp_path: Path) -> None:
    before = _sha(noisy_mix)
    out = tmp_path / "enhanced.wav"
    res = orch.run(Request(workflow="enhance", input_path=str(noisy_mix), output_path=str(out), target="apple"))
    enh, master = res.plan["steps"]
    assert enh["backend"] == "dsp-enhance" and enh["status"] == "done"
    assert enh["metrics"]["noise_floor_after_dbfs"] < enh["metrics"]["noise_floor_before_dbfs"] - 6
    assert enh["metrics"]["clipped_samples_fixed"] > 0
    assert abs(_lufs(out) + 16.0) <= LOUDNESS_TOLERANCE_LU
    assert master["metrics"]["target_lufs"] == -16.0 and master["metrics"]["within_spec"]
    assert _sha(noisy_mix) == before  # the input is never touched


def test_style_transfer_runs_then_masters(orch: Orchestrator, clean_mix: Path, tmp_path: Path) -> None:
    out = tmp_path / "jazz.flac"
    res = orch.run(Request(workflow="style_transfer", input_path=str(clean_mix), target_genre="jazz",
                           output_path=str(out), output_format="flac", target="broadcast"))
    st = res.plan["steps"][0]
    assert st["backend"] == "tiny-style" and st["attempts"][0]["outcome"] == "passed"
    assert {g["name"] for g in st["gates"]} >= {"silence", "clipping", "spectral_balance"}
    assert abs(_lufs(out) + 23.0) <= LOUDNESS_TOLERANCE_LU


def test_cancel_stops_the_worker_job_and_writes_nothing(orch: Orchestrator, oclient: ModelClient, tmp_path: Path) -> None:
    out = tmp_path / "cancelled.wav"
    cancel = threading.Event()
    t_set: list[float] = []

    def progress(f: float, msg: str) -> None:
        if msg.startswith("generate: chunk 2") and not cancel.is_set():
            t_set.append(time.monotonic())
            cancel.set()

    req = Request(prompt="slow", duration_s=4.0, seed=11, backend="tiny-gen", output_path=str(out),
                  params={"step_s": 0.25})
    with pytest.raises(RunCancelled):
        orch.run(req, progress=progress, cancel=cancel)
    assert t_set and time.monotonic() - t_set[0] < 2.0
    assert not out.exists()
    assert not list(tmp_path.iterdir())
    # the worker is free again: a new job runs at once
    oclient.wait_ready(5)
    res = orch.run_job("musicgen", "text_to_audio", params={"duration_s": 0.5, "seed": 1},
                       backend="tiny-gen", output_dir=tmp_path / "again")
    assert Path(res.outputs["audio"]).is_file()


def test_cancel_during_the_master_leaves_no_partial_file(orch: Orchestrator, clean_mix: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.wav"
    cancel = threading.Event()

    def progress(f: float, msg: str) -> None:
        if msg.startswith("master:") and f > 0.3:
            cancel.set()

    with pytest.raises(RunCancelled):
        orch.run(Request(workflow="master", input_path=str(clean_mix), output_path=str(out)),
                 progress=progress, cancel=cancel)
    assert not list(tmp_path.iterdir())  # no output, no temp file


def test_output_may_not_be_the_input(orch: Orchestrator, clean_mix: Path) -> None:
    before = _sha(clean_mix)
    with pytest.raises(AudioOutputError):
        orch.run(Request(workflow="master", input_path=str(clean_mix), output_path=str(clean_mix), force=True))
    assert _sha(clean_mix) == before


def test_orchestrator_module_imports_without_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, app.models.orchestrator, app.models.gates, app.models.cli_jobs; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_prompt_adherence_gate_is_skipped_without_clap_weights_and_acts_on_a_score(
    orch: Orchestrator, home: Path, tmp_path: Path
) -> None:
    req = Request(prompt="warm piano", duration_s=1.0, seed=11, backend="tiny-gen", master=False,
                  output_path=str(tmp_path / "a.wav"))
    step = orch.run(req).plan["steps"][0]
    gate = {x["name"]: x for x in step["gates"]}["prompt_adherence"]
    assert gate["skipped"] and not gate["passed"]
    assert gate["detail"] == "skipped: CLAP weights missing" and gate["value"] is None
    assert "prompt adherence: skipped (CLAP weights missing)" in step["gate_summary"]
    assert "duration: passed" in step["gate_summary"]
    clap = home / "models" / "laion" / "clap-htsat-unfused"
    clap.mkdir(parents=True)
    (clap / "config.json").write_text("{}")  # "present" to the weights manager; only the test double reads it
    try:
        req = Request(**{**req.to_dict(), "output_path": str(tmp_path / "a2.wav")})
        gate = {x["name"]: x for x in orch.run(req).plan["steps"][0]["gates"]}["prompt_adherence"]
        assert not gate["skipped"] and gate["passed"] and gate["value"] == 0.5
        bad = Request(**{**req.to_dict(), "prompt": "dark techno", "max_seed_retries": 0,
                         "output_path": str(tmp_path / "b.wav")})
        with pytest.raises(RunFailed) as ei:
            orch.run(bad)
        assert ei.value.plan is not None
        (att,) = ei.value.plan["steps"][0]["attempts"]
        failed = [x["name"] for x in att["gates"] if not x["passed"]]
        assert failed == ["prompt_adherence"]
    finally:
        shutil.rmtree(home / "models" / "laion")


def test_real_musicgen_backend_with_random_tiny_weights_is_rejected_by_the_gates(
    orch: Orchestrator, home: Path, tmp_path: Path
) -> None:
    """The real transformers-musicgen backend through the worker: params and seeds reach it, and
    the buzz a randomly initialised tiny MusicGen makes fails the spectral gate on every seed."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.models.backends import tiny_models

    tiny_models.build_musicgen(home / "models" / "facebook/musicgen-small")
    out = tmp_path / "never.wav"
    req = Request(prompt="warm piano", duration_s=0.5, seed=3, backend="transformers-musicgen",
                  max_seed_retries=1, output_path=str(out))
    assert orch.plan(req).steps[0].backend == "transformers-musicgen"
    with pytest.raises(RunFailed) as ei:
        orch.run(req)
    assert ei.value.plan is not None
    attempts = ei.value.plan["steps"][0]["attempts"]
    assert [(a["seed"], a["outcome"]) for a in attempts] == [(3, "gate_failed"), (4, "gate_failed")]
    assert all(a["metrics"]["seed"] == a["seed"] and a["metrics"]["prompt"] == "warm piano" for a in attempts)
    assert all(not {g["name"]: g["passed"] for g in a["gates"]}["spectral_balance"] for a in attempts)
    assert not out.exists()


def test_prompt_adherence_gate_scores_with_the_bundled_clap_backend(tmp_path: Path) -> None:
    """No test double: the bundled musiclm backend's ``clap_similarity`` task on a tiny CLAP."""
    pytest.importorskip("transformers")
    from tests.models.backends import tiny_models

    home = tmp_path / "home"
    tiny_models.build_clap(home / "models" / "laion" / "clap-htsat-unfused")
    env = {**orch_env(home), "AMC_EXTRA_BACKENDS": EXTRA.replace(
        ",tests.models.orchestra_backends:TinyPromptScorer", "")}
    assert "TinyPromptScorer" not in env["AMC_EXTRA_BACKENDS"]
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    mp.delenv("AMC_MODELS_PATH", raising=False)
    client = ModelClient(device="cpu", log_path=home / "worker.log", env=env)
    try:
        client.wait_ready(60)
        req = Request(prompt="warm piano", duration_s=1.0, seed=11, backend="tiny-gen", master=False,
                      max_seed_retries=0, output_path=str(tmp_path / "a.wav"))
        try:
            gates = Orchestrator(client).run(req).plan["steps"][0]["gates"]
        except RunFailed as exc:  # a random tiny CLAP may score below the threshold
            assert exc.plan is not None
            gates = exc.plan["steps"][0]["attempts"][-1]["gates"]
        gate = {x["name"]: x for x in gates}["prompt_adherence"]
        assert not gate["skipped"], gate["detail"]
        assert isinstance(gate["value"], float) and -1.0 <= gate["value"] <= 1.0
        assert gate["detail"].startswith("CLAP similarity")
    finally:
        client.close()
        mp.undo()
