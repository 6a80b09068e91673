"""Schedules against their formulas computed by hand, and the optimizers' weight decay."""

import math

import keras
import numpy as np
import pytest

from training.optimizers import WarmupSchedule, make_optimizer


def _rates(schedule, steps):
    return np.array([float(schedule(step)) for step in steps])


def test_poly_is_deeplabs_formula_after_the_warmup():
    schedule = WarmupSchedule("poly", 0.007, total_steps=1000, warmup_steps=100, warmup_start=0.1)
    steps = [0, 50, 99, 100, 400, 999, 1000, 5000]
    expected = []
    for step in steps:
        if step < 100:
            expected.append(0.007 * (0.1 + 0.9 * step / 100))
        else:
            expected.append(0.007 * (1 - min((step - 100) / 900, 1)) ** 0.9)
    np.testing.assert_allclose(_rates(schedule, steps), expected, rtol=1e-5, atol=1e-9)


def test_cosine_runs_from_base_to_minimum():
    schedule = WarmupSchedule("cosine", 0.1, total_steps=200, min_learning_rate=0.001)
    steps = [0, 50, 100, 150, 200]
    expected = [0.001 + 0.099 * 0.5 * (1 + math.cos(math.pi * s / 200)) for s in steps]
    np.testing.assert_allclose(_rates(schedule, steps), expected, rtol=1e-5)


def test_step_divides_at_each_boundary():
    schedule = WarmupSchedule("step", 0.1, boundaries=(10, 20), decay_rate=0.1)
    np.testing.assert_allclose(_rates(schedule, [0, 9, 10, 19, 20, 100]), [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-5)


def test_schedule_round_trips_through_serialization():
    schedule = WarmupSchedule("poly", 0.01, total_steps=500, warmup_steps=20, power=0.8)
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert isinstance(restored, WarmupSchedule)
    assert restored.get_config() == schedule.get_config()
    np.testing.assert_allclose(_rates(restored, [0, 10, 300]), _rates(schedule, [0, 10, 300]))


def test_optimizer_with_schedule_survives_model_keras(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    schedule = WarmupSchedule("cosine", 0.05, total_steps=100, warmup_steps=10)
    model.compile(make_optimizer("sgd", schedule), "mse")
    model.fit(np.ones((4, 3)), np.ones((4, 1)), verbose=0)
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    assert restored.optimizer.learning_rate.numpy() == pytest.approx(float(schedule(1)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kind="linear"), "kind"),
        (dict(kind="poly"), "total_steps"),
        (dict(kind="cosine", total_steps=10, warmup_steps=10), "total_steps"),
        (dict(base_learning_rate=0.0), "base_learning_rate"),
        (dict(kind="step", boundaries=(20, 10)), "boundaries"),
    ],
)
def test_bad_schedule_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WarmupSchedule(**kwargs)


def test_adamw_decays_kernels_but_not_biases_or_batch_norm():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization()])
    optimizer = make_optimizer("adamw", 0.1, weight_decay=0.5)
    before = [v.numpy().copy() for v in model.trainable_variables]
    zero = [np.zeros_like(v) for v in before]
    optimizer.apply_gradients(zip(zero, model.trainable_variables))
    after = {v.path: v.numpy() for v in model.trainable_variables}
    for variable, old in zip(model.trainable_variables, before):
        if variable.path.endswith("kernel"):
            # Decoupled decay with zero gradient: w <- w - lr * decay * w.
            np.testing.assert_allclose(after[variable.path], old * (1 - 0.1 * 0.5), rtol=1e-6)
        else:
            np.testing.assert_array_equal(after[variable.path], old)


def test_sgd_refuses_a_second_weight_decay():
    with pytest.raises(ValueError, match="apply_weight_decay"):
        make_optimizer("sgd", 0.1, weight_decay=1e-4)
    with pytest.raises(ValueError, match="optimizer"):
        make_optimizer("rmsprop", 0.1)
