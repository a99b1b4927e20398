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
    uvicorn.run(create_app(settings), host=host, port=args.port, log_level=settings.log_level.lower())
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


@_account_call
def cmd_sync(args: argparse.Namespace) -> int:
    from pathlib import Path

    r = _client(args).push_project(Path(args.project))
    print(f"pushed {args.project} as revision {r.revision} "
          f"({r.uploaded_blobs} media uploaded, {r.skipped_blobs} already there)")  # fmt: skip
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
    p = account_parser("sync", "push a project folder (Name.amcproj) to the account service")
    p.add_argument("project", help="the project folder")
    p.set_defaults(func=cmd_sync)
