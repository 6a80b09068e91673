"""torchvision's side of bench/roi_pooling.py; run with a separate Python that has torch + torchvision.

Never imported by the zoo, and torch is never one of its dependencies: this script runs in its own
virtual environment (for example `/work/tv-venv/bin/python bench/torchvision_roi.py ...`).

Inputs are the caller's, so both frameworks see identical arrays:
  --features PATH.npy   float32 `[1, H, W, C]` (NHWC, TensorFlow's layout)
  --boxes PATH.npy      float32 `[N, 4]` as `[ymin, xmin, ymax, xmax]` in image pixels
Without them, both are generated here from --seed (post-ReLU features; boxes of every scale
inside an image of `H / spatial_scale` by `W / spatial_scale` pixels).

They are converted to torchvision's layout (features NCHW, rois `[K, 5]` = batch index, x1, y1,
x2, y2), then `torchvision.ops.roi_pool` and `torchvision.ops.roi_align` (aligned=False,
sampling_ratio=2) are timed: forward under `torch.no_grad()`, and forward + backward: the output
and the gradient of the features for a given upstream gradient (`upstream_gradient`, the same
values as the caller's), as a training step computes them. Each case gets --warmup untimed runs,
then --repeats timed ones; median and min are reported in milliseconds. One JSON object is
printed on stdout and nothing else. --save-output writes roi_pool's forward output as
`[N, ph, pw, C]` (NHWC) and --save-gradient roi_pool's features gradient as `[1, H, W, C]`, for
the caller to compare numerics.
"""

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch
import torchvision


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=38)
    parser.add_argument("--width", type=int, default=50)
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--rois", type=int, default=300)
    parser.add_argument("--pool", type=int, default=7)
    parser.add_argument("--spatial-scale", type=float, default=1.0 / 16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--features", help="float32 [1, H, W, C] .npy (NHWC)")
    parser.add_argument("--boxes", help="float32 [N, 4] .npy, [ymin, xmin, ymax, xmax] in image pixels")
    parser.add_argument("--save-output", help="write roi_pool's forward output here as [N, ph, pw, C] .npy")
    parser.add_argument("--save-gradient", help="write roi_pool's features gradient here as [1, H, W, C] .npy")
    return parser.parse_args(argv)


def generate_inputs(args):
    """Features and boxes from the seed, for standalone runs (the caller normally passes both)."""
    rng = np.random.default_rng(args.seed)
    features = np.maximum(rng.normal(size=(1, args.height, args.width, args.channels)), 0).astype(np.float32)
    image_h, image_w = args.height / args.spatial_scale, args.width / args.spatial_scale
    centre_y, centre_x = rng.uniform(0, image_h, args.rois), rng.uniform(0, image_w, args.rois)
    box_h = np.exp(rng.uniform(np.log(16), np.log(image_h), args.rois))
    box_w = np.exp(rng.uniform(np.log(16), np.log(image_w), args.rois))
    boxes = np.stack([centre_y - box_h / 2, centre_x - box_w / 2, centre_y + box_h / 2, centre_x + box_w / 2], -1)
    boxes = np.clip(boxes, 0, [image_h - 1, image_w - 1, image_h - 1, image_w - 1]).astype(np.float32)
    return features, boxes


def load_inputs(args):
    generated = None
    if args.features is None or args.boxes is None:
        generated = generate_inputs(args)
    features = np.load(args.features) if args.features else generated[0]
    boxes = np.load(args.boxes) if args.boxes else generated[1]
    features = np.asarray(features, dtype=np.float32)
    boxes = np.asarray(boxes, dtype=np.float32)
    expected = (1, args.height, args.width, args.channels)
    if features.shape != expected:
        sys.exit(f"features have shape {features.shape}, expected {expected} from --height/--width/--channels")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        sys.exit(f"boxes have shape {boxes.shape}, expected [N, 4]")
    if boxes.shape[0] != args.rois:
        sys.exit(f"boxes hold {boxes.shape[0]} RoIs but --rois is {args.rois}")
    return features, boxes


def upstream_gradient(num_rois, pool, channels):
    """`[N, ph, pw, C]` small integers (bench/roi_pooling.py has the same): every sum of them is
    exact in float32, so gradients summed in any order can be compared bit for bit."""
    values = np.arange(num_rois * pool * pool * channels) % 7 - 3
    return values.astype(np.float32).reshape(num_rois, pool, pool, channels)


def to_torchvision(features, boxes):
    """NHWC -> NCHW; [ymin, xmin, ymax, xmax] -> [batch index, x1, y1, x2, y2]."""
    nchw = torch.from_numpy(np.ascontiguousarray(features.transpose(0, 3, 1, 2)))
    ymin, xmin, ymax, xmax = boxes.T
    rois = np.stack([np.zeros_like(ymin), xmin, ymin, xmax, ymax], axis=1)
    return nchw, torch.from_numpy(np.ascontiguousarray(rois, dtype=np.float32))


def time_ms(fn, repeats, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times), min(times)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    features, boxes = load_inputs(args)
    nchw, rois = to_torchvision(features, boxes)
    size = (args.pool, args.pool)
    ops = {
        "roi_pool": lambda f: torchvision.ops.roi_pool(f, rois, size, spatial_scale=args.spatial_scale),
        "roi_align": lambda f: torchvision.ops.roi_align(
            f, rois, size, spatial_scale=args.spatial_scale, sampling_ratio=2, aligned=False),
    }

    upstream = torch.from_numpy(
        np.ascontiguousarray(upstream_gradient(len(boxes), args.pool, args.channels).transpose(0, 3, 1, 2))
    )
    results = []
    for name, op in ops.items():
        leaf = nchw.clone().requires_grad_(True)

        def forward(op=op):
            with torch.no_grad():
                return op(nchw)

        def forward_backward(op=op, leaf=leaf):
            leaf.grad = None  # a fresh gradient buffer each run, as a tape's gradient would be
            pooled = op(leaf)
            pooled.backward(upstream)
            return pooled, leaf.grad

        for pass_name, fn in (("forward", forward), ("forward+backward", forward_backward)):
            median, best = time_ms(fn, args.repeats, args.warmup)
            results.append({"op": name, "pass": pass_name, "rois": int(boxes.shape[0]),
                            "median_ms": median, "min_ms": best})

    if args.save_output:
        with torch.no_grad():
            pooled = ops["roi_pool"](nchw)  # [N, C, ph, pw]
        np.save(args.save_output, np.ascontiguousarray(pooled.numpy().transpose(0, 2, 3, 1)))
    if args.save_gradient:
        leaf = nchw.clone().requires_grad_(True)
        ops["roi_pool"](leaf).backward(upstream)
        np.save(args.save_gradient, np.ascontiguousarray(leaf.grad.numpy().transpose(0, 2, 3, 1)))

    print(json.dumps({"torch": torch.__version__, "torchvision": torchvision.__version__,
                      "threads": torch.get_num_threads(), "repeats": args.repeats, "warmup": args.warmup,
                      "results": results}))


if __name__ == "__main__":
    main()
