"""What bench/detection_latency.py and bench/deeplab_latency.py share: the machine record, a
peer process in its own virtual environment (see bench/_peer.py), and interleaved timing.

Interleaving: after each side's warm-up, the zoo's models and the peer take turns, `per_round`
timed calls each, for `rounds` rounds (zoo, peer, zoo, peer, ...). The machine is shared with other
jobs; taking turns spreads whatever load there is over both sides alike, which back-to-back
blocks of runs would not. Medians and minimums are over all timed calls of a side.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import tensorflow as tf

from bench._machine import FLAGS_OF_INTEREST, cpu_model_and_flags  # noqa: F401  (re-exported)


def limit_threads(threads: int) -> None:
    """TensorFlow's intra- and inter-op pools; must run before TensorFlow executes anything."""
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def load_average() -> list[float]:
    return [round(load, 2) for load in os.getloadavg()]


def fast_bfloat16(record: dict) -> bool:
    """Whether bfloat16 compute can pay on this machine: a GPU, or a CPU with bfloat16 instructions."""
    return bool(record["gpus"]) or any(flag in record["flags"] for flag in ("avx512_bf16", "amx_bf16"))


def machine(threads: int) -> dict:
    cpu, flags = cpu_model_and_flags()
    return dict(
        cpu=cpu, flags=flags, cores=os.cpu_count(), gpus=[d.name for d in tf.config.list_physical_devices("GPU")],
        python=platform.python_version(), tensorflow=tf.__version__,
        TF_ENABLE_ONEDNN_OPTS=os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (off on AVX2 CPUs)"),
        threads=threads, load_average_at_start=load_average(),
        shared="the machine is shared with other jobs (tests, benchmarks); see the load averages",
    )


def summary(times_ms: list[float]) -> dict:
    return dict(median_ms=statistics.median(times_ms), min_ms=min(times_ms), runs=len(times_ms),
                times_ms=[round(t, 1) for t in times_ms])


class Peer:
    """A peer benchmark script running in another Python (its own venv), driven over pipes."""

    def __init__(self, python: str, script: Path, args: list[str], *, cwd: Path):
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        # stderr to a file, not a pipe: a peer's logs must never fill a pipe nobody reads and stall it.
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [python, str(script), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.log, text=True, cwd=cwd, env=env,
        )
        self.describe = self._answer()

    def _answer(self) -> dict:
        while True:
            line = self.process.stdout.readline()
            if not line:
                self.process.wait(timeout=60)
                self.log.seek(0)
                error = self.log.read()
                raise RuntimeError(f"the peer exited without answering; its stderr ends with:\n{error[-3000:]}")
            if line.startswith("{"):  # anything a library printed before `serve` took stdout over is skipped
                return json.loads(line)

    def run(self, count: int) -> list[float]:
        self.process.stdin.write(f"run {count}\n")
        self.process.stdin.flush()
        answer = self._answer()
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer["times_ms"]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.write("quit\n")
            self.process.stdin.flush()
            self.process.wait(timeout=60)
        self.log.close()


def time_calls(fn, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def interleaved(sides: dict, *, warmup: int, rounds: int, per_round: int = 1) -> dict:
    """Warm every side up, then take turns: `sides` maps a name to `timed(count) -> [ms, ...]`
    (`lambda count: time_calls(fn, count)` for the zoo, `peer.run` for a peer). Returns a
    summary per side."""
    for timed in sides.values():
        timed(warmup)
    times = {name: [] for name in sides}
    for _ in range(rounds):
        for name, timed in sides.items():
            times[name] += timed(per_round)
    return {name: summary(values) for name, values in times.items()}


def write_results(out, report: dict, text: str) -> None:
    """`out`.json (the report) and `out`.md (`text`), each written under a temporary name and renamed."""
    import json

    out.parent.mkdir(parents=True, exist_ok=True)
    for suffix, content in ((".json", json.dumps(report, indent=1) + "\n"), (".md", text + "\n")):
        temporary = out.with_suffix(suffix + ".tmp")
        temporary.write_text(content)
        temporary.replace(out.with_suffix(suffix))
    print(text)
