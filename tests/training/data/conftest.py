"""Fixtures of the data tests."""

import pytest

from tests.training.data.voc_fixture import VOC_IMAGES, write_voc


@pytest.fixture
def voc_root(tmp_path):
    return write_voc(tmp_path / "VOC2012", splits={"train": list(VOC_IMAGES)[:2], "val": list(VOC_IMAGES)[2:],
                                                   "trainval": list(VOC_IMAGES)})


@pytest.fixture(autouse=True)
def _fresh_session():
    """Overrides the suite's per-test `keras.backend.clear_session(free_memory=True)`: these
    tests build no Keras model, and its garbage collection would double the folder's time."""
    yield
