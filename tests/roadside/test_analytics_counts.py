"""Lane counts per minute (services/roadside/analytics.py) as the detector sees traffic at 3 frames a second: cases
found by replaying `v2x sim score` runs (load/replay_analytics.py)."""

from __future__ import annotations

from datetime import timedelta

from v2x.roadside.v1 import roadside_pb2 as pb

from roadside_sim.scene import FAR_N, LANE_WIDTH_M, NB_CENTRE_E, NEAR_N, SB_CENTRE_E, Scene, SimVehicle, drive
from roadside_sim.truth import VehicleClass as SimClass
from services.roadside.analytics import CameraAnalytics
from services.roadside.detector import Detection, VehicleClass
from services.roadside.model import CameraSpec, Lane
from tests.roadside.helpers import T0, run_tracks, spec_of

SCENE = Scene()


def test_a_car_the_detector_finds_on_two_frames_is_counted_once() -> None:
    # A car at 50 km/h is in a zoomed camera's view for 6..8 frames at 3 frames/s, and the detector finds it on half
    # of them: seen on 2 frames, on its lane, it counts (needing 3 lost a third of the cars found on 2).
    analytics = CameraAnalytics(spec_of(SCENE.camera("sim")))
    car = drive(1, 0, 12, 66, 50)
    for k, t in enumerate((1.0, 1.67)):
        (b,) = SCENE.detections([car], t)
        d = Detection(VehicleClass.CAR, 0.9, b.x1, b.y1, b.x2, b.y2, "car")
        analytics.process(T0 + timedelta(seconds=t), k, [(7, d)], SCENE.size)
    counts = {lane.lane_id: lane.vehicles for m in analytics.minutes() for lane in m.lanes}
    assert counts["NB"] == 1 and counts["SB"] == 0


def test_a_braking_car_reads_its_new_speed_a_second_and_a_half_after() -> None:
    # 50 km/h, then 15 km/h from 2 s on (braking for the stop line); at 3 frames/s the speed at 3.67 s is the new one.
    # (Over a 2 s window it still read 18.8 km/h; over 1.2 s, 15.0.)
    car = drive(1, 0, 12, 12 + 50 / 3.6 * 2, 50).then(6, NB_CENTRE_E, 12 + 50 / 3.6 * 2 + 15 / 3.6 * 6)
    run = run_tracks(SCENE, [car], 11 / 3, fps=3)
    (speeds,) = run.speeds.values()
    assert abs(speeds[-1] * 3.6 - 15) < 1


def test_a_queued_car_the_detector_misses_on_a_frame_still_holds_the_queue_together() -> None:
    # Three cars standing 7 m apart; the detector misses the middle one on a frame (a queue's cars score 0.30..0.39 and
    # come and go). The queue is still the three of them, not the head car alone (a 14 m gap broke the chain).
    analytics = CameraAnalytics(spec_of(SCENE.camera("sim")))
    cars = [SimVehicle(k, SimClass.CAR, [(0.0, NB_CENTRE_E, north), (60.0, NB_CENTRE_E, north)])
            for k, north in enumerate((40.0, 33.0, 26.0), start=1)]
    queues = []
    for k in range(14):
        t = k / 3
        shown = [c for c in cars if not (k == 13 and c.id == 2)]
        tracked = [(c.id, Detection(VehicleClass.CAR, 0.9, b.x1, b.y1, b.x2, b.y2, "car"))
                   for c in shown for b in SCENE.detections([c], t)]
        result = analytics.process(T0 + timedelta(seconds=t), k, tracked, SCENE.size)
        queues.append({lane.lane_id: lane.queue_length_m for lane in result.lanes}["NB"])
    assert queues[-2] > 15
    assert abs(queues[-1] - queues[-2]) < 1


