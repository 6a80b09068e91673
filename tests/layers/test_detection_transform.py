"""layers.detection_transform: torchvision's GeneralizedRCNNTransform in the graph (normalise,
resize by the min/max rule, pad to 32). Its values against torchvision's own, per image, are in
bench/results/faster_rcnn_fpn_parity.json (`transformed_max_abs_diff`)."""

import keras
import numpy as np
import tensorflow as tf

from layers.detection_transform import IMAGENET_MEAN, IMAGENET_STD, GeneralizedRCNNTransform


def test_normalises_resizes_and_pads_as_torchvision(rng, tmp_path):
    pixels = rng.uniform(0, 255, (2, 50, 70, 3)).astype(np.float32)
    layer = GeneralizedRCNNTransform(min_size=60, max_size=80, name="transform")
    images, info = (np.asarray(x) for x in layer(pixels))
    # scale = min(60 / 50, 80 / 70) = 1.1428...: 57 x 80, padded to 64 x 96.
    assert images.shape == (2, 64, 96, 3)
    np.testing.assert_array_equal(info, [[57, 80, 50, 70]] * 2)
    normalised = (pixels / np.float32(255.0) - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    want = tf.image.resize(normalised, (57, 80), method="bilinear", antialias=False).numpy()
    np.testing.assert_allclose(images[:, :57, :80], want, atol=1e-5)
    assert not images[:, 57:].any() and not images[:, :, 80:].any()

    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, layer(inputs))
    path = tmp_path / "t.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded(pixels)[0], images, atol=1e-6)
