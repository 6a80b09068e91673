"""Benchmark: real handwritten digits, as a user's class folders, trained and evaluated through the CLI.

The data is scikit-learn's bundled copy of the UCI optical handwritten digits
(`sklearn.datasets.load_digits`: 1,797 real scans, 8 x 8 pixels of values 0..16, classes 0-9,
about 180 each), so it needs no download: `pip install zoo[bench]`. They are written as two
`folder:` datasets, one folder per digit, split per class with a seed (stratified):

    ROOT/train/<digit>/<index>.png    4/5 of each digit (zoo train holds 20% of it out to validate)
    ROOT/test/<digit>/<index>.png     the held-out fifth, which training never reads

`<index>` is the scan's position in `load_digits()`. Each PNG is 32 x 32 (LeNet-5's input,
`zoo describe lenet5`), grey written as RGB (three equal channels), values scaled from 0..16 to
0..255 and each scan pixel enlarged to a 4 x 4 block (`cv2.INTER_NEAREST`: the PNG holds
exactly the scan's 64 values, nothing interpolated; LeNet's 5 x 5 convolutions see the same
strokes either way). Then it runs the CLI as a user would, each verb in its own process, with
the model's recipe (SGD lr 0.01, cosine, batch 16) and its own image size; the only flags are
`--no-flip` (a mirrored 2, 3, 4, 5, 6, 7 or 9 is not that digit) and `--epochs`:

    zoo train lenet5 --dataset folder:ROOT/train --no-flip --epochs E --out RUN
    zoo evaluate lenet5 --weights RUN/model.keras --dataset folder:ROOT/test

Target (issue 16): top-1 >= 0.97 on the held-out fifth. `--epochs 30`: the default 10 ends
at 0.967, still rising.

    python bench/digits_lenet5.py                        # the committed run
    python bench/digits_lenet5.py --epochs 10            # zoo train's default length
    python bench/digits_lenet5.py --write-only /tmp/digits   # just the two folders

Writes `bench/results/digits_lenet5.md` and `.json` (commands, top-1, training time, epochs,
the machine and its load).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"

from bench.voc_cli import _machine, _zoo  # noqa: E402  the CPU, its flags; a CLI verb in its own process
from layers.files import write_atomically  # noqa: E402

MODEL = "lenet5"
IMAGE_SIZE = 32  # LeNet-5's own (zoo describe lenet5): each 8 x 8 scan pixel becomes 4 x 4
SCAN_MAX = 16  # load_digits' values are the count of set pixels in a 4 x 4 block of the 32 x 32 bitmap
TEST_FRACTION = 0.2
# zoo train's default of 10 reached 0.967 (val_top1 still rising; training top-1 0.88 under the
# standard augmentation's scale, crop and colour jitter); --no-augment at 10 gave 0.961 (overfit).
EPOCHS = 30
TARGET = 0.97


# --------------------------------------------------------------------------- the dataset


def digit_image(scan) -> np.ndarray:
    """One `load_digits` scan `[8, 8]` (0..16) -> the PNG's pixels, uint8 `[32, 32, 3]` (0..255, R = G = B)."""
    import cv2

    grey = np.round(np.asarray(scan, np.float64) * (255.0 / SCAN_MAX)).astype(np.uint8)
    grey = cv2.resize(grey, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_NEAREST)
    return np.repeat(grey[..., None], 3, axis=-1)


