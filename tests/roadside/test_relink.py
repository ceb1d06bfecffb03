"""The tracker's re-linking by motion at low frame rates (services/roadside/tracker.py)."""

from __future__ import annotations

from services.roadside.detector import Detection, VehicleClass
from services.roadside.tracker import Tracker

S = 1_000_000_000


def car(x1: float, y1: float, x2: float, y2: float) -> Detection:
    return Detection(VehicleClass.CAR, 0.9, x1, y1, x2, y2, "car")


def test_a_car_half_a_second_on_keeps_its_id_and_a_car_entering_nearer_its_old_box_gets_a_new_one() -> None:
    # Found by `v2x sim score`: a car driving right at ~3 diagonals a second, the next frame half a second later;
    # another car enters from the right, listed first. Taken in detection order, the newcomer took the first car's id
    # (and its motion became a wrong-way event).
    tracker = Tracker()
    (first, _), = tracker.update([car(100, 260, 286, 377)], 0)
    (again, _), = tracker.update([car(180, 280, 366, 397)], S // 4)
    assert again == first
    later = tracker.update([car(480, 250, 590, 330), car(400, 330, 610, 460)], 3 * S // 4)
    ids = {round(d.x1): tid for tid, d in later}
    assert ids[400] == first
    assert ids[480] != first


def test_a_fast_car_at_one_and_a_half_frames_a_second_keeps_its_id() -> None:
    tracker = Tracker()
    boxes = [(60, 300, 240, 420), (200, 270, 350, 370), (320, 245, 440, 330), (420, 225, 520, 300)]
    ids = {tid for k, b in enumerate(boxes) for tid, _ in tracker.update([car(*b)], k * 2 * S // 3)}
    assert len(ids) == 1
