"""Training throughput: images per second of one compiled training step, float32 and bfloat16,
and of the input pipeline alone.

Cases (`--models`), random weights, synthetic data (`training.data.synthetic`):
- `resnet50` and `keras_applications_resnet50`: `keras.applications.ResNet50` holding the zoo
  model's weights, copied by layer name (the same weights: a forward pass of both on the same
  pixels is compared, keras.applications given `preprocess_input(pixels)` as its documentation
  says, the zoo the raw pixels it normalises in its graph); 1000 classes, SGD with momentum
  0.9 (the classifiers' recipe), sparse cross-entropy, top-1/top-5 metrics, random labels;
- the detectors (`faster_rcnn_mobilenetv2`, `faster_rcnn_resnet50`, `faster_rcnn_resnet50_fpn`)
  trained as `zoo train` trains them (`training.tasks.TASKS["detection"].wrap`: the RPN and the
  head jointly, 32 sampled RoIs per image, Adam) on synthetic shapes (4 classes, up to 3
  objects). One anchor grid (R50-C4 and its like): bench/fast_rcnn_synthetic.py's small-image
  RPN (anchors 16 to 96 px, 1024 boxes into NMS and 128 proposals per image in training,
  minimum side 4 px) and `zoo.detection.sizing.detector_overrides`' RoI grid (4 x 4 at 192 px);
  the FPN model as `detector_overrides` sizes it (`min_size`/`max_size` the image's, so that it
  does not upsample to 800 px; torchvision's anchors and proposal counts);
- `deeplabv3plus_mobilenetv2`: `SegmentationCrossEntropy` and mean IoU (the segmentation task),
  Adam, synthetic shapes' masks.
A model that `zoo.build` does not know (yet) is skipped with a note.

Each case is compiled as `training.fit.train` compiles it (`jit_compile=False`: Keras's "auto"
turns XLA off on a CPU) and timed by `train_on_batch` on one batch held in memory (its result
read back, so the step has finished); the batch's images / the median step time is the
throughput. bfloat16 is Keras's `mixed_bfloat16` policy, set while the model (and its trainer)
is built, compiled and traced and restored to float32 after, both models kept alive. After
`--warmup` steps of every case, the cases take turns, `--steps` steps each per round, for
`--repeats` rounds, so that whatever else loads the machine falls on all of them alike.

The input pipeline alone: `training.data.make_dataset` (what `zoo train` feeds `fit`:
decoding, resize, augmentation, batching, prefetch) iterated without a model, on synthetic
images held in memory and on the same images as PNG files in class folders (`folder:`),
at 32 x 32 and at 192 x 192. A small model at 32 x 32 (`--small-models`) is timed alone and fed
by the pipeline (each step taking the pipeline's next batch), which says whether it is
pipeline-bound.

    python bench/train_throughput.py          # writes bench/results/train_throughput.{json,md}
    python bench/train_throughput.py --models faster_rcnn_mobilenetv2 faster_rcnn_resnet50 \
        --precisions float32 --repeats 15 --steps 4 --pipeline-sizes --small-models \
        --out bench/results/train_throughput_detectors   # the light detector's ratio, 60 steps each
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402

from bench._latency import interleaved, limit_threads, load_average, machine, time_calls  # noqa: E402
from layers.files import write_atomically  # noqa: E402

import zoo  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "train_throughput"
KERAS_APPLICATIONS = "keras_applications_resnet50"
DEFAULT_MODELS = ("resnet50", KERAS_APPLICATIONS, "faster_rcnn_mobilenetv2", "faster_rcnn_resnet50",
                  "faster_rcnn_resnet50_fpn", "deeplabv3plus_mobilenetv2")
BASELINE_DETECTOR = "faster_rcnn_resnet50"
PRECISIONS = ("float32", "bfloat16")
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
# Per family: (image side, batch).
FAMILY_DEFAULTS = {"classification": (224, 8), "detection": (192, 4), "segmentation": (193, 4), "small": (32, 64)}
SYNTHETIC = dict(num_classes=4, max_objects=3)
# Top-1 only: the classification task's top-5 (`training.tasks`, over 5 classes) fails on
# bfloat16 probabilities, which both ResNet-50s give under mixed_bfloat16 (TF's InTopKV2 takes
# float32 only).
CLASSIFICATION_METRICS = lambda: [keras.metrics.SparseCategoricalAccuracy(name="top1")]  # noqa: E731
ROIS_PER_IMAGE = 32  # the detection recipe's (zoo.recipes.DETECTION)
# bench/fast_rcnn_synthetic.py's RPN for small images, for a detector with one anchor grid.
SMALL_IMAGE_RPN = dict(anchor_scales=(16.0, 32.0, 64.0, 96.0), anchor_aspect_ratios=(0.5, 1.0, 2.0), rpn_min_size=4.0,
                       train_pre_nms_top_n=1024, train_post_nms_top_n=128, test_pre_nms_top_n=256,
                       test_post_nms_top_n=32)


# --------------------------------------------------------------------------- pure helpers


def images_per_second(batch_size: int, step_ms: float) -> float:
    """Images per second of a step of `batch_size` images taking `step_ms` milliseconds."""
    return batch_size * 1000.0 / step_ms


def throughput(times_ms: list[float], batch_size: int) -> dict:
    """Step times -> `{median_ms, min_ms, steps, images_per_s (median), best_images_per_s (min)}`."""
    median, least = statistics.median(times_ms), min(times_ms)
    return dict(median_ms=round(median, 2), min_ms=round(least, 2), steps=len(times_ms),
                images_per_s=round(images_per_second(batch_size, median), 3),
                best_images_per_s=round(images_per_second(batch_size, least), 3),
                times_ms=[round(t, 1) for t in times_ms])


def ratio(numerator: dict | None, denominator: dict | None, key: str = "images_per_s") -> float | None:
    """`numerator[key] / denominator[key]` rounded to 3 places, None when either is missing."""
    if not numerator or not denominator or key not in numerator or key not in denominator:
        return None
    return round(numerator[key] / denominator[key], 3)


def ratios(cases: dict) -> dict:
    """The comparisons asked for, from `{"<model> <precision>": throughput(...) + {"model", "precision", "task"}}`:
    zoo resnet50 over keras.applications' (same precision), bfloat16 over float32 per model, each
    detector over faster_rcnn_resnet50 (same precision); medians' images/s, and minimums' as `best`."""
    out = {"zoo_vs_keras_applications": {}, "bfloat16_vs_float32": {}, "vs_faster_rcnn_resnet50": {}}
    find = lambda model, precision: cases.get(f"{model} {precision}")  # noqa: E731
    for precision in PRECISIONS:
        zoo_side, keras_side = find("resnet50", precision), find(KERAS_APPLICATIONS, precision)
        if zoo_side and keras_side:
            out["zoo_vs_keras_applications"][precision] = dict(
                median=ratio(zoo_side, keras_side), best=ratio(zoo_side, keras_side, "best_images_per_s"))
    for model in dict.fromkeys(case["model"] for case in cases.values()):
        fast, slow = find(model, "bfloat16"), find(model, "float32")
        if fast and slow:
            out["bfloat16_vs_float32"][model] = dict(median=ratio(fast, slow),
                                                     best=ratio(fast, slow, "best_images_per_s"))
    for key, case in cases.items():
        base = find(BASELINE_DETECTOR, case["precision"])
        if case["task"] == "detection" and case["model"] != BASELINE_DETECTOR and base:
            out["vs_faster_rcnn_resnet50"][key] = dict(median=ratio(case, base),
                                                      best=ratio(case, base, "best_images_per_s"))
    return out


# --------------------------------------------------------------------------- building the cases


@contextlib.contextmanager
def dtype_policy(precision: str):
    """Keras's global dtype policy for `precision` inside, the previous one restored after."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(POLICIES[precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def task_of(name: str) -> str:
    return "classification" if name == KERAS_APPLICATIONS else zoo.describe(name).task


