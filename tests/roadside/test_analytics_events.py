"""Event rules against what `v2x sim score` found on the district's oblique cameras: track swaps where traffic passes in
front of a standing vehicle, detections missed on a frame, queues moving off, tracks given to another vehicle's box.

Tracks are fed to the analytics directly (fixed track ids, as the tracker hands them on), so that each test states
exactly which box went to which track on which frame. The scene is that of test_analytics.py (roadside_sim.scene).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from v2x.roadside.v1 import roadside_pb2 as pb

from roadside_sim.scene import NB_CENTRE_E, SB_CENTRE_E, Scene, SimVehicle, drive
from roadside_sim.truth import VehicleClass
from services.roadside.analytics import CameraAnalytics
from services.roadside.detector import Detection
from services.roadside.detector import VehicleClass as Detected
from services.roadside.model import Event, EventType
from tests.roadside.helpers import T0, run_tracks, spec_of

SCENE = Scene()
FPS = 5.0

# Which vehicle's box each track shows at time t (None: the track is not seen on that frame).
Script = Callable[[float], list[tuple[int, SimVehicle | None]]]


def _box(v: SimVehicle, t: float) -> Detection:
    (b,) = SCENE.detections([v], t)
    return Detection(Detected.CAR, 0.9, b.x1, b.y1, b.x2, b.y2, "car")


def run_script(script: Script, end_s: float, camera: pb.Camera | None = None) -> list[Event]:
    analytics = CameraAnalytics(spec_of(camera or SCENE.camera("sim", stop_threshold_s=20)))
    events: list[Event] = []
    for i in range(round(end_s * FPS) + 1):
        t = i / FPS
        tracked = [(track, _box(v, t)) for track, v in script(t) if v is not None]
        events += analytics.process(T0 + timedelta(seconds=t), i, tracked, SCENE.size).events
    return events


def of(events: list[Event], kind: EventType) -> list[Event]:
    return [e for e in events if e.type is kind]


def at_s(e: Event) -> float:
    return (e.observed_at - T0).total_seconds()


def standing(vehicle_id: int, north: float, until_s: float = 60.0, east: float = NB_CENTRE_E) -> SimVehicle:
    return SimVehicle(vehicle_id, VehicleClass.CAR, [(0.0, east, north), (until_s, east, north)])


def _one_way_camera() -> pb.Camera:
    """The scene's camera with both lanes northbound (SB's direction set to NB's)."""
    camera = SCENE.camera("sim", stop_threshold_s=20)
    camera.lanes[1].direction_vector.CopyFrom(camera.lanes[0].direction_vector)
    return camera


def test_a_stalled_car_whose_box_goes_to_the_passing_cars_track_keeps_its_standing_time() -> None:
    # The tracker swaps the two: from 10 s the stalled car shows on the passing car's track (9), and its own track (7)
    # follows the passing car. The stalled car stood from 0 s: its 903 is due at 20 s, not 20 s after the swap.
    stalled = standing(1, 40.0)
    passing = SimVehicle(2, VehicleClass.CAR, [(8.0, NB_CENTRE_E, 20.0), (10.0, NB_CENTRE_E, 40.0),
                                               (11.0, NB_CENTRE_E, 50.0)])

    def script(t: float) -> list[tuple[int, SimVehicle | None]]:
        if t < 10.0:
            return [(7, stalled), (9, passing if t >= 8.0 else None)]
        return [(9, stalled), (7, passing if t <= 11.0 else None)]

    events = run_script(script, 30)

    (stopped,) = of(events, EventType.STOPPED_VEHICLE)
    assert at_s(stopped) == pytest.approx(20.0, abs=0.5)


def test_a_stalled_car_shown_by_a_new_track_before_its_old_track_moves_off_keeps_its_standing_time() -> None:
    # The new track (8) comes first in the frame's order, on the frame its old track (7) is confirmed gone with the
    # passing car: the stalled car still stood from 0 s.
    stalled = standing(1, 40.0)
    passing = SimVehicle(2, VehicleClass.CAR, [(10.0, NB_CENTRE_E, 47.0), (10.6, NB_CENTRE_E, 53.0)])

    def script(t: float) -> list[tuple[int, SimVehicle | None]]:
        if t < 10.0:
            return [(7, stalled)]
        return [(8, stalled if t >= 10.2 else None), (7, passing if t <= 10.6 else None)]

    events = run_script(script, 30)

    (stopped,) = of(events, EventType.STOPPED_VEHICLE)
    assert at_s(stopped) == pytest.approx(20.0, abs=0.5)