def test_a_car_counts_in_the_minute_it_came_onto_the_lane() -> None:
    # First seen on its lane 0.3 s before the minute's end, counted on its second frame, after it: it belongs to the
    # minute it came in, as a count of vehicles entering the lane per minute has it.
    analytics = CameraAnalytics(spec_of(SCENE.camera("sim")))
    car = drive(1, 0, 12, 66, 50)
    start = T0 + timedelta(seconds=59.7)
    for k, t in enumerate((1.0, 1.33, 1.67)):
        (b,) = SCENE.detections([car], t)
        d = Detection(VehicleClass.CAR, 0.9, b.x1, b.y1, b.x2, b.y2, "car")
        analytics.process(start + timedelta(seconds=t - 1.0), k, [(7, d)], SCENE.size)
    counts = {(m.minute_start, lane.lane_id): lane.vehicles for m in analytics.minutes() for lane in m.lanes}
    assert counts[(T0, "NB")] == 1
    assert counts[(T0 + timedelta(minutes=1), "NB")] == 0


def test_a_car_the_detector_finds_only_deep_in_its_lane_counts_in_the_minute_it_came_onto_it() -> None:
    # 50 km/h; the lane starts 10 m north, which the car reaches at 0.7 s, but the detector first finds it at 2.2 s,
    # 20 m on, after the minute has turned at 2.0 s. It came onto the lane in the minute before (each count placed a
    # minute late is two lane-minutes wrong): its depth into the lane at its speed puts it back there.
    analytics = CameraAnalytics(spec_of(SCENE.camera("sim")))
    car = drive(1, 0, 0, 66, 50)
    start = T0 - timedelta(seconds=2.0)
    for k in range(9):  # 3 frames/s from 0.2 s: the first six find nothing
        t = 0.2 + k / 3
        tracked = []
        if t > 2.1:
            (b,) = SCENE.detections([car], t)
            tracked = [(7, Detection(VehicleClass.CAR, 0.9, b.x1, b.y1, b.x2, b.y2, "car"))]
        analytics.process(start + timedelta(seconds=t), k, tracked, SCENE.size)
    counts = {(m.minute_start, lane.lane_id): lane.vehicles for m in analytics.minutes() for lane in m.lanes}
    assert counts[(T0 - timedelta(minutes=1), "NB")] == 1
    assert counts.get((T0, "NB"), 0) == 0


def test_a_track_given_the_box_of_the_car_behind_counts_that_car() -> None:
    # A platoon at 50 km/h, cars 1.4 s apart: the tracker lost the first car for a frame and gave its track the next
    # car's box, where the first car had been a second before. The track had counted the lane for the first car; the
    # second was never counted. A box a vehicle length or more behind where the track's motion puts it is another car's.
    analytics = CameraAnalytics(spec_of(SCENE.camera("sim")))
    first, second = drive(1, 0, 0, 66, 50), drive(2, 1.4, 0, 66, 50)
    for k, t in enumerate((1.0, 1.33, 1.67, 2.0, 2.33, 2.67, 3.0)):
        tracked = []
        if t != 2.0:  # the track's car missed on that frame
            (b,) = SCENE.detections([first if t < 2 else second], t)
            tracked = [(7, Detection(VehicleClass.CAR, 0.9, b.x1, b.y1, b.x2, b.y2, "car"))]
        analytics.process(T0 + timedelta(seconds=t), k, tracked, SCENE.size)
    counts = {lane.lane_id: lane.vehicles for m in analytics.minutes() for lane in m.lanes}
    assert counts["NB"] == 2


