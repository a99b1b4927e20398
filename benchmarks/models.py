"""Model worker figures: spawn-to-ready, job dispatch overhead, cancel latency (and backend RTF).

    python benchmarks/models.py                 # worker figures, CPU
    python benchmarks/models.py --runs 50
    python benchmarks/models.py --rtf --device cuda   # + real-time factor of every backend
                                                      #   that offers random_full_size()

Dispatch overhead is measured with a no-op backend (defined here, registered through
``AMC_EXTRA_BACKENDS``): submit -> ``Started`` (backend chosen, about to run) and
submit -> ``Result``.  Cancel latency: ``handle.cancel()`` -> ``Failed(kind="cancelled")``
for a job that calls ``ctx.progress`` every 10 ms.

``--rtf`` builds each backend's full-size architecture with random weights (a backend
opts in with a ``random_full_size()`` classmethod returning ``bench(device, duration_s)
-> metrics``; see ``app/models/backends/base.py``), runs it in this process on
``--device`` and prints compute seconds per second of audio; no weights download needed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from app.models.backends.base import Backend, BackendOutput, BackendStatus, JobContext, WeightsSpec  # noqa: E402


class NoopBackend(Backend):
    """Returns at once (``noop``) or ticks progress every ``step_s`` (``tick``)."""

    name = "bench-noop"
    slot = "bench"
    title = "benchmark no-op"
    capabilities = frozenset({"analysis"})
    extra = None

    def status(self, *, device: str, find_weights: Callable[[WeightsSpec], Path | None]) -> BackendStatus:
        return BackendStatus("ready", "benchmark backend")

    def run(self, task: str, params: Mapping[str, Any], inputs: Mapping[str, Path], ctx: JobContext) -> BackendOutput:
        if task == "tick":
            for i in range(int(params.get("n", 100_000))):
                ctx.progress(i / 100_000, "")
                time.sleep(float(params.get("step_s", 0.01)))
        return BackendOutput()


def _fmt(name: str, xs: list[float], unit: str = "ms", scale: float = 1000.0) -> str:
    return (f"{name:<34} median {statistics.median(xs) * scale:8.2f} {unit}   "
            f"max {max(xs) * scale:8.2f} {unit}   (n={len(xs)})")


def bench_worker(runs: int, device: str | None) -> None:
    from app.models.client import ModelClient
    from app.models.protocol import Job, Progress, Started

    home = Path(tempfile.mkdtemp(prefix="amc-bench-"))
    env = {"AMC_EXTRA_BACKENDS": "benchmarks.models:NoopBackend", "AMC_HOME": str(home),
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    spawn: list[float] = []
    close: list[float] = []
    for _ in range(max(3, runs // 10)):
        t0 = time.perf_counter()
        c = ModelClient(device=device, log_path=home / "worker.log", env=env)
        c.wait_ready(120)
        spawn.append(time.perf_counter() - t0)
        t1 = time.perf_counter()
        c.close()
        close.append(time.perf_counter() - t1)
    print(_fmt("worker spawn -> ready", spawn))
    print(_fmt("close()", close))

    with ModelClient(device=device, log_path=home / "worker.log", env=env) as c:
        hello = c.wait_ready(120)
        print(f"worker pid {hello.pid} on {hello.device} (torch {hello.torch_version})")
        out = str(home / "out")
        c.submit(Job.create("bench", "noop", output_dir=out)).wait(60)  # warm: registry imported
        to_start: list[float] = []
        to_result: list[float] = []
        for _ in range(runs):
            t0 = time.perf_counter()
            started: list[float] = []
            h = c.submit(Job.create("bench", "noop", output_dir=out),
                         on_event=lambda _h, ev, s=started: s.append(time.perf_counter()) if isinstance(ev, Started) else None)
            h.wait(60)
            t1 = time.perf_counter()
            to_start.append(started[0] - t0)
            to_result.append(t1 - t0)
        print(_fmt("dispatch: submit -> backend start", to_start))
        print(_fmt("dispatch: submit -> result (no-op)", to_result))

        cancel: list[float] = []
        for _ in range(max(5, runs // 5)):
            h = c.submit(Job.create("bench", "tick", output_dir=out, params={"step_s": 0.01}))
            for ev in h.events(timeout=60):
                if isinstance(ev, Progress):
                    break
            t0 = time.perf_counter()
            h.cancel()
            try:
                h.wait(10)
            except Exception:
                pass
            cancel.append(time.perf_counter() - t0)
        print(_fmt("cancel -> Failed(cancelled)", cancel))


def bench_rtf(device: str, seconds: float, only: str | None) -> None:
    """Real-time factor of every backend that can build itself full size with random weights."""
    from app.models import registry

    found = False
    for spec, entries in registry.slot_entries():
        for entry in entries:
            if not isinstance(entry, type) or getattr(entry, "random_full_size", None) is None:
                continue
            if only is not None and only not in (entry.key(), spec.key):
                continue
            found = True
            bench = entry.random_full_size()  # type: ignore[attr-defined]
            t0 = time.perf_counter()
            bench(device, 1.0)  # builds the model and warms up kernels
            warm = time.perf_counter() - t0
            m = bench(device, seconds)
            print(f"{spec.key:<14} {entry.key():<26} build+warm-up {warm:6.1f} s   "
                  f"{m.get('duration_s')} s audio in {m.get('compute_s')} s   "
                  f"RTF {m.get('real_time_factor')} (compute s / audio s) on {device}")
    if not found:
        print("no backend offers random_full_size()" + (f" named {only!r}" if only else ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=30, help="dispatch runs (default 30)")
    p.add_argument("--device", default="cpu", help="worker device (cpu, cuda, mps, auto = CUDA > MPS > CPU)")
    p.add_argument("--rtf", action="store_true", help="also time every backend's full-size architecture")
    p.add_argument("--rtf-seconds", type=float, default=5.0, help="seconds of audio per RTF run (default 5)")
    p.add_argument("--rtf-backend", default=None, help="only this backend (name) or slot")
    p.add_argument("--skip-worker", action="store_true", help="skip the worker figures")
    args = p.parse_args(argv)
    if not args.skip_worker:
        bench_worker(args.runs, None if args.device == "auto" else args.device)
    if args.rtf:
        bench_rtf(args.device, args.rtf_seconds, args.rtf_backend)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
