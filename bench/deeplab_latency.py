"""Inference latency of `deeplabv3plus_resnet50` beside keras-hub's DeepLabV3Plus (ResNet-50).

The case of issue 6: one 512 x 512 image of random pixels, batch 1, random weights, 21
classes, output stride 16, `model(images, training=False)` in one `tf.function` (`--xla`: with
`jit_compile=True` on both sides). keras-hub's model (bench/keras_hub_deeplab.py, built from its
classes, no preset) runs in its own virtual environment, keras-hub never being a dependency of
the zoo; after `--warmup` calls each, the two take turns (zoo, keras-hub, zoo, ...) for
`--rounds` rounds, so that both see the same load on this shared machine. Both sides get
`--threads` TensorFlow threads (2). Parameter counts and FLOPs (bench/_flops.py: TensorFlow's
profiler on the frozen inference graph, the same rules for both) are recorded beside them.

`--profile` adds where the zoo's time goes: the model cut at its main stages (backbone to C2 and
to the stride-16 map, ASPP, decoder, logits), each prefix timed alone, so the differences are
the stages' costs.

    python bench/deeplab_latency.py          # writes bench/results/deeplab_latency.{json,md}
    KERAS_HUB_PYTHON=/path/to/venv/bin/python python bench/deeplab_latency.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._flops import inference_flops  # noqa: E402
from bench._latency import (  # noqa: E402
    Peer, interleaved, limit_threads, load_average, machine, summary, time_calls, write_results,
)

import zoo  # noqa: E402

MODEL = "deeplabv3plus_resnet50"
RESULTS = ROOT / "bench" / "results" / "deeplab_latency"
PEER = "keras-hub DeepLabV3Plus (ResNet-50)"


def stage_outputs(model) -> dict:
    """The zoo model's tensors at the ends of its main stages, in order: the backbone's maps
    are found as the inputs of the head's first layers (zoo/segmentation/deeplabv3plus.py's
    names), whatever the backbone's own layer names."""
    stages = {}
    for label, layer_name, end in (("backbone to C2 (stride 4)", "feature_projection0", "input"),
                                   ("backbone to stride 16", "aspp", "input"), ("ASPP", "aspp", "output"),
                                   ("decoder", "decoder_conv1_pointwise_relu", "output"),
                                   ("logits (stride 4)", "logits_semantic", "output"),
                                   ("upsampled logits (whole model)", "upsample_logits", "output")):
        try:
            stages[label] = getattr(model.get_layer(layer_name), end)
        except ValueError:
            pass  # a renamed layer drops out of the profile, never out of the benchmark
    return stages


