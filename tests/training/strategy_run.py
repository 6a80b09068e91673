"""One training run for the distribution tests, in its own process.

    python -m tests.training.strategy_run --strategy mirrored --logical-cpus 2 --out DIR

Logical CPU devices must be configured before TensorFlow starts, and a multi-worker cluster is
one process per worker (TF_CONFIG), hence a subprocess. The chief writes DIR/weights.npz.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy", default="default")
    parser.add_argument("--logical-cpus", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import tensorflow as tf

    if args.logical_cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.logical_cpus)

    import keras
    import numpy as np

    keras.config.disable_traceback_filtering()

    from training import TrainConfig, data, train
    from training.distribute import is_chief

    def build(num_classes):
        # No batch norm and no dropout: their per-replica statistics and random masks would
        # differ from one device's by design, and this compares the gradient all-reduce.
        inputs = keras.Input((32, 32, 3), name="images")
        x = keras.layers.Rescaling(1 / 255)(inputs)
        x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
        return keras.Model(inputs, outputs, name="tiny")

    source = data.synthetic(64, image_size=(32, 32), num_classes=3, seed=1)
    config = TrainConfig(
        epochs=2, batch_size=8, image_size=(32, 32), learning_rate=0.05, schedule="constant",
        augment=False, validation_fraction=0.0, strategy=args.strategy, seed=0,
    )
    result = train(build, source, out_dir=args.out, config=config, verbose=0)
    if is_chief():
        np.savez(os.path.join(args.out, "weights.npz"), *[np.asarray(w) for w in result.model.get_weights()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