def _optimizer(task: str):
    # The recipes' optimizers (zoo.recipes): SGD with momentum for classifiers, Adam otherwise.
    if task == "classification" or task == "small":
        return keras.optimizers.SGD(0.01, momentum=0.9)
    return keras.optimizers.Adam(1e-3)


def detector_overrides_for(name: str, size: int) -> tuple[dict, list[str]]:
    """The build overrides of detector `name` at `size` x `size` (see the module docstring)."""
    from zoo.detection.sizing import detector_overrides
    from zoo.registry import get_spec

    fields = vars(get_spec(name).config)
    overrides = {}
    if "anchor_scales" in fields:  # one anchor grid: bench/fast_rcnn_synthetic.py's small-image RPN
        overrides = {key: value for key, value in SMALL_IMAGE_RPN.items() if key in fields}
    return detector_overrides(name, (size, size), overrides)


def synthetic_batch(task: str, batch_size: int, size: int):
    """One batch of the trainer's format, as tensors: `make_dataset`'s first training batch."""
    from training import data

    source = data.synthetic(batch_size, image_size=(size, size), seed=0, **SYNTHETIC)
    dataset = data.make_dataset(source, task=task, batch_size=batch_size, image_size=(size, size), training=True,
                                seed=0, epoch=0, augment=False)
    return next(iter(dataset))


