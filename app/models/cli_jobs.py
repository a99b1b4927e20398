"""``amc generate``, ``amc process`` and ``amc transcribe``: the model chain from the command line.

``add_commands(subparsers)`` registers the three commands; each handler takes the parsed
``argparse.Namespace`` and returns an exit code, raising :class:`AmcError` subclasses that
carry theirs.  :func:`write_notes` is what ``amc analyze --notes OUT.mid`` calls.

Every command starts a model worker through :class:`~app.models.client.ModelClient`, runs
the :class:`~app.models.orchestrator.Orchestrator` on a helper thread and waits on the main
thread, so Ctrl+C lands at once: it sets the run's cancel event (the worker's job is
cancelled), waits for the run to stop, closes the worker and re-raises
``KeyboardInterrupt`` (exit 130).  Outputs are written atomically and never replace an
input, so an interrupted run leaves no file behind.  Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from app.engine.errors import AmcError, AudioOutputError, ParameterError
from app.models.orchestrator import WORKFLOWS, Orchestrator, Request, RunCancelled

T = TypeVar("T")
ProgressFn = Callable[[float, str], None]
#: After Ctrl+C, how long the run may take to wind down before we stop waiting.
INTERRUPT_GRACE_S = 15.0

GENERATE_HELP = """\
Generate music from a text prompt with the model chain, check it with quality gates
(duration, silence, clipping, true peak, loudness, spectral balance, prompt adherence when
CLAP is installed), retry with another seed or fall back to the next ready backend when a
gate fails, then master it to a delivery target.

examples:
  amc generate "warm lo-fi piano, 80 bpm" -o piano.wav
  amc generate "drum loop, 120 bpm" --slot stable-audio --duration 8 -o loop.wav
  amc generate "epic orchestral" --genre cinematic --mood tense --seed 7 --target apple -o epic.wav
  amc generate "ambient pad" --no-master -o raw.wav --report run.json
"""

PROCESS_HELP = """\
Process an existing file with the model chain:
  enhance         ACES repair (de-clip, de-click, denoise, corrective EQ), then master
  style_transfer  regenerate the track in --target-genre (Jukebox slot), then master
  master          the engine's mastering chain only
  auto            choose from the file (defects -> enhance; clean -> master; with
                  --target-genre -> style_transfer)

examples:
  amc process demo.wav --operation enhance --level moderate -o demo-enhanced.wav
  amc process song.wav --operation style_transfer --target-genre jazz -o song-jazz.wav