def stratified_split(labels, *, test_fraction=TEST_FRACTION, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """`(train indices, test indices)`, sorted: `round(test_fraction * n)` of each class's `n`, by `seed`."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    test = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        test.extend(rng.permutation(members)[: int(round(test_fraction * len(members)))])
    test = np.sort(np.asarray(test, np.int64))
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test


def write_dataset(root, *, test_fraction=TEST_FRACTION, seed=0) -> dict:
    """Writes `root/train/<digit>/<index>.png` and `root/test/...` (see the module docstring).

    Returns `{"train": {digit: count}, "test": {digit: count}}`.
    """
    import cv2
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = Path(root)
    splits = dict(zip(("train", "test"), stratified_split(digits.target, test_fraction=test_fraction, seed=seed)))
    counts = {}
    for split, indices in splits.items():
        counts[split] = {}
        for index in indices:
            digit = str(int(digits.target[index]))
            folder = root / split / digit
            folder.mkdir(parents=True, exist_ok=True)
            # Equal channels, so OpenCV's BGR order does not matter.
            if not cv2.imwrite(str(folder / f"{index:04d}.png"), digit_image(digits.images[index])):
                raise OSError(f"{folder / f'{index:04d}.png'}: cv2.imwrite failed")
            counts[split][digit] = counts[split].get(digit, 0) + 1
    return {split: dict(sorted(c.items())) for split, c in counts.items()}


# --------------------------------------------------------------------------- the run


def run(dataset, work, *, epochs, log) -> dict:
    run_dir = work / "run"
    train_arguments = ["train", MODEL, "--dataset", f"folder:{dataset / 'train'}", "--no-flip", "--epochs", str(epochs),
                       "--out", str(run_dir)]
    load_before = os.getloadavg()[0]
    train_seconds, _ = _zoo(*train_arguments, "--quiet", log=log)
    load_after = os.getloadavg()[0]
    evaluate_arguments = ["evaluate", MODEL, "--weights", str(run_dir / "model.keras"), "--dataset",
                          f"folder:{dataset / 'test'}"]
    evaluate_seconds, output = _zoo(*evaluate_arguments, "--quiet", log=log)
    metrics = json.loads(output.strip().splitlines()[-1])
    run_json = json.loads((run_dir / "run.json").read_text())
    return {"model": MODEL, "epochs": epochs, "train_seconds": round(train_seconds, 1),
            "evaluate_seconds": round(evaluate_seconds, 1), "metrics": metrics,
            "history": json.loads((run_dir / "history.json").read_text()), "recipe": run_json.get("recipe"),
            "commands": ["zoo " + " ".join(train_arguments), "zoo " + " ".join(evaluate_arguments)],
            "load_average_1min": [round(load_before, 2), round(load_after, 2)], "run_dir": str(run_dir)}


def _report(result, machine, counts) -> str:
    top1 = result["metrics"]["top1"]
    history = result["history"]
    curve = ", ".join(f"{value:.3f}" for value in history.get("val_top1", []))
    return "\n".join([
        f"# Handwritten digits (scikit-learn's load_digits) through the CLI: LeNet-5 "
        f"({datetime.date.today().isoformat()})", "",
        f"Machine: {machine.get('cpu')}, {machine['cores']} cores, no GPU; flags {machine.get('flags', '?')}; "
        f"TF_ENABLE_ONEDNN_OPTS={machine['TF_ENABLE_ONEDNN_OPTS']}.", "",
        f"Data: the 1,797 real 8 x 8 scans of `sklearn.datasets.load_digits`, written by `bench/digits_lenet5.py` "
        f"as 32 x 32 PNGs (nearest-neighbour, 0..16 scaled to 0..255, grey as RGB) in class folders, split per "
        f"digit with seed 0: {sum(counts['train'].values())} in `train/` (`zoo train` validates on 20% of them), "
        f"{sum(counts['test'].values())} held out in `test/` (per digit: {counts['test']}).", "",
        "| model | epochs | top-1, held-out fifth (`zoo evaluate`) | target | training time | met |",
        "|---|---:|---|---|---:|---|",
        f"| `{MODEL}` | {result['epochs']} | **{top1:.4f}** | >= {TARGET} | {result['train_seconds']:.0f} s | "
        f"{'yes' if top1 >= TARGET else 'no'} |", "",
        "```", *result["commands"], "```", "",
        f"Recipe (LeNet-5's, printed by `zoo train`; the only flags are `--no-flip` and `--epochs`): "
        f"`{json.dumps(result['recipe'])}`", "",
        f"All metrics: `{json.dumps(result['metrics'])}`", "",
        f"Training took {result['train_seconds']:.0f} s (the `zoo train` process, start-up included), evaluation "
        f"{result['evaluate_seconds']:.0f} s; 1-minute load average before and after training "
        f"{result['load_average_1min']}.", "",
        f"`val_top1` by epoch (the 20% of `train/` that `zoo train` holds out): {curve}",
    ]) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--seed", type=int, default=0, help="the train/test split's seed")
    parser.add_argument("--work", default=None, help="where the dataset and the run go (default: a temporary folder)")
    parser.add_argument("--write-only", default=None, metavar="DIR", help="write the two folders to DIR and stop")
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.write_only:
        counts = write_dataset(args.write_only, seed=args.seed)
        print(f"digits written to {args.write_only}: {json.dumps(counts)}")
        return 0
    work = Path(args.work or tempfile.mkdtemp(prefix="digits-lenet5-"))
    dataset = work / "digits"
    counts = write_dataset(dataset, seed=args.seed)
    with open(work / "commands.log", "a") as log:
        result = run(dataset, work, epochs=args.epochs, log=log)
    print(json.dumps({k: result[k] for k in ("model", "epochs", "train_seconds", "metrics")}), flush=True)
    machine = _machine()
    results_dir = Path(args.results)
    summary = {"date": datetime.date.today().isoformat(), "machine": machine, "split_seed": args.seed,
               "counts": counts, "target_top1": TARGET, "result": result}
    write_atomically(results_dir / "digits_lenet5.json",
                     lambda temporary: Path(temporary).write_text(json.dumps(summary, indent=1) + "\n"))
    write_atomically(results_dir / "digits_lenet5.md",
                     lambda temporary: Path(temporary).write_text(_report(result, machine, counts)))
    print(f"results in {results_dir / 'digits_lenet5.md'}")
    return 0 if result["metrics"]["top1"] >= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
