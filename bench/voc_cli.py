"""Benchmark: a user's own VOC-layout dataset, trained and evaluated through the CLI with defaults.

Writes a VOC-layout dataset of its own design (not the synthetic generator's images): three
shape classes ("hexagon", "heart", "arrow"), rotated, on textured backgrounds with
distracting strokes, images of 200 to 360 pixels a side in varying aspect ratios, objects that
occlude one another, VOC's 255 "void" band around every object in palette PNGs, JPEG images,
XML annotations with 1-based boxes of the visible part, and `ImageSets/{Main,Segmentation}`
split lists (300 training and 100 validation images by default). Then it runs the CLI as a
user would, each verb in its own process, with nothing but `--dataset`, `--classes`,
`--image-size` and `--epochs` (and `--out`), plus `--weights imagenet` where the ImageNet file of
the model or its backbone is in the weights cache (`pretrained_weights`; nothing is downloaded):

    zoo train MODEL --dataset voc:ROOT --classes hexagon,heart,arrow --image-size S S --epochs E --out RUN
    zoo evaluate MODEL --weights RUN/model.keras --dataset voc:ROOT --classes ... --split val --image-size S S

Targets (issue 15), on 2 CPU cores: `deeplabv3plus_mobilenetv2` mIoU >= 0.75 within 15 minutes
of training; `faster_rcnn_resnet50` mAP@0.5 >= 0.75 within 30 minutes.

    python bench/voc_cli.py                                   # both committed runs
    python bench/voc_cli.py --models deeplabv3plus_mobilenetv2
    python bench/voc_cli.py --write-only /tmp/shapes-voc      # just the dataset

Writes `bench/results/voc_cli.md` and `.json` (figures, commands, machine), and per model
`voc_cli_<model>.png` (the curves of `history.json` beside held-out predictions).
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

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"

from layers.files import write_atomically  # noqa: E402
# Shapes whose identity survives the stretch of a non-square image to a square input (an
# ellipse would not: a hexagon stretched 1.6x looks like one).
CLASSES = ("hexagon", "heart", "arrow")
VOID = 255
# The committed runs: the size each model trains at and its epochs, what a user would type.
RUNS = {
    "deeplabv3plus_mobilenetv2": {"image_size": 161, "epochs": 28, "metric": "mIoU", "target": 0.75,
                                  "minutes": 15},
    "faster_rcnn_resnet50": {"image_size": 192, "epochs": 18, "metric": "mAP@0.5", "target": 0.75, "minutes": 30},
}


# --------------------------------------------------------------------------- the dataset


def _outline(name, centre, size, angle, rng):
    """The polygon (x, y) of a shape of `size` pixels across, rotated by `angle` radians."""
    if name == "hexagon":
        t = np.arange(6) * np.pi / 3
        points = np.stack([np.cos(t), np.sin(t)], 1) * 0.5
    elif name == "heart":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        points = np.stack([16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))],
                          1) / 34.0
    else:  # arrow: a shaft and a head, pointing along +x
        points = np.array([(-0.5, -0.1), (0.05, -0.1), (0.05, -0.3), (0.5, 0.0), (0.05, 0.3), (0.05, 0.1),
                           (-0.5, 0.1)])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return (points @ rotation.T) * size + np.asarray(centre)


def _background(height, width, rng):
    """Low-frequency colour noise, stripes and pixel noise: texture a model must learn to ignore."""
    import cv2

    coarse = rng.uniform(60, 200, (rng.integers(3, 7), rng.integers(3, 7), 3)).astype(np.float32)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:height, 0:width]
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 30)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    image += (stripes * rng.uniform(5, 25))[..., None]
    image += rng.normal(0, 8, image.shape)
    for _ in range(rng.integers(2, 7)):  # distracting strokes, background by definition
        start = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        end = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        cv2.line(image, start, end, colour, int(rng.integers(1, 5)), lineType=cv2.LINE_AA)
    return image


def draw_example(rng, height, width):
    """`(image uint8 [H, W, 3] RGB, mask uint8 [H, W], objects [(class name, (xmin, ymin, xmax, ymax))])`.

    Objects are drawn in order, so later ones occlude earlier ones; the mask holds the visible
    part of each (class ids 1..3), with a 255 band around every object's visible outline as
    VOC's; boxes are VOC's 1-based inclusive boxes of the visible part. An object less than
    half visible, or under 8 pixels a side, is dropped from the annotation and its pixels are
    marked void.
    """
    import cv2

    image = _background(height, width, rng)
    owner = np.zeros((height, width), np.int32)  # 0 background, i + 1 object i
    shapes = []
    short = min(height, width)
    for index in range(int(rng.integers(1, 5))):
        name = CLASSES[int(rng.integers(len(CLASSES)))]
        size = rng.uniform(0.18, 0.55) * short
        centre = (rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height)
        polygon = np.round(_outline(name, centre, size, rng.uniform(0, 2 * np.pi), rng)).astype(np.int32)
        area = np.zeros((height, width), np.uint8)
        cv2.fillPoly(area, [polygon], 1)
        if area.sum() < 64:
            continue
        colour = rng.uniform(0, 255, 3)
        shade = np.linspace(-rng.uniform(0, 40), rng.uniform(0, 40), width)[None, :, None]
        fill = colour + shade + rng.normal(0, 6, (height, width, 3))
        image = np.where(area[..., None] > 0, fill, image)
        owner[area > 0] = index + 1
        shapes.append((index + 1, name, int(area.sum())))
    mask = np.zeros((height, width), np.uint8)
    objects = []
    kernel = np.ones((3, 3), np.uint8)
    for label, name, full_area in shapes:
        visible = (owner == label).astype(np.uint8)
        ys, xs = np.nonzero(visible)
        keep = len(ys) >= 0.5 * full_area and len(ys) and xs.max() - xs.min() >= 7 and ys.max() - ys.min() >= 7
        mask[visible > 0] = CLASSES.index(name) + 1 if keep else VOID
        if keep:
            objects.append((name, (int(xs.min()) + 1, int(ys.min()) + 1, int(xs.max()) + 1, int(ys.max()) + 1)))
    for label, _, _ in shapes:  # VOC's void band: a few pixels around each visible outline
        visible = (owner == label).astype(np.uint8)
        band = cv2.dilate(visible, kernel, iterations=2) - cv2.erode(visible, kernel, iterations=1)
        mask[band > 0] = VOID
    return np.clip(image, 0, 255).astype(np.uint8), mask, objects


def _annotation(image_id, height, width, objects) -> str:
    parts = [f"<annotation><folder>shapes</folder><filename>{image_id}.jpg</filename>",
             f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
    for name, (xmin, ymin, xmax, ymax) in objects:
        parts.append(f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0"
                     f"</difficult><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax>"
                     f"<ymax>{ymax}</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>\n"


def write_dataset(root, *, train=300, val=100, seed=0) -> Path:
    """Writes the VOC-layout dataset under `root` (see the module docstring); returns `root`."""
    import cv2
    from PIL import Image

    from zoo.segmentation.visualize import voc_palette

    root = Path(root)
    for folder in ("JPEGImages", "Annotations", "SegmentationClass", "ImageSets/Main", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    palette = voc_palette().reshape(-1).tolist()
    splits = {"train": [], "val": []}
    for index in range(train + val):
        rng = np.random.default_rng([seed, index])
        long_side = int(rng.integers(240, 361))
        short_side = int(long_side * rng.uniform(0.6, 1.0))
        height, width = (short_side, long_side) if rng.random() < 0.6 else (long_side, short_side)
        height, width = max(height, 200), max(width, 200)
        image, mask, objects = draw_example(rng, height, width)
        if not objects:
            continue
        image_id = f"shapes_{index:05d}"
        cv2.imwrite(str(root / "JPEGImages" / f"{image_id}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 90])
        png = Image.fromarray(mask, mode="P")
        png.putpalette(palette)
        png.save(root / "SegmentationClass" / f"{image_id}.png")
        (root / "Annotations" / f"{image_id}.xml").write_text(_annotation(image_id, height, width, objects))
        splits["train" if index < train else "val"].append(image_id)
    for split, ids in splits.items():
        for kind in ("Main", "Segmentation"):
            (root / "ImageSets" / kind / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


# --------------------------------------------------------------------------- the runs


def _machine() -> dict:
    from bench._machine import cpu_model_and_flags

    cpu, flags = cpu_model_and_flags()
    return {"machine": platform.machine(), "cores": os.cpu_count(), "cpu": cpu, "flags": " ".join(flags),
            "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset")}


def _zoo(*arguments, log):
    """Runs `zoo ARGUMENTS` in its own process as a user would; returns (seconds, stdout)."""
    command = [sys.executable, "-m", "zoo", *arguments]
    print("$ zoo " + " ".join(arguments), flush=True)
    start = time.perf_counter()
    process = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    seconds = time.perf_counter() - start
    log.write(f"$ zoo {' '.join(arguments)}\n{process.stderr}\n{process.stdout}\n")
    if process.returncode:
        raise SystemExit(f"zoo {arguments[0]} failed ({process.returncode}):\n{process.stderr[-4000:]}")
    return seconds, process.stdout


def _picture(model, run_dir, dataset, count, out_png, metric):
    """The training curves beside `zoo predict`'s pictures of the first held-out images."""
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = json.loads((run_dir / "history.json").read_text())
    val_ids = (dataset / "ImageSets" / "Main" / "val.txt").read_text().split()[:count]
    predictions = run_dir / "predictions"
    subprocess.run([sys.executable, "-m", "zoo", "predict", model, "--weights", str(run_dir / "model.keras"),
                    *[str(dataset / "JPEGImages" / f"{i}.jpg") for i in val_ids], "--out", str(predictions)],
                   cwd=ROOT, check=True, capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    figure = plt.figure(figsize=(4 + 2.2 * count, 3.2))
    grid = figure.add_gridspec(1, count + 2)
    curves = figure.add_subplot(grid[0, :2])
    for key, values in history.items():
        if key in ("loss", "val_loss") or key.endswith(metric.split("@")[0]):
            curves.plot(range(1, len(values) + 1), values, marker=".", label=key)
    curves.set_xlabel("epoch")
    curves.legend(fontsize=7)
    curves.set_title("history.json", fontsize=9)
    for k, image_id in enumerate(val_ids):
        axis = figure.add_subplot(grid[0, k + 2])
        picture = cv2.imread(str(predictions / f"{image_id}.png"))
        axis.imshow(cv2.cvtColor(picture, cv2.COLOR_BGR2RGB))
        axis.set_axis_off()
    figure.tight_layout()
    figure.savefig(out_png, dpi=90)
    plt.close(figure)


def pretrained_weights(model) -> tuple[str | None, str]:
    """(`--weights` TAG, what was found): the ImageNet weights of `model` or of its backbone, as
    `zoo train --weights imagenet` would take them, when their file is in the weights cache (a user
    would let `zoo train` download them; this bench never downloads)."""
    import zoo
    from zoo.weights import cache_dir, load_manifest

    backbone = zoo.describe(model).defaults.get("backbone")
    for owner in (model, backbone):
        for entry in load_manifest():
            if entry["model"] == owner and entry["tag"] == "imagenet":
                names = [entry["file_name"]] + ([entry["no_top"]["file_name"]] if "no_top" in entry else [])
                found = [cache_dir() / name for name in names if (cache_dir() / name).is_file()]
                if found:
                    return "imagenet", f"{owner}.imagenet ({found[0]})"
                return None, f"{owner}.imagenet is not in the weights cache ({cache_dir() / names[-1]})"
    return None, f"no ImageNet entry for {model} or its backbone {backbone} in weights_manifest.json"


def run_model(model, dataset, work, *, image_size, epochs, log) -> dict:
    run_dir = work / model
    classes = ",".join(CLASSES)
    size = [str(image_size), str(image_size)]
    tag, weights_note = pretrained_weights(model)
    train_arguments = ["train", model, "--dataset", f"voc:{dataset}", "--classes", classes, "--image-size", *size,
                       "--epochs", str(epochs), "--out", str(run_dir)] + (["--weights", tag] if tag else [])
    load_before = os.getloadavg()[0]
    train_seconds, _ = _zoo(*train_arguments, "--quiet", log=log)
    load_after = os.getloadavg()[0]
    evaluate_arguments = ["evaluate", model, "--weights", str(run_dir / "model.keras"), "--dataset", f"voc:{dataset}",
                          "--classes", classes, "--split", "val", "--image-size", *size]
    evaluate_seconds, output = _zoo(*evaluate_arguments, "--quiet", log=log)
    metrics = json.loads(output.strip().splitlines()[-1])
    run = json.loads((run_dir / "run.json").read_text())
    return {"model": model, "image_size": image_size, "epochs": epochs, "train_seconds": round(train_seconds, 1),
            "evaluate_seconds": round(evaluate_seconds, 1), "metrics": metrics,
            "history": json.loads((run_dir / "history.json").read_text()), "recipe": run.get("recipe"),
            "commands": ["zoo " + " ".join(train_arguments), "zoo " + " ".join(evaluate_arguments)],
            "load_average_1min": [round(load_before, 2), round(load_after, 2)],
            "pretrained": weights_note, "run_dir": str(run_dir)}


def _write_atomically(path: Path, text: str):
    write_atomically(path, lambda temporary: Path(temporary).write_text(text))


def _curve(result) -> str:
    """The validation metric `zoo train` logged each epoch (on the 20% it holds out)."""
    key = "val_mIoU" if "val_mIoU" in result["history"] else "val_loss"
    values = ", ".join(f"{value:.3f}" for value in result["history"].get(key, []))
    return f"`{key}` by epoch (the 20% of the training split that `zoo train` holds out): {values}"


def _report(results, machine, dataset_summary) -> str:
    lines = [f"# Your own VOC-layout data through the CLI, defaults only ({datetime.date.today().isoformat()})", "",
             f"Machine: {machine.get('cpu')}, {machine['cores']} cores, no GPU; flags {machine.get('flags', '?')}; "
             f"TF_ENABLE_ONEDNN_OPTS={machine['TF_ENABLE_ONEDNN_OPTS']}.", "",
             f"Data: `bench/voc_cli.py`'s own VOC layout: {dataset_summary}.", "",
             "| model | image size | epochs | metric (val split, `zoo evaluate`) | target | training time | met |",
             "|---|---:|---:|---|---|---:|---|"]
    for result in results:
        spec = RUNS[result["model"]]
        value = result["metrics"][spec["metric"]]
        met = value >= spec["target"] and result["train_seconds"] <= spec["minutes"] * 60
        lines.append(f"| `{result['model']}` | {result['image_size']} | {result['epochs']} | {spec['metric']} "
                     f"**{value:.3f}** | >= {spec['target']} in {spec['minutes']} min | "
                     f"{result['train_seconds'] / 60:.1f} min | {'yes' if met else 'no'} |")
    for result in results:
        lines += ["", f"## `{result['model']}`", "", "```", *result["commands"], "```", "",
                  f"Recipe (the model family's defaults, printed by `zoo train`): `{json.dumps(result['recipe'])}`", "",
                  f"All metrics: `{json.dumps(result['metrics'])}`", "",
                  f"Pretrained weights: {result.get('pretrained', 'not looked for (an earlier version of the bench)')}"
                  + ("" if "--weights" in result["commands"][0] else "; the run starts from random weights") + ".", "",
                  f"Training took {result['train_seconds']:.0f} s (the `zoo train` process, start-up included), "
                  f"evaluation {result['evaluate_seconds']:.0f} s; 1-minute load average before and after training "
                  f"{result['load_average_1min']}.", "",
                  _curve(result), "",
                  f"![curves and held-out predictions](voc_cli_{result['model']}.png)"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--train-images", type=int, default=300)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=None, help="override the committed runs' epochs")
    parser.add_argument("--work", default=None, help="where the dataset and runs go (default: a temporary folder)")
    parser.add_argument("--write-only", default=None, metavar="DIR", help="write the dataset to DIR and stop")
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.write_only:
        write_dataset(args.write_only, train=args.train_images, val=args.val_images)
        print(f"VOC-layout dataset written to {args.write_only}")
        return 0
    work = Path(args.work or tempfile.mkdtemp(prefix="voc-cli-"))
    dataset = write_dataset(work / "shapes_voc", train=args.train_images, val=args.val_images)
    counts = {split: len((dataset / "ImageSets" / "Main" / f"{split}.txt").read_text().split()) for split in ("train", "val")}
    summary = (f"{counts['train']} training and {counts['val']} validation images of 200-360 px, "
               f"classes {', '.join(CLASSES)}, occlusion, 255 void bands, JPEG")
    results_dir = Path(args.results)
    results_dir.mkdir(parents=True, exist_ok=True)
    results = []
    with open(work / "commands.log", "a") as log:
        for model in args.models:
            spec = RUNS[model]
            result = run_model(model, dataset, work, image_size=spec["image_size"], epochs=args.epochs or spec["epochs"],
                               log=log)
            print(json.dumps({k: result[k] for k in ("model", "train_seconds", "metrics")}), flush=True)
            _picture(model, Path(result["run_dir"]), dataset, 4, results_dir / f"voc_cli_{model}.png", spec["metric"])
            results.append(result)
    machine = _machine()
    previous = {}
    if (results_dir / "voc_cli.json").is_file():
        previous = {r["model"]: r for r in json.loads((results_dir / "voc_cli.json").read_text())["results"]}
    previous.update({r["model"]: r for r in results})
    merged = [previous[m] for m in RUNS if m in previous]
    _write_atomically(results_dir / "voc_cli.json", json.dumps(
        {"date": datetime.date.today().isoformat(), "machine": machine, "dataset": summary, "results": merged},
        indent=1))
    _write_atomically(results_dir / "voc_cli.md", _report(merged, machine, summary))
    print(f"results in {results_dir / 'voc_cli.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
