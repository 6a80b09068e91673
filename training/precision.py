"""Which mixed-precision policy a run trains in: `TrainConfig.mixed_precision="auto"` decides here.

bfloat16 pays where the hardware multiplies it natively: Intel's AMX (`amx_bf16`, Sapphire
Rapids and later) and a GPU's tensor cores. On a CPU with only `avx512_bf16` (this project's AMD
EPYC) TensorFlow's bfloat16 training step measured as fast as float32 (a DeepLab-v3+ MobileNet-v2
step at 161 px, batch 8: 866 ms against 863), and without either it is emulated and slower. So
"auto" is:

- `"mixed_bfloat16"` on a CPU that reports `amx_bf16` when TensorFlow sees no GPU;
- `None` (float32) everywhere else, GPUs included: Keras already compiles a GPU's step with
  XLA, and the float16/bfloat16 choice there is the user's (`"mixed_float16"` with loss scaling,
  or `"mixed_bfloat16"`).

`"float32"` turns it off explicitly; the heads keep float32 outputs under either policy (their
softmax, box decoding and NMS: see the detectors and `tests/zoo/test_saved_model.py`).
"""

from __future__ import annotations

from pathlib import Path

AUTO = "auto"
FLOAT32 = "float32"
POLICIES = (None, FLOAT32, AUTO, "mixed_float16", "mixed_bfloat16")
# CPU flags under which a bfloat16 training step is faster than float32.
FAST_BFLOAT16_CPU_FLAGS = ("amx_bf16",)


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The flags of the first CPU in `/proc/cpuinfo` (empty where there is no such file)."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def visible_gpus() -> int:
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def resolve_mixed_precision(policy: str | None, *, flags=None, gpus: int | None = None) -> tuple[str | None, str]:
    """`(the Keras policy to set, or None for float32; why)` for a `TrainConfig.mixed_precision`.

    Args:
      policy: None or "float32" (float32), "auto", "mixed_float16" or "mixed_bfloat16".
      flags: the CPU's flags (default: `cpu_flags()`); gpus: the GPUs TensorFlow sees (default:
        `visible_gpus()`). Both only matter for "auto".
    """
    if policy not in POLICIES:
        raise ValueError(f"mixed_precision must be one of {POLICIES}, got {policy!r}")
    if policy in (None, FLOAT32):
        return None, "float32, as asked"
    if policy != AUTO:
        return policy, f"{policy}, as asked"
    gpus = visible_gpus() if gpus is None else gpus
    if gpus:
        return None, f"auto: float32 on the GPU ({gpus} visible); ask for mixed_float16 or mixed_bfloat16"
    flags = cpu_flags() if flags is None else frozenset(flags)
    fast = [flag for flag in FAST_BFLOAT16_CPU_FLAGS if flag in flags]
    if fast:
        return "mixed_bfloat16", f"auto: mixed_bfloat16, the CPU multiplies bfloat16 natively ({', '.join(fast)})"
    return None, "auto: float32, the CPU has no AMX (amx_bf16), where bfloat16 training would not be faster"