def test_a_stalled_cars_box_shifted_on_two_frames_by_a_car_passing_in_front_does_not_restart_its_stop() -> None:
    # On two frames the stalled car's box is cut by a car in front: its bottom centre lands 3 m further on.
    stalled = standing(1, 40.0)
    shifted = standing(1, 43.0)

    def script(t: float) -> list[tuple[int, SimVehicle | None]]:
        return [(7, shifted if 10.0 <= t <= 10.2 else stalled)]

    events = run_script(script, 30)

    (stopped,) = of(events, EventType.STOPPED_VEHICLE)
    assert at_s(stopped) == pytest.approx(20.0, abs=0.5)


def test_a_stalled_car_whose_box_lands_off_on_two_frames_after_it_crept_to_a_stop_keeps_its_standing_time() -> None:
    # It crept the last 1.8 m of its stop (its track stays anchored where it slowed down); a car passing in front cuts
    # its box on two frames, the second landing 1.5 m beyond where it stands, which re-anchors its track there.
    slowing, stalled = standing(1, 38.2), standing(1, 40.0)
    cut, off = standing(1, 43.0), standing(1, 41.5)

    def script(t: float) -> list[tuple[int, SimVehicle | None]]:
        return [(7, slowing if t < 1.0 else cut if t == 10.0 else off if t == 10.2 else stalled)]

    events = run_script(script, 30)

    (stopped,) = of(events, EventType.STOPPED_VEHICLE)
    assert at_s(stopped) == pytest.approx(20.0, abs=0.5)


def test_a_crashed_car_whose_partner_is_missed_as_its_stop_reaches_the_threshold_raises_1001_not_903() -> None:
    # Nose to tail from 0 s; the rear car (8) is not detected from 19.8 s to 20.2 s (a car passing in front).
    front, rear = standing(1, 40.0), standing(2, 35.2)

    def script(t: float) -> list[tuple[int, SimVehicle | None]]:
        return [(7, front), (8, None if 19.8 <= t <= 20.2 else rear)]

    events = run_script(script, 30)

    assert not of(events, EventType.STOPPED_VEHICLE)
    (crash,) = of(events, EventType.ACCIDENT)
    assert at_s(crash) == pytest.approx(20.0, abs=0.5)


def test_a_crash_raised_while_one_of_its_cars_is_hidden_is_raised_once() -> None:
    front, rear = standing(1, 40.0), standing(2, 35.2)

    def script(t: float) -> list[tuple[int, SimVehicle | None]]:
        # Hidden from 19.8 s to 20.6 s, then seen again as a new track.
        return [(7, front), (8 if t < 19.8 else 9, None if 19.8 <= t <= 20.6 else rear)]

    events = run_script(script, 40)

    assert len(of(events, EventType.ACCIDENT)) == 1
    assert not of(events, EventType.STOPPED_VEHICLE)


def test_a_crash_beside_the_next_lanes_red_light_queue_is_raised_at_the_threshold() -> None:
    # Two cars crashed nose to tail stand from 0 s; on the lane beside (same direction) two cars wait at a red light
    # until 45 s and drive off. Cars waiting in a queue keep a gap; two that touch are a crash, whatever the next
    # lane does: 1001 at the threshold (20 s), not 5 s after the red light's queue drove off.
    front, rear = standing(1, 40.0, 200.0), standing(2, 35.2, 200.0)
    beside = [SimVehicle(10 + i, VehicleClass.CAR, [(0.0, SB_CENTRE_E, n), (45.0, SB_CENTRE_E, n),
                                                    (50.0, SB_CENTRE_E, 70.0)]) for i, n in enumerate((44.0, 36.5))]

    def script(t: float) -> list[tuple[int, SimVehicle | None]]:
        return [(7, front), (8, rear), *((v.id, v if t <= 50.0 else None) for v in beside)]

    events = run_script(script, 60, camera=_one_way_camera())

    (crash,) = of(events, EventType.ACCIDENT)
    assert at_s(crash) == pytest.approx(20.0, abs=0.5)
    assert not of(events, EventType.STOPPED_VEHICLE)


