"""Camera frames: what a frame's bytes are, checked before any pixel is decoded, and the decoding.

An encoded frame's format and size are read from its header (JPEG SOF marker, PNG IHDR chunk), so a
small file that claims 8000x8000 pixels is refused without allocating 192 MB. A JPEG must end with its
EOI marker: libjpeg decodes a truncated file into a half-grey image without failing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import cv2
import numpy as np

from services.roadside.detector import BgrImage

MAX_SIDE = 4096
MAX_ENCODED_BYTES = 8 << 20
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# SOF markers carrying the frame size (C4 DHT, C8 JPG and CC DAC are not frames).
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_NO_LENGTH = {0x01, *range(0xD0, 0xD9)}


class FrameError(ValueError):
    """The frame cannot be used; the message says why (for the client)."""


@dataclass(frozen=True, slots=True)
class EncodedImage:
    data: bytes
    format: str  # "jpeg" or "png"
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class RawImage:
    data: bytes
    width: int
    height: int


Image = EncodedImage | RawImage


def _check_size(width: int, height: int, what: str) -> None:
    if width <= 0 or height <= 0:
        raise FrameError(f"{what} is {width}x{height} pixels; an image needs at least 1x1")
    if width > MAX_SIDE or height > MAX_SIDE:
        raise FrameError(f"{what} is {width}x{height} pixels; at most {MAX_SIDE}x{MAX_SIDE}")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise FrameError("the JPEG header is corrupt (no marker where one should be)")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _NO_LENGTH:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if length < 2:
            raise FrameError("the JPEG header is corrupt (bad segment length)")
        if marker in _SOF:
            if i + 9 > n:
                break
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        if marker == 0xDA:  # start of scan before any frame header
            break
        i += 2 + length
    raise FrameError("the JPEG has no frame header (truncated or corrupt)")


def inspect_encoded(data: bytes) -> EncodedImage:
    """Format and size of an encoded image from its header; FrameError when unusable."""
    if not data:
        raise FrameError("the image is empty")
    if len(data) > MAX_ENCODED_BYTES:
        raise FrameError(f"the image is {len(data)} bytes; at most {MAX_ENCODED_BYTES}")
    if data.startswith(JPEG_MAGIC):
        width, height = _jpeg_size(data)
        tail = data.rstrip(b"\x00")[-2:]
        if tail != b"\xff\xd9":
            raise FrameError("the JPEG is truncated (no end-of-image marker)")
        fmt = "jpeg"
    elif data.startswith(PNG_MAGIC):
        if len(data) < 33 or data[12:16] != b"IHDR":
            raise FrameError("the PNG is corrupt (no IHDR chunk)")
        width, height = struct.unpack(">II", data[16:24])
        fmt = "png"
    else:
        raise FrameError("the image is neither JPEG nor PNG (unknown first bytes)")
    _check_size(width, height, f"the {fmt.upper()} image")
    return EncodedImage(data, fmt, width, height)


def inspect_raw(data: bytes, width: int, height: int) -> RawImage:
    _check_size(width, height, "raw_bgr")
    expected = width * height * 3
    if len(data) != expected:
        raise FrameError(f"raw_bgr.data is {len(data)} bytes; {width}x{height} BGR needs {expected}")
    return RawImage(data, width, height)


def decode(image: Image) -> BgrImage:
    """The frame as an HxWx3 BGR array; FrameError when the pixels cannot be decoded."""
    if isinstance(image, RawImage):
        return np.frombuffer(image.data, dtype=np.uint8).reshape(image.height, image.width, 3)
    decoded = cv2.imdecode(np.frombuffer(image.data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise FrameError(f"the {image.format.upper()} image cannot be decoded (corrupt data)")
    if decoded.shape[1] != image.width or decoded.shape[0] != image.height:
        raise FrameError(f"the {image.format.upper()} image decodes to {decoded.shape[1]}x{decoded.shape[0]}, "
                         f"its header says {image.width}x{image.height}")
    return np.asarray(decoded, dtype=np.uint8)


def encode_jpeg(image: BgrImage, quality: int = 85, max_side: int = 1280) -> bytes:
    """JPEG of an image, shrunk to at most `max_side` pixels a side."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale < 1:
        image = np.asarray(cv2.resize(image, (max(1, int(w * scale)), max(1, int(h * scale))),
                                      interpolation=cv2.INTER_AREA), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise FrameError("could not encode a JPEG")
    return bytes(buf.tobytes())


def crop(image: BgrImage, box: tuple[float, float, float, float], margin: float = 0.25) -> BgrImage:
    """The box grown by `margin` of its size on each side, clipped to the image."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    left, top = max(0, int(x1 - mx)), max(0, int(y1 - my))
    right, bottom = min(w, int(x2 + mx + 1)), min(h, int(y2 + my + 1))
    if right <= left or bottom <= top:
        return image
    return image[top:bottom, left:right]
