"""Parity of `zoo.torch_checkpoint` with torch itself: files written by `torch.save` read bit for bit.

Two roles in one script, as torch is never a dependency of the zoo:

    python bench/torch_checkpoint_parity.py   # the zoo's Python; writes bench/results/torch_checkpoint_parity.{json,md}
    TORCH_PYTHON=/path/to/venv/bin/python python bench/torch_checkpoint_parity.py

The zoo's side runs `$TORCH_PYTHON bench/torch_checkpoint_parity.py --write DIR` (default
/work/tv-venv/bin/python), which saves, each in torch's zip format and in its legacy format
(`_use_new_zipfile_serialization=False`, the format of torchvision's published COCO weights):

- `fasterrcnn`: the state dict of torchvision's `fasterrcnn_resnet50_fpn(weights=None,
  weights_backbone=None)` (random initialisation; the COCO file itself needs the network);
- `dtypes`: one tensor of every dtype the reader supports (bfloat16 included), a transposed and
  a strided slice of one storage, views sharing a storage at offsets, a zero-dim and an empty
  tensor, and `nn.Parameter`s (saved with keep_vars=True, so `_rebuild_parameter` is exercised);
- `hostile`: a dict whose pickle asks for `os.system` (a command that would write a marker file);

with each tensor of the first two as `.npy` (bfloat16 as float32, exactly) for the reference,
and times `torch.load(weights_only=True)` of the Faster R-CNN files. The zoo's side then reads
every file with `read_state_dict` and compares names, order, dtypes, shapes and bytes with the
reference, checks that both torch (weights_only=True) and the zoo refuse the hostile file without
running the command, and times its own reading.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
FORMATS = {"zip": True, "legacy": False}  # format -> torch.save's _use_new_zipfile_serialization


# --------------------------------------------------------------------------- torch's side


def dtype_state(torch):
    """Tensors of every supported dtype and layout, as a state dict with views and parameters."""
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(6, 8, generator=generator)
    shared = torch.arange(40, dtype=torch.int64)
    state = {
        "float32": torch.randn(3, 4, generator=generator),
        "float64": torch.randn(5, generator=generator, dtype=torch.float64),
        "float16": torch.randn(2, 3, generator=generator).half(),
        "bfloat16": torch.randn(4, 2, generator=generator).bfloat16(),
        "int64": torch.randint(-(2**40), 2**40, (7,), generator=generator),
        "int32": torch.randint(-(2**30), 2**30, (2, 2), generator=generator, dtype=torch.int32),
        "int16": torch.randint(-(2**15), 2**15, (3,), generator=generator, dtype=torch.int16),
        "int8": torch.randint(-128, 128, (4,), generator=generator, dtype=torch.int8),
        "uint8": torch.randint(0, 256, (4,), generator=generator, dtype=torch.uint8),
        "bool": torch.randn(5, generator=generator) > 0,
        "transposed": base.t(),
        "strided_slice": base[1:5:2, ::3],
        "shared_head": shared[:10],
        "shared_tail": shared[25:],
        "shared_matrix": shared[4:36].view(4, 8)[:, 1::2],
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 3),
        "expanded": torch.arange(3.0).expand(4, 3),
    }
    module = torch.nn.Linear(3, 2)
    state.update({f"linear.{name}": value for name, value in module.state_dict(keep_vars=True).items()})
    return state


def write(directory: Path) -> None:
    import numpy as np
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    states = {"fasterrcnn": model.state_dict(), "dtypes": dtype_state(torch)}
    info = {"torch": torch.__version__, "torchvision": torchvision.__version__, "files": {}, "torch_load_s": {}}
    for name, state in states.items():
        reference = directory / f"{name}_reference"
        reference.mkdir()
        for index, value in enumerate(state.values()):
            value = value.detach()
            value = value.float() if value.dtype == torch.bfloat16 else value
            np.save(reference / f"{index}.npy", value.contiguous().numpy())
        info["files"][name] = {"names": list(state), "dtypes": [str(value.dtype) for value in state.values()]}
        for format_name, zip_format in FORMATS.items():
            path = directory / f"{name}_{format_name}.pth"
            torch.save(state, path, _use_new_zipfile_serialization=zip_format)
            if name == "fasterrcnn":
                start = time.perf_counter()
                torch.load(path, weights_only=True)
                info["torch_load_s"][format_name] = time.perf_counter() - start

    marker = directory / "hostile_ran"

    class Hostile:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    for format_name, zip_format in FORMATS.items():
        path = directory / f"hostile_{format_name}.pth"
        torch.save({"weight": torch.ones(2), "payload": Hostile()}, path, _use_new_zipfile_serialization=zip_format)
        try:
            torch.load(path, weights_only=True)
            info[f"torch_refuses_hostile_{format_name}"] = False
        except Exception as error:  # torch's UnpicklingError
            info[f"torch_refuses_hostile_{format_name}"] = type(error).__name__
    info["hostile_ran_under_torch"] = marker.exists()
    (directory / "torch_side.json").write_text(json.dumps(info))


# --------------------------------------------------------------------------- the zoo's side


def compare(path: Path, reference: Path, names: list[str], torch_dtypes: list[str]) -> dict:
    import numpy as np

    from zoo.torch_checkpoint import read_state_dict

    start = time.perf_counter()
    state = read_state_dict(path)
    seconds = time.perf_counter() - start
    problems = []
    if list(state) != names:
        problems.append("names or order differ")
    for index, (name, torch_dtype) in enumerate(zip(names, torch_dtypes)):
        expected = np.load(reference / f"{index}.npy")
        got = state.get(name)
        if got is None:
            continue
        if got.dtype != expected.dtype or got.shape != expected.shape:
            problems.append(f"{name}: {got.dtype}{got.shape} vs {torch_dtype}->{expected.dtype}{expected.shape}")
        elif not (got.flags.c_contiguous and got.tobytes() == expected.tobytes()):
            problems.append(f"{name}: bytes differ")
    return {
        "file": path.name, "bytes": path.stat().st_size, "tensors": len(state),
        "elements": int(sum(array.size for array in state.values())),
        "bit_exact": not problems, "problems": problems[:20], "read_s": round(seconds, 3),
    }




def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="DIR", help="(torch's side) write the checkpoints and references into DIR")
    parser.add_argument("--torch-python", default=os.environ.get("TORCH_PYTHON", "/work/tv-venv/bin/python"))
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.write:
        write(Path(args.write))
        return 0

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(ROOT))
    from zoo.torch_checkpoint import TorchCheckpointError, read_state_dict

    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        subprocess.run([args.torch_python, __file__, "--write", scratch], check=True)
        torch_side = json.loads((directory / "torch_side.json").read_text())
        rows = []
        for name, listing in torch_side["files"].items():
            for format_name in FORMATS:
                row = compare(directory / f"{name}_{format_name}.pth", directory / f"{name}_reference",
                              listing["names"], listing["dtypes"])
                rows.append({"state": name, "format": format_name, **row})
        hostile = {}
        for format_name in FORMATS:
            try:
                read_state_dict(directory / f"hostile_{format_name}.pth")
                hostile[format_name] = "read (not refused!)"
            except TorchCheckpointError as error:
                hostile[format_name] = str(error).split(": ", 1)[1][:160]
        hostile_ran = (directory / "hostile_ran").exists()

    import numpy as np

    from bench._machine import cpu_model_and_flags

    cpu, flags = cpu_model_and_flags()
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": {"cpu": cpu, "flags": flags, "cores": os.cpu_count(), "python": platform.python_version(),
                    "numpy": np.__version__, "torch": torch_side["torch"], "torchvision": torch_side["torchvision"]},
        "rows": rows, "torch_load_weights_only_s": torch_side["torch_load_s"],
        "zoo_refuses_hostile": hostile,
        "torch_refuses_hostile": {f: torch_side[f"torch_refuses_hostile_{f}"] for f in FORMATS},
        "hostile_command_ran": hostile_ran or torch_side["hostile_ran_under_torch"],
    }
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / "torch_checkpoint_parity.json").write_text(json.dumps(result, indent=2) + "\n")
    (results / "torch_checkpoint_parity.md").write_text(report(result))
    print(report(result))
    everything_fine = (all(row["bit_exact"] for row in rows) and not result["hostile_command_ran"]
                       and not any(text.startswith("read") for text in hostile.values()))
    return 0 if everything_fine else 1


def report(result: dict) -> str:
    machine = result["machine"]
    lines = [
        f"# zoo.torch_checkpoint against torch.save ({result['date']})",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores; Python {machine['python']}, NumPy {machine['numpy']}; "
        f"files written by torch {machine['torch']}, torchvision {machine['torchvision']} "
        f"(bench/torch_checkpoint_parity.py).",
        "",
        "Every tensor compared with torch's own (`tensor.contiguous().numpy()`, bfloat16 as `.float()`): names and "
        "their order, dtype, shape and bytes.",
        "",
        "| state dict | format | file MB | tensors | elements | bit-exact | zoo read s |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for row in result["rows"]:
        lines.append(f"| {row['state']} | {row['format']} | {row['bytes'] / 1e6:.1f} | {row['tensors']} | "
                     f"{row['elements']:,} | {'yes' if row['bit_exact'] else 'NO: ' + '; '.join(row['problems'])} | "
                     f"{row['read_s']:.3f} |")
    torch_load = ", ".join(f"{name} {seconds:.3f} s" for name, seconds in result["torch_load_weights_only_s"].items())
    lines += [
        "",
        f"torch.load(weights_only=True) of the Faster R-CNN files, for scale: {torch_load}.",
        "",
        "A file whose pickle asks for `os.system` (torch.save of an object whose `__reduce__` returns it):",
    ]
    for name in FORMATS:
        lines.append(f"- {name}: zoo refuses ({result['zoo_refuses_hostile'][name]} ...); "
                     f"torch.load(weights_only=True): {result['torch_refuses_hostile'][name]}")
    lines += ["", f"The command ran: {'YES' if result['hostile_command_ran'] else 'no'}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
