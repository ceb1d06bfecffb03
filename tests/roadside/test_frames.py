"""Frame checks before decoding, and decoding."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from services.roadside import frames


def jpeg(width: int = 64, height: int = 48) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((height, width, 3), 120, np.uint8))
    assert ok
    return bytes(buf.tobytes())


def png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return frames.PNG_MAGIC + chunk + b"\x00" * 16


def test_a_jpeg_header_gives_format_and_size() -> None:
    image = frames.inspect_encoded(jpeg(64, 48))

    assert (image.format, image.width, image.height) == ("jpeg", 64, 48)


def test_a_jpeg_claiming_8000x8000_is_refused_before_decoding() -> None:
    data = bytearray(jpeg(64, 48))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 8000, 8000)

    with pytest.raises(frames.FrameError, match="8000x8000"):
        frames.inspect_encoded(bytes(data))


def test_a_truncated_jpeg_is_refused() -> None:
    with pytest.raises(frames.FrameError, match="truncated"):
        frames.inspect_encoded(jpeg()[:-200])


def test_garbage_is_neither_jpeg_nor_png() -> None:
    with pytest.raises(frames.FrameError, match="neither JPEG nor PNG"):
        frames.inspect_encoded(b"GIF89a" + b"\x00" * 100)


def test_a_corrupt_jpeg_body_fails_at_decoding() -> None:
    data = bytearray(jpeg(64, 48))
    start = data.index(b"\xff\xda")
    data[start + 2 : -2] = b"\xff" * (len(data) - start - 4)
    image = frames.inspect_encoded(bytes(data))

    with pytest.raises(frames.FrameError):
        frames.decode(image)


def test_a_png_of_0x0_pixels_is_refused() -> None:
    with pytest.raises(frames.FrameError, match="0x0"):
        frames.inspect_encoded(png_header_only(0, 0))


def test_raw_bytes_of_the_wrong_size_are_refused() -> None:
    with pytest.raises(frames.FrameError, match="needs 30"):
        frames.inspect_raw(b"\x00" * 29, 5, 2)


def test_raw_bgr_decodes_without_copying_into_the_given_layout() -> None:
    pixels = np.arange(2 * 5 * 3, dtype=np.uint8).reshape(2, 5, 3)

    decoded = frames.decode(frames.inspect_raw(pixels.tobytes(), 5, 2))

    np.testing.assert_array_equal(decoded, pixels)


def test_a_snapshot_is_a_jpeg_at_most_1280_pixels_a_side() -> None:
    big = np.zeros((1500, 3000, 3), np.uint8)

    snapshot = frames.encode_jpeg(big)
    image = frames.inspect_encoded(snapshot)

    assert (image.width, image.height) == (1280, 640)
