"""``amc models``: list the twelve slots and their backends; download and delete weights.

``add_commands(subparsers)`` registers the ``models`` command on the CLI's subparsers;
each handler takes the parsed ``argparse.Namespace`` and returns an exit code.  Nothing
here imports torch (statuses come from the registry's cheap checks).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from app.engine.errors import AmcError
from app.models import registry, weights
from app.models.backends.base import WeightsSpec

MODELS_HELP = """\
List the model chain's twelve slots, each backend's status on this machine, how big
its weights are and where to get them; download or delete weights.

states:  ready | degraded (runs with a weaker fallback, named) |
         weights_missing (needs download: amc models download NAME) |
         package_missing (pip install '.[models]') | needs_api_key (set the variable named) |
         not_available (not in this version yet) | unsupported_device | error

examples:
  amc models
  amc models --json
  amc models download facebook/musicgen-small      (a repo id, a backend name or a slot)
  amc models delete facebook/musicgen-small
"""


class UnknownModel(AmcError):
    exit_code = 2


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def resolve_weights(name: str) -> list[WeightsSpec]:
    """The checkpoint named by a repo id, or the default (first) one of a backend or slot.

    A backend may declare several checkpoints (small/medium/large); naming the backend or
    slot picks its first, so ``amc models download musicgen`` never fetches all of them.
    """
    every = registry.all_weights()
    by_repo = [w for _, _, w in every if w.repo_id == name]
    if by_repo:
        return by_repo[:1]
    for slot, backend, w in every:
        if name in (backend, slot):
            return [w]
    known = sorted({w.repo_id for _, _, w in every} | {b for _, b, _ in every})
    hint = f"; known: {', '.join(known)}" if known else "; no backend declares downloadable weights yet"
    raise UnknownModel(f"no weights named {name!r}{hint}")


def print_slots(rows: list[dict[str, Any]], out: TextIO) -> None:
    for row in rows:
        mark = "ready" if row["ready"] else "not ready"
        out.write(f"{row['number']:>2}. {row['title']} [{row['slot']}] - {row['role']} ({mark})\n")
        for b in row["backends"]:
            out.write(f"      {b['name']}: {b['state']} - {b['detail']}\n")
            for w in b["weights"]:
                where = f"at {w['path']} ({_human_bytes(w['disk_bytes'])})" if w["present"] else (
                    f"not downloaded ({_human_bytes(w['size_bytes'])}; amc models download {w['repo_id']}; {w['url']})"
                )
                out.write(f"        weights {w['repo_id']} [{w['license']}]: {where}\n")


def cmd_models(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    rows = registry.slot_status(device=args.device)
    if args.json:
        json.dump(rows, out, indent=2)
        out.write("\n")
    else:
        print_slots(rows, out)
    return 0


def cmd_download(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    specs = resolve_weights(args.name)
    for spec in specs:
        last = [-1]

        def progress(done: int, total: int, message: str, _last: list[int] = last, _spec: WeightsSpec = spec) -> None:
            pct = int(100 * done / total) if total else 100
            if pct != _last[0] and (pct % 10 == 0 or message == "verified"):
                _last[0] = pct
                sys.stderr.write(f"\r{_spec.repo_id}: {pct:3d}% {message}   ")
                sys.stderr.flush()

        folder = weights.download(spec, endpoint=args.endpoint, progress=None if args.quiet else progress)
        if not args.quiet:
            sys.stderr.write("\n")
        out.write(f"{spec.repo_id}: {folder} ({_human_bytes(weights.disk_usage(folder))}, verified)\n")
    return 0


def cmd_delete(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        specs = resolve_weights(args.name)
    except UnknownModel:
        specs = [WeightsSpec(args.name, 0, "", "")]  # a folder no backend declares any more
    for spec in specs:
        freed = weights.delete(spec.repo_id)
        elsewhere = weights.find_weights(spec)
        msg = f"{spec.repo_id}: freed {_human_bytes(freed)}" if freed else f"{spec.repo_id}: nothing in {weights.local_folder(spec.repo_id)}"
        if elsewhere is not None:
            msg += f"; a copy remains at {elsewhere} (not ours to delete)"
        out.write(msg + "\n")
    return 0


def _dispatch(args: argparse.Namespace) -> int:
    handler = {"download": cmd_download, "delete": cmd_delete}.get(args.models_command or "", cmd_models)
    return handler(args)


def add_commands(subparsers: Any) -> None:
    """Register ``amc models`` (+ ``download``/``delete``) on the CLI's subparsers.

    The handlers are set as ``func`` (``args.func(args) -> exit code``); errors are
    :class:`AmcError` subclasses carrying their exit code.
    """
    p = subparsers.add_parser(
        "models", help="list model slots and backends; download or delete weights",
        description=MODELS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print the slot table as JSON")
    p.add_argument("--device", default="cpu", help="device to check backends against (default: cpu)")
    sub = p.add_subparsers(dest="models_command", metavar="ACTION")
    d = sub.add_parser("download", help="download a model's weights (resumes; verifies checksums)")
    d.add_argument("name", help="a repo id (org/name), a backend name or a slot")
    d.add_argument("--endpoint", default=None, help="model hub URL (default: HF_ENDPOINT or huggingface.co)")
    d.add_argument("--quiet", action="store_true", help="no progress on stderr")
    x = sub.add_parser("delete", help="delete a model's downloaded weights")
    x.add_argument("name", help="a repo id (org/name), a backend name or a slot")
    p.set_defaults(func=_dispatch)