def copy_weights_by_name(source: keras.Model, target: keras.Model) -> int:
    """Into every layer of `target` with weights, `source`'s layer of the same name; the count
    copied. keras.applications' layer names are the zoo's, so either side may be either model."""
    copied = 0
    for layer in target.layers:
        if layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())
            copied += 1
    return copied


class Case:
    """One (model, precision): its trainee, batch and `step()`; `note` is what the report says of it."""

    def __init__(self, model_name, precision, task, trainee, inputs, targets, batch_size, size, note):
        self.model, self.precision, self.task = model_name, precision, task
        self.trainee, self.inputs, self.targets = trainee, inputs, targets
        self.batch_size, self.size, self.note = batch_size, size, note

    @property
    def key(self) -> str:
        return f"{self.model} {self.precision}"

    def step(self):
        return self.trainee.train_on_batch(self.inputs, self.targets, return_dict=True)

    def warm_up(self, steps: int) -> float:
        """`steps` steps under the case's policy (the first traces the step); the first's seconds."""
        with dtype_policy(self.precision):
            start = time.perf_counter()
            logs = self.step()
            first = time.perf_counter() - start
            for _ in range(steps - 1):
                logs = self.step()
        if not all(math.isfinite(float(value)) for value in logs.values()):
            raise FloatingPointError(f"{self.key}: a warm-up step gave {logs}")
        return first


def build_case(name, precision, *, size, batch_size, reference=None) -> Case:
    """The case of `name` at `precision` (`reference`: the float32 zoo resnet50 whose weights
    keras.applications' takes)."""
    from training.tasks import TASKS

    task = task_of(name)
    with dtype_policy(precision):
        keras.utils.set_random_seed(0)
        note = dict(image_size=size, batch_size=batch_size, jit_compile=False)
        if task == "classification":
            if name == KERAS_APPLICATIONS:
                model = keras.applications.ResNet50(weights=None, input_shape=(size, size, 3))
            else:
                model = zoo.build(name, input_shape=(size, size, 3))
            if reference is not None:
                copied = copy_weights_by_name(reference, model)
                note["weights"] = f"the reference zoo resnet50's (float32, seed 0), {copied} layers by name"
            rng = np.random.default_rng(0)
            pixels = rng.integers(0, 256, (batch_size, size, size, 3)).astype(np.float32)
            inputs = tf.constant(keras.applications.resnet50.preprocess_input(pixels.copy())
                                 if name == KERAS_APPLICATIONS else pixels)
            targets = tf.constant(rng.integers(0, model.output_shape[-1], batch_size).astype(np.int32))
            trainee = model
            trainee.compile(optimizer=_optimizer(task), loss=TASKS["classification"].loss(model),
                            metrics=CLASSIFICATION_METRICS(), jit_compile=False)
            note.update(optimizer="SGD momentum 0.9", loss="sparse cross-entropy", metrics="top-1",
                        data="random pixels" + (" through preprocess_input" if name == KERAS_APPLICATIONS else ""))
        elif task == "detection":
            overrides, sizing = detector_overrides_for(name, size)
            model = zoo.build(name, num_classes=SYNTHETIC["num_classes"], input_shape=(size, size, 3), **overrides)
            trainee = TASKS["detection"].wrap(model, rois_per_image=ROIS_PER_IMAGE, seed=0)
            trainee.compile(optimizer=_optimizer(task), loss=None, metrics=None, jit_compile=False)
            inputs, targets = synthetic_batch("detection", batch_size, size)
            note.update(optimizer="Adam", trainer=type(trainee).__name__, rois_per_image=ROIS_PER_IMAGE,
                        overrides={key: list(v) if isinstance(v, tuple) else v for key, v in overrides.items()},
                        sizing=sizing, data="synthetic shapes")
        elif task == "segmentation":
            task_record = TASKS["segmentation"]
            model = zoo.build(name, num_classes=SYNTHETIC["num_classes"], input_shape=(size, size, 3))
            trainee = model
            trainee.compile(optimizer=_optimizer(task), loss=task_record.loss(model),
                            metrics=task_record.metrics(SYNTHETIC["num_classes"]), jit_compile=False)
            inputs, targets = synthetic_batch("segmentation", batch_size, size)
            note.update(optimizer="Adam", loss="SegmentationCrossEntropy", data="synthetic shapes' masks")
        else:
            raise ValueError(f"{name}: no training step for task {task!r}")
        note["parameters"] = int(model.count_params())
    return Case(name, precision, task, trainee, inputs, targets, batch_size, size, note)


