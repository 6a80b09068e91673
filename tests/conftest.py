"""Shared test setup: quiet TensorFlow, fixed seeds, and a fresh Keras session per test."""

import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


def pytest_collection_finish(session):
    # Everything alive once the test modules are imported (TensorFlow, Keras, the zoo: some
    # 400,000 objects) lives to the end of the run: freezing it keeps each test's garbage
    # collection below (`free_memory=True`) from walking it again, 0.2 s a test -> under 0.01 s.
    gc.freeze()


@pytest.fixture(autouse=True)
def _fresh_session():
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session(free_memory=True)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
