"""The peer side of an interleaved latency benchmark (stdlib only: peers run in their own venvs).

A peer script (bench/torchvision_detection.py, bench/keras_hub_deeplab.py) builds its model,
then calls `serve(describe, run_once)`: it prints one JSON line describing the model (`describe`
must include whatever the caller reports: versions, parameter counts) and then answers the
caller's commands on stdin, one per line, so that the caller can alternate its own timed runs
with the peer's and both see the same machine load:

    run K     K timed calls of `run_once`; answers {"times_ms": [...]}
    quit      exits

Anything else the peer's libraries print goes to stderr, so stdout carries only JSON lines.
"""

from __future__ import annotations

import json
import sys
import time


def serve(describe: dict, run_once) -> None:
    protocol = sys.stdout
    sys.stdout = sys.stderr  # stray prints from the libraries must not break the protocol
    print(json.dumps(describe), file=protocol, flush=True)
    for line in sys.stdin:
        command = line.split()
        if not command:
            continue
        if command[0] == "quit":
            return
        if command[0] != "run" or len(command) != 2:
            print(json.dumps({"error": f"unknown command {line.strip()!r}"}), file=protocol, flush=True)
            continue
        times = []
        for _ in range(int(command[1])):
            start = time.perf_counter()
            run_once()
            times.append((time.perf_counter() - start) * 1000.0)
        print(json.dumps({"times_ms": times}), file=protocol, flush=True)
