"""Reading a plate crop: the PP-OCRv6 text recogniser run directly with onnxruntime, and its CTC output decoded
under the national plate format (GA 36-style), as LPR systems do.

The recogniser gives, per 8-pixel column, probabilities over 18,708 characters (and the CTC blank). A general
decoder (greedy, what rapidocr does) happily returns 律 for 津, 0 for O, drops the province or the 警 suffix. We
decode only over the characters a plate can hold, with a prefix beam search whose prefixes must fit one of the
plate patterns below: position 1 a province, position 2 a letter (no I or O), then five letters or digits, four
and a suffix (警 学 港 澳 挂 领 试 超), or the six of a new-energy plate (GA 36-2018: D or F, a letter or digit and
four digits on a small vehicle; five digits then D or F on a large one).
Two-row plates (yellow, large vehicles) are read as two rows: province and letter above, five below.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

BgrImage = NDArray[np.uint8]

PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # I and O are never issued
DIGITS = "0123456789"
ALNUM = LETTERS + DIGITS
SUFFIXES = "警学港澳挂领试超"
ALPHABET = PROVINCES + ALNUM + SUFFIXES

Pattern = tuple[str, ...]  # the characters allowed at each position

SINGLE_ROW: tuple[Pattern, ...] = (
    (PROVINCES, LETTERS, ALNUM, ALNUM, ALNUM, ALNUM, ALNUM),
    (PROVINCES, LETTERS, ALNUM, ALNUM, ALNUM, ALNUM, SUFFIXES),
    (PROVINCES, LETTERS, "DF", ALNUM, DIGITS, DIGITS, DIGITS, DIGITS),  # small new-energy (GA 36-2018)
    (PROVINCES, LETTERS, DIGITS, DIGITS, DIGITS, DIGITS, DIGITS, "DF"),  # large new-energy
)
TOP_ROW: tuple[Pattern, ...] = ((PROVINCES, LETTERS),)
BOTTOM_ROW: tuple[Pattern, ...] = ((ALNUM,) * 5, (ALNUM, ALNUM, ALNUM, ALNUM, SUFFIXES))

FORCED_CHOICES = 2  # PlateDecoder.beams(force=True)
REC_HEIGHT = 48
REC_MIN_WIDTH = 192  # PP-OCR pads narrower crops to 4:1


def fits(text: str, patterns: Sequence[Pattern] = SINGLE_ROW) -> bool:
    """Whether ``text`` is a whole plate of one of the patterns."""
    return any(len(p) == len(text) and all(c in allowed for c, allowed in zip(text, p, strict=True))
               for p in patterns)


@dataclass(frozen=True, slots=True)
class TextReading:
    text: str
    confidence: float  # mean of the characters' probabilities
    weakest: float  # the least sure character's probability
    complete: bool  # the text fits a pattern


class PlateDecoder:
    """Constrained CTC decoding over the recogniser's vocabulary (index 0 = blank)."""

    def __init__(self, vocabulary: Sequence[str], beam: int = 10, min_prob: float = 1e-4) -> None:
        index = {c: i for i, c in enumerate(vocabulary)}
        missing = [c for c in ALPHABET if c not in index]
        if missing:
            raise ValueError(f"the recogniser cannot write {''.join(missing)}")
        self.columns = np.array([0] + [index[c] for c in ALPHABET], np.int64)  # blank first
        self.chars = ("", *ALPHABET)
        self.beam = beam
        self.min_prob = min_prob
        self.column_of = {c: i for i, c in enumerate(self.chars) if c}

    def restrict(self, probs: NDArray[np.float32]) -> NDArray[np.float64]:
        """[T, 1 + len(ALPHABET)]: blank and plate characters only, each frame renormalised."""
        sub = probs[:, self.columns].astype(np.float64)
        out: NDArray[np.float64] = sub / np.maximum(sub.sum(axis=1, keepdims=True), 1e-12)
        return out

    def decode(self, probs: NDArray[np.float32], patterns: Sequence[Pattern] = SINGLE_ROW,
               force: bool = False) -> TextReading:
        return self.decode_restricted(self.restrict(probs), patterns, force)

    def decode_restricted(self, sub: NDArray[np.float64], patterns: Sequence[Pattern] = SINGLE_ROW,
                          force: bool = False) -> TextReading:
        beams = self.beams(sub, patterns, force)
        done = [(k, v) for k, v in beams.items() if fits(self.text(k), patterns)]
        best = max(done, key=lambda kv: kv[1])[0] if done else max(beams.items(), key=lambda kv: kv[1])[0]
        return self.reading(best, [sub], patterns)

    def beams(self, sub: NDArray[np.float64], patterns: Sequence[Pattern],
              force: bool = False) -> dict[tuple[int, ...], float]:
        """The prefix beam search over restricted frames: the final beams (prefix -> relative probability).

        ``force``: where the patterns leave at most ``FORCED_CHOICES`` characters, those are tried in every frame
        however unlikely the model finds them (else a frame offers only characters at ``min_prob`` or more). A
        format that fixes a character can then write it: the recogniser gives the 粤 of a small black plate under
        10^-4 in every frame on some plates of the tuning split. Such a prefix still competes for the beam: a forced
        character that every whole reading needs (a fixed head) costs them all alike; a forced last character
        competes with shorter prefixes and can be pruned."""
        allowed_at = [self._allowed(patterns, k) for k in range(max(len(p) for p in patterns) + 1)]
        # prefix (tuple of column indices) -> [p ending in blank, p ending in its last character]
        beams: dict[tuple[int, ...], list[float]] = {(): [1.0, 0.0]}
        for t in range(sub.shape[0]):
            frame = sub[t]
            candidates = np.nonzero(frame >= self.min_prob)[0]
            candidates = candidates[candidates > 0]
            nxt: dict[tuple[int, ...], list[float]] = {}
            for prefix, (pb, pnb) in beams.items():
                entry = nxt.setdefault(prefix, [0.0, 0.0])
                entry[0] += (pb + pnb) * frame[0]
                if prefix:
                    entry[1] += pnb * frame[prefix[-1]]
                if len(prefix) >= len(allowed_at) - 1:
                    continue
                consistent = self._consistent(prefix, patterns)
                allowed = {c for p in consistent if len(p) > len(prefix) for c in p[len(prefix)]}
                tried = candidates
                if force and len(allowed) <= FORCED_CHOICES:
                    tried = np.union1d(candidates, [self.column_of[c] for c in allowed])
                for c in tried:
                    if self.chars[c] not in allowed:
                        continue
                    longer = (*prefix, int(c))
                    e = nxt.setdefault(longer, [0.0, 0.0])
                    e[1] += (pb if prefix and prefix[-1] == c else pb + pnb) * frame[c]
            ranked = sorted(nxt.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))[: self.beam]
            top = ranked[0][1][0] + ranked[0][1][1] or 1.0
            beams = {k: [v[0] / top, v[1] / top] for k, v in ranked}  # rescaled: no underflow over the frames
        return {k: v[0] + v[1] for k, v in beams.items()}

    def reading(self, labels: tuple[int, ...], subs: Sequence[NDArray[np.float64]],
                patterns: Sequence[Pattern]) -> TextReading:
        """``labels`` as a reading: each character's probability averaged over the models' restricted frames."""
        text = self.text(labels)
        complete = fits(text, patterns)
        per_model = [self._char_probs(sub, labels) for sub in subs]
        probs_per_char = [float(np.mean(column)) for column in zip(*per_model, strict=True)]
        confidence = float(np.mean(probs_per_char)) if probs_per_char else 0.0
        weakest = float(np.min(probs_per_char)) if probs_per_char else 0.0
        return TextReading(text, confidence if complete else confidence * 0.5, weakest, complete)

    def text(self, prefix: tuple[int, ...]) -> str:
        return "".join(self.chars[c] for c in prefix)

    def _consistent(self, prefix: tuple[int, ...], patterns: Sequence[Pattern]) -> list[Pattern]:
        text = self.text(prefix)
        return [p for p in patterns if len(p) >= len(text) and all(c in a for c, a in zip(text, p, strict=False))]

    @staticmethod
    def _allowed(patterns: Sequence[Pattern], k: int) -> set[str]:
        return {c for p in patterns if len(p) > k for c in p[k]}

    @staticmethod
    def _char_probs(sub: NDArray[np.float64], labels: tuple[int, ...]) -> list[float]:
        """Each label's best frame probability along the most likely CTC alignment (Viterbi)."""
        if not labels:
            return []
        ext = [0]
        for c in labels:
            ext += [c, 0]
        n_t, n_s = sub.shape[0], len(ext)
        if n_t < len(labels):
            return [0.0] * len(labels)
        logp = np.log(np.maximum(sub[:, ext], 1e-30))
        score = np.full((n_t, n_s), -np.inf)
        back = np.zeros((n_t, n_s), np.int64)
        score[0, 0] = logp[0, 0]
        score[0, 1] = logp[0, 1]
        for t in range(1, n_t):
            for s in range(n_s):
                options = [(score[t - 1, s], s)]
                if s >= 1:
                    options.append((score[t - 1, s - 1], s - 1))
                if s >= 2 and ext[s] != 0 and ext[s] != ext[s - 2]:
                    options.append((score[t - 1, s - 2], s - 2))
                best, arg = max(options)
                score[t, s] = best + logp[t, s]
                back[t, s] = arg
        s = n_s - 1 if score[-1, n_s - 1] >= score[-1, n_s - 2] else n_s - 2
        best_prob = [0.0] * len(labels)
        for t in range(n_t - 1, -1, -1):
            if s % 2 == 1:
                k = s // 2
                best_prob[k] = max(best_prob[k], float(sub[t, ext[s]]))
            s = int(back[t, s])
        return best_prob


