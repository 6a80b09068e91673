"""make_dataset: shapes and dtypes per task, (seed, epoch) determinism, and its checks."""

import numpy as np
import pytest
import tensorflow as tf

from training.data import DataError, DatasetSource, Example, make_dataset, synthetic


@pytest.fixture(scope="module")
def source():
    return synthetic(10, image_size=(32, 40), num_classes=3, max_objects=3, seed=5)


def batches(dataset):
    return [tf.nest.map_structure(lambda tensor: tensor.numpy(), batch) for batch in dataset]


def assert_same(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        tf.nest.map_structure(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("task", ["classification", "detection", "segmentation"])
def test_shapes_and_dtypes(source, task, training):
    dataset = make_dataset(source, task=task, batch_size=4, image_size=(24, 28), training=training, seed=1, epoch=0,
                           max_boxes=5)
    out = batches(dataset)
    assert len(out) == (2 if training else 3)  # 10 examples: the partial batch only when evaluating
    images, targets = out[-1]
    batch = 4 if training else 2
    assert images.shape == (batch, 24, 28, 3) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 255 and images.max() > 1
    if task == "classification":
        assert targets.shape == (batch,) and targets.dtype == np.int32 and set(targets) <= {0, 1, 2}
    elif task == "detection":
        boxes, classes = targets["boxes"], targets["classes"]
        assert boxes.shape == (batch, 5, 4) and boxes.dtype == np.float32
        assert classes.shape == (batch, 5) and classes.dtype == np.int32
        assert set(classes.ravel()) <= {0, 1, 2, 3} and np.all((classes > 0).sum(axis=1) >= 1)
        # Padding rows are zero in both, and only padding rows.
        np.testing.assert_array_equal(np.any(boxes != 0, axis=-1), classes > 0)
        real = boxes[classes > 0]
        assert np.all(real[:, 2] > real[:, 0]) and np.all(real[:, 3] > real[:, 1])
        assert real.min() >= 0 and real[:, [0, 2]].max() <= 24 and real[:, [1, 3]].max() <= 28
    else:
        assert targets.shape == (batch, 24, 28) and targets.dtype == np.int32
        assert set(np.unique(targets)) <= {0, 1, 2, 3, 255}


def test_evaluation_is_the_resized_source_in_order(source):
    dataset = make_dataset(source, task="detection", batch_size=10, image_size=(16, 20), training=False)
    images, targets = batches(dataset)[0]
    for index, example in enumerate(source.examples):
        expected = tf.image.resize(example.image, (16, 20), antialias=True).numpy()
        np.testing.assert_allclose(images[index], expected, atol=1e-3)
        count = len(example.boxes)
        np.testing.assert_allclose(targets["boxes"][index, :count], example.boxes * [0.5, 0.5, 0.5, 0.5])
        np.testing.assert_array_equal(targets["classes"][index, :count], example.classes)
    masks = batches(make_dataset(source, task="segmentation", batch_size=10, image_size=(32, 40), training=False))[0][1]
    np.testing.assert_array_equal(masks, np.stack([example.mask for example in source.examples]))
    labels = batches(make_dataset(source, task="classification", batch_size=10, image_size=8, training=False))[0][1]
    assert labels.tolist() == [example.label for example in source.examples]


@pytest.mark.parametrize("task", ["classification", "detection", "segmentation"])
def test_same_seed_and_epoch_give_the_same_batches(source, task):
    def run(seed, epoch):
        return batches(make_dataset(source, task=task, batch_size=3, image_size=(24, 24), training=True, seed=seed,
                                    epoch=epoch))
    first = run(7, 2)
    assert_same(first, run(7, 2))
    if task == "detection":  # the order and the augmentation are shared by the tasks
        for other in (run(7, 3), run(8, 2)):
            assert not np.array_equal(first[0][0], other[0][0])


def test_epoch_none_counts_passes_like_explicit_epochs(source):
    options = dict(task="classification", batch_size=5, image_size=16, training=True, seed=3)
    dataset = make_dataset(source, epoch=None, **options)
    assert_same(batches(dataset), batches(make_dataset(source, epoch=0, **options)))
    assert_same(batches(dataset), batches(make_dataset(source, epoch=1, **options)))
    fixed = make_dataset(source, epoch=4, **options)
    assert_same(batches(fixed), batches(fixed))


def test_training_shuffles_every_example_once_per_epoch(source):
    # Without augmentation, each training image is one of the resized source images.
    resized = [tf.image.resize(example.image, (32, 40), antialias=True).numpy() for example in source.examples]
    orders = []
    for epoch in range(3):
        out = batches(make_dataset(source, task="classification", batch_size=5, image_size=(32, 40), training=True,
                                   seed=0, epoch=epoch, augment=False))
        images = np.concatenate([batch[0] for batch in out])
        orders.append([next(i for i, r in enumerate(resized) if np.allclose(image, r, atol=1e-3)) for image in images])
    assert all(sorted(order) == list(range(10)) for order in orders)
    assert len({tuple(order) for order in orders}) == 3


def test_augmentation_options_pass_through(source):
    plain = batches(make_dataset(source, task="segmentation", batch_size=2, image_size=(32, 40), training=True, epoch=0,
                                 augment=dict(flip_probability=0, scale_range=None, color=False)))
    unshuffled = {example.mask.tobytes() for example in source.examples}
    assert all(mask.astype(np.uint8).tobytes() in unshuffled for batch in plain for mask in batch[1])


def test_checks_name_the_example(source):
    options = dict(batch_size=2, image_size=16, training=False)
    with pytest.raises(DataError, match=r"synthetic:#\d+: label \d outside the 2 classes"):
        make_dataset(source, task="classification", num_classes=2, **options)
    with pytest.raises(DataError, match=r"synthetic:#\d+: class id 3 outside the 2 classes 1\.\.2"):
        make_dataset(source, task="detection", num_classes=2, **options)
    with pytest.raises(DataError, match=r"synthetic:#\d+: 3 boxes, more than max_boxes=2"):
        make_dataset(source, task="detection", max_boxes=2, **options)
    empty = DatasetSource([], ("a",), ("classification",), "folders", origin="folder:/nowhere")
    with pytest.raises(DataError, match="folder:/nowhere: empty dataset"):
        make_dataset(empty, task="classification", **options)
    unlabeled = DatasetSource(
        [Example(np.zeros((4, 4, 3), np.uint8), source="x.png")], ("a",), ("classification",), "x"
    )
    with pytest.raises(DataError, match="x.png: no classification label"):
        make_dataset(unlabeled, task="classification", **options)


def test_bad_arguments(source, tmp_path):
    folder_like = DatasetSource(source.examples, source.class_names, ("classification",), "folders", origin="folder:x")
    with pytest.raises(ValueError, match=r"folder:x feeds \('classification',\), not 'detection'"):
        make_dataset(folder_like, task="detection", batch_size=2, image_size=8, training=False)
    with pytest.raises(ValueError, match="task must be one of"):
        make_dataset(source, task="depth", batch_size=2, image_size=8, training=False)
    with pytest.raises(ValueError, match="10 examples make no full batch of 16"):
        make_dataset(source, task="classification", batch_size=16, image_size=8, training=True)
    with pytest.raises(ValueError, match="image_size"):
        make_dataset(source, task="classification", batch_size=2, image_size=(0, 8), training=False)
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset(source, task="classification", batch_size=0, image_size=8, training=False)


def test_a_missing_file_fails_naming_it(tmp_path):
    missing = DatasetSource([Example(str(tmp_path / "gone.jpg"), label=0)], ("a",), ("classification",), "x")
    with pytest.raises(tf.errors.OpError, match=r"DataError: .*gone\.jpg: image file does not exist"):
        batches(make_dataset(missing, task="classification", batch_size=1, image_size=8, training=False))


def test_each_example_and_epoch_gets_its_own_augmentation(source):
    copies = DatasetSource([source.examples[0]] * 4, source.class_names, source.task_kinds, "synthetic")
    def images(epoch):
        out = batches(make_dataset(copies, task="segmentation", batch_size=4, image_size=(32, 40), training=True,
                                   seed=0, epoch=epoch))
        return {image.tobytes() for image in out[0][0]}
    first = images(0)
    assert len(first) == 4  # the same picture, augmented four ways
    assert first == images(0) and not first & images(1)


def test_in_memory_classification_gives_what_the_python_loader_gives(source, tmp_path, monkeypatch):
    # Arrays of one shape are gathered in the graph; the same examples as PNG files (each
    # through load_image in Python) and as arrays of two shapes give the same batches.
    import cv2

    from training.data import pipeline

    def run(dataset_source, **kwargs):
        return batches(make_dataset(dataset_source, task="classification", batch_size=3, image_size=(24, 28),
                                    seed=2, **kwargs))

    assert pipeline._in_memory_classification(source.examples) is not None
    files = []
    for i, example in enumerate(source.examples):
        path = str(tmp_path / f"{i}.png")
        cv2.imwrite(path, cv2.cvtColor(example.image, cv2.COLOR_RGB2BGR))
        files.append(Example(path, label=example.label))
    on_disk = DatasetSource(files, source.class_names, source.task_kinds, "files")
    for options in ({"training": True, "epoch": 3}, {"training": False}):
        assert_same(run(source, **options), run(on_disk, **options))
    mixed = DatasetSource([*source.examples[:-1], Example(np.zeros((8, 8, 3), np.uint8), label=1)],
                          source.class_names, source.task_kinds, "mixed")
    assert pipeline._in_memory_classification(mixed.examples) is None
    assert len(run(mixed, training=False)) == 4  # ten examples in batches of 3, through numpy_function
    # Epochs counted per pass, in chunks of the order: more examples than a chunk keep every one once.
    monkeypatch.setattr(pipeline, "ORDER_CHUNK", 4)
    labels = np.concatenate([batch[1] for batch in run(source, training=False)])
    np.testing.assert_array_equal(labels, [example.label for example in source.examples])


def test_example_draws_are_uniform_and_a_function_of_seed_epoch_and_index():
    from training.data.pipeline import example_draws

    indices = np.arange(20000)
    draws = example_draws(3, 1, indices)
    assert draws.shape == (20000, 8) and draws.dtype == np.float32
    assert draws.min() >= 0 and draws.max() < 1
    # Uniform and uncorrelated: each column's mean and deciles, and the columns' correlations.
    np.testing.assert_allclose(draws.mean(axis=0), 0.5, atol=0.01)
    np.testing.assert_allclose(np.quantile(draws, np.linspace(0.1, 0.9, 9), axis=0),
                               np.linspace(0.1, 0.9, 9)[:, None] * np.ones(8), atol=0.015)
    correlations = np.corrcoef(np.concatenate([draws[:-1], draws[1:]], axis=1).T)
    assert np.abs(correlations - np.eye(16)).max() < 0.03  # across columns and neighbouring indices
    # A row depends on the index, not on its position among the indices asked for.
    picked = np.array([19999, 5, 7000])
    np.testing.assert_array_equal(example_draws(3, 1, picked), draws[picked])
    for other in (example_draws(3, 2, indices[:1000]), example_draws(4, 1, indices[:1000])):  # epoch, seed
        assert np.mean(other == draws[:1000]) < 0.001
