"""Latency of what is served: a classifier's and a segmenter's exports, as clients call them.

For each `--models` entry (default `resnet50` at 224 and `deeplabv3plus_mobilenetv2` at 513),
random weights, batch 1 and 8, uint8 input at the model's size:
- the exported SavedModel's `serving_default` (`zoo.export`): plain, with batch norm folded
  (`fold_batch_norm`), with XLA (`jit_compile`), both, and in bfloat16 (alone and with batch
  norm folded) where the machine has fast bfloat16 (a GPU, or a CPU flag `avx512_bf16` /
  `amx_bf16`; `--bfloat16 on|off|auto`);
  `--dtypes float16` adds float16 for a GPU run;
- onnxruntime (CPU provider, `--threads` threads) on `zoo.export_onnx`'s file, where the
  `onnx` extra is installed.
Each variant's output is checked against the plain export's on the same images: the largest
absolute difference of the probabilities, and the share of equal labels (top-1 for the
classifier, per pixel for the segmenter). The variants take turns (one call each per round),
so that they see the same load; median and min over `--repeats` rounds after `--warmup` calls.

    python bench/export_serving.py                    # writes bench/results/export_serving.{json,md}
    python bench/export_serving.py --dtypes float16 --repeats 50   # on a GPU machine
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench._latency import fast_bfloat16, interleaved, limit_threads, load_average, machine, time_calls, write_results  # noqa: E402

import zoo  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "export_serving"
MODELS = ("resnet50:224", "deeplabv3plus_mobilenetv2:513")
VARIANTS = {
    "plain": {},
    "fold_batch_norm": {"fold_batch_norm": True},
    "jit_compile": {"jit_compile": True},
    "fold_batch_norm + jit_compile": {"fold_batch_norm": True, "jit_compile": True},
}
# What each task's check compares: (the scores, the labels) among the serving outputs.
COMPARED = {"classification": ("probabilities", "classes"), "segmentation": ("logits", "semantic_predictions")}


def _outputs(result) -> dict:
    return {key: np.asarray(value) for key, value in result.items()}


def saved_model_side(model, directory: Path, options: dict):
    """(a call on uint8 images -> the outputs as NumPy, the export's seconds)."""
    start = time.perf_counter()
    zoo.export(model, directory, **options)
    seconds = time.perf_counter() - start
    signature = tf.saved_model.load(str(directory)).signatures["serving_default"]
    return (lambda images: _outputs(signature(input_tensor=tf.constant(images)))), seconds


def onnx_side(model, path: Path, threads: int):
    import onnxruntime

    start = time.perf_counter()
    zoo.export_onnx(model, path)
    seconds = time.perf_counter() - start
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]

    def call(images):
        return dict(zip(names, session.run(None, {"input_tensor": images})))

    return call, seconds


