"""Assembles the roadside service: detector, engine, publishers, servicer, and who may call what."""

from __future__ import annotations

import logging

from v2x.roadside.v1 import roadside_pb2, roadside_pb2_grpc

from services.common.principal import Role
from services.common.runtime import Builder, Resources, ServiceParts
from services.common.server import ServiceDefinition
from services.roadside.analytics import FrameAnalysis
from services.roadside.detector import Detector, DetectorConfig, model_for_precision, resolve_precision
from services.roadside.engine import BatchDetector, CameraSession, InferenceEngine
from services.roadside.events import EventPublisher
from services.roadside.servicer import PlateService, RoadsideServicer
from services.roadside.settings import RoadsideSettings
from services.roadside.spots import SpotPublisher
from services.roadside.store import CameraStore

log = logging.getLogger("v2x.roadside")

ALL = frozenset(Role)
VIEWERS = frozenset({Role.ADMIN, Role.POLICE, Role.CAMERA, Role.OPERATOR})

POLICY = {
    "Detect": VIEWERS,
    "StreamFrames": frozenset({Role.CAMERA, Role.ADMIN}),
    "ReadPlate": VIEWERS,
    "ConfigureCamera": frozenset({Role.ADMIN}),
    "GetCamera": frozenset({Role.ADMIN, Role.POLICE, Role.CAMERA}),
    "ListCameras": frozenset({Role.ADMIN, Role.POLICE}),
    "GetCounts": ALL,
}


def make_builder(detector: BatchDetector | None = None, *, plates: bool = True,
                 roadside: RoadsideSettings | None = None) -> Builder:
    """A builder with a given detector (tests pass their own) or the configured one, and given settings or the
    process' own."""

    def build(resources: Resources) -> ServiceParts:
        settings = resources.settings
        r = roadside or RoadsideSettings.from_env(settings.env)
        det = detector or _default_detector(r.detector, r.max_batch, r.detector_precision)
        events = EventPublisher(resources.redis, settings.redis_stream_maxlen)
        spots = (SpotPublisher(r.parking_target, r.parking_key, r.spot_refresh_s) if r.parking_target else None)

        def on_spots(session: CameraSession, analysis: FrameAnalysis) -> None:
            if spots is not None and session.last_captured is not None:
                spots.observe(session.last_captured, session.analytics.spot_states(), analysis.spot_changes)

        # The ONNX detector knows how many runs fit the cores; other detectors run in every worker.
        runs = det.concurrent_runs if isinstance(det, Detector) else r.infer_workers
        engine = InferenceEngine(det, max_batch=r.max_batch, queue_frames=r.queue_frames,
                                 default_deadline_ms=r.frame_deadline_ms, workers=r.infer_workers, concurrent_runs=runs,
                                 on_events=events.offer, on_spots=on_spots)
        plate_service = PlateService()
        servicer = RoadsideServicer(CameraStore(resources.engine), engine, plate_service, settings)

        async def load_plates() -> None:
            if plates:
                await plate_service.load()
                engine.plates = plate_service.reader
            else:
                plate_service.error = "plate reading is switched off in this process"

        async def stop() -> None:
            try:
                await servicer.flush_counts()
            except Exception:
                log.warning("could not save the last traffic counts", exc_info=True)
            await events.drain()
            engine.close()
            plate_service.pool.shutdown(wait=False, cancel_futures=True)

        definition = ServiceDefinition(
            descriptor=roadside_pb2.DESCRIPTOR.services_by_name["RoadsideService"],
            register=lambda server: roadside_pb2_grpc.add_RoadsideServiceServicer_to_server(servicer, server),
            policy=POLICY,
        )
        background = [engine.run, events.run, servicer.count_flusher, load_plates]
        if spots is not None:
            background.append(spots.run)
        return ServiceParts([definition], background, [stop])

    return build


def _default_detector(kind: str, max_batch: int, precision: str = "auto") -> BatchDetector:
    if kind == "sim":
        from services.roadside.keycolour import KeyColourDetector

        log.warning("V2X_ROADSIDE_DETECTOR=sim: the demo key-colour detector, not the model")
        return KeyColourDetector()
    config = DetectorConfig.from_env()
    chosen, why = resolve_precision(precision, config.model_path)
    log.info("V2X_ROADSIDE_DETECTOR_PRECISION=%s: %s for %s (%s)", precision, chosen, config.model_path.name, why)
    detector = Detector(DetectorConfig(model_path=model_for_precision(config.model_path, chosen),
                                       intra_op_threads=config.intra_op_threads,
                                       max_batch=max(max_batch, 1), input_size=config.input_size))
    floors = detector.camera_floors
    log.info("camera floors the cameras leave unset: detection %.2f, event %.2f (%s)",
             floors.min_detection_confidence, floors.min_event_confidence, detector.config.model_path.name)
    return detector


build = make_builder()