def test_a_queued_car_found_again_on_a_new_track_between_two_standing_ones_is_not_counted_again() -> None:
    # A jam's queue, three cars standing 7 m apart. The detector loses the middle one for a while (a queue's cars score
    # 0.30..0.39 and come and go), then finds it again on a new track whose first boxes jitter by a metre, so it
    # reads as moving (13 km/h) and the count memory, which holds for standing vehicles, let it count again (a scored
    # run's jammed lane: 7 counts in a minute for 2 cars come onto it). A car between two standing cars of its own
    # lane, each a queue's gap away at most, is in their queue, not one come onto the lane.
    analytics = CameraAnalytics(spec_of(SCENE.camera("sim")))
    cars = [SimVehicle(k, SimClass.CAR, [(0.0, NB_CENTRE_E, north), (90.0, NB_CENTRE_E, north)])
            for k, north in enumerate((40.0, 33.0, 26.0), start=1)]
    for k in range(60):
        t = k / 3
        shown = [c for c in cars if k < 15 or c.id != 2]
        tracked = [(c.id, Detection(VehicleClass.CAR, 0.9, b.x1, b.y1, b.x2, b.y2, "car"))
                   for c in shown for b in SCENE.detections([c], t)]
        if k >= 57:  # the middle car again, on a new track, its box 6 px higher on each frame (about a metre)
            (b,) = SCENE.detections([cars[1]], t)
            dy = -6.0 * (k - 57)
            tracked.append((9, Detection(VehicleClass.CAR, 0.9, b.x1, b.y1 + dy, b.x2, b.y2 + dy, "car")))
        analytics.process(T0 + timedelta(seconds=t), k, tracked, SCENE.size)
    counts = {lane.lane_id: lane.vehicles + lane.wrong_way for m in analytics.minutes() for lane in m.lanes}
    assert counts["NB"] == 3


def test_a_track_that_jumps_reads_no_speed_from_the_jump() -> None:
    # Crawling at 5 km/h, then the track's box is 7 m on (another vehicle's, or a car put into a parking spot) and
    # stays there: the jump is not a motion. (Over the 1.2 s window it read 25, 31 and 22 km/h on the next frames.)
    analytics = CameraAnalytics(spec_of(SCENE.camera("sim")))
    crawl = drive(1, 0, 30, 40, 5)
    stood = SimVehicle(2, SimClass.CAR, [(0.0, NB_CENTRE_E, 40.0), (60.0, NB_CENTRE_E, 40.0)])
    speeds = []
    for k in range(12):
        t = k / 3
        (b,) = SCENE.detections([crawl if k < 8 else stood], t)
        d = Detection(VehicleClass.CAR, 0.9, b.x1, b.y1, b.x2, b.y2, "car")
        (o,) = analytics.process(T0 + timedelta(seconds=t), k, [(7, d)], SCENE.size).objects
        speeds.append(o.speed_mps)
    assert all(s is None or s * 3.6 < 8 for s in speeds)


def test_a_standing_car_lost_for_ten_seconds_is_not_counted_again_on_its_new_track() -> None:
    # The cars of a crash, hidden by passing traffic or missed by the detector for longer than a track lives, showed up
    # again on new tracks, and each was counted again (7 counts for 2 cars in a scored run).
    analytics = CameraAnalytics(spec_of(SCENE.camera("sim")))
    parked = SimVehicle(1, SimClass.CAR, [(0.0, NB_CENTRE_E, 40.0), (60.0, NB_CENTRE_E, 40.0)])
    for k in range(40):
        t = k / 3
        if 3 <= t < 11:
            tracked = []
        else:
            (b,) = SCENE.detections([parked], t)
            tracked = [(1 if t < 3 else 2, Detection(VehicleClass.CAR, 0.9, b.x1, b.y1, b.x2, b.y2, "car"))]
        analytics.process(T0 + timedelta(seconds=t), k, tracked, SCENE.size)
    assert sum(lane.vehicles for m in analytics.minutes() for lane in m.lanes if lane.lane_id == "NB") == 1


def test_a_car_stopping_where_a_counted_one_stood_and_drove_off_is_counted() -> None:
    # The first car was last seen moving off: the next one stopping there is another vehicle.
    analytics = CameraAnalytics(spec_of(SCENE.camera("sim")))
    first = SimVehicle(1, SimClass.CAR, [(0.0, NB_CENTRE_E, 40.0), (4.0, NB_CENTRE_E, 40.0), (6.0, NB_CENTRE_E, 60.0)])
    second = SimVehicle(2, SimClass.CAR, [(10.0, NB_CENTRE_E, 20.0), (14.0, NB_CENTRE_E, 40.0),
                                          (30.0, NB_CENTRE_E, 40.0)])
    for k in range(60):
        t = k / 3
        tracked = [(v.id, Detection(VehicleClass.CAR, 0.9, b.x1, b.y1, b.x2, b.y2, "car"))
                   for v in (first, second) if v.position(t) is not None for b in SCENE.detections([v], t)]
        analytics.process(T0 + timedelta(seconds=t), k, tracked, SCENE.size)
    assert sum(lane.vehicles for m in analytics.minutes() for lane in m.lanes if lane.lane_id == "NB") == 2


