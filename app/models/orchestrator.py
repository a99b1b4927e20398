"""The chain orchestrator: turns a musician's request into a plan of model jobs and runs it.

Workflows (from the seed):

- ``generate``: generator slot (MusicGen, Stable Audio, ...) -> quality gates -> master
- ``enhance``: ACES slot (repair: de-clip, de-click, denoise, EQ) -> master
- ``style_transfer``: Jukebox slot (melody-conditioned regeneration in a genre) -> gates -> master
- ``master``: the engine's mastering chain only
- ``auto``: picks one of the above from the request: a prompt without audio -> generate;
  audio + ``target_genre`` -> style_transfer; audio -> an engine analysis decides between
  enhance (defects found) and master (a clean mix).

:meth:`Orchestrator.plan` returns the :class:`Plan` *before* anything runs: every step with
its slot, the backend the registry resolved (and why), the task, its params and the reason
for the step.  :meth:`Orchestrator.run` executes it and returns the same plan with per-step
figures: gate results, metrics, elapsed time and every attempt.  Generative steps are
checked by :mod:`app.models.gates`; a failed gate retries with the next seed (up to
``Request.max_seed_retries``), then falls back to the next ready backend (a backend error
falls back at once: another seed does not cure a missing file).  The final master runs the
engine's :func:`~app.engine.mastering.chain.master_file` in this process (no torch) and is
itself gated against its delivery target.

Model steps run as :class:`~app.models.protocol.Job` s through a
:class:`~app.models.client.ModelClient`, so the CLI, the Studio and the service share one
code path.  This module never imports torch.

Threads: :meth:`Orchestrator.run` blocks; call it off the UI thread.  ``progress`` is called
on the client's reader thread during model steps and on the calling thread otherwise;
``cancel`` (a ``threading.Event``) may be set from any thread.
"""

from __future__ import annotations

import logging
import re
import secrets
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from app.engine.errors import AmcError, AudioOutputError, ParameterError
from app.models import gates as g
from app.models import registry

if TYPE_CHECKING:
    from app.models.client import JobHandle, ModelClient
    from app.models.protocol import Result

log = logging.getLogger("amc.models.orchestrator")

Workflow = Literal["auto", "generate", "enhance", "style_transfer", "master"]
WORKFLOWS: tuple[str, ...] = ("auto", "generate", "enhance", "style_transfer", "master")
ProgressFn = Callable[[float, str], None]

#: Generator slots tried in this order unless the prompt or the request says otherwise.
GENERATOR_SLOTS: tuple[str, ...] = ("musicgen", "stable-audio", "suni", "mureka")
#: Prompt words that make Stable Audio (loops, one-shots, effects) the first choice.
SOUND_DESIGN_WORDS = ("loop", "sfx", "sound effect", "one-shot", "one shot", "foley", "ambience")
DEFAULT_GENERATE_S = 10.0
MAX_GENERATE_S = 600.0
DEFAULT_MAX_SEED_RETRIES = 2
#: How long a cancelled job may take to confirm before we stop waiting for it.
CANCEL_CONFIRM_S = 10.0
#: Job wait poll: bounds how fast a set cancel event is noticed.
POLL_S = 0.05
#: ACES repair strength per enhancement level (spectral denoise strength, max reduction dB).
ENHANCE_LEVELS: dict[str, dict[str, float]] = {
    "light": {"denoise_strength": 0.5, "max_reduction_db": 12.0},
    "moderate": {"denoise_strength": 1.0, "max_reduction_db": 24.0},
    "aggressive": {"denoise_strength": 1.6, "max_reduction_db": 36.0},
}
ENHANCE_STEPS = ("declip", "declick", "denoise", "eq")  # mastering is the engine step after it
#: The musiclm task that scores audio against a prompt (params {"prompt"}; metrics
#: {"clap_similarity": cosine}); used by the prompt-adherence gate once the backend has it.
CLAP_TASK = "clap_similarity"
#: Share of the progress bar a step gets, by kind.
STEP_WEIGHTS = {"generate": 0.7, "style_transfer": 0.7, "enhance": 0.5, "analyze": 0.1, "master": 0.3}