def ctc_log_likelihoods(logp: NDArray[np.float64], labels: NDArray[np.int64]) -> NDArray[np.float64]:
    """log P(labels | frames) under CTC (the forward algorithm) for N label sequences of one length at once.

    ``logp`` [T, C]: log-probabilities per frame, column 0 the blank; ``labels`` [N, L] column indices."""
    n, length = labels.shape
    if length == 0:
        return np.full(n, float(logp[:, 0].sum()))
    if logp.shape[0] < length:
        return np.full(n, -np.inf)
    ext = np.zeros((n, 2 * length + 1), np.int64)  # blank, c1, blank, c2, ..., blank
    ext[:, 1::2] = labels
    lp = logp[:, ext]  # [T, N, S]
    skip = np.zeros(ext.shape, bool)  # s-2 -> s allowed: a character after a different character
    skip[:, 3::2] = labels[:, 1:] != labels[:, :-1]
    never = np.full((n, 2), -np.inf)
    alpha = np.full(ext.shape, -np.inf)
    alpha[:, :2] = lp[0, :, :2]
    for t in range(1, logp.shape[0]):
        one = np.concatenate([never[:, :1], alpha[:, :-1]], axis=1)
        two = np.where(skip, np.concatenate([never, alpha[:, :-2]], axis=1), -np.inf)
        alpha = np.logaddexp(np.logaddexp(alpha, one), two) + lp[t]
    out: NDArray[np.float64] = np.logaddexp(alpha[:, -1], alpha[:, -2])
    return out


