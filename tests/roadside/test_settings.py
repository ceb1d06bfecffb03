"""The roadside service's own settings (services/roadside/settings.py)."""

from __future__ import annotations

import pytest

from services.common.config import ConfigError
from services.roadside.settings import RoadsideSettings


def test_parking_target_and_key_come_together() -> None:
    with pytest.raises(ConfigError, match="set together"):
        RoadsideSettings.from_env({"V2X_ROADSIDE_PARKING_TARGET": "127.0.0.1:50053"})


def test_parking_target_must_be_host_and_port() -> None:
    with pytest.raises(ConfigError, match="host:port"):
        RoadsideSettings.from_env({"V2X_ROADSIDE_PARKING_TARGET": "parking", "V2X_ROADSIDE_PARKING_KEY": "v2x_a_b"})


def test_roadside_defaults_and_overrides() -> None:
    default = RoadsideSettings.from_env({})
    tuned = RoadsideSettings.from_env({"V2X_ROADSIDE_QUEUE_FRAMES": "3", "V2X_ROADSIDE_MAX_BATCH": "4",
                                       "V2X_ROADSIDE_FRAME_DEADLINE_MS": "500", "V2X_ROADSIDE_INFER_WORKERS": "1",
                                       "V2X_ROADSIDE_DETECTOR": "sim"})

    assert (default.queue_frames, default.max_batch, default.frame_deadline_ms,
            default.infer_workers, default.detector) == (2, 1, 2000, 2, "onnx")
    assert (tuned.queue_frames, tuned.max_batch, tuned.frame_deadline_ms,
            tuned.infer_workers, tuned.detector) == (3, 4, 500, 1, "sim")
    assert "secret" not in repr(RoadsideSettings.from_env({"V2X_ROADSIDE_PARKING_TARGET": "h:1",
                                                           "V2X_ROADSIDE_PARKING_KEY": "secret"}))


def test_an_unknown_detector_is_refused() -> None:
    with pytest.raises(ConfigError, match="V2X_ROADSIDE_DETECTOR"):
        RoadsideSettings.from_env({"V2X_ROADSIDE_DETECTOR": "yolo9000"})


def test_the_detector_precision_is_auto_unless_one_is_chosen() -> None:
    assert RoadsideSettings.from_env({}).detector_precision == "auto"
    assert RoadsideSettings.from_env({"V2X_ROADSIDE_DETECTOR_PRECISION": "fp32"}).detector_precision == "fp32"
    assert RoadsideSettings.from_env({"V2X_ROADSIDE_DETECTOR_PRECISION": "int8"}).detector_precision == "int8"
    with pytest.raises(ConfigError, match="V2X_ROADSIDE_DETECTOR_PRECISION"):
        RoadsideSettings.from_env({"V2X_ROADSIDE_DETECTOR_PRECISION": "fp16"})