class RunCancelled(AmcError):
    """The run was cancelled; nothing was written to the output."""

    exit_code = 130


class RunFailed(AmcError):
    """A step could not produce a usable result with any seed or backend; the plan says why."""

    exit_code = 5

    def __init__(self, message: str, plan: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.plan = plan


@dataclass(frozen=True)
class Request:
    """What the musician asked for (CLI flags, a Studio dialog, an API body).

    Durations in seconds; ``target``/``lufs``/``ceiling_dbtp``/``style``/``level`` go to
    the engine's mastering chain; ``level`` also sets the ACES repair strength.
    """

    workflow: Workflow = "auto"
    prompt: str = ""
    input_path: str | None = None
    output_path: str | None = None  # the final file; empty: "<work dir>/final.wav"
    target_genre: str = ""
    genre: str = ""
    mood: str = ""
    duration_s: float | None = None
    seed: int | None = None
    slot: str | None = None  # generator slot to use (else prompt analysis picks the order)
    backend: str | None = None  # a backend name; pins the first model step to it
    target: str = "streaming"
    lufs: float | None = None
    ceiling_dbtp: float | None = None
    style: str = "balanced"
    level: str = "moderate"
    output_format: str = "wav24"
    master: bool = True
    max_seed_retries: int = DEFAULT_MAX_SEED_RETRIES
    fallback: bool = True
    work_dir: str | None = None
    force: bool = False
    params: dict[str, Any] = field(default_factory=dict)  # backend options for the model step (steps, model, ...)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Attempt:
    """One try of a model step: which backend and seed, and how it ended."""

    backend: str
    seed: int | None
    outcome: Literal["passed", "gate_failed", "error", "cancelled"] = "error"
    job_id: str = ""
    error: str = ""
    gates: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0


@dataclass
class Step:
    """One step of a plan; the figures fields are filled in by :meth:`Orchestrator.run`.

    ``slot`` None and ``backend`` "engine" mark the in-process mastering step.
    ``fallbacks`` are the further ready backends tried if this one fails its gates.
    """

    name: str  # "generate", "enhance", "style_transfer", "master"
    slot: str | None
    backend: str
    task: str
    params: dict[str, Any]
    reason: str
    gated: bool = False
    fallbacks: list[dict[str, str]] = field(default_factory=list)  # [{slot, backend}]
    # figures (after run)
    status: Literal["planned", "done", "failed", "cancelled"] = "planned"
    gates: list[dict[str, Any]] = field(default_factory=list)
    #: which gates ran and how they ended, skipped ones named as such (see gates.summary)
    gate_summary: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    elapsed_s: float | None = None


@dataclass
class Plan:
    """The chain for one request: the workflow, why it was chosen, and its steps in order."""

    run_id: str
    workflow: str
    reason: str
    request: Request
    steps: list[Step]
    device: str
    max_seed_retries: int
    status: Literal["planned", "done", "failed", "cancelled"] = "planned"
    elapsed_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the plan (and its figures once run)."""
        d = asdict(self)
        return g._json_safe(d)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class RunResult:
    """``outputs`` by role ("audio": the final file, "raw": the unmastered one, ...) and the plan with figures."""

    outputs: dict[str, str]
    plan: dict[str, Any]


# --- planning ---------------------------------------------------------------------------


# full unit words only: "90s hip hop" is a decade, not a length
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(sec|secs|seconds|second|min|mins|minutes|minute)\b", re.IGNORECASE)


def duration_from_prompt(prompt: str) -> float | None:
    """``"30 seconds of ..."`` -> 30.0; ``"2 min"`` -> 120.0; None when the prompt names no length."""
    m = _DURATION_RE.search(prompt)
    if not m:
        return None
    value = float(m.group(1))
    return value * 60.0 if m.group(2).lower().startswith("min") else value


def generator_slot_order(prompt: str) -> tuple[list[str], str]:
    """Generator slots in the order a prompt suggests, and why."""
    low = prompt.lower()
    hit = next((w for w in SOUND_DESIGN_WORDS if w in low), None)
    if hit is not None:
        order = ["stable-audio", *[s for s in GENERATOR_SLOTS if s != "stable-audio"]]
        return order, f"the prompt asks for sound design ({hit!r}): Stable Audio first"
    return list(GENERATOR_SLOTS), "a music prompt: MusicGen first"


def full_prompt(request: Request) -> str:
    parts = [request.prompt.strip()]
    if request.genre and request.genre.lower() not in request.prompt.lower():
        parts.append(f"{request.genre} style")
    if request.mood and request.mood.lower() not in request.prompt.lower():
        parts.append(f"{request.mood} mood")
    return ", ".join(p for p in parts if p)


def _ready_backends(slot: str, task: str, device: str) -> list[tuple[str, str]]:
    """``(backend name, status detail)`` of every ready backend of ``slot`` that does ``task``."""
    from app.models import weights

    try:
        _, entries = registry.get_slot(slot)
    except registry.BackendUnavailable:
        return []
    out = []
    for entry in entries:
        if not isinstance(entry, type):
            continue
        st = registry.entry_status(entry, device=device, find_weights=weights.find_weights)
        if st.ready and (not entry.tasks or task in entry.tasks):
            out.append((entry.key(), st.detail))
    return out


def _resolve(slot: str, task: str, device: str, backend: str | None) -> tuple[str, str]:
    from app.models import weights

    chosen, why = registry.resolve(slot, device=device, backend=backend, task=task, find_weights=weights.find_weights)
    return chosen.key(), why


def _master_params(request: Request) -> dict[str, Any]:
    from app.engine.mastering.plan import TARGETS

    if request.target not in TARGETS and request.target != "custom":
        raise ParameterError(f"unknown target {request.target!r}; choose one of {', '.join([*TARGETS, 'custom'])}")
    base = TARGETS.get(request.target)
    lufs = request.lufs if request.lufs is not None else (base.lufs if base else None)
    ceiling = request.ceiling_dbtp if request.ceiling_dbtp is not None else (base.ceiling_dbtp if base else None)
    if lufs is None or ceiling is None:
        raise ParameterError("a custom target needs both lufs and ceiling_dbtp")
    return {
        "target": request.target, "lufs": lufs, "ceiling_dbtp": ceiling, "style": request.style,
        "level": request.level, "output_format": request.output_format,
    }


def _auto_input_choice(path: Path) -> tuple[str, str]:
    """``(workflow, reason)`` for an input without a target genre.

    The ACES repair's own confident detectors decide (clipping at any level, clicks, DC,
    mains hum, steady noise): a file goes to repair only when the repair would act on it,
    so a clean release is mastered, never "repaired".
    """
    from app.engine import audio_io
    from app.models.backends import aces

    audio, sr = audio_io.read(path)
    defects = aces.detect(audio, sr)
    if defects:
        return "enhance", "input audio with defects (" + ", ".join(defects) + "): ACES repair, then master"
    return "master", "input audio is clean (no clipping, clicks, DC, hum or steady noise found): master only"


class Orchestrator:
    """Plans and runs the chain's workflows on a :class:`ModelClient`'s worker."""

    def __init__(self, client: ModelClient | None = None, *, device: str | None = None) -> None:
        self.client = client
        self._device = device

    @property
    def device(self) -> str:
        """The device backends are checked against: the worker's, else "cpu"."""
        if self._device:
            return self._device
        hello = getattr(self.client, "hello", None)
        return hello.device if hello is not None else "cpu"

    # --- plan -----------------------------------------------------------------------------

    def plan(self, request: Request) -> Plan:
        """The steps ``request`` will run, resolved against this machine; runs nothing heavy.

        Raises :class:`ParameterError` for an inconsistent request and
        :class:`~app.models.registry.BackendUnavailable` when a needed slot has no ready backend.
        """
        if request.workflow not in WORKFLOWS:
            raise ParameterError(f"unknown workflow {request.workflow!r}; choose one of {', '.join(WORKFLOWS)}")
        if request.level not in ENHANCE_LEVELS:
            raise ParameterError(f"unknown level {request.level!r}; choose one of {', '.join(ENHANCE_LEVELS)}")
        if request.max_seed_retries < 0:
            raise ParameterError("max_seed_retries must be >= 0")
        inp = Path(request.input_path) if request.input_path else None
        if inp is not None and not inp.is_file():
            from app.engine.errors import AudioInputError

            raise AudioInputError(f"{inp} does not exist or is not a file")
        workflow, reason = self._choose(request, inp)
        master_params = _master_params(request)
        steps: list[Step] = []
        device = self.device
        if workflow == "generate":
            steps.append(self._plan_generate(request, device))
        elif workflow == "enhance":
            params = {"steps": list(ENHANCE_STEPS), **ENHANCE_LEVELS[request.level], **request.params}
            name, why = _resolve("aces", "enhance", device, request.backend)
            steps.append(Step("enhance", "aces", name, "enhance", params,
                              f"repair before mastering ({request.level}); backend: {why}",
                              fallbacks=self._fallbacks("aces", "enhance", device, name, request)))
        elif workflow == "style_transfer":
            if not request.target_genre.strip():
                raise ParameterError("style_transfer needs a target genre (--target-genre)")
            params = {**request.params, "target_genre": request.target_genre, "prompt": request.prompt}
            if request.duration_s is not None:
                params["duration_s"] = float(request.duration_s)
            name, why = _resolve("jukebox", "style_transfer", device, request.backend)
            steps.append(Step("style_transfer", "jukebox", name, "style_transfer", params,
                              f"regenerate the input as {request.target_genre}; backend: {why}", gated=True,
                              fallbacks=self._fallbacks("jukebox", "style_transfer", device, name, request)))
        if request.master or workflow == "master":
            steps.append(Step("master", None, "engine", "master", master_params,
                              f"deliver to {request.target} ({master_params['lufs']:g} LUFS, "
                              f"{master_params['ceiling_dbtp']:g} dBTP) with the engine's mastering chain",
                              gated=True))
        return Plan(uuid.uuid4().hex[:12], workflow, reason, request, steps, device, request.max_seed_retries)

    def _choose(self, request: Request, inp: Path | None) -> tuple[str, str]:
        wf = request.workflow
        if wf in ("enhance", "style_transfer", "master") and inp is None:
            raise ParameterError(f"the {wf} workflow needs an input audio file")
        if wf == "generate" and not request.prompt.strip():
            raise ParameterError("the generate workflow needs a prompt")
        if wf != "auto":
            return wf, f"asked for {wf}"
        if inp is None:
            if not request.prompt.strip():
                raise ParameterError("auto needs a prompt or an input audio file")
            return "generate", "a prompt and no input audio: generate, gate, master"
        if request.target_genre.strip():
            return "style_transfer", f"input audio and a target genre ({request.target_genre}): style transfer"
        return _auto_input_choice(inp)

    def _plan_generate(self, request: Request, device: str) -> Step:
        prompt = full_prompt(request)
        duration = request.duration_s if request.duration_s is not None else duration_from_prompt(request.prompt)
        duration = float(duration if duration is not None else DEFAULT_GENERATE_S)
        if not 0.1 <= duration <= MAX_GENERATE_S:
            raise ParameterError(f"duration must be within 0.1-{MAX_GENERATE_S:g} s, got {duration:g}")
        params: dict[str, Any] = {**request.params, "prompt": prompt, "duration_s": duration}
        if request.slot:
            slots, order_why = [request.slot], f"slot {request.slot} asked for"
        else:
            slots, order_why = generator_slot_order(request.prompt)
        reasons: list[str] = []
        for slot in slots:
            try:
                name, why = _resolve(slot, "text_to_audio", device, request.backend)
            except registry.BackendUnavailable as exc:
                reasons.append(str(exc))
                continue
            skipped = f" (skipped: {' | '.join(reasons)})" if reasons else ""
            return Step("generate", slot, name, "text_to_audio", params,
                        f"{order_why}{skipped}; {slot}: {why}", gated=True,
                        fallbacks=self._fallbacks(slot, "text_to_audio", device, name, request,
                                                  more_slots=slots[slots.index(slot) + 1:]))
        raise registry.BackendUnavailable("no generator can run here: " + " | ".join(reasons))

    def _fallbacks(
        self, slot: str, task: str, device: str, chosen: str, request: Request, more_slots: list[str] | None = None
    ) -> list[dict[str, str]]:
        if not request.fallback or request.backend:
            return []
        out = [{"slot": slot, "backend": n} for n, _ in _ready_backends(slot, task, device) if n != chosen]
        for s in more_slots or []:
            out.extend({"slot": s, "backend": n} for n, _ in _ready_backends(s, task, device))
        return out

    # --- run ------------------------------------------------------------------------------

    def run(
        self,
        request: Request | Plan,
        *,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> RunResult:
        """Plan (unless given a plan) and run; return the outputs and the plan with figures.

        Raises :class:`RunCancelled` (nothing written), :class:`RunFailed` (every seed and
        backend failed; ``exc.plan`` holds the figures) or the engine's errors.
        """
        plan = request if isinstance(request, Plan) else self.plan(request)
        req = plan.request
        cancel = cancel or threading.Event()
        report = progress or (lambda f, m: None)
        out_path = Path(req.output_path) if req.output_path else None
        inp = Path(req.input_path) if req.input_path else None
        own_work = req.work_dir is None
        from app import config

        work = Path(req.work_dir) if req.work_dir else config.cache_dir() / "runs" / plan.run_id
        work.mkdir(parents=True, exist_ok=True)
        if out_path is None:
            out_path = work / "final.wav"
        if inp is not None and out_path.resolve() == inp.resolve():
            raise AudioOutputError(f"the output {out_path} is the input: choose another name")
        from app.engine import audio_io

        audio_io.check_output_path(out_path, protect=[inp] if inp else [], force=req.force)
        weights_total = sum(STEP_WEIGHTS.get(s.name, 0.3) for s in plan.steps) or 1.0
        done_w = 0.0
        t0 = time.perf_counter()
        current: Path | None = inp
        outputs: dict[str, str] = {}
        try:
            for i, step in enumerate(plan.steps):
                if cancel.is_set():
                    raise RunCancelled("cancelled")
                w = STEP_WEIGHTS.get(step.name, 0.3) / weights_total
                base = done_w
                last = [0.0]

                def step_progress(f: float, msg: str, _b: float = base, _w: float = w, _n: str = step.name,
                                  _last: list[float] = last) -> None:
                    _last[0] = max(_last[0], min(max(f, 0.0), 1.0))  # retries never move the bar back
                    report(_b + _w * _last[0], f"{_n}: {msg}")

                t_step = time.perf_counter()
                try:
                    if step.name == "master":
                        assert current is not None
                        self._run_master(step, current, out_path, work, step_progress, cancel, req)
                        outputs["audio"] = str(out_path)
                    else:
                        current = self._run_model_step(step, i, current, work, step_progress, cancel, req)
                        outputs["raw" if step.gated else step.name] = str(current)
                finally:
                    step.elapsed_s = time.perf_counter() - t_step
                done_w += w
            if "audio" not in outputs:  # no master: deliver the last model output as it is
                assert current is not None
                _copy_atomic(current, out_path, force=req.force)
                outputs["audio"] = str(out_path)
        except (RunCancelled, KeyboardInterrupt):
            plan.status = "cancelled"
            plan.elapsed_s = time.perf_counter() - t0
            for s in plan.steps:
                if s.status == "planned":
                    s.status = "cancelled"
            if own_work:
                shutil.rmtree(work, ignore_errors=True)
            raise
        except RunFailed as exc:
            plan.status = "failed"
            plan.elapsed_s = time.perf_counter() - t0
            exc.plan = plan.to_dict()
            raise
        except BaseException as exc:
            plan.status = "failed"
            plan.elapsed_s = time.perf_counter() - t0
            if isinstance(exc, AmcError):
                exc.plan = plan.to_dict()  # type: ignore[attr-defined]  # the figures so far, for reports
            raise
        plan.status = "done"
        plan.elapsed_s = time.perf_counter() - t0
        report(1.0, "done")
        return RunResult(outputs, plan.to_dict())

    def run_job(
        self,
        slot: str,
        task: str,
        *,
        params: Mapping[str, Any] | None = None,
        inputs: Mapping[str, str | Path] | None = None,
        output_dir: str | Path = "",
        backend: str | None = None,
        seed: int | None = None,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> Result:
        """Run one job on the worker, honouring ``cancel``; raises :class:`RunCancelled` or ``JobFailed``."""
        from app.models.protocol import Job

        if self.client is None:
            raise AmcError("the orchestrator has no model client to run jobs on")
        job = Job.create(slot, task, output_dir=output_dir, params=dict(params or {}),
                         inputs={k: str(v) for k, v in (inputs or {}).items()}, backend=backend, seed=seed)
        return self._wait(self.client.submit(job, on_event=_progress_forwarder(progress)), cancel)

    def _wait(self, handle: JobHandle, cancel: threading.Event | None) -> Result:
        from app.models.client import JobFailed

        try:
            while True:
                if cancel is not None and cancel.is_set():
                    raise RunCancelled("cancelled")
                try:
                    return handle.wait(POLL_S)
                except TimeoutError:
                    continue
                except JobFailed as exc:
                    if exc.kind == "cancelled":
                        raise RunCancelled("cancelled") from exc
                    raise
        except BaseException:
            if not handle.done:  # Ctrl+C, a set cancel event: stop the worker's job too
                handle.cancel()
                try:
                    handle.wait(CANCEL_CONFIRM_S)
                except Exception:
                    pass
            raise

    def _run_model_step(
        self, step: Step, index: int, source: Path | None, work: Path, progress: ProgressFn,
        cancel: threading.Event, req: Request,
    ) -> Path:
        from app.models.client import JobFailed

        candidates = [{"slot": step.slot or "", "backend": step.backend}, *step.fallbacks]
        seeds_per_backend = 1 + (req.max_seed_retries if step.gated else 0)
        base_seed = req.seed if req.seed is not None else secrets.randbelow(2**31 - 1000)
        requested_s = step.params.get("duration_s") if step.name == "generate" else None
        failures: list[str] = []
        n = 0
        for ci, cand in enumerate(candidates):
            for k in range(seeds_per_backend):
                n += 1
                seed = base_seed + k if step.gated else req.seed
                params = dict(step.params)
                if seed is not None:
                    params["seed"] = seed
                att = Attempt(cand["backend"], seed)
                step.attempts.append(att)
                t_att = time.perf_counter()
                out_dir = work / f"{index:02d}-{step.name}" / f"attempt-{n:02d}"
                if n > 1:
                    progress(0.0, f"attempt {n}: {cand['backend']} seed {seed}")
                try:
                    res = self.run_job(cand["slot"], step.task, params=params,
                                       inputs={"audio": source} if source is not None else None,
                                       output_dir=out_dir, backend=cand["backend"], seed=seed,
                                       progress=progress, cancel=cancel)
                except RunCancelled:
                    att.outcome, att.elapsed_s = "cancelled", time.perf_counter() - t_att
                    step.status = "cancelled"
                    raise
                except JobFailed as exc:
                    att.outcome, att.error = "error", str(exc)
                    att.elapsed_s = time.perf_counter() - t_att
                    failures.append(f"{cand['backend']} (seed {seed}): {exc}")
                    log.warning("step %s: %s failed: %s", step.name, cand["backend"], exc)
                    break  # a backend error: the next backend, not the next seed
                att.job_id, att.metrics, att.outputs = res.job_id, dict(res.metrics), dict(res.outputs)
                audio = res.outputs.get("raw") if step.name == "style_transfer" else None
                audio = audio or res.outputs.get("audio")
                if audio is None:
                    att.outcome, att.error = "error", f"the backend produced no audio (outputs: {sorted(res.outputs)})"
                    att.elapsed_s = time.perf_counter() - t_att
                    failures.append(f"{cand['backend']}: {att.error}")
                    break
                if step.gated:
                    if cancel.is_set():
                        raise RunCancelled("cancelled")
                    results = self._gate_generated(Path(audio), requested_s, step, cancel)
                    att.gates = [r.to_dict() for r in results]
                    att.elapsed_s = time.perf_counter() - t_att
                    if not g.all_passed(results):
                        att.outcome = "gate_failed"
                        why = "; ".join(g.failures(results))
                        failures.append(f"{cand['backend']} (seed {seed}): {why}")
                        log.info("step %s: %s seed %s failed its gates: %s", step.name, cand["backend"], seed, why)
                        continue
                    step.gates = att.gates
                    step.gate_summary = g.summary(results)
                att.outcome = "passed"
                att.elapsed_s = time.perf_counter() - t_att
                step.status = "done"
                step.metrics = dict(res.metrics)
                step.outputs = dict(res.outputs)
                if ci > 0 or k > 0:
                    step.metrics["chosen"] = {"backend": cand["backend"], "slot": cand["slot"], "seed": seed,
                                              "attempt": n}
                    step.backend, step.slot = cand["backend"], cand["slot"]
                progress(1.0, "done")
                return Path(audio)
        step.status = "failed"
        raise RunFailed(f"{step.name} failed with every seed and backend tried: " + " | ".join(failures))

    def _gate_generated(
        self, audio: Path, requested_s: float | None, step: Step, cancel: threading.Event
    ) -> list[g.GateResult]:
        similarity, why = self._clap_similarity(audio, step, cancel)
        return g.generated_gates(audio, requested_s=requested_s, clap_similarity=similarity, clap_skipped_reason=why)

    def _clap_similarity(self, audio: Path, step: Step, cancel: threading.Event) -> tuple[float | None, str]:
        """The CLAP audio/prompt similarity from a musiclm job, or None and why there is none."""
        backend, why = self._clap_backend(step)
        if backend is None:
            return None, why
        from app.models.client import JobFailed

        try:
            res = self.run_job("musiclm", CLAP_TASK, params={"prompt": step.params.get("prompt", "")},
                               inputs={"audio": audio}, output_dir=audio.parent / "clap", backend=backend,
                               cancel=cancel)
        except JobFailed as exc:
            return None, f"CLAP scoring failed: {exc}"
        value = res.metrics.get("clap_similarity")
        if not isinstance(value, int | float):
            return None, f"the {CLAP_TASK} job of {backend} returned no clap_similarity"
        return float(value), ""

    def _clap_backend(self, step: Step) -> tuple[str | None, str]:
        """The musiclm backend that scores prompts with CLAP, or None and why the gate is skipped.

        Never guesses a score: without CLAP weights, or without a backend that embeds the
        prompt text (``CLAP_TASK``), the gate reports ``skipped`` with this reason.
        """
        if step.name != "generate":
            return None, "not a prompt-driven step"
        try:
            from app.models import weights
            from app.models.backends import musiclm

            have_weights = weights.find_weights(musiclm.CLAP) is not None
            scorers = _ready_backends("musiclm", CLAP_TASK, self.device)
        except Exception as exc:  # a broken backend module must not sink the run
            return None, f"CLAP unavailable ({type(exc).__name__}: {exc})"
        if not have_weights:
            return None, "CLAP weights missing"
        if not scorers:
            # the bundled backend's CLAP tags are zero-shot over fixed labels; scoring the
            # prompt text itself needs a backend task that embeds it
            return None, f"CLAP weights present, but no musiclm backend has a {CLAP_TASK!r} task yet"
        return scorers[0][0], ""

    def _run_master(
        self, step: Step, source: Path, out_path: Path, work: Path, progress: ProgressFn,
        cancel: threading.Event, req: Request,
    ) -> None:
        from app.engine.mastering.chain import master_file
        from app.engine.mastering.planner import MasterSettings

        p = step.params
        settings = MasterSettings(target=p["target"], lufs=p["lufs"], ceiling_dbtp=p["ceiling_dbtp"], style=p["style"],
                                  level=p["level"], output_format=p["output_format"])

        def prog(f: float, msg: str) -> None:
            if cancel.is_set():
                raise RunCancelled("cancelled")
            progress(f, msg)

        att = Attempt("engine", None)
        step.attempts.append(att)
        t = time.perf_counter()
        try:
            result = master_file(source, out_path, settings, force=req.force, progress=prog, scratch_dir=work)
        except RunCancelled:
            att.outcome, step.status = "cancelled", "cancelled"
            raise
        att.elapsed_s = time.perf_counter() - t
        tol = float(result.plan.loudness.tolerance_lu)
        results = g.master_gates(out_path, target_lufs=float(result.plan.loudness.target_lufs),
                                 ceiling_dbtp=float(result.plan.limiter.ceiling_dbtp), tolerance_lu=tol,
                                 analysis_result=result.after)
        step.gates = att.gates = [r.to_dict() for r in results]
        step.gate_summary = g.summary(results)
        rep = result.to_report()
        step.metrics = {
            "loudness_lufs": result.after.integrated_lufs,
            "true_peak_dbtp": result.after.true_peak_dbtp,
            "target_lufs": result.plan.loudness.target_lufs,
            "ceiling_dbtp": result.plan.limiter.ceiling_dbtp,
            "loudness_error_lu": result.loudness_error_lu,
            "loudness_before_lufs": result.before.integrated_lufs,
            "render_passes": result.passes,
            "within_spec": rep["result"]["within_spec"],
            "spectral": g.spectral_figures(result.after),
        }
        step.outputs = {"audio": str(out_path)}
        att.outcome = "passed" if g.all_passed(results) else "gate_failed"
        att.outputs, att.metrics = dict(step.outputs), dict(step.metrics)
        # the engine already guarantees loudness and ceiling; a failed master gate (e.g. a
        # lopsided spectrum) is reported in the figures, not retried: there is no seed to change
        step.status = "done"


def _progress_forwarder(progress: ProgressFn | None) -> Callable[[Any, Any], None] | None:
    if progress is None:
        return None
    from app.models.protocol import Progress

    def on_event(handle: Any, event: Any) -> None:
        if isinstance(event, Progress):
            progress(event.fraction, event.message)

    return on_event


def _copy_atomic(src: Path, dst: Path, *, force: bool = False) -> None:
    """Copy ``src`` to ``dst`` via a temp file in the same folder (never a partial ``dst``)."""
    from app.engine import audio_io

    audio_io.check_output_path(dst, protect=[src], force=force)
    if dst.suffix.lower() != src.suffix.lower():  # another container: re-encode
        audio, sr = audio_io.read(src)
        fmt = audio_io.format_for_path(dst, default=audio_io.OUTPUT_FORMATS["wav32f"])
        audio_io.write(dst, audio, sample_rate=sr, fmt=fmt, protect=[src], force=True)
        return
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        shutil.copyfile(src, tmp)
        tmp.replace(dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


__all__ = [
    "WORKFLOWS", "Attempt", "Orchestrator", "Plan", "Request", "RunCancelled", "RunFailed", "RunResult", "Step",
    "duration_from_prompt", "generator_slot_order",
]
