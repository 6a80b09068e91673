"""Benchmark of `zoo.detection.selective_search` (OpenCV's ximgproc) on 2 CPU cores.

Fast and quality mode on a VOC-sized 500 x 375 image and an 800 x 600 one, median and minimum
of a few runs, with the number of boxes each returns (all of them: `max_boxes=None`; Fast
R-CNN keeps the best-ranked 2000). Then `selective_search_batch` on 4 VOC-sized images,
one image at a time and in 2 threads. About 100 seconds on an idle 2-core machine; run it on
an idle one, as other work on the cores shows up directly in the times (the report records
the load around each row).

    python bench/selective_search.py              # writes bench/results/selective_search.md
    python bench/selective_search.py --repeats 5

The images are synthetic, so the benchmark needs no data set: a vertical colour gradient, plus
Gaussian-smoothed noise at three scales (large soft blobs, mid-size mottling, fine grain),
plus a dozen ellipses and rectangles, each in its own colour with its own smoothed-noise
texture, the whole lightly blurred with a little sensor noise. They give selective search the
overlapping, textured regions of a photograph, but fewer boxes than a real VOC photograph (Fast
R-CNN reports about 2000 per image in fast mode), and selective search's time grows with the
number of regions, so real images take longer. The process is pinned to 2 cores where the
machine has more, and `cv2.setNumThreads(2)`.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zoo.detection.proposals import selective_search, selective_search_batch  # noqa: E402

SIZES = ((500, 375), (800, 600))  # width x height
MODES = ("fast", "quality")
CORES = 2


def natural_image(height: int, width: int, seed: int) -> np.ndarray:
    """A `[H, W, 3]` uint8 RGB image with photograph-like regions (see the module docstring)."""
    rng = np.random.default_rng(seed)
    rows = np.arange(height, dtype=np.float32)[:, None, None] / height
    image = rng.uniform(60, 200, 3).astype(np.float32) * (0.6 + 0.4 * rows) * np.ones((1, width, 1), np.float32)
    for sigma, amplitude in ((width / 12, 40), (width / 50, 20), (1.5, 8)):
        noise = cv2.GaussianBlur(rng.normal(size=(height, width, 3)).astype(np.float32), (0, 0), sigma)
        image += amplitude * noise / noise.std()
    for _ in range(12):
        mask = np.zeros((height, width), np.uint8)
        centre = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
        axes = (int(rng.uniform(0.05, 0.3) * width), int(rng.uniform(0.05, 0.3) * height))
        if rng.random() < 0.5:
            cv2.ellipse(mask, centre, axes, rng.uniform(0, 180), 0, 360, 1, -1)
        else:
            corner1 = (centre[0] - axes[0], centre[1] - axes[1])
            corner2 = (centre[0] + axes[0], centre[1] + axes[1])
            cv2.rectangle(mask, corner1, corner2, 1, -1)
        texture = cv2.GaussianBlur(rng.normal(size=(height, width)).astype(np.float32), (0, 0), rng.uniform(1, 6))
        fill = rng.uniform(0, 255, 3).astype(np.float32) + 25 * (texture / texture.std())[..., None]
        image = np.where(mask[..., None] > 0, fill, image)
    image = cv2.GaussianBlur(image, (0, 0), 0.8) + rng.normal(0, 3, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def pin_to_cores(count: int) -> str:
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(available) > count:
        os.sched_setaffinity(0, available[:count])
    cv2.setNumThreads(count)
    used = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{used} of {os.cpu_count()} cores, cv2.setNumThreads({cv2.getNumThreads()})"


LOADS = []  # 1-minute load averages around one row's runs: other work on the cores shows here


def time_runs(function, repeats: int):
    """Median and min wall seconds, median CPU seconds of this process, the last result."""
    del LOADS[:]
    times, cpu_times, result = [], [], None
    for _ in range(repeats):
        LOADS.append(os.getloadavg()[0])
        start, cpu_start = time.perf_counter(), time.process_time()
        result = function()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    LOADS.append(os.getloadavg()[0])
    return statistics.median(times), min(times), statistics.median(cpu_times), result


def cpu_name() -> str:
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "selective_search.md")
    args = parser.parse_args()
    cores = pin_to_cores(CORES)
    started = time.perf_counter()

    rows = []
    for width, height in SIZES:
        image = natural_image(height, width, seed=0)
        for mode in MODES:
            median, minimum, cpu, boxes = time_runs(
                lambda: selective_search(image, mode=mode, max_boxes=None, seed=0), args.repeats
            )
            rows.append((f"{width} x {height}", mode, median, minimum, cpu, len(boxes), max(LOADS)))
            print(f"{width}x{height} {mode}: median {median:.2f} s, min {minimum:.2f} s, cpu {cpu:.2f} s, "
                  f"{len(boxes)} boxes", flush=True)

    batch = [natural_image(375, 500, seed=seed) for seed in range(1, 5)]
    batch_rows = []
    for workers in (1, CORES):
        median, minimum, _, rois = time_runs(
            lambda: selective_search_batch(batch, mode="fast", max_boxes=2000, num_workers=workers), args.repeats
        )
        real = int(np.any(rois != 0, axis=-1).sum())
        batch_rows.append((workers, median, minimum, real, max(LOADS)))
        print(f"batch of 4, {workers} thread(s): median {median:.2f} s, min {minimum:.2f} s, {real} boxes", flush=True)
    total = time.perf_counter() - started

    lines = [
        f"# Selective search benchmark ({datetime.date.today().isoformat()})",
        "",
        f"Machine: {cpu_name()}, {cores}; Python {platform.python_version()}, OpenCV {cv2.__version__} "
        "(opencv-contrib-python-headless). Produced by `python bench/selective_search.py`.",
        "",
        "Images: synthetic and photograph-like (a colour gradient, smoothed noise at three scales, twelve "
        "textured ellipses and rectangles; see the script), one per size, seed 0. `zoo.detection.selective_search` "
        f"with `max_boxes=None` (every box after the 2-pixel size filter), seconds per image over {args.repeats} runs.",
        "",
        "| image (W x H) | mode | median s | min s | median CPU s | boxes | max load |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {size} | {mode} | {median:.2f} | {minimum:.2f} | {cpu:.2f} | {boxes} | {load:.2f} |"
        for size, mode, median, minimum, cpu, boxes, load in rows
    ]
    lines += [
        "",
        f"`selective_search_batch` on 4 other 500 x 375 images, fast mode, `max_boxes=2000`, {args.repeats} runs:",
        "",
        "| threads | median s for 4 images | min s | boxes in all | max load |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {workers} | {median:.2f} | {minimum:.2f} | {boxes} | {load:.2f} |"
        for workers, median, minimum, boxes, load in batch_rows
    ]
    fast_voc = next(median for size, mode, median, *_ in rows if size == "500 x 375" and mode == "fast")
    lines += [
        "",
        "Reading: OpenCV's selective search is single-threaded apart from colour conversion and smoothing, so "
        "one image uses about one core; `selective_search_batch` runs images in threads (OpenCV releases the "
        "GIL) to use the second. Real VOC photographs give more regions (about 2000 boxes in fast mode) than "
        "these images, and take longer. At "
        f"{fast_voc:.1f} s per VOC-sized image in fast mode, the 5011 VOC2007 trainval images take about "
        f"{5011 * fast_voc / 3600:.1f} core-hours: compute proposals once and cache them, as Fast R-CNN did.",
        "",
        f"Whole benchmark: {total:.0f} s. \"max load\" is the highest 1-minute load average seen around a "
        "row's runs: about 1 (2 for the threaded batch) is this benchmark alone, more means other work "
        "shared the 2 cores and the median is slower than the machine.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
