"""Schemathesis, every check, against a live account service: prints the number of generated
cases, the failures by check, and exits non-zero on any.

    .venv/bin/python benchmarks/service_schemathesis.py [--max-examples 40] [--url URL --token TOKEN]

Without ``--url`` it starts the service as ``amc serve`` runs it (SQLite, local storage) on
127.0.0.1 with a signed-in PRO user (the fuzzer must reach the handlers, not the quota), and
runs ``schemathesis run --checks all`` with that user's token; the run's NDJSON report gives
the counts. Bounded: ``--max-examples`` per operation and ``--max-seconds`` in all.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, text

from app.service.db import normalise_url
from benchmarks.service_security import serve


def run(url: str, token: str, max_examples: int, max_seconds: float, workers: int) -> int:
    out = Path(tempfile.mkdtemp(prefix="amc-st-"))
    events = out / "events.ndjson"
    config = Path(__file__).with_name("schemathesis.toml")
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
           url + "/api/v1/openapi.json", "--checks", "all",
           "--header", f"Authorization: Bearer {token}", "--max-examples", str(max_examples),
           "--workers", str(workers), "--request-timeout", "30", "--report", "ndjson",
           "--report-ndjson-path", str(events), "--seed", "16", "--no-color"]  # fmt: skip
    try:
        # In its own folder: schemathesis keeps a .schemathesis/ cache in its working directory.
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max_seconds, cwd=out)
        (out / "stdout.txt").write_text(proc.stdout.replace(token, "[token]"))
        print(f"full output: {out / 'stdout.txt'}")
        tail = proc.stdout[-6000:]
    except subprocess.TimeoutExpired as e:
        tail = (e.stdout or b"")[-6000:].decode(errors="replace") if isinstance(e.stdout, bytes) else str(e.stdout)
        print(f"schemathesis stopped after {max_seconds:g} s")
    print(tail.replace(token, "[token]"))
    requests, statuses = 0, Counter[str]()
    if events.exists():  # every request sent, by answer class, from the run's event stream
        for code in re.findall(r'"status_code": ?(\d{3})', events.read_text()):
            requests += 1
            statuses[f"{code[0]}xx"] += 1
    generated = re.search(r"(\d+) generated", tail)
    failures = re.findall(r"❌ (ST\d+ [^:\n]+): (\d+)", tail)
    print(f"cases generated: {generated.group(1) if generated else '?'}; responses recorded: {requests} "
          f"{dict(statuses)}; failures: {', '.join(f'{n} x {w}' for w, n in failures) or 'none'}")
    return 0 if generated and not failures and not statuses.get("5xx") else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-examples", type=int, default=40, help="generated cases per operation and phase")
    ap.add_argument("--max-seconds", type=float, default=900.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--url")
    ap.add_argument("--token")
    args = ap.parse_args()
    if args.url:
        return run(args.url, args.token, args.max_examples, args.max_seconds, args.workers)
    with serve(RATE_BURST_PER_MINUTE="1000000") as srv:
        u = srv.register()
        engine = create_engine(normalise_url(srv.database_url))
        with engine.begin() as conn:
            conn.execute(text("UPDATE users SET tier='pro' WHERE id=:i"), {"i": u["id"]})
        engine.dispose()
        return run(srv.base, u["access"], args.max_examples, args.max_seconds, args.workers)


if __name__ == "__main__":
    raise SystemExit(main())
