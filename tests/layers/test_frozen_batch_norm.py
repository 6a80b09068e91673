"""layers.frozen_batch_norm: torchvision's FrozenBatchNorm2d arithmetic, no training, round trip."""

import keras
import numpy as np

from layers.frozen_batch_norm import BUFFER_NAMES, FrozenBatchNormalization, buffer_count


def test_frozen_batch_norm_is_torchvisions_formula_and_never_trains(rng, tmp_path):
    inputs = keras.Input((None, None, 3))
    layer = FrozenBatchNormalization(name="backbone.body.bn1")
    model = keras.Model(inputs, layer(inputs))
    weight, bias, mean = (rng.normal(size=3).astype(np.float32) for _ in range(3))
    var = rng.uniform(0.5, 2.0, size=3).astype(np.float32)
    layer.set_weights([weight, bias, mean, var])
    assert [w.name for w in layer.weights] == list(BUFFER_NAMES)
    assert not model.trainable_weights and buffer_count(model) == 12
    x = rng.normal(size=(2, 4, 5, 3)).astype(np.float32)
    scale = weight / np.sqrt(var + 1e-5)
    want = x * scale + (bias - mean * scale)
    np.testing.assert_allclose(model(x, training=True), want, atol=1e-5)
    path = tmp_path / "bn.keras"
    model.save(path)
    np.testing.assert_allclose(keras.saving.load_model(path, safe_mode=True)(x), want, atol=1e-5)