def test_two_cars_touching_behind_a_standing_car_on_their_lane_are_no_crash() -> None:
    # The same two cars with a third standing 8 m ahead of them on their lane: the tail of a queue whose gaps the
    # camera misjudged, not a crash.
    front, rear, ahead = standing(1, 40.0, 200.0), standing(2, 35.2, 200.0), standing(3, 48.0, 200.0)

    events = run_script(lambda t: [(7, front), (8, rear), (9, ahead)], 40, camera=_one_way_camera())

    assert not of(events, EventType.ACCIDENT)


def test_two_cars_standing_side_by_side_on_a_lane_are_no_crash() -> None:
    # Two cars of a queue standing on neighbouring lanes, both put on one lane by their boxes: 3 m apart along the
    # lane and 2.4 m across it, near enough to touch, but side by side rather than nose to tail.
    left = standing(1, 40.0, 200.0, east=NB_CENTRE_E - 1.2)
    right = standing(2, 37.0, 200.0, east=NB_CENTRE_E + 1.2)

    events = run_script(lambda t: [(7, left), (8, right)], 40)

    assert not of(events, EventType.ACCIDENT)


def test_the_first_car_of_a_queue_moving_off_after_the_car_ahead_raises_no_903() -> None:
    # A red light: car 1 at the head of the lane beside car 3, car 2 behind car 1; all stand 40 s. At 40 s cars 1 and 3
    # drive off; car 2 follows 2 s later (it stood 40 s, and for 2 s nothing stood ahead of it or beside it).
    head = standing(1, 40.0, 40.0).then(2.0, NB_CENTRE_E, 60.0)
    beside = standing(3, 40.0, 40.0, east=SB_CENTRE_E).then(2.0, SB_CENTRE_E, 60.0)
    follower = standing(2, 33.0, 42.0).then(2.7, NB_CENTRE_E, 60.0)

    def script(t: float) -> list[tuple[int, SimVehicle | None]]:
        return [(7, head if t <= 42.0 else None), (8, follower if t <= 44.7 else None),
                (9, beside if t <= 42.0 else None)]

    events = run_script(script, 50, camera=_one_way_camera())

    assert not of(events, EventType.STOPPED_VEHICLE)


def test_a_car_that_waited_behind_another_and_stalls_in_its_place_raises_903_after_its_own_threshold() -> None:
    # A red light: car 1 at 40 m beside car 3 stand 40 s, then drive off. Car 2, tracked standing 7 m behind car 1 all
    # along, moves up into car 1's place over 1.5 s (there within 1.5 s of car 1's last standing sighting) and stalls
    # there from 42.5 s: its 903 is due at 62.5 s, not on car 1's standing time.
    ahead = standing(1, 40.0, 40.0).then(1.0, NB_CENTRE_E, 41.0).then(3.0, NB_CENTRE_E, 66.0)
    beside = standing(3, 40.0, 40.0, east=SB_CENTRE_E).then(1.0, SB_CENTRE_E, 41.0).then(3.0, SB_CENTRE_E, 66.0)
    follower = SimVehicle(2, VehicleClass.CAR, [(0.0, NB_CENTRE_E, 33.0), (41.0, NB_CENTRE_E, 33.0),
                                                (42.5, NB_CENTRE_E, 40.0), (120.0, NB_CENTRE_E, 40.0)])

    def script(t: float) -> list[tuple[int, SimVehicle | None]]:
        return [(7, ahead if t <= 44.0 else None), (9, beside if t <= 44.0 else None), (8, follower)]

    events = run_script(script, 70, camera=_one_way_camera())

    (stopped,) = of(events, EventType.STOPPED_VEHICLE)
    assert at_s(stopped) >= 62.0


def test_a_stalled_car_waited_for_by_nothing_still_raises_its_903_at_the_threshold() -> None:
    events = run_script(lambda t: [(7, standing(1, 40.0))], 30)

    (stopped,) = of(events, EventType.STOPPED_VEHICLE)
    assert at_s(stopped) == pytest.approx(20.0, abs=0.5)


def test_a_track_given_to_a_box_further_back_on_its_lane_raises_no_904() -> None:
    # A car drives north through the view and is lost at 60 m; a frame later its track is given to a stalled car's box
    # at 40 m (as the tracker's re-linking does): one jump of 20 m against the lane, then standing.
    through = drive(2, 0.0, 20.0, 60.0, 36)
    stalled = standing(1, 40.0)

    def script(t: float) -> list[tuple[int, SimVehicle | None]]:
        return [(7, through if t <= 4.0 else stalled if t >= 4.6 else None)]

    events = run_script(script, 12)

    assert not of(events, EventType.WRONG_WAY)


