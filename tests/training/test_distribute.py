"""MirroredStrategy over two logical CPUs and MultiWorkerMirroredStrategy with two worker
processes on 127.0.0.1 train to the same weights as one device."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.distribute import is_chief, make_strategy

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 600


def _run(out, *arguments, env=None):
    command = [sys.executable, "-m", "tests.training.strategy_run", "--out", str(out), *arguments]
    return subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _finish(process):
    output, _ = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, output[-3000:]


def _weights(out):
    with np.load(Path(out) / "weights.npz") as saved:
        return [saved[key] for key in sorted(saved.files, key=lambda k: int(k.split("_")[1]))]


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    out = tmp_path_factory.mktemp("one_device")
    _finish(_run(out))
    return _weights(out)


def _assert_same(weights, reference):
    assert len(weights) == len(reference)
    for ours, theirs in zip(weights, reference):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    # And training did move them: the comparison is not between two untrained models.
    assert not np.allclose(reference[-1], 0)


@pytest.mark.slow
def test_mirrored_over_two_logical_cpus_matches_one_device(one_device, tmp_path):
    _finish(_run(tmp_path, "--strategy", "mirrored", "--logical-cpus", "2"))
    _assert_same(_weights(tmp_path), one_device)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@pytest.mark.slow
def test_multi_worker_with_two_processes_matches_one_device(one_device, tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(_run(tmp_path, "--strategy", "multi_worker", env={"TF_CONFIG": json.dumps(config)}))
    try:
        for process in processes:
            _finish(process)
    finally:
        for process in processes:
            process.kill()
    _assert_same(_weights(tmp_path), one_device)
    # Only the chief wrote the run.
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "backup", "best.keras", "history.json", "logs", "model.keras", "run.json", "weights.npz"
    ]


def test_strategy_names_and_chief(monkeypatch):
    with pytest.raises(ValueError, match="strategy"):
        make_strategy("tpu")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        make_strategy("multi_worker")
    assert is_chief()
    cluster = {"worker": ["a:1", "b:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    assert not is_chief()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    assert is_chief()