class Evidence:
    """One crop and what the recognisers made of it; a second opinion is computed only when asked for."""

    __slots__ = ("_probs", "crop")

    def __init__(self, crop: BgrImage, models: int) -> None:
        self.crop = crop
        self._probs: list[NDArray[np.float64] | None] = [None] * models

    def restricted(self, model: int, recogniser: PlateRecogniser) -> NDArray[np.float64]:
        probs = self._probs[model]
        if probs is None:
            probs = self._probs[model] = recogniser.models[model].restricted(self.crop)
        return probs


class RecognitionModel:
    """One CTC text recogniser of the PP-OCR family: its session, input name and plate-character decoder."""

    def __init__(self, model_path: Path, threads: int = 1, characters: Path | None = None) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
        if characters is not None:
            listed = characters.read_text(encoding="utf-8").splitlines()
        else:
            listed = self.session.get_modelmeta().custom_metadata_map.get("character", "").splitlines()
        if not listed:
            raise ValueError(f"{model_path} carries no character list and none was given")
        vocabulary = ["", *listed, " "]  # PP-OCR: blank first, space last
        outputs = self.session.get_outputs()[0].shape[-1]
        if isinstance(outputs, int) and outputs != len(vocabulary):
            raise ValueError(f"{model_path} has {outputs} classes, its character list {len(vocabulary)}")
        self.decoder = PlateDecoder(vocabulary)
        self._input = self.session.get_inputs()[0].name

    def probabilities(self, crop: BgrImage) -> NDArray[np.float32]:
        probs: NDArray[np.float32] = self.session.run(None, {self._input: PlateRecogniser.tensor(crop)[None]})[0][0]
        return probs

    def restricted(self, crop: BgrImage) -> NDArray[np.float64]:
        return self.decoder.restrict(self.probabilities(crop))