def test_a_car_driving_against_its_lane_for_a_second_at_three_frames_a_second_raises_904() -> None:
    ghost = SimVehicle(1, VehicleClass.CAR, [(0.0, NB_CENTRE_E, 55.0), (2.0, NB_CENTRE_E, 39.0)])

    events = run_script(lambda t: [(7, ghost if t <= 2.0 else None)], 3)

    (wrong,) = of(events, EventType.WRONG_WAY)
    assert at_s(wrong) <= 1.2


def test_a_jam_whose_queue_stays_while_its_lane_reads_light_is_one_707() -> None:
    # Slow dense traffic raises a 707; then two cars of its queue stand on (too few seen vehicles to judge the lane by
    # speed: it reads free flow) until slow traffic comes again beyond them. The queue never went: one jam, one 707.
    crawl = [drive(i, 4.0 * i, 12, 66, 8) for i in range(20)]
    queue = [SimVehicle(100 + i, VehicleClass.CAR, [(100.0, NB_CENTRE_E, n), (330.0, NB_CENTRE_E, n)])
             for i, n in enumerate((20.0, 27.0))]
    again = [drive(200 + i, 230.0 + 4.0 * i, 40, 66, 8) for i in range(20)]

    run = run_tracks(SCENE, [*crawl, *queue, *again], 320, fps=3.0)

    assert len(run.of(EventType.TRAFFIC_JAM)) == 1


def test_a_crash_on_a_lane_whose_traffic_slows_past_it_is_no_jam() -> None:
    # Two cars crashed nose to tail; the lane's other traffic passes them at 22 km/h, one car every 10 s: the lane's
    # mean speed over vehicles is "moderate", and the crash's cars stand on it. They are the crash (1001), not a queue.
    front, rear = standing(1, 40.0, 200.0), standing(2, 35.2, 200.0)
    passing = [drive(100 + i, 10.0 * i, 12, 66, 22) for i in range(20)]

    def script(t: float) -> list[tuple[int, SimVehicle | None]]:
        return [(7, front), (8, rear), *((v.id, v) for v in passing if v.start <= t <= v.end)]

    events = run_script(script, 200)

    assert len(of(events, EventType.ACCIDENT)) == 1
    assert not of(events, EventType.TRAFFIC_JAM)


def test_a_car_standing_at_the_downstream_end_of_its_lane_with_a_queue_behind_it_waits_no_903() -> None:
    # The lane's drawn stretch ends at 70 m; the queue goes on beyond it (a red light, cars the camera does not see).
    head, second = standing(1, 65.0), standing(2, 58.0)

    events = run_script(lambda t: [(7, head), (8, second)], 40)

    assert not of(events, EventType.STOPPED_VEHICLE)
    assert not of(events, EventType.ACCIDENT)


def test_a_car_first_seen_moving_up_into_the_place_of_the_car_ahead_does_not_take_its_standing_time() -> None:
    # A red light: car 1 at 40 m beside car 3 stand 40 s, then drive off (starting slowly); car 2, unseen behind car 1
    # until then, moves up into its place at 43 s and stands there 10 s: it has stood 10 s, not 53.
    ahead = standing(1, 40.0, 40.0).then(1.0, NB_CENTRE_E, 41.0).then(3.0, NB_CENTRE_E, 66.0)
    beside = standing(3, 40.0, 40.0, east=SB_CENTRE_E).then(1.0, SB_CENTRE_E, 41.0).then(3.0, SB_CENTRE_E, 66.0)
    follower = SimVehicle(2, VehicleClass.CAR, [(42.0, NB_CENTRE_E, 33.0), (43.0, NB_CENTRE_E, 40.0),
                                                (53.0, NB_CENTRE_E, 40.0), (56.0, NB_CENTRE_E, 66.0)])

    def script(t: float) -> list[tuple[int, SimVehicle | None]]:
        return [(7, ahead if t <= 44.0 else None), (9, beside if t <= 44.0 else None),
                (8, follower if 43.0 <= t <= 56.0 else None)]

    events = run_script(script, 57, camera=_one_way_camera())

    assert not of(events, EventType.STOPPED_VEHICLE)


