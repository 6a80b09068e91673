"""`make_dataset`: a `DatasetSource` -> batched `tf.data.Dataset` for one task, reproducibly.

Shapes: B images per batch, H x W the `image_size`, M = `max_boxes`.

Each element is decoded in Python (`load_image`, `load_mask`, inside `tf.numpy_function`; a
classification source whose images are arrays of one shape is gathered in the graph instead, a
batch at a time), resized to `image_size` (`layers.image_resize`: bilinear with antialiasing for
the image, boxes scaled by the exact ratios, nearest neighbour for the mask; `resize="stretch"`
ignores the aspect ratio, `"letterbox"` keeps it and pads the bottom and right, the image with 0
and the mask with 255), and, when training, augmented: detection and segmentation examples one
at a time by `augment` with a per-example stateless seed, classification batches by
`augment_batch` in whole-batch ops with per-example random numbers (per-example ops cost a small
classifier more than its own step). Everything random is a function of `(seed, epoch, example
index)`, computed in NumPy (SeedSequence for the seeds, a SplitMix64 hash for the numbers), never
of TensorFlow's global seed: the same `(seed, epoch)` gives the same batches in any process."""

from __future__ import annotations

import functools
import itertools
import numbers

import numpy as np
import tensorflow as tf

from layers.image_resize import check_resize, resize_batch, resize_image, resize_mask
from training.data.augment import DRAWS, augment_batch
from training.data.augment import augment as augment_example
from training.data.examples import TASKS, DataError, check_boxes_inside, load_image, load_mask


def _image_size(image_size):
    if isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    try:
        height, width = (int(side) for side in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"make_dataset: image_size must be (height, width) or one int, got {image_size!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"make_dataset: image_size must be positive, got {image_size!r}")
    return height, width


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"make_dataset: {name} must be a positive int, got {value!r}")
    return int(value)


def _check_examples(examples, task, num_classes, max_boxes):
    """Raise `DataError` naming the first example whose labels the task cannot use."""
    for example in examples:
        if task == "classification":
            if example.label is None:
                raise DataError(f"{example.source}: no classification label")
            if not 0 <= example.label < num_classes:
                raise DataError(
                    f"{example.source}: label {example.label} outside the {num_classes} classes 0..{num_classes - 1}"
                )
        elif task == "detection":
            if example.boxes is None:
                raise DataError(f"{example.source}: no boxes for detection")
            if len(example.classes) and example.classes.max() > num_classes:
                raise DataError(
                    f"{example.source}: class id {int(example.classes.max())} outside the {num_classes} classes "
                    f"1..{num_classes} (0 is background)"
                )
            if len(example.boxes) > max_boxes:
                raise DataError(f"{example.source}: {len(example.boxes)} boxes, more than max_boxes={max_boxes}")
        elif example.mask is None:
            raise DataError(f"{example.source}: no mask for segmentation")


ORDER_CHUNK = 256


def _in_memory_classification(examples):
    """`(images uint8 [N, H, W, 3], labels int32 [N])` when every image is an array of one shape
    (scikit-learn's digits, synthetic shapes, arrays a user passes), else None."""
    first = examples[0].image
    if not isinstance(first, np.ndarray) or not all(
            isinstance(example.image, np.ndarray) and example.image.shape == first.shape for example in examples):
        return None
    images = np.stack([example.image for example in examples]).astype(np.uint8, copy=False)
    labels = np.array([example.label for example in examples], np.int32)
    return tf.constant(images), tf.constant(labels)


def _uint(value):
    return int(value) % 2**64


def example_seed(seed, epoch, index):
    """The `[2]` int64 augmentation seed of example `index` in `epoch`."""
    state = np.random.SeedSequence([_uint(seed), _uint(epoch), _uint(index)]).generate_state(2, np.uint32)
    return state.astype(np.int64)


def _mix(values):
    """SplitMix64's finaliser over a uint64 array (wrapping arithmetic): a bijective hash."""
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def example_draws(seed, epoch, indices, count=DRAWS):
    """`[n, count]` float32 uniforms in [0, 1) for the examples `indices` in `epoch`: each row a
    function of `(seed, epoch, index)` alone, in vectorised NumPy (no Python per example)."""
    key = _mix(np.array([_uint(seed)], np.uint64))
    key = _mix(key ^ np.array([_uint(epoch)], np.uint64))
    streams = _mix(key ^ (np.asarray(indices, np.uint64)[:, None] * np.uint64(2 * count + 1)
                          + np.arange(1, count + 1, dtype=np.uint64)[None, :]))
    return ((streams >> np.uint64(40)).astype(np.float32) / np.float32(2**24)).astype(np.float32)