class PlateRecogniser:
    """The plate text recogniser: a primary PP-OCR model and optional second opinions, one crop per call.

    A reading the primary model is sure of (whole plate, every character at least ``consult_below``) stands. Else
    every model reads the crop; the candidates are the final beams of each model's constrained search, and the
    one with the highest summed CTC log-likelihood over the models wins (a product of experts). The models were
    trained apart and misread different plates: on the tuning split the primary alone read 374 of 400 plates."""

    def __init__(self, model_path: Path, threads: int = 1,
                 second_opinions: Sequence[tuple[Path, Path | None]] = (), consult_below: float = 1.0) -> None:
        self.models = [RecognitionModel(model_path, threads)]
        self.models += [RecognitionModel(path, threads, characters) for path, characters in second_opinions]
        self.decoder = self.models[0].decoder
        self.consult_below = consult_below

    @staticmethod
    def tensor(crop: BgrImage) -> NDArray[np.float32]:
        """PP-OCR's input: 48 px high, the crop's aspect kept, scaled to -1..1, padded right to at least 4:1."""
        h, w = crop.shape[:2]
        width = max(1, math.ceil(REC_HEIGHT * w / max(h, 1)))
        resized = cv2.resize(crop, (width, REC_HEIGHT), interpolation=cv2.INTER_LINEAR if width > w else cv2.INTER_AREA)
        out = np.zeros((3, REC_HEIGHT, max(width, REC_MIN_WIDTH)), np.float32)
        out[:, :, :width] = resized.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0
        return out

    def probabilities(self, crop: BgrImage) -> NDArray[np.float32]:
        """The primary model's output over its whole vocabulary."""
        return self.models[0].probabilities(crop)

    def evidence(self, crop: BgrImage) -> Evidence:
        return Evidence(crop, len(self.models))

    def read(self, crop: BgrImage, patterns: Sequence[Pattern] = SINGLE_ROW, force: bool = False) -> TextReading:
        return self.decode(self.evidence(crop), patterns, force)

    def likeliest(self, evidence: Evidence, texts: Sequence[str]) -> str:
        """Of ``texts`` (plate characters, one length), the one the primary model's frames make likeliest (CTC).

        The primary alone: for a small black plate's 港 or 澳 it chose better than the three models' summed
        likelihood (tuning split, 30 black plates under 80 px: 24 against 20 read exactly)."""
        labels = np.array([[self.decoder.column_of[c] for c in text] for text in texts], np.int64)
        logp = np.log(np.maximum(evidence.restricted(0, self), 1e-30))
        return texts[int(np.argmax(ctc_log_likelihoods(logp, labels)))]

    def decode(self, evidence: Evidence, patterns: Sequence[Pattern] = SINGLE_ROW, force: bool = False) -> TextReading:
        """``force``: characters the patterns fix are written however unlikely (PlateDecoder.beams)."""
        primary = evidence.restricted(0, self)
        first = self.decoder.decode_restricted(primary, patterns, force)
        if len(self.models) == 1 or (first.complete and first.weakest >= self.consult_below):
            return first
        subs = [evidence.restricted(m, self) for m in range(len(self.models))]
        candidates: set[tuple[int, ...]] = set()
        for model, sub in zip(self.models, subs, strict=True):
            candidates.update(k for k in model.decoder.beams(sub, patterns, force) if k)
        if not candidates:
            return first
        ranked = sorted(candidates)
        score = np.zeros(len(ranked))
        by_length: dict[int, list[int]] = {}
        for i, candidate in enumerate(ranked):
            by_length.setdefault(len(candidate), []).append(i)
        logs = [np.log(np.maximum(sub, 1e-30)) for sub in subs]
        for idx in by_length.values():
            same_length = np.array([ranked[i] for i in idx], np.int64)
            for lp in logs:
                score[idx] += ctc_log_likelihoods(lp, same_length)
        whole = [i for i, candidate in enumerate(ranked) if fits(self.decoder.text(candidate), patterns)]
        best = max(whole or range(len(ranked)), key=lambda i: score[i])
        return self.decoder.reading(ranked[best], subs, patterns)