def profile_stages(model, images, repeats) -> list[dict]:
    rows, previous = [], 0.0
    for label, tensor in stage_outputs(model).items():
        prefix = keras.Model(model.input, tensor)
        forward = tf.function(lambda x, prefix=prefix: prefix(x, training=False))

        def call(forward=forward):
            forward(images).numpy()

        time_calls(call, 2)
        timing = summary(time_calls(call, repeats))
        rows.append(dict(stage=label, prefix_min_ms=timing["min_ms"], stage_ms=timing["min_ms"] - previous))
        previous = timing["min_ms"]
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8, help="timed calls per side, taken in turns")
    parser.add_argument("--xla", action="store_true", help="jit_compile=True on both sides")
    parser.add_argument("--profile", action="store_true", help="also time the zoo model's stages")
    parser.add_argument("--keras-hub-python", default=os.environ.get("KERAS_HUB_PYTHON", "/work/kh-venv/bin/python"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    limit_threads(args.threads)
    keras.utils.set_random_seed(0)
    report = dict(date=time.strftime("%Y-%m-%d"), machine=machine(args.threads), size=args.size,
                  output_stride=16, num_classes=20, xla=args.xla, warmup=args.warmup, rounds=args.rounds, models={})
    model = zoo.build(MODEL, num_classes=20, output_stride=16)
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, args.size, args.size, 3)).astype(np.float32))
    forward = tf.function(lambda x: model(x, training=False), jit_compile=args.xla)

    def call():
        forward(images).numpy()  # reading the result waits for it

    report["models"][MODEL] = dict(
        parameters=model.count_params(), logits_shape=list(forward(images).shape), tensorflow=tf.__version__,
        keras=keras.__version__, flops=inference_flops(model, (1, args.size, args.size, 3)),
    )
    sides = {MODEL: lambda count: time_calls(call, count)}
    peer = None
    if args.keras_hub_python and Path(args.keras_hub_python).exists():
        peer = Peer(args.keras_hub_python, ROOT / "bench" / "keras_hub_deeplab.py",
                    ["--size", str(args.size), "--threads", str(args.threads)] + (["--jit"] if args.xla else []),
                    cwd=ROOT)
        sides[PEER] = peer.run
        report["models"][PEER] = dict(peer.describe)
    try:
        timings = interleaved(sides, warmup=args.warmup, rounds=args.rounds)
    finally:
        if peer is not None:
            peer.close()
    for label, timing in timings.items():
        report["models"][label].update(timing)
    if args.profile:
        report["profile"] = profile_stages(model, images, max(args.rounds // 2, 3))
    report["machine"]["load_average_at_end"] = load_average()

    write_results(args.out, report, markdown(report))
    return 0


def _gflops(flops, op_types) -> float:
    return sum(flops["by_op"].get(op, 0) for op in op_types) / 1e9


def markdown(report) -> str:
    m = report["machine"]
    mode = "`tf.function(jit_compile=True)` (XLA)" if report["xla"] else "`tf.function` (no XLA)"
    lines = [
        f"# DeepLab-v3+ inference latency ({report['date']})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, GPUs: {m['gpus'] or 'none'}; TensorFlow {m['tensorflow']}, "
        f"TF_ENABLE_ONEDNN_OPTS={m['TF_ENABLE_ONEDNN_OPTS']} on both sides, {m['threads']} intra-op and inter-op "
        "threads on both sides.",
        f"The machine is shared with other jobs: load average (1, 5, 15 min) {m['load_average_at_start']} at the "
        f"start, {m['load_average_at_end']} at the end. The two models took turns (one call each per round) so that "
        "they saw the same load; the minimum is the steadier figure.",
        f"One {report['size']} x {report['size']} image of random pixels, batch 1, random weights, "
        f"{report['num_classes']} classes + background, output stride {report['output_stride']}, {mode}; milliseconds, median and "
        f"min of {report['rounds']} timed calls after {report['warmup']} warm-up calls. GFLOPs (bench/_flops.py, the "
        "same count in both venvs): 2 x the multiply-adds of every convolution and matmul in the frozen inference "
        "graph, from the ops' shapes; *run* counts what TensorFlow executes (it computes an atrous convolution over the "
        "map zero-padded for SpaceToBatchND: at rate 18 on a 32 x 32 map, 1296 output positions for 1024), *nominal* "
        "the atrous convolutions over their real outputs only. `python bench/deeplab_latency.py --profile` writes this "
        "file.",
        "",
        "| model | parameters | GFLOPs run | GFLOPs nominal | of which Conv2D (run) | of which depthwise | median ms | min ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, row in report["models"].items():
        if "median_ms" not in row:
            continue
        flops = row["flops"]
        lines.append(f"| {label} | {row['parameters']:,} | {flops['total'] / 1e9:.1f} | {flops['nominal'] / 1e9:.1f} | "
                     f"{_gflops(flops, ['Conv2D']):.1f} | {_gflops(flops, ['DepthwiseConv2dNative']):.1f} | "
                     f"{row['median_ms']:.0f} | {row['min_ms']:.0f} |")
    zoo_row, peer_row = report["models"].get(MODEL), report["models"].get(PEER)
    if peer_row and "min_ms" in peer_row:
        speedup = peer_row["min_ms"] / zoo_row["min_ms"]
        lines += ["", f"**zoo / keras-hub speed: {speedup:.2f}x** (minimums; medians "
                  f"{peer_row['median_ms'] / zoo_row['median_ms']:.2f}x; above 1 means the zoo is faster). "
                  f"Target of issue 6: at least 1.3x, {'met' if speedup >= 1.3 else 'not met'} in this run.",
                  "", f"keras-hub {peer_row['keras_hub']} (Keras {peer_row['keras']}, TensorFlow "
                  f"{peer_row['tensorflow']}) in its own virtual environment; zoo with Keras {zoo_row['keras']}."]
    else:
        lines += ["", "keras-hub was not available in this run."]
    if report.get("profile"):
        lines += ["", "Where the zoo's time goes: the model cut after each stage, each prefix timed alone (min of "
                  "its calls); a stage's cost is the difference from the previous prefix, so differences of a few tens of "
                  "milliseconds, negative ones included, are within the noise of this shared machine.", "",
                  "| stage | prefix min ms | stage ms |", "|---|---:|---:|"]
        lines += [f"| {row['stage']} | {row['prefix_min_ms']:.0f} | {row['stage_ms']:.0f} |" for row in report["profile"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