def epoch_order(seed, epoch, num_examples):
    """The order in which a training epoch visits the examples."""
    return np.random.default_rng([_uint(seed), _uint(epoch)]).permutation(num_examples)


def make_dataset(
    source,
    *,
    task,
    batch_size,
    image_size,
    training,
    seed=0,
    epoch=None,
    augment=True,
    max_boxes=100,
    num_classes=None,
    resize="stretch",
) -> tf.data.Dataset:
    """Batches of one task's inputs and targets from `source`.

    Args:
      source: a `DatasetSource` whose `task_kinds` include `task`.
      task: "classification", "detection" or "segmentation".
      batch_size: images per batch.
      image_size: `(height, width)` (or one int) of every image out.
      training: shuffle (a permutation per epoch), augment, and drop the last partial batch.
        Otherwise the examples come in the source's order, unaugmented, all of them.
      seed: the seed of the shuffle and of every augmentation.
      epoch: the epoch whose order and augmentation to give; the same `(seed, epoch)` gives
        the same batches. None: each pass over the dataset (Keras makes one per epoch) is the
        next epoch, 0, 1, 2, ..., counted per iterator created.
      augment: when training: True for `augment`'s defaults, False for none, or a dict of
        `augment` arguments (`scale_range`, `flip_probability`, `color`, ...).
      max_boxes: detection: M, the length boxes and classes are padded to. An example with more
        boxes is a `DataError` (never truncated).
      num_classes: the number of object classes the labels are checked against; defaults to
        `len(source.class_names)`.
      resize: how an image becomes `image_size` before augmentation (`layers.image_resize`):
        "stretch" (each axis by its own ratio) or "letterbox" (one factor, the image fitted
        inside `image_size` with its aspect ratio, padded at the bottom and on the right: pixels
        0, mask 255 so the padding takes no part in a loss or metric).

    Returns:
      A `tf.data.Dataset` of
        classification: `(images float32 [B, H, W, 3] in 0..255, labels int32 [B])`, labels
          0-based;
        detection: `(images, {"boxes": float32 [B, M, 4], "classes": int32 [B, M]})`, boxes
          `[ymin, xmin, ymax, xmax]` in pixels of the resized image, classes 1-based, padding
          rows 0; crowd boxes (`Example.crowd`) left out;
        segmentation: `(images, masks int32 [B, H, W])`, 0 background, 255 ignore (also where
          a crop or the letterbox padded the image).

    Raises:
      ValueError: bad arguments; DataError: an example the task cannot use (named). A file that
      is missing or does not decode raises when its batch is produced, a `tf.errors.OpError`
      whose message holds the `DataError` naming the file.

    Example:
      >>> dataset = make_dataset(synthetic(256), task="detection", batch_size=8, image_size=64,
      ...                        training=True, seed=0, epoch=3)
    """
    if task not in TASKS:
        raise ValueError(f"make_dataset: task must be one of {TASKS}, got {task!r}")
    if task not in source.task_kinds:
        raise ValueError(f"make_dataset: {source.origin or 'the source'} feeds {source.task_kinds}, not {task!r}")
    batch_size = _positive_int(batch_size, "batch_size")
    max_boxes = _positive_int(max_boxes, "max_boxes")
    height, width = _image_size(image_size)
    resize = check_resize(resize, argument="make_dataset: resize")
    num_classes = _positive_int(len(source.class_names) if num_classes is None else num_classes, "num_classes")
    examples = list(source.examples)
    if not examples:
        raise DataError(f"{source.origin or 'the source'}: empty dataset, no examples")
    if training and len(examples) < batch_size:
        raise ValueError(
            f"make_dataset: {len(examples)} examples make no full batch of {batch_size} (training drops the remainder)"
        )
    if not isinstance(augment, (bool, dict)):
        raise ValueError(f"make_dataset: augment must be True, False or a dict of augment() options, got {augment!r}")
    if isinstance(augment, dict) and "output_size" in augment:
        raise ValueError("make_dataset: the augmentation's output size is image_size; leave output_size out of augment")
    _check_examples(examples, task, num_classes, max_boxes)
    augment_options = (augment if isinstance(augment, dict) else {}) if training and augment is not False else None
    if augment_options and augment_options.get("crop", True) is False and augment_options.get("scale_range", ()) is not None:
        raise ValueError("make_dataset: augment crop=False needs scale_range=None (images must stay image_size)")
    passes = itertools.count()

    classification = task == "classification"

    def order():
        # In chunks (unbatched below): tf.data's generator costs tens of microseconds an element.
        this_epoch = (next(passes) if epoch is None else epoch) if training else 0
        indices = epoch_order(seed, this_epoch, len(examples)) if training else np.arange(len(examples))
        for start in range(0, len(indices), ORDER_CHUNK):
            chunk = np.asarray(indices[start:start + ORDER_CHUNK], np.int64)
            if classification:
                yield chunk, example_draws(seed, this_epoch, chunk)
            else:
                yield chunk, np.stack([example_seed(seed, this_epoch, index) for index in chunk])

    def load(index):
        example = examples[int(index)]
        image = load_image(example)
        if task == "classification":
            return image, np.int32(example.label)
        if task == "detection":
            check_boxes_inside(example.boxes, image.shape[:2], source=example.source)
            # Crowd boxes (COCO's iscrowd) are no target; evaluation reads them from the examples.
            return image, example.boxes[~example.crowd], example.classes[~example.crowd]
        mask = load_mask(example, num_classes=num_classes)
        if mask.shape != image.shape[:2]:
            raise DataError(
                f"{example.mask if isinstance(example.mask, str) else example.source}: the mask is "
                f"{mask.shape[0]}x{mask.shape[1]} but its image is {image.shape[0]}x{image.shape[1]}"
            )
        return image, mask

    output_types = {
        "classification": (tf.uint8, tf.int32),
        "detection": (tf.uint8, tf.float32, tf.int32),
        "segmentation": (tf.uint8, tf.uint8),
    }[task]

    in_memory = _in_memory_classification(examples) if task == "classification" else None

    # Classification's augmentation compiled by XLA: its gathers and colour arithmetic fuse into
    # a few loops over the batch (a batch of 64 at 32 px: 15 ms -> 2.5 ms on 2 cores).
    augment_images = None if augment_options is None else tf.function(
        functools.partial(augment_batch, output_size=(height, width), **augment_options), jit_compile=True
    )

    def prepare_batch(images, labels, draws):
        # Classification: resized images of one size, augmented a batch at a time.
        if augment_images is not None:
            images = augment_images(images, draws)
        return tf.ensure_shape(images, [None, height, width, 3]), tf.ensure_shape(labels, [None])

    def gather_batch(indices, draws):
        # Arrays of one shape: gathered and resized in the graph, no Python and no op per example.
        images, _ = resize_batch(tf.gather(in_memory[0], indices), (height, width), resize=resize)
        return prepare_batch(images, tf.gather(in_memory[1], indices), draws)

    def prepare(index, element_seed):
        loaded = tf.numpy_function(load, [index], output_types, stateful=False, name="load_example")
        image = tf.ensure_shape(loaded[0], [None, None, 3])
        label, boxes, classes, mask = None, None, None, None
        if task == "classification":
            label = tf.ensure_shape(loaded[1], [])
        elif task == "detection":
            boxes, classes = tf.ensure_shape(loaded[1], [None, 4]), tf.ensure_shape(loaded[2], [None])
        else:
            mask = tf.ensure_shape(loaded[1], [None, None])
        size = tf.shape(image)[:2]
        image, content = resize_image(image, (height, width), resize=resize)
        if boxes is not None:
            ratio = tf.cast(content, tf.float32) / tf.cast(size, tf.float32)
            boxes = boxes * tf.concat([ratio, ratio], axis=0)
        if mask is not None:
            mask = resize_mask(mask, (height, width), resize=resize)
        if classification:  # augmented after batching (prepare_batch); element_seed is its draws
            return image, label, element_seed
        if augment_options is not None:
            image, boxes, mask, keep = augment_example(
                image, boxes, mask, seed=element_seed, output_size=(height, width), **augment_options
            )
            if boxes is not None:
                boxes, classes = tf.boolean_mask(boxes, keep), tf.boolean_mask(classes, keep)
        image = tf.ensure_shape(image, [height, width, 3])
        if task == "segmentation":
            return image, tf.ensure_shape(tf.cast(mask, tf.int32), [height, width])
        padding = max_boxes - tf.shape(boxes)[0]
        boxes = tf.ensure_shape(tf.pad(boxes, [[0, padding], [0, 0]]), [max_boxes, 4])
        classes = tf.ensure_shape(tf.pad(classes, [[0, padding]]), [max_boxes])
        return image, {"boxes": boxes, "classes": classes}

    randomness = tf.TensorSpec([None, DRAWS], tf.float32) if classification else tf.TensorSpec([None, 2], tf.int64)
    dataset = tf.data.Dataset.from_generator(
        order, output_signature=(tf.TensorSpec([None], tf.int64), randomness)
    ).unbatch()
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(examples)))
    if in_memory is None:
        dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=bool(training))
    if classification:
        finish = gather_batch if in_memory is not None else prepare_batch
        dataset = dataset.map(finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.deterministic = True
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
