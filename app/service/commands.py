"""``amc serve`` (and the account client's commands), registered on the CLI's subparsers."""

from __future__ import annotations

import argparse
import sys


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.service.app import create_app
    from app.service.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as e:
        print(f"amc serve: {e}", file=sys.stderr)
        return 2
    if args.promote_admin:
        from app.service.admin import promote

        if settings.auto_migrate:
            from app.service.db import upgrade

            upgrade(settings.database_url)
        ok = promote(settings, args.promote_admin)
        print(f"{args.promote_admin}: {'now admin' if ok else 'no such user'}")
        return 0 if ok else 1
    host = args.host or ("127.0.0.1" if settings.mode == "embedded" else "0.0.0.0")
    log_level = settings.log_level.lower()
    if settings.web_workers > 1:  # each process builds its app from the same environment
        uvicorn.run("app.service.app:app_from_env", factory=True, workers=settings.web_workers,
                    host=host, port=args.port, log_level=log_level)  # fmt: skip
    else:
        uvicorn.run(create_app(settings), host=host, port=args.port, log_level=log_level)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from app.service.settings import Settings, SettingsError
    from app.service.worker import main

    try:
        Settings.from_env()
    except SettingsError as e:
        print(f"amc worker: {e}", file=sys.stderr)
        return 2
    return main([])


