"""The machine a bench result comes from: CPU model and the flags its speed depends on.

Standard library only, so that every bench records the machine the same way, those that never
import TensorFlow (a peer's side, the checkpoint reader's parity) included.
"""

from __future__ import annotations

import platform
from pathlib import Path

# The CPU flags a result depends on: vector width, and fast bfloat16 / int8 (oneDNN's paths).
FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")


def cpu_model_and_flags() -> tuple[str, list[str]]:
    """The CPU's model name and which of `FLAGS_OF_INTEREST` it reports (Linux `/proc/cpuinfo`;
    elsewhere `platform`'s name and no flags)."""
    cpu, flags = None, []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu is None:
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                present = set(line.split(":", 1)[1].split())
                flags = [flag for flag in FLAGS_OF_INTEREST if flag in present]
    except OSError:
        pass
    return cpu or platform.processor() or platform.machine() or "unknown", flags