def test_a_jam_counts_its_minute_from_when_its_queue_formed_not_from_when_its_lane_reads_moderate() -> None:
    # A minute of free flow at 45 km/h, then the lane's traffic stops: six cars queue nose to tail from 70 s on and
    # stand. The lane's 60-s mean speed still holds the free-flowing cars and reads moderate only about a minute later;
    # the queue has stood its minute by ~130 s, and that is the jam.
    flow = [drive(i, 3.0 * i, 12, 66, 45) for i in range(22)]
    queue = [drive(100 + i, 62.0 + 2.0 * i, 12, 60 - 7 * i, 45).hold(300) for i in range(6)]

    run = run_tracks(SCENE, [*flow, *queue], 200, fps=3.0)

    (jam,) = run.of(EventType.TRAFFIC_JAM)
    assert (jam.observed_at - T0).total_seconds() <= 140.0


def _queue_behind(leader_halt_n: float, n: int, gap_m: float = 4.8, halt_s: float = 6.0, until_s: float = 200.0
                  ) -> list[SimVehicle]:
    """A leader creeping to a halt at `leader_halt_n` by `halt_s`, and `n` cars creeping to a halt behind it, nose to
    tail as the oblique camera misjudges a queue's gaps (`gap_m`), standing until `until_s`."""
    out = []
    for i in range(n + 1):
        halt = leader_halt_n - gap_m * i
        out.append(SimVehicle(1 + i, VehicleClass.CAR, [(0.0, NB_CENTRE_E, halt - 6.0), (halt_s, NB_CENTRE_E, halt),
                                                        (until_s, NB_CENTRE_E, halt)]))
    return out


def test_cars_touching_in_a_queue_whose_leader_the_detector_loses_as_it_halts_are_no_crash() -> None:
    # A jam's queue on NB beside one on the other lane: the leader creeps to a halt at 52 m and its box is not found
    # from 5 s on (in a dense queue the detector finds each car on some frames only; its track is given to a car
    # beside); the three cars behind it halt nose to tail. Found by `v2x sim score`: such a queue's cars, their leader
    # lost, raised 1001 when they had stood the threshold. They waited in traffic when they halted.
    leader, *queue = _queue_behind(52.0, 3)
    beside = [standing(20 + i, n, 200.0, east=SB_CENTRE_E) for i, n in enumerate((52.0, 45.0, 38.0))]

    def script(t: float) -> list[tuple[int, SimVehicle | None]]:
        return [(7, leader if t < 5.0 else None), *((8 + i, v) for i, v in enumerate(queue)),
                *((v.id, v) for v in beside)]

    events = run_script(script, 60, camera=_one_way_camera())

    assert not of(events, EventType.ACCIDENT)


def test_two_cars_touching_that_halted_behind_a_queue_which_then_drives_off_are_a_crash() -> None:
    # The same two cars halt behind a car standing at 52 m, which drives off at 30 s (seen going): then they stand
    # with nothing ahead of them; the crash is raised 5 s on, as for any vehicle that waited in traffic.
    ahead = standing(3, 52.0, 30.0).then(2.0, NB_CENTRE_E, 66.0)
    front, rear = standing(1, 45.0, 200.0), standing(2, 40.2, 200.0)

    def script(t: float) -> list[tuple[int, SimVehicle | None]]:
        return [(7, front), (8, rear), (9, ahead if t <= 32.0 else None)]

    events = run_script(script, 60)

    (crash,) = of(events, EventType.ACCIDENT)
    assert 34.5 <= at_s(crash) <= 37.0


def test_a_parked_car_whose_box_a_car_pulling_out_beside_it_stretches_onto_the_lane_raises_no_903() -> None:
    # A car parked in spot S1 (east kerb) for 30 s; then a car pulling out of the spot beside it merges with it in the
    # detector's boxes for 3 s, and the merged box's foot lies on lane NB, 1.75 m from where the parked car stood
    # (within the standing radius: the same vehicle, standing). Found by `v2x sim score` (replayed): the parked car's
    # track raised 903 at once, with its 30 s in the spot as its standing time on the lane.
    parked, merged = standing(1, 17.0, 200.0, east=4.75), standing(1, 17.0, 200.0, east=3.0)

    events = run_script(lambda t: [(7, merged if 30.0 <= t <= 33.0 else parked)], 40)

    assert not of(events, EventType.STOPPED_VEHICLE)