def forward_difference(zoo_model, keras_model, size: int) -> dict:
    """The two ResNet-50s' probabilities on the same pixels (keras.applications given
    `preprocess_input`): max abs difference and equal top-1 share."""
    pixels = np.random.default_rng(1).integers(0, 256, (2, size, size, 3)).astype(np.float32)
    ours = np.asarray(zoo_model(pixels, training=False), np.float32)
    theirs = np.asarray(keras_model(keras.applications.resnet50.preprocess_input(pixels.copy()), training=False),
                        np.float32)
    return dict(max_abs_diff=float(np.abs(ours - theirs).max()),
                top1_equal=float(np.mean(ours.argmax(-1) == theirs.argmax(-1))))


# --------------------------------------------------------------------------- the input pipeline


def write_folder(source, root: Path) -> Path:
    """`source`'s images as PNGs in `root/<class>/`, for `read_folder`."""
    import cv2

    for index, example in enumerate(source.examples):
        folder = root / source.class_names[example.label]
        folder.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(folder / f"{index:05d}.png"), cv2.cvtColor(example.image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"{folder}: cv2.imwrite failed")
    return root


def pipeline_dataset(source, task: str, batch_size: int, size: int, augment: bool = True):
    """What `zoo train` feeds `fit`: training batches (shuffled, augmented), one epoch after another."""
    from training import data

    return data.make_dataset(source, task=task, batch_size=batch_size, image_size=(size, size), training=True,
                             seed=0, augment=augment).repeat()


def time_pipeline(dataset, batches: int, batch_size: int) -> dict:
    """Images per second that iterating `dataset` delivers, over `batches` batches after two."""
    iterator = iter(dataset)
    for _ in range(2):  # the first starts the workers and autotuning
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    seconds = time.perf_counter() - start
    return dict(batches=batches, batch_size=batch_size, seconds=round(seconds, 3),
                images_per_s=round(batches * batch_size / seconds, 1))