def _two_lanes_north() -> CameraAnalytics:
    """The scene's camera with a second northbound lane east of NB."""
    camera = SCENE.camera("sim")
    nb = camera.lanes[0]
    camera.lanes.add(id="NB2", polygon=pb.PixelPolygon(points=[
        pb.PixelPoint(x=x, y=y) for x, y in SCENE.ground_polygon(LANE_WIDTH_M, 2 * LANE_WIDTH_M, NEAR_N, FAR_N)]),
        direction_vector=nb.direction_vector, speed_limit_kmh=nb.speed_limit_kmh)
    return CameraAnalytics(spec_of(camera))


def _queues(analytics: CameraAnalytics, vehicles: list[SimVehicle], seconds: float) -> dict[str, float]:
    lanes: dict[str, float] = {}
    for k in range(int(seconds * 3)):
        t = k / 3
        tracked = [(v.id, Detection(VehicleClass.CAR, 0.9, b.x1, b.y1, b.x2, b.y2, "car"))
                   for v in vehicles for b in SCENE.detections([v], t)]
        result = analytics.process(T0 + timedelta(seconds=t), k, tracked, SCENE.size)
        lanes = {lane.lane_id: lane.queue_length_m for lane in result.lanes}
    return lanes


def test_a_queue_whose_front_cars_the_detector_misses_starts_at_the_lane_end() -> None:
    # Five cars stand on NB from its downstream end (70 m) back to 40 m, beside a standing queue on NB2; the detector
    # finds NB's two last cars only (a jam's cars overlap in the view, and it found about half of them). They stand
    # behind the traffic ahead of them: the queue is the lane's 30 m, not the 12 m between the two found.
    analytics = _two_lanes_north()

    def standing(k: int, east: float, north: float) -> SimVehicle:
        return SimVehicle(k, SimClass.CAR, [(0.0, east, north), (60.0, east, north)])
    found = [standing(1, NB_CENTRE_E, 47.0), standing(2, NB_CENTRE_E, 40.0),
             standing(3, NB_CENTRE_E + LANE_WIDTH_M, 66.0), standing(4, NB_CENTRE_E + LANE_WIDTH_M, 59.0)]
    queues = _queues(analytics, found, 5)
    assert 28 <= queues["NB"] <= 36


def test_a_car_standing_alone_beside_flowing_traffic_is_no_queue_to_the_lane_end() -> None:
    # A stalled car at 40 m while NB2's traffic drives by: one vehicle's length, as before.
    analytics = _two_lanes_north()
    stalled = SimVehicle(1, SimClass.CAR, [(0.0, NB_CENTRE_E, 40.0), (60.0, NB_CENTRE_E, 40.0)])
    passing = [drive(10 + k, 1.5 * k, 12, 68, 40, east=NB_CENTRE_E + LANE_WIDTH_M) for k in range(4)]
    queues = _queues(analytics, [stalled, *passing], 5)
    assert queues["NB"] == 5.0


def _lane_counts(analytics: CameraAnalytics, frames: list[list[tuple[int, SimVehicle]]]) -> dict[str, int]:
    """Feeds frame k (at k/3 s) the boxes of its (track id, vehicle) pairs, as a tracker gave them; the lane counts."""
    for k, pairs in enumerate(frames):
        t = k / 3
        tracked = [(track_id, Detection(VehicleClass.CAR, 0.9, b.x1, b.y1, b.x2, b.y2, "car"))
                   for track_id, v in pairs for b in SCENE.detections([v], t)]
        analytics.process(T0 + timedelta(seconds=t), k, tracked, SCENE.size)
    counts: dict[str, int] = {}
    for m in analytics.minutes():
        for lane in m.lanes:
            counts[lane.lane_id] = counts.get(lane.lane_id, 0) + lane.vehicles + lane.wrong_way
    return counts


