"""bench/digits_lenet5.py's dataset: scikit-learn's digits as two class-folder datasets."""

import cv2
import numpy as np

# scikit-learn is in the dev extra that `make test` installs: a missing one fails, never skips.
from sklearn.datasets import load_digits

from bench.digits_lenet5 import digit_image, stratified_split, write_dataset  # noqa: E402
from training.data import read_folder  # noqa: E402


def test_the_split_is_stratified_disjoint_complete_and_seeded():
    labels = load_digits().target
    train, test = stratified_split(labels, seed=0)
    assert len(np.intersect1d(train, test)) == 0
    assert sorted(np.concatenate([train, test])) == list(range(len(labels)))
    for digit in range(10):
        members = int((labels == digit).sum())
        assert (labels[test] == digit).sum() == round(0.2 * members)
    again_train, again_test = stratified_split(labels, seed=0)
    assert np.array_equal(again_test, test) and np.array_equal(again_train, train)
    assert not np.array_equal(stratified_split(labels, seed=1)[1], test)


def test_a_png_is_the_scan_enlarged_4x_in_equal_channels():
    scan = load_digits().images[0]
    image = digit_image(scan)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])
    # Nearest neighbour: every 4 x 4 block is one scan pixel, 0..16 scaled to 0..255.
    assert np.array_equal(image[::4, ::4, 0], np.round(scan * 255 / 16).astype(np.uint8))
    assert np.array_equal(digit_image(np.full((8, 8), 16.0)), np.full((32, 32, 3), 255, np.uint8))


def test_the_folders_read_as_ten_classes_with_every_scan_once(tmp_path):
    digits = load_digits()
    counts = write_dataset(tmp_path, seed=0)
    train = read_folder(tmp_path / "train")
    test = read_folder(tmp_path / "test")
    assert train.class_names == test.class_names == tuple(str(d) for d in range(10))
    assert len(train.examples) + len(test.examples) == len(digits.target) == 1797
    # A fifth of each digit, rounded per digit: 359 of 1797.
    assert sum(counts["test"].values()) == len(test.examples) == 359
    indices = {}
    for split, source in (("train", train), ("test", test)):
        per_class = np.bincount([example.label for example in source.examples], minlength=10)
        assert per_class.tolist() == [counts[split][str(d)] for d in range(10)]
        indices[split] = {int(example.source.rsplit("/", 1)[1][:-4]) for example in source.examples}
        for example in source.examples:  # the folder is the scan's digit
            assert digits.target[int(example.source.rsplit("/", 1)[1][:-4])] == example.label
    assert not indices["train"] & indices["test"]
    assert indices["test"] == set(stratified_split(digits.target, seed=0)[1].tolist())
    # The PNG on disk is the scan: read back (OpenCV, as the readers do) and compared.
    for example in test.examples[::40]:
        index = int(example.source.rsplit("/", 1)[1][:-4])
        pixels = cv2.imread(example.image, cv2.IMREAD_UNCHANGED)
        assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
        assert np.array_equal(pixels, digit_image(digits.images[index]))