def test_a_crashed_car_shown_by_tracks_that_each_stand_less_than_2_s_keeps_its_standing_time() -> None:
    # Two cars crashed nose to tail from 0 s, a car standing on the lane beside. At 15 s the front car's track (7) is
    # given to the car beside and stays with it; a track (9) shows the front car from 15.2 s to 16.8 s, then nothing
    # for 0.6 s (missed), then a track (10) that showed the car beside for a frame shows it from 17.6 s on. No track
    # stood 2 s there before the next took over, but the car was seen there all along. Found by `v2x sim score`: the
    # crash's 1001 came 17 s late, its front car's standing time lost so.
    front, rear = standing(1, 40.0, 200.0), standing(2, 35.2, 200.0)
    beside = standing(5, 40.0, 200.0, east=SB_CENTRE_E)

    def script(t: float) -> list[tuple[int, SimVehicle | None]]:
        if t < 15.0:
            return [(7, front), (8, rear), (11, beside)]
        if t < 17.0:
            return [(7, beside), (9, front), (8, rear)]
        if t < 17.4:
            return [(7, beside), (8, rear)]
        if t < 17.6:
            return [(10, beside), (8, rear)]
        return [(7, beside), (10, front), (8, rear)]

    events = run_script(script, 45)

    (crash,) = of(events, EventType.ACCIDENT)
    assert at_s(crash) <= 21.0


def test_a_track_given_to_the_next_car_back_of_a_platoon_once_a_second_raises_no_904() -> None:
    # A platoon drives north at 8 m/s, cars 16 m apart. A track unmatched for a second is given the box of the next car
    # back (the tracker's gate grows with the time since a track was seen), three times: 8 m back each second, a
    # "trajectory" against the lane. Found by `v2x sim score` (3 of 4 false 904 in two runs: steps of 1.0 to 1.3 s,
    # each a different car; a wrong-way car's steps were 0.33 s).
    platoon = [drive(1 + k, 0.0, 60.0 - 16.0 * k - 20.0, 66.0, 28.8) for k in range(4)]

    def script(t: float) -> list[tuple[int, SimVehicle | None]]:
        k = round(t)
        return [(7, platoon[k] if abs(t - k) < 0.01 and k < 4 else None)]

    events = run_script(script, 3.2)

    assert not of(events, EventType.WRONG_WAY)


def test_a_car_standing_off_the_lanes_whose_next_sighting_is_on_the_lane_is_judged_from_then_for_903() -> None:
    # A car stands just off lane NB (its box's foot 0.4 m east of the lane's kerb side, outside the parking spots) for
    # 30 s, is lost for 2 s, and shows again as a new track with its foot on the lane, 1.2 m from where it stood (the
    # same vehicle). Found by `v2x sim score` (a car at the picture's side whose cut-off box put it off the lanes, and
    # which showed on the lane as its queue drove off, raised 903 at once with 43 s standing): its standing on the
    # lane counts from when it was on it. No 903 before it has stood the threshold there.
    off, on = standing(1, 40.0, 200.0, east=3.9), standing(1, 40.0, 200.0, east=2.7)

    def script(t: float) -> list[tuple[int, SimVehicle | None]]:
        return [(7, off)] if t < 30.0 else [] if t < 32.0 else [(8, on)]

    events = run_script(script, 45)

    assert not of(events, EventType.STOPPED_VEHICLE) or at_s(of(events, EventType.STOPPED_VEHICLE)[0]) >= 51.0


def test_a_queued_car_whose_track_goes_to_the_car_ahead_driving_off_keeps_its_wait_on_its_new_track() -> None:
    # A red light's queue: car 1 at the downstream end of lane NB (70 m), car 2 behind it; car 2 stood at 58 m and crept
    # 1.9 m on (within the standing radius: still standing, its stay seen there last). At 26 s car 1 drives off; car 2's
    # track (8) is given car 1's box as it goes, car 2 is missed for 2 s and shows again as a new track (9) whose box's
    # foot lies back at 57.8 m (a box cut by the picture's side): where it came to stand, 2.1 m from where its stay was
    # seen. It follows at 29.4 s; it waited in traffic 2.6 s before: no 903. Found by `v2x sim score` (replayed): a
    # queued car so shown as its queue drove off raised 903 at once, the place it left keeping its standing time but
    # not its wait.
    head = standing(1, 66.0, 26.0).then(1.5, NB_CENTRE_E, 69.0)
    follower = standing(2, 58.0, 20.0).then(2.0, NB_CENTRE_E, 59.9).hold(6.0)
    shown_back = standing(2, 57.8, 40.0)

    def script(t: float) -> list[tuple[int, SimVehicle | None]]:
        if t < 26.1:
            return [(7, head), (8, follower)]
        if t < 26.5:
            return [(8, head)]
        return [(9, shown_back)] if 28.5 < t < 29.4 else []

    events = run_script(script, 40)

    assert not of(events, EventType.STOPPED_VEHICLE)


