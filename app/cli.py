"""`amc`: the command line.  Thin: parses, calls the engine, prints.

Exit codes: 0 done; 1 unexpected failure (a bug: please report it); 2 bad option or
plan; 3 unusable input audio; 4 output cannot be written; 5 the target could not be
met; 130 interrupted; 141 standard output closed early (``amc analyze --json f | head``:
no traceback, like any Unix tool killed by SIGPIPE).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from app import __version__
from app.progress import ProgressBar

EXIT_OK, EXIT_BUG, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 130, 143
#: 128 + SIGPIPE: what a shell reports for a program whose reader went away.
EXIT_BROKEN_PIPE = 141

MASTER_HELP = """\
Master one or more mixes to a delivery spec, offline.

The chain: high-pass -> EQ toward the mix's own balance and a tilt for its music
family (or your reference tracks) -> section-following glue compressor -> optional
3-band compressor -> stereo width (mono bass only for a phasey low end) -> oversampled
soft clip -> true-peak limiter with program-dependent release -> loudness to the target.
The result lands within ±0.2 LU of the target loudness and never exceeds the true-peak
ceiling, and keeps the sample rate of your mix.  Your files are never modified.
The dynamics guard: when the target needs more limiting than the level's budget, the
master lands below the target (and says why) rather than pump; --loudness-first
reaches the target anyway (the club target always does).

targets:  streaming -14 LUFS/-1 dBTP (Spotify, YouTube) | apple -16/-1 | amazon -14/-2
          deezer -15/-1 | broadcast -23/-1 (EBU R128) | club -8/-0.3 | custom (--lufs, --ceiling)
styles:   balanced | warm | bright | punchy | professional (transparent) | creative
levels:   light | moderate | aggressive (how far EQ, dynamics and width go)

examples:
  amc master mix.wav -o mix-master.wav
  amc master mix.wav -o master.wav --target apple --style warm --level light
  amc master mix.wav -o master.wav --reference favourite-song.flac --plot master.png
  amc master 01.wav 02.wav 03.wav -o album/ --album --format flac