def _client(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from app.account import AccountClient

    return AccountClient(args.server)


def _account_call(fn):  # type: ignore[no-untyped-def]
    """Run an account command; service errors become one line on stderr and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        from app.account import AccountError

        try:
            return int(fn(args))
        except AccountError as e:
            print(f"amc {args.command}: {e}", file=sys.stderr)
            return 1

    return run


@_account_call
def cmd_login(args: argparse.Namespace) -> int:
    import getpass

    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("Password: ")
    user = _client(args).login(args.email, password)
    print(f"signed in to {args.server} as {user['username']} <{user['email']}> ({user['tier']} tier)")
    return 0


@_account_call
def cmd_logout(args: argparse.Namespace) -> int:
    _client(args).logout()
    print(f"signed out of {args.server}")
    return 0


@_account_call
def cmd_whoami(args: argparse.Namespace) -> int:
    c = _client(args)
    me, usage = c.whoami(), c.usage()
    print(f"{me['username']} <{me['email']}> on {args.server}: {me['tier']} tier, "
          f"{usage['requests_today']}/{usage['daily_limit']} requests today, "
          f"{usage['storage_bytes']}/{usage['storage_limit_bytes']} bytes stored")  # fmt: skip
    return 0


def _progress_bar(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from app.progress import ProgressBar

    return ProgressBar(enabled=sys.stderr.isatty() and not getattr(args, "quiet", False))


def _say_result(folder: str, r) -> None:  # type: ignore[no-untyped-def]
    """One line per sync outcome (app.account.SyncResult), plus what the musician should know."""
    media = f"{r.uploaded_blobs} media uploaded, {r.skipped_blobs} already there"
    line = {
        "pushed": f"{folder}: pushed as revision {r.revision} ({media})",
        "pulled": f"{folder}: updated to revision {r.revision} from the server ({r.downloaded_blobs} media downloaded)",
        "up_to_date": f"{folder}: up to date (revision {r.revision})",
        "cloned": f"{folder}: revision {r.revision} downloaded ({r.downloaded_blobs} media)",
        "kept_mine": f"{folder}: your version is revision {r.revision} ({media}); theirs stays in the server's history",
        "kept_theirs": f"{folder}: now holds the server's revision {r.revision} ({r.downloaded_blobs} media downloaded)",
        "kept_both": f"{folder}: your version is the new server project '{r.name}' (revision {r.revision}); "
                     "theirs stays the original",
    }.get(r.action, f"{folder}: {r.action}, revision {r.revision}")  # fmt: skip
    print(line)
    if r.backup is not None:
        print(f"  your previous project.json was kept as {r.backup}")
    if r.project_changed and r.action != "cloned":
        print("  project.json changed: reopen the project if the Studio has it open")
    for name in r.not_synced:
        print(f"  not synced (the service refuses this file name; rename it): {name}")


def cmd_sync(args: argparse.Namespace) -> int:
    from pathlib import Path

    from app.account import AccountError, SyncConflictError

    bar = _progress_bar(args)
    try:
        r = _client(args).sync_project(Path(args.project), keep=args.keep, progress=bar)
    except SyncConflictError as e:
        bar.close()
        print(f"amc sync: conflict: {args.project} changed here and on the server since the last sync "
              f"(this copy is based on revision {e.base_revision}, the server has revision "
              f"{e.head_revision}). Nothing was overwritten. Choose what to keep:\n"
              f"  amc sync {args.project} --keep mine     push yours as the newest revision "
              "(theirs stays in the server's history)\n"
              f"  amc sync {args.project} --keep theirs   take the server's (yours is kept as "
              "project.local-<time>.json)\n"
              f"  amc sync {args.project} --keep both     push yours as a separate server project",
              file=sys.stderr)  # fmt: skip
        return 1
    except AccountError as e:
        bar.close()
        print(f"amc sync: {e}", file=sys.stderr)
        return 1
    bar.close()
    _say_result(args.project, r)
    return 0


def _find_project(projects: list[dict], ref: str) -> dict:  # type: ignore[type-arg]
    """The project whose id or exact name is ``ref`` (an id wins over a name)."""
    from app.account import AccountError

    match = sorted((p for p in projects if ref in (p["id"], p["name"])), key=lambda p: p["id"] != ref)
    if not match:
        raise AccountError(f"no project {ref!r} on this account: `amc projects` lists them", code="not_found")
    return match[0]


@_account_call
def cmd_projects(args: argparse.Namespace) -> int:
    if args.delete:
        return _delete_project(args)
    rows = _client(args).list_projects()
    if not rows:
        print(f"no projects on this account at {args.server} yet: `amc sync FOLDER` uploads one")
        return 0
    print(f"{'ID':<32}  {'REVISION':>8}  {'UPDATED':<16}  NAME")
    for p in rows:
        updated = str(p["updated_at"]).replace("T", " ")[:16]
        print(f"{p['id']:<32}  {p['head_revision']:>8}  {updated:<16}  {p['name']}")
    return 0


@_account_call
def cmd_clone(args: argparse.Namespace) -> int:
    from pathlib import Path


    c = _client(args)
    project = _find_project(c.list_projects(), args.project)
    bar = _progress_bar(args)
    try:
        r = c.clone_project(project["id"], Path(args.dest), revision=args.revision, progress=bar)
    finally:
        bar.close()
    _say_result(args.dest, r)
    return 0


def _delete_project(args: argparse.Namespace) -> int:
    c = _client(args)
    p = _find_project(c.list_projects(), args.delete)
    what = f"'{p['name']}' ({p['head_revision']} revisions) from {args.server}"
    if not args.yes:
        if not sys.stdin.isatty():
            print(f"amc projects: deleting {what} needs --yes (nothing was deleted)", file=sys.stderr)
            return 2
        answer = input(f"Delete {what}? Folders on your computers are not touched. [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing was deleted")
            return 1
    gone = c.delete_project(p["id"])
    print(f"deleted {what}; {gone['blobs_freed']} media no other project uses freed "
          f"({gone['bytes_freed'] / 1e6:.1f} MB)")  # fmt: skip
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = subparsers.add_parser(
        "serve", help="run the account service (REST + WebSocket API)",
        description="Run the account service. Configured by environment variables "
                    "(MODE, DATABASE_URL, SECRET_KEY, STORAGE_PROVIDER, STORAGE_DIR, ...; see .env.example). "
                    "Embedded mode (default) listens on 127.0.0.1 with SQLite in the user data dir.",
    )  # fmt: skip
    s.add_argument("--host", default=None, help="address to listen on (embedded: 127.0.0.1, remote: 0.0.0.0)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    s.add_argument("--promote-admin", metavar="EMAIL", default=None,
                   help="give the registered user EMAIL the admin role and exit")  # fmt: skip
    s.set_defaults(func=cmd_serve)
    w = subparsers.add_parser("worker", help="run a job worker (Celery on REDIS_URL; remote mode)",
                              description="Run a Celery worker for the account service's jobs. Same "
                                          "environment as `amc serve` with JOB_BACKEND=celery.")  # fmt: skip
    w.set_defaults(func=cmd_worker)

    from app.account import DEFAULT_SERVER

    def account_parser(name: str, help_: str):  # type: ignore[no-untyped-def]
        p = subparsers.add_parser(name, help=help_, description=help_)
        p.add_argument("--server", default=DEFAULT_SERVER, help=f"account service URL (default {DEFAULT_SERVER})")
        return p

    p = account_parser("login", "sign in to the account service (the token is kept in the OS keyring)")
    p.add_argument("email")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.set_defaults(func=cmd_login)
    account_parser("logout", "sign out (revokes the sign-in on the server)").set_defaults(func=cmd_logout)
    account_parser("whoami", "show the signed-in account, tier and usage").set_defaults(func=cmd_whoami)
    p = account_parser("sync", "two-way sync of a project folder (Name.amcproj) with the service")
    p.description = ("Push local changes, or bring the server's newer revision down (fast-forward). When "
                     "both changed, nothing is overwritten: amc says so (exit 1) and --keep decides.")  # fmt: skip
    p.add_argument("project", help="the project folder")
    p.add_argument("--keep", choices=["mine", "theirs", "both"], default=None,
                   help="on a conflict: mine = push yours on top (theirs stays in the history); theirs = take "
                        "the server's (yours kept as project.local-<time>.json); both = push yours as a "
                        "separate server project. If the server project was deleted, mine uploads this folder as a new one")  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sync)
    p = account_parser("projects", "list the projects on the account (id, revision, last update, name)")
    p.add_argument("--delete", metavar="PROJECT", default=None,
                   help="delete the project (id or exact name) and its revisions from the server, freeing "
                        "the media no other project uses; folders on your computers are not touched")  # fmt: skip
    p.add_argument("--yes", action="store_true", help="with --delete: do not ask")
    p.set_defaults(func=cmd_projects)
    p = account_parser("clone", "download a server project into a new folder (a second machine)")
    p.add_argument("project", metavar="PROJECT",
                   help="the project's id (or its exact name; see `amc projects`)")  # fmt: skip
    p.add_argument("dest", metavar="DEST", help="a new (or empty) folder, e.g. Song.amcproj")
    p.add_argument("--revision", type=int, default=None, metavar="N",
                   help="an older revision (default: newest)")  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_clone)
