"""Fixtures of the data tests."""

import pytest

from tests.training.data.voc_fixture import VOC_IMAGES, write_voc


@pytest.fixture
def voc_root(tmp_path):
    return write_voc(tmp_path / "VOC2012", splits={"train": list(VOC_IMAGES)[:2], "val": list(VOC_IMAGES)[2:],
                                                   "trainval": list(VOC_IMAGES)})
