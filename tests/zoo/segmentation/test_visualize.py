"""The VOC palette against VOC's published colours, and the blend."""

import numpy as np
import pytest

from zoo.segmentation.visualize import blend, colorize, voc_palette


def test_palette_has_vocs_colours():
    palette = voc_palette()
    # VOC: background, aeroplane, bicycle, bird, boat, ..., person (15), tvmonitor (20).
    assert palette[0].tolist() == [0, 0, 0]
    assert palette[1].tolist() == [128, 0, 0]
    assert palette[2].tolist() == [0, 128, 0]
    assert palette[3].tolist() == [128, 128, 0]
    assert palette[4].tolist() == [0, 0, 128]
    assert palette[15].tolist() == [192, 128, 128]
    assert palette[20].tolist() == [0, 64, 128]
    assert len({tuple(colour) for colour in palette}) == 256


def test_blend_colours_objects_and_keeps_background():
    image = np.full((2, 2, 3), 100, np.uint8)
    mask = np.array([[0, 1], [255, 2]])
    out = blend(image, mask, alpha=0.5)
    assert out[0, 0].tolist() == [100, 100, 100]
    assert out[0, 1].tolist() == [114, 50, 50]  # (100 + 128) / 2 rounds to 114
    assert out[1, 0].tolist() == [162, 162, 146]
    assert colorize(mask)[1, 1].tolist() == [0, 128, 0]
    with pytest.raises(ValueError, match="same size"):
        blend(image, mask[:1])