def pipeline_results(args, scratch: Path) -> list[dict]:
    from training import data

    rows = []
    for size in args.pipeline_sizes:
        batch_size = args.pipeline_batch_size or (FAMILY_DEFAULTS["small"][1] if size <= 64 else 8)
        source = data.synthetic(args.pipeline_images, image_size=(size, size), seed=0, **SYNTHETIC)
        folder = data.read_folder(write_folder(source, scratch / f"folder-{size}"))
        # Without augmentation too: how much of the time augmenting takes.
        sides = [("synthetic, in memory", source, "classification", True),
                 ("synthetic, in memory", source, "classification", False),
                 ("PNG files (folder:)", folder, "classification", True)]
        if size > 64:
            sides.append(("synthetic, in memory", source, "detection", True))
        for label, where, task, augment in sides:
            batches = max(4, args.pipeline_batch_images // batch_size)
            dataset = pipeline_dataset(where, task, batch_size, size, augment)
            row = dict(size=size, source=label, task=task, augment=augment, examples=len(where.examples),
                       **time_pipeline(dataset, batches, batch_size))
            rows.append(row)
            print(f"pipeline {size} px {label} {task} augment={augment}: {row['images_per_s']} images/s", flush=True)
    return rows


def small_model_results(args, rows: list[dict]) -> list[dict]:
    """Each small model at 32 x 32: its step alone and fed by the pipeline, against the pipeline alone."""
    from training import data
    from training.tasks import TASKS

    size, batch_size = FAMILY_DEFAULTS["small"]
    batch_size = args.pipeline_batch_size or batch_size
    source = data.synthetic(args.pipeline_images, image_size=(size, size), seed=0, **SYNTHETIC)
    dataset = pipeline_dataset(source, "classification", batch_size, size)
    alone_pipeline = next((row for row in rows if row["size"] == size and row["source"].startswith("synthetic")
                           and row["task"] == "classification" and row["augment"]), None)
    results = []
    for name in args.small_models:
        keras.utils.set_random_seed(0)
        model = zoo.build(name, input_shape=(size, size, 3), classes=SYNTHETIC["num_classes"])
        model.compile(optimizer=_optimizer("small"), loss=TASKS["classification"].loss(model),
                      metrics=TASKS["classification"].metrics(SYNTHETIC["num_classes"]), jit_compile=False)
        iterator = iter(dataset)
        images, labels = next(iterator)
        for _ in range(3):
            model.train_on_batch(images, labels)
        steps = args.small_steps
        alone = throughput(time_calls(lambda: model.train_on_batch(images, labels), steps), batch_size)

        def fed_step():
            batch = next(iterator)
            model.train_on_batch(*batch)

        fed = throughput(time_calls(fed_step, steps), batch_size)
        row = dict(model=name, size=size, batch_size=batch_size, parameters=int(model.count_params()),
                   alone=alone, fed_by_pipeline=fed,
                   pipeline_alone_images_per_s=alone_pipeline and alone_pipeline["images_per_s"])
        bound = alone_pipeline is not None and alone_pipeline["images_per_s"] < alone["images_per_s"]
        row["pipeline_bound"] = bool(bound)
        row["fed_over_alone"] = ratio(fed, alone)
        results.append(row)
        print(f"{name} {size} px: alone {alone['images_per_s']:.0f} images/s, fed {fed['images_per_s']:.0f}, "
              f"pipeline alone {row['pipeline_alone_images_per_s']}", flush=True)
    return results


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"every model's batch (default per family: {FAMILY_DEFAULTS})")
    parser.add_argument("--image-size", type=int, default=None, help="every model's image side (default per family)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps of each case per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each case first (the first traces)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds in which the cases take turns")
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow's intra- and inter-op threads")
    parser.add_argument("--pipeline-sizes", type=int, nargs="*", default=[32, 192])
    parser.add_argument("--pipeline-batch-size", type=int, default=None,
                        help="the pipelines' and the small models' batch (default 64 at 32 px, 8 at 192)")
    parser.add_argument("--pipeline-images", type=int, default=512, help="examples in each pipeline's source")
    parser.add_argument("--pipeline-batch-images", type=int, default=2048, help="images timed per pipeline")
    parser.add_argument("--small-models", nargs="*", default=["lenet5", "resnet18"])
    parser.add_argument("--small-steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS, help="the results' path without suffix (.json, .md)")
    args = parser.parse_args(argv)

    limit_threads(args.threads)
    started = time.perf_counter()
    record = machine(args.threads)
    report = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=record, keras=keras.__version__,
                  commit=git_commit(),
                  settings=dict(steps=args.steps, warmup=args.warmup, repeats=args.repeats,
                                precisions=args.precisions, jit_compile=False,
                                policy={p: POLICIES[p] for p in args.precisions}),
                  skipped={}, cases={})
    known = set(zoo.list_models())
    cases, reference = {}, None
    if KERAS_APPLICATIONS in args.models:
        # Both ResNet-50s of every precision take this one model's weights.
        keras.utils.set_random_seed(0)
        side = args.image_size or FAMILY_DEFAULTS["classification"][0]
        reference = zoo.build("resnet50", input_shape=(side, side, 3))
    for name in args.models:
        if name != KERAS_APPLICATIONS and name not in known:
            report["skipped"][name] = "not registered (zoo.build does not know it yet)"
            print(f"note: {name} is not registered; skipped", flush=True)
            continue
        task = task_of(name)
        size = args.image_size or FAMILY_DEFAULTS[task][0]
        batch_size = args.batch_size or FAMILY_DEFAULTS[task][1]
        for precision in args.precisions:
            start = time.perf_counter()
            case = build_case(name, precision, size=size, batch_size=batch_size,
                              reference=reference if name in ("resnet50", KERAS_APPLICATIONS) else None)
            case.note["build_s"] = round(time.perf_counter() - start, 1)
            cases[case.key] = case
            print(f"{case.key}: built in {case.note['build_s']} s", flush=True)
    keras_case = next((case for case in cases.values() if case.model == KERAS_APPLICATIONS), None)
    zoo_case = next((case for case in cases.values() if case.model == "resnet50"
                     and case.precision == keras_case.precision), None) if keras_case else None
    if keras_case and zoo_case:  # before any step has trained either
        check = forward_difference(zoo_case.trainee, keras_case.trainee, keras_case.size)
        report["same_weights_check"] = dict(
            check, precision=keras_case.precision,
            what="zoo resnet50 (raw pixels) vs keras.applications ResNet50 (preprocess_input), after the weight "
                 "copy and before any step, 2 images of random pixels")
        print(f"same weights: {check}", flush=True)
    for case in cases.values():
        case.note["first_step_s"] = round(case.warm_up(max(1, args.warmup)), 1)
        print(f"{case.key}: first step {case.note['first_step_s']} s", flush=True)

    sides = {key: (lambda count, case=case: time_calls(case.step, count)) for key, case in cases.items()}
    timings = interleaved(sides, warmup=0, rounds=args.repeats, per_round=args.steps)
    for key, case in cases.items():
        report["cases"][key] = dict(model=case.model, precision=case.precision, task=case.task, **case.note,
                                    **throughput(timings[key]["times_ms"], case.batch_size))
    report["ratios"] = ratios(report["cases"])
    cases.clear()
    with tempfile.TemporaryDirectory() as scratch:
        report["pipeline"] = pipeline_results(args, Path(scratch)) if args.pipeline_sizes else []
    report["small_models"] = small_model_results(args, report["pipeline"]) if args.small_models else []
    record["load_average_at_end"] = load_average()
    report["seconds"] = round(time.perf_counter() - started, 1)
    write_results(args.out, report)
    return 0