def agreement(task: str, reference: dict, other: dict) -> dict:
    scores, labels = COMPARED[task]
    difference = float(np.abs(reference[scores].astype(np.float32) - other[scores].astype(np.float32)).max())
    same = float(np.mean(reference[labels] == other[labels]))
    return dict(max_abs_diff=round(difference, 5), equal_labels=round(same, 5))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), metavar="NAME:SIZE")
    parser.add_argument("--batches", type=int, nargs="+", default=(1, 8))
    parser.add_argument("--bfloat16", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--dtypes", nargs="*", default=(), choices=("float16",), help="more compute dtypes (GPU)")
    parser.add_argument("--onnx", choices=("auto", "off"), default="auto", help="onnxruntime where installed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    limit_threads(args.threads)
    record = machine(args.threads)
    variants = dict(VARIANTS)
    if {"on": True, "off": False, "auto": fast_bfloat16(record)}[args.bfloat16]:
        variants["bfloat16"] = {"compute_dtype": "bfloat16"}
        # Not with XLA on a CPU: XLA's CPU backend does not reach oneDNN's bfloat16 kernels (slower than float32).
        variants["bfloat16 + fold_batch_norm"] = {"compute_dtype": "bfloat16", "fold_batch_norm": True}
    variants.update({dtype: {"compute_dtype": dtype} for dtype in args.dtypes})
    use_onnx = args.onnx == "auto"
    if use_onnx:
        try:
            import onnxruntime  # noqa: F401
            import tf2onnx  # noqa: F401
        except ImportError:
            use_onnx = False
    report = dict(date=time.strftime("%Y-%m-%d"), machine=record, warmup=args.warmup, repeats=args.repeats,
                  variants=list(variants) + (["onnxruntime"] if use_onnx else []), models=[])
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as scratch:
        for entry in args.models:
            name, _, size = entry.partition(":")
            size = int(size or zoo.describe(name).image_size[0])
            model = zoo.build(name, input_shape=(size, size, 3))
            task = zoo.describe(name).task
            sides, exports = {}, {}
            for label, options in variants.items():
                directory = Path(scratch) / f"{name}-{len(exports)}"
                try:
                    sides[label], exports[label] = saved_model_side(model, directory, options)
                except Exception as error:  # record what does not export, never hide it
                    exports[label] = f"fails: {str(error).splitlines()[0][:200]}"
            if use_onnx:
                try:
                    sides["onnxruntime"], exports["onnxruntime"] = onnx_side(model, Path(scratch) / f"{name}.onnx",
                                                                             args.threads)
                except Exception as error:
                    exports["onnxruntime"] = f"fails: {str(error).splitlines()[0][:200]}"
            for batch in args.batches:
                images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
                reference = sides["plain"](images)  # every variant is checked against it, once
                checks = {label: agreement(task, reference, reference if label == "plain" else call(images))
                          for label, call in sides.items()}
                timings = interleaved({label: (lambda count, call=call: time_calls(lambda: call(images), count))
                                       for label, call in sides.items()}, warmup=args.warmup, rounds=args.repeats)
                for label in exports:
                    row = dict(model=name, size=size, task=task, batch=batch, variant=label)
                    if isinstance(exports[label], str):
                        row["error"] = exports[label]
                    else:
                        row.update(timings[label], export_s=round(exports[label], 1), **checks[label])
                    report["models"].append(row)
                    if "median_ms" in row:
                        print(f"{name} {label:45s} batch {batch}: median {row['median_ms']:8.1f} ms, "
                              f"min {row['min_ms']:8.1f} ms", flush=True)
    report["machine"]["load_average_at_end"] = load_average()
    write_results(args.out, report, markdown(report))
    return 0


def markdown(report) -> str:
    m = report["machine"]
    lines = [
        f"# Exported models' serving latency ({report['date']})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, GPUs: {m['gpus'] or 'none'}; CPU flags: {m['flags']}; "
        f"TensorFlow {m['tensorflow']}, TF_ENABLE_ONEDNN_OPTS={m['TF_ENABLE_ONEDNN_OPTS']}, {m['threads']} threads "
        f"(onnxruntime too). Load average (1, 5, 15 min) {m['load_average_at_start']} at the start, "
        f"{m['load_average_at_end']} at the end.",
        f"Random weights, uint8 input at the model's size; SavedModel rows: `serving_default` of the loaded export; "
        f"milliseconds per call, median and min of {report['repeats']} calls after {report['warmup']} warm-up calls, "
        "the variants taking turns. \"vs plain\": the plain SavedModel's minimum over the row's. \"max abs diff\": "
        "the largest difference from the plain export's output on the same images, of a probability (classifier) or "
        "a logit (segmenter); \"labels\": the share of equal top-1 labels (classifier) or pixel labels (segmenter). `python bench/export_serving.py` writes "
        "this file.",
        "",
        "| model | size | batch | variant | median ms | min ms | ms / image | vs plain | max abs diff | labels | export s |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    plain = {(row["model"], row["batch"]): row for row in report["models"] if row["variant"] == "plain"}
    for row in report["models"]:
        head = f"| {row['model']} | {row['size']} | {row['batch']} | {row['variant']} |"
        if "error" in row:
            lines.append(f"{head} {row['error']} | | | | | | |")
            continue
        base = plain.get((row["model"], row["batch"]), {})
        ratio = f"{base['min_ms'] / row['min_ms']:.2f}x" if "min_ms" in base else ""
        lines.append(f"{head} {row['median_ms']:.1f} | {row['min_ms']:.1f} | {row['median_ms'] / row['batch']:.1f} | "
                     f"{ratio} | {row.get('max_abs_diff', '')} | {row.get('equal_labels', '')} | "
                     f"{row['export_s']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