def test_a_parked_car_whose_track_is_given_a_passing_cars_box_after_its_box_stretched_onto_the_lane_raises_no_903(
) -> None:
    # As above, and on the next frame the parked car's track is given the box of the car pulling out, 7 m on (set aside:
    # a standing vehicle's one box elsewhere). Found by `v2x sim score` (replayed): 903 raised on that frame.
    parked, merged = standing(1, 17.0, 200.0, east=4.75), standing(1, 17.0, 200.0, east=3.0)
    pulling_out = standing(2, 24.0, 200.0)

    def script(t: float) -> list[tuple[int, SimVehicle | None]]:
        return [(7, merged if 30.0 <= t <= 30.5 else pulling_out if 30.5 < t <= 30.7 else parked)]

    events = run_script(script, 40)

    assert not of(events, EventType.STOPPED_VEHICLE)


def test_cars_touching_in_a_jam_whose_first_stood_off_the_lanes_until_it_showed_on_its_lane_are_no_crash() -> None:
    # A jam on both lanes of one direction. The first car of NB's queue stands with its box's foot just off the lane
    # (a box cut by the picture's side) from 0 s; at 30 s its box shows on the lane, 1.2 m on (the same car, its
    # standing time kept). The car behind it on NB is nose to tail with it. Its halt was never seen on a lane; it stands
    # beside a standing queue: it waits in traffic, and the two are no crash. Found by `v2x sim score` (replayed).
    first_off, first_on = standing(1, 40.0, 200.0, east=3.9), standing(1, 40.0, 200.0, east=2.7)
    behind = standing(2, 35.2, 200.0)
    beside = [standing(20 + i, n, 200.0, east=SB_CENTRE_E) for i, n in enumerate((46.0, 39.0, 32.0))]

    def script(t: float) -> list[tuple[int, SimVehicle | None]]:
        return [(7, first_off if t < 30.0 else first_on), (8, behind if t >= 12.0 else None),
                *((v.id, v) for v in beside)]

    events = run_script(script, 60, camera=_one_way_camera())

    assert not of(events, EventType.ACCIDENT)


def test_one_stalled_car_shown_by_two_tracks_is_a_stopped_vehicle_not_a_crash() -> None:
    # One car stands; a second track shows it too, its ground 2.4 m back (a box over its rear half). Found by `v2x sim
    # score`, replayed: in a jam's queue such a pair, the queue's car ahead missed, raised 1001. Two cars in contact
    # stand a car's length apart (the test above: 4.8 m).
    car, its_rear = standing(1, 40.0, 200.0), standing(2, 37.6, 200.0)

    events = run_script(lambda t: [(7, car), (8, its_rear)], 40, camera=_one_way_camera())

    assert not of(events, EventType.ACCIDENT)
    assert of(events, EventType.STOPPED_VEHICLE)


def test_two_readings_over_the_limit_with_a_jump_between_them_raise_no_overspeed() -> None:
    # A car at 45 km/h (limit 50, tolerance 10). Its track was seen once on another car's box 30 m up the lane, so its
    # first speed read 312 km/h; the jump cleared the estimate (no speed), and a box a metre ahead of the car read
    # 72 km/h for one step. Two readings over the limit, but not on consecutive frames of one motion: no 901 (a replayed
    # scored run's false 901 went so).
    analytics = CameraAnalytics(spec_of(SCENE.camera("sim")))
    car = drive(1, 0, 12, 66, 45)
    decoy = standing(2, 45.0)
    shown = [(decoy, 0.0), (car, 0.33), (car, 0.67), (car, 1.2), (car, 1.33), (car, 1.67), (car, 2.0), (car, 2.33)]
    events: list[Event] = []
    for k, (v, at) in enumerate(shown):
        events += analytics.process(T0 + timedelta(seconds=k / 3), k, [(7, _box(v, at))], SCENE.size).events
    assert not of(events, EventType.OVERSPEED)