"""


def _fmt(v: object, unit: str = "", digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}{unit}"
    return f"{v}{unit}"


def _print_analysis(name: str, a: dict) -> None:
    rows = [
        ("file", name),
        ("format", f"{a['sample_rate']} Hz, {a['channels']} ch, {_fmt(a['duration_s'], ' s', 2)}"),
        ("integrated loudness", _fmt(a["integrated_lufs"], " LUFS")),
        ("loudness range", _fmt(a["loudness_range_lu"], " LU")),
        ("max momentary / short-term", f"{_fmt(a['momentary_max_lufs'], ' LUFS')} / {_fmt(a['short_term_max_lufs'], ' LUFS')}"),
        ("true peak", _fmt(a["true_peak_dbtp"], " dBTP", 2)),
        ("sample peak", _fmt(a["sample_peak_dbfs"], " dBFS", 2)),
        ("PLR / crest factor", f"{_fmt(a['plr_db'], ' dB')} / {_fmt(a['crest_factor_db'], ' dB')}"),
        ("RMS", _fmt(a["rms_dbfs"], " dBFS")),
        ("stereo correlation / width", f"{_fmt(a.get('correlation'), '', 2)} / {_fmt(a.get('width'), '', 2)}"),
    ]
    clip = a.get("clipped_runs")
    if isinstance(clip, dict):
        rows.append(("clipping", f"{clip.get('runs', 0)} runs, {clip.get('samples', 0)} samples"))
    if a.get("tempo_bpm") is not None:
        rows.append(("tempo", _fmt(a["tempo_bpm"], " BPM")))
    if a.get("key"):
        rows.append(("key", a["key"]))
    if a.get("beats_s") is None:
        rows.append(("tempo / key", "not measured (add --musical)"))
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{w}}  {v}")


def cmd_analyze(args: argparse.Namespace) -> int:
    from app.engine.file_analysis import analyze_file

    bar = ProgressBar(enabled=not args.quiet and sys.stderr.isatty())
    try:
        result = analyze_file(Path(args.file), musical=args.musical, progress=bar)
    finally:
        bar.close()
    d = result.to_dict()
    if args.notes:
        # audio -> MIDI through the MusicLM slot's transcription model, in the model worker
        from app.models.cli_jobs import write_notes

        bar = ProgressBar(enabled=not args.quiet and sys.stderr.isatty())
        try:
            d["notes"] = write_notes(args.file, args.notes, bar)
        finally:
            bar.close()
    if args.json:
        print(json.dumps(d, indent=2, default=str))
    else:
        _print_analysis(Path(args.file).name, d)
        if args.notes:
            print(f"notes written to {args.notes}")
    return EXIT_OK


def _settings(args: argparse.Namespace, fmt: str):
    from app.engine.mastering.planner import MasterSettings

    return MasterSettings(
        target=args.target,
        lufs=args.lufs,
        ceiling_dbtp=args.ceiling,
        style=args.style,
        level=args.level,
        amount_eq_pct=args.amount_eq,
        amount_dynamics_pct=args.amount_dynamics,
        amount_width_pct=args.amount_width,
        output_format=fmt,
        noise_shaping=args.noise_shaping,
        loudness_first=args.loudness_first,
        genre=args.genre,
        mono_bass={"auto": None, "on": True, "off": False}[args.mono_bass],
    )


def _output_format(args: argparse.Namespace, first: Path, out: Path | None) -> str:
    from app.engine import audio_io

    if args.format:
        return args.format
    default = audio_io.default_output_format(audio_io.probe(first))
    if out is not None and out.suffix:
        return audio_io.format_for_path(out, default=default).name
    return default.name


def cmd_master(args: argparse.Namespace) -> int:
    from app.engine import audio_io
    from app.engine.errors import AudioOutputError, ParameterError
    from app.engine.mastering import report
    from app.engine.mastering.chain import master_album, master_file
    from app.engine.mastering.plan import MasteringPlan

    inputs = [Path(p) for p in args.inputs]
    out = Path(args.output)
    multi = len(inputs) > 1 or args.album
    if multi and not out.is_dir():
        raise AudioOutputError(f"with several inputs (or --album), -o must be an existing folder: {out}")
    for p in inputs:
        audio_io.probe(p)  # every input is checked before any work starts
    plan = None
    if args.plan:
        if multi:
            raise ParameterError("--plan applies to one input at a time")
        try:
            plan = MasteringPlan.from_json(Path(args.plan).read_text())
        except OSError as exc:
            raise ParameterError(f"cannot read plan {args.plan}: {exc.strerror}") from exc
    fmt = plan.output.format if plan else _output_format(args, inputs[0], None if out.is_dir() else out)
    settings = _settings(args, fmt)
    ext = audio_io.OUTPUT_FORMATS[fmt].extension
    bar = ProgressBar(enabled=not args.quiet and sys.stderr.isatty())
    try:
        if args.album:
            results = master_album(inputs, out, settings, references=args.reference or (), force=args.force, progress=bar)
        else:
            results = []
            for k, p in enumerate(inputs):
                dest = out / f"{p.stem}-master{ext}" if out.is_dir() else out
                results.append(
                    master_file(
                        p, dest, settings, references=args.reference or (), plan=plan, force=args.force,
                        progress=lambda f, m, k=k: bar((k + f) / len(inputs), m),
                    )
                )  # fmt: skip
    finally:
        bar.close()
    if args.report:
        report.write_report(results, Path(args.report))
    if args.plot:
        if multi:
            for r in results:
                report.plot_master(r, Path(args.plot).with_name(f"{Path(args.plot).stem}-{r.input.stem}.png"))
        else:
            report.plot_master(results[0], Path(args.plot))
    if args.save_plan and not multi:
        report._atomic_bytes(Path(args.save_plan), (results[0].plan.to_json() + "\n").encode())
    if not args.quiet:
        for r in results:
            print(
                f"{r.output}: {r.after.integrated_lufs:.2f} LUFS (target {r.plan.loudness.target_lufs:g}), "
                f"true peak {r.after.true_peak_dbtp:.2f} dBTP (ceiling {r.plan.limiter.ceiling_dbtp:g}), "
                f"{r.plan.sample_rate} Hz {fmt}, {r.elapsed_s:.1f} s"
            )
            if r.guard["engaged"]:
                print(f"  {r.guard['reason']}")
    return EXIT_OK


#: Commands of the engine alone: parsing them needs none of the other modules' commands.
ENGINE_COMMANDS = frozenset({"analyze", "master"})


def build_parser(*, command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with ``command`` one of :data:`ENGINE_COMMANDS`, only the engine's
    commands (the model chain's and the service's modules, with their HTTP and keyring
    imports, would only slow the start of a ``master`` down)."""
    p = argparse.ArgumentParser(
        prog="amc",
        description="AI Music Mastering Chain: offline mastering and analysis for musicians.",
    )
    p.add_argument("--version", action="version", version=f"amc {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    a = sub.add_parser("analyze", help="measure loudness, peaks and spectrum of a file (tempo and key on request)",
                       description="Measure a file: EBU R128 loudness (integrated, range, momentary and "
                                   "short-term maxima), true peak, sample peak, PLR, crest factor, DC, "
                                   "clipping, stereo correlation and width, 1/3-octave spectrum (--json); with "
                                   "--musical also tempo and key (slower: seconds and several hundred MB "
                                   "more).")  # fmt: skip
    a.add_argument("file", help="audio file (WAV, AIFF, FLAC, OGG, Opus, MP3)")
    a.add_argument("--json", action="store_true", help="print every figure as JSON")
    a.add_argument("--musical", action="store_true", help="also estimate tempo, beats and key (slower)")
    # Tempo and key used to run by default; the old opt-out stays accepted and does nothing.
    a.add_argument("--no-musical", action="store_true", help=argparse.SUPPRESS)
    a.add_argument("--notes", metavar="OUT.mid", help="also transcribe the notes to a MIDI file (model worker)")
    a.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    a.set_defaults(func=cmd_analyze)

    m = sub.add_parser("master", help="master mixes to a loudness target", description=MASTER_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    m.add_argument("inputs", nargs="+", metavar="IN", help="mix file(s)")
    m.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output file, or a folder (several inputs: <name>-master.<ext> in it)")  # fmt: skip
    m.add_argument("--target", default="streaming", help="delivery target (default: streaming)")
    m.add_argument("--lufs", type=float, help="integrated loudness target, overrides the target's")
    m.add_argument("--ceiling", type=float, help="true-peak ceiling in dBTP, overrides the target's")
    m.add_argument("--style", default="balanced", help="tonal/dynamic style (default: balanced)")
    m.add_argument("--level", default="moderate", choices=["light", "moderate", "aggressive"],
                   help="how strong the processing is (default: moderate)")  # fmt: skip
    m.add_argument("--amount-eq", type=float, metavar="PCT", help="EQ amount 0-200 %%, overrides the level")
    m.add_argument("--amount-dynamics", type=float, metavar="PCT", help="compression amount 0-200 %%")
    m.add_argument("--amount-width", type=float, metavar="PCT", help="stereo widening amount 0-200 %%")
    m.add_argument("--reference", nargs="+", metavar="REF", help="match the tone of these reference tracks")
    m.add_argument("--loudness-first", action="store_true",
                   help="reach the loudness target even when it takes more limiting than the level's budget "
                        "(default: the dynamics guard lands below the target rather than pump)")  # fmt: skip
    m.add_argument("--genre", default="auto",
                   choices=["auto", "electronic", "hip-hop", "rock-pop", "acoustic-orchestral", "speech"],
                   help="music family for tone and dynamics (default: estimated from the mix)")  # fmt: skip
    m.add_argument("--mono-bass", default="auto", choices=["auto", "on", "off"],
                   help="mono low end below 120 Hz (default: only when the low end is phasey)")  # fmt: skip
    m.add_argument("--album", action="store_true", help="master the inputs as one album: same tone, relative loudness kept")
    m.add_argument("--format", choices=["wav16", "wav24", "wav32f", "flac", "flac16"],
                   help="output format (default: the mix's own format; 16-bit gets TPDF dither)")  # fmt: skip
    m.add_argument("--noise-shaping", action="store_true", help="noise-shaped dither for 16-bit output")
    m.add_argument("--plan", metavar="PLAN.json", help="render an edited plan instead of deciding one")
    m.add_argument("--save-plan", metavar="PLAN.json", help="write the plan used, to edit and re-render")
    m.add_argument("--report", metavar="REPORT.json", help="write before/after metrics and the plan")
    m.add_argument("--plot", metavar="PLOT.png", help="write spectra, loudness and gain-reduction plots")
    m.add_argument("--force", action="store_true", help="allow replacing an existing output (even an input)")
    m.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    m.set_defaults(func=cmd_master)
    if command in ENGINE_COMMANDS:
        return p

    # The model chain and the account service register their own commands; their modules
    # import nothing heavy (no torch, no FastAPI) until a command runs.
    from app.models import cli_jobs
    from app.models import commands as model_commands
    from app.service import commands as service_commands

    cli_jobs.add_commands(sub)
    model_commands.add_commands(sub)
    service_commands.add_commands(sub)
    return p


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so every ``finally`` runs (scratch, partial files)."""


def _terminate_cleanly() -> _Terminated:
    """Make SIGTERM unwind like Ctrl+C (main thread; the engine commands only)."""
    import signal

    exc = _Terminated()

    def handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends it at once
        raise exc

    signal.signal(signal.SIGTERM, handler)
    return exc


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``amc`` command; returns its exit code (see the module's docstring)."""
    try:
        try:
            return _main(argv)
        finally:
            # Everything buffered goes out now, inside the handler below, not in the
            # interpreter's final flush (which would print "Exception ignored ...").
            sys.stdout.flush()
    except BrokenPipeError:
        # The reader of our standard output is gone (``| head -1``).  Python's own recipe:
        # point stdout at /dev/null so nothing else tries to write to the pipe, and exit
        # quietly with the status a shell gives a process killed by SIGPIPE.
        _stdout_to_devnull()
        return EXIT_BROKEN_PIPE


def _stdout_to_devnull() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real file descriptor (an in-process caller's stream)
        pass


def _main(argv: Sequence[str] | None) -> int:
    from app.engine.errors import AmcError

    args_list = list(sys.argv[1:] if argv is None else argv)
    # The first word that is not an option names the command (the top level has no option
    # that takes a value).
    command = next((a for a in args_list if not a.startswith("-")), None)
    parser = build_parser(command=command)
    args = parser.parse_args(args_list)
    terminated = _terminate_cleanly() if argv is None and command in ENGINE_COMMANDS else None
    try:
        code = int(args.func(args))
        if argv is None and command in ENGINE_COMMANDS:
            # This process's own command line, done: everything is written and closed and
            # the interpreter only exits now.  Its last garbage collection would walk the
            # ~100 000 objects numba's compiler leaves behind (0.3 s on a 2-core machine, a
            # tenth of a 7-minute master; 0.03 s of an analyze); frozen, they are skipped.
            # (Not for in-process callers such as tests: they keep running.)
            gc.freeze()
        return code
    except AmcError as exc:
        print(f"amc: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print("amc: interrupted; nothing was written", file=sys.stderr)
        return EXIT_TERMINATED if terminated is not None and exc is terminated else EXIT_INTERRUPTED
    except MemoryError:
        print("amc: error: out of memory", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
