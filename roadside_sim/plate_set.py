"""A harder, seeded plate evaluation set: Chinese plates of every colour rendered with a CJK font, put on the
vehicles of real photos in perspective, then blurred, darkened and JPEG-compressed.

    from roadside_sim.plate_set import plate_set, TUNE_SEED, HELD_OUT_SEED

* Plates (GB 36220-style, drawn with WenQuanYi Micro Hei): blue (white text), yellow (black), yellow two-line
  (large vehicles' rear: province and letter above, five characters below), green new-energy (8 characters,
  a white-to-green gradient), white (police: 4 characters and a red 警), black (Hong Kong/Macau: 粤Z, 4 characters
  and 港/澳).
* Where: on the white pickup of Darknet's dog.jpg (models/fetch_samples.sh), mirrored or not, at bumper height,
  the photo scaled so that the plate is 20-40 % of the vehicle's width; the frame is a window of at most
  1280x720 of the scaled photo around it.
* How: turned about the vertical axis by up to 35 degrees (perspective), tilted up to 12 degrees, rolled up to
  5; 60 to 250 pixels wide on the image (the horizontal extent of the plate as seen); motion blur on half of
  them (1-4 % of the plate's width); night (dark, noisy) on a quarter; JPEG quality 30-90.

Two splits never overlap: TUNE_SEED frames are for looking at failures and tuning; HELD_OUT_SEED frames are only
for the figures reported (load/eval_plates.py).
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from roadside_sim.plates import DIGITS, LETTERS, PROVINCES, _font, random_plate
from roadside_sim.render import SAMPLES

BgrImage = NDArray[np.uint8]

TUNE_SEED = 19001
HELD_OUT_SEED = 19002

COLOURS = ("blue", "yellow", "yellow2", "green", "white", "black")
# v2x.parking.v1.PlateColour of each style
COLOUR_CODE = {"blue": 1, "yellow": 2, "yellow2": 2, "green": 3, "white": 4, "black": 5}
SIZE_BANDS = ((60, 80), (80, 120), (120, 170), (170, 251))
ANGLE_BANDS = ((0, 10), (10, 20), (20, 36))

# The pickup in dog.jpg (768x576), as a person draws it.
VEHICLE_PHOTO = "dog.jpg"
VEHICLE_BOX = (465.0, 72.0, 690.0, 172.0)
MAX_FRAME = (1280, 720)

# Plate faces: (background BGR top, background BGR bottom, text BGR, suffix text BGR)
_FACES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]] = {
    "blue": ((160, 70, 15), (150, 60, 10), (250, 250, 250), (250, 250, 250)),
    "yellow": ((30, 195, 245), (20, 185, 235), (20, 20, 20), (20, 20, 20)),
    "yellow2": ((30, 195, 245), (20, 185, 235), (20, 20, 20), (20, 20, 20)),
    "green": ((235, 245, 240), (90, 200, 60), (20, 20, 20), (20, 20, 20)),
    "white": ((245, 245, 245), (235, 235, 235), (20, 20, 20), (30, 30, 210)),
    "black": ((25, 25, 25), (20, 20, 20), (245, 245, 245), (245, 245, 245)),
}


@dataclass(frozen=True)
class PlateSample:
    index: int
    style: str  # one of COLOURS
    text: str  # without separators
    colour: int  # v2x.parking.v1.PlateColour
    width_px: float  # horizontal extent of the plate on the frame
    yaw_deg: float  # turn about the vertical axis (perspective), signed
    blur_px: int  # motion blur length, 0 = none
    night: bool
    jpeg_quality: int
    corners: tuple[tuple[float, float], ...]  # TL, TR, BR, BL on the frame
    jpeg: bytes

    @property
    def image(self) -> BgrImage:
        return np.asarray(cv2.imdecode(np.frombuffer(self.jpeg, np.uint8), cv2.IMREAD_COLOR), np.uint8)

    @property
    def size_band(self) -> str:
        return band_name(self.width_px, SIZE_BANDS, "px")

    @property
    def angle_band(self) -> str:
        return band_name(abs(self.yaw_deg), ANGLE_BANDS, "°")


def band_name(value: float, bands: tuple[tuple[int, int], ...], unit: str) -> str:
    for lo, hi in bands:
        if lo <= value < hi:
            return f"{lo}-{hi - 1}{unit}" if unit == "px" else f"{lo}-{hi - 1 if hi != 36 else 35}{unit}"
    return f"other{unit}"


def plate_text(rng: random.Random, style: str) -> str:
    if style in ("blue", "yellow", "yellow2", "green"):
        return random_plate(rng, "green" if style == "green" else "blue")
    head = rng.choice(PROVINCES) + rng.choice(LETTERS)
    if style == "white":
        return head + "".join(rng.choice(DIGITS) for _ in range(4)) + "警"
    return "粤Z" + "".join(rng.choice(DIGITS + LETTERS) if i == 0 else rng.choice(DIGITS) for i in range(4)) + (
        rng.choice("港澳")
    )


def _draw_text(face: NDArray[np.uint8], text: str, box: tuple[int, int, int, int], colours: list[tuple[int, int, int]],
               gap: float = 0.0) -> None:
    """Condensed plate characters, evenly spaced in `box` (x1, y1, x2, y2); `gap` = an extra space after the
    second character (the separator dot goes there)."""
    from PIL import Image, ImageDraw, ImageFont

    x1, y1, x2, y2 = box
    h = y2 - y1
    font = _font(int(h * 1.0))
    assert isinstance(font, ImageFont.FreeTypeFont)
    n = len(text)
    slot = (x2 - x1) / (n + gap)
    for i, (ch, colour) in enumerate(zip(text, colours, strict=True)):
        bbox = font.getbbox(ch)
        cw, chh = int(bbox[2] - bbox[0]), int(bbox[3] - bbox[1])
        mask = Image.new("L", (max(cw, 1), max(chh, 1)), 0)
        ImageDraw.Draw(mask).text((-bbox[0], -bbox[1]), ch, font=font, fill=255)
        target_w = max(2, int(slot * 0.82))
        mask = mask.resize((target_w, h), Image.Resampling.LANCZOS)
        m = np.asarray(mask, np.float32)[..., None] / 255.0
        left = int(x1 + (i + (gap if i >= 2 else 0)) * slot + (slot - target_w) / 2)
        region = face[y1 : y1 + h, left : left + target_w]
        m = m[: region.shape[0], : region.shape[1]]
        region[:] = (region * (1 - m) + np.array(colour, np.float32) * m).astype(np.uint8)
    if gap:
        cx = int(x1 + 2 * slot + gap * slot / 2)
        cv2.circle(face, (cx, (y1 + y2) // 2), max(2, h // 14), colours[0], -1)


def render(text: str, style: str) -> BgrImage:
    """The flat plate, 140 px high per row (440x140 mm single-row, 440x220 mm two-row)."""
    top, bottom, fg, suffix = _FACES[style]
    two_rows = style == "yellow2"
    width = 480 if len(text) == 8 else 440
    height = 220 if two_rows else 140
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    face = (np.array(top, np.float32) * (1 - ramp) + np.array(bottom, np.float32) * ramp).repeat(width, axis=1)
    face = face.astype(np.uint8)
    border = 4
    cv2.rectangle(face, (border, border), (width - border - 1, height - border - 1), fg, border)
    colours = [fg] * len(text)
    if style in ("white", "black"):
        colours[-1] = suffix
    if two_rows:
        _draw_text(face, text[:2], (130, 14, 310, 74), colours[:2])
        _draw_text(face, text[2:], (22, 90, width - 22, 204), colours[2:])
    else:
        _draw_text(face, text, (18, 22, width - 18, 118), colours, gap=0.5)
    return face


def _project(face_w: int, face_h: int, width_px: float, yaw: float, pitch: float, roll: float,
             centre: tuple[float, float]) -> NDArray[np.float32]:
    """Image corners (TL, TR, BR, BL) of a plate turned by yaw/pitch/roll, seen by a pinhole camera, scaled so that
    its horizontal extent is `width_px`."""
    aspect = face_h / face_w
    pts = np.array([[-0.5, -aspect / 2, 0], [0.5, -aspect / 2, 0], [0.5, aspect / 2, 0], [-0.5, aspect / 2, 0]])
    cy, sy = math.cos(math.radians(yaw)), math.sin(math.radians(yaw))
    cp, sp = math.cos(math.radians(pitch)), math.sin(math.radians(pitch))
    cr, sr = math.cos(math.radians(roll)), math.sin(math.radians(roll))
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    world = pts @ (rz @ rx @ ry).T + np.array([0, 0, 4.0])  # 4 plate widths from the camera
    image = world[:, :2] / world[:, 2:3]
    extent = image[:, 0].max() - image[:, 0].min()
    placed: NDArray[np.float32] = ((image - image.mean(axis=0)) * (width_px / extent) + np.array(centre)).astype(
        np.float32
    )
    return placed


@lru_cache(maxsize=1)
def _vehicle_photo(samples: Path = SAMPLES) -> BgrImage:
    photo = cv2.imread(str(samples / VEHICLE_PHOTO), cv2.IMREAD_COLOR)
    if photo is None:
        raise FileNotFoundError(f"{samples / VEHICLE_PHOTO} missing; run `make models` (models/fetch_samples.sh)")
    return np.asarray(photo, np.uint8)


def make_sample(index: int, rng: random.Random, style: str) -> PlateSample:
    text = plate_text(rng, style)
    face = render(text, style)
    width_px = rng.uniform(60.0, 250.0)
    yaw = rng.uniform(-35.0, 35.0)
    pitch = rng.uniform(-12.0, 12.0)
    roll = rng.uniform(-5.0, 5.0)
    photo = _vehicle_photo()
    mirrored = rng.random() < 0.5
    if mirrored:
        photo = np.ascontiguousarray(photo[:, ::-1])
    vx1, vy1, vx2, vy2 = VEHICLE_BOX
    if mirrored:
        vx1, vx2 = photo.shape[1] - vx2, photo.shape[1] - vx1
    # Scale the photo so that the plate is 20-40 % of the vehicle's width.
    scale = width_px / (rng.uniform(0.2, 0.4) * (vx2 - vx1))
    scaled = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    sx1, sy1, sx2, sy2 = (v * scale for v in (vx1, vy1, vx2, vy2))
    # Bumper height, anywhere across the vehicle where the plate fits.
    margin = width_px / 2 + 2
    cx = rng.uniform(min(sx1 + margin, (sx1 + sx2) / 2), max(sx2 - margin, (sx1 + sx2) / 2))
    cy = sy1 + rng.uniform(0.62, 0.8) * (sy2 - sy1)
    corners = _project(face.shape[1], face.shape[0], width_px, yaw, pitch, roll, (cx, cy))
    # The frame: a window of the scaled photo around the plate.
    fh, fw = scaled.shape[:2]
    ww, wh = min(MAX_FRAME[0], fw), min(MAX_FRAME[1], fh)
    x0 = int(np.clip(cx - rng.uniform(0.2, 0.8) * ww, 0, fw - ww))
    y0 = int(np.clip(cy - rng.uniform(0.3, 0.7) * wh, 0, fh - wh))
    frame = np.ascontiguousarray(scaled[y0 : y0 + wh, x0 : x0 + ww])
    corners -= np.array([x0, y0], np.float32)
    src = np.array([[0, 0], [face.shape[1] - 1, 0], [face.shape[1] - 1, face.shape[0] - 1], [0, face.shape[0] - 1]],
                   np.float32)
    matrix = cv2.getPerspectiveTransform(src, corners)
    size = (frame.shape[1], frame.shape[0])
    warped = cv2.warpPerspective(face, matrix, size, flags=cv2.INTER_AREA)
    alpha = cv2.warpPerspective(np.full(face.shape[:2], 255, np.uint8), matrix, size, flags=cv2.INTER_LINEAR)
    a = alpha.astype(np.float32)[..., None] / 255.0
    frame = (frame * (1 - a) + warped * a).astype(np.uint8)
    # Motion blur on half of them: 1-4 % of the plate's width (a vehicle moving a little during the exposure).
    blur = max(2, round(rng.uniform(0.01, 0.04) * width_px)) if rng.random() < 0.5 else 0
    if blur:
        kernel = np.zeros((blur, blur), np.float32)
        kernel[blur // 2, :] = 1.0 / blur
        rot = cv2.getRotationMatrix2D((blur / 2 - 0.5, blur / 2 - 0.5), rng.uniform(-20, 20), 1.0)
        turned = cv2.warpAffine(kernel, rot, (blur, blur))
        frame = cv2.filter2D(frame, -1, (turned / max(float(turned.sum()), 1e-6)).astype(np.float32))
    night = rng.random() < 0.25
    if night:
        noise = np.random.default_rng(rng.randrange(1 << 30)).normal(0, rng.uniform(5, 14), frame.shape)
        frame = np.clip(frame.astype(np.float32) * rng.uniform(0.3, 0.55) + noise, 0, 255).astype(np.uint8)
    quality = rng.randint(30, 90)
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    seen_width = float(corners[:, 0].max() - corners[:, 0].min())
    return PlateSample(index, style, text, COLOUR_CODE[style], seen_width, yaw, blur, night, quality,
                       tuple((float(x), float(y)) for x, y in corners), io.BytesIO(buf.tobytes()).getvalue())


def plate_set(seed: int, count: int) -> list[PlateSample]:
    """`count` samples, colours in turn; the same seed and count give the same samples, byte for byte."""
    rng = random.Random(seed)
    return [make_sample(i, rng, COLOURS[i % len(COLOURS)]) for i in range(count)]