def git_commit() -> str:
    """HEAD's short hash, "+ changes" when the working tree differs from it (models being written)."""
    import subprocess

    def git(*arguments):
        return subprocess.run(["git", *arguments], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + (" + changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def write_results(out: Path, report: dict) -> None:
    """`out`.json and `out`.md, each through `layers.files.write_atomically`."""
    import json

    text = markdown(report)
    write_atomically(out.with_suffix(".json"), lambda path: path.write_text(json.dumps(report, indent=1) + "\n"))
    write_atomically(out.with_suffix(".md"), lambda path: path.write_text(text + "\n"))
    print(text)


def _x(value) -> str:
    return "" if value is None else f"{value:.2f}x"


def markdown(report: dict) -> str:
    m, s = report["machine"], report["settings"]
    lines = [
        f"# Training throughput, float32 and bfloat16 ({report['date']})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, GPUs: {m['gpus'] or 'none'}; CPU flags: {m['flags']}; "
        f"TensorFlow {m['tensorflow']}, Keras {report['keras']}, TF_ENABLE_ONEDNN_OPTS={m['TF_ENABLE_ONEDNN_OPTS']}, "
        f"{m['threads']} intra-op and inter-op threads; commit {report['commit']}. Load average (1, 5, 15 min) "
        f"{m['load_average_at_start']} at the start, {m.get('load_average_at_end')} at the end; the whole run took "
        f"{report['seconds']:.0f} s.",
        f"One compiled training step (`train_on_batch`, `jit_compile=False` as Keras's \"auto\" gives on a CPU) on "
        f"one batch held in memory, random weights; bfloat16 is Keras's `mixed_bfloat16` policy. After "
        f"{s['warmup']} warm-up steps of each case, the cases took turns, {s['steps']} steps each per round for "
        f"{s['repeats']} rounds; images/s = batch / median step time (best: / minimum step time). "
        "`python bench/train_throughput.py` writes this file; see its docstring for each model's settings.",
        "",
        "| model | precision | image | batch | median ms / step | min ms / step | images/s | best images/s | "
        "bf16 vs f32 | vs faster_rcnn_resnet50 | first step s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    r = report["ratios"]
    for key, case in report["cases"].items():
        bf16 = r["bfloat16_vs_float32"].get(case["model"], {}).get("median")
        bf16 = bf16 if case["precision"] == "bfloat16" else None
        detector = r["vs_faster_rcnn_resnet50"].get(key, {}).get("median")
        lines.append(f"| {case['model']} | {case['precision']} | {case['image_size']} | {case['batch_size']} | "
                     f"{case['median_ms']:.0f} | {case['min_ms']:.0f} | {case['images_per_s']:.2f} | "
                     f"{case['best_images_per_s']:.2f} | {_x(bf16)} | {_x(detector)} | {case['first_step_s']} |")
    for name, why in report["skipped"].items():
        lines.append(f"| {name} | | | | skipped: {why} | | | | | | |")
    if r["zoo_vs_keras_applications"]:
        check = report.get("same_weights_check", {})
        lines += ["", "zoo `resnet50` over `keras.applications.ResNet50` with the same weights (images/s, median; "
                  "best in brackets): " + ", ".join(
                      f"{p} {_x(v['median'])} ({_x(v['best'])})" for p, v in r["zoo_vs_keras_applications"].items())
                  + (f". Same weights: largest probability difference {check['max_abs_diff']:.2g}, equal top-1 "
                     f"{check['top1_equal']:.0%} ({check['precision']}, 2 images; keras.applications given "
                     "`preprocess_input`, outside its step; the zoo normalises in its graph, inside its step)."
                     if check else ".")]
    detectors = [case for case in report["cases"].values()
                 if case["task"] == "detection" and case["precision"] == s["precisions"][0]]
    if detectors:
        lines += ["", "Detectors: synthetic shapes (4 classes, up to 3 objects), Adam, built with these overrides:", ""]
        lines += [f"- {case['model']} ({case['parameters']:,} parameters): {case['trainer']}, "
                  f"{case['rois_per_image']} RoIs per image, {case['overrides']}" for case in detectors]
    if report["pipeline"]:
        lines += ["", "## The input pipeline alone", "",
                  "`training.data.make_dataset` as `zoo train` uses it (training order, augmentation, batching, "
                  "prefetch), iterated without a model.", "",
                  "| image | source | task | augmentation | batch | images/s |", "|---:|---|---|---|---:|---:|"]
        for row in report["pipeline"]:
            lines.append(f"| {row['size']} | {row['source']} | {row['task']} | {'yes' if row['augment'] else 'no'} | "
                         f"{row['batch_size']} | {row['images_per_s']:.0f} |")
    if report["small_models"]:
        lines += ["", "Small models at 32 x 32, float32: the step alone (one batch in memory) and fed by the "
                  "pipeline (each step takes its next batch; the pipeline's workers and the step share the cores).",
                  "", "| model | batch | alone images/s | fed images/s | fed / alone | pipeline alone images/s | "
                  "pipeline-bound |", "|---|---:|---:|---:|---:|---:|---|"]
        for row in report["small_models"]:
            lines.append(f"| {row['model']} | {row['batch_size']} | {row['alone']['images_per_s']:.0f} | "
                         f"{row['fed_by_pipeline']['images_per_s']:.0f} | {_x(row['fed_over_alone'])} | "
                         f"{row['pipeline_alone_images_per_s']} | "
                         f"{'yes' if row['pipeline_bound'] else 'no'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
