"""Plate text: the national format, and CTC decoding constrained to it, on hand-made recogniser outputs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from services.roadside.plate_text import BOTTOM_ROW, SINGLE_ROW, TOP_ROW, PlateDecoder, ctc_log_likelihoods, fits

# A small stand-in for the recogniser's 18,708 characters: blank first, then some that are not on plates.
VOCAB = ["", "律", "O", "I", "川", "II", *"京津沪粤川鄂湘新吉", *"ABCDEFGHJKLMNPQRSTUVWXYZ", *"0123456789",
         *"警学港澳挂领试超", " "]
# PlateDecoder wants every plate character; give it the full vocabulary of provinces it expects.
FULL = [*VOCAB, *[c for c in "渝冀豫云辽黑皖鲁苏浙赣桂甘晋蒙陕闽贵青藏宁琼" if c not in VOCAB]]


def frames(*steps: dict[str, float]) -> np.ndarray:
    """One frame per step: the given probabilities, the rest of the mass on blank."""
    out = np.full((len(steps), len(FULL)), 1e-6, np.float32)
    for t, probs in enumerate(steps):
        for ch, p in probs.items():
            out[t, FULL.index(ch)] = p
        out[t, 0] = max(0.0, 1.0 - sum(probs.values()))
    return out


def spelled(text: str, *, first: dict[str, float] | None = None) -> list[dict[str, float]]:
    """Each character in a frame of its own at 0.9, a blank frame between."""
    steps: list[dict[str, float]] = []
    for i, ch in enumerate(text):
        steps.append(first if i == 0 and first else {ch: 0.9})
        steps.append({})
    return steps


@pytest.fixture(scope="module")
def decoder() -> PlateDecoder:
    return PlateDecoder(FULL)


def test_the_format() -> None:
    assert fits("沪A12345") and fits("粤BD12345") and fits("粤B12345D") and fits("京A1234警") and fits("粤Z1234港")
    assert not fits("A12345") and not fits("沪A1234") and not fits("沪I12345") and not fits("沪AO2345")
    assert not fits("沪A12警45") and not fits("沪AX12345")  # a suffix only last; 8 characters only new-energy
    assert fits("京A", TOP_ROW) and fits("12345", BOTTOM_ROW) and not fits("12345", TOP_ROW)


def test_a_clear_plate_reads_as_it_is(decoder: PlateDecoder) -> None:
    reading = decoder.decode(frames(*spelled("沪A12345")))

    assert (reading.text, reading.complete) == ("沪A12345", True)
    assert reading.confidence > 0.85 and reading.weakest > 0.85


def test_a_character_that_is_not_on_plates_gives_way_to_the_likeliest_province(decoder: PlateDecoder) -> None:
    # The recogniser's 律 (0.8) over 津 (0.15): 律 is no province, so the province is 津.
    reading = decoder.decode(frames(*spelled("津B12345", first={"律": 0.8, "津": 0.15, "川": 0.01})))

    assert reading.text == "津B12345"
    assert reading.complete
    assert reading.weakest < 0.95  # the province was unsure; the second pass looks again at such readings


def test_letters_o_and_i_become_digits_where_the_format_allows_only_those(decoder: PlateDecoder) -> None:
    steps = spelled("沪A1O345")
    steps[6] = {"O": 0.7, "0": 0.25}  # the fourth character

    assert decoder.decode(frames(*steps)).text == "沪A10345"


def test_a_dropped_province_is_put_back_from_where_it_was_likeliest(decoder: PlateDecoder) -> None:
    # Greedy decoding drops the first character (blank 0.6); the format needs a province there.
    steps = spelled("鄂C12345", first={"鄂": 0.35, "湘": 0.05})

    assert decoder.decode(frames(*steps)).text == "鄂C12345"


def test_a_new_energy_plate_keeps_eight_characters_and_a_suffix_stays_last(decoder: PlateDecoder) -> None:
    assert decoder.decode(frames(*spelled("粤BD12345"))).text == "粤BD12345"
    assert decoder.decode(frames(*spelled("京A1234警"))).text == "京A1234警"


def test_a_character_the_format_fixes_is_written_when_forced_however_unlikely(decoder: PlateDecoder) -> None:
    # A small black plate's first six (粤Z and four): the recogniser gives its 粤 nothing (1e-6, under min_prob in
    # every frame) and reads 青 there.
    steps = spelled("粤Z1234")
    steps[0] = {"青": 0.6}
    head = (("粤", "Z", "0123456789", "0123456789", "0123456789", "0123456789"),)

    assert not decoder.decode(frames(*steps), head).complete
    forced = decoder.decode(frames(*steps), head, force=True)
    assert (forced.text, forced.complete) == ("粤Z1234", True)
    assert forced.weakest < 0.01  # and it says how unsure that character is
    # Where the format leaves many characters open, nothing is forced: the open format reads the 青.
    assert decoder.decode(frames(*spelled("青Z12345")), force=True).text == "青Z12345"


def test_text_that_cannot_be_a_plate_is_returned_incomplete_at_half_confidence(decoder: PlateDecoder) -> None:
    reading = decoder.decode(frames(*spelled("12345")))

    assert not reading.complete
    assert reading.confidence < 0.5


def test_the_decoder_refuses_a_recogniser_that_cannot_write_plates() -> None:
    with pytest.raises(ValueError, match="cannot write"):
        PlateDecoder(["", *"ABC"])


def test_single_row_patterns_are_seven_or_eight_long() -> None:
    assert {len(p) for p in SINGLE_ROW} == {7, 8}


def test_ctc_log_likelihood_sums_every_alignment() -> None:
    rng = np.random.default_rng(19)
    probs = rng.dirichlet(np.ones(3), size=4)  # 4 frames over blank, a, b

    def collapse(path: tuple[int, ...]) -> tuple[int, ...]:
        out: list[int] = []
        for i, c in enumerate(path):
            if c and (i == 0 or path[i - 1] != c):
                out.append(c)
        return tuple(out)
    for labels in ((1,), (1, 2), (1, 1), (2, 1, 2)):
        brute = sum(float(np.prod([probs[t, c] for t, c in enumerate(path)]))
                    for path in itertools.product(range(3), repeat=4) if collapse(path) == labels)
        (got,) = ctc_log_likelihoods(np.log(probs), np.array([labels], np.int64))
        assert got == pytest.approx(np.log(brute))
