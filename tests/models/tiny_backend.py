"""A tiny real backend for the worker/client tests (registered via AMC_EXTRA_BACKENDS).

It does real work: ``steps`` runs a small torch ``nn.Module`` (or a numpy loop) once per
step, reports progress each step and sleeps ``step_s`` between steps, then writes the
result to a ``.npy`` file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from app.models.backends.base import Backend, BackendOutput, BackendStatus, JobContext, WeightsSpec


class TinyBackend(Backend):
    name = "tiny"
    slot = "test"
    title = "Tiny test backend"
    capabilities = frozenset({"analysis"})
    tasks = MappingProxyType(dict.fromkeys(("steps", "noop", "fail", "cache", "log", "crash"), "analysis"))
    extra = None

    def status(self, *, device: str, find_weights: Callable[[WeightsSpec], Path | None]) -> BackendStatus:
        return BackendStatus("ready", "test backend")

    def run(self, task: str, params: Mapping[str, Any], inputs: Mapping[str, Path], ctx: JobContext) -> BackendOutput:
        if task == "noop":
            return BackendOutput(metrics={"device": ctx.device, "pid": os.getpid()})
        if task == "crash":  # a native crash (segfault) inside the worker
            import faulthandler

            ctx.progress(0.5, "about to crash")
            faulthandler._sigsegv()
        if task == "fail":
            raise ValueError(str(params.get("message", "bad input")))
        if task == "log":
            import sys

            print(params.get("text", "hello from the worker"), file=sys.stderr, flush=True)
            return BackendOutput()
        if task == "cache":
            for key, size in params["loads"]:
                ctx.load_cached(key, lambda k=key, s=size: ({"name": k}, s))
            return BackendOutput(metrics={"pid": os.getpid()})
        n = int(params.get("n", 10))
        step_s = float(params.get("step_s", 0.01))
        rng = np.random.default_rng(ctx.seed)
        if params.get("torch"):
            import torch

            torch.manual_seed(ctx.seed or 0)
            net = ctx.load_cached("tiny-mlp", lambda: (torch.nn.Sequential(
                torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 16)), 4096))
            x = torch.from_numpy(rng.standard_normal((4, 16)).astype(np.float32))
            with torch.no_grad():
                for i in range(n):
                    x = net(x)
                    ctx.progress((i + 1) / n, f"step {i + 1}/{n}")
                    time.sleep(step_s)
            y = x.numpy()
        else:
            y = rng.standard_normal((4, 16)).astype(np.float32)
            w = rng.standard_normal((16, 16)).astype(np.float32) / 4.0
            for i in range(n):
                y = np.tanh(y @ w)
                ctx.progress((i + 1) / n, f"step {i + 1}/{n}")
                time.sleep(step_s)
        out = ctx.work_dir / "tiny.npy"
        np.save(out, y)
        return BackendOutput(outputs={"array": out},
                             metrics={"device": ctx.device, "steps": n, "mean": float(np.mean(y)), "pid": os.getpid()})


TINY_WEIGHTS = WeightsSpec("amc-test/tiny-weights", 300_007, "MIT", "https://example.invalid/amc-test/tiny-weights",
                           files=("config.json", "model.safetensors"))


class TinyWeightsBackend(Backend):
    """Needs downloaded weights: ready only once :data:`TINY_WEIGHTS` is found locally."""

    name = "tiny-weights"
    slot = "test-weights"
    title = "Tiny backend with weights"
    capabilities = frozenset({"analysis"})
    tasks = MappingProxyType({"sum": "analysis"})
    weights = (TINY_WEIGHTS,)
    extra = None

    def status(self, *, device: str, find_weights: Callable[[WeightsSpec], Path | None]) -> BackendStatus:
        if find_weights(TINY_WEIGHTS) is None:
            return BackendStatus("weights_missing", "download amc-test/tiny-weights", weights=TINY_WEIGHTS)
        return BackendStatus("ready", "weights found", weights=TINY_WEIGHTS)

    def run(self, task: str, params: Mapping[str, Any], inputs: Mapping[str, Path], ctx: JobContext) -> BackendOutput:
        assert ctx.find_weights is not None
        folder = ctx.find_weights(TINY_WEIGHTS)
        if folder is None:
            raise FileNotFoundError("weights vanished")
        data = (folder / "model.safetensors").read_bytes()
        return BackendOutput(metrics={"byte_sum": int(sum(data[:1000]))})