def test_two_cars_side_by_side_whose_tracks_the_tracker_swaps_and_back_count_once_each() -> None:
    # Two cars driving side by side; the tracker swaps their boxes on the third frame and back on the sixth (cars whose
    # boxes shrink alike as they drive away). Each track was counted on both lanes: 4 counts for 2 cars.
    analytics = _two_lanes_north()
    a = drive(1, 0, 14, 66, 40)
    b = drive(2, 0, 14, 66, 40, east=NB_CENTRE_E + LANE_WIDTH_M)
    frames = [[(1, a), (2, b)] if k < 2 or k >= 5 else [(1, b), (2, a)] for k in range(8)]
    assert _lane_counts(analytics, frames) == {"NB": 1, "SB": 0, "NB2": 1}


def test_a_track_given_the_box_of_a_car_on_the_lane_beside_on_its_second_frame_is_not_counted_there() -> None:
    # A car of a platoon is seen once on NB, and on the next frame its track is given the box of the car following on
    # NB2 (a track seen once has no velocity: the nearest box), whose own track misses that frame; the first car shows
    # again on a new track. That second frame counted the track on NB2, and the following car's own track again.
    analytics = _two_lanes_north()
    first = drive(1, 0, 14, 66, 40)
    following = drive(2, 0, 10, 62, 40, east=NB_CENTRE_E + LANE_WIDTH_M)
    frames = [[(1, first), (2, following)], [(1, following), (3, first)]]
    frames += [[(2, following), (3, first)] for _ in range(4)]
    assert _lane_counts(analytics, frames) == {"NB": 1, "SB": 0, "NB2": 1}


def test_a_car_parked_off_the_lanes_that_shows_on_another_track_and_pulls_out_is_not_counted_again() -> None:
    # The car drives in on NB and parks at the kerb, off the lanes. A car passing on SB gets a new track, and on the
    # next frame the tracker swaps them: the parked car's track takes the passing car's box, the new track the parked
    # car. When the parked car pulls out onto NB on that track, it is the car counted on NB as it came, not a new one.
    analytics = CameraAnalytics(spec_of(SCENE.camera("sim")))
    kerb = NB_CENTRE_E + 3.0
    parked = SimVehicle(1, SimClass.CAR, [(0.0, NB_CENTRE_E, 25.0), (2.0, NB_CENTRE_E, 35.0), (3.0, kerb, 38.0),
                                          (23.0, kerb, 38.0), (24.0, NB_CENTRE_E, 41.0), (27.0, NB_CENTRE_E, 60.0)])
    passing = drive(2, 11.0, 14, 66, 40, east=-NB_CENTRE_E)
    frames: list[list[tuple[int, SimVehicle]]] = []
    for k in range(27 * 3):
        t = k / 3
        if t < 11.0:
            frames.append([(1, parked)])
        elif k == 33:
            frames.append([(1, parked), (2, passing)])
        else:
            frames.append([(2, parked)] + ([(1, passing)] if passing.position(t) is not None else []))
    counts = _lane_counts(analytics, frames)
    assert counts["NB"] == 1


def test_a_counted_car_changing_lanes_as_it_leaves_the_view_counts_on_its_new_lane() -> None:
    # SUMO's lane changes take one step; a car changing lanes near the picture's edge is on its new lane for one whole
    # box before it is cut off. Counted on its first lane already, it is a vehicle on the second from that frame.
    analytics = _two_lanes_north()
    car = drive(1, 0, 14, 66, 40)
    beside = drive(1, 0, 14, 66, 40, east=NB_CENTRE_E + LANE_WIDTH_M)
    frames = [[(1, car)] for _ in range(3)] + [[(1, beside)]]
    assert _lane_counts(analytics, frames) == {"NB": 1, "SB": 0, "NB2": 1}


def _counts_of_one_sighting(frame_times: tuple[float, ...], seen_at: float) -> dict[str, int]:
    analytics = CameraAnalytics(spec_of(SCENE.camera("sim")))
    car = drive(1, 0, 12, 66, 50)
    for k, t in enumerate(frame_times):
        tracked = []
        if t == seen_at:
            (b,) = SCENE.detections([car], t)
            tracked = [(7, Detection(VehicleClass.CAR, 0.9, b.x1, b.y1, b.x2, b.y2, "car"))]
        analytics.process(T0 + timedelta(seconds=t), k, tracked, SCENE.size)
    return {lane.lane_id: lane.vehicles for m in analytics.minutes() for lane in m.lanes}


