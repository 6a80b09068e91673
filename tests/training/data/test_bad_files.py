"""Bad image and mask files are found from their headers while a dataset is read, before training
(issue 18): decompression bombs, JPEGs cut short, masks of 1 or 16 bits or of another size."""

import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.helpers import run_zoo
from tests.training.data.voc_fixture import VOC_IMAGES, write_voc
from training.data import DataError, DataWarning, Example, load_image, load_mask, read_folder, read_voc_segmentation


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(path, height, width):
    """A greyscale PNG of `height` x `width` zeros: a few KB per 64 million pixels."""
    compressor = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte and the pixels
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b""))
    return path


def write_folder(root, images):
    """`root/a/<name>` for each name -> bytes or an RGB array (written as a JPEG or PNG)."""
    (root / "a").mkdir(parents=True)
    rng = np.random.default_rng(0)
    cv2.imwrite(str(root / "a" / "good.jpg"), rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    for name, content in images.items():
        if isinstance(content, bytes):
            (root / "a" / name).write_bytes(content)
        else:
            assert cv2.imwrite(str(root / "a" / name), content)
    return root


def test_pixel_limit_refuses_a_decompression_bomb_from_its_header(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "images", {})
    bomb = png_bomb(root / "a" / "bomb.png", 8000, 8000)
    assert bomb.stat().st_size < 100_000  # 64 million pixels, 1.9 GB through the pipeline once decoded
    limit = r"bomb\.png: the image is 8000x8000 \(height x width\), 64,000,000 pixels, more than the limit of " \
            r"50,000,000 pixels.*ZOO_MAX_IMAGE_PIXELS=PIXELS to raise it"
    with pytest.raises(DataError, match=limit):
        read_folder(root)
    with pytest.raises(DataError, match=limit):
        load_image(Example(str(bomb), label=0))  # before decoding, for examples built by hand too
    # The limit is the user's to set: lower here, so that a small image shows both sides of it.
    bomb.unlink()
    monkeypatch.setenv("ZOO_MAX_IMAGE_PIXELS", str(24 * 32 - 1))
    with pytest.raises(DataError, match=r"good\.jpg: the image is 24x32 .* more than the limit of 767 pixels"):
        read_folder(root)
    monkeypatch.setenv("ZOO_MAX_IMAGE_PIXELS", str(24 * 32))
    assert len(read_folder(root).examples) == 1
    monkeypatch.setenv("ZOO_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="ZOO_MAX_IMAGE_PIXELS must be a positive number of pixels or 'none'"):
        read_folder(root)


def test_a_jpeg_cut_short_is_refused_unless_allowed(tmp_path, monkeypatch):
    pixels = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    whole = cv2.imencode(".jpg", pixels)[1].tobytes()
    # Complete JPEGs with data after their end marker (a phone's motion photo) are not cut short.
    root = write_folder(tmp_path / "images", {"cut.jpg": whole[: len(whole) // 2],
                                              "motion.jpg": whole + b"\x00ftyp" * 9})
    cut = str(root / "a" / "cut.jpg")
    message = r"cut\.jpg: the JPEG is cut short \(no end-of-image marker FFD9\).*ZOO_ALLOW_TRUNCATED_IMAGES=1"
    with pytest.raises(DataError, match=message):
        read_folder(root)
    with pytest.raises(DataError, match=message):
        load_image(Example(cut, label=0))
    monkeypatch.setenv("ZOO_ALLOW_TRUNCATED_IMAGES", "1")
    with pytest.warns(DataWarning, match=r"1 JPEG\(s\) cut short read as they are, .* grey .*cut\.jpg"):
        source = read_folder(root)
    assert [example.image.rsplit("/", 1)[-1] for example in source.examples] == ["cut.jpg", "good.jpg", "motion.jpg"]
    image = load_image(source.examples[0])
    assert image.shape == (48, 64, 3) and (image[-1] == 128).all()  # the missing rows, grey


def _voc(tmp_path):
    return write_voc(tmp_path / "VOC2012", splits={"train": list(VOC_IMAGES)[:2]})


def test_masks_of_one_bit_sixteen_bits_or_another_size(tmp_path):
    root = _voc(tmp_path)
    path = root / "SegmentationClass" / "2008_000002.png"
    foreground = np.zeros((24, 32), bool)
    foreground[4:20, 5:15] = True
    Image.fromarray(foreground).convert("1").save(path)  # a 1-bit PNG: background and one class
    source = read_voc_segmentation(root, "train", classes="dog")
    mask = load_mask(source.examples[1], num_classes=1)
    np.testing.assert_array_equal(mask, foreground.astype(np.uint8))  # ids 0 and 1, not 0 and 255 (ignore)

    Image.fromarray(foreground.astype(np.uint16) * 300).save(path)  # 16-bit greyscale
    with pytest.raises(DataError, match=r"2008_000002\.png: a 16-bit image \(mode I;16\); masks must be 8-bit class "
                                        r"ids: an 8-bit palette PNG \(mode P.*or 8-bit greyscale \(mode L\)"):
        read_voc_segmentation(root, "train")

    Image.fromarray(np.zeros((24, 30), np.uint8)).save(path)
    with pytest.raises(DataError, match=r"2008_000002\.png: the mask is 24x30 \(height x width\) but its image "
                                        r".*2008_000002\.jpg is 24x32"):
        read_voc_segmentation(root, "train")


@pytest.mark.slow
def test_zoo_train_refuses_a_sixteen_bit_mask_before_building_the_model(tmp_path):
    root = _voc(tmp_path)
    path = root / "SegmentationClass" / "2008_000002.png"
    Image.fromarray(np.zeros((24, 32), np.uint16)).save(path)
    out = tmp_path / "run"
    out.mkdir()
    result = run_zoo("train", "deeplabv3plus_mobilenetv2", "--dataset", f"voc:{root}", "--image-size", "32", "32",
                     "--epochs", "1", "--out", out, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("zoo ")]
    assert len(lines) == 1 and lines[0].startswith("zoo train: error: ") and str(path) in lines[0], result.stderr
    assert "16-bit" in lines[0] and "Traceback" not in result.stderr
    assert list(out.iterdir()) == []  # no logs/, no run.json
