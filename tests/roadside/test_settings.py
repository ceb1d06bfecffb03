"""The roadside settings in services.common.config."""

from __future__ import annotations

import pytest

from services.common.config import ConfigError, Settings


def test_parking_target_and_key_come_together() -> None:
    with pytest.raises(ConfigError, match="set together"):
        Settings.from_env({"V2X_ROADSIDE_PARKING_TARGET": "127.0.0.1:50053"})


def test_parking_target_must_be_host_and_port() -> None:
    with pytest.raises(ConfigError, match="host:port"):
        Settings.from_env({"V2X_ROADSIDE_PARKING_TARGET": "parking", "V2X_ROADSIDE_PARKING_KEY": "v2x_a_b"})


def test_roadside_defaults_and_overrides() -> None:
    default = Settings.from_env({})
    tuned = Settings.from_env({"V2X_ROADSIDE_QUEUE_FRAMES": "3", "V2X_ROADSIDE_MAX_BATCH": "4",
                               "V2X_ROADSIDE_FRAME_DEADLINE_MS": "500", "V2X_ROADSIDE_INFER_WORKERS": "1",
                               "V2X_ROADSIDE_DETECTOR": "sim"})

    assert (default.roadside_queue_frames, default.roadside_max_batch, default.roadside_frame_deadline_ms,
            default.roadside_infer_workers, default.roadside_detector) == (2, 1, 2000, 2, "onnx")
    assert (tuned.roadside_queue_frames, tuned.roadside_max_batch, tuned.roadside_frame_deadline_ms,
            tuned.roadside_infer_workers, tuned.roadside_detector) == (3, 4, 500, 1, "sim")
    assert "roadside_parking_key" not in repr(Settings.from_env({"V2X_ROADSIDE_PARKING_TARGET": "h:1",
                                                                 "V2X_ROADSIDE_PARKING_KEY": "secret"}))


def test_an_unknown_detector_is_refused() -> None:
    with pytest.raises(ConfigError, match="V2X_ROADSIDE_DETECTOR"):
        Settings.from_env({"V2X_ROADSIDE_DETECTOR": "yolo9000"})
