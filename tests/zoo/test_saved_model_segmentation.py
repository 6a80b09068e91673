"""A real (tiny) DeepLab-v3+ exported with `zoo.export` serves in a process that never imports the
zoo, with the same logits and `semantic_predictions` as the Keras model."""

import os
import subprocess
import sys

import numpy as np
import pytest

import zoo
from tests.helpers import randomize_batch_norm
from tests.zoo.test_saved_model import CHILD, ROOT, pixels
from zoo.segmentation.deeplabv3plus import DeepLabV3PlusConfig, build_deeplab_v3_plus


@pytest.mark.slow
def test_a_deeplab_export_serves_without_the_zoo(tmp_path, rng):
    model = build_deeplab_v3_plus(
        DeepLabV3PlusConfig(backbone="mobilenetv2", slim_backbone=True, preprocessing="tf", num_classes=3,
                            aspp_filters=8, decoder_projection_filters=4, decoder_filters=8),
        name="tiny_deeplab",
    )
    randomize_batch_norm(model, rng)
    # DeepLab's logits start at a standard deviation of 0.01, too flat for the comparison to see
    # anything: large weights make the logits, and their argmax, vary over the image.
    kernel = model.get_layer("logits_semantic").kernel
    kernel.assign(rng.normal(scale=100.0, size=kernel.shape).astype("float32"))
    images = pixels(rng, (2, 45, 37, 3))  # odd sizes: the resizes must land on the input size
    directory = zoo.export(model, tmp_path / "deeplab")
    np.savez(tmp_path / "in.npz", input_tensor_0=images)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.run([sys.executable, "-c", CHILD, str(directory), str(tmp_path / "in.npz"),
                            str(tmp_path / "out.npz")], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    assert child.stdout.strip().splitlines()[-1] == "False"  # the zoo was never imported

    served = dict(np.load(tmp_path / "out.npz"))
    logits = np.asarray(model(images.astype("float32"), training=False))
    assert served["semantic_predictions_0"].shape == (2, 45, 37)
    np.testing.assert_allclose(served["logits_0"], logits, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(served["semantic_predictions_0"], logits.argmax(-1))
    assert logits.std(axis=(1, 2)).min() > 1e-2  # the logits vary over the image
