"""Shared test setup: quiet TensorFlow, fixed seeds, and a fresh Keras session per test."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_session():
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session(free_memory=True)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