"""


def _add_master_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="streaming",
                   help="delivery target: streaming|apple|amazon|deezer|broadcast|club|custom (default: streaming)")
    p.add_argument("--lufs", type=float, help="integrated loudness target, overrides the target's")
    p.add_argument("--ceiling", type=float, help="true-peak ceiling in dBTP, overrides the target's")
    p.add_argument("--style", default="balanced", help="mastering style (default: balanced)")
    p.add_argument("--level", default="moderate", choices=["light", "moderate", "aggressive"],
                   help="processing strength: mastering and ACES repair (default: moderate)")
    p.add_argument("--format", default="wav24", choices=["wav16", "wav24", "wav32f", "flac", "flac16"],
                   help="output format of the master (default: wav24)")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output audio file")
    p.add_argument("--backend", help="run the model step on this backend (see amc models)")
    p.add_argument("--seed", type=int, help="first seed (retries use the next ones)")
    p.add_argument("--retries", type=int, default=2, metavar="N",
                   help="seeds to retry per backend when a quality gate fails (default: 2)")
    p.add_argument("--no-fallback", action="store_true", help="never fall back to another backend")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="backend option for the model step, e.g. steps=50 or model=facebook/musicgen-medium")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best available)")
    p.add_argument("--plan-only", action="store_true", help="print the plan as JSON and run nothing")
    p.add_argument("--report", metavar="REPORT.json", help="write the plan with per-step figures")
    p.add_argument("--json", action="store_true", help="print the plan with figures as JSON")
    p.add_argument("--force", action="store_true", help="allow replacing an existing output (never an input)")
    p.add_argument("--keep-work", action="store_true",
                   help="keep every attempt's audio (in the user cache) and print where")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, print only errors")


def _parse_params(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ParameterError(f"--param needs KEY=VALUE, got {item!r}")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        out[key.strip()] = value
    return out


def run_interruptible(fn: Callable[[threading.Event], T]) -> T:
    """Run ``fn(cancel)`` on a helper thread; Ctrl+C on the calling thread sets ``cancel``.

    Returns ``fn``'s value or raises its exception; after Ctrl+C waits up to
    :data:`INTERRUPT_GRACE_S` for ``fn`` to stop, then raises ``KeyboardInterrupt``.
    """
    cancel = threading.Event()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(cancel)
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, name="amc-run", daemon=True)
    t.start()
    try:
        while t.is_alive():
            t.join(0.1)
    except KeyboardInterrupt:
        cancel.set()
        t.join(INTERRUPT_GRACE_S)
        raise
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def _progress_bar(quiet: bool) -> Any:
    from app.progress import ProgressBar  # the CLI's own bar: one look for every command

    return ProgressBar(enabled=not quiet and sys.stderr.isatty())


def _client(device: str | None) -> Any:
    from app.models.client import ModelClient

    return ModelClient(device=device)


def _check_not_input(out: Path, inp: Path | None) -> None:
    if inp is not None and out.exists() and out.resolve() == inp.resolve():
        raise AudioOutputError(f"the output {out} is the input: choose another name")


def _execute(args: argparse.Namespace, request: Request) -> int:
    orch = Orchestrator(None, device=None)
    if args.plan_only:
        client = _client(args.device)
        try:
            client.wait_ready(120)
            orch.client = client
            print(json.dumps(orch.plan(request).to_dict(), indent=2))
        finally:
            client.close()
        return 0
    import shutil
    import tempfile
    from dataclasses import replace

    from app import config

    # intermediates (every attempt's audio) go to a run folder that is removed afterwards
    # unless --keep-work: the command's product is the output file and the report
    work = Path(tempfile.mkdtemp(prefix="run-", dir=config.cache_dir()))
    request = replace(request, work_dir=str(work))
    bar = _progress_bar(args.quiet)
    client = _client(args.device)
    try:
        orch.client = client

        def go(cancel: threading.Event) -> Any:
            client.wait_ready(120)
            return orch.run(request, progress=bar, cancel=cancel)

        try:
            result = run_interruptible(go)
        except RunCancelled:
            raise KeyboardInterrupt from None  # main() prints "interrupted; nothing was written"
        except AmcError as exc:
            failed_plan = getattr(exc, "plan", None)
            if args.report and failed_plan:  # every attempt and gate, to see why it failed
                _write_json_atomic(Path(args.report), failed_plan)
            raise
        finally:
            bar.close()
    finally:
        client.close()
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    plan = result.plan
    outputs = result.outputs if args.keep_work else {"audio": result.outputs["audio"]}
    if args.report:
        _write_json_atomic(Path(args.report), plan)
    if args.json:
        print(json.dumps({"outputs": outputs, "plan": plan}, indent=2))
    elif not args.quiet:
        _print_summary(outputs, plan)
        if args.keep_work:
            print(f"intermediate files: {work}")
    return 0


def _fmt(v: Any, unit: str = "", digits: int = 2) -> str:
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        return f"{v:.{digits}f}{unit}"
    return "-"


def _print_summary(outputs: dict[str, str], plan: dict[str, Any]) -> None:
    print(f"workflow: {plan['workflow']} ({plan['reason']})")
    for s in plan["steps"]:
        where = f"{s['slot']}/{s['backend']}" if s["slot"] else s["backend"]
        tries = len(s["attempts"])
        print(f"  {s['name']}: {where} [{s['status']}] {_fmt(s['elapsed_s'], ' s', 1)}"
              f"{f', {tries} attempts' if tries > 1 else ''}")
        for a in s["attempts"]:
            if a["outcome"] != "passed":
                why = a["error"] or "; ".join(f"{x['name']}: {x['detail']}" for x in a["gates"]
                                              if not x["passed"] and not x["skipped"])
                print(f"    {a['backend']} seed {a['seed']}: {a['outcome']} - {why}")
        for x in s["gates"]:
            mark = "skip" if x["skipped"] else ("ok" if x["passed"] else "FAIL")
            print(f"    [{mark}] {x['name']}: {x['detail']}")
        if s["name"] == "enhance" and s["metrics"].get("repair_summary"):
            print(f"    repair: {s['metrics']['repair_summary']}")
        if s.get("gate_summary"):
            print(f"    gates: {s['gate_summary']}")
    m = next((s["metrics"] for s in plan["steps"] if s["name"] == "master"), None)
    if m:
        print(f"{outputs['audio']}: {_fmt(m['loudness_lufs'], ' LUFS')} (target {m['target_lufs']:g}), "
              f"true peak {_fmt(m['true_peak_dbtp'], ' dBTP')} (ceiling {m['ceiling_dbtp']:g})")
    else:
        print(outputs["audio"])


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _request(args: argparse.Namespace, **kw: Any) -> Request:
    return Request(
        output_path=args.output, seed=args.seed, backend=args.backend, target=args.target, lufs=args.lufs,
        ceiling_dbtp=args.ceiling, style=args.style, level=args.level, output_format=args.format,
        max_seed_retries=args.retries, fallback=not args.no_fallback, force=args.force,
        params=_parse_params(args.param), **kw,
    )


def cmd_generate(args: argparse.Namespace) -> int:
    request = _request(
        args, workflow="generate", prompt=args.prompt, genre=args.genre or "", mood=args.mood or "",
        duration_s=args.duration, slot=args.slot, master=not args.no_master,
    )
    return _execute(args, request)


def cmd_process(args: argparse.Namespace) -> int:
    inp = Path(args.input)
    _check_not_input(Path(args.output), inp)
    request = _request(
        args, workflow=args.operation, input_path=str(inp), target_genre=args.target_genre or "",
        prompt=args.prompt or "", duration_s=args.duration,
    )
    return _execute(args, request)


def write_notes(
    in_path: str | Path,
    out_mid: str | Path,
    progress: ProgressFn | None = None,
    *,
    client: Any = None,
    cancel: threading.Event | None = None,
    backend: str | None = None,
    method: str = "auto",
    force: bool = False,
) -> dict[str, Any]:
    """Transcribe ``in_path``'s notes (MusicLM slot) to ``out_mid``, atomically; return the job's figures.

    Starts (and closes) a worker unless ``client`` is given.  Raises :class:`RunCancelled`
    when ``cancel`` is set (nothing written) and the worker's errors as ``JobFailed``.
    """
    import shutil
    import tempfile

    from app.engine import audio_io

    inp, out = Path(in_path), Path(out_mid)
    if not inp.is_file():
        from app.engine.errors import AudioInputError

        raise AudioInputError(f"{inp} does not exist or is not a file")
    if out.suffix.lower() not in (".mid", ".midi"):
        raise ParameterError(f"the notes file must end in .mid, got {out.name}")
    _check_not_input(out, inp)
    audio_io.check_output_path(out, protect=[inp], force=force)
    own = client is None
    if own:
        client = _client(None)
    work = Path(tempfile.mkdtemp(prefix="amc-notes-"))
    try:
        client.wait_ready(120)
        res = Orchestrator(client).run_job(
            "musiclm", "transcribe", params={"method": method}, inputs={"audio": inp}, output_dir=work,
            backend=backend, progress=progress, cancel=cancel,
        )
        midi = res.outputs.get("midi")
        if midi is None:
            raise AmcError(f"the transcription produced no MIDI (outputs: {sorted(res.outputs)})")
        tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            shutil.copyfile(midi, tmp)
            tmp.replace(out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if own:
            client.close()
    metrics = dict(res.metrics)
    metrics["output"] = str(out)
    return metrics


def cmd_transcribe(args: argparse.Namespace) -> int:
    bar = _progress_bar(args.quiet)
    client = _client(args.device)
    try:
        try:
            m = run_interruptible(lambda cancel: write_notes(
                args.input, args.output, bar, client=client, cancel=cancel, backend=args.backend,
                method=args.method, force=args.force))
        except RunCancelled:
            raise KeyboardInterrupt from None
        finally:
            bar.close()
    finally:
        client.close()
    if args.json:
        print(json.dumps(m, indent=2, default=str))
    elif not args.quiet:
        print(f"{m['output']}: {m.get('notes', '?')} notes ({m.get('notes_method', 'transcription')})")
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``generate``, ``process`` and ``transcribe`` on the CLI's subparsers (``func`` handlers)."""
    g = subparsers.add_parser("generate", help="generate music from a prompt, gate it and master it",
                              description=GENERATE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("prompt", help="what to generate, e.g. 'warm lo-fi piano, 80 bpm'")
    g.add_argument("--slot", help="generator slot: musicgen | stable-audio | suni | mureka (default: from the prompt)")
    g.add_argument("--duration", type=float, metavar="S", help="seconds of audio (default: from the prompt, else 10)")
    g.add_argument("--genre", help="genre added to the prompt")
    g.add_argument("--mood", help="mood added to the prompt")
    g.add_argument("--no-master", action="store_true", help="deliver the gated generation unmastered")
    _add_master_options(g)
    _add_run_options(g)
    g.set_defaults(func=cmd_generate)

    p = subparsers.add_parser("process", help="enhance, style-transfer or master a file with the model chain",
                              description=PROCESS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="IN", help="audio file (never modified)")
    p.add_argument("--operation", default="auto", choices=[w for w in WORKFLOWS if w != "generate"],
                   help="what to do (default: auto)")
    p.add_argument("--target-genre", help="genre for style_transfer, e.g. jazz")
    p.add_argument("--prompt", help="extra text for style_transfer")
    p.add_argument("--duration", type=float, metavar="S", help="seconds to regenerate (style_transfer)")
    _add_master_options(p)
    _add_run_options(p)
    p.set_defaults(func=cmd_process)

    t = subparsers.add_parser("transcribe", help="transcribe a recording's notes to MIDI (MusicLM slot)")
    t.add_argument("input", metavar="IN", help="audio file")
    t.add_argument("-o", "--output", required=True, metavar="OUT.mid", help="MIDI file to write")
    t.add_argument("--method", default="auto", choices=["auto", "pyin"],
                   help="auto: Basic Pitch when installed, else pYIN; pyin: always pYIN")
    t.add_argument("--backend", help="a backend of the musiclm slot")
    t.add_argument("--device", help="cpu, cuda, cuda:N or mps")
    t.add_argument("--json", action="store_true", help="print the job's figures as JSON")
    t.add_argument("--force", action="store_true", help="allow replacing an existing output")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_transcribe)
