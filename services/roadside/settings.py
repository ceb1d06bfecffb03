"""The roadside service's own settings: per-camera frame queues, micro-batching, deadlines, and where on-street
spot states go (the parking service, with the on-street operator's API key; both unset = spot states not sent).

The detector model itself (V2X_DETECTOR_MODEL, V2X_DETECTOR_THREADS) is configured by `detector.DetectorConfig`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from services.common.config import ConfigError, env_choice, env_float, env_int

PRECISIONS = ("auto", "fp32", "int8")


@dataclass(frozen=True)
class RoadsideSettings:
    queue_frames: int = 2
    # Frames of several cameras per session.run. Off by default: on this CPU, with one thread per run and two runs at
    # once, batching measured slower than unbatched (load/bench_roadside.py); a GPU or a many-core host may gain.
    max_batch: int = 1
    infer_workers: int = 2  # batches in flight at once (one detector session, shared)
    detector: str = "onnx"  # "sim": the key-colour detector for demos without cameras (keycolour.py)
    # "int8": the detector quantised by models/quantize_detector.py (<model>-int8.onnx beside the fp32 one): the same
    # recall as fp32 (0.799 vs 0.789 at IoU 0.5, load/eval_detector.py) at 2.4x less CPU per frame on a CPU with an
    # 8-bit dot product, and no less on one without (AVX2 alone). "auto" (the default) picks int8 where it pays and the
    # model has an int8 version beside it, fp32 elsewhere (detector.resolve_precision; MODEL_CARD_yolov3_tiny.md).
    detector_precision: str = "auto"
    frame_deadline_ms: int = 2000
    parking_target: str = ""  # host:port of the parking service
    parking_key: str = field(default="", repr=False)
    spot_refresh_s: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RoadsideSettings:
        d = cls()
        target, key = _parking(env)
        return cls(
            queue_frames=env_int(env, "V2X_ROADSIDE_QUEUE_FRAMES", d.queue_frames, 1, 100),
            max_batch=env_int(env, "V2X_ROADSIDE_MAX_BATCH", d.max_batch, 1, 64),
            infer_workers=env_int(env, "V2X_ROADSIDE_INFER_WORKERS", d.infer_workers, 1, 16),
            detector=env_choice(env, "V2X_ROADSIDE_DETECTOR", d.detector, ("onnx", "sim")),
            detector_precision=env_choice(env, "V2X_ROADSIDE_DETECTOR_PRECISION", d.detector_precision, PRECISIONS),
            frame_deadline_ms=env_int(env, "V2X_ROADSIDE_FRAME_DEADLINE_MS", d.frame_deadline_ms, 50, 60_000),
            parking_target=target,
            parking_key=key,
            spot_refresh_s=env_float(env, "V2X_ROADSIDE_SPOT_REFRESH_S", d.spot_refresh_s, 1, 3600),
        )


def _parking(env: Mapping[str, str]) -> tuple[str, str]:
    target = (env.get("V2X_ROADSIDE_PARKING_TARGET") or "").strip()
    key = (env.get("V2X_ROADSIDE_PARKING_KEY") or "").strip()
    if bool(target) != bool(key):
        raise ConfigError("V2X_ROADSIDE_PARKING_TARGET and V2X_ROADSIDE_PARKING_KEY must be set together")
    if target and (":" not in target or not target.rsplit(":", 1)[1].isdigit()):
        raise ConfigError(f"V2X_ROADSIDE_PARKING_TARGET must be host:port, not {target!r}")
    return target, key