def test_a_car_seen_whole_once_while_the_cameras_frames_come_a_second_apart_is_counted() -> None:
    # The service held frames back while busy (2.4 of 3 frames/s answered, gaps of 0.67..1 s): a car at 50 km/h then
    # shows whole on one frame only, cut by the picture's edge on the others, and waiting for a second frame lost it.
    counts = _counts_of_one_sighting((0.0, 1.0, 2.0), seen_at=1.0)
    assert counts["NB"] == 1 and counts["SB"] == 0


def test_a_car_seen_once_among_frames_a_third_of_a_second_apart_waits_for_a_second() -> None:
    counts = _counts_of_one_sighting((0.33, 0.67, 1.0, 1.33), seen_at=1.0)
    assert counts.get("NB", 0) == 0


def test_a_car_changing_lanes_just_after_the_minute_turns_counts_on_its_new_lane_in_the_new_minute() -> None:
    # Both lanes one way; the car drives 50 km/h on NB, changes to SB 40 m on, as the minute turns (3.0 s). Its NB count
    # is in the minute before, its SB count in the new one: it came onto SB where it changed lanes, not at SB's upstream
    # end (estimated back from its depth into SB, it went into the minute before).
    camera = SCENE.camera("sim")
    camera.lanes[1].direction_vector.CopyFrom(camera.lanes[0].direction_vector)
    analytics = CameraAnalytics(spec_of(camera))
    v = 50 / 3.6
    car = SimVehicle(1, SimClass.CAR, [(0.0, NB_CENTRE_E, 0.0), (2.8, NB_CENTRE_E, 2.8 * v),
                                       (3.2, SB_CENTRE_E, 3.2 * v), (6.0, SB_CENTRE_E, 6.0 * v)])
    start = T0 - timedelta(seconds=3.0)
    for k in range(14):
        t = 0.2 + k / 3
        tracked = [(7, Detection(VehicleClass.CAR, 0.9, b.x1, b.y1, b.x2, b.y2, "car"))
                   for b in SCENE.detections([car], t)]
        analytics.process(start + timedelta(seconds=t), k, tracked, SCENE.size)
    counts = {(m.minute_start, lane.lane_id): lane.vehicles for m in analytics.minutes() for lane in m.lanes}
    before = T0 - timedelta(minutes=1)
    assert (counts[(before, "NB")], counts[(before, "SB")], counts[(T0, "NB")], counts[(T0, "SB")]) == (1, 0, 0, 1)


def test_lanes_whose_traffic_runs_against_each_other_are_opposed_for_the_tracker() -> None:
    # The tracker's cue that a box on one of them is not the vehicle of a track on the other (tracker.py): by the
    # lanes' ground directions when the camera is calibrated, by their directions in the picture when it is not.
    calibrated = CameraAnalytics(spec_of(SCENE.camera("sim")))
    assert calibrated.lanes_opposed("NB", "SB") and calibrated.lanes_opposed("SB", "NB")
    assert not calibrated.lanes_opposed("NB", "NB")
    assert not calibrated.lanes_opposed("NB", "")
    box = ((0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0))
    lanes = (Lane("east", polygon=box, direction_px=(1.0, 0.0)), Lane("east2", polygon=box, direction_px=(1.0, 0.2)),
             Lane("north", polygon=box, direction_px=(0.0, -1.0)), Lane("west", polygon=box, direction_px=(-1.0, 0.1)))
    uncalibrated = CameraAnalytics(CameraSpec("c", "c", 0.0, 0.0, 0.0, 640, 480, lanes=lanes))
    opposed = {(a.id, b.id) for a in lanes for b in lanes if uncalibrated.lanes_opposed(a.id, b.id)}
    assert opposed == {("east", "west"), ("west", "east"), ("east2", "west"), ("west", "east2")}
