"""Synthetic Chinese licence plates (沪A·12345 style) rendered with a CJK font, and scenes holding them.

Plate sizes and colours follow GB 36220-style conventions loosely: single-row plates 440x140 mm
(blue with white text for small cars, yellow with black text for large vehicles, green with black
text for new-energy cars, 7 or 8 characters with a separator dot after the first two).
"""

from __future__ import annotations

import random
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

BgrImage = NDArray[np.uint8]

ROOT = Path(__file__).resolve().parents[1]
FONT_CANDIDATES = (
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
    ROOT / "models" / ".cache" / "fonts" / "usr" / "share" / "fonts" / "truetype" / "wqy" / "wqy-microhei.ttc",
)
PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤川宁琼"
LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I or O on plates
DIGITS = "0123456789"

# (background BGR, text BGR, v2x.parking.v1.PlateColour)
STYLES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int], int]] = {
    "blue": ((150, 60, 10), (255, 255, 255), 1),
    "yellow": ((20, 190, 240), (20, 20, 20), 2),
    "green": ((120, 200, 90), (20, 20, 20), 3),
}


def font_path() -> Path:
    """The WenQuanYi Micro Hei font; fetched into the models cache by models/fetch_fonts.sh if needed."""
    for p in FONT_CANDIDATES:
        if p.is_file():
            return p
    out = subprocess.run(["bash", str(ROOT / "models" / "fetch_fonts.sh")], capture_output=True, text=True,
                         check=True, timeout=300)
    return Path(out.stdout.strip().splitlines()[-1])


@lru_cache(maxsize=4)
def _font(size: int) -> object:
    from PIL import ImageFont

    return ImageFont.truetype(str(font_path()), size)


def random_plate(rng: random.Random, style: str = "blue") -> str:
    """Plate text without the separator, e.g. 沪A12345 (8 characters for green new-energy plates)."""
    head = rng.choice(PROVINCES) + rng.choice(LETTERS)
    if style == "green":
        # GA 36-2018: a small vehicle's serial is D or F, a letter or digit, four digits; a large one's five
        # digits, then D or F
        if rng.random() < 0.2:
            tail = "".join(rng.choice(DIGITS) for _ in range(5)) + rng.choice("DF")
        else:
            tail = rng.choice("DF") + rng.choice(DIGITS + LETTERS) + "".join(rng.choice(DIGITS) for _ in range(4))
    else:
        tail = "".join(rng.choice(DIGITS + LETTERS) if i < 2 else rng.choice(DIGITS) for i in range(5))
    return head + tail


@dataclass(frozen=True)
class RenderedPlate:
    text: str  # without the separator
    colour: int
    image: BgrImage


def render_plate(text: str, style: str = "blue", height: int = 140) -> RenderedPlate:
    """A flat plate image: frame line, the first two characters, a dot, the rest. Plate characters are
    condensed (45 mm wide, 90 mm tall): the text is drawn at full height and squeezed to fit."""
    from PIL import Image, ImageDraw, ImageFont

    bg, fg, colour = STYLES[style]
    width = int(height * (480 if len(text) == 8 else 440) / 140)
    img = Image.new("RGB", (width, height), bg[::-1])
    draw = ImageDraw.Draw(img)
    border = max(2, height // 35)
    draw.rounded_rectangle([border, border, width - border - 1, height - border - 1], radius=height // 12,
                           outline=fg[::-1], width=border)
    font = _font(int(height * 0.7))
    assert isinstance(font, ImageFont.FreeTypeFont)
    shown = f"{text[:2]}·{text[2:]}"
    box = draw.textbbox((0, 0), shown, font=font)
    tw, th = int(box[2] - box[0]), int(box[3] - box[1])
    mask = Image.new("L", (tw, th), 0)
    ImageDraw.Draw(mask).text((-box[0], -box[1]), shown, font=font, fill=255)
    fit_w = min(tw, int(width * 0.9))
    mask = mask.resize((fit_w, th), Image.Resampling.LANCZOS)
    img.paste(Image.new("RGB", (fit_w, th), fg[::-1]), ((width - fit_w) // 2, (height - th) // 2), mask)
    return RenderedPlate(text, colour, np.asarray(cv2.cvtColor(np.array(img), cv2.COLOR_RGB2BGR), dtype=np.uint8))


def place_plate(scene: BgrImage, plate: BgrImage, corners: NDArray[np.float32]) -> BgrImage:
    """Pastes the plate onto the scene in the quad `corners` (TL, TR, BR, BL), in place."""
    h, w = plate.shape[:2]
    src = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
    matrix = cv2.getPerspectiveTransform(src, corners.astype(np.float32))
    size = (scene.shape[1], scene.shape[0])
    warped = cv2.warpPerspective(plate, matrix, size, flags=cv2.INTER_AREA)
    mask = cv2.warpPerspective(np.full((h, w), 255, np.uint8), matrix, size, flags=cv2.INTER_NEAREST)
    scene[mask > 0] = warped[mask > 0]
    return scene


def plate_scene(plate: RenderedPlate, rng: random.Random, size: tuple[int, int] = (640, 480),
                plate_width: float = 160.0) -> tuple[BgrImage, NDArray[np.float32]]:
    """A gate-camera-like frame: a dark car front on a grey background with the plate on its bumper,
    slightly rotated and in perspective, plus mild noise. Returns the frame and the plate corners."""
    w, h = size
    scene = np.full((h, w, 3), rng.randint(70, 130), np.uint8)
    car = tuple(int(c) for c in rng.choice([(40, 40, 40), (200, 200, 205), (30, 30, 120), (110, 80, 40)]))
    cv2.rectangle(scene, (int(w * 0.15), int(h * 0.25)), (int(w * 0.85), int(h * 0.95)), car, -1)
    pw = plate_width * rng.uniform(0.85, 1.15)
    ph = pw * plate.image.shape[0] / plate.image.shape[1]
    cx, cy = w / 2 + rng.uniform(-w * 0.15, w * 0.15), h * 0.7 + rng.uniform(-h * 0.05, h * 0.05)
    angle = np.radians(rng.uniform(-6, 6))
    skew = rng.uniform(-0.08, 0.08) * ph
    base = np.array([[-pw / 2, -ph / 2 + skew], [pw / 2, -ph / 2 - skew], [pw / 2, ph / 2 - skew],
                     [-pw / 2, ph / 2 + skew]], np.float32)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], np.float32)
    corners = (base @ rot.T + np.array([cx, cy], np.float32)).astype(np.float32)
    place_plate(scene, plate.image, corners)
    noise = np.random.default_rng(rng.randrange(1 << 30)).normal(0, 4, scene.shape)
    scene = np.clip(scene.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return scene, corners
