"""`DetectorTrainer`: what `FastRCNNTrainer` and `FasterRCNNTrainer` share.

A detector trains on targets drawn afresh at every step (sampled RoIs, sampled anchors), so
Keras's own `train_step`, one loss of `(y, y_pred)`, does not fit it: a trainer wraps the
detector and `fit` trains the trainer. Each subclass says how a batch becomes a loss,
`losses_of(images, targets, seed, *, training) -> (total, parts)`; this base runs it in
`train_step` (under the gradient tape), `test_step` and `batch_norm_forward`, seeds the
sampling, and logs the total as "loss" and each part under its name.

Seeds: the sampling seed of a step is `[1000 seed + 100 salt + replica, step]`, salt 0 and the
optimizer's step in training (a run is reproducible and each replica samples its own targets),
salt 1 and step 0 in validation and for precise batch norm (the same targets every epoch).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from layers import compat
from training.steps import apply_gradients, track_loss


class DetectorTrainer(keras.Model):
    """The `fit` steps of a detector trained on its named loss parts (see the module).

    Subclasses set `PARTS`, the names of the parts `losses_of` returns, and implement
    `losses_of` (adding the detector's weight decay with `with_regularization`); they keep the
    detector as `self.model` (saved, never the trainer) and set `self.seed`.

    Data: `(images [B, H, W, 3] raw pixels, {"boxes": [B, M, 4], "classes": [B, M]})`, what
    `training.data.make_dataset(task="detection")` gives.

    Args:
      model: the detector (names the trainer `<model name>_trainer` unless `name=` is given).
    """

    PARTS: tuple[str, ...] = ()

    def __init__(self, model, **kwargs):
        super().__init__(name=kwargs.pop("name", f"{model.name}_trainer"), **kwargs)
        self.part_trackers = {name: keras.metrics.Mean(name=name) for name in self.PARTS}

    def losses_of(self, images, targets, seed, *, training):
        """`(total, parts)`: the loss of a batch (regularization included) and its parts by name."""
        raise NotImplementedError(f"{type(self).__name__} must implement losses_of")

    @staticmethod
    def _unpack(data):
        """`(images float32, {"boxes", "classes"})` of a batch."""
        # NumPy arrays reach the step as they are under run_eagerly.
        images, targets = data[0], data[1]
        return tf.convert_to_tensor(images, tf.float32), {key: tf.convert_to_tensor(targets[key])
                                                          for key in ("boxes", "classes")}

    def _step_seed(self, salt):
        """The `[2]` int64 stateless seed of this step's sampling: salt 0 trains, 1 validates."""
        context = tf.distribute.get_replica_context()
        replica = context.replica_id_in_sync_group if context is not None else 0
        step = self.optimizer.iterations if salt == 0 else tf.constant(0, tf.int64)
        # Each replica samples its own RoIs; the step decides the rest.
        return tf.stack([
            tf.constant(self.seed, tf.int64) * 1000 + 100 * salt + tf.cast(replica, tf.int64), tf.cast(step, tf.int64)
        ])

    def with_regularization(self, total):
        """`total` plus the detector's regularization losses (weight decay), in float32."""
        regularization = self.model.losses
        if regularization:
            total += tf.add_n([tf.cast(loss, tf.float32) for loss in regularization])
        return total

    def _log(self, total, parts, images):
        track_loss(self, total, images)
        batch = tf.shape(images)[0]
        for name, value in parts.items():
            self.part_trackers[name].update_state(value, sample_weight=batch)
        return self.get_metrics_result()

    def train_step(self, data):
        images, targets = self._unpack(data)
        with tf.GradientTape() as tape:
            total, parts = self.losses_of(images, targets, self._step_seed(0), training=True)
            # As Keras's own train_step: replicas' gradients are summed, so each replica's loss
            # is divided by their number (weight decay included); mixed precision scales it.
            scaled = self.optimizer.scale_loss(compat.scale_loss_for_distribution(total))
        apply_gradients(self, tape, scaled)
        return self._log(total, parts, images)

    def test_step(self, data):
        images, targets = self._unpack(data)
        total, parts = self.losses_of(images, targets, self._step_seed(1), training=False)
        return self._log(total, parts, images)

    def batch_norm_forward(self, data):
        """The training-mode forward pass on validation's targets, for `training.precise_bn`."""
        images, targets = self._unpack(data)
        return self.losses_of(images, targets, self._step_seed(1), training=True)[0]


__all__ = ["DetectorTrainer"]
